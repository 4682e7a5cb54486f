/*
 * PKCS#11 backend through p11-kit: one logged-in read-write session on the token named by
 * an RFC 7512 URI, and an AES-256 key (sensitive, never extractable) that seals secrets
 * with CKM_AES_GCM. Blob = 12-byte IV || ciphertext || 16-byte tag; the caller's AAD binds
 * the name. A lost session or token is reconnected (module finalised and reloaded) once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "hsm/pkcs11_internal.h"

#define P11_IV_BYTES 12      /* 96-bit GCM IV (NIST SP 800-38D 8.2) */
#define P11_TAG_BYTES 16     /* 128-bit tag */
#define P11_MAX_SECRET 65536 /* hard bound; the vault refuses more than 8 KiB anyway */
#define P11_KEY_BYTES 32     /* AES-256 */
#define P11_DEFAULT_LABEL "airlock-vault"

static int
p11_key_template_ok(struct p11 *p, CK_OBJECT_HANDLE key)
{
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE;
    CK_ULONG len = 0;
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
        {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
        {CKA_VALUE_LEN, &len, sizeof(len)},
    };

    if (p->mod->C_GetAttributeValue(p->session, key, a, 3) != CKR_OK)
        return 0;
    return sensitive == CK_TRUE && extractable == CK_FALSE && len == P11_KEY_BYTES;
}

/* *found is 0 or 1; more than one key with the label is refused (which one would seal?). */
static int
p11_find_key(struct p11 *p, int *found, struct err *err)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_LABEL, (void *)p->label, strlen(p->label)},
    };
    CK_OBJECT_HANDLE objs[2];
    CK_ULONG n = 0;
    CK_RV rv;

    if ((rv = p->mod->C_FindObjectsInit(p->session, tmpl, 3)) != CKR_OK)
        return p11_fail(p, rv, "find key", err);
    rv = p->mod->C_FindObjects(p->session, objs, 2, &n);
    (void)p->mod->C_FindObjectsFinal(p->session);
    if (rv != CKR_OK)
        return p11_fail(p, rv, "find key", err);
    *found = n > 0;
    if (n > 1)
        return err_set(err, ERR_TOKEN, "pkcs11: more than one key labelled \"%s\"", p->label);
    if (n == 1 && !p11_key_template_ok(p, objs[0]))
        return err_set(err, ERR_TOKEN,
                       "pkcs11: key \"%s\" is not a sensitive, non-extractable AES-256 key",
                       p->label);
    if (n == 1) {
        p->key = objs[0];
        p->have_key = 1;
    }
    return 0;
}

static int
p11_need_key(struct p11 *p, struct err *err)
{
    int found = 0;

    if (p->have_key)
        return 0;
    if (p11_find_key(p, &found, err) == -1)
        return -1;
    if (!found)
        return err_set(err, ERR_TOKEN, "pkcs11: key \"%s\" not found (run airlock init)", p->label);
    return 0;
}

static int
p11_do_init(struct p11 *p, void *arg, struct err *err)
{
    CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ULONG len = P11_KEY_BYTES;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_LABEL, (void *)p->label, strlen(p->label)},
        {CKA_VALUE_LEN, &len, sizeof(len)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_ENCRYPT, &yes, sizeof(yes)},
        {CKA_DECRYPT, &yes, sizeof(yes)},
    };
    CK_OBJECT_HANDLE key;
    CK_RV rv;
    int found = 0;

    if (p11_find_key(p, &found, err) == -1)
        return -1;
    if (found)
        return 0;
    rv = p->mod->C_GenerateKey(p->session, &mech, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &key);
    if (rv != CKR_OK)
        return p11_fail(p, rv, "generate key", err);
    p->key = key;
    p->have_key = 1;
    log_info("pkcs11: generated AES-256 key \"%s\" on token \"%s\"", p->label, p->token_name);
    return 0;
}

struct p11_seal_arg {
    const unsigned char *aad, *in;
    size_t aad_len, in_len;
    unsigned char *blob; /* seal: out */
    size_t blob_len;
    struct secbuf *plain; /* unseal: the caller's buffer (cap >= in_len) */
};

static void
p11_gcm(CK_GCM_PARAMS *gcm, CK_MECHANISM *mech, unsigned char *iv, const struct p11_seal_arg *a)
{
    memset(gcm, 0, sizeof(*gcm));
    gcm->pIv = iv;
    gcm->ulIvLen = P11_IV_BYTES;
    gcm->ulIvBits = P11_IV_BYTES * 8UL;
    gcm->pAAD = (CK_BYTE_PTR)a->aad;
    gcm->ulAADLen = a->aad_len;
    gcm->ulTagBits = P11_TAG_BYTES * 8UL;
    mech->mechanism = CKM_AES_GCM;
    mech->pParameter = gcm;
    mech->ulParameterLen = sizeof(*gcm);
}

