/*
 * The local CA of SPEC section 5: generation for `airlock init` (key handed out in locked
 * memory to be sealed in the vault, certificate written as state_dir/ca.pem), fingerprints
 * for `airlock ca`, and the certificate-building helpers the leaf minter shares.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/util.h"
#include "proxy/tls.h"
#include "proxy/tls_internal.h"

#define CA_VALID_DAYS 3652L      /* ten years, leap days included */
#define CA_BACKDATE_S 3600L      /* tolerate an hour of clock skew between hosts */
#define CN_MAX 64                /* ub-common-name (RFC 5280) */
#define CERT_PEM_MAX (64 * 1024) /* a CA certificate is well under 1 KiB */

int
tls_ossl_err(struct err *err, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
    int rc;

    rc = err_set(err, ERR_CRYPTO, "%s: %s", what, reason != NULL ? reason : "openssl error");
    ERR_clear_error();
    return rc;
}

EVP_PKEY *
tls_key_generate(struct err *err)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");

    if (key == NULL)
        tls_ossl_err(err, "cannot generate a p-256 key");
    return key;
}

struct secbuf *
tls_key_to_der(EVP_PKEY *key, struct err *err)
{
    PKCS8_PRIV_KEY_INFO *p8;
    struct secbuf *sb = NULL;
    unsigned char *p;
    int n;

    if ((p8 = EVP_PKEY2PKCS8(key)) == NULL) {
        tls_ossl_err(err, "cannot encode the private key");
        return NULL;
    }
    if ((n = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL)) <= 0) {
        tls_ossl_err(err, "cannot encode the private key");
    } else if ((sb = secbuf_new((size_t)n)) == NULL) {
        err_set(err, ERR_INTERNAL, "cannot allocate locked memory: %s", strerror(errno));
    } else {
        p = sb->data;
        if (i2d_PKCS8_PRIV_KEY_INFO(p8, &p) != n) {
            tls_ossl_err(err, "cannot encode the private key");
            secbuf_free(sb);
            sb = NULL;
        } else {
            sb->len = (size_t)n;
        }
    }
    PKCS8_PRIV_KEY_INFO_free(p8); /* its ASN.1 callback wipes the key octets */
    return sb;
}

EVP_PKEY *
tls_key_from_der(const struct secbuf *der, struct err *err)
{
    const unsigned char *p;
    PKCS8_PRIV_KEY_INFO *p8;
    EVP_PKEY *key;

    if (der == NULL || der->len == 0 || der->len > LONG_MAX) {
        err_set(err, ERR_CRYPTO, "ca key: empty");
        return NULL;
    }
    p = der->data;
    if ((p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)der->len)) == NULL) {
        tls_ossl_err(err, "ca key: not pkcs#8 der");
        return NULL;
    }
    if ((key = EVP_PKCS82PKEY(p8)) == NULL)
        tls_ossl_err(err, "ca key: cannot decode");
    PKCS8_PRIV_KEY_INFO_free(p8);
    return key;
}

int
tls_x509_prepare(X509 *x, time_t now, long from_s, long to_s, struct err *err)
{
    unsigned char serial[16];
    BIGNUM *bn;
    int ok;

    if (util_random(serial, sizeof(serial)) == -1)
        return err_set(err, ERR_INTERNAL, "no randomness for a serial number");
    serial[0] &= 0x7f; /* positive, still ~127 bits of entropy (CA/B BR 7.1) */
    serial[0] |= 0x40; /* and never shorter than 16 octets */
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    ok = bn != NULL && X509_set_version(x, X509_VERSION_3) &&
         BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL &&
         X509_time_adj_ex(X509_getm_notBefore(x), 0, from_s, &now) != NULL &&
         X509_time_adj_ex(X509_getm_notAfter(x), 0, to_s, &now) != NULL;
    BN_free(bn);
    if (!ok)
        return tls_ossl_err(err, "cannot set serial or validity");
    return 0;
}

int
tls_x509_add_ext(X509 *x, X509 *issuer, int nid, const char *value, struct err *err)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    if ((ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value)) == NULL)
        return tls_ossl_err(err, "cannot build a certificate extension");
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (!ok)
        return tls_ossl_err(err, "cannot add a certificate extension");
    return 0;
}

int
tls_x509_set_cn(X509 *x, const char *cn, int self_issued, struct err *err)
{
    X509_NAME *name = X509_get_subject_name(x);

    if (!X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (const unsigned char *)cn,
                                    -1, -1, 0))
        return tls_ossl_err(err, "cannot set the subject");
    if (self_issued && !X509_set_issuer_name(x, name))
        return tls_ossl_err(err, "cannot set the issuer");
    return 0;
}

