/*
 * The rules: list, in order, first match wins. Everything the matcher relies on is
 * established here once: normalised hosts, upper-case known methods, path globs that use
 * only "*" and "?", known agents, resolved credential pointers, consistent actions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "policy/policy_internal.h"

#define RULE_LIST_MAX 64 /* ports, methods, agents per rule */
#define RULE_NAME_MAX 128
#define PATH_GLOB_MAX 2048

static const char *const known_methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
    "OPTIONS", "CONNECT", "TRACE"};

static int
oom(struct lctx *c)
{
    return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
}

static int
rule_name(struct lctx *c, const struct ynode *n, const char *what, size_t idx)
{
    struct policy_rule *r = &c->p->rules[idx];
    char q[64];
    const char *s = NULL;
    size_t i;

    if (lstr(c, n, what, &s) == -1)
        return -1;
    /* Names travel in X-Airlock-Rule headers and audit lines: visible ASCII only. */
    for (i = 0; s[i] != '\0'; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            break;
    if (s[i] != '\0' || i == 0 || i > RULE_NAME_MAX)
        return lerr(c, n, "%s: bad rule name \"%s\" (1-%d visible ASCII characters)", what,
            lquote(s, q, sizeof(q)), RULE_NAME_MAX);
    for (i = 0; i < idx; i++)
        if (strcmp(c->p->rules[i].name, s) == 0)
            return lerr(c, n, "duplicate rule name \"%s\" (first at line %d)", s,
                c->p->rules[i].line);
    return (r->name = strdup(s)) == NULL ? oom(c) : 0;
}

static int
rule_host(struct lctx *c, const struct ynode *n, const char *what, struct policy_rule *r)
{
    char host[NET_HOST_MAX + 1], q[64];
    enum net_host_kind kind;
    const char *s, *body;

    if (lstr(c, n, what, &s) == -1)
        return -1;
    r->host_wildcard = s[0] == '*' && s[1] == '.';
    body = r->host_wildcard ? s + 2 : s;
    if (net_normalize_host(body, strlen(body), host, sizeof(host), &kind) == -1 ||
        (r->host_wildcard && kind != NET_HOST_NAME))
        return lerr(c, n, "%s: bad host \"%s\" (an exact name or IP address, or \"*.\" and a "
            "name)", what, lquote(s, q, sizeof(q)));
    if (r->host_wildcard ? asprintf(&r->host, "*.%s", host) == -1
                         : (r->host = strdup(host)) == NULL) {
        r->host = NULL;
        return oom(c);
    }
    return 0;
}

/* Rule lists are never empty: "ports: []" would silently mean "the default ports". */
static int
rule_list(struct lctx *c, const struct ynode *n, const char *what)
{
    if (lcheck_seq(c, n, what, RULE_LIST_MAX) == -1)
        return -1;
    if (yseq_len(n) == 0)
        return lerr(c, n, "%s: empty list (omit the key for the default)", what);
    return 0;
}

static int
rule_ports(struct lctx *c, const struct ynode *n, const char *what, struct policy_rule *r)
{
    uint64_t v;
    size_t i;

    if (rule_list(c, n, what) == -1)
        return -1;
    if ((r->ports = calloc(n->nkids, sizeof(*r->ports))) == NULL)
        return oom(c);
    for (i = 0; i < n->nkids; i++) {
        if (luint(c, n->kids[i], what, 1, 65535, &v) == -1)
            return -1;
        r->ports[r->nports++] = (uint16_t)v;
    }
    return 0;
}

static int
rule_methods(struct lctx *c, const struct ynode *n, const char *what, struct policy_rule *r)
{
    const size_t nknown = sizeof(known_methods) / sizeof(known_methods[0]);
    char q[64];
    const char *s = NULL;
    size_t i, k;

    if (rule_list(c, n, what) == -1)
        return -1;
    if ((r->methods = calloc(n->nkids, sizeof(*r->methods))) == NULL)
        return oom(c);
    for (i = 0; i < n->nkids; i++) {
        if (lstr(c, n->kids[i], what, &s) == -1)
            return -1;
        for (k = 0; k < nknown && !util_strcaseeq(s, known_methods[k]); k++)
            ;
        if (k == nknown)
            return lerr(c, n->kids[i], "%s: unknown method \"%s\"", what,
                lquote(s, q, sizeof(q)));
        if ((r->methods[r->nmethods] = strdup(known_methods[k])) == NULL)
            return oom(c);
        r->nmethods++;
    }
    return 0;
}

static int
rule_path(struct lctx *c, const struct ynode *n, const char *what, struct policy_rule *r)
{
    char q[64];
    const char *s = NULL;
    size_t i;

    if (lstr(c, n, what, &s) == -1)
        return -1;
    if (s[0] != '/')
        return lerr(c, n, "%s: bad path glob \"%s\" (must start with \"/\")", what,
            lquote(s, q, sizeof(q)));
    if (strlen(s) > PATH_GLOB_MAX)
        return lerr(c, n, "%s: path glob longer than %d bytes", what, PATH_GLOB_MAX);
    /* fnmatch would treat [ ] and \ as syntax; the contract has only * and ?. */
    for (i = 0; s[i] != '\0'; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '[' ||
            s[i] == ']' || s[i] == '\\')
            return lerr(c, n, "%s: bad path glob \"%s\" (printable ASCII; only \"*\" and \"?\" "
                "are wildcards)", what, lquote(s, q, sizeof(q)));
    return (r->path = strdup(s)) == NULL ? oom(c) : 0;
}

static int
rule_agents(struct lctx *c, const struct ynode *n, const char *what, struct policy_rule *r)
{
    char q[64];
    const char *s = NULL;
    size_t i, k;

    if (rule_list(c, n, what) == -1)
        return -1;
    if ((r->agents = calloc(n->nkids, sizeof(*r->agents))) == NULL)
        return oom(c);
    for (i = 0; i < n->nkids; i++) {
        if (lstr(c, n->kids[i], what, &s) == -1)
            return -1;
        for (k = 0; k < c->p->nagents && strcmp(c->p->agents[k].name, s) != 0; k++)
            ;
        if (k == c->p->nagents)
            return lerr(c, n->kids[i], "%s: unknown agent \"%s\"", what,
                lquote(s, q, sizeof(q)));
        r->agents[r->nagents++] = c->p->agents[k].name; /* owned by p->agents */
    }
    return 0;
}

/* action, credential, approve and allow_cleartext, and how they fit together. */
static int
rule_outcome(struct lctx *c, const struct ynode *n, const char *what, struct policy_rule *r)
{
    static const char *const approves[] = {"none", "device", "cli", "any"};
    const struct ynode *v, *cred = ymap_get(n, "credential");
    char w[64], q[64];
    const char *s = NULL;
    size_t k;

    snprintf(w, sizeof(w), "%s.action", what);
    if ((v = ymap_get(n, "action")) == NULL)
        return lerr(c, n, "missing required key \"action\" in %s", what);
    if (lstr(c, v, w, &s) == -1)
        return -1;
    if (strcmp(s, "allow") == 0)
        r->action = POLICY_ALLOW;
    else if (strcmp(s, "deny") == 0)
        r->action = POLICY_DENY;
    else if (strcmp(s, "inject") == 0)
        r->action = POLICY_INJECT;
    else
        return lerr(c, v, "%s: expected allow, deny or inject, got \"%s\"", w,
            lquote(s, q, sizeof(q)));
    snprintf(w, sizeof(w), "%s.credential", what);
    if (r->action == POLICY_INJECT && cred == NULL)
        return lerr(c, n, "%s: action inject needs a credential", what);
    if (cred != NULL && r->action != POLICY_INJECT)
        return lerr(c, cred, "%s: only valid with action: inject", w);
    if (cred != NULL) {
        if (lstr(c, cred, w, &s) == -1)
            return -1;
        if ((r->credential = policy_credential(c->p, s)) == NULL)
            return lerr(c, cred, "%s: unknown credential \"%s\"", w, lquote(s, q, sizeof(q)));
    }
    snprintf(w, sizeof(w), "%s.approve", what);
    if ((v = ymap_get(n, "approve")) != NULL) {
        if (lstr(c, v, w, &s) == -1)
            return -1;
        for (k = 0; k < 4 && strcmp(s, approves[k]) != 0; k++)
            ;
        if (k == 4)
            return lerr(c, v, "%s: expected none, device, cli or any, got \"%s\"", w,
                lquote(s, q, sizeof(q)));
        r->approve = (enum policy_approve)k;
        if (r->approve != POLICY_APPROVE_NONE && r->action == POLICY_DENY)
            return lerr(c, v, "%s: not valid with action: deny", w);
    }
    snprintf(w, sizeof(w), "%s.allow_cleartext", what);
    if ((v = ymap_get(n, "allow_cleartext")) != NULL) {
        if (lbool(c, v, w, &r->allow_cleartext) == -1)
            return -1;
        if (r->action != POLICY_INJECT)
            return lerr(c, v, "%s: only valid with action: inject", w);
    }
    return 0;
}

static int
load_rule(struct lctx *c, const struct ynode *n, size_t idx)
{
    static const char *const keys[] = {"name", "host", "ports", "methods", "path", "agents",
        "action", "credential", "approve", "allow_cleartext", NULL};
    struct policy_rule *r = &c->p->rules[idx];
    const struct ynode *v;
    char what[32], w[64];

    snprintf(what, sizeof(what), "rules[%zu]", idx);
    r->line = n->line;
    if (lcheck_keys(c, n, keys, what) == -1)
        return -1;
    if ((v = ymap_get(n, "name")) == NULL)
        return lerr(c, n, "missing required key \"name\" in %s", what);
    snprintf(w, sizeof(w), "%s.name", what);
    if (rule_name(c, v, w, idx) == -1)
        return -1;
    if ((v = ymap_get(n, "host")) == NULL)
        return lerr(c, n, "missing required key \"host\" in %s", what);
    snprintf(w, sizeof(w), "%s.host", what);
    if (rule_host(c, v, w, r) == -1)
        return -1;
    snprintf(w, sizeof(w), "%s.ports", what);
    if ((v = ymap_get(n, "ports")) != NULL && rule_ports(c, v, w, r) == -1)
        return -1;
    snprintf(w, sizeof(w), "%s.methods", what);
    if ((v = ymap_get(n, "methods")) != NULL && rule_methods(c, v, w, r) == -1)
        return -1;
    snprintf(w, sizeof(w), "%s.path", what);
    if ((v = ymap_get(n, "path")) != NULL && rule_path(c, v, w, r) == -1)
        return -1;
    snprintf(w, sizeof(w), "%s.agents", what);
    if ((v = ymap_get(n, "agents")) != NULL && rule_agents(c, v, w, r) == -1)
        return -1;
    return rule_outcome(c, n, what, r);
}

int
load_rules(struct lctx *c, const struct ynode *n)
{
    size_t i;

    if (n->type == YNODE_SEQ && n->nkids > POLICY_MAX_RULES)
        return lerr(c, n, "rules: too many rules (at most %d)", POLICY_MAX_RULES);
    if (lcheck_seq(c, n, "rules", POLICY_MAX_RULES) == -1)
        return -1;
    if ((c->p->rules = calloc(yseq_len(n) + 1, sizeof(*c->p->rules))) == NULL)
        return oom(c);
    /* nrules counts rules as they are filled so policy_free sees only initialised ones. */
    for (i = 0; i < yseq_len(n); i++) {
        c->p->nrules++;
        if (load_rule(c, n->kids[i], i) == -1)
            return -1;
    }
    return 0;
}