static int
p11_do_seal(struct p11 *p, void *argp, struct err *err)
{
    struct p11_seal_arg *a = argp;
    CK_GCM_PARAMS gcm;
    CK_MECHANISM mech;
    unsigned char *blob;
    CK_ULONG ct_len = a->in_len + P11_TAG_BYTES;
    CK_RV rv;

    if (p11_need_key(p, err) == -1)
        return -1;
    /* Allocate before C_EncryptInit so nothing can fail while an operation is active. */
    if ((blob = malloc(P11_IV_BYTES + ct_len)) == NULL)
        return err_set(err, ERR_INTERNAL, "pkcs11: out of memory");
    if (util_random(blob, P11_IV_BYTES) == -1) {
        free(blob);
        return err_set(err, ERR_INTERNAL, "pkcs11: no randomness for the iv");
    }
    p11_gcm(&gcm, &mech, blob, a);
    if ((rv = p->mod->C_EncryptInit(p->session, &mech, p->key)) != CKR_OK) {
        free(blob);
        return p11_fail(p, rv, "encrypt", err);
    }
    rv = p->mod->C_Encrypt(p->session, (CK_BYTE_PTR)a->in, a->in_len, blob + P11_IV_BYTES, &ct_len);
    if (rv != CKR_OK || ct_len != a->in_len + P11_TAG_BYTES) {
        free(blob);
        if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_OK)
            p->broken = 1; /* the operation may still be active: start a fresh session */
        return p11_fail(p, rv == CKR_OK ? CKR_FUNCTION_FAILED : rv, "encrypt", err);
    }
    a->blob = blob;
    a->blob_len = P11_IV_BYTES + ct_len;
    return 0;
}

/* A decrypt failure is an integrity failure only if the session is still sound. */
static int
p11_decrypt_failed(struct p11 *p, CK_RV rv, struct err *err)
{
    CK_SESSION_INFO info;

    if (p11_rv_is_lost(rv))
        return p11_fail(p, rv, "decrypt", err);
    if (p->mod->C_GetSessionInfo(p->session, &info) != CKR_OK) {
        p->broken = 1;
        return p11_fail(p, rv, "decrypt", err);
    }
    return err_set(err, ERR_CRYPTO, "pkcs11: integrity check failed");
}

static int
p11_do_unseal(struct p11 *p, void *argp, struct err *err)
{
    struct p11_seal_arg *a = argp;
    const unsigned char *ct = a->in + P11_IV_BYTES;
    CK_ULONG ct_len = a->in_len - P11_IV_BYTES, out_len;
    struct secbuf *sb = a->plain;
    CK_GCM_PARAMS gcm;
    CK_MECHANISM mech;
    CK_RV rv;

    if (p11_need_key(p, err) == -1)
        return -1;
    /* The plaintext is never longer than the ciphertext and the caller's buffer holds at
     * least the whole blob, so one call suffices: a module asking for more is broken. */
    p11_gcm(&gcm, &mech, (unsigned char *)a->in, a);
    if ((rv = p->mod->C_DecryptInit(p->session, &mech, p->key)) != CKR_OK)
        return p11_fail(p, rv, "decrypt", err);
    out_len = sb->cap;
    rv = p->mod->C_Decrypt(p->session, (CK_BYTE_PTR)ct, ct_len, sb->data, &out_len);
    if (rv != CKR_OK || out_len > ct_len) {
        secbuf_wipe(sb);
        if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_OK)
            p->broken = 1; /* the operation may still be active: start a fresh session */
        return p11_decrypt_failed(p, rv == CKR_OK ? CKR_FUNCTION_FAILED : rv, err);
    }
    sb->len = out_len;
    return 0;
}

/*
 * Session, token and key must all answer; any failure here counts as a lost token (SoftHSM
 * answers CKR_GENERAL_ERROR for a token whose directory vanished), so p11_run reconnects
 * and reports what the fresh connection finds.
 */
static int
p11_do_health(struct p11 *p, void *arg, struct err *err)
{
    CK_SESSION_INFO info;
    CK_TOKEN_INFO tinfo;
    CK_OBJECT_CLASS c;
    CK_ATTRIBUTE cls = {CKA_CLASS, &c, sizeof(c)};
    CK_RV rv;

    if ((rv = p->mod->C_GetSessionInfo(p->session, &info)) != CKR_OK ||
        (rv = p->mod->C_GetTokenInfo(info.slotID, &tinfo)) != CKR_OK ||
        (p->have_key &&
         (rv = p->mod->C_GetAttributeValue(p->session, p->key, &cls, 1)) != CKR_OK)) {
        p->broken = 1;
        return err_set(err, ERR_TOKEN, "pkcs11: health check: %s", p11_rv_name(rv));
    }
    if (info.state != CKS_RW_USER_FUNCTIONS) {
        p->broken = 1;
        return err_set(err, ERR_TOKEN, "pkcs11: session is no longer logged in");
    }
    return 0;
}

