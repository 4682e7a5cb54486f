/*
 * Unit tests for the TLS toolkit (proxy/tls.h): the CA's shape, fingerprints, idempotent
 * init, the leaf minter and its LRU cache, and in-memory handshakes (BIO pairs, bounded
 * loops) between the client-facing context, the upstream context and test origins.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#define _XOPEN_SOURCE_EXTENDED 1
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/util.h"
#include "proxy/tls.h"

struct fixture {
    char dir[64];
    char ca_path[128];
    char *ca_pem;
    struct secbuf *ca_key;
    int key_calls;
    int key_fail;
    int key_stale; /* the key source leaves errors queued, as SoftHSM's engine probe does */
    struct secbuf *wrong_key; /* when set, handed out instead of ca_key */
};

static struct fixture fx;

static struct secbuf *
copy_secbuf(const struct secbuf *src)
{
    struct secbuf *sb = secbuf_new(src->len);

    assert_non_null(sb);
    assert_int_equal(secbuf_append(sb, src->data, src->len), 0);
    return sb;
}

/* Queues errors the way a failed, ignored OpenSSL call does: a PEM read of no PEM. */
static void
stale_error(void)
{
    BIO *b = BIO_new_mem_buf("not pem", -1);

    assert_non_null(b);
    assert_null(PEM_read_bio_X509(b, NULL, NULL, NULL));
    BIO_free(b);
    assert_int_not_equal(ERR_peek_error(), 0);
}

static int
get_key(void *arg, struct secbuf **key_der, struct err *err)
{
    struct fixture *f = arg;

    f->key_calls++;
    if (f->key_stale)
        stale_error();
    if (f->key_fail)
        return err_set(err, ERR_TOKEN, "token removed");
    *key_der = copy_secbuf(f->wrong_key != NULL ? f->wrong_key : f->ca_key);
    return 0;
}

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int
group_setup(void **state)
{
    struct err err;

    snprintf(fx.dir, sizeof(fx.dir), "/tmp/airlock-tls-XXXXXX");
    if (mkdtemp(fx.dir) == NULL)
        return -1;
    snprintf(fx.ca_path, sizeof(fx.ca_path), "%s/ca.pem", fx.dir);
    if (tls_ca_generate("testhost", &fx.ca_key, &fx.ca_pem, &err) == -1)
        return -1;
    write_file(fx.ca_path, fx.ca_pem);
    return 0;
}

static int
group_teardown(void **state)
{
    secbuf_free(fx.ca_key);
    free(fx.ca_pem);
    nftw(fx.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static int
reset(void **state)
{
    fx.key_calls = 0;
    fx.key_fail = 0;
    fx.key_stale = 0;
    fx.wrong_key = NULL;
    return 0;
}

static X509 *
pem_to_x509(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);

    BIO_free(b);
    assert_non_null(x);
    return x;
}

/* Decodes PKCS#8 DER strictly (not the auto-detecting d2i). */
static EVP_PKEY *
der_to_key(const struct secbuf *der)
{
    const unsigned char *p = der->data;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)der->len);
    EVP_PKEY *key;

    assert_non_null(p8);
    assert_ptr_equal(p, der->data + der->len);
    key = EVP_PKCS82PKEY(p8);
    PKCS8_PRIV_KEY_INFO_free(p8);
    assert_non_null(key);
    return key;
}

static void
assert_cn(X509 *x, const char *want)
{
    char cn[256];

    assert_true(
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) > 0);
    assert_string_equal(cn, want);
}

/* Validity span in seconds and notBefore's offset from now. */
static void
validity(X509 *x, long *span_s, long *before_offset_s)
{
    int days, secs;
    ASN1_TIME *now = ASN1_TIME_set(NULL, time(NULL));

    assert_true(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)));
    *span_s = days * 86400L + secs;
    assert_true(ASN1_TIME_diff(&days, &secs, now, X509_get0_notBefore(x)));
    *before_offset_s = days * 86400L + secs;
    ASN1_TIME_free(now);
}

