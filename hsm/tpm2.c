/*
 * TPM 2.0 backend (tpm2-tss ESAPI over tctildr). A random AES-256 key is sealed in a
 * keyedhash object under a persistent storage primary, and the secret itself is
 * AES-256-GCM encrypted in software with that key (envelope: TPM2B_SENSITIVE_DATA holds
 * only 128 bytes). The object's authValue is SHA-256(aad), so a renamed blob cannot be
 * unsealed, and the key only leaves the TPM inside a salted, response-encrypting session.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "common/log.h"
#include "common/util.h"
#include "hsm/hsm_internal.h"

#define TPM2_DEFAULT_TCTI "device:/dev/tpmrm0"
#define TPM2_AUTH_BYTES 32 /* SHA-256(aad): the sealed object's nameAlg digest size */
#define TPM2_KEY_BYTES 32  /* AES-256 key sealed in the TPM object */
#define TPM2_IV_BYTES 12
#define TPM2_TAG_BYTES 16
#define TPM2_MAX_SECRET 8192 /* SPEC section 4: secrets are at most 8 KiB */
#define TPM2_BLOB_VERSION 1
/* Sealed data: no sensitiveDataOrigin (we supply it), noDA so a wrong name cannot lock out. */
#define TPM2_SEAL_ATTRS                                                                            \
    (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA)
#define TPM2_MAX_AAD 4096 /* magic|version|backend|name: far below; keeps int casts exact */

/*
 * Backend data, lengths big-endian and checked on parse:
 *   u8 version | u16 n, TPM2B_PUBLIC (n bytes) | u16 n, TPM2B_PRIVATE (n bytes)
 *   | 12-byte IV | u32 n, ciphertext (n bytes) | 16-byte tag
 * GCM AAD = the caller's aad, then the bytes from version through the private area, so
 * the software half cannot be paired with another TPM object.
 */
struct tpm2_blob {
    TPM2B_PUBLIC pub;
    TPM2B_PRIVATE priv;
    const unsigned char *hdr, *iv, *ct, *tag;
    size_t hdr_len, ct_len;
};

struct tpm2 {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    ESYS_TR primary;        /* resolved on this connection, or ESYS_TR_NONE */
    ESYS_TR unseal_session; /* salted, response-encrypting, kept across unseals; or NONE */
    int broken;             /* the last call failed in transport: reconnect before the next */
    uint32_t handle;        /* persistent handle of the storage primary */
    const char *tcti_conf;
};

typedef int (*tpm2_op_fn)(struct tpm2 *t, void *arg, struct err *err);

/* True when rc means the connection (or the TPM's power state) is gone, not the command. */
static int
tpm2_rc_is_transport(TSS2_RC rc)
{
    TSS2_RC layer = rc & TSS2_RC_LAYER_MASK, base = rc & 0xffffu;

    if (layer == TSS2_TPM_RC_LAYER)
        return rc == TPM2_RC_INITIALIZE; /* the TPM was reset under us: Startup again */
    if (layer == TSS2_TCTI_RC_LAYER)
        return 1;
    return base == TSS2_BASE_RC_IO_ERROR || base == TSS2_BASE_RC_NO_CONNECTION ||
           base == TSS2_BASE_RC_MALFORMED_RESPONSE || base == TSS2_BASE_RC_INSUFFICIENT_RESPONSE ||
           base == TSS2_BASE_RC_BAD_SEQUENCE || base == TSS2_BASE_RC_TRY_AGAIN;
}

/* Format-one TPM response code rc (parameter/handle/session number stripped) equals want. */
static int
tpm2_rc_is(TSS2_RC rc, TSS2_RC want)
{
    if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER || !(rc & TPM2_RC_FMT1))
        return 0;
    return (rc & (TPM2_RC_FMT1 | 0x3fu)) == want;
}

