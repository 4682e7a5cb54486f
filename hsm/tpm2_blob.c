/*
 * The TPM 2.0 blob: the sealed keyedhash object (public and private areas) followed by the
 * secret encrypted in software with AES-256-GCM under the key sealed in that object. The
 * GCM AAD covers the caller's aad and the object, so neither half can be swapped.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <tss2/tss2_mu.h>

#include "common/util.h"
#include "hsm/tpm2_internal.h"

void
tpm2_auth_of(const unsigned char *aad, size_t aad_len, TPM2B_AUTH *auth)
{
    static const unsigned char empty;

    auth->size = TPM2_AUTH_BYTES;
    util_sha256(aad_len ? aad : &empty, aad_len, auth->buffer);
}

/* AES-256-GCM over in (len bytes) into out; on decrypt, tag is checked. 0 or -1. */
static int
tpm2_gcm(int enc, const unsigned char *key, const struct tpm2_blob *b, const unsigned char *aad,
         size_t aad_len, const unsigned char *in, size_t len, unsigned char *out,
         unsigned char *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n, ok;

    ok = ctx && EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, b->iv, enc) == 1 &&
         (aad_len == 0 || EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1) &&
         EVP_CipherUpdate(ctx, NULL, &n, b->hdr, (int)b->hdr_len) == 1 &&
         (len == 0 || EVP_CipherUpdate(ctx, out, &n, in, (int)len) == 1) &&
         (enc || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TPM2_TAG_BYTES, tag) == 1) &&
         EVP_CipherFinal_ex(ctx, out + len, &n) == 1 &&
         (!enc || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TPM2_TAG_BYTES, tag) == 1);
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}

static void
tpm2_put_be(unsigned char *p, uint32_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
}

int
tpm2_blob_seal(const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv, const unsigned char *key,
               const unsigned char *aad, size_t aad_len, const unsigned char *secret,
               size_t secret_len, unsigned char **out, size_t *out_len, struct err *err)
{
    unsigned char pubm[sizeof(TPM2B_PUBLIC)], privm[sizeof(TPM2B_PRIVATE)], *p, *ct;
    size_t pub_len = 0, priv_len = 0, len;
    struct tpm2_blob b;

    if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, pubm, sizeof(pubm), &pub_len) != TSS2_RC_SUCCESS ||
        Tss2_MU_TPM2B_PRIVATE_Marshal(priv, privm, sizeof(privm), &priv_len) != TSS2_RC_SUCCESS)
        return err_set(err, ERR_INTERNAL, "tpm2: cannot marshal the sealed object");
    b.hdr_len = 1 + 2 + pub_len + 2 + priv_len;
    len = b.hdr_len + TPM2_IV_BYTES + 4 + secret_len + TPM2_TAG_BYTES;
    if (!(p = malloc(len)))
        return err_set(err, ERR_INTERNAL, "tpm2: out of memory");
    b.hdr = p;
    p[0] = TPM2_BLOB_VERSION;
    tpm2_put_be(p + 1, (uint32_t)pub_len, 2);
    memcpy(p + 3, pubm, pub_len);
    tpm2_put_be(p + 3 + pub_len, (uint32_t)priv_len, 2);
    memcpy(p + 5 + pub_len, privm, priv_len);
    b.iv = p + b.hdr_len;
    tpm2_put_be(p + b.hdr_len + TPM2_IV_BYTES, (uint32_t)secret_len, 4);
    ct = p + b.hdr_len + TPM2_IV_BYTES + 4;
    if (util_random(p + b.hdr_len, TPM2_IV_BYTES) < 0 ||
        tpm2_gcm(1, key, &b, aad, aad_len, secret, secret_len, ct, ct + secret_len) < 0) {
        free(p);
        return err_set(err, ERR_CRYPTO, "tpm2: software encryption failed");
    }
    *out = p;
    *out_len = len;
    return 0;
}

