/*
 * Unit tests for the buddy line protocol shared by daemon, simulator and firmware: every
 * message type round-trips, every kind of malformation is refused with the right result,
 * length limits hold to the byte, and the mac matches OpenSSL's HMAC-SHA256.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "device/buddy.h"

#define ID "K3F9QX"
#define NONCE "0123456789abcdef"
#define MAC "00112233445566778899aabbccddeeff"
#define KEYHEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static enum buddy_parse_result
parse(const char *s, struct buddy_msg *m)
{
    return buddy_parse_line(s, strlen(s), m);
}

/* Parses s, formats the result and expects the same bytes back plus '\n'. */
static void
roundtrip(const char *s, enum buddy_type type)
{
    struct buddy_msg m;
    char out[BUDDY_LINE_MAX + 1], want[BUDDY_LINE_MAX + 2];

    assert_int_equal(parse(s, &m), BUDDY_PARSE_OK);
    assert_int_equal(m.type, type);
    snprintf(want, sizeof(want), "%s\n", s);
    assert_int_equal(buddy_format_line(&m, out, sizeof(out)), (int)strlen(want));
    assert_string_equal(out, want);
}

static void
test_every_type(void **state)
{
    struct buddy_msg m;

    roundtrip("HELLO 1 " NONCE, BUDDY_MSG_HELLO);
    roundtrip("HELLO 1 AB12 " MAC, BUDDY_MSG_HELLO_REPLY);
    roundtrip("HELLO 1 SIM1 -", BUDDY_MSG_HELLO_REPLY);
    roundtrip("SHOW " ID " " NONCE " POST api.github.com /repos/x (ci-bot)", BUDDY_MSG_SHOW);
    roundtrip("CLEAR " ID, BUDDY_MSG_CLEAR);
    roundtrip("PING", BUDDY_MSG_PING);
    roundtrip("PONG", BUDDY_MSG_PONG);
    roundtrip("PAIR " KEYHEX, BUDDY_MSG_PAIR);
    roundtrip("APPROVE " ID " " MAC, BUDDY_MSG_APPROVE);
    roundtrip("DENY " ID " -", BUDDY_MSG_DENY);
    roundtrip("ERR not-pairing", BUDDY_MSG_ERR);

    assert_int_equal(parse("SHOW " ID " " NONCE " a  b ", &m), BUDDY_PARSE_OK);
    assert_string_equal(m.text, "a  b "); /* free text keeps its spaces */
    assert_string_equal(m.id, ID);
    assert_string_equal(m.nonce, NONCE);
    assert_int_equal(parse("HELLO 1 AB12 " MAC, &m), BUDDY_PARSE_OK);
    assert_string_equal(m.devid, "AB12");
    assert_string_equal(m.mac, MAC);
    assert_int_equal(parse("PAIR " KEYHEX, &m), BUDDY_PARSE_OK);
    assert_string_equal(m.key_hex, KEYHEX);
}

