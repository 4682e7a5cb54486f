/*
 * The compiled policy at run time: first-match rule lookup, the connection-level verdict
 * (SPEC section 3 step 3), the pre-resolution host check, proxy authentication and the
 * private-address guard. Nothing here allocates; everything is read-only on struct policy.
 */
#include <fnmatch.h>
#include <netinet/in.h>
#include <string.h>

#include "common/util.h"
#include "policy/policy_internal.h"

/* "*.example.com" matches strict subdomains only, never example.com itself. */
static int
host_matches(const struct policy_rule *r, const char *host)
{
    size_t hl, sl;
    const char *suffix;

    if (host == NULL)
        return 0;
    if (!r->host_wildcard)
        return strcmp(r->host, host) == 0;
    suffix = r->host + 1; /* ".example.com" */
    hl = strlen(host);
    sl = strlen(suffix);
    return hl > sl && strcmp(host + hl - sl, suffix) == 0;
}

static int
agent_matches(const struct policy_rule *r, const char *agent)
{
    size_t i;

    if (r->nagents == 0)
        return 1;
    if (agent == NULL)
        return 0;
    for (i = 0; i < r->nagents; i++)
        if (strcmp(r->agents[i], agent) == 0)
            return 1;
    return 0;
}

/* Without ports: 443 over TLS, 80 in cleartext, either while the protocol is unknown. */
static int
port_matches(const struct policy_rule *r, uint16_t port, int tls)
{
    size_t i;

    if (r->nports == 0) {
        if (tls == 1)
            return port == 443;
        if (tls == 0)
            return port == 80;
        return port == 443 || port == 80;
    }
    for (i = 0; i < r->nports; i++)
        if (r->ports[i] == port)
            return 1;
    return 0;
}

/* A condition on a field the caller does not know yet (NULL) does not match. */
static int
method_matches(const struct policy_rule *r, const char *method)
{
    size_t i;

    if (r->nmethods == 0)
        return 1;
    if (method == NULL)
        return 0;
    for (i = 0; i < r->nmethods; i++)
        if (util_strcaseeq(r->methods[i], method))
            return 1;
    return 0;
}

static int
path_matches(const struct policy_rule *r, const char *path)
{
    if (r->path == NULL)
        return 1;
    /* No FNM_PATHNAME: "*" crosses "/" as the contract says. */
    return path != NULL && fnmatch(r->path, path, 0) == 0;
}

const struct policy_rule *
policy_match(const struct policy *p, const struct policy_request *req)
{
    size_t i;

    if (p == NULL || req == NULL)
        return NULL;
    for (i = 0; i < p->nrules; i++) {
        const struct policy_rule *r = &p->rules[i];
        if (agent_matches(r, req->agent) && host_matches(r, req->host) &&
            port_matches(r, req->port, req->tls) && method_matches(r, req->method) &&
            path_matches(r, req->path))
            return r;
    }
    return NULL;
}

enum policy_conn_verdict
policy_decide_connection(const struct policy *p, const char *agent, const char *host,
    uint16_t port, const struct policy_rule **rule)
{
    const struct policy_rule *r;
    int conditional_before = 0, candidates = 0;
    size_t i;

    *rule = NULL;
    for (i = 0; i < p->nrules; i++) {
        r = &p->rules[i];
        if (!agent_matches(r, agent) || !host_matches(r, host) || !port_matches(r, port, -1))
            continue;
        candidates++;
        if (r->nmethods > 0 || r->path != NULL) {
            conditional_before = 1;
            continue;
        }
        /* r is the first unconditional candidate: it decides whatever comes after it. */
        if (conditional_before)
            return POLICY_CONN_INSPECT;
        if (r->action == POLICY_DENY) {
            *rule = r;
            return POLICY_CONN_DENY;
        }
        if (r->action == POLICY_ALLOW && r->approve == POLICY_APPROVE_NONE) {
            *rule = r;
            return POLICY_CONN_TUNNEL;
        }
        return POLICY_CONN_INSPECT;
    }
    if (candidates > 0)
        return POLICY_CONN_INSPECT;
    return p->default_action == POLICY_ALLOW ? POLICY_CONN_TUNNEL : POLICY_CONN_DENY;
}

int
policy_host_possible(const struct policy *p, const char *host)
{
    size_t i;

    if (p->default_action == POLICY_ALLOW)
        return 1;
    for (i = 0; i < p->nrules; i++)
        if (host_matches(&p->rules[i], host))
            return 1;
    return 0;
}

int
policy_host_has_path_rules(const struct policy *p, const char *host)
{
    size_t i;

    for (i = 0; i < p->nrules; i++)
        if (p->rules[i].path != NULL && host_matches(&p->rules[i], host))
            return 1;
    return 0;
}

/*
 * Every agent's token is compared in constant time whatever the name, and the loop never
 * stops early, so timing says nothing about which token was close or which name exists.
 */
const char *
policy_authenticate(const struct policy *p, const char *user, const char *pass,
    size_t pass_len)
{
    unsigned char digest[32];
    const char *found = NULL;
    int name_eq, tok_eq;
    size_t i;

    if (p->nagents == 0)
        return "-";
    if (user == NULL || (pass == NULL && pass_len > 0))
        return NULL;
    util_sha256(pass != NULL ? pass : "", pass_len, digest);
    for (i = 0; i < p->nagents; i++) {
        name_eq = strcmp(p->agents[i].name, user) == 0;
        tok_eq = util_ct_equal(digest, p->agents[i].token_sha256, sizeof(digest));
        if (name_eq & tok_eq)
            found = p->agents[i].name;
    }
    explicit_bzero(digest, sizeof(digest));
    return found;
}

const struct policy_credential *
policy_credential(const struct policy *p, const char *name)
{
    size_t i;

    if (name == NULL)
        return NULL;
    for (i = 0; i < p->ncredentials; i++)
        if (strcmp(p->credentials[i].name, name) == 0)
            return &p->credentials[i];
    return NULL;
}

const struct policy_resolve *
policy_resolve_lookup(const struct policy *p, const char *host)
{
    size_t i;

    if (host == NULL)
        return NULL;
    for (i = 0; i < p->nresolve; i++)
        if (strcmp(p->resolve[i].host, host) == 0)
            return &p->resolve[i];
    return NULL;
}

static int
in_allow_cidrs(const struct policy *p, const struct sockaddr *sa)
{
    size_t i;

    for (i = 0; i < p->network.nallow_cidrs; i++)
        if (cidr_contains(&p->network.allow_cidrs[i], sa))
            return 1;
    return 0;
}

int
policy_address_allowed(const struct policy *p, const struct sockaddr *sa)
{
    struct sockaddr_storage unmapped;

    if (sa == NULL || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
        return 0;
    if (!p->network.deny_private || !net_addr_is_private(sa))
        return 1;
    /* ::ffff:127.0.0.1 is allowed by 127.0.0.1/32 as well as by a v6 cidr naming it. */
    if (in_allow_cidrs(p, sa))
        return 1;
    return net_addr_unmap(sa, &unmapped) == 1 && in_allow_cidrs(p, (struct sockaddr *)&unmapped);
}
