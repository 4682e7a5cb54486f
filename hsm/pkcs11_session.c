/*
 * PKCS#11 connection: loads the module through p11-kit, finds the token named by the RFC
 * 7512 URI, opens one read-write session and logs in with the PIN from "env:NAME" or
 * "file:PATH" (read into locked memory). p11_run reconnects once when the token was lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "hsm/pkcs11_internal.h"

const char *
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

int
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

int
p11_fail(struct p11 *p, CK_RV rv, const char *what, struct err *err)
{
    if (p11_rv_is_lost(rv))
        p->broken = 1;
    return err_set(err, ERR_TOKEN, "pkcs11: %s: %s", what, p11_rv_name(rv));
}

void
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

int
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

int
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
