/*
 * The sealed-blob file format and name rules. Pure functions with no token or file
 * access, so the parser can be tested (and fuzzed) on hostile bytes directly. Every
 * length is checked against what remains before it is used.
 */
#include <stdlib.h>
#include <string.h>

#include "vault/vault.h"

static const unsigned char vault_magic[4] = {'A', 'L', 'C', 'K'};

#define VAULT_HEADER_FIXED (4 + 1 + 1 + 1 + 8 + 4) /* everything but name and data */

int
vault_name_valid(const char *name)
{
    size_t i;

    if (name == NULL)
        return 0;
    for (i = 0; name[i] != '\0'; i++) {
        unsigned char c = (unsigned char)name[i];

        if (i >= VAULT_NAME_MAX)
            return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return i > 0;
}

static int
vault_backend_known(unsigned v)
{
    return v == HSM_BACKEND_PKCS11 || v == HSM_BACKEND_TPM2;
}

static void
put_be(unsigned char *p, uint64_t v, int bytes)
{
    int i;

    for (i = bytes - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t
get_be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < bytes; i++)
        v = (v << 8) | p[i];
    return v;
}

int
vault_blob_encode(enum hsm_backend b, const char *name, uint64_t created_ms,
                  const unsigned char *data, size_t len, unsigned char **out, size_t *outlen)
{
    size_t nlen, total;
    unsigned char *buf, *p;

    if (!vault_name_valid(name) || !vault_backend_known((unsigned)b) || out == NULL ||
        outlen == NULL || len > VAULT_DATA_MAX || (data == NULL && len > 0))
        return -1;
    nlen = strlen(name);
    total = VAULT_HEADER_FIXED + nlen + len;
    if ((buf = malloc(total)) == NULL)
        return -1;
    p = buf;
    memcpy(p, vault_magic, 4);
    p += 4;
    *p++ = VAULT_BLOB_VERSION;
    *p++ = (unsigned char)b;
    *p++ = (unsigned char)nlen;
    memcpy(p, name, nlen);
    p += nlen;
    put_be(p, created_ms, 8);
    p += 8;
    put_be(p, len, 4);
    p += 4;
    if (len > 0)
        memcpy(p, data, len);
    *out = buf;
    *outlen = total;
    return 0;
}

int
vault_blob_decode(const unsigned char *buf, size_t len, enum hsm_backend *b,
                  char name[VAULT_NAME_MAX + 1], uint64_t *created_ms, const unsigned char **data,
                  size_t *datalen, struct err *err)
{
    size_t nlen, dlen, off;

    if (buf == NULL || len < VAULT_HEADER_FIXED)
        return err_set(err, ERR_PARSE, "truncated blob (%zu bytes)", len);
    if (memcmp(buf, vault_magic, 4) != 0)
        return err_set(err, ERR_PARSE, "not a sealed blob (bad magic)");
    if (buf[4] != VAULT_BLOB_VERSION)
        return err_set(err, ERR_PARSE, "unsupported blob version %u", buf[4]);
    if (!vault_backend_known(buf[5]))
        return err_set(err, ERR_PARSE, "unknown backend id %u", buf[5]);
    nlen = buf[6];
    if (nlen == 0 || nlen > VAULT_NAME_MAX)
        return err_set(err, ERR_PARSE, "bad name length %zu", nlen);
    if (len < VAULT_HEADER_FIXED + nlen)
        return err_set(err, ERR_PARSE, "truncated blob (%zu bytes)", len);
    memcpy(name, buf + 7, nlen);
    name[nlen] = '\0';
    if (strlen(name) != nlen || !vault_name_valid(name)) /* an embedded NUL would truncate */
        return err_set(err, ERR_PARSE, "bad name in blob");
    off = 7 + nlen;
    *created_ms = get_be(buf + off, 8);
    dlen = (size_t)get_be(buf + off + 8, 4);
    off += 12;
    if (dlen > VAULT_DATA_MAX)
        return err_set(err, ERR_PARSE, "blob data of %zu bytes exceeds %d", dlen, VAULT_DATA_MAX);
    if (len - off < dlen)
        return err_set(err, ERR_PARSE, "truncated blob (%zu bytes)", len);
    if (len - off > dlen)
        return err_set(err, ERR_PARSE, "%zu trailing bytes after blob", len - off - dlen);
    *b = (enum hsm_backend)buf[5];
    *data = buf + off;
    *datalen = dlen;
    return 0;
}

size_t
vault_blob_aad(enum hsm_backend b, const char *name, unsigned char *out, size_t outlen)
{
    size_t nlen;

    if (!vault_name_valid(name) || out == NULL)
        return 0;
    nlen = strlen(name);
    if (outlen < 6 + nlen)
        return 0;
    memcpy(out, vault_magic, 4);
    out[4] = VAULT_BLOB_VERSION;
    out[5] = (unsigned char)b;
    memcpy(out + 6, name, nlen);
    return 6 + nlen;
}
