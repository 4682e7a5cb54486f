/*
 * Front of the token layer: picks the backend's struct hsm_ops from the configuration,
 * keeps private copies of the configuration strings (callers' policies may be reloaded
 * and freed while a token stays open) and forwards every call to the backend.
 */
#include <stdlib.h>
#include <string.h>

#include "hsm/hsm_internal.h"

static const struct hsm_ops *
hsm_ops_for(enum hsm_backend b, struct err *err)
{
    switch (b) {
    case HSM_BACKEND_PKCS11:
        return &hsm_pkcs11_ops;
    case HSM_BACKEND_TPM2:
#ifdef AIRLOCK_HAVE_TPM2
        return &hsm_tpm2_ops;
#else
        err_set(err, ERR_USAGE, "tpm2 backend not built");
        return NULL;
#endif
    }
    err_set(err, ERR_USAGE, "unknown token backend %d", (int)b);
    return NULL;
}

/* strdup that keeps NULL as NULL; *ok is cleared on allocation failure. */
static const char *
hsm_dup(const char *s, int *ok)
{
    char *d;

    if (s == NULL)
        return NULL;
    if ((d = strdup(s)) == NULL)
        *ok = 0;
    return d;
}

static void
hsm_free_config(struct hsm_config *c)
{
    free((char *)c->pkcs11_module);
    free((char *)c->pkcs11_token_uri);
    free((char *)c->pkcs11_pin);
    free((char *)c->pkcs11_key_label);
    free((char *)c->tpm2_tcti);
    free((char *)c->tpm2_primary_name_file);
    memset(c, 0, sizeof(*c));
}

static int
hsm_copy_config(struct hsm_config *dst, const struct hsm_config *src)
{
    int ok = 1;

    dst->backend = src->backend;
    dst->tpm2_primary_handle = src->tpm2_primary_handle;
    dst->pkcs11_module = hsm_dup(src->pkcs11_module, &ok);
    dst->pkcs11_token_uri = hsm_dup(src->pkcs11_token_uri, &ok);
    dst->pkcs11_pin = hsm_dup(src->pkcs11_pin, &ok);
    dst->pkcs11_key_label = hsm_dup(src->pkcs11_key_label, &ok);
    dst->tpm2_tcti = hsm_dup(src->tpm2_tcti, &ok);
    dst->tpm2_primary_name_file = hsm_dup(src->tpm2_primary_name_file, &ok);
    if (!ok)
        hsm_free_config(dst);
    return ok ? 0 : -1;
}

struct hsm *
hsm_open(const struct hsm_config *cfg, struct err *err)
{
    const struct hsm_ops *ops;
    struct hsm *h;

    if (cfg == NULL) {
        err_set(err, ERR_USAGE, "hsm: no token configuration");
        return NULL;
    }
    if ((ops = hsm_ops_for(cfg->backend, err)) == NULL)
        return NULL;
    if ((h = calloc(1, sizeof(*h))) == NULL || hsm_copy_config(&h->cfg, cfg) == -1) {
        free(h);
        err_set(err, ERR_INTERNAL, "hsm: out of memory");
        return NULL;
    }
    h->ops = ops;
    if (ops->open(h, err) == -1) {
        hsm_free_config(&h->cfg);
        free(h);
        return NULL;
    }
    return h;
}

int
hsm_init(struct hsm *h, struct err *err)
{
    if (h == NULL)
        return err_set(err, ERR_USAGE, "hsm: token not open");
    return h->ops->init(h, err);
}

int
hsm_seal(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *secret,
         size_t secret_len, unsigned char **blob, size_t *blob_len, struct err *err)
{
    if (h == NULL || blob == NULL || blob_len == NULL)
        return err_set(err, ERR_USAGE, "hsm: seal: missing argument");
    return h->ops->seal(h, aad, aad_len, secret, secret_len, blob, blob_len, err);
}

int
hsm_unseal_into(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *blob,
                size_t blob_len, struct secbuf *out, struct err *err)
{
    if (h == NULL || out == NULL || (blob == NULL && blob_len > 0))
        return err_set(err, ERR_USAGE, "hsm: unseal: missing argument");
    out->len = 0;
    if (out->cap < blob_len)
        return err_set(err, ERR_LIMIT, "hsm: unseal: blob of %zu bytes exceeds the %zu-byte buffer",
                       blob_len, out->cap);
    if (h->ops->unseal(h, aad, aad_len, blob, blob_len, out, err) == -1) {
        secbuf_wipe(out);
        return -1;
    }
    return 0;
}

int
hsm_unseal(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *blob,
           size_t blob_len, struct secbuf **out, struct err *err)
{
    struct secbuf *sb;

    if (out == NULL)
        return err_set(err, ERR_USAGE, "hsm: unseal: missing argument");
    *out = NULL;
    if ((sb = secbuf_new(blob_len > 0 ? blob_len : 1)) == NULL)
        return err_set(err, ERR_INTERNAL, "hsm: cannot allocate locked memory");
    if (hsm_unseal_into(h, aad, aad_len, blob, blob_len, sb, err) == -1) {
        secbuf_free(sb);
        return -1;
    }
    *out = sb;
    return 0;
}

int
hsm_health(struct hsm *h, struct err *err)
{
    if (h == NULL)
        return err_set(err, ERR_USAGE, "hsm: token not open");
    return h->ops->health(h, err);
}

enum hsm_backend
hsm_backend(const struct hsm *h)
{
    return h->cfg.backend;
}

void
hsm_close(struct hsm *h)
{
    if (h == NULL)
        return;
    h->ops->close(h);
    hsm_free_config(&h->cfg);
    free(h);
}
