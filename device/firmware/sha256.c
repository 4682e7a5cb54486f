/*
 * SHA-256 (FIPS 180-4) and HMAC (RFC 2104) for the buddy firmware. Written for clarity
 * and small code size on 8-bit AVR rather than speed: the device hashes a few short
 * lines per button press. Intermediate key material is wiped before returning.
 */
#include "sha256.h"

#include <string.h>

static const uint32_t k256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

/* Through a volatile pointer so the compiler cannot drop the wipe of key material. */
static void
wipe(void *p, size_t n)
{
    volatile uint8_t *v = p;

    while (n-- > 0)
        *v++ = 0;
}

static uint32_t
ror(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

static void
compress(struct buddy_sha256 *c, const uint8_t *p)
{
    uint32_t w[64], s[8], t1, t2;
    int i;

    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(s, c->h, sizeof(s));
    for (i = 0; i < 64; i++) {
        t1 = s[7] + (ror(s[4], 6) ^ ror(s[4], 11) ^ ror(s[4], 25)) +
             ((s[4] & s[5]) ^ (~s[4] & s[6])) + k256[i] + w[i];
        t2 = (ror(s[0], 2) ^ ror(s[0], 13) ^ ror(s[0], 22)) +
             ((s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]));
        memmove(s + 1, s, 7 * sizeof(s[0]));
        s[4] += t1;
        s[0] = t1 + t2;
    }
    for (i = 0; i < 8; i++)
        c->h[i] += s[i];
    wipe(w, sizeof(w));
    wipe(s, sizeof(s));
}

void
buddy_sha256_init(struct buddy_sha256 *c)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

    memcpy(c->h, iv, sizeof(iv));
    c->total_bytes = 0;
    c->fill = 0;
}

void
buddy_sha256_update(struct buddy_sha256 *c, const void *data, size_t len)
{
    const uint8_t *p = data;

    c->total_bytes += len;
    while (len > 0) {
        size_t n = BUDDY_SHA256_BLOCK - c->fill;
        if (n > len)
            n = len;
        memcpy(c->block + c->fill, p, n);
        c->fill += n;
        p += n;
        len -= n;
        if (c->fill == BUDDY_SHA256_BLOCK) {
            compress(c, c->block);
            c->fill = 0;
        }
    }
}

void
buddy_sha256_final(struct buddy_sha256 *c, uint8_t out[BUDDY_SHA256_LEN])
{
    uint64_t bits = c->total_bytes * 8;
    int i;

    c->block[c->fill++] = 0x80;
    if (c->fill > BUDDY_SHA256_BLOCK - 8) {
        memset(c->block + c->fill, 0, BUDDY_SHA256_BLOCK - c->fill);
        compress(c, c->block);
        c->fill = 0;
    }
    memset(c->block + c->fill, 0, BUDDY_SHA256_BLOCK - 8 - c->fill);
    for (i = 0; i < 8; i++)
        c->block[BUDDY_SHA256_BLOCK - 1 - i] = (uint8_t)(bits >> (8 * i));
    compress(c, c->block);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)c->h[i];
    }
    wipe(c, sizeof(*c));
}

void
buddy_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
    uint8_t out[BUDDY_SHA256_LEN])
{
    struct buddy_sha256 c;
    uint8_t k[BUDDY_SHA256_BLOCK], pad[BUDDY_SHA256_BLOCK], inner[BUDDY_SHA256_LEN];
    size_t i;

    memset(k, 0, sizeof(k));
    if (key_len > BUDDY_SHA256_BLOCK) {
        buddy_sha256_init(&c);
        buddy_sha256_update(&c, key, key_len);
        buddy_sha256_final(&c, k);
    } else if (key_len > 0) {
        memcpy(k, key, key_len);
    }
    for (i = 0; i < sizeof(pad); i++)
        pad[i] = k[i] ^ 0x36;
    buddy_sha256_init(&c);
    buddy_sha256_update(&c, pad, sizeof(pad));
    buddy_sha256_update(&c, msg, msg_len);
    buddy_sha256_final(&c, inner);
    for (i = 0; i < sizeof(pad); i++)
        pad[i] = k[i] ^ 0x5c;
    buddy_sha256_init(&c);
    buddy_sha256_update(&c, pad, sizeof(pad));
    buddy_sha256_update(&c, inner, sizeof(inner));
    buddy_sha256_final(&c, out);
    wipe(k, sizeof(k));
    wipe(pad, sizeof(pad));
    wipe(inner, sizeof(inner));
}