/* A TPM-side refusal of the blob or its auth (not a transport or resource problem). */
static int
tpm2_rc_is_integrity(TSS2_RC rc)
{
    return (rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && (rc & TPM2_RC_FMT1);
}

static int
tpm2_fail(struct tpm2 *t, TSS2_RC rc, const char *what, struct err *err)
{
    if (tpm2_rc_is_transport(rc)) {
        t->broken = 1;
        return err_set(err, ERR_TOKEN, "tpm2: %s: lost the TPM (tcti \"%s\"): %s", what,
                       t->tcti_conf, Tss2_RC_Decode(rc));
    }
    return err_set(err, ERR_TOKEN, "tpm2: %s: %s", what, Tss2_RC_Decode(rc));
}

/* Flushes the kept unseal session; ESYS_TR_NONE afterwards. */
static void
tpm2_drop_session(struct tpm2 *t)
{
    if (t->esys && t->unseal_session != ESYS_TR_NONE)
        Esys_FlushContext(t->esys, t->unseal_session);
    t->unseal_session = ESYS_TR_NONE;
}

static void
tpm2_disconnect(struct tpm2 *t)
{
    if (!t->broken)
        tpm2_drop_session(t); /* a lost TPM took its sessions with it */
    t->unseal_session = ESYS_TR_NONE;
    if (t->esys)
        Esys_Finalize(&t->esys);
    if (t->tcti)
        Tss2_TctiLdr_Finalize(&t->tcti);
    t->esys = NULL;
    t->tcti = NULL;
    t->primary = ESYS_TR_NONE;
    t->broken = 0;
}

static int
tpm2_connect(struct tpm2 *t, struct err *err)
{
    TSS2_RC rc;

    rc = Tss2_TctiLdr_Initialize(t->tcti_conf, &t->tcti);
    if (rc == TSS2_RC_SUCCESS)
        rc = Esys_Initialize(&t->esys, t->tcti, NULL);
    if (rc == TSS2_RC_SUCCESS) {
        /*
         * Firmware (or swtpm --flags startup-clear) normally started the TPM already:
         * TPM2_RC_INITIALIZE. Any other TPM answer is left to the next command to report,
         * since a resource manager may refuse Startup outright; no answer is fatal.
         */
        rc = Esys_Startup(t->esys, TPM2_SU_CLEAR);
        if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER) {
            if (rc != TSS2_RC_SUCCESS && rc != TPM2_RC_INITIALIZE)
                log_debug("tpm2: startup: %s", Tss2_RC_Decode(rc));
            rc = TSS2_RC_SUCCESS;
        }
    }
    if (rc != TSS2_RC_SUCCESS) {
        tpm2_disconnect(t);
        return err_set(err, ERR_TOKEN, "tpm2: cannot connect to TPM (tcti \"%s\"): %s",
                       t->tcti_conf, Tss2_RC_Decode(rc));
    }
    return 0;
}

/*
 * Runs fn on a live connection. A transport failure (swtpm restarted, resource manager
 * gone) tears the context down and fn is tried once more on a fresh one, so a token that
 * came back is used again without restarting the daemon.
 */
static int
tpm2_run(struct tpm2 *t, tpm2_op_fn fn, void *arg, struct err *err)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (t->broken)
            tpm2_disconnect(t);
        if (!t->esys && tpm2_connect(t, err) < 0)
            return -1;
        if (fn(t, arg, err) == 0)
            return 0;
        if (!t->broken)
            return -1;
        log_debug("%s; reconnecting", err ? err->msg : "tpm2: transport error");
    }
    return -1;
}

/* Resolves the persistent storage primary: 0 found, 1 absent, -1 error. */
static int
tpm2_lookup(struct tpm2 *t, ESYS_TR *out, struct err *err)
{
    TSS2_RC rc;

    if (t->primary == ESYS_TR_NONE) {
        rc = Esys_TR_FromTPMPublic(t->esys, t->handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   &t->primary);
        if (rc != TSS2_RC_SUCCESS) {
            t->primary = ESYS_TR_NONE;
            if (tpm2_rc_is(rc, TPM2_RC_HANDLE))
                return 1;
            return tpm2_fail(t, rc, "reading the storage primary", err);
        }
    }
    *out = t->primary;
    return 0;
}

