/*
 * Hardware token backends behind one interface: PKCS#11 (p11-kit) and TPM 2.0 (tpm2-tss
 * ESAPI). A token seals a secret into an opaque blob bound to a name (AAD or object auth)
 * and unseals it inside the token. Secrets in and out are secbufs; blobs are plain bytes.
 */
#ifndef AIRLOCK_HSM_H
#define AIRLOCK_HSM_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/secmem.h"

enum hsm_backend {
    HSM_BACKEND_PKCS11 = 1, /* ids are stored in blob files: never renumber */
    HSM_BACKEND_TPM2 = 2,
};

#define HSM_TPM2_DEFAULT_PRIMARY 0x81000A1Cu

struct hsm_config {
    enum hsm_backend backend;
    /* pkcs11 */
    const char *pkcs11_module;    /* path to the PKCS#11 module (.so) */
    const char *pkcs11_token_uri; /* RFC 7512 URI, e.g. "pkcs11:token=airlock" */
    const char *pkcs11_pin;       /* "env:NAME" or "file:PATH"; never the PIN itself */
    const char *pkcs11_key_label; /* label of the AES-256 wrapping key */
    /* tpm2 */
    const char *tpm2_tcti;        /* "device:/dev/tpmrm0", "swtpm:host=127.0.0.1,port=2321" */
    uint32_t tpm2_primary_handle; /* persistent handle of the storage primary */
    /*
     * Where hsm_init records the storage primary's TPM name, which every connection then
     * checks before the primary's key salts a session (required; vault_open points it
     * into the vault directory). No record: everything but hsm_init fails (ERR_TOKEN).
     */
    const char *tpm2_primary_name_file;
};

struct hsm;

/* Connects to the token (loads module, logs in / opens TCTI). NULL with err on failure. */
struct hsm *hsm_open(const struct hsm_config *cfg, struct err *err);
/*
 * Creates the wrapping key / storage primary if absent. Idempotent. TPM 2.0: also records
 * the primary's name in tpm2_primary_name_file if nothing is recorded yet, and fails if a
 * recorded name differs from the primary's.
 */
int hsm_init(struct hsm *h, struct err *err);
/*
 * Seals secret (len bytes) bound to aad (which callers build from magic, version, backend
 * and name). On success *blob is malloc'd backend data the caller frees.
 */
int hsm_seal(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *secret,
             size_t secret_len, unsigned char **blob, size_t *blob_len, struct err *err);
/* Unseals into a new secbuf (*out) the caller frees with secbuf_free(). Wrong aad fails. */
int hsm_unseal(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *blob,
               size_t blob_len, struct secbuf **out, struct err *err);
/*
 * Unseals into the caller's locked buffer, for callers that reuse one buffer per unseal
 * instead of mapping and locking a new one. out->cap must be at least blob_len (the
 * plaintext and the backend's scratch space never exceed it; ERR_LIMIT otherwise). On
 * success out->len is the secret's length; on failure out holds nothing.
 */
int hsm_unseal_into(struct hsm *h, const unsigned char *aad, size_t aad_len,
                    const unsigned char *blob, size_t blob_len, struct secbuf *out,
                    struct err *err);
/* Checks the token is reachable, reconnecting if needed. 0 healthy, -1 with err. */
int hsm_health(struct hsm *h, struct err *err);
enum hsm_backend hsm_backend(const struct hsm *h);
/* Disconnects; NULL is a no-op. */
void hsm_close(struct hsm *h);

#endif
