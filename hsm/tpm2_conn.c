/*
 * TPM 2.0 connection: the TCTI and ESAPI context (Startup tolerated when firmware did it),
 * classification of response codes into "the TPM is gone" and "the TPM refused", the
 * reconnect-once runner, and the salted, encrypting HMAC sessions the secrets travel in.
 */
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "common/log.h"
#include "hsm/tpm2_internal.h"

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

int
tpm2_rc_is(TSS2_RC rc, TSS2_RC want)
{
    if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER || !(rc & TPM2_RC_FMT1))
        return 0;
    return (rc & (TPM2_RC_FMT1 | 0x3fu)) == want;
}

int
tpm2_rc_is_integrity(TSS2_RC rc)
{
    return (rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && (rc & TPM2_RC_FMT1);
}

int
tpm2_fail(struct tpm2 *t, TSS2_RC rc, const char *what, struct err *err)
{
    if (tpm2_rc_is_transport(rc)) {
        t->broken = 1;
        return err_set(err, ERR_TOKEN, "tpm2: %s: lost the TPM (tcti \"%s\"): %s", what,
                       t->tcti_conf, Tss2_RC_Decode(rc));
    }
    return err_set(err, ERR_TOKEN, "tpm2: %s: %s", what, Tss2_RC_Decode(rc));
}

void
tpm2_drop_session(struct tpm2 *t)
{
    if (t->esys && t->unseal_session != ESYS_TR_NONE)
        Esys_FlushContext(t->esys, t->unseal_session);
    t->unseal_session = ESYS_TR_NONE;
}

void
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

int
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

int
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

int
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
