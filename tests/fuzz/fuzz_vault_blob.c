/*
 * libFuzzer target for the sealed-blob file codec (vault/blob.c, SPEC §4): decode only, no
 * token. What decodes must be canonical (encoding it again gives the same bytes), its name
 * valid and bound into the AAD; what does not must say why (ERR_PARSE, a message).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vault/vault.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

static void
check_name(const uint8_t *data, size_t size)
{
    char name[VAULT_NAME_MAX + 2];
    unsigned char aad[6 + VAULT_NAME_MAX];
    size_t n = size < sizeof(name) - 1 ? size : sizeof(name) - 1, i;

    memcpy(name, data, n);
    name[n] = '\0';
    if (!vault_name_valid(name)) {
        CHECK(vault_blob_aad(HSM_BACKEND_PKCS11, name, aad, sizeof(aad)) == 0);
        return;
    }
    CHECK(strlen(name) >= 1 && strlen(name) <= VAULT_NAME_MAX);
    for (i = 0; name[i] != '\0'; i++)
        CHECK(name[i] != '/' && name[i] != '.');
    CHECK(vault_blob_aad(HSM_BACKEND_TPM2, name, aad, sizeof(aad)) == 6 + strlen(name));
    CHECK(vault_blob_aad(HSM_BACKEND_TPM2, name, aad, 5 + strlen(name)) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char name[VAULT_NAME_MAX + 1];
    unsigned char aad[6 + VAULT_NAME_MAX], *again = NULL;
    const unsigned char *payload = NULL;
    enum hsm_backend b;
    uint64_t created_ms;
    size_t payload_len = 0, again_len = 0, aad_len;
    struct err err;

    check_name(data, size);
    memset(&err, 0, sizeof(err));
    if (vault_blob_decode(data, size, &b, name, &created_ms, &payload, &payload_len, &err) == -1) {
        CHECK(err.code == ERR_PARSE && err.msg[0] != '\0');
        return 0;
    }
    CHECK(b == HSM_BACKEND_PKCS11 || b == HSM_BACKEND_TPM2);
    CHECK(vault_name_valid(name));
    CHECK(payload_len <= VAULT_DATA_MAX && payload >= data && payload + payload_len == data + size);
    CHECK(vault_blob_encode(b, name, created_ms, payload, payload_len, &again, &again_len) == 0);
    CHECK(again_len == size && memcmp(again, data, size) == 0);
    free(again);
    aad_len = vault_blob_aad(b, name, aad, sizeof(aad));
    CHECK(aad_len == 6 + strlen(name) && memcmp(aad, data, 6) == 0);
    CHECK(memcmp(aad + 6, name, strlen(name)) == 0);
    return 0;
}
