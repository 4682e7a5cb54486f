/*
 * The daemon-wide sections of the configuration: listen, vault, tls, resolve and network.
 * Each validates its mapping completely and fills struct policy; policy_load() in
 * policy.c calls them in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "policy/policy_internal.h"

#define RESOLVE_MAX_ADDRS 16 /* what the dialer tries per name */
#define ALLOW_CIDRS_MAX 1024

static int
load_listen_one(struct lctx *c, const struct ynode *map, const char *key,
    struct policy_listen *l)
{
    const struct ynode *n = ymap_get(map, key);
    const char *s = NULL;
    char what[32], q[64];

    if (n == NULL || (n->type == YNODE_SCALAR && n->is_null))
        return 0;
    snprintf(what, sizeof(what), "listen.%s", key);
    if (lstr(c, n, what, &s) == -1)
        return -1;
    if (strlen(s) >= sizeof(l->text) || net_parse_hostport(s, &l->addr, &l->addr_len) == -1)
        return lerr(c, n, "%s: bad address \"%s\" (expected IP:PORT, e.g. 127.0.0.1:3128)",
            what, lquote(s, q, sizeof(q)));
    util_strlcpy(l->text, s, sizeof(l->text));
    l->enabled = 1;
    return 0;
}

int
load_listen(struct lctx *c, const struct ynode *n)
{
    static const char *const keys[] = {"http", "socks5", "control", NULL};
    struct policy *p = c->p;
    const struct ynode *v;

    if (n == NULL)
        return lerr(c, c->root, "missing required key \"listen\"");
    if (lcheck_keys(c, n, keys, "listen") == -1 ||
        load_listen_one(c, n, "http", &p->listen_http) == -1 ||
        load_listen_one(c, n, "socks5", &p->listen_socks5) == -1)
        return -1;
    if (!p->listen_http.enabled && !p->listen_socks5.enabled)
        return lerr(c, n, "listen: at least one of http or socks5 is required");
    if (p->listen_http.enabled && p->listen_socks5.enabled &&
        p->listen_http.addr_len == p->listen_socks5.addr_len &&
        memcmp(&p->listen_http.addr, &p->listen_socks5.addr, p->listen_http.addr_len) == 0)
        return lerr(c, ymap_get(n, "socks5"), "listen.socks5: same address as listen.http");
    if ((v = ymap_get(n, "control")) != NULL && lpath(c, v, "listen.control", &p->control_path))
        return -1;
    return 0;
}

static int
set_str(struct lctx *c, char **dst, const char *src)
{
    free(*dst);
    if ((*dst = strdup(src)) == NULL)
        return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
    return 0;
}

static int
load_pin(struct lctx *c, const struct ynode *n)
{
    const char *s, *e;
    char *path;

    if (lstr(c, n, "vault.pkcs11.pin", &s) == -1)
        return -1;
    if (strncmp(s, "env:", 4) == 0 && s[4] != '\0') {
        for (e = s + 4; *e != '\0'; e++)
            if (!((*e >= 'A' && *e <= 'Z') || (*e >= 'a' && *e <= 'z') ||
                    (*e >= '0' && *e <= '9') || *e == '_'))
                break;
        if (*e == '\0')
            return set_str(c, &c->p->vault.pkcs11_pin, s);
    } else if (strncmp(s, "file:", 5) == 0 && s[5] != '\0' && strlen(s) < 4096) {
        if ((path = lpath_join(c->p->dir, s + 5)) == NULL ||
            asprintf(&c->p->vault.pkcs11_pin, "file:%s", path) == -1) {
            free(path);
            c->p->vault.pkcs11_pin = NULL;
            return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
        }
        free(path);
        return 0;
    }
    return lerr(c, n, "vault.pkcs11.pin: expected env:NAME or file:PATH");
}

