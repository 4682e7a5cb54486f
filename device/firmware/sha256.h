/*
 * A small SHA-256 and HMAC-SHA256 for the buddy firmware, which has no OpenSSL: portable
 * C with only stdint.h/string.h, no heap, a few hundred bytes of state. The host build
 * tests it against OpenSSL (tests/unit/test_firmware.c).
 */
#ifndef AIRLOCK_BUDDY_SHA256_H
#define AIRLOCK_BUDDY_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the Arduino sketch is C++ */
#endif

#define BUDDY_SHA256_LEN 32
#define BUDDY_SHA256_BLOCK 64

struct buddy_sha256 {
    uint32_t h[8];
    uint64_t total_bytes;
    uint8_t block[BUDDY_SHA256_BLOCK];
    size_t fill;
};

void buddy_sha256_init(struct buddy_sha256 *c);
void buddy_sha256_update(struct buddy_sha256 *c, const void *data, size_t len);
/* Writes the digest and wipes the context. */
void buddy_sha256_final(struct buddy_sha256 *c, uint8_t out[BUDDY_SHA256_LEN]);

/* HMAC-SHA256 (RFC 2104); keys longer than the block are hashed first. */
void buddy_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
    uint8_t out[BUDDY_SHA256_LEN]);

#ifdef __cplusplus
}
#endif

#endif
