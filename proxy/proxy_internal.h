/*
 * Private to proxy/: the connection object shared by the listener, the HTTP and SOCKS5
 * front ends, the dialer, the forwarder and the tunnel. One struct conn per accepted
 * client; at most one exchange (request/response) in flight on it at a time.
 */
#ifndef AIRLOCK_PROXY_INTERNAL_H
#define AIRLOCK_PROXY_INTERNAL_H

#include <sys/queue.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/net.h"
#include "common/secmem.h"
#include "policy/policy.h"
#include "proxy/http.h"
#include "proxy/proxy.h"

/* Relay back-pressure: stop reading a side while the other's output exceeds this. */
#define PROXY_HIGH_WATER (1u << 20)
#define PROXY_PATH_MAX 2048
#define PROXY_AGENT_MAX 64

enum conn_kind { CONN_HTTP, CONN_SOCKS5 };

enum conn_state {
    CS_SOCKS_GREETING,
    CS_SOCKS_AUTH,
    CS_SOCKS_REQUEST,
    CS_HEAD,      /* waiting for a request head */
    CS_DIALING,   /* a request (or tunnel) is waiting for its upstream */
    CS_HOLD_BODY, /* buffering the body of a request that needs approval */
    CS_HELD,      /* waiting in the approvals queue */
    CS_UNSEAL,    /* upstream ready, waiting for the token worker's unseal (inject.c) */
    CS_MINT,      /* TLS stream parked (no reads) until its leaf is minted (intercept.c) */
    CS_EXCHANGE,  /* request and response in flight */
    CS_TUNNEL,    /* blind relay */
    CS_CLOSING,   /* flushing a final response, then free */
};

/* One request/response on a connection; everything the audit line needs. */
struct exchange {
    char id[7];
    uint64_t start_us;
    struct http_msg req;
    const char *origin;          /* request target in origin-form (points into req.raw) */
    char method[32];
    /* Without query: "" until the target is parsed, then path_buf. Heap, not an array:
     * an idle keep-alive connection holds no PROXY_PATH_MAX buffer. */
    char *path;
    char *path_buf;             /* owned; shorter than PROXY_PATH_MAX */
    char host[NET_HOST_MAX + 1];
    uint16_t port;
    const struct policy_rule *rule;
    const char *decision;
    const char *credential;
    char approver[64];
    int status;
    uint64_t bytes_up, bytes_down;
    /* request body relay */
    enum http_body req_body;
    uint64_t req_left;
    struct http_chunked req_chunk;
    int req_done;
    /* response relay */
    int resp_head_done;
    struct http_msg resp;
    enum http_body resp_body;
    uint64_t resp_left;
    struct http_chunked resp_chunk;
    int resp_done;
    int client_close;   /* close the client connection after this exchange */
    int upgrade;        /* websocket: becomes a tunnel after 101 */
    struct http_chunked hold_chunk; /* finds the end of a held chunked body */
    size_t hold_scanned;
    int up_reused;      /* sent on a kept-alive upstream (may retry once if it was stale) */
    int up_keep;        /* the upstream may carry the next request */
};

struct dial;
struct intercept_conn;
struct inject_flight;
struct unseal_worker;
struct splice_relay;

struct conn {
    struct proxy *px;
    struct policy *pol;         /* the policy this connection started with (a reference) */
    enum conn_kind kind;
    enum conn_state state;
    const char *via;            /* "http", "connect", "socks5" */
    struct bufferevent *client;
    struct bufferevent *up;
    char peer[64];
    char agent[PROXY_AGENT_MAX + 1];
    int authed;
    /* CONNECT and SOCKS5 fix the target for the whole connection */
    int fixed;
    char host[NET_HOST_MAX + 1];
    uint16_t port;
    int tls;                    /* the stream is TLS (intercepted) */
    struct intercept_conn *icpt; /* intercept.c's state for a TLS stream (leaf mint, writes) */
    int inspect;                /* fixed target whose requests are decided one by one */
    int first_request;          /* no request seen yet on an inspected stream */
    int head_timer;             /* the header-read timer (not the idle one) is armed */
    int held;                   /* the exchange is in the approvals queue */
    /* current upstream, reusable by a later request to the same host:port */
    char *up_host;              /* owned, see conn_note_upstream; NULL: not reusable */
    uint16_t up_port;
    struct dial *dial;
    struct inject_flight *flight;  /* the unseal the exchange waits on or uses (inject.c) */
    TAILQ_ENTRY(conn) flight_link; /* in flight->waiting while it is parked on it */
    struct event *timer;
    struct exchange *ex;        /* NULL between requests on a kept-alive connection */
    int ex_active;
    uint64_t tunnel_start_us;
    struct splice_relay *splice; /* blind tunnel relayed with splice(2), see splice.c */
    uint64_t closing_deadline_us;
    /* send watchdog: what was queued for the client, and when it last took a byte */
    size_t watch_pending;
    uint64_t watch_down;
    uint64_t watch_us;
    TAILQ_ENTRY(conn) link;
};

