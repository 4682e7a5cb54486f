/*
 * The upstream side of interception (we are the client): every connection verifies the
 * chain against upstream_ca and the name (or IP) the client asked for, never a partial
 * wildcard. A small bounded map keeps the last session per host:port for resumption, and
 * fatal alerts are recorded so a failed handshake can be explained in the log.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "common/net.h"
#include "common/util.h"
#include "proxy/tls.h"
#include "proxy/tls_internal.h"

#define KEY_MAX (NET_HOST_MAX + 8) /* "host port" */

struct sess_entry {
    char key[KEY_MAX];
    SSL_SESSION *sess; /* owned reference; NULL: free slot */
    uint64_t used;
};

/* SSL_CTX ex_data: the session map. */
struct sess_map {
    struct sess_entry e[TLS_SESSION_CACHE_MAX];
    uint64_t tick;
};

/* SSL ex_data: which host:port this connection is for, and the alerts seen. */
struct up_state {
    char key[KEY_MAX];
    int alert_read;    /* fatal alert from the server, 0 if none */
    int alert_written; /* fatal alert we sent, 0 if none */
};

static int map_index = -1, state_index = -1;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void
map_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct sess_map *map = ptr;
    size_t i;

    if (map == NULL)
        return;
    for (i = 0; i < TLS_SESSION_CACHE_MAX; i++)
        SSL_SESSION_free(map->e[i].sess);
    free(map);
}

static void
state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

static void
index_init(void)
{
    map_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, map_free);
    state_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, state_free);
}

static int
make_key(char *out, const char *host, uint16_t port)
{
    return snprintf(out, KEY_MAX, "%s %u", host, port) < KEY_MAX ? 0 : -1;
}

/*
 * Stores a copy of sess (the caller keeps its reference): replaces the entry for key, or
 * fills the least recently used slot. A copy, because OpenSSL marks a connection's own
 * session not resumable when that SSL is freed without a close_notify, which is how
 * proxied connections usually end.
 */
static void
map_store(struct sess_map *map, const char *key, SSL_SESSION *orig)
{
    struct sess_entry *slot = NULL;
    SSL_SESSION *sess;
    size_t i;

    if ((sess = SSL_SESSION_dup(orig)) == NULL) {
        ERR_clear_error();
        return;
    }

    for (i = 0; i < TLS_SESSION_CACHE_MAX && slot == NULL; i++)
        if (map->e[i].sess != NULL && strcmp(map->e[i].key, key) == 0)
            slot = &map->e[i];
    for (i = 0; i < TLS_SESSION_CACHE_MAX && slot == NULL; i++)
        if (map->e[i].sess == NULL)
            slot = &map->e[i];
    if (slot == NULL) { /* full: evict the least recently used */
        slot = &map->e[0];
        for (i = 1; i < TLS_SESSION_CACHE_MAX; i++)
            if (map->e[i].used < slot->used)
                slot = &map->e[i];
    }
    SSL_SESSION_free(slot->sess);
    util_strlcpy(slot->key, key, sizeof(slot->key));
    slot->sess = sess;
    slot->used = ++map->tick;
}

/* The live session for key (borrowed), dropping an expired one. */
static SSL_SESSION *
map_get(struct sess_map *map, const char *key)
{
    struct sess_entry *e;
    size_t i;

    for (i = 0; i < TLS_SESSION_CACHE_MAX; i++) {
        e = &map->e[i];
        if (e->sess == NULL || strcmp(e->key, key) != 0)
            continue;
        if (SSL_SESSION_get_time(e->sess) + SSL_SESSION_get_timeout(e->sess) <= time(NULL) ||
            !SSL_SESSION_is_resumable(e->sess)) {
            SSL_SESSION_free(e->sess);
            e->sess = NULL;
            return NULL;
        }
        e->used = ++map->tick;
        return e->sess;
    }
    return NULL;
}

/* TLS 1.3 tickets arrive after the handshake; this catches them (and TLS 1.2 sessions). */
static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct sess_map *map = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), map_index);
    struct up_state *st = SSL_get_ex_data(ssl, state_index);

    if (map == NULL || st == NULL || SSL_get_verify_result(ssl) != X509_V_OK ||
        !SSL_SESSION_is_resumable(sess))
        return 0;
    map_store(map, st->key, sess);
    return 0; /* OpenSSL drops its reference; the map holds a copy */
}

static void
info_cb(const SSL *ssl, int where, int ret)
{
    struct up_state *st;

    if (!(where & SSL_CB_ALERT) || (ret >> 8) != SSL3_AL_FATAL ||
        (st = SSL_get_ex_data(ssl, state_index)) == NULL)
        return;
    if (where & SSL_CB_READ)
        st->alert_read = ret & 0xff;
    else
        st->alert_written = ret & 0xff;
}

