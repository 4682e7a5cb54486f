/*
 * The configuration and policy: loaded from YAML (libyaml) with PATH:LINE:COL errors,
 * validated completely, then compiled into an immutable, reference-counted struct policy.
 * SIGHUP builds a new one and swaps it in; connections keep the one they started with.
 */
#ifndef AIRLOCK_POLICY_H
#define AIRLOCK_POLICY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/err.h"
#include "common/net.h"

enum policy_action { POLICY_DENY = 0, POLICY_ALLOW, POLICY_INJECT };
enum policy_approve { POLICY_APPROVE_NONE = 0, POLICY_APPROVE_DEVICE, POLICY_APPROVE_CLI,
    POLICY_APPROVE_ANY };
enum policy_backend { POLICY_BACKEND_NONE = 0, POLICY_BACKEND_PKCS11, POLICY_BACKEND_TPM2 };

struct policy_listen {
    int enabled;
    char text[64];                /* as written, e.g. "127.0.0.1:3128" */
    struct sockaddr_storage addr;
    socklen_t addr_len;
};

struct policy_agent {
    char *name;
    unsigned char token_sha256[32];
};

struct policy_credential {
    char *name;
    char *header;                 /* e.g. "Authorization" */
    char *format;                 /* contains "{secret}" exactly once */
    uint64_t hold_ms;             /* 0: unseal per injection */
};

struct policy_rule {
    char *name;
    char *host;                   /* normalised; "*.example.com" when wildcard */
    int host_wildcard;            /* "*.suffix": subdomains only, never the suffix itself */
    uint16_t *ports;              /* NULL/0: 443 over TLS, 80 in cleartext */
    size_t nports;
    char **methods;               /* upper case; NULL/0: any */
    size_t nmethods;
    char *path;                   /* glob on the path without query; NULL: any */
    char **agents;                /* NULL/0: any agent */
    size_t nagents;
    enum policy_action action;
    const struct policy_credential *credential; /* inject only; points into policy */
    enum policy_approve approve;
    int allow_cleartext;          /* inject over a cleartext upstream */
    int line;                     /* config line, for messages */
};

struct policy_resolve {
    char *host;                   /* normalised name */
    struct sockaddr_storage *addrs; /* port 0 */
    socklen_t *addr_lens;
    size_t naddrs;                /* a scalar or a list in YAML */
};

struct policy {
    int refcount;
    char *path;                   /* config file as given */
    char *dir;                    /* its directory, absolute: relative paths resolve here */
    int version;                  /* 1 */

    struct policy_listen listen_http;
    struct policy_listen listen_socks5;
    char *control_path;           /* absolute; NULL when not configured */
    char *state_dir;              /* absolute; default <dir>/state */

    struct {
        enum policy_backend backend; /* NONE when no vault: section */
        char *dir;                   /* absolute; default <dir>/vault */
        char *pkcs11_module;
        char *pkcs11_token_uri;
        char *pkcs11_pin;            /* "env:NAME" | "file:PATH" (path made absolute) */
        char *pkcs11_key_label;      /* default "airlock-vault" */
        char *tpm2_tcti;             /* default "device:/dev/tpmrm0" */
        uint32_t tpm2_primary_handle; /* default 0x81000A1C */
    } vault;

    struct {
        int intercept;            /* default 1 */
        char *upstream_ca;        /* NULL: system store; else absolute PEM path */
    } tls;

    struct policy_resolve *resolve;
    size_t nresolve;

    struct {
        int deny_private;         /* default 1 */
        struct cidr *allow_cidrs;
        size_t nallow_cidrs;
    } network;

    struct policy_agent *agents;  /* empty: no proxy authentication, agent "-" */
    size_t nagents;
    struct policy_credential *credentials;
    size_t ncredentials;
    struct policy_rule *rules;    /* in order: first match wins */
    size_t nrules;
    enum policy_action default_action; /* POLICY_DENY or POLICY_ALLOW */