static void
test_ca_generate(void **state)
{
    X509 *x = pem_to_x509(fx.ca_pem);
    BASIC_CONSTRAINTS *bc;
    ASN1_BIT_STRING *ku;
    BIGNUM *serial;
    EVP_PKEY *pub = X509_get0_pubkey(x);
    EVP_PKEY *key;
    char group[64];
    long span, offset;
    int crit = -1;

    assert_cn(x, "airlock local CA (testhost)");
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
    assert_int_equal(X509_verify(x, pub), 1);
    assert_int_equal(X509_check_ca(x), 1);
    bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_int_equal(crit, 1);
    assert_true(bc->ca);
    assert_non_null(bc->pathlen);
    assert_int_equal(ASN1_INTEGER_get(bc->pathlen), 0);
    BASIC_CONSTRAINTS_free(bc);
    ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
    assert_non_null(ku);
    assert_int_equal(crit, 1);
    ASN1_BIT_STRING_free(ku);
    assert_int_equal(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    assert_non_null(X509_get0_subject_key_id(x));
    validity(x, &span, &offset);
    assert_true(span >= 3652L * 86400 && span <= 3653L * 86400); /* ten years */
    assert_true(offset <= 0 && offset > -7200);
    serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    assert_true(BN_num_bits(serial) > 120 && !BN_is_negative(serial));
    BN_free(serial);
    assert_true(EVP_PKEY_get_group_name(pub, group, sizeof(group), NULL));
    assert_string_equal(group, "prime256v1");
    /* The DER key is PKCS#8 and belongs to this certificate. */
    key = der_to_key(fx.ca_key);
    assert_int_equal(X509_check_private_key(x, key), 1);
    EVP_PKEY_free(key);
    X509_free(x);
}

static void
test_ca_long_hostname_and_fresh_serials(void **state)
{
    char host[201], cn[256];
    struct secbuf *key;
    char *pem;
    struct err err;
    X509 *a, *b;

    memset(host, 'h', sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    assert_int_equal(tls_ca_generate(host, &key, &pem, &err), 0);
    a = pem_to_x509(pem);
    assert_int_equal(
        X509_NAME_get_text_by_NID(X509_get_subject_name(a), NID_commonName, cn, sizeof(cn)), 64);
    assert_memory_equal(cn, "airlock local CA (hhh", 21);
    b = pem_to_x509(fx.ca_pem);
    assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(a), X509_get0_serialNumber(b)), 0);
    X509_free(a);
    X509_free(b);
    secbuf_free(key);
    free(pem);
}