SSL_CTX *
tls_upstream_ctx_new(const char *ca_file, struct err *err)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    struct sess_map *map;
    SSL_CTX *ctx;

    pthread_once(&index_once, index_init);
    if (map_index < 0 || state_index < 0 || (ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
        tls_ossl_err(err, "cannot create the upstream tls context");
        return NULL;
    }
    if ((map = calloc(1, sizeof(*map))) == NULL || !SSL_CTX_set_ex_data(ctx, map_index, map)) {
        free(map);
        SSL_CTX_free(ctx);
        err_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    SSL_CTX_set_info_callback(ctx, info_cb);
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) ||
        SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) {
        tls_ossl_err(err, "cannot configure the upstream tls context");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
                        : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        tls_ossl_err(err, "cannot load the upstream trust store");
        err_prefix(err, "%s", ca_file != NULL ? ca_file : "system");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* SNI and the name (or address) the chain must be issued for. */
static int
set_identity(SSL *ssl, const char *host, int is_ip)
{
    if (is_ip) /* RFC 6066 3: literal addresses are not sent as SNI */
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 ? 0 : -1;
    if (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1)
        return -1;
    /* No "api*.example.com" wildcards, and no falling back to the subject CN when the
     * certificate has no DNS SAN (RFC 6125 6.4.4; browsers dropped it long ago). */
    SSL_set_hostflags(ssl,
                      X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    return 0;
}

SSL *
tls_upstream_ssl_new(SSL_CTX *ctx, const char *host, uint16_t port)
{
    char norm[NET_HOST_MAX + 1];
    struct sess_map *map;
    struct up_state *st;
    enum net_host_kind kind;
    SSL_SESSION *sess;
    SSL *ssl;

    if (ctx == NULL || host == NULL || state_index < 0 ||
        net_normalize_host(host, strlen(host), norm, sizeof(norm), &kind) == -1)
        return NULL;
    if ((st = calloc(1, sizeof(*st))) == NULL)
        return NULL;
    if (make_key(st->key, norm, port) == -1 || (ssl = SSL_new(ctx)) == NULL) {
        free(st);
        ERR_clear_error();
        return NULL;
    }
    if (!SSL_set_ex_data(ssl, state_index, st)) {
        free(st);
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    if (set_identity(ssl, norm, kind != NET_HOST_NAME) == -1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    map = SSL_CTX_get_ex_data(ctx, map_index);
    if (map != NULL && (sess = map_get(map, st->key)) != NULL)
        SSL_set_session(ssl, sess); /* takes its own reference */
    SSL_set_connect_state(ssl);
    return ssl;
}

void
tls_upstream_session_save(SSL_CTX *ctx, SSL *ssl, const char *host, uint16_t port)
{
    char norm[NET_HOST_MAX + 1], key[KEY_MAX];
    struct sess_map *map;
    enum net_host_kind kind;
    SSL_SESSION *sess;

    if (ctx == NULL || ssl == NULL || host == NULL || map_index < 0 ||
        (map = SSL_CTX_get_ex_data(ctx, map_index)) == NULL ||
        SSL_get_verify_result(ssl) != X509_V_OK ||
        net_normalize_host(host, strlen(host), norm, sizeof(norm), &kind) == -1 ||
        make_key(key, norm, port) == -1 || (sess = SSL_get1_session(ssl)) == NULL)
        return;
    /* Under TLS 1.3 the handshake's own session is not resumable until a ticket arrives;
     * new_session_cb stores it then. */
    if (SSL_SESSION_is_resumable(sess))
        map_store(map, key, sess);
    SSL_SESSION_free(sess);
}

const char *
tls_error_reason(unsigned long e)
{
    if (e == 0)
        return NULL;
    if (ERR_SYSTEM_ERROR(e))
        return strerror(ERR_GET_REASON(e));
    return ERR_reason_error_string(e);
}

const char *
tls_upstream_error(SSL *ssl, unsigned long ossl_err, char *buf, size_t buflen)
{
    struct up_state *st = NULL;
    const char *reason;
    unsigned long e;
    long v;

    if (buf == NULL || buflen == 0)
        return buf;
    if (ssl == NULL) {
        snprintf(buf, buflen, "no tls connection");
        ERR_clear_error();
        return buf;
    }
    if (state_index >= 0)
        st = SSL_get_ex_data(ssl, state_index);
    e = ossl_err != 0 ? ossl_err : ERR_peek_last_error();
    reason = tls_error_reason(e);
    if ((v = SSL_get_verify_result(ssl)) != X509_V_OK)
        snprintf(buf, buflen, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    else if (st != NULL && st->alert_read != 0)
        snprintf(buf, buflen, "the server sent alert: %s",
                 SSL_alert_desc_string_long(st->alert_read));
    else if (reason != NULL)
        snprintf(buf, buflen, "tls handshake failed: %s", reason);
    else if (st != NULL && st->alert_written != 0)
        snprintf(buf, buflen, "tls handshake failed: sent alert %s",
                 SSL_alert_desc_string_long(st->alert_written));
    else
        snprintf(buf, buflen, "tls handshake failed: the connection closed");
    ERR_clear_error();
    return buf;
}
