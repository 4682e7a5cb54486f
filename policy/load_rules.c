/*
 * Agents and credentials: the names rules refer to. Names are restricted because they
 * become vault file names, audit fields and proxy user names; credential headers and
 * formats are checked so an injection can never smuggle or split a header.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "policy/policy_internal.h"

#define AGENTS_MAX 1000
#define FORMAT_MAX 4096

static int
oom(struct lctx *c)
{
    return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
}

/* Names that become file names, audit fields and proxy user names. */
static int
name_valid(const char *s)
{
    size_t i, n = strlen(s);

    /* A leading letter or digit: "-" is the anonymous agent, "_" names are internal
     * (the buddy pair key), "." and "-" make awkward file names and CLI arguments. */
    if (n == 0 || n > 64 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
                                 (s[0] >= '0' && s[0] <= '9')))
        return 0;
    for (i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

/* RFC 9110 token, for header names. */
static int
token_valid(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                (*s >= '0' && *s <= '9') || strchr("!#$%&'*+-.^_`|~", *s) != NULL))
            return 0;
    return 1;
}

static const struct ynode *
need(struct lctx *c, const struct ynode *map, const char *key, const char *what)
{
    const struct ynode *v = ymap_get(map, key);

    if (v == NULL)
        lerr(c, map, "missing required key \"%s\" in %s", key, what);
    return v;
}

static int
load_agent(struct lctx *c, const struct ynode *n, size_t idx)
{
    static const char *const keys[] = {"name", "token_sha256", NULL};
    struct policy *p = c->p;
    struct policy_agent *a = &p->agents[p->nagents];
    const struct ynode *v, *t;
    char what[48], q[64];
    const char *s = NULL;
    size_t i;

    snprintf(what, sizeof(what), "agents[%zu]", idx);
    if (lcheck_keys(c, n, keys, what) == -1 || (v = need(c, n, "name", what)) == NULL ||
        (t = need(c, n, "token_sha256", what)) == NULL || lstr(c, v, "agent name", &s) == -1)
        return -1;
    if (!name_valid(s))
        return lerr(c, v, "%s.name: bad agent name \"%s\" (1-64 of A-Z a-z 0-9 . _ -, starting "
            "with a letter or digit)", what, lquote(s, q, sizeof(q)));
    for (i = 0; i < p->nagents; i++)
        if (strcmp(p->agents[i].name, s) == 0)
            return lerr(c, v, "%s.name: duplicate agent name \"%s\"", what, s);
    if ((a->name = strdup(s)) == NULL)
        return oom(c);
    p->nagents++;
    if (lstr(c, t, "token_sha256", &s) == -1)
        return -1;
    if (strlen(s) != SHA256_HEX_LEN || util_hex_decode(s, a->token_sha256, 32) == -1)
        return lerr(c, t, "%s.token_sha256: expected 64 hex characters (sha-256 of the "
            "agent's password)", what);
    return 0;
}

int
load_agents(struct lctx *c, const struct ynode *n)
{
    size_t i;

    if (n == NULL)
        return 0;
    if (lcheck_seq(c, n, "agents", AGENTS_MAX) == -1)
        return -1;
    if ((c->p->agents = calloc(yseq_len(n) + 1, sizeof(*c->p->agents))) == NULL)
        return oom(c);
    for (i = 0; i < yseq_len(n); i++)
        if (load_agent(c, n->kids[i], i) == -1)
            return -1;
    return 0;
}

static int
load_header(struct lctx *c, const struct ynode *v, const char *what,
    struct policy_credential *cr)
{
    /* Framing and routing headers: injecting them would smuggle or misroute requests. */
    static const char *const refused[] = {"host", "content-length", "transfer-encoding",
        "connection", "upgrade", "te", "trailer", "keep-alive"};
    char q[64];
    const char *s = NULL;
    size_t i;

    if (lstr(c, v, what, &s) == -1)
        return -1;
    if (!token_valid(s) || strlen(s) > 128)
        return lerr(c, v, "%s: bad header name \"%s\"", what, lquote(s, q, sizeof(q)));
    for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (util_strcaseeq(s, refused[i]))
            break;
    if (i < sizeof(refused) / sizeof(refused[0]) || strncasecmp(s, "proxy-", 6) == 0)
        return lerr(c, v, "%s: header \"%s\" cannot be injected", what, s);
    return (cr->header = strdup(s)) == NULL ? oom(c) : 0;
}

static int
load_format(struct lctx *c, const struct ynode *v, const char *what,
    struct policy_credential *cr)
{
    const char *s, *first;
    size_t i;

    if (lstr(c, v, what, &s) == -1)
        return -1;
    if (strlen(s) > FORMAT_MAX)
        return lerr(c, v, "%s: longer than %d bytes", what, FORMAT_MAX);
    /* The value goes into a header line: CR/LF here would be header injection. */
    for (i = 0; s[i] != '\0'; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return lerr(c, v, "%s: control characters are not allowed", what);
    first = strstr(s, "{secret}");
    if (first == NULL || strstr(first + 1, "{secret}") != NULL)
        return lerr(c, v, "%s: must contain \"{secret}\" exactly once", what);
    return (cr->format = strdup(s)) == NULL ? oom(c) : 0;
}

static int
load_credential(struct lctx *c, const struct ynode *k, const struct ynode *n)
{
    static const char *const keys[] = {"header", "format", "hold", NULL};
    struct policy *p = c->p;
    struct policy_credential *cr = &p->credentials[p->ncredentials];
    const struct ynode *h, *f, *v;
    char what[96], q[64];

    if (!name_valid(k->value))
        return lerr(c, k, "credentials: bad credential name \"%s\" (1-64 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit)", lquote(k->value, q, sizeof(q)));
    snprintf(what, sizeof(what), "credentials.%s", k->value);
    if ((cr->name = strdup(k->value)) == NULL)
        return oom(c);
    p->ncredentials++;
    if (lcheck_keys(c, n, keys, what) == -1 || (h = need(c, n, "header", what)) == NULL ||
        (f = need(c, n, "format", what)) == NULL)
        return -1;
    snprintf(what, sizeof(what), "credentials.%s.header", k->value);
    if (load_header(c, h, what, cr) == -1)
        return -1;
    snprintf(what, sizeof(what), "credentials.%s.format", k->value);
    if (load_format(c, f, what, cr) == -1)
        return -1;
    snprintf(what, sizeof(what), "credentials.%s.hold", k->value);
    if ((v = ymap_get(n, "hold")) != NULL && lduration(c, v, what, 0, &cr->hold_ms) == -1)
        return -1;
    return 0;
}

int
load_credentials(struct lctx *c, const struct ynode *n)
{
    size_t i;

    if (n == NULL)
        return 0;
    if (lcheck_map(c, n, "credentials") == -1)
        return -1;
    /* Allocated once: rules keep pointers into this array. */
    if ((c->p->credentials = calloc(n->nkids / 2 + 1, sizeof(*c->p->credentials))) == NULL)
        return oom(c);
    for (i = 0; i + 1 < n->nkids; i += 2)
        if (load_credential(c, n->kids[i], n->kids[i + 1]) == -1)
            return -1;
    return 0;
}
