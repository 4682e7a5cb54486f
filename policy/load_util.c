/*
 * Typed accessors over the positioned YAML tree. Each one either yields a checked value or
 * fails with "PATH:LINE:COL: WHAT: ..." at the node, so the section loaders stay short and
 * every error points at the text the user has to change.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "policy/policy_internal.h"

int
lerr(struct lctx *c, const struct ynode *n, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set(c->err, ERR_USAGE, "%s:%d:%d: %s", c->path, n != NULL ? n->line : 1,
        n != NULL ? n->col : 1, msg);
}

/* User text in messages: at most 48 bytes, non-printable bytes as '?'. */
const char *
lquote(const char *s, char *buf, size_t size)
{
    size_t i, max = size - 1 < 48 ? size - 1 : 48;

    for (i = 0; s[i] != '\0' && i < max; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    buf[i] = '\0';
    if (s[i] != '\0' && i >= 3)
        memcpy(buf + i - 3, "...", 3);
    return buf;
}

const char *
ynode_kind(const struct ynode *n)
{
    if (n->type == YNODE_MAP)
        return "a mapping";
    if (n->type == YNODE_SEQ)
        return "a list";
    return n->is_null ? "nothing" : "a string";
}

const struct ynode *
ymap_get(const struct ynode *map, const char *key)
{
    size_t i;

    if (map == NULL || map->type != YNODE_MAP)
        return NULL;
    for (i = 0; i + 1 < map->nkids; i += 2)
        if (strcmp(map->kids[i]->value, key) == 0)
            return map->kids[i + 1];
    return NULL;
}

int
lcheck_map(struct lctx *c, const struct ynode *n, const char *what)
{
    if (n->type == YNODE_MAP || (n->type == YNODE_SCALAR && n->is_null))
        return 0;
    return lerr(c, n, "%s: expected a mapping, got %s", what, ynode_kind(n));
}

int
lcheck_keys(struct lctx *c, const struct ynode *map, const char *const *keys, const char *what)
{
    char q[64];
    size_t i, k;

    if (lcheck_map(c, map, what) == -1)
        return -1;
    for (i = 0; i + 1 < map->nkids; i += 2) {
        for (k = 0; keys[k] != NULL; k++)
            if (strcmp(map->kids[i]->value, keys[k]) == 0)
                break;
        if (keys[k] == NULL) {
            if (what[0] == '\0')
                return lerr(c, map->kids[i], "unknown key \"%s\"",
                    lquote(map->kids[i]->value, q, sizeof(q)));
            return lerr(c, map->kids[i], "unknown key \"%s\" in %s",
                lquote(map->kids[i]->value, q, sizeof(q)), what);
        }
    }
    return 0;
}

int
lcheck_seq(struct lctx *c, const struct ynode *n, const char *what, size_t max)
{
    if (n->type == YNODE_SCALAR && n->is_null)
        return 0;
    if (n->type != YNODE_SEQ)
        return lerr(c, n, "%s: expected a list, got %s", what, ynode_kind(n));
    if (n->nkids > max)
        return lerr(c, n, "%s: too many items (at most %zu)", what, max);
    return 0;
}

size_t
yseq_len(const struct ynode *n)
{
    return n != NULL && n->type == YNODE_SEQ ? n->nkids : 0;
}

int
lstr(struct lctx *c, const struct ynode *n, const char *what, const char **out)
{
    if (n->type != YNODE_SCALAR || n->is_null)
        return lerr(c, n, "%s: expected a string, got %s", what, ynode_kind(n));
    *out = n->value;
    return 0;
}

int
lstrdup(struct lctx *c, const struct ynode *n, const char *what, char **out)
{
    const char *s = NULL;

    if (lstr(c, n, what, &s) == -1)
        return -1;
    if ((*out = strdup(s)) == NULL)
        return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
    return 0;
}

int
lbool(struct lctx *c, const struct ynode *n, const char *what, int *out)
{
    static const char *const yes[] = {"true", "True", "TRUE"};
    static const char *const no[] = {"false", "False", "FALSE"};
    char q[64];
    size_t i;

    if (n->type != YNODE_SCALAR || n->is_null)
        return lerr(c, n, "%s: expected true or false, got %s", what, ynode_kind(n));
    for (i = 0; i < 3; i++) {
        if (strcmp(n->value, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcmp(n->value, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return lerr(c, n, "%s: expected true or false, got \"%s\"", what,
        lquote(n->value, q, sizeof(q)));
}

/* Decimal, or hexadecimal with 0x; no sign, no spaces, no overflow. */
static int
parse_uint(const char *s, uint64_t *out)
{
    unsigned base = 10, d;
    uint64_t v = 0;

    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (*s == '\0')
        return -1;
    for (; *s != '\0'; s++) {
        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (unsigned)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (unsigned)(*s - 'A' + 10);
        else
            return -1;
        if (v > (UINT64_MAX - d) / base)
            return -1;
        v = v * base + d;
    }
    *out = v;
    return 0;
}

int
luint(struct lctx *c, const struct ynode *n, const char *what, uint64_t min, uint64_t max,
    uint64_t *out)
{
    char q[64];
    uint64_t v;

    if (n->type != YNODE_SCALAR || n->is_null)
        return lerr(c, n, "%s: expected an integer, got %s", what, ynode_kind(n));
    if (parse_uint(n->value, &v) == -1 || v < min || v > max)
        return lerr(c, n, "%s: expected an integer %llu..%llu, got \"%s\"", what,
            (unsigned long long)min, (unsigned long long)max, lquote(n->value, q, sizeof(q)));
    *out = v;
    return 0;
}

int
lduration(struct lctx *c, const struct ynode *n, const char *what, uint64_t min, uint64_t *out)
{
    char q[64];
    uint64_t v;

    if (n->type != YNODE_SCALAR || n->is_null)
        return lerr(c, n, "%s: expected a duration, got %s", what, ynode_kind(n));
    if (util_parse_duration_ms(n->value, &v) == -1)
        return lerr(c, n, "%s: bad duration \"%s\" (e.g. 250ms, 30s, 5m, 2h, 1d)", what,
            lquote(n->value, q, sizeof(q)));
    if (v < min)
        return lerr(c, n, "%s: duration must be at least %llums", what,
            (unsigned long long)min);
    *out = v;
    return 0;
}

/* "250ms", "5s": a bound as it would be written in the config. */
static const char *
lms_text(uint64_t ms, char *buf, size_t len)
{
    if (ms % 1000 == 0)
        snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, len, "%llums", (unsigned long long)ms);
    return buf;
}

int
lduration_range(struct lctx *c, const struct ynode *n, const char *what, uint64_t min,
    uint64_t max, uint64_t *out)
{
    char lo[32], hi[32], q[64];
    uint64_t v = 0; /* gcc -O2 cannot see that lduration sets it when it returns 0 */

    if (lduration(c, n, what, 0, &v) == -1)
        return -1;
    if (v < min || v > max)
        return lerr(c, n, "%s: duration must be %s..%s, got \"%s\"", what,
            lms_text(min, lo, sizeof(lo)), lms_text(max, hi, sizeof(hi)),
            lquote(n->value, q, sizeof(q)));
    *out = v;
    return 0;
}

int
lsize(struct lctx *c, const struct ynode *n, const char *what, uint64_t min, uint64_t max,
    uint64_t *out)
{
    char q[64];
    uint64_t v;

    if (n->type != YNODE_SCALAR || n->is_null)
        return lerr(c, n, "%s: expected a size, got %s", what, ynode_kind(n));
    if (util_parse_size(n->value, &v) == -1)
        return lerr(c, n, "%s: bad size \"%s\" (e.g. 4096, 64KiB, 1MiB)", what,
            lquote(n->value, q, sizeof(q)));
    if (v < min || v > max)
        return lerr(c, n, "%s: size must be %llu..%llu bytes", what, (unsigned long long)min,
            (unsigned long long)max);
    *out = v;
    return 0;
}

char *
lpath_join(const char *dir, const char *rel)
{
    char *out;

    if (rel[0] == '/')
        return strdup(rel);
    if (asprintf(&out, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, rel) == -1)
        return NULL;
    return out;
}

int
lpath(struct lctx *c, const struct ynode *n, const char *what, char **out)
{
    const char *s = NULL;

    if (lstr(c, n, what, &s) == -1)
        return -1;
    if (s[0] == '\0')
        return lerr(c, n, "%s: empty path", what);
    if (strlen(s) >= 4096)
        return lerr(c, n, "%s: path too long", what);
    if ((*out = lpath_join(c->p->dir, s)) == NULL)
        return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
    return 0;
}