/* Builds and self-signs the CA certificate for key. */
static X509 *
ca_build(const char *hostname, EVP_PKEY *key, struct err *err)
{
    char cn[CN_MAX + 1], host[CN_MAX];
    const char *h = hostname != NULL && *hostname != '\0' ? hostname : "localhost";
    size_t room = CN_MAX - strlen("airlock local CA ()");
    X509 *x;

    /* The CN is bounded at 64 characters; a long hostname is cut, it is only a label. */
    util_strlcpy(host, h, room + 1 < sizeof(host) ? room + 1 : sizeof(host));
    snprintf(cn, sizeof(cn), "airlock local CA (%s)", host);
    if ((x = X509_new()) == NULL) {
        tls_ossl_err(err, "cannot allocate a certificate");
        return NULL;
    }
    if (!X509_set_pubkey(x, key)) {
        tls_ossl_err(err, "cannot set the ca public key");
        X509_free(x);
        return NULL;
    }
    if (tls_x509_prepare(x, time(NULL), -CA_BACKDATE_S, CA_VALID_DAYS * 86400L, err) == -1 ||
        tls_x509_set_cn(x, cn, 1, err) == -1 ||
        tls_x509_add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0", err) == -1 ||
        tls_x509_add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign", err) == -1 ||
        tls_x509_add_ext(x, x, NID_subject_key_identifier, "hash", err) == -1) {
        X509_free(x);
        return NULL;
    }
    if (X509_sign(x, key, EVP_sha256()) <= 0) {
        tls_ossl_err(err, "cannot sign the ca certificate");
        X509_free(x);
        return NULL;
    }
    return x;
}

/* PEM text of x as a malloc'd string. */
static char *
cert_to_pem(X509 *x, struct err *err)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out = NULL;
    long n;

    if (bio == NULL || !PEM_write_bio_X509(bio, x)) {
        tls_ossl_err(err, "cannot encode the certificate");
    } else if ((n = BIO_get_mem_data(bio, &data)) <= 0 || (out = malloc((size_t)n + 1)) == NULL) {
        err_set(err, ERR_INTERNAL, "out of memory");
    } else {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
    }
    BIO_free(bio);
    return out;
}

int
tls_ca_generate(const char *hostname, struct secbuf **key_der, char **cert_pem, struct err *err)
{
    EVP_PKEY *key;
    X509 *x = NULL;

    *key_der = NULL;
    *cert_pem = NULL;
    if ((key = tls_key_generate(err)) == NULL)
        return -1;
    if ((x = ca_build(hostname, key, err)) == NULL || (*cert_pem = cert_to_pem(x, err)) == NULL ||
        (*key_der = tls_key_to_der(key, err)) == NULL) {
        free(*cert_pem);
        *cert_pem = NULL;
        X509_free(x);
        EVP_PKEY_free(key);
        return -1;
    }
    X509_free(x);
    EVP_PKEY_free(key); /* EC private scalars are cleared on free */
    return 0;
}

int
tls_cert_fingerprint(const char *pem_path, char *out, size_t outlen, struct err *err)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0, i;
    X509 *x = NULL;
    FILE *f;

    if (outlen < TLS_FINGERPRINT_LEN)
        return err_set(err, ERR_INTERNAL, "fingerprint buffer too small");
    if ((f = fopen(pem_path, "r")) == NULL)
        return err_set(err, errno == ENOENT ? ERR_NOTFOUND : ERR_IO, "%s: %s", pem_path,
                       strerror(errno));
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL) {
        tls_ossl_err(err, "not a pem certificate");
        return err_prefix(err, "%s", pem_path);
    }
    if (!X509_digest(x, EVP_sha256(), md, &mdlen) || mdlen != 32) {
        X509_free(x);
        return tls_ossl_err(err, "cannot hash the certificate");
    }
    X509_free(x);
    for (i = 0; i < mdlen; i++)
        snprintf(out + 3 * i, outlen - 3 * i, "%02X%s", md[i], i + 1 < mdlen ? ":" : "");
    return 0;
}

/* mkdir -p with mode for the components it creates. */
static int
make_dirs(const char *dir, mode_t mode, struct err *err)
{
    char path[PATH_MAX];
    size_t i, n = util_strlcpy(path, dir, sizeof(path));

    if (n == 0 || n >= sizeof(path))
        return err_set(err, ERR_USAGE, "state directory: bad path");
    for (i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        path[i] = '\0';
        if (mkdir(path, mode) == -1 && errno != EEXIST)
            return err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
        path[i] = i < n ? '/' : '\0';
    }
    return 0;
}

int
tls_ca_init(const char *state_dir, tls_seal_fn seal_key, void *arg, struct err *err)
{
    char path[PATH_MAX], hostname[256];
    struct secbuf *key = NULL;
    char *pem = NULL;
    int rc;

    if (make_dirs(state_dir, 0700, err) == -1)
        return -1;
    if (snprintf(path, sizeof(path), "%s/ca.pem", state_dir) >= (int)sizeof(path))
        return err_set(err, ERR_USAGE, "%s: path too long", state_dir);
    if (access(path, F_OK) == 0)
        return 0;
    if (gethostname(hostname, sizeof(hostname)) == -1)
        util_strlcpy(hostname, "localhost", sizeof(hostname));
    hostname[sizeof(hostname) - 1] = '\0';
    if (tls_ca_generate(hostname, &key, &pem, err) == -1)
        return -1;
    /* Seal first: a ca.pem whose key was never stored would be a CA nobody can use. */
    rc = seal_key(arg, key, err);
    secbuf_free(key);
    if (rc == -1) {
        free(pem);
        return err_prefix(err, "sealing the ca key");
    }
    if (util_write_file_atomic(path, pem, strlen(pem), 0644) == -1)
        rc = err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
    free(pem);
    return rc;
}
