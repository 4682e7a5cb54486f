/*
 * TPM 2.0 backend (tpm2-tss ESAPI over tctildr). A random AES-256 key is sealed in a
 * keyedhash object under a persistent storage primary, and the secret itself is
 * AES-256-GCM encrypted in software with that key (envelope: TPM2B_SENSITIVE_DATA holds
 * only 128 bytes). The object's authValue is SHA-256(aad), so a renamed blob cannot be
 * unsealed, and the key only leaves the TPM inside a salted, response-encrypting session.
 */
#include <stdlib.h>
#include <string.h>
#include <tss2/tss2_rc.h>

#include "common/log.h"
#include "common/util.h"
#include "hsm/tpm2_internal.h"

#define TPM2_DEFAULT_TCTI "device:/dev/tpmrm0"

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
    if (!h->cfg.tpm2_primary_name_file || !*h->cfg.tpm2_primary_name_file)
        return err_set(err, ERR_USAGE, "tpm2: no file to record the storage primary's name in");
    if (!(t = calloc(1, sizeof(*t))))
        return err_set(err, ERR_INTERNAL, "tpm2: out of memory");
    t->handle = handle;
    t->primary = ESYS_TR_NONE;
    t->unseal_session = ESYS_TR_NONE;
    t->name_file = h->cfg.tpm2_primary_name_file;
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
