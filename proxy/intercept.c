/*
 * TLS interception for CONNECT and SOCKS5 streams that need per-request decisions: the
 * client handshake is answered with a leaf certificate for the CONNECT host (SNI must
 * match, else host-mismatch), and every upstream is a verified TLS connection to the
 * checked address (SNI = host, chain and name checked against upstream_ca).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy_internal.h"
#include "proxy/tls.h"
#include "proxy/unseal_worker.h"
#include "vault/vault.h"

/* Queued plaintext up to this size is written as one TLS record (RFC 8446 5.1 maximum). */
#define COALESCE_MAX 16384
/* Socket reads and writes under the TLS filters: as for tunnels, a few large ones per
 * event instead of libevent's 16 KiB each; every read sends window updates (ACKs). */
#define TLS_IO_CHUNK (256 * 1024)
/* libevent keeps at most 3 errors per filter; a few more pops cost nothing. */
#define FILTER_ERRORS_MAX 8

struct ca_flight;

struct proxy_tls {
    struct proxy *px;
    struct tls_minter *minter;
    SSL_CTX *client_ctx;
    SSL_CTX *upstream_ctx;
    LIST_HEAD(, ca_flight) flights; /* unanswered CA key unseals, at most one per policy */
};

/*
 * Per intercepted client connection (c->icpt), from the first TLS byte until conn_free
 * calls intercept_release: the parked leaf mint, then the write coalescing.
 */
struct intercept_conn {
    struct conn *c;
    struct ca_flight *flight;          /* parked on it until the CA key comes */
    TAILQ_ENTRY(intercept_conn) link;  /* in flight->waiting */
    struct event *gone;                /* the client hanging up while parked */
    X509 *leaf;                        /* minted for the handshake about to start */
    int no_leaf;                       /* the CA key could not be had: vault-unavailable */
    struct bufferevent *filter;        /* c->client once the handshake started */
    struct evbuffer_cb_entry *cork_cb; /* on the filter's output */
    struct event *flush;               /* writes what was corked, later in this loop turn */
    int corked;
};

/* One unseal of the CA key ("_ca") that every connection missing a leaf meanwhile waits on. */
struct ca_flight {
    struct proxy_tls *t;
    struct policy *pol; /* whose vault settings; the job holds a reference */
    struct unseal_job *job;
    int answered;
    TAILQ_HEAD(, intercept_conn) waiting;
    LIST_ENTRY(ca_flight) entry; /* in t->flights while unanswered */
};

int
intercept_init(struct proxy *px, const struct policy *p, struct err *err)
{
    struct proxy_tls *t;
    char ca[4096];

    if (!p->tls.intercept)
        return 0;
    snprintf(ca, sizeof(ca), "%s/ca.pem", p->state_dir);
    if (access(ca, R_OK) != 0) {
        log_warn("tls: %s missing (run airlock init): streams that need interception are denied",
                 ca);
        return 0;
    }
    if ((t = calloc(1, sizeof(*t))) == NULL)
        return err_set(err, ERR_INTERNAL, "out of memory");
    px->tls = t;
    t->px = px;
    /* No key source: every leaf is minted before its handshake, with the CA key the token
     * worker unsealed (mint_park), so no handshake waits for the token on the loop. */
    if ((t->minter = tls_minter_new(ca, NULL, NULL, err)) == NULL ||
        (t->client_ctx = tls_client_ctx_new(t->minter, err)) == NULL ||
        (t->upstream_ctx = tls_upstream_ctx_new(p->tls.upstream_ca, err)) == NULL)
        return -1;
    /* Whatever loading openssl.cnf, the providers and the trust store left queued before the
     * first connection (see util_ossl_clear). */
    util_ossl_clear("tls: start-up");
    log_info("tls: intercepting with the CA at %s", ca);
    return 0;
}

/* Frees an unanswered flight (ca_unsealed frees an answered one itself). */
static void
flight_free(struct ca_flight *fl)
{
    struct intercept_conn *ic;

    LIST_REMOVE(fl, entry);
    while ((ic = TAILQ_FIRST(&fl->waiting)) != NULL) {
        TAILQ_REMOVE(&fl->waiting, ic, link);
        ic->flight = NULL;
    }
    unseal_job_cancel(fl->job); /* its result is wiped when it comes */
    free(fl);
}

void
intercept_free(struct proxy *px)
{
    struct proxy_tls *t = px->tls;

    if (t == NULL)
        return;
    while (!LIST_EMPTY(&t->flights)) /* none: conn_free let go of them; never leak a job */
        flight_free(LIST_FIRST(&t->flights));
    SSL_CTX_free(t->client_ctx);
    SSL_CTX_free(t->upstream_ctx);
    tls_minter_free(t->minter);
    free(t);
    px->tls = NULL;
}