static void
test_fingerprint(void **state)
{
    char fp[TLS_FINGERPRINT_LEN], want[TLS_FINGERPRINT_LEN], path[160];
    unsigned char md[32];
    unsigned int n = 0, i;
    X509 *x = pem_to_x509(fx.ca_pem);
    struct err err;

    assert_true(X509_digest(x, EVP_sha256(), md, &n) && n == 32);
    for (i = 0; i < n; i++)
        snprintf(want + 3 * i, sizeof(want) - 3 * i, "%02X%s", md[i], i + 1 < n ? ":" : "");
    X509_free(x);
    assert_int_equal(tls_cert_fingerprint(fx.ca_path, fp, sizeof(fp), &err), 0);
    assert_string_equal(fp, want);
    assert_int_equal(strlen(fp), 95);
    assert_int_equal(tls_cert_fingerprint(fx.ca_path, fp, 40, &err), -1);
    snprintf(path, sizeof(path), "%s/missing.pem", fx.dir);
    assert_int_equal(tls_cert_fingerprint(path, fp, sizeof(fp), &err), -1);
    assert_int_equal(err.code, ERR_NOTFOUND);
    assert_non_null(strstr(err.msg, "missing.pem"));
    snprintf(path, sizeof(path), "%s/garbage.pem", fx.dir);
    write_file(path, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
    assert_int_equal(tls_cert_fingerprint(path, fp, sizeof(fp), &err), -1);
    assert_non_null(strstr(err.msg, "garbage.pem"));
}

struct seal_rec {
    int calls;
    int fail;
    size_t key_len;
};

static int
seal_cb(void *arg, const struct secbuf *key_der, struct err *err)
{
    struct seal_rec *r = arg;

    r->calls++;
    r->key_len = key_der->len;
    if (r->fail)
        return err_set(err, ERR_EXISTS, "credential \"_ca\" exists");
    return 0;
}

static void
test_ca_init(void **state)
{
    char dir[160], path[200], fp1[TLS_FINGERPRINT_LEN], fp2[TLS_FINGERPRINT_LEN];
    struct seal_rec r = {0};
    struct stat st;
    struct err err;

    snprintf(dir, sizeof(dir), "%s/init/state", fx.dir);
    snprintf(path, sizeof(path), "%s/ca.pem", dir);
    r.fail = 1; /* sealing fails: nothing may be written */
    assert_int_equal(tls_ca_init(dir, seal_cb, &r, &err), -1);
    assert_non_null(strstr(err.msg, "sealing the ca key"));
    assert_int_equal(r.calls, 1);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    r.fail = 0;
    assert_int_equal(tls_ca_init(dir, seal_cb, &r, &err), 0);
    assert_int_equal(r.calls, 2);
    assert_true(r.key_len > 100);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    assert_int_equal(tls_cert_fingerprint(path, fp1, sizeof(fp1), &err), 0);
    /* Idempotent: the CA stays, nothing is sealed again. */
    assert_int_equal(tls_ca_init(dir, seal_cb, &r, &err), 0);
    assert_int_equal(r.calls, 2);
    assert_int_equal(tls_cert_fingerprint(path, fp2, sizeof(fp2), &err), 0);
    assert_string_equal(fp1, fp2);
}

static struct tls_minter *
new_minter(void)
{
    struct err err;
    struct tls_minter *m = tls_minter_new(fx.ca_path, get_key, &fx, &err);

    assert_non_null(m);
    return m;
}

/* X509_verify_cert against the test CA for a TLS server named host (or IP). */
static int
verify_leaf(X509 *leaf, const char *host, int is_ip)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509 *ca = pem_to_x509(fx.ca_pem);
    X509_VERIFY_PARAM *param;
    int ok;

    assert_int_equal(X509_STORE_add_cert(store, ca), 1);
    assert_int_equal(X509_STORE_CTX_init(ctx, store, leaf, NULL), 1);
    param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
    if (is_ip)
        X509_VERIFY_PARAM_set1_ip_asc(param, host);
    else
        X509_VERIFY_PARAM_set1_host(param, host, 0);
    ok = X509_verify_cert(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    X509_free(ca);
    return ok;
}

static void
test_minter_name(void **state)
{
    struct tls_minter *m = new_minter();
    GENERAL_NAMES *sans;
    const GENERAL_NAME *gn;
    struct err err;
    long span, offset;
    X509 *x;

    assert_int_equal(fx.key_calls, 0); /* creating the minter unseals nothing */
    x = tls_minter_cert(m, "api.example.test", &err);
    assert_non_null(x);
    assert_int_equal(fx.key_calls, 1);
    sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_non_null(sans);
    assert_int_equal(sk_GENERAL_NAME_num(sans), 1);
    gn = sk_GENERAL_NAME_value(sans, 0);
    assert_int_equal(gn->type, GEN_DNS);
    assert_string_equal((const char *)ASN1_STRING_get0_data(gn->d.dNSName), "api.example.test");
    GENERAL_NAMES_free(sans);
    validity(x, &span, &offset);
    assert_true(span >= 7 * 86400L + 3600 - 5 && span <= 7 * 86400L + 3600 + 5);
    assert_true(offset <= -3600 + 5 && offset >= -3600 - 60);
    assert_int_equal(X509_check_ca(x), 0);
    assert_true(EVP_PKEY_eq(X509_get0_pubkey(x), tls_minter_leaf_key(m)) == 1);
    assert_int_equal(verify_leaf(x, "api.example.test", 0), 1);
    assert_int_equal(verify_leaf(x, "other.example.test", 0), 0);
    X509_free(x);
    tls_minter_free(m);
}

static void
test_minter_ip(void **state)
{
    static const unsigned char v4[4] = {127, 0, 0, 1};
    static const unsigned char v6[16] = {[15] = 1};
    struct tls_minter *m = new_minter();
    GENERAL_NAMES *sans;
    const GENERAL_NAME *gn;
    struct err err;
    X509 *x;

    x = tls_minter_cert(m, "127.0.0.1", &err);
    assert_non_null(x);
    sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    gn = sk_GENERAL_NAME_value(sans, 0);
    assert_int_equal(gn->type, GEN_IPADD);
    assert_int_equal(ASN1_STRING_length(gn->d.iPAddress), 4);
    assert_memory_equal(ASN1_STRING_get0_data(gn->d.iPAddress), v4, 4);
    GENERAL_NAMES_free(sans);
    assert_int_equal(verify_leaf(x, "127.0.0.1", 1), 1);
    assert_int_equal(verify_leaf(x, "127.0.0.2", 1), 0);
    X509_free(x);
    x = tls_minter_cert(m, "::1", &err);
    assert_non_null(x);
    sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    gn = sk_GENERAL_NAME_value(sans, 0);
    assert_int_equal(gn->type, GEN_IPADD);
    assert_int_equal(ASN1_STRING_length(gn->d.iPAddress), 16);
    assert_memory_equal(ASN1_STRING_get0_data(gn->d.iPAddress), v6, 16);
    GENERAL_NAMES_free(sans);
    assert_int_equal(verify_leaf(x, "::1", 1), 1);
    X509_free(x);
    tls_minter_free(m);
}

static void
test_minter_cache_lru(void **state)
{
    struct tls_minter *m = new_minter();
    struct err err;
    X509 *a1, *a2, *x;

    a1 = tls_minter_cert(m, "a.test", &err);
    a2 = tls_minter_cert(m, "A.test.", &err); /* normalised to the same host: a hit */
    assert_non_null(a1);
    assert_ptr_equal(a1, a2);
    assert_int_equal(fx.key_calls, 1);
    assert_int_equal(tls_minter_cache_count(m), 1);
    X509_free(a2);

    tls_minter_set_cache_size(m, 2);
    X509_free(tls_minter_cert(m, "b.test", &err)); /* miss: 2 */
    X509_free(tls_minter_cert(m, "a.test", &err)); /* hit: a is newest */
    X509_free(tls_minter_cert(m, "c.test", &err)); /* miss: 3, evicts b */
    assert_int_equal(fx.key_calls, 3);
    assert_int_equal(tls_minter_cache_count(m), 2);
    x = tls_minter_cert(m, "a.test", &err); /* still cached */
    assert_ptr_equal(x, a1);
    X509_free(x);
    assert_int_equal(fx.key_calls, 3);
    X509_free(tls_minter_cert(m, "b.test", &err)); /* was evicted: signed again */
    assert_int_equal(fx.key_calls, 4);
    assert_int_equal(tls_minter_cache_count(m), 2);
    tls_minter_set_cache_size(m, 0); /* clamps to 1 and trims at once */
    assert_int_equal(tls_minter_cache_count(m), 1);
    X509_free(a1);
    tls_minter_free(m);
}

static void
test_minter_refusals(void **state)
{
    static const char *bad[] = {"", "bad host", "0x7f.0.0.1", "127.1", "a..b", "[::1", NULL};
    struct tls_minter *m = new_minter();
    struct secbuf *other;
    char *pem;
    struct err err;
    size_t i;

    for (i = 0; bad[i] != NULL; i++)
        assert_null(tls_minter_cert(m, bad[i], &err));
    assert_null(tls_minter_cert(m, NULL, &err));
    assert_int_equal(fx.key_calls, 0);

    fx.key_fail = 1;
    assert_null(tls_minter_cert(m, "api.example.test", &err));
    assert_non_null(strstr(err.msg, "unsealing the ca key"));
    assert_int_equal(tls_minter_cache_count(m), 0);
    fx.key_fail = 0;

    assert_int_equal(tls_ca_generate("other", &other, &pem, &err), 0);
    fx.wrong_key = other;
    assert_null(tls_minter_cert(m, "api.example.test", &err));
    assert_non_null(strstr(err.msg, "does not match"));
    fx.wrong_key = NULL;
    secbuf_free(other);
    free(pem);

    assert_null(tls_minter_new("/nonexistent/ca.pem", get_key, &fx, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/ca.pem"));
    tls_minter_free(NULL);
    tls_minter_free(m);
}

/* ---- in-memory handshakes ---- */

static void
connect_pair(SSL *client, SSL *server)
{
    BIO *bc, *bs;

    assert_int_equal(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
    SSL_set_bio(client, bc, bc);
    SSL_set_bio(server, bs, bs);
}

static int
step(SSL *ssl, int *done)
{
    int rc, e;

    if (*done)
        return 0;
    if ((rc = SSL_do_handshake(ssl)) == 1) {
        *done = 1;
        return 0;
    }
    e = SSL_get_error(ssl, rc);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/* Drives both ends (at most 100 rounds); 0 when both finished, -1 when either failed. The
 * OpenSSL error queue is left for the assertions to read. */
static int
handshake(SSL *client, SSL *server)
{
    int cdone = 0, sdone = 0, round;
    unsigned char b;

    connect_pair(client, server);
    for (round = 0; round < 100 && !(cdone && sdone); round++) {
        if (step(client, &cdone) == -1 || step(server, &sdone) == -1) {
            /* Let the client read the alert the server may have sent. */
            SSL_do_handshake(client);
            return -1;
        }
    }
    if (!(cdone && sdone))
        return -1;
    /* Let the client read post-handshake messages (TLS 1.3 session tickets). */
    assert_true(SSL_read(client, &b, 1) <= 0);
    return 0;
}

static SSL_CTX *
upstream_ctx(const char *ca_file)
{
    struct err err;
    SSL_CTX *ctx = tls_upstream_ctx_new(ca_file, &err);

    assert_non_null(ctx);
    return ctx;
}

static void
assert_alpn(SSL *ssl, const char *want)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;

    SSL_get0_alpn_selected(ssl, &p, &n);
    if (want == NULL) {
        assert_int_equal(n, 0);
        return;
    }
    assert_int_equal(n, strlen(want));
    assert_memory_equal(p, want, n);
}

static void
test_handshake_sni_ok(void **state)
{
    struct tls_minter *m = new_minter();
    struct err err;
    SSL_CTX *sctx = tls_client_ctx_new(m, &err), *cctx = upstream_ctx(fx.ca_path);
    SSL *s, *c;
    int i;

    assert_non_null(sctx);
    for (i = 0; i < 2; i++) {
        s = tls_client_ssl_new(sctx, "api.example.test");
        c = tls_upstream_ssl_new(cctx, "api.example.test", 443);
        assert_non_null(s);
        assert_non_null(c);
        assert_int_equal(handshake(c, s), 0);
        assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
        assert_int_equal(tls_client_sni_mismatch(s), 0);
        assert_alpn(c, "http/1.1");
        assert_alpn(s, "http/1.1");
        assert_true(SSL_version(c) >= TLS1_2_VERSION);
        SSL_free(c);
        SSL_free(s);
    }
    assert_int_equal(fx.key_calls, 1); /* the second handshake used the cached leaf */
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    tls_minter_free(m);
}

/* The daemon's asynchronous mint: a leaf signed with a key at hand, then pinned on the SSL,
 * so the handshake never calls the key source; a "none" pin fails with internal_error. */
static void
test_minted_ahead_and_pinned(void **state)
{
    struct tls_minter *m = new_minter();
    struct err err;
    SSL_CTX *sctx = tls_client_ctx_new(m, &err), *cctx = upstream_ctx(fx.ca_path);
    struct secbuf *other;
    char reason[256], *pem;
    X509 *x, *y;
    SSL *s, *c;

    assert_null(tls_minter_cached(m, "api.example.test"));
    assert_null(tls_minter_cert_with_key(m, "api.example.test", NULL, &err));
    assert_int_equal(tls_ca_generate("other", &other, &pem, &err), 0);
    assert_null(tls_minter_cert_with_key(m, "api.example.test", other, &err));
    assert_non_null(strstr(err.msg, "does not match"));
    secbuf_free(other);
    free(pem);
    x = tls_minter_cert_with_key(m, "api.example.test", fx.ca_key, &err);
    assert_non_null(x);
    assert_int_equal(verify_leaf(x, "api.example.test", 0), 1);
    y = tls_minter_cached(m, "API.example.test.");
    assert_ptr_equal(x, y);
    X509_free(y);

    s = tls_client_ssl_new(sctx, "api.example.test");
    c = tls_upstream_ssl_new(cctx, "api.example.test", 443);
    assert_int_equal(tls_client_ssl_set_leaf(s, x), 0);
    X509_free(x); /* the SSL holds its own reference */
    assert_int_equal(handshake(c, s), 0);
    assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
    SSL_free(c);
    SSL_free(s);

    s = tls_client_ssl_new(sctx, "api.example.test");
    c = tls_upstream_ssl_new(cctx, "api.example.test", 443);
    assert_int_equal(tls_client_ssl_set_leaf(s, NULL), 0);
    assert_int_equal(handshake(c, s), -1);
    assert_int_equal(tls_client_sni_mismatch(s), 0);
    tls_upstream_error(c, 0, reason, sizeof(reason));
    assert_string_equal(reason, "the server sent alert: internal error");
    SSL_free(c);
    SSL_free(s);
    ERR_clear_error();

    s = tls_client_ssl_new(sctx, "api.example.test");
    c = tls_upstream_ssl_new(cctx, "evil.example.test", 443);
    assert_int_equal(tls_client_ssl_set_leaf(s, NULL), 0);
    assert_int_equal(handshake(c, s), -1);
    assert_int_equal(tls_client_sni_mismatch(s), 1); /* the SNI check still comes first */
    SSL_free(c);
    SSL_free(s);
    ERR_clear_error();

    assert_int_equal(tls_client_ssl_set_leaf(NULL, NULL), -1);
    assert_int_equal(fx.key_calls, 0); /* the key source was never asked */
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    tls_minter_free(m);
}

static void
test_handshake_sni_mismatch(void **state)
{
    struct tls_minter *m = new_minter();
    struct err err;
    SSL_CTX *sctx = tls_client_ctx_new(m, &err), *cctx = upstream_ctx(fx.ca_path);
    SSL *s = tls_client_ssl_new(sctx, "api.example.test");
    SSL *c = tls_upstream_ssl_new(cctx, "evil.example.test", 443);
    char reason[256];

    assert_int_equal(handshake(c, s), -1);
    assert_int_equal(tls_client_sni_mismatch(s), 1);
    assert_int_equal(fx.key_calls, 0); /* refused before anything was signed */
    tls_upstream_error(c, 0, reason, sizeof(reason));
    assert_string_equal(reason, "the server sent alert: unrecognized name");
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    tls_minter_free(m);
}

/* A bare client: no verification, optional SNI and ALPN list. */
static SSL *
raw_client(SSL_CTX **ctx, const char *sni, const unsigned char *alpn, unsigned alpn_len)
{
    SSL *c;

    *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(*ctx);
    c = SSL_new(*ctx);
    assert_non_null(c);
    if (sni != NULL)
        assert_int_equal(SSL_set_tlsext_host_name(c, sni), 1);
    if (alpn != NULL)
        assert_int_equal(SSL_set_alpn_protos(c, alpn, alpn_len), 0);
    SSL_set_connect_state(c);
    return c;
}

static void
test_handshake_sni_absent_and_alpn(void **state)
{
    static const unsigned char h2[] = "\x02h2";
    static const unsigned char both[] = "\x02h2\x08http/1.1";
    struct tls_minter *m = new_minter();
    struct err err;
    SSL_CTX *sctx = tls_client_ctx_new(m, &err), *rctx, *cctx = upstream_ctx(fx.ca_path);
    SSL *s, *c;

    /* A name host requires SNI. */
    s = tls_client_ssl_new(sctx, "api.example.test");
    c = raw_client(&rctx, NULL, NULL, 0);
    assert_int_equal(handshake(c, s), -1);
    assert_int_equal(tls_client_sni_mismatch(s), 1);
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(rctx);
    ERR_clear_error();

    /* SNI differing only in case and a trailing dot is the same host; h2 only: no ALPN. */
    s = tls_client_ssl_new(sctx, "api.example.test");
    c = raw_client(&rctx, "API.Example.test.", h2, sizeof(h2) - 1);
    assert_int_equal(handshake(c, s), 0);
    assert_alpn(c, NULL);
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(rctx);

    /* h2 and http/1.1 offered: http/1.1 chosen. */
    s = tls_client_ssl_new(sctx, "api.example.test");
    c = raw_client(&rctx, "api.example.test", both, sizeof(both) - 1);
    assert_int_equal(handshake(c, s), 0);
    assert_alpn(c, "http/1.1");
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(rctx);

    /* An IP-literal host: no SNI is sent, the leaf carries the address and verifies. */
    s = tls_client_ssl_new(sctx, "127.0.0.1");
    c = tls_upstream_ssl_new(cctx, "127.0.0.1", 8443);
    assert_null(SSL_get_servername(c, TLSEXT_NAMETYPE_host_name));
    assert_int_equal(handshake(c, s), 0);
    assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
    assert_int_equal(tls_client_sni_mismatch(s), 0);
    SSL_free(c);
    SSL_free(s);

    assert_null(tls_client_ssl_new(sctx, "not a host"));
    assert_null(tls_upstream_ssl_new(cctx, "2130706433", 443));
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    tls_minter_free(m);
}

/* A plain origin server presenting cert/key, no SNI check, tickets on (for resumption). */
static SSL_CTX *
origin_ctx(X509 *cert, EVP_PKEY *key, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
    if (max_version != 0)
        assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
    return ctx;
}

static SSL *
origin_ssl(SSL_CTX *ctx)
{
    SSL *s = SSL_new(ctx);

    assert_non_null(s);
    SSL_set_accept_state(s);
    return s;
}

/* Handshake from the upstream context to origin; returns the client's failure reason. */
static int
upstream_try(SSL_CTX *cctx, SSL_CTX *octx, const char *host, char *reason, size_t len)
{
    SSL *c = tls_upstream_ssl_new(cctx, host, 443), *s = origin_ssl(octx);
    int rc;

    assert_non_null(c);
    rc = handshake(c, s);
    tls_upstream_error(c, 0, reason, len);
    SSL_free(c);
    SSL_free(s);
    ERR_clear_error();
    return rc;
}

static void
test_upstream_verification(void **state)
{
    struct tls_minter *m = new_minter();
    struct secbuf *other_key;
    char *other_pem, other_path[160], reason[256];
    SSL_CTX *cctx = upstream_ctx(fx.ca_path), *octx, *wrong;
    struct err err;
    X509 *leaf = tls_minter_cert(m, "api.example.test", &err);

    octx = origin_ctx(leaf, tls_minter_leaf_key(m), 0);
    assert_int_equal(upstream_try(cctx, octx, "api.example.test", reason, sizeof(reason)), 0);
    assert_int_equal(upstream_try(cctx, octx, "other.example.test", reason, sizeof(reason)), -1);
    assert_string_equal(reason, "certificate verify failed: hostname mismatch");
    /* A partial match of the name is no match. */
    assert_int_equal(upstream_try(cctx, octx, "example.test", reason, sizeof(reason)), -1);
    assert_int_equal(upstream_try(cctx, octx, "x.api.example.test", reason, sizeof(reason)), -1);

    /* Trusting another CA: the chain does not verify. */
    assert_int_equal(tls_ca_generate("other", &other_key, &other_pem, &err), 0);
    snprintf(other_path, sizeof(other_path), "%s/other-ca.pem", fx.dir);
    write_file(other_path, other_pem);
    wrong = upstream_ctx(other_path);
    assert_int_equal(upstream_try(wrong, octx, "api.example.test", reason, sizeof(reason)), -1);
    assert_string_equal(reason,
                        "certificate verify failed: unable to get local issuer certificate");
    SSL_CTX_free(wrong);
    secbuf_free(other_key);
    free(other_pem);

    assert_null(tls_upstream_ctx_new("/nonexistent/bundle.pem", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/bundle.pem"));
    assert_string_equal(tls_upstream_error(NULL, 0, reason, sizeof(reason)), "no tls connection");
    SSL_CTX_free(octx);
    SSL_CTX_free(cctx);
    X509_free(leaf);
    tls_minter_free(m);
}

/* A leaf for the minter's key signed by the test CA, with the given CN and SAN (or none). */
static X509 *
custom_leaf(struct tls_minter *m, const char *cn, const char *san)
{
    X509 *x = X509_new(), *ca = pem_to_x509(fx.ca_pem);
    EVP_PKEY *cakey = der_to_key(fx.ca_key);
    X509_EXTENSION *ext;
    X509V3_CTX v3;
    time_t now = time(NULL);

    assert_non_null(x);
    assert_true(X509_set_version(x, X509_VERSION_3));
    assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), 4242));
    assert_non_null(X509_time_adj_ex(X509_getm_notBefore(x), 0, -60, &now));
    assert_non_null(X509_time_adj_ex(X509_getm_notAfter(x), 1, 0, &now));
    assert_true(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                           (const unsigned char *)cn, -1, -1, 0));
    assert_true(X509_set_issuer_name(x, X509_get_subject_name(ca)));
    assert_true(X509_set_pubkey(x, tls_minter_leaf_key(m)));
    if (san != NULL) {
        X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
        assert_non_null(ext);
        assert_true(X509_add_ext(x, ext, -1));
        X509_EXTENSION_free(ext);
    }
    assert_true(X509_sign(x, cakey, EVP_sha256()) > 0);
    EVP_PKEY_free(cakey);
    X509_free(ca);
    return x;
}

/* Hostname checks are strict: no partial wildcards, no CN fallback; full wildcards work. */
static void
test_upstream_name_rules(void **state)
{
    static const struct {
        const char *cn, *san, *host;
        int ok;
    } cases[] = {
        {"api1.example.test", "DNS:api*.example.test", "api1.example.test", 0},
        {"api.example.test", NULL, "api.example.test", 0},
        {"wild", "DNS:*.example.test", "api.example.test", 1},
        {"wild", "DNS:*.example.test", "a.b.example.test", 0},
    };
    struct tls_minter *m = new_minter();
    SSL_CTX *cctx = upstream_ctx(fx.ca_path), *octx;
    char reason[256];
    size_t i;
    X509 *x;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        x = custom_leaf(m, cases[i].cn, cases[i].san);
        octx = origin_ctx(x, tls_minter_leaf_key(m), 0);
        assert_int_equal(upstream_try(cctx, octx, cases[i].host, reason, sizeof(reason)),
                         cases[i].ok ? 0 : -1);
        if (!cases[i].ok)
            assert_string_equal(reason, "certificate verify failed: hostname mismatch");
        SSL_CTX_free(octx);
        X509_free(x);
    }
    SSL_CTX_free(cctx);
    tls_minter_free(m);
}

static X509 *
read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *x;

    assert_non_null(f);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static EVP_PKEY *
read_key(const char *path)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *k;

    assert_non_null(f);
    k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    return k;
}

