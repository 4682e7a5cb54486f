/*
 * Host-side crypto for the buddy protocol: the mac is HMAC-SHA256 over OpenSSL, truncated
 * to 16 bytes (32 hex chars), compared in constant time. Parsing and formatting live in
 * firmware/buddy_proto.c so the daemon, simulator and device share one parser.
 */
#include "device/buddy.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

void
buddy_mac(const unsigned char key[32], const char *msg, char out[BUDDY_MAC_LEN + 1])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (HMAC(EVP_sha256(), key, 32, (const unsigned char *)msg, strlen(msg), digest, &n) ==
            NULL ||
        n < BUDDY_MAC_LEN / 2) {
        /* Cannot happen with a working libcrypto; a mac that matches nothing is safe. */
        memset(out, 'x', BUDDY_MAC_LEN);
        out[BUDDY_MAC_LEN] = '\0';
        return;
    }
    buddy_hex_encode(digest, BUDDY_MAC_LEN / 2, out);
    OPENSSL_cleanse(digest, sizeof(digest));
}

int
buddy_mac_verify(const unsigned char key[32], const char *msg, const char *mac_hex)
{
    char want[BUDDY_MAC_LEN + 1];
    int ok;

    if (strlen(mac_hex) != BUDDY_MAC_LEN)
        return 0;
    buddy_mac(key, msg, want);
    ok = CRYPTO_memcmp(want, mac_hex, BUDDY_MAC_LEN) == 0;
    OPENSSL_cleanse(want, sizeof(want));
    return ok;
}
