/*
 * The proxy: HTTP (absolute-form + CONNECT) and SOCKS5 listeners, per-connection state
 * machines, policy decisions, upstream dialing and relaying. The daemon creates one
 * struct proxy, hands it the current policy and swaps policies on reload.
 */
#ifndef AIRLOCK_PROXY_H
#define AIRLOCK_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct event_base;
struct evdns_base;
struct policy;
struct audit;
struct vault;
struct approvals;

struct proxy_deps {
    struct event_base *base;
    struct evdns_base *dns;     /* for names not in resolve: */
    struct audit *audit;        /* every decision is written here */
    struct vault *vault;        /* NULL: inject rules answer vault-unavailable */
    struct approvals *approvals; /* NULL: approve rules answer vault-unavailable */
    void *tls;                  /* struct proxy_tls *, NULL: no interception */
};

struct proxy_stats {
    uint64_t connections_total;
    uint64_t connections_active;
    uint64_t requests_total;
    uint64_t denied_total;
    uint64_t injections_total; /* credential headers written */
    uint64_t unseals_total;    /* token unseals asked for them (concurrent ones share one) */
};

/* Binds the listeners named in p (takes a reference on p). NULL with err on failure. */
struct proxy *proxy_new(const struct proxy_deps *deps, struct policy *p, struct err *err);
/* Installs a new policy for connections accepted from now on (takes a reference). */
void proxy_set_policy(struct proxy *px, struct policy *p);
/*
 * Stops accepting, closes idle keep-alive connections and calls done(arg) once every
 * connection has finished, or after grace_ms when the rest are cut.
 */
void proxy_drain(struct proxy *px, uint64_t grace_ms, void (*done)(void *arg), void *arg);
void proxy_stats(const struct proxy *px, struct proxy_stats *out);
void proxy_free(struct proxy *px);
/*
 * The token worker (proxy/unseal_worker.h) the proxy's injections and leaf mints use, for
 * the daemon's other token users (the buddy pair key): one thread owns the token, and the
 * loop never waits for it. Valid until proxy_free; cancel every job before that.
 */
struct unseal_worker *proxy_token_worker(struct proxy *px);


#endif