int
intercept_available(const struct proxy *px)
{
    return px->tls != NULL;
}

/*
 * bufferevent_openssl turns every evbuffer_add on a TLS filter's output into its own
 * SSL_write, so a response head written line by line went out as one TLS record per line
 * (five records for a small response), each encrypted, framed and decrypted on its own.
 * So the filter is corked (EV_WRITE off) when something is queued on its empty output;
 * this callback is added after the filter's own, so it runs first and the filter sees
 * the cork. The connection's flush event, run later in the same loop turn, pulls all
 * that was queued meanwhile into one chain and uncorks: a small response is one record.
 * Both are the connection's, removed by intercept_release before the filter is freed.
 * A blind tunnel (websocket) relays a stream, not responses: it is not corked.
 */
static void
cork_cb(struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
    struct intercept_conn *ic = arg;

    if (info->n_added == 0 || info->orig_size != 0 || ic->corked || ic->c->state == CS_TUNNEL ||
        !(bufferevent_get_enabled(ic->filter) & EV_WRITE))
        return;
    ic->corked = 1;
    bufferevent_disable(ic->filter, EV_WRITE);
    event_active(ic->flush, EV_TIMEOUT, 1);
}

static void
flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct intercept_conn *ic = arg;
    struct evbuffer *out = bufferevent_get_output(ic->filter);
    size_t len = evbuffer_get_length(out);

    ic->corked = 0;
    if (bufferevent_get_enabled(ic->filter) & EV_WRITE)
        return; /* uncorked meanwhile (conn_close_when_flushed enables writing) */
    if (len > 0 && len <= COALESCE_MAX)
        (void)evbuffer_pullup(out, (ev_ssize_t)len);
    /* Writes now; a failure may free the connection, and ic with it. */
    bufferevent_enable(ic->filter, EV_WRITE);
}

/*
 * The OpenSSL error a TLS filter failed with, 0 if none. On failure libevent moves the
 * thread's queue into the bufferevent (at most 3 entries, after SSL_get_error's code, which
 * is a small integer and not an error) and hands them back newest first; all are popped so
 * none is left for a later failure to report.
 */
static unsigned long
filter_error(struct bufferevent *bev)
{
    unsigned long e, found = 0;
    int i;

    for (i = 0; i < FILTER_ERRORS_MAX && (e = bufferevent_get_openssl_error(bev)) != 0; i++)
        if (found == 0 && ERR_GET_LIB(e) != 0)
            found = e;
    return found;
}

static void
client_handshake_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    struct bufferevent *under;
    const char *decision, *reason;

    if (what & BEV_EVENT_CONNECTED) {
        conn_clear_timer(c);
        connect_established(c, POLICY_CONN_INSPECT);
        c->first_request = 0;
        return;
    }
    /* The alert the handshake failed with (unrecognized_name, internal_error) is still in
     * the socket bufferevent below, which is freed next: send it now, best effort (a few
     * bytes, non-blocking), so the client learns why instead of seeing a bare close. */
    if ((under = bufferevent_get_underlying(bev)) != NULL &&
        evbuffer_get_length(bufferevent_get_output(under)) > 0) {
        /* The socket bufferevent keeps its output's start frozen outside its own write
         * callback, as libevent's bufferevent_sock does. */
        struct evbuffer *out = bufferevent_get_output(under);

        evbuffer_unfreeze(out, 1);
        (void)evbuffer_write(out, bufferevent_getfd(under));
        evbuffer_freeze(out, 1);
    }
    decision = tls_client_sni_mismatch(ssl)          ? "host-mismatch"
               : c->icpt != NULL && c->icpt->no_leaf ? "vault-unavailable"
                                                     : "bad-request";
    reason = tls_error_reason(filter_error(bev));
    log_info("%s: tls handshake for %s failed: %s (%s)", c->peer, c->host, decision,
             reason != NULL ? reason : "the connection closed");
    conn_refuse_stream(c, decision);
}

/* Terminates TLS on the client stream with ic->leaf (NULL: the handshake fails with an
 * internal_error alert once the SNI is checked). */
