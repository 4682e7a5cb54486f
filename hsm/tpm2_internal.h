/*
 * Private to the TPM 2.0 backend, shared by tpm2.c (the hsm ops: seal, unseal, health),
 * tpm2_conn.c (connection, reconnects, salted sessions), tpm2_primary.c (the storage
 * primary) and tpm2_blob.c (the blob format and its software AES-256-GCM half).
 */
#ifndef AIRLOCK_HSM_TPM2_INTERNAL_H
#define AIRLOCK_HSM_TPM2_INTERNAL_H

#include <tss2/tss2_esys.h>

#include "hsm/hsm_internal.h"

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
    const char *name_file; /* the primary's name recorded at init (hsm_config) */
};

typedef int (*tpm2_op_fn)(struct tpm2 *t, void *arg, struct err *err);

/* tpm2_conn.c */
/* Format-one TPM response code rc (parameter/handle/session number stripped) equals want. */
int tpm2_rc_is(TSS2_RC rc, TSS2_RC want);
/* A TPM-side refusal of the blob or its auth (not a transport or resource problem). */
int tpm2_rc_is_integrity(TSS2_RC rc);
/* Sets err (ERR_TOKEN) for rc; a transport failure also marks the connection broken. */
int tpm2_fail(struct tpm2 *t, TSS2_RC rc, const char *what, struct err *err);
int tpm2_connect(struct tpm2 *t, struct err *err);
void tpm2_disconnect(struct tpm2 *t);
/* Flushes the kept unseal session; ESYS_TR_NONE afterwards. */
void tpm2_drop_session(struct tpm2 *t);
/*
 * Runs fn on a live connection. A transport failure (swtpm restarted, resource manager
 * gone) tears the context down and fn is tried once more on a fresh one, so a token that
 * came back is used again without restarting the daemon.
 */
int tpm2_run(struct tpm2 *t, tpm2_op_fn fn, void *arg, struct err *err);
/*
 * An HMAC session salted with the primary (ECDH), AES-128-CFB parameter encryption. The
 * salt makes the session key unknown to a bus observer even though the object's auth is
 * derivable from the (public) aad.
 */
int tpm2_session(struct tpm2 *t, ESYS_TR primary, TPMA_SESSION attrs, ESYS_TR *session,
                 struct err *err);

/* tpm2_primary.c */
/* The storage primary of this connection; ERR_TOKEN if absent (run airlock init). */
int tpm2_primary(struct tpm2 *t, ESYS_TR *out, struct err *err);
/* tpm2_run op: creates and persists the storage primary if absent. */
int tpm2_do_init(struct tpm2 *t, void *arg, struct err *err);

/* tpm2_blob.c */
/* The sealed object's authValue: SHA-256(aad). */
void tpm2_auth_of(const unsigned char *aad, size_t aad_len, TPM2B_AUTH *auth);
/* Marshals the TPM object and encrypts secret under key into a new blob. */
int tpm2_blob_seal(const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv, const unsigned char *key,
                   const unsigned char *aad, size_t aad_len, const unsigned char *secret,
                   size_t secret_len, unsigned char **out, size_t *out_len, struct err *err);
/* Splits a blob into its parts (pointing into data); every length is checked. */
int tpm2_blob_parse(const unsigned char *data, size_t len, struct tpm2_blob *b, struct err *err);
/* Decrypts the software half with the unsealed key into the caller's buffer. */
int tpm2_blob_open(const struct tpm2_blob *b, const unsigned char *key, const unsigned char *aad,
                   size_t aad_len, struct secbuf *sb, struct err *err);

#endif