static int
load_pkcs11(struct lctx *c, const struct ynode *n, int needed)
{
    static const char *const keys[] = {"module", "token", "pin", "key_label", NULL};
    struct policy *p = c->p;
    const struct ynode *v;
    const char *s = NULL;

    if (n == NULL)
        return needed ? lerr(c, ymap_get(c->root, "vault"),
                            "missing required key \"pkcs11\" in vault (backend: pkcs11)")
                      : 0;
    if (lcheck_keys(c, n, keys, "vault.pkcs11") == -1)
        return -1;
    if ((v = ymap_get(n, "module")) == NULL) {
        if (needed)
            return lerr(c, n, "missing required key \"module\" in vault.pkcs11");
    } else if (lstr(c, v, "vault.pkcs11.module", &s) == -1) {
        return -1;
    } else if (strchr(s, '/') != NULL) { /* bare names are left to the dlopen search path */
        if (lpath(c, v, "vault.pkcs11.module", &p->vault.pkcs11_module) == -1)
            return -1;
    } else if (set_str(c, &p->vault.pkcs11_module, s) == -1) {
        return -1;
    }
    if ((v = ymap_get(n, "token")) == NULL) {
        if (needed)
            return lerr(c, n, "missing required key \"token\" in vault.pkcs11");
    } else if (lstr(c, v, "vault.pkcs11.token", &s) == -1) {
        return -1;
    } else if (strncmp(s, "pkcs11:", 7) != 0) {
        return lerr(c, v, "vault.pkcs11.token: expected a pkcs11: URI (RFC 7512)");
    } else if (set_str(c, &p->vault.pkcs11_token_uri, s) == -1) {
        return -1;
    }
    if ((v = ymap_get(n, "pin")) != NULL && load_pin(c, v) == -1)
        return -1;
    if ((v = ymap_get(n, "key_label")) != NULL) {
        if (lstr(c, v, "vault.pkcs11.key_label", &s) == -1 ||
            set_str(c, &p->vault.pkcs11_key_label, s) == -1)
            return -1;
    }
    return 0;
}

static int
load_tpm2(struct lctx *c, const struct ynode *n)
{
    static const char *const keys[] = {"tcti", "primary_handle", NULL};
    const struct ynode *v;
    const char *s = NULL;
    uint64_t h;

    if (n == NULL)
        return 0;
    if (lcheck_keys(c, n, keys, "vault.tpm2") == -1)
        return -1;
    if ((v = ymap_get(n, "tcti")) != NULL &&
        (lstr(c, v, "vault.tpm2.tcti", &s) == -1 || set_str(c, &c->p->vault.tpm2_tcti, s) == -1))
        return -1;
    /* Persistent handles only: a transient handle would not survive a restart. */
    if ((v = ymap_get(n, "primary_handle")) != NULL) {
        if (luint(c, v, "vault.tpm2.primary_handle", 0x81000000u, 0x81ffffffu, &h) == -1)
            return -1;
        c->p->vault.tpm2_primary_handle = (uint32_t)h;
    }
    return 0;
}

int
load_vault(struct lctx *c, const struct ynode *n)
{
    static const char *const keys[] = {"backend", "dir", "pkcs11", "tpm2", NULL};
    struct policy *p = c->p;
    const struct ynode *v;
    const char *s = NULL;
    char q[64];

    if (n == NULL)
        return 0;
    if (lcheck_keys(c, n, keys, "vault") == -1)
        return -1;
    if ((v = ymap_get(n, "backend")) == NULL)
        return lerr(c, n, "missing required key \"backend\" in vault");
    if (lstr(c, v, "vault.backend", &s) == -1)
        return -1;
    if (strcmp(s, "pkcs11") == 0)
        p->vault.backend = POLICY_BACKEND_PKCS11;
    else if (strcmp(s, "tpm2") == 0)
        p->vault.backend = POLICY_BACKEND_TPM2;
    else
        return lerr(c, v, "vault.backend: expected pkcs11 or tpm2, got \"%s\"",
            lquote(s, q, sizeof(q)));
    if ((v = ymap_get(n, "dir")) != NULL) {
        free(p->vault.dir);
        p->vault.dir = NULL;
        if (lpath(c, v, "vault.dir", &p->vault.dir) == -1)
            return -1;
    }
    if (load_pkcs11(c, ymap_get(n, "pkcs11"), p->vault.backend == POLICY_BACKEND_PKCS11) == -1)
        return -1;
    return load_tpm2(c, ymap_get(n, "tpm2"));
}

int
load_tls(struct lctx *c, const struct ynode *n)
{
    static const char *const keys[] = {"intercept", "upstream_ca", NULL};
    const struct ynode *v;

    if (n == NULL)
        return 0;
    if (lcheck_keys(c, n, keys, "tls") == -1)
        return -1;
    if ((v = ymap_get(n, "intercept")) != NULL && lbool(c, v, "tls.intercept",
                                                      &c->p->tls.intercept) == -1)
        return -1;
    if ((v = ymap_get(n, "upstream_ca")) != NULL &&
        !(v->type == YNODE_SCALAR && strcmp(v->value, "system") == 0))
        return lpath(c, v, "tls.upstream_ca", &c->p->tls.upstream_ca);
    return 0;
}

