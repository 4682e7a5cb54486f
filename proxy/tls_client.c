/*
 * The client-facing side of interception (we are the server): the SNI the client sends
 * must name the host it asked to CONNECT to, else the handshake is aborted and the proxy
 * audits host-mismatch (SPEC section 5). The leaf for that host is installed per SSL from
 * the minter; ALPN offers http/1.1 only, because the proxy parses HTTP/1.1.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "common/log.h"
#include "common/net.h"
#include "common/util.h"
#include "proxy/tls.h"
#include "proxy/tls_internal.h"

/* What one accepting SSL expects, kept as SSL ex_data and freed with the SSL. */
struct sni_state {
    char host[NET_HOST_MAX + 1];
    int is_ip;
    int mismatch;
    int pinned; /* tls_client_ssl_set_leaf was called: use leaf (NULL: fail) */
    X509 *leaf;
};

static int sni_index = -1;
static pthread_once_t sni_once = PTHREAD_ONCE_INIT;

static void
sni_state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct sni_state *st = ptr;

    if (st != NULL)
        X509_free(st->leaf);
    free(st);
}

static void
sni_index_init(void)
{
    sni_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, sni_state_free);
}

/* Picks http/1.1 from the client's ALPN list; without it the handshake goes on without
 * ALPN (a client offering only h2 falls back to HTTP/1.1 by RFC 7301 section 3.2). */
static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
            unsigned int inlen, void *arg)
{
    unsigned int i = 0, n;

    while (i < inlen) {
        n = in[i];
        if (n == 0 || n > inlen - i - 1)
            break; /* malformed list: OpenSSL validates it first, but stay bounded */
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += n + 1;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* 1 when the SNI the client sent (or did not send) fits the expected host. */
static int
sni_matches(const struct sni_state *st, const char *sni)
{
    char norm[NET_HOST_MAX + 1];
    enum net_host_kind kind;

    if (sni == NULL)
        return st->is_ip; /* RFC 6066 3: no IP literals in SNI, so none is expected */
    if (net_normalize_host(sni, strlen(sni), norm, sizeof(norm), &kind) == -1)
        return 0;
    return strcmp(norm, st->host) == 0;
}

static int
servername_cb(SSL *ssl, int *al, void *arg)
{
    struct tls_minter *m = arg;
    struct sni_state *st = SSL_get_ex_data(ssl, sni_index);
    struct err err;
    X509 *x;
    int ok;

    if (st == NULL) {
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    if (!sni_matches(st, SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name))) {
        st->mismatch = 1;
        *al = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    err_clear(&err);
    if (st->pinned) {
        if ((x = st->leaf) != NULL)
            X509_up_ref(x);
        else
            err_set(&err, ERR_TOKEN, "the ca key could not be unsealed");
    } else {
        x = tls_minter_cert(m, st->host, &err);
    }
    if (x == NULL) {
        log_warn("tls: %s: no leaf certificate: %s", st->host, err.msg);
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    ok = SSL_use_certificate(ssl, x) == 1 && SSL_use_PrivateKey(ssl, tls_minter_leaf_key(m)) == 1;
    X509_free(x);
    if (!ok) {
        util_ossl_clear("tls: installing the leaf");
        log_warn("tls: %s: cannot install the leaf certificate", st->host);
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    /* Minting may have unsealed the CA key. Anything left queued would turn this
     * handshake's next WANT_READ into SSL_ERROR_SSL; OpenSSL happens to clear the queue
     * when it builds the certificate chain, but not under SSL_MODE_NO_AUTO_CHAIN. */
    util_ossl_clear("tls: leaf certificate");
    return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *
tls_client_ctx_new(struct tls_minter *m, struct err *err)
{
    SSL_CTX *ctx;

    pthread_once(&sni_once, sni_index_init);
    if (sni_index < 0 || (ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
        tls_ossl_err(err, "cannot create the client-facing tls context");
        return NULL;
    }
    /* Every handshake is a full one: a resumed session would skip the SNI check's leaf
     * selection and carry state across hosts, and leaves are cached anyway. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) || !SSL_CTX_set_num_tickets(ctx, 0) ||
        !SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL") ||
        !SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES)) {
        tls_ossl_err(err, "cannot configure the client-facing tls context");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, m);
    return ctx;
}

SSL *
tls_client_ssl_new(SSL_CTX *ctx, const char *expected_host)
{
    struct sni_state *st;
    enum net_host_kind kind;
    SSL *ssl;

    if (ctx == NULL || expected_host == NULL || sni_index < 0 ||
        (st = calloc(1, sizeof(*st))) == NULL)
        return NULL;
    if (net_normalize_host(expected_host, strlen(expected_host), st->host, sizeof(st->host),
                           &kind) == -1) {
        free(st);
        return NULL;
    }
    st->is_ip = kind != NET_HOST_NAME;
    if ((ssl = SSL_new(ctx)) == NULL) {
        free(st);
        ERR_clear_error();
        return NULL;
    }
    if (!SSL_set_ex_data(ssl, sni_index, st)) {
        free(st);
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

int
tls_client_ssl_set_leaf(SSL *ssl, X509 *leaf)
{
    struct sni_state *st;

    if (ssl == NULL || sni_index < 0 || (st = SSL_get_ex_data(ssl, sni_index)) == NULL)
        return -1;
    if (leaf != NULL)
        X509_up_ref(leaf);
    X509_free(st->leaf);
    st->leaf = leaf;
    st->pinned = 1;
    return 0;
}

int
tls_client_sni_mismatch(SSL *ssl)
{
    struct sni_state *st;

    if (ssl == NULL || sni_index < 0 || (st = SSL_get_ex_data(ssl, sni_index)) == NULL)
        return 0;
    return st->mismatch;
}
