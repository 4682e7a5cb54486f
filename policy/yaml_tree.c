/*
 * Builds a small positioned tree from libyaml's event stream. The tree is what the loader
 * validates; building it here lets us refuse anchors, aliases and tags (no billion-laughs),
 * duplicate keys and absurd nesting before any value is interpreted.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "policy/policy_internal.h"

struct ybuild {
    const char *path;
    struct err *err;
    yaml_parser_t parser;
    size_t nodes;
};

static int
yfail(struct ybuild *b, yaml_mark_t mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
yfail(struct ybuild *b, yaml_mark_t mark, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set(b->err, ERR_USAGE, "%s:%zu:%zu: %s", b->path, mark.line + 1, mark.column + 1,
        msg);
}

static int
next_event(struct ybuild *b, yaml_event_t *ev)
{
    yaml_parser_t *ps = &b->parser;
    yaml_mark_t mark;

    if (yaml_parser_parse(ps, ev))
        return 0;
    /* Reader errors (bad UTF-8, control characters) carry no problem mark. */
    mark = ps->error == YAML_READER_ERROR ? ps->mark : ps->problem_mark;
    if (ps->context != NULL)
        return yfail(b, mark, "yaml: %s %s", ps->problem != NULL ? ps->problem : "error",
            ps->context);
    return yfail(b, mark, "yaml: %s", ps->problem != NULL ? ps->problem : "syntax error");
}

static struct ynode *
node_new(struct ybuild *b, enum ynode_type type, const yaml_event_t *ev)
{
    struct ynode *n;

    if (++b->nodes > POLICY_MAX_NODES) {
        yfail(b, ev->start_mark, "too many nodes (at most %d)", POLICY_MAX_NODES);
        return NULL;
    }
    if ((n = calloc(1, sizeof(*n))) == NULL) {
        err_set(b->err, ERR_INTERNAL, "%s: out of memory", b->path);
        return NULL;
    }
    n->type = type;
    n->line = (int)ev->start_mark.line + 1;
    n->col = (int)ev->start_mark.column + 1;
    return n;
}

static int
node_append(struct ybuild *b, struct ynode *parent, struct ynode *kid)
{
    struct ynode **k;
    size_t cap;

    if (parent->nkids == parent->cap) {
        cap = parent->cap == 0 ? 8 : parent->cap * 2;
        if ((k = realloc(parent->kids, cap * sizeof(*k))) == NULL)
            return err_set(b->err, ERR_INTERNAL, "%s: out of memory", b->path);
        parent->kids = k;
        parent->cap = cap;
    }
    parent->kids[parent->nkids++] = kid;
    return 0;
}

void
ytree_free(struct ynode *n)
{
    size_t i;

    if (n == NULL)
        return;
    for (i = 0; i < n->nkids; i++)
        ytree_free(n->kids[i]);
    free(n->kids);
    free(n->value);
    free(n);
}

static struct ynode *
scalar_new(struct ybuild *b, const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    struct ynode *n;

    if (memchr(v, '\0', len) != NULL) {
        yfail(b, ev->start_mark, "NUL character in a string");
        return NULL;
    }
    if ((n = node_new(b, YNODE_SCALAR, ev)) == NULL)
        return NULL;
    if ((n->value = strndup(v, len)) == NULL) {
        free(n);
        err_set(b->err, ERR_INTERNAL, "%s: out of memory", b->path);
        return NULL;
    }
    n->is_null = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        (len == 0 || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
            strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0);
    return n;
}

/* Refuses what would let a small file expand (aliases) or change meaning (tags). */
static int
check_plain(struct ybuild *b, const yaml_event_t *ev)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;

    if (ev->type == YAML_ALIAS_EVENT)
        return yfail(b, ev->start_mark, "anchors and aliases are not supported");
    if (ev->type == YAML_SCALAR_EVENT) {
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
    }
    if (anchor != NULL)
        return yfail(b, ev->start_mark, "anchors and aliases are not supported");
    if (tag != NULL)
        return yfail(b, ev->start_mark, "tags are not supported");
    return 0;
}

static struct ynode *build(struct ybuild *b, yaml_event_t *ev, int depth);

static int
check_key(struct ybuild *b, const struct ynode *map, const struct ynode *key,
    const yaml_event_t *ev)
{
    char q[64];
    size_t i;

    if (key->type != YNODE_SCALAR)
        return yfail(b, ev->start_mark, "mapping keys must be strings");
    if (map->nkids / 2 >= POLICY_MAX_MAP_KEYS)
        return yfail(b, ev->start_mark, "too many keys in one mapping (at most %d)",
            POLICY_MAX_MAP_KEYS);
    for (i = 0; i < map->nkids; i += 2)
        if (strcmp(map->kids[i]->value, key->value) == 0)
            return err_set(b->err, ERR_USAGE, "%s:%d:%d: duplicate key \"%s\" (first at "
                "line %d)", b->path, key->line, key->col, lquote(key->value, q, sizeof(q)),
                map->kids[i]->line);
    return 0;
}

