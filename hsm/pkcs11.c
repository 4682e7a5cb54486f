/*
 * PKCS#11 backend through p11-kit: one logged-in read-write session on the token named by
 * an RFC 7512 URI, and an AES-256 key (sensitive, never extractable) that seals secrets
 * with CKM_AES_GCM. Blob = 12-byte IV || ciphertext || 16-byte tag; the caller's AAD binds
 * the name. A lost session or token is reconnected (module finalised and reloaded) once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include "common/log.h"
#include "common/util.h"
#include "hsm/hsm_internal.h"

#define P11_MAX_SLOTS 64     /* slots scanned for the token */
#define P11_MAX_PIN 256      /* bytes of PIN read from env or file */
#define P11_IV_BYTES 12      /* 96-bit GCM IV (NIST SP 800-38D 8.2) */
#define P11_TAG_BYTES 16     /* 128-bit tag */
#define P11_MAX_SECRET 65536 /* hard bound; the vault refuses more than 8 KiB anyway */
#define P11_KEY_BYTES 32     /* AES-256 */
#define P11_DEFAULT_LABEL "airlock-vault"

struct p11 {
    CK_FUNCTION_LIST *mod; /* loaded and initialised, or NULL */
    CK_SESSION_HANDLE session;
    int have_session; /* session open and logged in */
    CK_OBJECT_HANDLE key;
    int have_key;
    int broken; /* last call hit a session/device error: reconnect first */
    P11KitUri *uri;
    char token_name[80]; /* for messages: the URI's token label, or the URI */
    const char *module_path, *pin_ref, *label;
};

typedef int (*p11_op_fn)(struct p11 *p, void *arg, struct err *err);

