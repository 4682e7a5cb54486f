/*
 * Unit tests for the portable firmware core: its SHA-256/HMAC against OpenSSL, button
 * debouncing and short/long presses on simulated timelines, pairing at power-on, ERR
 * answers to bad host lines, and PAIR only in pairing mode. No OS, no serial port: lines
 * in through feed_byte, lines out captured from the write callback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "device/firmware/buddy_fw.h"
#include "device/firmware/sha256.h"

#define ID "K3F9QX"
#define NONCE "0123456789abcdef"

struct capture {
    char out[4096];
    int stored;
    uint8_t stored_key[32];
    int store_fails;
    int events[16];
};

static void
cap_write(const char *line, size_t len, void *arg)
{
    struct capture *c = arg;

    assert_true(len > 0 && len <= BUDDY_LINE_MAX && line[len - 1] == '\n');
    assert_true(strlen(c->out) + len < sizeof(c->out));
    strncat(c->out, line, len);
}

static int
cap_store(const uint8_t key[32], void *arg)
{
    struct capture *c = arg;

    if (c->store_fails)
        return -1;
    memcpy(c->stored_key, key, 32);
    c->stored++;
    return 0;
}

static void
cap_event(enum buddy_fw_event ev, const char *id, const char *text, void *arg)
{
    struct capture *c = arg;

    c->events[ev]++;
}

static void
fw_start(struct buddy_fw *fw, struct capture *c, const uint8_t *key, int pairing)
{
    struct buddy_fw_config cfg = {"AB12", key, pairing, cap_write, cap_store, cap_event, c};

    memset(c, 0, sizeof(*c));
    buddy_fw_init(fw, &cfg);
}

static void
feed(struct buddy_fw *fw, const char *s)
{
    while (*s != '\0')
        buddy_fw_feed_byte(fw, (uint8_t)*s++);
}

/* Returns the captured output and clears it. */
static const char *
take(struct capture *c)
{
    static char copy[sizeof(c->out)];

    strcpy(copy, c->out);
    c->out[0] = '\0';
    return copy;
}

