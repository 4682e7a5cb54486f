/*
 * Parser and formatter for the buddy line protocol. Strict on purpose: exactly one space
 * between fields, printable ASCII only, fixed field shapes, so a device or host never has
 * to guess. Uses only string.h (no stdio, no heap) because the firmware links it too.
 */
#include "buddy_proto.h"

#include <string.h>

#define MAX_FIELDS 5

struct fields {
    const char *p[MAX_FIELDS];
    size_t n[MAX_FIELDS];
    size_t count;
};

static int
is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Crockford base32 without I, L, O, U (upper case only: ids are written by the host). */
static int
is_crockford(char c)
{
    if (c >= '0' && c <= '9')
        return 1;
    return c >= 'A' && c <= 'Z' && c != 'I' && c != 'L' && c != 'O' && c != 'U';
}

static int
valid_hex_n(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (!is_hex_lower(s[i]))
            return 0;
    return s[n] == '\0';
}

int
buddy_valid_id(const char *s)
{
    size_t i;

    for (i = 0; i < BUDDY_ID_LEN; i++)
        if (!is_crockford(s[i]))
            return 0;
    return s[BUDDY_ID_LEN] == '\0';
}

int
buddy_valid_nonce(const char *s)
{
    return valid_hex_n(s, BUDDY_NONCE_LEN);
}

int
buddy_valid_mac(const char *s)
{
    return strcmp(s, "-") == 0 || valid_hex_n(s, BUDDY_MAC_LEN);
}

int
buddy_valid_key_hex(const char *s)
{
    return valid_hex_n(s, BUDDY_KEY_HEX_LEN);
}

int
buddy_valid_devid(const char *s)
{
    size_t i;

    for (i = 0; s[i] != '\0'; i++) {
        if (i >= BUDDY_DEVID_MAX)
            return 0;
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')))
            return 0;
    }
    return i > 0;
}

