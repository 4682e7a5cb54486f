/* Backend vtable shared by hsm.c, pkcs11.c and tpm2.c. Private to hsm/. */
#ifndef AIRLOCK_HSM_INTERNAL_H
#define AIRLOCK_HSM_INTERNAL_H

#include "hsm/hsm.h"

struct hsm_ops {
    const char *name;
    /* Allocates backend state into h->priv; connects. */
    int (*open)(struct hsm *h, struct err *err);
    int (*init)(struct hsm *h, struct err *err);
    int (*seal)(struct hsm *h, const unsigned char *aad, size_t aad_len,
        const unsigned char *secret, size_t secret_len, unsigned char **blob, size_t *blob_len,
        struct err *err);
    /* Writes the secret into out (out->cap >= blob_len, checked by hsm.c); leaves out
     * wiped on failure. */
    int (*unseal)(struct hsm *h, const unsigned char *aad, size_t aad_len,
        const unsigned char *blob, size_t blob_len, struct secbuf *out, struct err *err);
    int (*health)(struct hsm *h, struct err *err);
    void (*close)(struct hsm *h); /* frees h->priv */
};

struct hsm {
    const struct hsm_ops *ops;
    struct hsm_config cfg; /* strings are private copies owned by hsm.c */
    void *priv;
};

extern const struct hsm_ops hsm_pkcs11_ops; /* pkcs11.c */
extern const struct hsm_ops hsm_tpm2_ops;   /* tpm2.c */

#endif