static int
tpm2_primary(struct tpm2 *t, ESYS_TR *out, struct err *err)
{
    int r = tpm2_lookup(t, out, err);

    if (r == 1)
        return err_set(err, ERR_TOKEN, "tpm2: storage primary 0x%08x missing (run airlock init)",
                       t->handle);
    return r;
}

/* The standard SRK template: ECC P-256 restricted decryption key, AES-128-CFB. */
static void
tpm2_srk_template(TPM2B_PUBLIC *pub)
{
    memset(pub, 0, sizeof(*pub));
    pub->publicArea.type = TPM2_ALG_ECC;
    pub->publicArea.nameAlg = TPM2_ALG_SHA256;
    pub->publicArea.objectAttributes = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT |
                                       TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                       TPMA_OBJECT_NODA;
    pub->publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
    pub->publicArea.parameters.eccDetail.symmetric.keyBits.aes = 128;
    pub->publicArea.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    pub->publicArea.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    pub->publicArea.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    pub->publicArea.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
}

/* The sealed-data template: keyedhash, no scheme, data supplied by us (no sensitiveDataOrigin). */
static void
tpm2_seal_template(TPM2B_PUBLIC *pub)
{
    memset(pub, 0, sizeof(*pub));
    pub->publicArea.type = TPM2_ALG_KEYEDHASH;
    pub->publicArea.nameAlg = TPM2_ALG_SHA256;
    pub->publicArea.objectAttributes = TPM2_SEAL_ATTRS;
    pub->publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
}

/* An existing object at the handle must be a storage key, or seal/unseal would misbehave. */
static int
tpm2_check_primary(struct tpm2 *t, ESYS_TR primary, struct err *err)
{
    TPM2B_PUBLIC *pub = NULL;
    TPMA_OBJECT need = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    TSS2_RC rc;
    int ok;

    rc = Esys_ReadPublic(t->esys, primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL,
                         NULL);
    if (rc != TSS2_RC_SUCCESS)
        return tpm2_fail(t, rc, "reading the storage primary", err);
    ok = (pub->publicArea.objectAttributes & need) == need &&
         (pub->publicArea.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) == 0;
    Esys_Free(pub);
    if (!ok)
        return err_set(err, ERR_EXISTS,
                       "tpm2: handle 0x%08x holds an object that is not a storage key", t->handle);
    return 0;
}

static int
tpm2_do_init(struct tpm2 *t, void *arg, struct err *err)
{
    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_PUBLIC tmpl;
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    ESYS_TR primary, persistent;
    TSS2_RC rc;

    switch (tpm2_lookup(t, &primary, err)) {
    case 0:
        return tpm2_check_primary(t, primary, err);
    case -1:
        return -1;
    }
    tpm2_srk_template(&tmpl);
    rc = Esys_CreatePrimary(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                            &sens, &tmpl, &outside, &pcrs, &primary, NULL, NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS)
        return tpm2_fail(t, rc, "creating the storage primary (owner hierarchy)", err);
    rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, t->handle, &persistent);
    Esys_FlushContext(t->esys, primary);
    /* Another process persisting it between our check and here is fine. */
    if (rc != TSS2_RC_SUCCESS && !tpm2_rc_is(rc, TPM2_RC_NV_DEFINED))
        return tpm2_fail(t, rc, "persisting the storage primary", err);
    if (rc == TSS2_RC_SUCCESS)
        t->primary = persistent;
    log_info("tpm2: storage primary persisted at 0x%08x", t->handle);
    return tpm2_primary(t, &primary, err);
}

/*
 * An HMAC session salted with the primary (ECDH), AES-128-CFB parameter encryption. The
 * salt makes the session key unknown to a bus observer even though the object's auth is
 * derivable from the (public) aad.
 */
static int
tpm2_session(struct tpm2 *t, ESYS_TR primary, TPMA_SESSION attrs, ESYS_TR *session, struct err *err)
{
    TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB};
    TSS2_RC rc;

    rc = Esys_StartAuthSession(t->esys, primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                               ESYS_TR_NONE, NULL, TPM2_SE_HMAC, &sym, TPM2_ALG_SHA256, session);
    if (rc != TSS2_RC_SUCCESS)
        return tpm2_fail(t, rc, "starting a salted session", err);
    rc = Esys_TRSess_SetAttributes(t->esys, *session, attrs, 0xff);
    if (rc != TSS2_RC_SUCCESS) {
        Esys_FlushContext(t->esys, *session);
        return tpm2_fail(t, rc, "setting session attributes", err);
    }
    return 0;
}