int
buddy_valid_text(const char *s)
{
    size_t i;

    for (i = 0; s[i] != '\0'; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return 0;
    return i > 0;
}

/*
 * Splits line at single spaces into at most max fields; with rest, the last field takes
 * the remainder of the line (free text). -1 on an empty field (leading, trailing or double
 * space) or on more fields than max.
 */
static int
split(const char *line, size_t len, size_t max, int rest, struct fields *f)
{
    size_t pos = 0, start;

    f->count = 0;
    for (;;) {
        if (f->count == max)
            return -1;
        start = pos;
        if (rest && f->count == max - 1)
            pos = len;
        else
            while (pos < len && line[pos] != ' ')
                pos++;
        if (pos == start)
            return -1;
        f->p[f->count] = line + start;
        f->n[f->count++] = pos - start;
        if (pos == len)
            return 0;
        pos++;
    }
}

/* Copies field i into dst[cap] and checks it with valid(); 0 ok, -1 bad. */
static int
take(const struct fields *f, size_t i, char *dst, size_t cap, int (*valid)(const char *))
{
    if (f->n[i] >= cap)
        return -1;
    memcpy(dst, f->p[i], f->n[i]);
    dst[f->n[i]] = '\0';
    return valid(dst) ? 0 : -1;
}

static int
field_is(const struct fields *f, size_t i, const char *s)
{
    return f->n[i] == strlen(s) && memcmp(f->p[i], s, f->n[i]) == 0;
}

static int
valid_reason(const char *s)
{
    return buddy_valid_text(s);
}

/* HELLO has two shapes: 3 fields from the host, 4 from the device. */
static int
parse_hello(const struct fields *f, struct buddy_msg *m)
{
    if (f->count < 3 || !field_is(f, 1, BUDDY_PROTO_VERSION))
        return -1;
    if (f->count == 3) {
        m->type = BUDDY_MSG_HELLO;
        return take(f, 2, m->nonce, sizeof(m->nonce), buddy_valid_nonce);
    }
    if (f->count != 4)
        return -1;
    m->type = BUDDY_MSG_HELLO_REPLY;
    if (take(f, 2, m->devid, sizeof(m->devid), buddy_valid_devid) < 0)
        return -1;
    return take(f, 3, m->mac, sizeof(m->mac), buddy_valid_mac);
}

/* Fills m from the split fields of a known command; -1 when a field is bad. */
static int
parse_fields(const struct fields *f, struct buddy_msg *m)
{
    if (field_is(f, 0, "HELLO"))
        return parse_hello(f, m);
    if (field_is(f, 0, "SHOW")) {
        m->type = BUDDY_MSG_SHOW;
        if (f->count != 4 || take(f, 1, m->id, sizeof(m->id), buddy_valid_id) < 0 ||
            take(f, 2, m->nonce, sizeof(m->nonce), buddy_valid_nonce) < 0)
            return -1;
        return take(f, 3, m->text, sizeof(m->text), buddy_valid_text);
    }
    if (field_is(f, 0, "CLEAR")) {
        m->type = BUDDY_MSG_CLEAR;
        return f->count == 2 ? take(f, 1, m->id, sizeof(m->id), buddy_valid_id) : -1;
    }
    if (field_is(f, 0, "PING") || field_is(f, 0, "PONG")) {
        m->type = field_is(f, 0, "PING") ? BUDDY_MSG_PING : BUDDY_MSG_PONG;
        return f->count == 1 ? 0 : -1;
    }
    if (field_is(f, 0, "PAIR")) {
        m->type = BUDDY_MSG_PAIR;
        return f->count == 2 ? take(f, 1, m->key_hex, sizeof(m->key_hex), buddy_valid_key_hex)
                             : -1;
    }
    if (field_is(f, 0, "APPROVE") || field_is(f, 0, "DENY")) {
        m->type = field_is(f, 0, "APPROVE") ? BUDDY_MSG_APPROVE : BUDDY_MSG_DENY;
        if (f->count != 3 || take(f, 1, m->id, sizeof(m->id), buddy_valid_id) < 0)
            return -1;
        return take(f, 2, m->mac, sizeof(m->mac), buddy_valid_mac);
    }
    m->type = BUDDY_MSG_ERR;
    return f->count == 2 ? take(f, 1, m->reason, sizeof(m->reason), valid_reason) : -1;
}

static int
known_command(const char *w, size_t n)
{
    static const char *const words[] = {"HELLO", "SHOW", "CLEAR", "PING", "PAIR", "APPROVE",
        "DENY", "PONG", "ERR"};
    size_t i;

    for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strlen(words[i]) == n && memcmp(words[i], w, n) == 0)
            return 1;
    return 0;
}

enum buddy_parse_result
buddy_parse_line(const char *line, size_t len, struct buddy_msg *out)
{
    struct buddy_msg m;
    struct fields f;
    size_t i, wlen;
    int text_field;

    if (len > BUDDY_LINE_MAX - 1)
        return BUDDY_PARSE_TOO_LONG;
    if (len == 0)
        return BUDDY_PARSE_MALFORMED;
    for (i = 0; i < len; i++)
        if (line[i] < 0x20 || line[i] > 0x7e)
            return BUDDY_PARSE_MALFORMED;
    for (wlen = 0; wlen < len && line[wlen] != ' ';)
        wlen++;
    if (!known_command(line, wlen)) {
        /* A command word is upper-case letters; anything else is noise, not a command. */
        for (i = 0; i < wlen; i++)
            if (line[i] < 'A' || line[i] > 'Z')
                return BUDDY_PARSE_MALFORMED;
        return wlen > 0 ? BUDDY_PARSE_UNKNOWN : BUDDY_PARSE_MALFORMED;
    }
    /* Only SHOW (4th field) and ERR (2nd field) end in free text. */
    text_field = (wlen == 4 && memcmp(line, "SHOW", 4) == 0) ? 4
                 : (wlen == 3 && memcmp(line, "ERR", 3) == 0) ? 2
                                                               : 0;
    if (split(line, len, text_field ? (size_t)text_field : MAX_FIELDS, text_field != 0, &f) < 0)
        return BUDDY_PARSE_MALFORMED;
    memset(&m, 0, sizeof(m));
    if (parse_fields(&f, &m) < 0)
        return BUDDY_PARSE_MALFORMED;
    *out = m;
    return BUDDY_PARSE_OK;
}