TAILQ_HEAD(conn_list, conn);

struct inject_state;
struct proxy_tls;

struct proxy {
    struct proxy_deps deps;
    struct inject_state *inject;
    struct proxy_tls *tls;      /* NULL: no TLS interception */
    struct policy *pol;
    struct evconnlistener *http_listener;
    struct evconnlistener *socks_listener;
    struct conn_list conns;
    struct proxy_stats stats;
    int draining;
    int audit_failed;           /* the last audit write failed: deny until one succeeds */
    int audit_full;             /* no room could be reserved for more records: deny */
    struct event *drain_timer;
    struct event *accept_timer; /* re-enables the listeners after an accept() failure */
    void (*drain_done)(void *arg);
    void *drain_arg;
};

/* proxy.c */
void conn_free(struct conn *c);
void conn_close_when_flushed(struct conn *c);
void conn_set_timer(struct conn *c, uint64_t ms);
void conn_clear_timer(struct conn *c);
void conn_watch_client(struct conn *c);
void conn_new_id(char id[7]);
int conn_exchange_alloc(struct conn *c);
void conn_exchange_free(struct conn *c);
void conn_exchange_begin(struct conn *c);
void conn_note_upstream(struct conn *c);
void conn_refuse_stream(struct conn *c, const char *decision);

/* respond.c: generated responses and audit lines */
void conn_respond(struct conn *c, int status, const char *decision, const char *text);
void conn_audit(struct conn *c);
struct audit_record;
void proxy_audit_write(struct proxy *px, const struct audit_record *rec);
int decision_status(const char *decision);

/* request.c: the HTTP data path */
void request_on_head_ready(struct conn *c);
int conn_audit_blocked(struct conn *c);
void http_client_readcb(struct bufferevent *bev, void *arg);
void http_client_eventcb(struct bufferevent *bev, short what, void *arg);
void request_next(struct conn *c);
void connect_established(struct conn *c, enum policy_conn_verdict verdict);
void socks_connect_decide(struct conn *c);

/* forward.c: relaying one exchange */
void forward_start(struct conn *c);
int forward_client_data(struct conn *c);
void forward_unsealed(struct conn *c, const struct err *err);
void request_redial(struct conn *c);
void request_proceed(struct conn *c);

/* hold.c: approval gates */
void hold_step(struct conn *c);
void hold_cancel(struct conn *c);

/* inject.c: credentials from the vault into the upstream request head */
struct hsm_config;
int inject_init(struct proxy *px);
void inject_free(struct proxy *px);
int inject_begin(struct conn *c, struct err *err);
void inject_cancel(struct conn *c);
int inject_header(struct conn *c, struct evbuffer *out, struct err *err);
struct unseal_worker *inject_worker(struct proxy *px);

/* intercept.c: TLS interception (a no-op build without the TLS toolkit) */
int intercept_init(struct proxy *px, const struct policy *p, struct err *err);
void intercept_free(struct proxy *px);
int intercept_available(const struct proxy *px);
void intercept_client(struct conn *c);
void intercept_upstream(struct conn *c, struct bufferevent *up);
void intercept_release(struct conn *c); /* conn_free, before the client bufferevent goes */

/* tunnel.c */
void tunnel_start(struct conn *c);

/* splice.c: zero-copy relay for blind tunnels between plain sockets */
int splice_relay_start(struct conn *c);
void splice_relay_free(struct splice_relay *r);

/* socks.c */
void socks_client_readcb(struct bufferevent *bev, void *arg);
void socks_reply(struct conn *c, unsigned char rep);

/* dial.c: resolve, check, connect. cb gets a connected bufferevent or a decision. */
typedef void (*dial_cb)(struct conn *c, struct bufferevent *up, const char *decision,
    const char *detail);
struct dial *dial_start(struct conn *c, const char *host, uint16_t port, dial_cb cb);
void dial_cancel(struct dial *d);

#endif
