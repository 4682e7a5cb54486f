/*
 * The storage primary: an ECC P-256 SRK persisted at the configured owner handle, created
 * by airlock init when absent. Sealed objects are its children, and it is the key every
 * session's salt is encrypted to.
 */
#include <string.h>

#include "common/log.h"
#include "hsm/tpm2_internal.h"

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

int
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

int
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
