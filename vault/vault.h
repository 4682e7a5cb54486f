/*
 * Credential vault: one file DIR/NAME.sealed per credential, holding a small header
 * (magic, version, backend, name, created time) and the token's sealed blob. The name is
 * bound into the seal (AAD or object auth), so a blob copied under another name fails.
 */
#ifndef AIRLOCK_VAULT_H
#define AIRLOCK_VAULT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/secmem.h"
#include "hsm/hsm.h"

#define VAULT_NAME_MAX 64     /* [A-Za-z0-9_-]{1,64} */
#define VAULT_SECRET_MAX 8192 /* bytes of secret accepted by vault_enroll */
#define VAULT_DATA_MAX 65536  /* bytes of backend data in one blob file */
#define VAULT_BLOB_VERSION 1
/* DIR/tpm2-primary.name: the TPM storage primary's name, recorded by vault_init (see
 * hsm_config.tpm2_primary_name_file) and checked on every connection. */
#define VAULT_TPM2_PRIMARY_FILE "tpm2-primary.name"

struct vault;

struct vault_entry {
    char name[VAULT_NAME_MAX + 1];
    enum hsm_backend backend;
    uint64_t created_ms; /* wall clock, ms since the epoch */
};

/*
 * Creates dir (mode 0700) if absent and opens the token. NULL with err on failure. With
 * cfg NULL no token is opened: list and remove work, the rest fail with ERR_USAGE.
 */
struct vault *vault_open(const struct hsm_config *cfg, const char *dir, struct err *err);
/* Prepares the token (wrapping key / storage primary, whose name it records). Idempotent. */
int vault_init(struct vault *v, struct err *err);
/*
 * Seals secret under name and writes DIR/NAME.sealed atomically with mode 0600.
 * ERR_EXISTS if the name is enrolled and replace is 0; ERR_LIMIT above VAULT_SECRET_MAX.
 */
int vault_enroll(struct vault *v, const char *name, const unsigned char *secret, size_t len,
                 int replace, struct err *err);
/*
 * Unseals name into a new secbuf (*out) the caller frees with secbuf_free(). The sealed
 * file's bytes (ciphertext) are cached per vault and reread when a stat of the file shows
 * it changed (inode, size, mtime or ctime), so a replaced or removed credential is seen
 * by the next unseal without a read per unseal.
 */
int vault_unseal(struct vault *v, const char *name, struct secbuf **out, struct err *err);
/*
 * vault_unseal into the caller's reusable locked buffer (see hsm_unseal_into): out->cap of
 * VAULT_SECRET_MAX + 4096 covers any blob vault_enroll writes. out holds nothing on failure.
 */
int vault_unseal_into(struct vault *v, const char *name, struct secbuf *out, struct err *err);
/* Headers of every blob, sorted by name; *entries is malloc'd (free()), NULL when empty. */
int vault_list(struct vault *v, struct vault_entry **entries, size_t *n, struct err *err);
/* Deletes DIR/NAME.sealed; ERR_NOTFOUND if absent. */
int vault_remove(struct vault *v, const char *name, struct err *err);
/* Checks the token is reachable (reconnecting if needed). */
int vault_health(struct vault *v, struct err *err);
/* Closes the token; NULL is a no-op. */
void vault_close(struct vault *v);

struct policy;
/* The token settings of p's vault section (strings borrowed from p). */
void vault_config_from_policy(const struct policy *p, struct hsm_config *cfg);

/* 1 if name matches [A-Za-z0-9_-]{1,64} ("_buddy", "_ca" are internal names). */
int vault_name_valid(const char *name);

/*
 * Blob file codec: "ALCK", u8 version, u8 backend, u8 name_len, name, u64 BE created_ms,
 * u32 BE data length, data, and nothing after. encode: *out is malloc'd; -1 on bad input.
 * decode: *data points into buf; ERR_PARSE on any malformed or truncated file.
 */
int vault_blob_encode(enum hsm_backend b, const char *name, uint64_t created_ms,
                      const unsigned char *data, size_t len, unsigned char **out, size_t *outlen);
int vault_blob_decode(const unsigned char *buf, size_t len, enum hsm_backend *b,
                      char name[VAULT_NAME_MAX + 1], uint64_t *created_ms,
                      const unsigned char **data, size_t *datalen, struct err *err);
/* AAD binding a seal to its name: "ALCK" | version | backend | name. Returns its length
 * (0 if it does not fit in outlen or name is invalid). */
size_t vault_blob_aad(enum hsm_backend b, const char *name, unsigned char *out, size_t outlen);

#endif
