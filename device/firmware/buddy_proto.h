/*
 * The buddy line protocol (SPEC §7), version 1: one parser and one formatter shared by
 * the daemon (device/link.c), the simulator and the firmware. Pure C with string.h and
 * stdint.h only, no heap, so it builds unchanged for an 8-bit microcontroller.
 */
#ifndef AIRLOCK_BUDDY_PROTO_H
#define AIRLOCK_BUDDY_PROTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the Arduino sketch is C++ */
#endif

#define BUDDY_PROTO_VERSION "1"
#define BUDDY_LINE_MAX 200 /* bytes on the wire, including the '\n' */
#define BUDDY_ID_LEN 6     /* Crockford base32, upper case */
#define BUDDY_NONCE_LEN 16 /* lower-case hex */
#define BUDDY_MAC_LEN 32   /* lower-case hex: first 16 bytes of HMAC-SHA256 */
#define BUDDY_DEVID_MAX 16 /* [A-Z0-9]{1,16} */
#define BUDDY_KEY_LEN 32
#define BUDDY_KEY_HEX_LEN 64
#define BUDDY_REASON_MAX 63
/* The longest SHOW text: a line of 199 characters minus "SHOW <id> <nonce> ". */
#define BUDDY_TEXT_MAX (BUDDY_LINE_MAX - 1 - 5 - BUDDY_ID_LEN - 1 - BUDDY_NONCE_LEN - 1)

enum buddy_type {
    BUDDY_MSG_NONE = 0,
    /* host -> device */
    BUDDY_MSG_HELLO, /* HELLO 1 <hnonce> (nonce) */
    BUDDY_MSG_SHOW,  /* SHOW <id> <nonce> <text> */
    BUDDY_MSG_CLEAR, /* CLEAR <id> */
    BUDDY_MSG_PING,
    BUDDY_MSG_PAIR, /* PAIR <key-hex> (key_hex) */
    /* device -> host */
    BUDDY_MSG_HELLO_REPLY, /* HELLO 1 <devid> <mac> */
    BUDDY_MSG_APPROVE,     /* APPROVE <id> <mac> */
    BUDDY_MSG_DENY,        /* DENY <id> <mac> */
    BUDDY_MSG_PONG,
    BUDDY_MSG_ERR, /* ERR <reason> (reason: printable, 1..63 chars) */
};

/* Fields not used by a message type are empty strings. */
struct buddy_msg {
    enum buddy_type type;
    char id[BUDDY_ID_LEN + 1];
    char nonce[BUDDY_NONCE_LEN + 1];
    char devid[BUDDY_DEVID_MAX + 1];
    char mac[BUDDY_MAC_LEN + 1]; /* or "-" when auth is none */
    char text[BUDDY_LINE_MAX];
    char key_hex[BUDDY_KEY_HEX_LEN + 1];
    char reason[BUDDY_REASON_MAX + 1];
};

enum buddy_parse_result {
    BUDDY_PARSE_OK = 0,
    BUDDY_PARSE_MALFORMED = -1, /* bad field, bad separator, non-printable byte, empty */
    BUDDY_PARSE_TOO_LONG = -2,  /* more than BUDDY_LINE_MAX - 1 bytes before the '\n' */
    BUDDY_PARSE_UNKNOWN = -3,   /* well-formed word that is no command of version 1 */
};

/*
 * Parses one line WITHOUT its '\n' (len bytes; NUL bytes are just invalid bytes). Fills
 * *out only on BUDDY_PARSE_OK; never reads past len.
 */
enum buddy_parse_result buddy_parse_line(const char *line, size_t len, struct buddy_msg *out);

/*
 * Formats m as a wire line ending in '\n', NUL-terminated, into out[cap]. Every field is
 * validated as the parser would; returns the line length (with '\n', at most
 * BUDDY_LINE_MAX) or -1 when a field is invalid or the line would not fit.
 */
int buddy_format_line(const struct buddy_msg *m, char *out, size_t cap);

/*
 * The string a mac covers: "HELLO|devid|hnonce" (type HELLO_REPLY, a = devid, b = hnonce),
 * "APPROVE|id|nonce" or "DENY|id|nonce". Returns its length, or -1 (bad type or cap).
 */
int buddy_mac_message(enum buddy_type type, const char *a, const char *b, char *out,
    size_t cap);

/* Field validators (NUL-terminated input): 1 valid, 0 not. */
int buddy_valid_id(const char *s);
int buddy_valid_nonce(const char *s);
int buddy_valid_mac(const char *s); /* 32 lower hex, or "-" */
int buddy_valid_devid(const char *s);
int buddy_valid_key_hex(const char *s);
int buddy_valid_text(const char *s); /* printable ASCII, non-empty */

/* Lower-case hex of n bytes into out (2n + 1). */
void buddy_hex_encode(const uint8_t *in, size_t n, char *out);
/* Exactly 2n lower-case hex characters into out[n]; -1 on a bad character. */
int buddy_hex_decode(const char *hex, uint8_t *out, size_t n);

#ifdef __cplusplus
}
#endif

#endif