/* "pkcs11:token=airlock" → airlock, for messages; the whole URI when it names no label. */
static void
p11_token_name(struct p11 *p, const char *uri)
{
    CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(p->uri);
    size_t n = sizeof(ti->label);

    while (n > 0 && (ti->label[n - 1] == ' ' || ti->label[n - 1] == '\0'))
        n--;
    if (n == 0)
        util_strlcpy(p->token_name, uri, sizeof(p->token_name));
    else
        snprintf(p->token_name, sizeof(p->token_name), "%.*s", (int)n, (const char *)ti->label);
}

static void
p11_free(struct p11 *p)
{
    if (p == NULL)
        return;
    p11_disconnect(p);
    if (p->uri != NULL)
        p11_kit_uri_free(p->uri);
    free(p);
}

static int
p11_open(struct hsm *h, struct err *err)
{
    const struct hsm_config *c = &h->cfg;
    struct p11 *p;

    if (c->pkcs11_module == NULL || *c->pkcs11_module == '\0')
        return err_set(err, ERR_USAGE, "pkcs11: no module configured");
    if (c->pkcs11_token_uri == NULL || c->pkcs11_pin == NULL)
        return err_set(err, ERR_USAGE, "pkcs11: token uri and pin must be configured");
    if ((p = calloc(1, sizeof(*p))) == NULL || (p->uri = p11_kit_uri_new()) == NULL) {
        free(p);
        return err_set(err, ERR_INTERNAL, "pkcs11: out of memory");
    }
    if (p11_kit_uri_parse(c->pkcs11_token_uri, P11_KIT_URI_FOR_TOKEN, p->uri) != P11_KIT_URI_OK) {
        p11_free(p);
        return err_set(err, ERR_USAGE, "pkcs11: bad token uri \"%s\"", c->pkcs11_token_uri);
    }
    p11_token_name(p, c->pkcs11_token_uri);
    p->module_path = c->pkcs11_module;
    p->pin_ref = c->pkcs11_pin;
    p->label =
        c->pkcs11_key_label && *c->pkcs11_key_label ? c->pkcs11_key_label : P11_DEFAULT_LABEL;
    if (p11_connect(p, err) == -1) {
        p11_free(p);
        return -1;
    }
    h->priv = p;
    return 0;
}

static int
p11_init(struct hsm *h, struct err *err)
{
    return p11_run(h->priv, p11_do_init, NULL, err);
}

static int
p11_seal(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *secret,
         size_t secret_len, unsigned char **blob, size_t *blob_len, struct err *err)
{
    struct p11_seal_arg a = {aad, secret, aad_len, secret_len, NULL, 0, NULL};

    if ((aad == NULL && aad_len > 0) || (secret == NULL && secret_len > 0))
        return err_set(err, ERR_USAGE, "pkcs11: seal: missing argument");
    if (secret_len > P11_MAX_SECRET)
        return err_set(err, ERR_LIMIT, "pkcs11: secret of %zu bytes exceeds %d", secret_len,
                       P11_MAX_SECRET);
    if (p11_run(h->priv, p11_do_seal, &a, err) == -1)
        return -1;
    *blob = a.blob;
    *blob_len = a.blob_len;
    return 0;
}

static int
p11_unseal(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *blob,
           size_t blob_len, struct secbuf *out, struct err *err)
{
    struct p11_seal_arg a = {aad, blob, aad_len, blob_len, NULL, 0, out};

    if (aad == NULL && aad_len > 0)
        return err_set(err, ERR_USAGE, "pkcs11: unseal: missing argument");
    /* Shape checks before the token sees anything. */
    if (blob_len < P11_IV_BYTES + P11_TAG_BYTES ||
        blob_len > P11_IV_BYTES + P11_MAX_SECRET + P11_TAG_BYTES)
        return err_set(err, ERR_CRYPTO, "pkcs11: integrity check failed: blob of %zu bytes",
                       blob_len);
    return p11_run(h->priv, p11_do_unseal, &a, err);
}

static int
p11_health(struct hsm *h, struct err *err)
{
    return p11_run(h->priv, p11_do_health, NULL, err);
}

static void
p11_close(struct hsm *h)
{
    p11_free(h->priv);
    h->priv = NULL;
}

const struct hsm_ops hsm_pkcs11_ops = {
    .name = "pkcs11",
    .open = p11_open,
    .init = p11_init,
    .seal = p11_seal,
    .unseal = p11_unseal,
    .health = p11_health,
    .close = p11_close,
};