static void
expect_mac(const uint8_t key[32], const char *msg, char out[33])
{
    unsigned char d[32];
    unsigned int n = 0;
    int i;

    assert_non_null(HMAC(EVP_sha256(), key, 32, (const unsigned char *)msg, strlen(msg), d, &n));
    for (i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void
test_sha256_vs_openssl(void **state)
{
    static const size_t lens[] = {0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000};
    uint8_t data[1000], mine[32], theirs[32];
    struct buddy_sha256 c;
    size_t i, j;

    for (i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 31 + 7);
    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        buddy_sha256_init(&c);
        /* fed in uneven pieces to cross block boundaries inside update */
        for (j = 0; j < lens[i]; j += 13)
            buddy_sha256_update(&c, data + j, lens[i] - j < 13 ? lens[i] - j : 13);
        buddy_sha256_final(&c, mine);
        SHA256(data, lens[i], theirs);
        assert_memory_equal(mine, theirs, 32);
    }
    /* FIPS 180-2 "abc" */
    buddy_sha256_init(&c);
    buddy_sha256_update(&c, "abc", 3);
    buddy_sha256_final(&c, mine);
    assert_int_equal(mine[0], 0xba);
    assert_int_equal(mine[31], 0xad);
}

static void
test_hmac_vs_openssl(void **state)
{
    static const size_t key_lens[] = {0, 1, 32, 63, 64, 65, 131};
    static const size_t msg_lens[] = {0, 1, 30, 64, 65, 200, 1000};
    uint8_t key[131], msg[1000], mine[32], theirs[32];
    unsigned int n;
    size_t i, j;

    for (i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(0xaa ^ i);
    for (i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 13);
    for (i = 0; i < sizeof(key_lens) / sizeof(key_lens[0]); i++) {
        for (j = 0; j < sizeof(msg_lens) / sizeof(msg_lens[0]); j++) {
            buddy_hmac_sha256(key, key_lens[i], msg, msg_lens[j], mine);
            /* OpenSSL wants a non-NULL key pointer even for length 0 */
            assert_non_null(HMAC(EVP_sha256(), key, (int)key_lens[i], msg, msg_lens[j], theirs,
                &n));
            if (memcmp(mine, theirs, 32) != 0)
                fail_msg("hmac differs: key %zu bytes, msg %zu bytes", key_lens[i], msg_lens[j]);
        }
    }
}

static void
test_hello_show_press(void **state)
{
    struct buddy_fw fw;
    struct capture c;
    uint8_t key[32];
    char mac[33], line[128];
    uint32_t t = 1000;
    int i;

    for (i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
    fw_start(&fw, &c, key, 0);
    buddy_fw_tick(&fw, t, 0);
    assert_int_equal(buddy_fw_led(&fw), BUDDY_LED_OFF);
    feed(&fw, "HELLO 1 " NONCE "\n");
    expect_mac(key, "HELLO|AB12|" NONCE, mac);
    snprintf(line, sizeof(line), "HELLO 1 AB12 %s\n", mac);
    assert_string_equal(take(&c), line);
    assert_int_equal(buddy_fw_led(&fw), BUDDY_LED_ON);

    /* A press with nothing on show sends nothing. */
    for (i = 0; i < 10; i++)
        buddy_fw_tick(&fw, t += 10, i < 6);
    assert_string_equal(take(&c), "");

    feed(&fw, "SHOW " ID " " NONCE " POST api.example.test /x\n");
    assert_string_equal(buddy_fw_shown_id(&fw), ID);
    assert_int_equal(buddy_fw_led(&fw), BUDDY_LED_BLINK);
    assert_int_equal(buddy_fw_led_level(&fw, 0), 1);
    assert_int_equal(buddy_fw_led_level(&fw, 600), 0);
    /* 100 ms press: approve on release. */
    for (i = 0; i < 20; i++)
        buddy_fw_tick(&fw, t += 10, i < 10);
    expect_mac(key, "APPROVE|" ID "|" NONCE, mac);
    snprintf(line, sizeof(line), "APPROVE " ID " %s\n", mac);
    assert_string_equal(take(&c), line);
    assert_null(buddy_fw_shown_id(&fw));
    /* A second press does not repeat the decision. */
    for (i = 0; i < 20; i++)
        buddy_fw_tick(&fw, t += 10, i < 10);
    assert_string_equal(take(&c), "");
    buddy_fw_clear(&fw);
}

/* Bouncing contacts: 5 ms spikes never count; a real press is 30 ms stable. */
static void
test_debounce(void **state)
{
    struct buddy_fw fw;
    struct capture c;
    uint32_t t = 50;
    int i;

    fw_start(&fw, &c, NULL, 0);
    buddy_fw_tick(&fw, t, 0);
    feed(&fw, "SHOW " ID " " NONCE " x\n");
    for (i = 0; i < 200; i++)
        buddy_fw_tick(&fw, t += 5, i % 4 == 0); /* 5 ms down, 15 ms up */
    assert_string_equal(take(&c), "");
    assert_string_equal(buddy_fw_shown_id(&fw), ID);
    /* Bouncy press then bouncy release: exactly one APPROVE (auth none: mac "-"). */
    for (i = 0; i < 6; i++)
        buddy_fw_tick(&fw, t += 2, i % 2 == 0);
    for (i = 0; i < 30; i++)
        buddy_fw_tick(&fw, t += 2, 1);
    for (i = 0; i < 6; i++)
        buddy_fw_tick(&fw, t += 2, i % 2 == 1);
    for (i = 0; i < 30; i++)
        buddy_fw_tick(&fw, t += 2, 0);
    assert_string_equal(take(&c), "APPROVE " ID " -\n");
}

static void
test_long_press_denies(void **state)
{
    struct buddy_fw fw;
    struct capture c;
    uint32_t t = UINT32_MAX - 500; /* across the 32-bit wrap of the clock */
    int i;

    fw_start(&fw, &c, NULL, 0);
    buddy_fw_tick(&fw, t, 0);
    feed(&fw, "SHOW " ID " " NONCE " x\n");
    for (i = 0; i < 150; i++)
        buddy_fw_tick(&fw, t += 10, 1); /* down since the first of these: 1.49 s */
    assert_string_equal(take(&c), "");
    buddy_fw_tick(&fw, t += 10, 1); /* 1.5 s, still held: DENY now */
    assert_string_equal(take(&c), "DENY " ID " -\n");
    for (i = 0; i < 100; i++)
        buddy_fw_tick(&fw, t += 10, i < 50); /* releasing sends nothing more */
    assert_string_equal(take(&c), "");
    assert_int_equal(c.events[BUDDY_FW_EV_DENIED], 1);

    /* 1.4 s is still a short press. */
    feed(&fw, "SHOW " ID " " NONCE " x\n");
    for (i = 0; i < 160; i++)
        buddy_fw_tick(&fw, t += 10, i < 140);
    assert_string_equal(take(&c), "APPROVE " ID " -\n");
}

static void
test_pairing_at_power_on(void **state)
{
    struct buddy_fw fw;
    struct capture c;
    uint8_t key[32];
    uint32_t t = 0;
    char line[256], mac[33];
    int i;

    /* Held from power-on for 2 s only: no pairing, and the press decides nothing. */
    fw_start(&fw, &c, NULL, 0);
    feed(&fw, "SHOW " ID " " NONCE " x\n");
    for (i = 0; i < 300; i++)
        buddy_fw_tick(&fw, t += 10, i < 200);
    assert_false(buddy_fw_pairing(&fw));
    assert_string_equal(take(&c), "");
    feed(&fw, "PAIR 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
    assert_string_equal(take(&c), "ERR not-pairing\n");
    assert_int_equal(c.stored, 0);

    /* Held 3 s from power-on: pairing mode, fast blink, PAIR stores the key once. */
    fw_start(&fw, &c, NULL, 0);
    for (i = 0; i < 310; i++)
        buddy_fw_tick(&fw, t += 10, 1);
    assert_true(buddy_fw_pairing(&fw));
    assert_int_equal(buddy_fw_led(&fw), BUDDY_LED_FAST_BLINK);
    assert_string_equal(take(&c), "");
    for (i = 0; i < 32; i++)
        key[i] = (uint8_t)(0x11 * (i % 16));
    feed(&fw, "PAIR 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
    assert_string_equal(take(&c), "");
    assert_int_equal(c.stored, 1);
    assert_memory_equal(c.stored_key, key, 32);
    assert_false(buddy_fw_pairing(&fw));
    /* The new key is in use at once... */
    feed(&fw, "HELLO 1 " NONCE "\n");
    expect_mac(key, "HELLO|AB12|" NONCE, mac);
    snprintf(line, sizeof(line), "HELLO 1 AB12 %s\n", mac);
    assert_string_equal(take(&c), line);
    /* ...and a second PAIR is refused: pairing mode ends with the first key. */
    feed(&fw, "PAIR ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\n");
    assert_string_equal(take(&c), "ERR not-pairing\n");
    assert_int_equal(c.stored, 1);
}

static void
test_pairing_flag_and_store_failure(void **state)
{
    struct buddy_fw fw;
    struct capture c;

    fw_start(&fw, &c, NULL, 1);
    assert_true(buddy_fw_pairing(&fw));
    c.store_fails = 1;
    feed(&fw, "PAIR 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
    assert_string_equal(take(&c), "ERR store-failed\n");
    assert_true(buddy_fw_pairing(&fw));
    feed(&fw, "HELLO 1 " NONCE "\n");
    assert_string_equal(take(&c), "HELLO 1 AB12 -\n"); /* still no key */
}

static void
test_err_answers(void **state)
{
    struct buddy_fw fw;
    struct capture c;
    char big[600];
    int i;

    fw_start(&fw, &c, NULL, 0);
    feed(&fw, "SHOW bad\n");
    assert_string_equal(take(&c), "ERR malformed\n");
    feed(&fw, "REBOOT\n");
    assert_string_equal(take(&c), "ERR unknown-command\n");
    feed(&fw, "APPROVE " ID " -\n"); /* a device-side message sent to the device */
    assert_string_equal(take(&c), "ERR unknown-command\n");
    feed(&fw, "ERR whatever\n"); /* never answered, or two ends could loop */
    assert_string_equal(take(&c), "");
    feed(&fw, "\n"); /* resync line */
    assert_string_equal(take(&c), "");
    for (i = 0; i < 50; i++)
        buddy_fw_feed_byte(&fw, (uint8_t)(i * 37 + 1) == '\n' ? 0 : (uint8_t)(i * 37 + 1));
    buddy_fw_feed_byte(&fw, '\n');
    assert_string_equal(take(&c), "ERR malformed\n");
    /* 199 bytes + '\n' is legal; 200 + '\n' is too long, and the next line still works. */
    memset(big, 'x', sizeof(big));
    memcpy(big, "SHOW " ID " " NONCE " ", 29);
    big[199] = '\n';
    big[200] = '\0';
    feed(&fw, big);
    assert_string_equal(take(&c), "");
    assert_string_equal(buddy_fw_shown_id(&fw), ID);
    big[199] = 'x';
    big[200] = '\n';
    big[201] = '\0';
    feed(&fw, big);
    assert_string_equal(take(&c), "ERR too-long\n");
    big[500] = '\n';
    big[501] = '\0';
    feed(&fw, big);
    assert_string_equal(take(&c), "ERR too-long\n");
    feed(&fw, "PING\n");
    assert_string_equal(take(&c), "PONG\n");
    feed(&fw, "CLEAR " ID "\n");
    assert_null(buddy_fw_shown_id(&fw));
    assert_string_equal(take(&c), "");
}

static void
test_host_timeout(void **state)
{
    struct buddy_fw fw;
    struct capture c;
    uint32_t t = 0;

    fw_start(&fw, &c, NULL, 0);
    buddy_fw_tick(&fw, t, 0);
    feed(&fw, "HELLO 1 " NONCE "\n");
    feed(&fw, "SHOW " ID " " NONCE " x\n");
    buddy_fw_tick(&fw, t += 10, 0);
    buddy_fw_tick(&fw, t += BUDDY_FW_HOST_TIMEOUT_MS - 20, 0);
    assert_int_equal(buddy_fw_led(&fw), BUDDY_LED_BLINK);
    buddy_fw_tick(&fw, t += 20, 0);
    assert_int_equal(buddy_fw_led(&fw), BUDDY_LED_OFF);
    assert_null(buddy_fw_shown_id(&fw));
    assert_int_equal(c.events[BUDDY_FW_EV_HOST_LOST], 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vs_openssl),
        cmocka_unit_test(test_hmac_vs_openssl),
        cmocka_unit_test(test_hello_show_press),
        cmocka_unit_test(test_debounce),
        cmocka_unit_test(test_long_press_denies),
        cmocka_unit_test(test_pairing_at_power_on),
        cmocka_unit_test(test_pairing_flag_and_store_failure),
        cmocka_unit_test(test_err_answers),
        cmocka_unit_test(test_host_timeout),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
