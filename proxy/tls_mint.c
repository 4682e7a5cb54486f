/*
 * Leaf certificates for intercepted hosts (SPEC section 5): one ECDSA P-256 key per
 * daemon run, one certificate per host signed by the local CA, kept in a bounded LRU
 * cache. The CA key is unsealed through a callback only when a leaf must be signed and
 * wiped right after, so it spends microseconds in memory, not the daemon's lifetime.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/net.h"
#include "common/util.h"
#include "proxy/tls.h"
#include "proxy/tls_internal.h"

#define LEAF_BACKDATE_S 3600L /* clients whose clock is a little behind */
#define LEAF_VALID_S (7L * 86400L)
#define LEAF_REUSE_S (6L * 86400L) /* remint before a cached leaf nears expiry */
#define CACHE_BUCKETS 2048         /* power of two; chains stay short at 1024 entries */
#define CN_MAX 64

struct leaf {
    char host[NET_HOST_MAX + 1];
    X509 *cert;
    time_t minted;
    struct leaf *prev, *next; /* LRU list: head is the most recently used */
    struct leaf *chain;       /* hash bucket */
};

struct tls_minter {
    X509 *ca;
    EVP_PKEY *leaf_key;
    tls_ca_key_fn get_key;
    void *arg;
    struct leaf *buckets[CACHE_BUCKETS];
    struct leaf *head, *tail;
    size_t count, max;
};

static size_t
host_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    while (*s != '\0')
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h & (CACHE_BUCKETS - 1);
}

static void
lru_unlink(struct tls_minter *m, struct leaf *l)
{
    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        m->head = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    else
        m->tail = l->prev;
    l->prev = l->next = NULL;
}

static void
lru_push_front(struct tls_minter *m, struct leaf *l)
{
    l->prev = NULL;
    l->next = m->head;
    if (m->head != NULL)
        m->head->prev = l;
    m->head = l;
    if (m->tail == NULL)
        m->tail = l;
}

static void
cache_remove(struct tls_minter *m, struct leaf *l)
{
    struct leaf **pp = &m->buckets[host_hash(l->host)];

    while (*pp != NULL && *pp != l)
        pp = &(*pp)->chain;
    if (*pp == l)
        *pp = l->chain;
    lru_unlink(m, l);
    X509_free(l->cert);
    free(l);
    m->count--;
}

static struct leaf *
cache_find(struct tls_minter *m, const char *host)
{
    struct leaf *l;

    for (l = m->buckets[host_hash(host)]; l != NULL; l = l->chain)
        if (strcmp(l->host, host) == 0)
            return l;
    return NULL;
}

/* Takes a reference to cert; evicts the least recently used entries beyond max. */
static void
cache_insert(struct tls_minter *m, const char *host, X509 *cert, time_t now)
{
    struct leaf *l;
    size_t b;

    if ((l = calloc(1, sizeof(*l))) == NULL)
        return; /* not cached: the next handshake mints again */
    util_strlcpy(l->host, host, sizeof(l->host));
    X509_up_ref(cert);
    l->cert = cert;
    l->minted = now;
    b = host_hash(host);
    l->chain = m->buckets[b];
    m->buckets[b] = l;
    lru_push_front(m, l);
    m->count++;
    while (m->count > m->max && m->tail != NULL)
        cache_remove(m, m->tail);
}

struct tls_minter *
tls_minter_new(const char *ca_pem_path, tls_ca_key_fn get_key, void *arg, struct err *err)
{
    struct tls_minter *m;
    FILE *f;

    if ((m = calloc(1, sizeof(*m))) == NULL) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    m->get_key = get_key;
    m->arg = arg;
    m->max = TLS_LEAF_CACHE_DEFAULT;
    if ((f = fopen(ca_pem_path, "r")) == NULL) {
        err_set(err, ERR_IO, "%s: %s", ca_pem_path, strerror(errno));
        goto fail;
    }
    m->ca = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (m->ca == NULL) {
        tls_ossl_err(err, "not a pem certificate");
        err_prefix(err, "%s", ca_pem_path);
        goto fail;
    }
    if (X509_check_ca(m->ca) != 1) {
        ERR_clear_error(); /* decoding its extensions may have queued the reason */
        err_set(err, ERR_CRYPTO, "%s: not a ca certificate", ca_pem_path);
        goto fail;
    }
    if ((m->leaf_key = tls_key_generate(err)) == NULL)
        goto fail;
    return m;
fail:
    tls_minter_free(m);
    return NULL;
}

void
tls_minter_free(struct tls_minter *m)
{
    if (m == NULL)
        return;
    while (m->head != NULL)
        cache_remove(m, m->head);
    X509_free(m->ca);
    EVP_PKEY_free(m->leaf_key);
    free(m);
}

void
tls_minter_set_cache_size(struct tls_minter *m, size_t max_entries)
{
    m->max = max_entries > 0 ? max_entries : 1;
    while (m->count > m->max && m->tail != NULL)
        cache_remove(m, m->tail);
}

EVP_PKEY *
tls_minter_leaf_key(struct tls_minter *m)
{
    return m->leaf_key;
}

size_t
tls_minter_cache_count(const struct tls_minter *m)
{
    return m->count;
}