static void
client_start(struct conn *c)
{
    struct intercept_conn *ic = c->icpt;
    struct event_base *base = c->px->deps.base;
    struct bufferevent *f;
    int one = 1;
    SSL *ssl;

    c->state = CS_HEAD;
    if ((ssl = tls_client_ssl_new(c->px->tls->client_ctx, c->host)) == NULL ||
        tls_client_ssl_set_leaf(ssl, ic->leaf) == -1) {
        SSL_free(ssl);
        conn_free(c);
        return;
    }
    X509_free(ic->leaf); /* the SSL holds its own reference */
    ic->leaf = NULL;
    f = bufferevent_openssl_filter_new(base, c->client, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                       BEV_OPT_CLOSE_ON_FREE);
    if (f == NULL) {
        SSL_free(ssl);
        conn_free(c);
        return;
    }
    bufferevent_set_max_single_read(c->client, TLS_IO_CHUNK);
    bufferevent_set_max_single_write(c->client, TLS_IO_CHUNK);
    bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
    c->client = f;
    c->tls = 1;
    ic->filter = f;
    /* TLS records are whole messages: never hold one back waiting for an ACK. */
    (void)setsockopt(bufferevent_getfd(f), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if ((ic->flush = event_new(base, -1, 0, flush_cb, ic)) == NULL ||
        (ic->cork_cb = evbuffer_add_cb(bufferevent_get_output(f), cork_cb, ic)) == NULL) {
        conn_free(c);
        return;
    }
    conn_set_timer(c, c->pol->header_timeout_ms);
    bufferevent_setcb(f, NULL, NULL, client_handshake_cb, c);
    /* From here libevent reads SSL_get_error, which trusts the queue to be ours alone. */
    util_ossl_clear("tls: before a client handshake");
    /* The ClientHello is already buffered: enabling may finish (or fail and free c) the
     * handshake right here, so nothing touches c after this call. */
    bufferevent_enable(f, EV_READ | EV_WRITE);
}

/* Leaves the flight; the last waiter to go cancels an unanswered unseal. */
static void
flight_leave(struct intercept_conn *ic)
{
    struct ca_flight *fl = ic->flight;

    TAILQ_REMOVE(&fl->waiting, ic, link);
    ic->flight = NULL;
    if (!fl->answered && TAILQ_EMPTY(&fl->waiting))
        flight_free(fl);
}

/*
 * The CA key from the worker (job NULL: it could not be had). All the leaves are minted
 * first, the key is wiped, and only then do the handshakes start: starting one may free
 * connections (its own, or with a drain every one) and their waiting entries.
 */
static void
ca_unsealed(void *arg, struct unseal_job *job, const struct err *err)
{
    struct ca_flight *fl = arg;
    struct intercept_conn *ic;
    struct err merr;

    LIST_REMOVE(fl, entry); /* answered: later misses start a flight of their own */
    fl->answered = 1;
    for (ic = TAILQ_FIRST(&fl->waiting); ic != NULL; ic = TAILQ_NEXT(ic, link)) {
        err_clear(&merr);
        if (job == NULL)
            err_set(&merr, err != NULL ? err->code : ERR_TOKEN, "unsealing the ca key: %s",
                    err != NULL ? err->msg : "no answer");
        else
            ic->leaf =
                tls_minter_cert_with_key(fl->t->minter, ic->c->host, unseal_job_secret(job), &merr);
        if (ic->leaf == NULL) {
            ic->no_leaf = 1;
            log_warn("%s: tls: %s: no leaf certificate: %s", ic->c->peer, ic->c->host, merr.msg);
        }
    }
    unseal_job_release(job); /* wipes the key; NULL is a no-op */
    fl->job = NULL;
    while ((ic = TAILQ_FIRST(&fl->waiting)) != NULL) {
        TAILQ_REMOVE(&fl->waiting, ic, link);
        ic->flight = NULL;
        if (ic->gone != NULL) {
            event_free(ic->gone);
            ic->gone = NULL;
        }
        client_start(ic->c); /* may free that connection; the rest unlink themselves */
    }
    free(fl);
}

/* The client hung up while its leaf was waiting for the CA key: drop it now. */
static void
gone_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    char b;
    ssize_t n;

    if (!(what & EV_CLOSED)) {
        n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))) {
            /* More bytes, not a hang-up: the handshake reads them once it starts. */
            event_del(c->icpt->gone);
            return;
        }
    }
    log_info("%s: client left while the leaf for %s was waiting for the ca key", c->peer, c->host);
    conn_refuse_stream(c, "bad-request");
}

/*
 * No leaf cached for the host: park the stream (no client reads, no handshake) while the
 * token worker unseals the CA key, shared with every other miss meanwhile; ca_unsealed
 * mints and starts the handshake. The worker's deadline bounds the wait.
 */
