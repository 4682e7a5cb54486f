/*
 * policy_load(): reads the file (bounded), builds the positioned tree, fills defaults and
 * runs every section loader, then the checks that span sections (vault needed by
 * credentials, a device needed by approve: device). Also reference counting and freeing.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "policy/policy_internal.h"

/* Reads at most POLICY_MAX_FILE bytes; a bigger file is refused, not truncated. */
static char *
read_config(const char *path, size_t *out_len, struct err *err)
{
    size_t len = 0;
    struct stat st;
    ssize_t r = 0;
    char *buf;
    int fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) == -1) {
        err_set(err, ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        if (fstat(fd, &st) == -1)
            err_set(err, ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        else
            err_set(err, ERR_IO, "%s: cannot read: %s", path,
                S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
        close(fd);
        return NULL;
    }
    if ((buf = malloc(POLICY_MAX_FILE + 1)) == NULL) {
        err_set(err, ERR_INTERNAL, "%s: out of memory", path);
        close(fd);
        return NULL;
    }
    while (len <= POLICY_MAX_FILE) {
        r = read(fd, buf + len, POLICY_MAX_FILE + 1 - len);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    if (r == -1)
        err_set(err, ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    else if (len > POLICY_MAX_FILE)
        err_set(err, ERR_USAGE, "%s:1:1: file is larger than 1 MiB", path);
    close(fd);
    if (r == -1 || len > POLICY_MAX_FILE) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    *out_len = len;
    return buf;
}

static struct policy *
policy_new_defaults(const char *path, struct err *err)
{
    char *copy, resolved[PATH_MAX];
    struct policy *p;

    if ((p = calloc(1, sizeof(*p))) == NULL || (copy = strdup(path)) == NULL) {
        free(p);
        err_set(err, ERR_INTERNAL, "%s: out of memory", path);
        return NULL;
    }
    p->refcount = 1;
    if (realpath(dirname(copy), resolved) == NULL) {
        err_set(err, ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        free(copy);
        free(p);
        return NULL;
    }
    free(copy);
    p->path = strdup(path);
    p->dir = strdup(resolved);
    p->version = 1;
    p->state_dir = lpath_join(resolved, "state");
    p->vault.dir = lpath_join(resolved, "vault");
    p->vault.pkcs11_key_label = strdup("airlock-vault");
    p->vault.tpm2_tcti = strdup("device:/dev/tpmrm0");
    p->vault.tpm2_primary_handle = 0x81000A1Cu;
    p->tls.intercept = 1;
    p->network.deny_private = 1;
    p->default_action = POLICY_DENY;
    p->approvals.timeout_ms = 120000;
    p->approvals.max_pending = 64;
    p->approvals.max_body = 1024 * 1024;
    p->approvals.device_baud = 115200;
    p->approvals.device_auth_hmac = 1;
    p->audit_path = lpath_join(resolved, "audit.jsonl");
    p->max_connections = 4096;
    p->header_timeout_ms = 30000;
    p->idle_timeout_ms = 60000;
    p->connect_timeout_ms = 10000;
    p->upstream_timeout_ms = 60000;
    p->unseal_timeout_ms = 5000;
    if (p->path == NULL || p->dir == NULL || p->state_dir == NULL || p->vault.dir == NULL ||
        p->vault.pkcs11_key_label == NULL || p->vault.tpm2_tcti == NULL ||
        p->audit_path == NULL) {
        policy_free(p);
        err_set(err, ERR_INTERNAL, "%s: out of memory", path);
        return NULL;
    }
    return p;
}

static int
load_device(struct lctx *c, const struct ynode *n)
{
    static const char *const keys[] = {"path", "baud", "auth", NULL};
    static const uint64_t bauds[] = {1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200,
        230400, 460800, 921600};
    struct policy *p = c->p;
    const struct ynode *v;
    uint64_t baud;
    const char *s = NULL;
    char q[64];
    size_t i;

    if (lcheck_keys(c, n, keys, "approvals.device") == -1)
        return -1;
    p->approvals.device_enabled = 1;
    v = ymap_get(n, "path");
    if (v == NULL || (v->type == YNODE_SCALAR && strcmp(v->value, "auto") == 0))
        p->approvals.device_path = strdup("auto");
    else if (lpath(c, v, "approvals.device.path", &p->approvals.device_path) == -1)
        return -1;
    if (p->approvals.device_path == NULL)
        return err_set(c->err, ERR_INTERNAL, "%s: out of memory", c->path);
    if ((v = ymap_get(n, "baud")) != NULL) {
        if (luint(c, v, "approvals.device.baud", 1, 921600, &baud) == -1)
            return -1;
        for (i = 0; i < sizeof(bauds) / sizeof(bauds[0]) && bauds[i] != baud; i++)
            ;
        if (i == sizeof(bauds) / sizeof(bauds[0]))
            return lerr(c, v, "approvals.device.baud: unsupported baud rate %llu",
                (unsigned long long)baud);
        p->approvals.device_baud = (uint32_t)baud;
    }
    if ((v = ymap_get(n, "auth")) != NULL) {
        if (lstr(c, v, "approvals.device.auth", &s) == -1)
            return -1;
        if (strcmp(s, "hmac") != 0 && strcmp(s, "none") != 0)
            return lerr(c, v, "approvals.device.auth: expected hmac or none, got \"%s\"",
                lquote(s, q, sizeof(q)));
        p->approvals.device_auth_hmac = strcmp(s, "hmac") == 0;
    }
    return 0;
}

static int
load_approvals(struct lctx *c, const struct ynode *n)
{
    static const char *const keys[] = {"timeout", "max_pending", "max_body", "device", NULL};
    struct policy *p = c->p;
    const struct ynode *v;
    uint64_t u;

    if (n == NULL)
        return 0;
    if (lcheck_keys(c, n, keys, "approvals") == -1)
        return -1;
    if ((v = ymap_get(n, "timeout")) != NULL &&
        lduration(c, v, "approvals.timeout", 1, &p->approvals.timeout_ms) == -1)
        return -1;
    if ((v = ymap_get(n, "max_pending")) != NULL) {
        if (luint(c, v, "approvals.max_pending", 1, 100000, &u) == -1)
            return -1;
        p->approvals.max_pending = (uint32_t)u;
    }
    if ((v = ymap_get(n, "max_body")) != NULL &&
        lsize(c, v, "approvals.max_body", 0, 1024ull * 1024 * 1024, &p->approvals.max_body))
        return -1;
    if ((v = ymap_get(n, "device")) != NULL)
        return load_device(c, v);
    return 0;
}

static int
load_limits(struct lctx *c, const struct ynode *n)
{
    static const char *const keys[] = {"max_connections", "header_timeout", "idle_timeout",
        "connect_timeout", "upstream_timeout", "unseal_timeout", NULL};
    struct policy *p = c->p;
    const struct ynode *v;
    uint64_t u;

    if (n == NULL)
        return 0;
    if (lcheck_keys(c, n, keys, "limits") == -1)
        return -1;
    if ((v = ymap_get(n, "max_connections")) != NULL) {
        if (luint(c, v, "limits.max_connections", 1, 1000000, &u) == -1)
            return -1;
        p->max_connections = (uint32_t)u;
    }
    if ((v = ymap_get(n, "header_timeout")) != NULL &&
        lduration(c, v, "limits.header_timeout", 1, &p->header_timeout_ms) == -1)
        return -1;
    if ((v = ymap_get(n, "idle_timeout")) != NULL &&
        lduration(c, v, "limits.idle_timeout", 1, &p->idle_timeout_ms) == -1)
        return -1;
    if ((v = ymap_get(n, "connect_timeout")) != NULL &&
        lduration(c, v, "limits.connect_timeout", 1, &p->connect_timeout_ms) == -1)
        return -1;
    if ((v = ymap_get(n, "upstream_timeout")) != NULL &&
        lduration(c, v, "limits.upstream_timeout", 1, &p->upstream_timeout_ms) == -1)
        return -1;
    /* Bounded both ways: under 100 ms a healthy TPM's unseal would fail, over 60 s an
     * exchange parked on a stuck token outlives any client's patience. */
    if ((v = ymap_get(n, "unseal_timeout")) != NULL &&
        lduration_range(c, v, "limits.unseal_timeout", 100, 60000, &p->unseal_timeout_ms) == -1)
        return -1;
    return 0;
}

static int
load_scalars(struct lctx *c)
{
    const struct ynode *v;
    const char *s = NULL;
    char q[64];

    if ((v = ymap_get(c->root, "version")) != NULL &&
        (v->type != YNODE_SCALAR || strcmp(v->value, "1") != 0))
        return lerr(c, v, "version: unsupported version \"%s\" (expected 1)",
            v->type == YNODE_SCALAR ? lquote(v->value, q, sizeof(q)) : "?");
    if ((v = ymap_get(c->root, "state_dir")) != NULL) {
        free(c->p->state_dir);
        c->p->state_dir = NULL;
        if (lpath(c, v, "state_dir", &c->p->state_dir) == -1)
            return -1;
    }
    if ((v = ymap_get(c->root, "default")) != NULL) {
        if (lstr(c, v, "default", &s) == -1)
            return -1;
        if (strcmp(s, "deny") != 0 && strcmp(s, "allow") != 0)
            return lerr(c, v, "default: expected deny or allow, got \"%s\"",
                lquote(s, q, sizeof(q)));
        c->p->default_action = strcmp(s, "allow") == 0 ? POLICY_ALLOW : POLICY_DENY;
    }
    if ((v = ymap_get(c->root, "audit")) != NULL) {
        static const char *const keys[] = {"path", NULL};
        if (lcheck_keys(c, v, keys, "audit") == -1)
            return -1;
        if ((v = ymap_get(v, "path")) != NULL) {
            free(c->p->audit_path);
            c->p->audit_path = NULL;
            if (lpath(c, v, "audit.path", &c->p->audit_path) == -1)
                return -1;
        }
    }
    return 0;
}

/* Requirements that span sections, checked once everything parsed. */
static int
check_cross(struct lctx *c)
{
    const struct ynode *appr = ymap_get(c->root, "approvals");
    struct policy *p = c->p;
    size_t i;

    if (p->ncredentials > 0 && p->vault.backend == POLICY_BACKEND_NONE)
        return lerr(c, c->root, "missing required key \"vault\" (credentials are defined)");
    for (i = 0; i < p->nrules && !p->approvals.device_enabled; i++) {
        const struct policy_rule *r = &p->rules[i];
        if (r->approve != POLICY_APPROVE_DEVICE && r->approve != POLICY_APPROVE_ANY)
            continue;
        if (appr == NULL)
            return lerr(c, c->root, "missing required key \"approvals\" (rule \"%s\" has "
                "approve: %s)", r->name, policy_approve_name(r->approve));
        return lerr(c, appr, "missing required key \"device\" in approvals (rule \"%s\" has "
            "approve: %s)", r->name, policy_approve_name(r->approve));
    }
    return 0;
}

static int
load_root(struct lctx *c)
{
    static const char *const keys[] = {"version", "listen", "state_dir", "vault", "tls",
        "resolve", "network", "agents", "credentials", "rules", "default", "approvals",
        "audit", "limits", NULL};
    const struct ynode *r = c->root;

    if (r->type != YNODE_MAP && !(r->type == YNODE_SCALAR && r->is_null))
        return lerr(c, r, "the configuration must be a mapping, got %s", ynode_kind(r));
    if (lcheck_keys(c, r, keys, "") == -1 || load_scalars(c) == -1 ||
        load_listen(c, ymap_get(r, "listen")) == -1 ||
        load_vault(c, ymap_get(r, "vault")) == -1 || load_tls(c, ymap_get(r, "tls")) == -1 ||
        load_resolve(c, ymap_get(r, "resolve")) == -1 ||
        load_network(c, ymap_get(r, "network")) == -1 ||
        load_agents(c, ymap_get(r, "agents")) == -1 ||
        load_credentials(c, ymap_get(r, "credentials")) == -1)
        return -1;
    if (ymap_get(r, "rules") == NULL)
        return lerr(c, r, "missing required key \"rules\"");
    if (load_rules(c, ymap_get(r, "rules")) == -1 ||
        load_approvals(c, ymap_get(r, "approvals")) == -1 ||
        load_limits(c, ymap_get(r, "limits")) == -1)
        return -1;
    return check_cross(c);
}

struct policy *
policy_load(const char *path, struct err *err)
{
    struct policy *p;
    size_t len;
    char *buf;

    err_clear(err);
    if (path == NULL) {
        err_set(err, ERR_USAGE, "no configuration path");
        return NULL;
    }
    if ((buf = read_config(path, &len, err)) == NULL)
        return NULL;
    p = policy_load_buffer(path, buf, len, err);
    free(buf);
    return p;
}

struct policy *
policy_load_buffer(const char *path, const char *buf, size_t len, struct err *err)
{
    struct lctx c;
    struct policy *p;
    int rc;

    err_clear(err);
    if (path == NULL) {
        err_set(err, ERR_USAGE, "no configuration path");
        return NULL;
    }
    if (buf == NULL && len > 0) {
        err_set(err, ERR_USAGE, "%s: no configuration text", path);
        return NULL;
    }
    if (len > POLICY_MAX_FILE) {
        err_set(err, ERR_USAGE, "%s:1:1: file is larger than 1 MiB", path);
        return NULL;
    }
    if ((p = policy_new_defaults(path, err)) == NULL)
        return NULL;
    memset(&c, 0, sizeof(c));
    c.path = path;
    c.err = err;
    c.p = p;
    c.root = ytree_parse(path, buf != NULL ? buf : "", len, err);
    rc = c.root != NULL ? load_root(&c) : -1;
    ytree_free((struct ynode *)c.root);
    if (rc == -1) {
        policy_free(p);
        return NULL;
    }
    return p;
}

void
policy_free(struct policy *p)
{
    size_t i, j;

    if (p == NULL)
        return;
    for (i = 0; i < p->nrules; i++) {
        struct policy_rule *r = &p->rules[i];
        free(r->name);
        free(r->host);
        free(r->ports);
        for (j = 0; j < r->nmethods; j++)
            free(r->methods[j]);
        free(r->methods);
        free(r->path);
        free(r->agents); /* the names belong to p->agents */
    }
    free(p->rules);
    for (i = 0; i < p->ncredentials; i++) {
        free(p->credentials[i].name);
        free(p->credentials[i].header);
        free(p->credentials[i].format);
    }
    free(p->credentials);
    for (i = 0; i < p->nagents; i++)
        free(p->agents[i].name);
    free(p->agents);
    for (i = 0; i < p->nresolve; i++) {
        free(p->resolve[i].host);
        free(p->resolve[i].addrs);
        free(p->resolve[i].addr_lens);
    }
    free(p->resolve);
    free(p->network.allow_cidrs);
    free(p->path);
    free(p->dir);
    free(p->control_path);
    free(p->state_dir);
    free(p->vault.dir);
    free(p->vault.pkcs11_module);
    free(p->vault.pkcs11_token_uri);
    free(p->vault.pkcs11_pin);
    free(p->vault.pkcs11_key_label);
    free(p->vault.tpm2_tcti);
    free(p->tls.upstream_ca);
    free(p->approvals.device_path);
    free(p->audit_path);
    free(p);
}

struct policy *
policy_ref(struct policy *p)
{
    /* The daemon is one event loop: no atomics needed. */
    if (p != NULL)
        p->refcount++;
    return p;
}

void
policy_unref(struct policy *p)
{
    if (p != NULL && --p->refcount <= 0)
        policy_free(p);
}

const char *
policy_action_name(enum policy_action a)
{
    switch (a) {
    case POLICY_ALLOW:
        return "allow";
    case POLICY_INJECT:
        return "inject";
    default:
        return "deny";
    }
}

const char *
policy_approve_name(enum policy_approve a)
{
    switch (a) {
    case POLICY_APPROVE_DEVICE:
        return "device";
    case POLICY_APPROVE_CLI:
        return "cli";
    case POLICY_APPROVE_ANY:
        return "any";
    default:
        return "none";
    }
}