/* Reads items until the closing event; mappings alternate key and value. */
static int
build_children(struct ybuild *b, struct ynode *n, int depth)
{
    yaml_event_type_t end = n->type == YNODE_MAP ? YAML_MAPPING_END_EVENT
                                                 : YAML_SEQUENCE_END_EVENT;
    struct ynode *kid;
    yaml_event_t ev;
    int is_key = n->type == YNODE_MAP;

    for (;;) {
        if (next_event(b, &ev) == -1)
            return -1;
        if (ev.type == end) {
            yaml_event_delete(&ev);
            return 0;
        }
        if (n->type == YNODE_SEQ && n->nkids >= POLICY_MAX_SEQ) {
            yfail(b, ev.start_mark, "too many items in one list (at most %d)", POLICY_MAX_SEQ);
            yaml_event_delete(&ev);
            return -1;
        }
        kid = build(b, &ev, depth + 1);
        if (kid != NULL && n->type == YNODE_MAP && is_key && check_key(b, n, kid, &ev) == -1) {
            ytree_free(kid);
            kid = NULL;
        }
        yaml_event_delete(&ev);
        if (kid == NULL)
            return -1;
        if (node_append(b, n, kid) == -1) {
            ytree_free(kid);
            return -1;
        }
        if (n->type == YNODE_MAP)
            is_key = !is_key;
    }
}

static struct ynode *
build(struct ybuild *b, yaml_event_t *ev, int depth)
{
    struct ynode *n;

    if (check_plain(b, ev) == -1)
        return NULL;
    if (depth > POLICY_MAX_DEPTH) {
        yfail(b, ev->start_mark, "nesting too deep (at most %d levels)", POLICY_MAX_DEPTH);
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return scalar_new(b, ev);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        n = node_new(b, ev->type == YAML_MAPPING_START_EVENT ? YNODE_MAP : YNODE_SEQ, ev);
        if (n == NULL)
            return NULL;
        if (build_children(b, n, depth) == -1) {
            ytree_free(n);
            return NULL;
        }
        return n;
    default:
        yfail(b, ev->start_mark, "unexpected yaml event");
        return NULL;
    }
}

/* Expects an event of type want; anything else is reported with msg. */
static int
expect_event(struct ybuild *b, yaml_event_type_t want, const char *msg)
{
    yaml_event_t ev;
    int ok;

    if (next_event(b, &ev) == -1)
        return -1;
    ok = ev.type == want;
    if (!ok)
        yfail(b, ev.start_mark, "%s", msg);
    yaml_event_delete(&ev);
    return ok ? 0 : -1;
}

static struct ynode *
parse_stream(struct ybuild *b)
{
    struct ynode *root = NULL;
    yaml_event_t ev;

    if (expect_event(b, YAML_STREAM_START_EVENT, "expected a yaml stream") == -1 ||
        next_event(b, &ev) == -1)
        return NULL;
    if (ev.type == YAML_STREAM_END_EVENT) {
        /* An empty file is an empty mapping: the missing keys are then reported. */
        yaml_event_delete(&ev);
        root = calloc(1, sizeof(*root));
        if (root == NULL)
            err_set(b->err, ERR_INTERNAL, "%s: out of memory", b->path);
        else {
            root->type = YNODE_MAP;
            root->line = root->col = 1;
        }
        return root;
    }
    yaml_event_delete(&ev); /* DOCUMENT_START */
    if (next_event(b, &ev) == -1)
        return NULL;
    root = build(b, &ev, 0);
    yaml_event_delete(&ev);
    if (root == NULL)
        return NULL;
    if (expect_event(b, YAML_DOCUMENT_END_EVENT, "expected the end of the document") == -1 ||
        expect_event(b, YAML_STREAM_END_EVENT, "only one yaml document is allowed") == -1) {
        ytree_free(root);
        return NULL;
    }
    return root;
}

struct ynode *
ytree_parse(const char *path, const char *buf, size_t len, struct err *err)
{
    struct ybuild b;
    struct ynode *root;

    memset(&b, 0, sizeof(b));
    b.path = path;
    b.err = err;
    if (!yaml_parser_initialize(&b.parser)) {
        err_set(err, ERR_INTERNAL, "%s: cannot initialise the yaml parser", path);
        return NULL;
    }
    yaml_parser_set_input_string(&b.parser, (const unsigned char *)buf, len);
    root = parse_stream(&b);
    yaml_parser_delete(&b.parser);
    return root;
}