static void
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

/* Marshals the TPM object and encrypts secret under key into a new blob. */
static int
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
static int
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
static int
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

struct tpm2_seal_arg {
    const unsigned char *aad;
    size_t aad_len;
    const unsigned char *secret;
    size_t secret_len;
    unsigned char *blob;
    size_t blob_len;
};

/* Creates the sealed object; the key travels in inSensitive, encrypted by the session. */
static int
tpm2_create(struct tpm2 *t, TPM2B_SENSITIVE_CREATE *sens, TPM2B_PUBLIC **pub, TPM2B_PRIVATE **priv,
            struct err *err)
{
    TPM2B_PUBLIC tmpl;
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    ESYS_TR primary = ESYS_TR_NONE, session;
    TSS2_RC rc;

    if (tpm2_primary(t, &primary, err) < 0)
        return -1;
    if (tpm2_session(t, primary, TPMA_SESSION_CONTINUESESSION | TPMA_SESSION_DECRYPT, &session,
                     err) < 0)
        return -1;
    tpm2_seal_template(&tmpl);
    rc = Esys_Create(t->esys, primary, session, ESYS_TR_NONE, ESYS_TR_NONE, sens, &tmpl, &outside,
                     &pcrs, priv, pub, NULL, NULL, NULL);
    Esys_FlushContext(t->esys, session);
    if (rc != TSS2_RC_SUCCESS)
        return tpm2_fail(t, rc, "sealing", err);
    return 0;
}

static int
tpm2_do_seal(struct tpm2 *t, void *argp, struct err *err)
{
    struct tpm2_seal_arg *a = argp;
    struct secbuf *sb;
    TPM2B_SENSITIVE_CREATE *sens;
    TPM2B_PUBLIC *pub = NULL;
    TPM2B_PRIVATE *priv = NULL;
    int ret = -1;

    /* The sensitive area (the AES key) lives in locked memory, wiped on free. */
    if (!(sb = secbuf_new(sizeof(*sens))))
        return err_set(err, ERR_INTERNAL, "tpm2: cannot allocate locked memory");
    sens = (TPM2B_SENSITIVE_CREATE *)sb->data;
    tpm2_auth_of(a->aad, a->aad_len, &sens->sensitive.userAuth);
    sens->sensitive.data.size = TPM2_KEY_BYTES;
    if (util_random(sens->sensitive.data.buffer, TPM2_KEY_BYTES) < 0) {
        err_set(err, ERR_CRYPTO, "tpm2: no random bytes for the sealing key");
        goto out;
    }
    if (tpm2_create(t, sens, &pub, &priv, err) < 0)
        goto out;
    ret = tpm2_blob_seal(pub, priv, sens->sensitive.data.buffer, a->aad, a->aad_len, a->secret,
                         a->secret_len, &a->blob, &a->blob_len, err);
out:
    Esys_Free(pub);
    Esys_Free(priv);
    secbuf_free(sb);
    return ret;
}

struct tpm2_unseal_arg {
    const unsigned char *aad;
    size_t aad_len;
    const struct tpm2_blob *blob;
    struct secbuf *key; /* TPM2_KEY_BYTES on success */
    int stale;          /* failed in a kept session that may predate a TPM reset */
};

static int
tpm2_unseal_failed(struct tpm2 *t, TSS2_RC rc, struct err *err)
{
    if (tpm2_rc_is_integrity(rc)) {
        log_debug("tpm2: unseal refused by the TPM: %s", Tss2_RC_Decode(rc));
        return err_set(err, ERR_CRYPTO, "tpm2: unseal failed: integrity/auth check failed");
    }
    return tpm2_fail(t, rc, "unsealing", err);
}