static uint32_t
tpm2_get_be(const unsigned char *p, size_t n)
{
    uint32_t v = 0;

    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads a length-prefixed field of width w at *off; -1 if it does not fit in len. */
static int
tpm2_field(const unsigned char *data, size_t len, size_t *off, size_t w,
           const unsigned char **field, size_t *field_len)
{
    if (len - *off < w)
        return -1;
    *field_len = tpm2_get_be(data + *off, w);
    *off += w;
    if (len - *off < *field_len)
        return -1;
    *field = data + *off;
    *off += *field_len;
    return 0;
}

/* Splits a blob into its parts; every length is checked against the data. */
int
tpm2_blob_parse(const unsigned char *data, size_t len, struct tpm2_blob *b, struct err *err)
{
    const unsigned char *pubm, *privm;
    size_t off = 1, pub_len, priv_len, pub_off = 0, priv_off = 0;

    memset(b, 0, sizeof(*b));
    if (!data || len < 1 || data[0] != TPM2_BLOB_VERSION)
        return err_set(err, ERR_PARSE, "tpm2: malformed blob: unknown version");
    if (tpm2_field(data, len, &off, 2, &pubm, &pub_len) < 0 ||
        tpm2_field(data, len, &off, 2, &privm, &priv_len) < 0)
        return err_set(err, ERR_PARSE, "tpm2: malformed blob: truncated object");
    if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(pubm, pub_len, &pub_off, &b->pub) != TSS2_RC_SUCCESS ||
        pub_off != pub_len ||
        Tss2_MU_TPM2B_PRIVATE_Unmarshal(privm, priv_len, &priv_off, &b->priv) != TSS2_RC_SUCCESS ||
        priv_off != priv_len)
        return err_set(err, ERR_PARSE, "tpm2: malformed blob: bad object encoding");
    /* Only objects made by tpm2_seal_template: no policy, non-duplicable, authValue auth. */
    if (b->pub.publicArea.type != TPM2_ALG_KEYEDHASH ||
        b->pub.publicArea.nameAlg != TPM2_ALG_SHA256 ||
        b->pub.publicArea.objectAttributes != TPM2_SEAL_ATTRS ||
        b->pub.publicArea.authPolicy.size != 0)
        return err_set(err, ERR_PARSE, "tpm2: malformed blob: not an airlock sealed object");
    b->hdr = data;
    b->hdr_len = off;
    if (len - off < TPM2_IV_BYTES)
        return err_set(err, ERR_PARSE, "tpm2: malformed blob: truncated iv");
    b->iv = data + off;
    off += TPM2_IV_BYTES;
    if (tpm2_field(data, len, &off, 4, &b->ct, &b->ct_len) < 0 || b->ct_len > TPM2_MAX_SECRET ||
        len - off != TPM2_TAG_BYTES)
        return err_set(err, ERR_PARSE, "tpm2: malformed blob: bad ciphertext length");
    b->tag = data + off;
    return 0;
}

/*
 * Decrypts the software half with the unsealed key into the caller's buffer, whose cap
 * (at least the blob's length, see hsm_unseal_into) covers ct_len + 16: EVP_CipherFinal_ex
 * is handed out + len, which GCM never writes to.
 */
int
tpm2_blob_open(const struct tpm2_blob *b, const unsigned char *key, const unsigned char *aad,
               size_t aad_len, struct secbuf *sb, struct err *err)
{
    unsigned char tag[TPM2_TAG_BYTES];

    if (sb->cap < b->ct_len + TPM2_TAG_BYTES)
        return err_set(err, ERR_LIMIT, "tpm2: unseal: buffer too small");
    memcpy(tag, b->tag, sizeof(tag));
    if (tpm2_gcm(0, key, b, aad, aad_len, b->ct, b->ct_len, sb->data, tag) < 0)
        return err_set(err, ERR_CRYPTO, "tpm2: unseal failed: integrity/auth check failed");
    sb->len = b->ct_len;
    return 0;
}