static const char *
p11_rv_name(CK_RV rv)
{
    static const struct {
        CK_RV rv;
        const char *name;
    } names[] = {
        {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
        {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
        {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
        {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
        {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
        {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
        {CKR_ENCRYPTED_DATA_INVALID, "CKR_ENCRYPTED_DATA_INVALID"},
        {CKR_ENCRYPTED_DATA_LEN_RANGE, "CKR_ENCRYPTED_DATA_LEN_RANGE"},
        {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
        {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
        {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"},
        {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
        {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
        {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
        {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
        {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED"},
        {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
        {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"},
        {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
        {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"},
        {CKR_TOKEN_WRITE_PROTECTED, "CKR_TOKEN_WRITE_PROTECTED"},
        {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
        {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
        {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
    };
    static __thread char other[32];
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].rv == rv)
            return names[i].name;
    snprintf(other, sizeof(other), "CKR 0x%08lx", (unsigned long)rv);
    return other;
}

/* Errors that mean the session, login or token is gone rather than the operation refused. */
static int
p11_rv_is_lost(CK_RV rv)
{
    switch (rv) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_DEVICE_REMOVED:
    case CKR_DEVICE_ERROR:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
    case CKR_KEY_HANDLE_INVALID:
    case CKR_OBJECT_HANDLE_INVALID:
        return 1;
    }
    return 0;
}

static int
p11_fail(struct p11 *p, CK_RV rv, const char *what, struct err *err)
{
    if (p11_rv_is_lost(rv))
        p->broken = 1;
    return err_set(err, ERR_TOKEN, "pkcs11: %s: %s", what, p11_rv_name(rv));
}

static void
p11_disconnect(struct p11 *p)
{
    if (p->mod != NULL && p->have_session)
        (void)p->mod->C_CloseSession(p->session);
    if (p->mod != NULL) {
        /* Finalising makes the module rescan its tokens on the next load (SoftHSM reads
         * its token directory in C_Initialize). */
        (void)p11_kit_module_finalize(p->mod);
        p11_kit_module_release(p->mod);
    }
    p->mod = NULL;
    p->have_session = 0;
    p->have_key = 0;
    p->broken = 0;
}

static int
p11_load(struct p11 *p, struct err *err)
{
    const char *why;
    CK_RV rv;

    if ((p->mod = p11_kit_module_load(p->module_path, 0)) == NULL) {
        why = p11_kit_message();
        return err_set(err, ERR_TOKEN, "pkcs11: module load failed: %s: %s", p->module_path,
                       why != NULL ? why : "unknown error");
    }
    if ((rv = p11_kit_module_initialize(p->mod)) != CKR_OK) {
        p11_kit_module_release(p->mod);
        p->mod = NULL;
        return err_set(err, ERR_TOKEN, "pkcs11: module initialize failed: %s: %s", p->module_path,
                       p11_rv_name(rv));
    }
    return 0;
}

static int
p11_find_slot(struct p11 *p, CK_SLOT_ID *out, struct err *err)
{
    CK_SLOT_ID slots[P11_MAX_SLOTS];
    CK_ULONG n = P11_MAX_SLOTS, i;
    CK_TOKEN_INFO info;
    CK_RV rv;

    /* CKR_BUFFER_TOO_SMALL leaves the array unfilled (PKCS#11 v2.40 5.2): no partial scan. */
    if ((rv = p->mod->C_GetSlotList(CK_TRUE, slots, &n)) == CKR_BUFFER_TOO_SMALL)
        return err_set(err, ERR_TOKEN, "pkcs11: module has more than %d slots", P11_MAX_SLOTS);
    if (rv != CKR_OK)
        return p11_fail(p, rv, "slot list", err);
    if (n > P11_MAX_SLOTS) /* a module that overstates what it wrote */
        n = P11_MAX_SLOTS;
    for (i = 0; i < n; i++) {
        if (p->mod->C_GetTokenInfo(slots[i], &info) != CKR_OK)
            continue;
        if (p11_kit_uri_match_token_info(p->uri, &info)) {
            *out = slots[i];
            return 0;
        }
    }
    return err_set(err, ERR_TOKEN, "pkcs11: token \"%s\" not found", p->token_name);
}

/* PIN from the file's first line. The file must not be readable by group or others. */
static int
p11_read_pin_file(const char *path, struct secbuf *sb, struct err *err)
{
    struct stat st;
    ssize_t r;
    size_t n = 0;
    int fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1 || fstat(fd, &st) == -1) {
        err_set(err, ERR_IO, "pkcs11: pin file %s: %s", path, strerror(errno));
        if (fd != -1)
            close(fd);
        return -1;
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, ERR_USAGE,
                       "pkcs11: pin file %s must be a regular file readable only by its owner",
                       path);
    }
    /* read(2) straight into locked memory: no stdio buffer keeps a copy. */
    do
        r = read(fd, sb->data, sb->cap);
    while (r == -1 && errno == EINTR);
    close(fd);
    if (r < 0)
        return err_set(err, ERR_IO, "pkcs11: pin file %s: %s", path, strerror(errno));
    while (n < (size_t)r && sb->data[n] != '\n' && sb->data[n] != '\r' && sb->data[n] != '\0')
        n++;
    if (n == sb->cap)
        return err_set(err, ERR_LIMIT, "pkcs11: pin file %s: first line too long", path);
    sb->len = n;
    return 0;
}

/* PIN from "env:NAME" or "file:PATH" into a new secbuf the caller frees (wipes). */
static int
p11_read_pin(const char *ref, struct secbuf **out, struct err *err)
{
    struct secbuf *sb;
    const char *v;
    int rc = 0;

    if (ref == NULL || (strncmp(ref, "env:", 4) != 0 && strncmp(ref, "file:", 5) != 0))
        return err_set(err, ERR_USAGE, "pkcs11: pin must be \"env:NAME\" or \"file:PATH\"");
    if ((sb = secbuf_new(P11_MAX_PIN)) == NULL)
        return err_set(err, ERR_INTERNAL, "pkcs11: cannot allocate locked memory");
    if (strncmp(ref, "file:", 5) == 0)
        rc = p11_read_pin_file(ref + 5, sb, err);
    else if ((v = getenv(ref + 4)) == NULL)
        rc = err_set(err, ERR_USAGE, "pkcs11: pin: environment variable %s is not set", ref + 4);
    else if (secbuf_append(sb, v, strlen(v)) == -1)
        rc = err_set(err, ERR_LIMIT, "pkcs11: pin: %s is too long", ref + 4);
    if (rc == -1) {
        secbuf_free(sb);
        return -1;
    }
    *out = sb;
    return 0;
}

static int
p11_login(struct p11 *p, struct err *err)
{
    struct secbuf *pin = NULL;
    CK_RV rv;

    if (p11_read_pin(p->pin_ref, &pin, err) == -1)
        return -1;
    rv = p->mod->C_Login(p->session, CKU_USER, pin->data, pin->len);
    secbuf_free(pin); /* wipes */
    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
        return 0;
    if (rv == CKR_PIN_INCORRECT)
        return err_set(err, ERR_TOKEN, "pkcs11: login failed: wrong PIN");
    if (rv == CKR_PIN_LOCKED)
        return err_set(err, ERR_TOKEN, "pkcs11: login failed: PIN locked");
    return p11_fail(p, rv, "login failed", err);
}

/* Loads the module, finds the token, opens a session and logs in. All or nothing. */
static int
p11_connect(struct p11 *p, struct err *err)
{
    CK_SLOT_ID slot = 0;
    CK_RV rv;

    if (p11_load(p, err) == -1)
        goto fail;
    if (p11_find_slot(p, &slot, err) == -1)
        goto fail;
    rv = p->mod->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &p->session);
    if (rv != CKR_OK) {
        p11_fail(p, rv, "open session", err);
        goto fail;
    }
    p->have_session = 1;
    if (p11_login(p, err) == -1)
        goto fail;
    p->broken = 0;
    return 0;
fail:
    p11_disconnect(p);
    return -1;
}

/*
 * Runs fn, reconnecting first when the last call lost the token, and once more after a
 * reconnect when fn itself hits a lost session. Errors from fn are final otherwise.
 */
static int
p11_run(struct p11 *p, p11_op_fn fn, void *arg, struct err *err)
{
    struct err e;
    int attempt;

    err_clear(&e);
    for (attempt = 0; attempt < 2; attempt++) {
        if (p->mod == NULL || !p->have_session || p->broken) {
            if (p->mod != NULL)
                log_info("pkcs11: reconnecting to token \"%s\"", p->token_name);
            p11_disconnect(p);
            if (p11_connect(p, &e) == -1)
                break;
        }
        if (fn(p, arg, &e) == 0)
            return 0;
        if (!p->broken)
            break;
        log_warn("%s", e.msg);
    }
    if (err != NULL)
        *err = e;
    return -1;
}

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