/* The committed test PKI has an expired leaf: the reason must say so. */
static void
test_upstream_expired(void **state)
{
    const char *data = getenv("AIRLOCK_TEST_DATA");
    char ca[512], crt[512], key[512], reason[256];
    SSL_CTX *cctx, *octx;
    EVP_PKEY *k;
    X509 *x;

    if (data == NULL)
        skip();
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", data);
    snprintf(crt, sizeof(crt), "%s/tls/expired.pem", data);
    snprintf(key, sizeof(key), "%s/tls/expired.key", data);
    x = read_cert(crt);
    k = read_key(key);
    cctx = upstream_ctx(ca);
    octx = origin_ctx(x, k, 0);
    assert_int_equal(upstream_try(cctx, octx, "api.example.test", reason, sizeof(reason)), -1);
    assert_string_equal(reason, "certificate verify failed: certificate has expired");
    SSL_CTX_free(octx);
    SSL_CTX_free(cctx);
    EVP_PKEY_free(k);
    X509_free(x);
}

/* Sends a short message from one end to the other. The reader first finds nothing to read:
 * that must be SSL_ERROR_WANT_READ, which is what libevent's filter sees between records. */
static void
exchange(SSL *from, SSL *to)
{
    unsigned char buf[16];
    int rc;

    rc = SSL_read(to, buf, sizeof(buf));
    assert_true(rc <= 0);
    assert_int_equal(SSL_get_error(to, rc), SSL_ERROR_WANT_READ);
    assert_int_equal(SSL_write(from, "ping", 4), 4);
    assert_int_equal(SSL_read(to, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "ping", 4);
}

/*
 * A stale entry in the thread's OpenSSL error queue turns a WANT_READ into SSL_ERROR_SSL
 * (SSL_get_error reads the queue first), which is how libevent's filter decides that a
 * healthy connection failed. SoftHSM queues such entries when the CA key is unsealed in the
 * middle of a client handshake (its rdrand engine probe). OpenSSL clears the queue while it
 * builds the certificate chain, which hid this, so both chain modes are run.
 */
static void
test_handshake_stale_errors(void **state)
{
    static const long modes[] = {0, SSL_MODE_NO_AUTO_CHAIN};
    struct tls_minter *m;
    struct err err;
    SSL_CTX *sctx, *cctx = upstream_ctx(fx.ca_path);
    SSL *s, *c;
    X509 *other;
    size_t k;
    int i;

    fx.key_stale = 1;
    for (k = 0; k < sizeof(modes) / sizeof(modes[0]); k++) {
        m = new_minter();
        sctx = tls_client_ctx_new(m, &err);
        assert_non_null(sctx);
        SSL_CTX_set_mode(sctx, modes[k]);
        fx.key_calls = 0;
        for (i = 0; i < 2; i++) { /* minted (the key source queues errors), then cached */
            stale_error();
            s = tls_client_ssl_new(sctx, "api.example.test");
            c = tls_upstream_ssl_new(cctx, "api.example.test", 443);
            assert_non_null(s);
            assert_non_null(c);
            stale_error();
            assert_int_equal(handshake(c, s), 0);
            assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
            assert_int_equal(ERR_peek_error(), 0);
            exchange(c, s);
            exchange(s, c);
            /* Another connection's leaf is minted while this one is open: the event loop
             * interleaves them, and the queue is shared by the thread. */
            other = tls_minter_cert(m, i == 0 ? "a.example.test" : "b.example.test", &err);
            assert_non_null(other);
            X509_free(other);
            assert_int_equal(ERR_peek_error(), 0);
            exchange(c, s);
            exchange(s, c);
            SSL_free(c);
            SSL_free(s);
        }
        assert_int_equal(fx.key_calls, 3);
        SSL_CTX_free(sctx);
        tls_minter_free(m);
    }
    SSL_CTX_free(cctx);
}

/* The reason libevent popped off the queue is the one reported, not a stale entry. */
static void
test_upstream_error_reason(void **state)
{
    SSL_CTX *cctx = upstream_ctx(fx.ca_path);
    SSL *c = tls_upstream_ssl_new(cctx, "api.example.test", 443);
    char reason[256];

    assert_non_null(c);
    stale_error();
    tls_upstream_error(c, ERR_PACK(ERR_LIB_SSL, 0, SSL_R_WRONG_VERSION_NUMBER), reason,
                       sizeof(reason));
    assert_string_equal(reason, "tls handshake failed: wrong version number");
    assert_int_equal(ERR_peek_error(), 0);
    tls_upstream_error(c, ERR_SYSTEM_FLAG | ECONNRESET, reason, sizeof(reason));
    assert_string_equal(reason, "tls handshake failed: Connection reset by peer");
    tls_upstream_error(c, 0, reason, sizeof(reason));
    assert_string_equal(reason, "tls handshake failed: the connection closed");
    SSL_free(c);
    SSL_CTX_free(cctx);
}

/* Sessions are remembered per host:port and resumed, for TLS 1.3 tickets and TLS 1.2. */
static void
test_upstream_resumption(void **state)
{
    static const int versions[] = {0, TLS1_2_VERSION};
    struct tls_minter *m = new_minter();
    struct err err;
    X509 *leaf = tls_minter_cert(m, "api.example.test", &err);
    SSL_CTX *cctx, *octx;
    SSL *c, *s;
    size_t v;
    int round;

    for (v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
        cctx = upstream_ctx(fx.ca_path);
        octx = origin_ctx(leaf, tls_minter_leaf_key(m), versions[v]);
        for (round = 0; round < 3; round++) {
            /* round 2 goes to another port: no session for it */
            c = tls_upstream_ssl_new(cctx, "api.example.test", round == 2 ? 8443 : 443);
            s = origin_ssl(octx);
            assert_int_equal(handshake(c, s), 0);
            assert_int_equal(SSL_session_reused(c), round == 1);
            tls_upstream_session_save(cctx, c, "api.example.test", round == 2 ? 8443 : 443);
            SSL_free(c);
            SSL_free(s);
        }
        SSL_CTX_free(octx);
        SSL_CTX_free(cctx);
    }
    X509_free(leaf);
    tls_minter_free(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_ca_generate, reset),
        cmocka_unit_test_setup(test_ca_long_hostname_and_fresh_serials, reset),
        cmocka_unit_test_setup(test_fingerprint, reset),
        cmocka_unit_test_setup(test_ca_init, reset),
        cmocka_unit_test_setup(test_minter_name, reset),
        cmocka_unit_test_setup(test_minter_ip, reset),
        cmocka_unit_test_setup(test_minter_cache_lru, reset),
        cmocka_unit_test_setup(test_minter_refusals, reset),
        cmocka_unit_test_setup(test_handshake_sni_ok, reset),
        cmocka_unit_test_setup(test_handshake_sni_mismatch, reset),
        cmocka_unit_test_setup(test_minted_ahead_and_pinned, reset),
        cmocka_unit_test_setup(test_handshake_sni_absent_and_alpn, reset),
        cmocka_unit_test_setup(test_handshake_stale_errors, reset),
        cmocka_unit_test_setup(test_upstream_verification, reset),
        cmocka_unit_test_setup(test_upstream_name_rules, reset),
        cmocka_unit_test_setup(test_upstream_expired, reset),
        cmocka_unit_test_setup(test_upstream_resumption, reset),
        cmocka_unit_test_setup(test_upstream_error_reason, reset),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