/* A bounded appender: once anything does not fit, the whole result is refused. */
struct out {
    char *p;
    size_t cap, len;
    int bad;
};

static void
put(struct out *o, const char *s)
{
    size_t n = strlen(s);

    if (o->bad || o->len + n + 1 > o->cap) {
        o->bad = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

/* Appends " field" after checking it; marks the output bad when invalid. */
static void
put_field(struct out *o, const char *s, int (*valid)(const char *))
{
    if (!valid(s)) {
        o->bad = 1;
        return;
    }
    put(o, " ");
    put(o, s);
}

static void
format_body(const struct buddy_msg *m, struct out *o)
{
    switch (m->type) {
    case BUDDY_MSG_HELLO:
        put(o, "HELLO " BUDDY_PROTO_VERSION);
        put_field(o, m->nonce, buddy_valid_nonce);
        break;
    case BUDDY_MSG_HELLO_REPLY:
        put(o, "HELLO " BUDDY_PROTO_VERSION);
        put_field(o, m->devid, buddy_valid_devid);
        put_field(o, m->mac, buddy_valid_mac);
        break;
    case BUDDY_MSG_SHOW:
        put(o, "SHOW");
        put_field(o, m->id, buddy_valid_id);
        put_field(o, m->nonce, buddy_valid_nonce);
        put_field(o, m->text, buddy_valid_text);
        break;
    case BUDDY_MSG_CLEAR:
        put(o, "CLEAR");
        put_field(o, m->id, buddy_valid_id);
        break;
    case BUDDY_MSG_PING:
        put(o, "PING");
        break;
    case BUDDY_MSG_PONG:
        put(o, "PONG");
        break;
    case BUDDY_MSG_PAIR:
        put(o, "PAIR");
        put_field(o, m->key_hex, buddy_valid_key_hex);
        break;
    case BUDDY_MSG_APPROVE:
    case BUDDY_MSG_DENY:
        put(o, m->type == BUDDY_MSG_APPROVE ? "APPROVE" : "DENY");
        put_field(o, m->id, buddy_valid_id);
        put_field(o, m->mac, buddy_valid_mac);
        break;
    case BUDDY_MSG_ERR:
        put(o, "ERR");
        put_field(o, strlen(m->reason) <= BUDDY_REASON_MAX ? m->reason : "", buddy_valid_text);
        break;
    default:
        o->bad = 1;
    }
}

int
buddy_format_line(const struct buddy_msg *m, char *out, size_t cap)
{
    struct out o = {out, cap, 0, 0};

    if (cap == 0)
        return -1;
    out[0] = '\0';
    format_body(m, &o);
    put(&o, "\n");
    if (o.bad || o.len > BUDDY_LINE_MAX) {
        out[0] = '\0';
        return -1;
    }
    return (int)o.len;
}

int
buddy_mac_message(enum buddy_type type, const char *a, const char *b, char *out, size_t cap)
{
    struct out o = {out, cap, 0, 0};

    if (cap == 0)
        return -1;
    out[0] = '\0';
    if (type == BUDDY_MSG_HELLO_REPLY)
        put(&o, "HELLO|");
    else if (type == BUDDY_MSG_APPROVE)
        put(&o, "APPROVE|");
    else if (type == BUDDY_MSG_DENY)
        put(&o, "DENY|");
    else
        o.bad = 1;
    put(&o, a);
    put(&o, "|");
    put(&o, b);
    return o.bad ? -1 : (int)o.len;
}

void
buddy_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int
buddy_hex_decode(const char *hex, uint8_t *out, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        int hi = hex_value(hex[2 * i]), lo;
        if (hi < 0)
            return -1;
        lo = hex_value(hex[2 * i + 1]);
        if (lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