/*
 * ESYS decrypts the Unseal response parameter in place in its command/response buffer,
 * so the plaintext key would stay in unlocked heap until the next large response. A
 * GetCapability whose response (83 bytes) covers the key's offsets (16..47) overwrites it.
 */
static void
tpm2_scrub(struct tpm2 *t)
{
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more;

    Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_TPM_PROPERTIES,
                       TPM2_PT_FIXED, 8, &more, &cap);
    Esys_Free(cap);
}

/*
 * Loads the object, sets its auth to SHA-256(aad) and unseals within a salted, encrypting
 * HMAC session. The session is kept for the next unseal (StartAuthSession with its salt
 * exchange is most of an unseal's cost): its nonces roll with every command, it is bound
 * to no object, and any failure flushes it so the next unseal starts a fresh one.
 */
static int
tpm2_do_unseal(struct tpm2 *t, void *argp, struct err *err)
{
    struct tpm2_unseal_arg *a = argp;
    TPM2B_SENSITIVE_DATA *data = NULL;
    TPM2B_AUTH auth;
    ESYS_TR primary = ESYS_TR_NONE, object = ESYS_TR_NONE;
    TSS2_RC rc;
    int ret = -1, kept;

    a->stale = 0;
    if (tpm2_primary(t, &primary, err) < 0)
        return -1;
    rc = Esys_Load(t->esys, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &a->blob->priv,
                   &a->blob->pub, &object);
    if (rc != TSS2_RC_SUCCESS)
        return tpm2_unseal_failed(t, rc, err);
    tpm2_auth_of(a->aad, a->aad_len, &auth);
    rc = Esys_TR_SetAuth(t->esys, object, &auth);
    if (rc != TSS2_RC_SUCCESS) {
        tpm2_fail(t, rc, "setting the object auth", err);
        goto out;
    }
    kept = t->unseal_session != ESYS_TR_NONE;
    if (!kept && tpm2_session(t, primary, TPMA_SESSION_CONTINUESESSION | TPMA_SESSION_ENCRYPT,
                              &t->unseal_session, err) < 0) {
        t->unseal_session = ESYS_TR_NONE;
        goto out;
    }
    rc = Esys_Unseal(t->esys, object, t->unseal_session, ESYS_TR_NONE, ESYS_TR_NONE, &data);
    if (rc != TSS2_RC_SUCCESS) {
        a->stale = kept && !tpm2_rc_is_integrity(rc);
        tpm2_unseal_failed(t, rc, err);
        goto out;
    }
    tpm2_scrub(t);
    if (data->size != TPM2_KEY_BYTES) {
        err_set(err, ERR_CRYPTO, "tpm2: unseal failed: sealed key has %u bytes", data->size);
        goto out;
    }
    secbuf_wipe(a->key);
    if (secbuf_append(a->key, data->buffer, data->size) < 0) {
        err_set(err, ERR_INTERNAL, "tpm2: unsealed key does not fit");
        goto out;
    }
    ret = 0;
out:
    if (data) {
        explicit_bzero(data, sizeof(*data));
        Esys_Free(data);
    }
    explicit_bzero(&auth, sizeof(auth));
    if (ret != 0 && !t->broken)
        tpm2_drop_session(t);
    Esys_FlushContext(t->esys, object);
    return ret;
}

static int
tpm2_do_health(struct tpm2 *t, void *arg, struct err *err)
{
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more;
    TSS2_RC rc;

    rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                            TPM2_CAP_TPM_PROPERTIES, TPM2_PT_MANUFACTURER, 1, &more, &cap);
    Esys_Free(cap);
    if (rc != TSS2_RC_SUCCESS)
        return tpm2_fail(t, rc, "health check", err);
    return 0;
}