/* The unsigned leaf for host: subject, SAN, key usages, identifiers. */
static X509 *
leaf_build(struct tls_minter *m, const char *host, int is_ip, time_t now, struct err *err)
{
    char san[NET_HOST_MAX + 8];
    X509 *x;

    if ((x = X509_new()) == NULL) {
        tls_ossl_err(err, "cannot allocate a certificate");
        return NULL;
    }
    /* Clients match the SAN (RFC 6125); the CN is only a label and is bounded at 64. */
    snprintf(san, sizeof(san), "%s:%s", is_ip ? "IP" : "DNS", host);
    if (!X509_set_pubkey(x, m->leaf_key) ||
        !X509_set_issuer_name(x, X509_get_subject_name(m->ca))) {
        tls_ossl_err(err, "cannot set the leaf key or issuer");
        X509_free(x);
        return NULL;
    }
    if (tls_x509_prepare(x, now, -LEAF_BACKDATE_S, LEAF_VALID_S, err) == -1 ||
        tls_x509_set_cn(x, strlen(host) <= CN_MAX ? host : "airlock leaf", 0, err) == -1 ||
        tls_x509_add_ext(x, m->ca, NID_basic_constraints, "critical,CA:FALSE", err) == -1 ||
        tls_x509_add_ext(x, m->ca, NID_key_usage, "critical,digitalSignature", err) == -1 ||
        tls_x509_add_ext(x, m->ca, NID_ext_key_usage, "serverAuth", err) == -1 ||
        tls_x509_add_ext(x, m->ca, NID_subject_alt_name, san, err) == -1 ||
        tls_x509_add_ext(x, m->ca, NID_subject_key_identifier, "hash", err) == -1 ||
        tls_x509_add_ext(x, m->ca, NID_authority_key_identifier, "keyid:always", err) == -1) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* Signs x with the CA key given as PKCS#8 DER (locked memory, not kept). */
static int
leaf_sign_with(struct tls_minter *m, X509 *x, const struct secbuf *der, struct err *err)
{
    EVP_PKEY *key;
    int ok;

    if ((key = tls_key_from_der(der, err)) == NULL)
        return -1;
    if (X509_check_private_key(m->ca, key) != 1) {
        EVP_PKEY_free(key);
        ERR_clear_error();
        return err_set(err, ERR_CRYPTO, "the sealed ca key does not match ca.pem");
    }
    ok = X509_sign(x, key, EVP_sha256()) > 0;
    EVP_PKEY_free(key); /* clears the private scalar */
    if (!ok)
        return tls_ossl_err(err, "cannot sign the leaf certificate");
    return 0;
}

/* Unseals the CA key through the minter's key source, signs x, wipes the key. */
static int
leaf_sign(struct tls_minter *m, X509 *x, struct err *err)
{
    struct secbuf *der = NULL;
    int rc;

    rc = m->get_key != NULL ? m->get_key(m->arg, &der, err) : -1;
    /* The key source talks to the token, which may queue OpenSSL errors even when it
     * succeeds (SoftHSM probes for an rdrand engine each time its module loads). This runs
     * inside a client's handshake: left queued, they fail it (see util_ossl_clear). */
    util_ossl_clear("tls: ca key source");
    if (rc == -1) {
        secbuf_free(der);
        if (m->get_key == NULL)
            err_set(err, ERR_INTERNAL, "no ca key source");
        return err_prefix(err, "unsealing the ca key");
    }
    rc = leaf_sign_with(m, x, der, err);
    secbuf_free(der);
    return rc;
}

/* The cached leaf for norm while it is fresh (made most recently used), else NULL; a stale
 * one is dropped. */
static struct leaf *
cache_fresh(struct tls_minter *m, const char *norm, time_t now)
{
    struct leaf *l;

    if ((l = cache_find(m, norm)) == NULL)
        return NULL;
    if (now - l->minted < LEAF_REUSE_S && now >= l->minted) {
        lru_unlink(m, l);
        lru_push_front(m, l);
        return l;
    }
    cache_remove(m, l);
    return NULL;
}

/* A cached leaf, else one minted with key_der, or with the key source when key_der is NULL. */
static X509 *
minter_cert(struct tls_minter *m, const char *host, const struct secbuf *key_der, struct err *err)
{
    char norm[NET_HOST_MAX + 1];
    enum net_host_kind kind;
    struct leaf *l;
    time_t now = time(NULL);
    X509 *x;
    int rc;

    if (host == NULL || net_normalize_host(host, strlen(host), norm, sizeof(norm), &kind) == -1) {
        err_set(err, ERR_PARSE, "cannot mint a certificate for a malformed host");
        return NULL;
    }
    if ((l = cache_fresh(m, norm, now)) != NULL) {
        X509_up_ref(l->cert);
        return l->cert;
    }
    if ((x = leaf_build(m, norm, kind != NET_HOST_NAME, now, err)) == NULL)
        return NULL;
    rc = key_der != NULL ? leaf_sign_with(m, x, key_der, err) : leaf_sign(m, x, err);
    if (rc == -1) {
        X509_free(x);
        return NULL;
    }
    util_ossl_clear("tls: minting a leaf"); /* the caller is usually inside a handshake */
    cache_insert(m, norm, x, now);
    return x;
}

X509 *
tls_minter_cert(struct tls_minter *m, const char *host, struct err *err)
{
    return minter_cert(m, host, NULL, err);
}

X509 *
tls_minter_cert_with_key(struct tls_minter *m, const char *host, const struct secbuf *key_der,
                         struct err *err)
{
    if (key_der == NULL) {
        err_set(err, ERR_INTERNAL, "no ca key");
        return NULL;
    }
    return minter_cert(m, host, key_der, err);
}

X509 *
tls_minter_cached(struct tls_minter *m, const char *host)
{
    char norm[NET_HOST_MAX + 1];
    enum net_host_kind kind;
    struct leaf *l;

    if (host == NULL || net_normalize_host(host, strlen(host), norm, sizeof(norm), &kind) == -1 ||
        (l = cache_fresh(m, norm, time(NULL))) == NULL)
        return NULL;
    X509_up_ref(l->cert);
    return l->cert;
}
