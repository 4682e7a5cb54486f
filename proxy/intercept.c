/*
 * TLS interception for CONNECT and SOCKS5 streams that need per-request decisions: the
 * client handshake is answered with a leaf certificate for the CONNECT host (SNI must
 * match, else host-mismatch), and every upstream is a verified TLS connection to the
 * checked address (SNI = host, chain and name checked against upstream_ca).
 */
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
#include "vault/vault.h"

/* Queued plaintext up to this size is written as one TLS record (RFC 8446 5.1 maximum). */
#define COALESCE_MAX 16384
/* Socket reads and writes under the TLS filters: as for tunnels, a few large ones per
 * event instead of libevent's 16 KiB each; every read sends window updates (ACKs). */
#define TLS_IO_CHUNK (256 * 1024)
/* libevent keeps at most 3 errors per filter; a few more pops cost nothing. */
#define FILTER_ERRORS_MAX 8

struct proxy_tls {
    struct tls_minter *minter;
    SSL_CTX *client_ctx;
    SSL_CTX *upstream_ctx;
};

static int
ca_key_cb(void *arg, struct secbuf **key_der, struct err *err)
{
    struct proxy *px = arg;

    return inject_unseal_named(px, px->pol, "_ca", key_der, err);
}

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
    if ((t->minter = tls_minter_new(ca, ca_key_cb, px, err)) == NULL ||
        (t->client_ctx = tls_client_ctx_new(t->minter, err)) == NULL ||
        (t->upstream_ctx = tls_upstream_ctx_new(p->tls.upstream_ca, err)) == NULL)
        return -1;
    /* Whatever loading openssl.cnf, the providers and the trust store left queued before the
     * first connection (see util_ossl_clear). */
    util_ossl_clear("tls: start-up");
    log_info("tls: intercepting with the CA at %s", ca);
    return 0;
}

void
intercept_free(struct proxy *px)
{
    struct proxy_tls *t = px->tls;

    if (t == NULL)
        return;
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
 * With the output callbacks deferred to the event loop, this callback (added last, so it
 * runs before the filter's own) sees everything queued in one pass and pulls it into one
 * chain: the filter then writes a small response as a single record.
 */
static void
coalesce_cb(struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
    size_t len = evbuffer_get_length(out);

    if (info->n_added > 0 && len > 0 && len <= COALESCE_MAX)
        (void)evbuffer_pullup(out, (ev_ssize_t)len);
}

static int
coalesce_writes(struct event_base *base, struct bufferevent *f)
{
    struct evbuffer *out = bufferevent_get_output(f);

    if (evbuffer_add_cb(out, coalesce_cb, NULL) == NULL || evbuffer_defer_callbacks(out, base) != 0)
        return -1;
    return 0;
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
    const char *decision, *reason;

    if (what & BEV_EVENT_CONNECTED) {
        conn_clear_timer(c);
        connect_established(c, POLICY_CONN_INSPECT);
        c->first_request = 0;
        return;
    }
    decision = tls_client_sni_mismatch(ssl) ? "host-mismatch" : "bad-request";
    reason = tls_error_reason(filter_error(bev));
    log_info("%s: tls handshake for %s failed: %s (%s)", c->peer, c->host, decision,
             reason != NULL ? reason : "the connection closed");
    conn_refuse_stream(c, decision);
}

/* The first byte on an inspected stream was a TLS record: terminate TLS here. */
void
intercept_client(struct conn *c)
{
    struct proxy_tls *t = c->px->tls;
    struct bufferevent *f;
    int one = 1;
    SSL *ssl;

    if ((ssl = tls_client_ssl_new(t->client_ctx, c->host)) == NULL) {
        conn_free(c);
        return;
    }
    f = bufferevent_openssl_filter_new(c->px->deps.base, c->client, ssl, BUFFEREVENT_SSL_ACCEPTING,
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
    /* TLS records are whole messages: never hold one back waiting for an ACK. */
    (void)setsockopt(bufferevent_getfd(f), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (coalesce_writes(c->px->deps.base, f) == -1) {
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