static void
mint_park(struct conn *c)
{
    struct proxy_tls *t = c->px->tls;
    struct intercept_conn *ic = c->icpt;
    struct ca_flight *fl;
    struct unseal_worker *w = inject_worker(c->px);
    struct err err;

    LIST_FOREACH(fl, &t->flights, entry)
        if (fl->pol == c->pol)
            break;
    if (fl == NULL) {
        err_clear(&err);
        if ((fl = calloc(1, sizeof(*fl))) == NULL) {
            conn_free(c);
            return;
        }
        fl->t = t;
        fl->pol = c->pol;
        TAILQ_INIT(&fl->waiting);
        if (w == NULL)
            err_set(&err, ERR_INTERNAL, "no token worker");
        else
            fl->job = unseal_submit(w, c->pol, "_ca", ca_unsealed, fl, &err);
        if (fl->job == NULL) {
            /* The token is known stuck, or the queue is full: fail closed at once. */
            free(fl);
            log_warn("%s: tls: %s: no leaf certificate: unsealing the ca key: %s", c->peer, c->host,
                     err.msg);
            ic->no_leaf = 1;
            client_start(c);
            return;
        }
        LIST_INSERT_HEAD(&t->flights, fl, entry);
    }
    TAILQ_INSERT_TAIL(&fl->waiting, ic, link);
    ic->flight = fl;
    c->state = CS_MINT;
    bufferevent_disable(c->client, EV_READ);
    conn_clear_timer(c);
    if (event_base_get_features(c->px->deps.base) & EV_FEATURE_EARLY_CLOSE) {
        ic->gone = event_new(c->px->deps.base, bufferevent_getfd(c->client), EV_READ | EV_CLOSED,
                             gone_cb, c);
        if (ic->gone != NULL)
            event_add(ic->gone, NULL);
    }
    log_debug("%s: tls: %s: leaf waits for the ca key", c->peer, c->host);
}

/* The first byte on an inspected stream was a TLS record: terminate TLS here, with the
 * host's cached leaf at once, else once one is minted. */
void
intercept_client(struct conn *c)
{
    struct intercept_conn *ic;

    if ((ic = calloc(1, sizeof(*ic))) == NULL) {
        conn_free(c);
        return;
    }
    ic->c = c;
    c->icpt = ic;
    if ((ic->leaf = tls_minter_cached(c->px->tls->minter, c->host)) == NULL) {
        mint_park(c);
        return;
    }
    client_start(c);
}

/* conn_free, before the client bufferevent goes: nothing of ours may run after it. */
void
intercept_release(struct conn *c)
{
    struct intercept_conn *ic = c->icpt;

    if (ic == NULL)
        return;
    c->icpt = NULL;
    if (ic->flight != NULL)
        flight_leave(ic);
    if (ic->gone != NULL)
        event_free(ic->gone);
    if (ic->flush != NULL)
        event_free(ic->flush);
    if (ic->cork_cb != NULL)
        evbuffer_remove_cb_entry(bufferevent_get_output(ic->filter), ic->cork_cb);
    X509_free(ic->leaf);
    free(ic);
}

static void
upstream_handshake_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    char reason[256];

    if (what & BEV_EVENT_CONNECTED) {
        tls_upstream_session_save(c->px->tls->upstream_ctx, ssl, c->ex->host, c->ex->port);
        conn_note_upstream(c);
        util_ossl_clear("tls: upstream session");
        forward_start(c);
        return;
    }
    tls_upstream_error(ssl, filter_error(bev), reason, sizeof(reason));
    log_warn("%s: %s upstream tls %s:%u: %s", c->peer, c->ex->id, c->ex->host, c->ex->port, reason);
    c->up = NULL;
    bufferevent_free(bev);
    c->state = CS_HEAD;
    conn_respond(c, 502, "upstream-tls", "the upstream certificate did not verify");
}

/* Wraps a freshly dialed upstream in verified TLS; forward_start() runs after the handshake. */
void
intercept_upstream(struct conn *c, struct bufferevent *up)
{
    struct proxy_tls *t = c->px->tls;
    struct bufferevent *f;
    SSL *ssl;

    if ((ssl = tls_upstream_ssl_new(t->upstream_ctx, c->ex->host, c->ex->port)) == NULL ||
        (f = bufferevent_openssl_filter_new(c->px->deps.base, up, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        if (ssl != NULL)
            SSL_free(ssl);
        bufferevent_free(up);
        c->state = CS_HEAD;
        conn_respond(c, 502, "upstream-tls", "cannot start TLS to the upstream");
        return;
    }
    bufferevent_set_max_single_read(up, TLS_IO_CHUNK);
    bufferevent_set_max_single_write(up, TLS_IO_CHUNK);
    bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
    c->up = f; /* owned by the connection from here, so conn_free() releases it */
    bufferevent_setcb(f, NULL, NULL, upstream_handshake_cb, c);
    util_ossl_clear("tls: before an upstream handshake");
    bufferevent_enable(f, EV_READ | EV_WRITE);
}