static void
test_malformed(void **state)
{
    static const char *const bad[] = {
        "", " ", "PING ", " PING", "PING PONG", "PONG x",
        "HELLO", "HELLO 1", "HELLO 2 " NONCE, "HELLO 1 0123456789ABCDEF",
        "HELLO 1 " NONCE "0", "HELLO 1 0123456789abcde", "HELLO  1 " NONCE,
        "HELLO 1 ab12 " MAC, "HELLO 1 AB-12 " MAC, "HELLO 1 ABCDEFGHJKMNPQRST " MAC,
        "HELLO 1 AB12 " MAC " x", "HELLO 1 AB12 00112233445566778899AABBCCDDEEFF",
        "SHOW " ID " " NONCE, "SHOW " ID " " NONCE " ", "SHOW k3f9qx " NONCE " x",
        "SHOW K3F9QI " NONCE " x", "SHOW K3F9QL " NONCE " x", "SHOW K3F9QO " NONCE " x",
        "SHOW K3F9QU " NONCE " x", "SHOW K3F9Q " NONCE " x", "SHOW K3F9QXX " NONCE " x",
        "SHOW " ID "  " NONCE " x", "SHOW " ID " " NONCE "x",
        "CLEAR", "CLEAR " ID " x", "CLEAR " ID " ",
        "PAIR", "PAIR " KEYHEX "0", "PAIR 000102030405060708090A0B0C0D0E0F101112131415161718191a1b1c1d1e1f",
        "APPROVE " ID, "APPROVE " ID " " MAC " x", "APPROVE " ID " 0011",
        "APPROVE " ID " --", "DENY " ID "  " MAC, "DENY " ID " " MAC " ",
        "ERR", "ERR ", "ERR 0123456789012345678901234567890123456789012345678901234567890123",
        "ping", "Ping", "1234", "\x7f", "PING\r", "SHOW " ID " " NONCE " tab\there",
        "SHOW " ID " " NONCE " caf\xc3\xa9",
    };
    struct buddy_msg m;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum buddy_parse_result r = parse(bad[i], &m);
        if (r != BUDDY_PARSE_MALFORMED)
            fail_msg("line %zu \"%s\": got %d", i, bad[i], (int)r);
    }
    /* An embedded NUL is an invalid byte, never a terminator. */
    assert_int_equal(buddy_parse_line("PING\0", 5, &m), BUDDY_PARSE_MALFORMED);
    assert_int_equal(buddy_parse_line("CLEAR K3F\0QX", 12, &m), BUDDY_PARSE_MALFORMED);
    /* Unknown upper-case words are reported separately (the firmware answers with it). */
    assert_int_equal(parse("REBOOT", &m), BUDDY_PARSE_UNKNOWN);
    assert_int_equal(parse("FLASH now", &m), BUDDY_PARSE_UNKNOWN);
}

static void
test_length_limits(void **state)
{
    char line[BUDDY_LINE_MAX + 8], out[BUDDY_LINE_MAX + 8];
    struct buddy_msg m;
    size_t prefix = strlen("SHOW " ID " " NONCE " ");

    memset(line, 'x', sizeof(line));
    memcpy(line, "SHOW " ID " " NONCE " ", prefix);
    /* 199 bytes + '\n' = 200: the longest legal line. */
    assert_int_equal(buddy_parse_line(line, BUDDY_LINE_MAX - 1, &m), BUDDY_PARSE_OK);
    assert_int_equal(strlen(m.text), BUDDY_TEXT_MAX);
    assert_int_equal(buddy_format_line(&m, out, sizeof(out)), BUDDY_LINE_MAX);
    assert_int_equal(buddy_parse_line(line, BUDDY_LINE_MAX, &m), BUDDY_PARSE_TOO_LONG);
    assert_int_equal(buddy_parse_line(line, 5000, &m), BUDDY_PARSE_TOO_LONG);

    /* The formatter refuses a text that would make the line 201 bytes... */
    memset(&m, 0, sizeof(m));
    m.type = BUDDY_MSG_SHOW;
    strcpy(m.id, ID);
    strcpy(m.nonce, NONCE);
    memset(m.text, 'y', BUDDY_TEXT_MAX + 1);
    assert_int_equal(buddy_format_line(&m, out, sizeof(out)), -1);
    assert_string_equal(out, "");
    /* ...and any output buffer that is too small, without overrunning it. */
    m.text[3] = '\0';
    assert_int_equal(buddy_format_line(&m, out, 10), -1);
    assert_int_equal(buddy_format_line(&m, out, strlen("SHOW " ID " " NONCE " yyy\n") + 1),
        (int)strlen("SHOW " ID " " NONCE " yyy\n"));
}