    struct {
        uint64_t timeout_ms;      /* default 120 s */
        uint32_t max_pending;     /* default 64 */
        uint64_t max_body;        /* default 1 MiB */
        int device_enabled;       /* approvals.device present */
        char *device_path;        /* "auto" or absolute tty path */
        uint32_t device_baud;     /* default 115200 */
        int device_auth_hmac;     /* default 1 (auth: hmac) */
    } approvals;

    char *audit_path;             /* absolute; default <dir>/audit.jsonl */

    /* Limits and timeouts (optional "limits:" section; defaults from SPEC section 3). */
    uint32_t max_connections;     /* default 4096 */
    uint64_t header_timeout_ms;   /* default 30 s */
    uint64_t idle_timeout_ms;     /* default 60 s */
    uint64_t connect_timeout_ms;  /* default 10 s */
    uint64_t upstream_timeout_ms; /* default 60 s: upstream silence while a response is owed */
    uint64_t unseal_timeout_ms;   /* default 5 s, 100 ms..60 s: a token operation's deadline */
};

/*
 * Loads, validates and compiles path. On error returns NULL and err->msg is
 * "PATH:LINE:COL: message" (err->code ERR_USAGE for config errors, ERR_IO when the file
 * cannot be read). The result has refcount 1.
 */
struct policy *policy_load(const char *path, struct err *err);
/*
 * The same from len bytes in memory (at most 1 MiB; no NUL terminator needed). path is
 * only used in messages and for its directory, against which relative paths resolve; that
 * directory must exist. Used by tests and the fuzzer.
 */
struct policy *policy_load_buffer(const char *path, const char *buf, size_t len,
    struct err *err);
struct policy *policy_ref(struct policy *p);
void policy_unref(struct policy *p); /* frees at zero; NULL is a no-op */

/* One request as the matcher sees it; host is normalised (net_normalize_host). */
struct policy_request {
    const char *agent;            /* "-" when no agents are configured */
    const char *host;
    uint16_t port;
    int tls;                      /* 1 TLS, 0 cleartext, -1 unknown (connection level) */
    const char *method;           /* NULL at connection level */
    const char *path;             /* without query; NULL at connection level */
};

/* First rule matching every field of req, or NULL (then default_action applies). */
const struct policy_rule *policy_match(const struct policy *p, const struct policy_request *req);

enum policy_conn_verdict {
    POLICY_CONN_DENY,    /* refuse the connection (rule may be NULL: no-rule) */
    POLICY_CONN_TUNNEL,  /* every request would be a plain allow: blind tunnel */
    POLICY_CONN_INSPECT, /* per-request decisions needed: parse (and intercept TLS) */
};

/*
 * Connection-level decision for agent, host:port (SPEC section 3 step 3) before the
 * protocol is known. *rule is set to the rule that decided DENY/TUNNEL, or NULL when the
 * default did.
 */
enum policy_conn_verdict policy_decide_connection(const struct policy *p, const char *agent,
    const char *host, uint16_t port, const struct policy_rule **rule);

/* 1 when some rule names a host that could match host (any port/agent), or default allow.
 * Used to refuse names before resolving them (no DNS exfiltration). */
int policy_host_possible(const struct policy *p, const char *host);
/* 1 when any rule that could match host has a path condition (strict path checks apply). */
int policy_host_has_path_rules(const struct policy *p, const char *host);

/*
 * Proxy authentication: user must name an agent whose token_sha256 equals SHA-256 of pass
 * (constant-time). Returns the agent's name (owned by p) or NULL. With no agents
 * configured every client is "-" and this returns "-".
 */
const char *policy_authenticate(const struct policy *p, const char *user, const char *pass,
    size_t pass_len);

const struct policy_credential *policy_credential(const struct policy *p, const char *name);
/* The resolve: entry for host, or NULL. */
const struct policy_resolve *policy_resolve_lookup(const struct policy *p, const char *host);
/* 1 when sa may be dialled: not private under deny_private, or inside allow_cidrs
 * (embedded IPv4 forms judged by the embedded address). */
int policy_address_allowed(const struct policy *p, const struct sockaddr *sa);

const char *policy_action_name(enum policy_action a);
const char *policy_approve_name(enum policy_approve a);

#endif