static int
load_resolve_addrs(struct lctx *c, const struct ynode *v, const char *what,
    struct policy_resolve *r)
{
    const struct ynode *one = v;
    size_t i, n = 1;
    const char *s = NULL;
    char q[64];

    if (v->type == YNODE_SEQ) {
        if ((n = v->nkids) == 0 || n > RESOLVE_MAX_ADDRS)
            return lerr(c, v, "%s: expected 1..%d addresses", what, RESOLVE_MAX_ADDRS);
    } else if (v->type != YNODE_SCALAR) {
        return lerr(c, v, "%s: expected an address or a list, got %s", what, ynode_kind(v));
    }
    r->addrs = calloc(n, sizeof(*r->addrs));
    r->addr_lens = calloc(n, sizeof(*r->addr_lens));
    if (r->addrs == NULL || r->addr_lens == NULL)
        return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
    for (i = 0; i < n; i++) {
        if (v->type == YNODE_SEQ)
            one = v->kids[i];
        if (lstr(c, one, what, &s) == -1)
            return -1;
        if (net_parse_ip(s, &r->addrs[i], &r->addr_lens[i]) == -1)
            return lerr(c, one, "%s: bad IP address \"%s\"", what, lquote(s, q, sizeof(q)));
        r->naddrs++;
    }
    return 0;
}

int
load_resolve(struct lctx *c, const struct ynode *n)
{
    struct policy *p = c->p;
    char host[NET_HOST_MAX + 1], what[NET_HOST_MAX + 16], q[64];
    enum net_host_kind kind;
    const struct ynode *k;
    size_t i, j;

    if (n == NULL)
        return 0;
    if (lcheck_map(c, n, "resolve") == -1)
        return -1;
    if ((p->resolve = calloc(n->nkids / 2 + 1, sizeof(*p->resolve))) == NULL)
        return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
    for (i = 0; i + 1 < n->nkids; i += 2) {
        k = n->kids[i];
        if (net_normalize_host(k->value, strlen(k->value), host, sizeof(host), &kind) == -1 ||
            kind != NET_HOST_NAME)
            return lerr(c, k, "resolve: bad host name \"%s\"", lquote(k->value, q, sizeof(q)));
        for (j = 0; j < p->nresolve; j++)
            if (strcmp(p->resolve[j].host, host) == 0)
                return lerr(c, k, "resolve: duplicate host \"%s\"", host);
        if ((p->resolve[p->nresolve].host = strdup(host)) == NULL)
            return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
        p->nresolve++;
        snprintf(what, sizeof(what), "resolve.%s", host);
        if (load_resolve_addrs(c, n->kids[i + 1], what, &p->resolve[p->nresolve - 1]) == -1)
            return -1;
    }
    return 0;
}

int
load_network(struct lctx *c, const struct ynode *n)
{
    static const char *const keys[] = {"deny_private", "allow_cidrs", NULL};
    struct policy *p = c->p;
    const struct ynode *v;
    const char *s = NULL;
    char q[64];
    size_t i;

    if (n == NULL)
        return 0;
    if (lcheck_keys(c, n, keys, "network") == -1)
        return -1;
    if ((v = ymap_get(n, "deny_private")) != NULL &&
        lbool(c, v, "network.deny_private", &p->network.deny_private) == -1)
        return -1;
    if ((v = ymap_get(n, "allow_cidrs")) == NULL)
        return 0;
    if (lcheck_seq(c, v, "network.allow_cidrs", ALLOW_CIDRS_MAX) == -1)
        return -1;
    if ((p->network.allow_cidrs = calloc(yseq_len(v) + 1, sizeof(struct cidr))) == NULL)
        return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
    for (i = 0; i < yseq_len(v); i++) {
        if (lstr(c, v->kids[i], "network.allow_cidrs", &s) == -1)
            return -1;
        if (cidr_parse(s, &p->network.allow_cidrs[i]) == -1)
            return lerr(c, v->kids[i], "network.allow_cidrs: bad cidr \"%s\"",
                lquote(s, q, sizeof(q)));
        p->network.nallow_cidrs++;
    }
    return 0;
}