static void
test_format_validates(void **state)
{
    struct buddy_msg m;
    char out[BUDDY_LINE_MAX + 1];

    memset(&m, 0, sizeof(m));
    m.type = BUDDY_MSG_APPROVE;
    strcpy(m.id, "K3F9Q!");
    strcpy(m.mac, MAC);
    assert_int_equal(buddy_format_line(&m, out, sizeof(out)), -1);
    strcpy(m.id, ID);
    strcpy(m.mac, "0011");
    assert_int_equal(buddy_format_line(&m, out, sizeof(out)), -1);
    m.type = BUDDY_MSG_SHOW;
    strcpy(m.nonce, NONCE);
    strcpy(m.text, "bad\nline");
    assert_int_equal(buddy_format_line(&m, out, sizeof(out)), -1);
    m.type = BUDDY_MSG_NONE;
    assert_int_equal(buddy_format_line(&m, out, sizeof(out)), -1);
    m.type = (enum buddy_type)99;
    assert_int_equal(buddy_format_line(&m, out, sizeof(out)), -1);
}

static void
openssl_mac(const unsigned char key[32], const char *msg, char out[33])
{
    unsigned char d[32];
    unsigned int n = 0;
    int i;

    assert_non_null(HMAC(EVP_sha256(), key, 32, (const unsigned char *)msg, strlen(msg), d, &n));
    for (i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void
test_mac_vectors(void **state)
{
    unsigned char key[32];
    char msg[BUDDY_LINE_MAX], mac[33], want[33];
    int i;

    for (i = 0; i < 32; i++)
        key[i] = (unsigned char)(i * 7 + 1);
    assert_int_equal(buddy_mac_message(BUDDY_MSG_HELLO_REPLY, "AB12", NONCE, msg, sizeof(msg)),
        (int)strlen("HELLO|AB12|" NONCE));
    assert_string_equal(msg, "HELLO|AB12|" NONCE);
    assert_int_equal(buddy_mac_message(BUDDY_MSG_APPROVE, ID, NONCE, msg, sizeof(msg)), 31);
    assert_string_equal(msg, "APPROVE|" ID "|" NONCE);
    buddy_mac_message(BUDDY_MSG_DENY, ID, NONCE, msg, sizeof(msg));
    assert_string_equal(msg, "DENY|" ID "|" NONCE);
    assert_int_equal(buddy_mac_message(BUDDY_MSG_SHOW, ID, NONCE, msg, sizeof(msg)), -1);
    assert_int_equal(buddy_mac_message(BUDDY_MSG_DENY, ID, NONCE, msg, 10), -1);

    buddy_mac(key, msg, mac);
    openssl_mac(key, msg, want);
    assert_string_equal(mac, want);
    assert_int_equal(strlen(mac), 32);
    assert_true(buddy_mac_verify(key, msg, want));
    want[31] = want[31] == '0' ? '1' : '0';
    assert_false(buddy_mac_verify(key, msg, want));
    assert_false(buddy_mac_verify(key, msg, "-"));
    assert_false(buddy_mac_verify(key, msg, ""));
    key[0] ^= 1;
    assert_false(buddy_mac_verify(key, msg, mac));
    /* RFC 4231 style check that the truncation is the leading 16 bytes. */
    buddy_mac(key, "", mac);
    openssl_mac(key, "", want);
    assert_string_equal(mac, want);
}

static void
test_hex(void **state)
{
    uint8_t raw[4] = {0x00, 0xab, 0x7f, 0xff}, back[4];
    char hex[9];

    buddy_hex_encode(raw, 4, hex);
    assert_string_equal(hex, "00ab7fff");
    assert_int_equal(buddy_hex_decode(hex, back, 4), 0);
    assert_memory_equal(raw, back, 4);
    assert_int_equal(buddy_hex_decode("00AB7fff", back, 4), -1);
    assert_int_equal(buddy_hex_decode("00ab7fg0", back, 4), -1);
    assert_int_equal(buddy_hex_decode("00ab7f", back, 4), -1); /* stops at the NUL */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_format_validates),
        cmocka_unit_test(test_mac_vectors),
        cmocka_unit_test(test_hex),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
