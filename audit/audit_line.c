/*
 * One audit record as a compact JSON line, written straight into the caller's buffer.
 * Byte for byte what the jansson tree + json_dumps(JSON_COMPACT | JSON_PRESERVE_ORDER)
 * produced before (the hash chain and old logs depend on nothing else, but verifiers and
 * readers may): '"', '\\' and controls escaped as jansson does (\b \f \n \r \t, else
 * \u00XX in upper case), DEL and valid UTF-8 written as they are. This runs once per
 * request, so it builds no tree and allocates nothing.
 */
#include "audit/audit_internal.h"

#include <stdint.h>
#include <string.h>

/* Appends a string literal (its size is known at compile time). */
#define PUT_LIT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) + sizeof(lit) - 1)

/*
 * Length (2..4) of the valid UTF-8 sequence at u, or 0. The rules are jansson's
 * (utf8_check_full): no overlong forms, no surrogates, nothing above U+10FFFF, and the
 * sequence must fit in the avail bytes left of the (possibly cut) field.
 */
static size_t
utf8_seq(const unsigned char *u, size_t avail)
{
    unsigned c = u[0];
    uint32_t v;
    size_t k, j;

    if (c >= 0xc2 && c <= 0xdf) {
        k = 2;
        v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        v = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        v = c & 0x07;
    } else {
        return 0; /* continuation byte, C0/C1 (overlong ASCII) or F5..FF */
    }
    if (k > avail)
        return 0;
    for (j = 1; j < k; j++) {
        if ((u[j] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (u[j] & 0x3f);
    }
    if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    if ((k == 3 && v < 0x800) || (k == 4 && v < 0x10000))
        return 0;
    return k;
}

/* c is '"', '\\' or below 0x20. */
static char *
put_escape(char *o, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";

    *o++ = '\\';
    switch (c) {
    case '"':
    case '\\':
        *o++ = (char)c;
        return o;
    case '\b':
        *o++ = 'b';
        return o;
    case '\f':
        *o++ = 'f';
        return o;
    case '\n':
        *o++ = 'n';
        return o;
    case '\r':
        *o++ = 'r';
        return o;
    case '\t':
        *o++ = 't';
        return o;
    default:
        o = PUT_LIT(o, "u00");
        *o++ = hex[c >> 4];
        *o++ = hex[c & 0xf];
        return o;
    }
}

/* Length of s as written: at its first '?' when cut_query, then cut at AUDIT_FIELD_MAX. */
static size_t
field_len(const char *s, int cut_query)
{
    size_t len = strnlen(s, AUDIT_FIELD_MAX + 1);
    const char *q;

    if (cut_query && (q = memchr(s, '?', len)) != NULL)
        len = (size_t)(q - s);
    if (len > AUDIT_FIELD_MAX) {
        /* Back off to a character boundary: never half a UTF-8 sequence. */
        len = AUDIT_FIELD_MAX;
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
            len--;
    }
    return len;
}

/* Bytes that need more than a copy: controls, '"', '\\' and everything >= 0x80. */
static int
special(unsigned char c)
{
    return c < 0x20 || c >= 0x80 || c == '"' || c == '\\';
}

/*
 * s as a JSON string (null for NULL). Escapes are ASCII, so a string found to be invalid
 * UTF-8 part-way can be fixed afterwards: every byte >= 0x80 already written becomes '?',
 * exactly as if those bytes had been replaced before encoding.
 */
static char *
put_string(char *o, const char *s, int cut_query)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t len, i = 0, run, k;
    int invalid = 0;
    char *start;

    if (s == NULL)
        return PUT_LIT(o, "null");
    len = field_len(s, cut_query);
    *o++ = '"';
    start = o;
    while (i < len) {
        for (run = i; run < len && !special(u[run]); run++)
            ;
        memcpy(o, u + i, run - i);
        o += run - i;
        if ((i = run) == len)
            break;
        if (u[i] < 0x80) {
            o = put_escape(o, u[i++]);
        } else if ((k = utf8_seq(u + i, len - i)) != 0) {
            memcpy(o, u + i, k);
            o += k;
            i += k;
        } else {
            invalid = 1;
            *o++ = (char)u[i++];
        }
    }
    for (; invalid && start < o; start++)
        if ((unsigned char)*start >= 0x80)
            *start = '?';
    *o++ = '"';
    return o;
}

/* Our own ASCII text (ts, prev): nothing to escape or cut. */
static char *
put_plain(char *o, const char *s)
{
    size_t n = strlen(s);

    *o++ = '"';
    memcpy(o, s, n);
    o += n;
    *o++ = '"';
    return o;
}

static char *
put_u64(char *o, uint64_t v)
{
    char digits[20];
    int n = 0;

    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        *o++ = digits[--n];
    return o;
}

/* v as jansson's "%lld"; 0 as null when zero_is_null. */
static char *
put_int(char *o, long long v, int zero_is_null)
{
    if (v == 0 && zero_is_null)
        return PUT_LIT(o, "null");
    if (v < 0) {
        *o++ = '-';
        return put_u64(o, (uint64_t)(-(v + 1)) + 1);
    }
    return put_u64(o, (uint64_t)v);
}

/* Counters are JSON integers; jansson's are int64, so larger values were clamped. */
static long long
clamp_u64(uint64_t v)
{
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (long long)v;
}

size_t
audit_line_encode(char *out, const struct audit_record *r, const char *ts, const char *prev)
{
    char *o = out;

    o = put_plain(PUT_LIT(o, "{\"ts\":"), ts);
    o = put_string(PUT_LIT(o, ",\"id\":"), r->id, 0);
    o = put_string(PUT_LIT(o, ",\"agent\":"), r->agent, 0);
    o = put_string(PUT_LIT(o, ",\"via\":"), r->via, 0);
    o = put_string(PUT_LIT(o, ",\"host\":"), r->host, 0);
    o = put_int(PUT_LIT(o, ",\"port\":"), r->port, 1);
    o = put_string(PUT_LIT(o, ",\"method\":"), r->method, 0);
    o = put_string(PUT_LIT(o, ",\"path\":"), r->path, 1);
    o = put_string(PUT_LIT(o, ",\"rule\":"), r->rule, 0);
    o = put_string(PUT_LIT(o, ",\"decision\":"), r->decision, 0);
    o = put_string(PUT_LIT(o, ",\"credential\":"), r->credential, 0);
    o = put_string(PUT_LIT(o, ",\"approver\":"), r->approver, 0);
    o = put_int(PUT_LIT(o, ",\"status\":"), r->status, 1);
    o = put_int(PUT_LIT(o, ",\"bytes_up\":"), clamp_u64(r->bytes_up), 0);
    o = put_int(PUT_LIT(o, ",\"bytes_down\":"), clamp_u64(r->bytes_down), 0);
    o = put_int(PUT_LIT(o, ",\"ms\":"), clamp_u64(r->ms), 0);
    o = put_plain(PUT_LIT(o, ",\"prev\":"), prev);
    o = PUT_LIT(o, "}\n");
    return (size_t)(o - out);
}
