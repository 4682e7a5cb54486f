/*
 * The storage primary: an ECC P-256 SRK persisted at the configured owner handle, created
 * by airlock init when absent. Sealed objects are its children, and it is the key every
 * session's salt is encrypted to, so its name is recorded at init (a file next to the
 * blobs) and every connection checks the primary against that record before using it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "hsm/tpm2_internal.h"

#define TPM2_NAME_FILE_MAX 256 /* the record: hex of a TPM2B_NAME (at most 2 + 64 bytes) */

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

/*
 * The recorded name, as tpm2_readpublic prints it: hex of nameAlg | digest, one line.
 * 0 read, 1 no record, -1 unreadable or malformed.
 */
static int
tpm2_record_read(const struct tpm2 *t, TPM2B_NAME *name, struct err *err)
{
    size_t len = 0, n;
    char *text = util_read_file(t->name_file, TPM2_NAME_FILE_MAX, &len);
    int ok;

    if (text == NULL && errno == ENOENT)
        return 1;
    if (text == NULL)
        return err_set(err, ERR_TOKEN, "tpm2: storage primary record %s: %s", t->name_file,
                       strerror(errno));
    n = strcspn(text, "\r\n");
    ok = strspn(text + n, "\r\n") == len - n; /* one line, then nothing */
    text[n] = '\0';
    ok = ok && n % 2 == 0 && n >= 4 && n / 2 <= sizeof(name->name) &&
         util_hex_decode(text, name->name, n / 2) == 0;
    name->size = ok ? (UINT16)(n / 2) : 0;
    free(text);
    if (!ok)
        return err_set(err, ERR_TOKEN, "tpm2: storage primary record %s is malformed",
                       t->name_file);
    return 0;
}

static int
tpm2_record_write(const struct tpm2 *t, const TPM2B_NAME *name, struct err *err)
{
    char text[2 * sizeof(name->name) + 2];

    util_hex_encode(name->name, name->size, text);
    text[2 * name->size] = '\n';
    if (util_write_file_atomic(t->name_file, text, 2 * (size_t)name->size + 1, 0600) == -1)
        return err_set(err, ERR_IO, "tpm2: cannot record the storage primary in %s: %s",
                       t->name_file, strerror(errno));
    log_info("tpm2: storage primary 0x%08x recorded in %s", t->handle, t->name_file);
    return 0;
}

/*
 * Authenticates the primary before its key salts a session: an active attacker on the bus
 * could answer ReadPublic with a key of their own and read every salt. Esys_TR_GetName
 * hashes the public area ESYS stored (the one StartAuthSession encrypts the salt to), not
 * the name the TPM claimed, so comparing it with the name recorded at init pins that key.
 * With record set (airlock init), a missing record is written instead.
 */
static int
tpm2_authenticate(struct tpm2 *t, ESYS_TR primary, int record, struct err *err)
{
    TPM2B_NAME *name = NULL, want;
    TSS2_RC rc;
    int r;

    rc = Esys_TR_GetName(t->esys, primary, &name);
    if (rc != TSS2_RC_SUCCESS)
        return tpm2_fail(t, rc, "naming the storage primary", err);
    r = tpm2_record_read(t, &want, err);
    if (r == 1 && record)
        r = tpm2_record_write(t, name, err);
    else if (r == 1)
        r = err_set(err, ERR_TOKEN,
                    "tpm2: no storage primary recorded in %s (run airlock init to record the "
                    "one at 0x%08x)",
                    t->name_file, t->handle);
    else if (r == 0 &&
             (name->size != want.size || !util_ct_equal(name->name, want.name, want.size)))
        r = err_set(err, ERR_TOKEN,
                    "tpm2: storage primary at 0x%08x does not match the one recorded at init in %s",
                    t->handle, t->name_file);
    Esys_Free(name);
    return r;
}

/*
 * Resolves the persistent storage primary: 0 found, 1 absent, -1 error. Once per
 * connection: init checks it is a storage key and records it if nothing is recorded,
 * everything else authenticates it against the record. Only an accepted handle is kept.
 */
static int
tpm2_lookup(struct tpm2 *t, int init, ESYS_TR *out, struct err *err)
{
    ESYS_TR primary = ESYS_TR_NONE;
    TSS2_RC rc;

    if (t->primary == ESYS_TR_NONE) {
        rc = Esys_TR_FromTPMPublic(t->esys, t->handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   &primary);
        if (rc != TSS2_RC_SUCCESS) {
            if (tpm2_rc_is(rc, TPM2_RC_HANDLE))
                return 1;
            return tpm2_fail(t, rc, "reading the storage primary", err);
        }
        if ((init && tpm2_check_primary(t, primary, err) < 0) ||
            tpm2_authenticate(t, primary, init, err) < 0) {
            Esys_TR_Close(t->esys, &primary);
            return -1;
        }
        t->primary = primary;
    }
    *out = t->primary;
    return 0;
}

int
tpm2_primary(struct tpm2 *t, ESYS_TR *out, struct err *err)
{
    int r = tpm2_lookup(t, 0, out, err);

    if (r == 1)
        return err_set(err, ERR_TOKEN, "tpm2: storage primary 0x%08x missing (run airlock init)",
                       t->handle);
    return r;
}

int
tpm2_do_init(struct tpm2 *t, void *arg, struct err *err)
{
    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_PUBLIC tmpl;
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    ESYS_TR primary, persistent;
    TSS2_RC rc;
    int r;

    /* Forget this connection's handle: init checks and records afresh (the record may
     * have been removed since, after a TPM clear). */
    if (t->primary != ESYS_TR_NONE)
        Esys_TR_Close(t->esys, &t->primary);
    t->primary = ESYS_TR_NONE;
    switch (tpm2_lookup(t, 1, &primary, err)) {
    case 0:
        return 0;
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
    if (rc == TSS2_RC_SUCCESS) {
        Esys_TR_Close(t->esys, &persistent); /* looked up again below, to be recorded */
        log_info("tpm2: storage primary persisted at 0x%08x", t->handle);
    }
    if ((r = tpm2_lookup(t, 1, &primary, err)) == 1)
        return err_set(err, ERR_TOKEN, "tpm2: storage primary 0x%08x vanished after persisting",
                       t->handle);
    return r;
}