static int
tpm2_open(struct hsm *h, struct err *err)
{
    struct tpm2 *t;
    uint32_t handle = h->cfg.tpm2_primary_handle;

    if (handle == 0)
        handle = HSM_TPM2_DEFAULT_PRIMARY;
    /* Owner-hierarchy persistent range (TPM 2.0 part 2, 2.3.1: 0x81000000-0x817fffff). */
    if (handle < 0x81000000u || handle > 0x817fffffu)
        return err_set(err, ERR_USAGE,
                       "tpm2: primary handle 0x%08x is not an owner persistent handle", handle);
    /* tpm2-tss logs to stderr by default; errors reach the user through struct err. */
    setenv("TSS2_LOG", "all+NONE", 0);
    if (!(t = calloc(1, sizeof(*t))))
        return err_set(err, ERR_INTERNAL, "tpm2: out of memory");
    t->handle = handle;
    t->primary = ESYS_TR_NONE;
    t->unseal_session = ESYS_TR_NONE;
    t->tcti_conf = h->cfg.tpm2_tcti && *h->cfg.tpm2_tcti ? h->cfg.tpm2_tcti : TPM2_DEFAULT_TCTI;
    if (tpm2_connect(t, err) < 0) {
        free(t);
        return -1;
    }
    h->priv = t;
    return 0;
}

static int
tpm2_init(struct hsm *h, struct err *err)
{
    return tpm2_run(h->priv, tpm2_do_init, NULL, err);
}

static int
tpm2_seal(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *secret,
          size_t secret_len, unsigned char **blob, size_t *blob_len, struct err *err)
{
    struct tpm2_seal_arg a = {aad, aad_len, secret, secret_len, NULL, 0};

    if ((!aad && aad_len) || (!secret && secret_len) || !blob || !blob_len)
        return err_set(err, ERR_USAGE, "tpm2: seal: missing argument");
    if (aad_len > TPM2_MAX_AAD)
        return err_set(err, ERR_LIMIT, "tpm2: aad of %zu bytes exceeds %d", aad_len, TPM2_MAX_AAD);
    if (secret_len > TPM2_MAX_SECRET)
        return err_set(err, ERR_LIMIT, "tpm2: secret of %zu bytes exceeds %d", secret_len,
                       TPM2_MAX_SECRET);
    if (tpm2_run(h->priv, tpm2_do_seal, &a, err) < 0)
        return -1;
    *blob = a.blob;
    *blob_len = a.blob_len;
    return 0;
}

static int
tpm2_unseal(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *blob,
            size_t blob_len, struct secbuf *out, struct err *err)
{
    struct tpm2_blob b;
    struct tpm2_unseal_arg a = {aad, aad_len, &b, NULL, 0};
    int ret = -1;

    if ((!aad && aad_len) || !out)
        return err_set(err, ERR_USAGE, "tpm2: unseal: missing argument");
    if (aad_len > TPM2_MAX_AAD)
        return err_set(err, ERR_LIMIT, "tpm2: aad of %zu bytes exceeds %d", aad_len, TPM2_MAX_AAD);
    /* Parse first: a malformed blob never reaches the TPM. */
    if (tpm2_blob_parse(blob, blob_len, &b, err) < 0)
        return -1;
    if (!(a.key = secbuf_new(TPM2_KEY_BYTES)))
        return err_set(err, ERR_INTERNAL, "tpm2: cannot allocate locked memory");
    /* A kept session refused for other reasons than the object's auth is retried once
     * in a fresh session (tpm2_do_unseal flushed it): a TPM reset behind a resource
     * manager invalidates sessions without breaking the connection. */
    if (tpm2_run(h->priv, tpm2_do_unseal, &a, err) == 0 ||
        (a.stale && tpm2_run(h->priv, tpm2_do_unseal, &a, err) == 0))
        ret = tpm2_blob_open(&b, a.key->data, aad, aad_len, out, err);
    secbuf_free(a.key);
    return ret;
}

static int
tpm2_health(struct hsm *h, struct err *err)
{
    return tpm2_run(h->priv, tpm2_do_health, NULL, err);
}

static void
tpm2_close(struct hsm *h)
{
    struct tpm2 *t = h->priv;

    if (!t)
        return;
    tpm2_disconnect(t);
    free(t);
    h->priv = NULL;
}

const struct hsm_ops hsm_tpm2_ops = {
    .name = "tpm2",
    .open = tpm2_open,
    .init = tpm2_init,
    .seal = tpm2_seal,
    .unseal = tpm2_unseal,
    .health = tpm2_health,
    .close = tpm2_close,
};
