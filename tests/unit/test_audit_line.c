/*
 * Unit tests for the audit line encoder: its output must be byte for byte what the old
 * jansson-based writer produced (reference below, kept verbatim in spirit: json_stringn,
 * the '?' fallback for invalid UTF-8, json_dumps compact in insertion order), for a table
 * of tricky strings, cut lengths, integer edges and a seeded random mix; and audit_log
 * must write exactly that line with a correct timestamp and chain.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "audit/audit.h"
#include "audit/audit_internal.h"
#include "common/util.h"

static const char TS[] = "2026-12-01T16:14:41.094Z";
static const char PREV[] = "0dc1113eca47faf7fbaf6956458f45c02510dc605cea4f3cae18aef603dc4bce";

/* ---- reference: the writer as it was before the direct encoder ---- */

static json_t *
ref_field(const char *s, int cut_query)
{
    size_t len = strlen(s), i;
    json_t *j;
    char *copy;

    if (cut_query && strchr(s, '?') != NULL)
        len = (size_t)(strchr(s, '?') - s);
    if (len > AUDIT_FIELD_MAX) {
        len = AUDIT_FIELD_MAX;
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
            len--;
    }
    if ((j = json_stringn(s, len)) != NULL)
        return j;
    copy = malloc(len + 1);
    assert_non_null(copy);
    for (i = 0; i < len; i++)
        copy[i] = (unsigned char)s[i] >= 0x80 ? '?' : s[i];
    j = json_stringn(copy, len);
    free(copy);
    return j;
}

static void
ref_str(json_t *o, const char *key, const char *s)
{
    json_t *v = s == NULL ? json_null() : ref_field(s, strcmp(key, "path") == 0);

    assert_non_null(v);
    assert_int_equal(json_object_set_new(o, key, v), 0);
}

static void
ref_int(json_t *o, const char *key, long long v, int zero_is_null)
{
    assert_int_equal(
        json_object_set_new(o, key, v == 0 && zero_is_null ? json_null() : json_integer(v)), 0);
}

static long long
ref_clamp(uint64_t v)
{
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (long long)v;
}

/* The old line, newline included; malloc'd. */
static char *
ref_line(const struct audit_record *r, const char *ts, const char *prev)
{
    json_t *o = json_object();
    char *s, *line;

    assert_non_null(o);
    ref_str(o, "ts", ts);
    ref_str(o, "id", r->id);
    ref_str(o, "agent", r->agent);
    ref_str(o, "via", r->via);
    ref_str(o, "host", r->host);
    ref_int(o, "port", r->port, 1);
    ref_str(o, "method", r->method);
    ref_str(o, "path", r->path);
    ref_str(o, "rule", r->rule);
    ref_str(o, "decision", r->decision);
    ref_str(o, "credential", r->credential);
    ref_str(o, "approver", r->approver);
    ref_int(o, "status", r->status, 1);
    ref_int(o, "bytes_up", ref_clamp(r->bytes_up), 0);
    ref_int(o, "bytes_down", ref_clamp(r->bytes_down), 0);
    ref_int(o, "ms", ref_clamp(r->ms), 0);
    ref_str(o, "prev", prev);
    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(s);
    json_decref(o);
    line = malloc(strlen(s) + 2);
    assert_non_null(line);
    sprintf(line, "%s\n", s);
    free(s);
    return line;
}

/* ---- helpers ---- */

static void
rec_all(struct audit_record *r, const char *s)
{
    memset(r, 0, sizeof(*r));
    r->id = r->agent = r->via = r->host = r->method = r->path = s;
    r->rule = r->decision = r->credential = r->approver = s;
    r->port = 443;
    r->status = 200;
    r->bytes_up = 1;
    r->bytes_down = 22;
    r->ms = 333;
}

/* Encodes r both ways and fails, showing both lines, when they differ. */
static void
check(const struct audit_record *r, const char *what)
{
    char *out = malloc(AUDIT_LINE_MAX), *want = ref_line(r, TS, PREV);
    size_t len;

    assert_non_null(out);
    len = audit_line_encode(out, r, TS, PREV);
    assert_true(len <= AUDIT_LINE_MAX);
    if (len != strlen(want) || memcmp(out, want, len) != 0) {
        print_error("%s:\n got: %.*s want: %s", what, (int)len, out, want);
        fail();
    }
    free(want);
    free(out);
}

/* ---- tests ---- */

static const char *const tricky[] = {
    "",
    "plain",
    "\"quoted\" \\back\\slash/ and /slashes/",
    "\b\f\n\r\t\x01\x02\x1b\x1f\x7f", /* controls; DEL is not escaped */
    "a\x01z",
    "caf\xc3\xa9",
    "\xe2\x82\xac euro",
    "\xf0\x9f\x98\x80 emoji",
    "\xef\xbf\xbf",     /* U+FFFF: valid */
    "\xf4\x8f\xbf\xbf", /* U+10FFFF: valid */
    "\xf4\x90\x80\x80", /* above U+10FFFF */
    "\xed\xa0\x80",     /* surrogate */
    "\xed\xbf\xbf",     /* surrogate */
    "\xed\x9f\xbf",     /* U+D7FF: valid */
    "\xc0\xaf",         /* overlong */
    "\xc1\xbf",         /* overlong */
    "\xe0\x80\xaf",     /* overlong */
    "\xe0\x9f\xbf",     /* overlong */
    "\xe0\xa0\x80",     /* U+0800: valid */
    "\xf0\x80\x80\xaf", /* overlong */
    "\xf0\x8f\xbf\xbf", /* overlong */
    "\xf0\x90\x80\x80", /* U+10000: valid */
    "\x80 lone continuation",
    "\xbf",
    "x\xc3", /* truncated sequences */
    "x\xe2\x82",
    "\xf0\x9f\x98",
    "\xc3(", /* bad continuation bytes */
    "\xe2(\xa1",
    "\xf5\x80\x80\x80", /* never-valid lead bytes */
    "\xf8\x88\x80\x80\x80",
    "\xfe\xff",
    "\xc3\xa9\xff\n\"", /* valid, then invalid: every high byte becomes '?' */
    "ok\xc3\xa9 then bad \x80 and \\ and \x01",
    "/a?b=\xff", /* for path: the invalid byte is in the cut query */
    "\xc3?x",    /* for path: the cut leaves a truncated sequence */
    "?",
    "a?b?c",
    "/p?",
    "/\xe2\x82\xac?q=\xe2\x82",
    "?\x01\xff",
};

static void
test_tricky_strings(void **state)
{
    struct audit_record r;
    size_t i;

    for (i = 0; i < sizeof(tricky) / sizeof(tricky[0]); i++) {
        rec_all(&r, tricky[i]);
        check(&r, tricky[i]);
        /* Also alone among ordinary fields and nulls. */
        memset(&r, 0, sizeof(r));
        r.host = tricky[i];
        r.path = tricky[i];
        r.decision = "deny";
        check(&r, tricky[i]);
    }
}

static void
test_integers_and_nulls(void **state)
{
    static const int statuses[] = {0, 1, -1, 200, 599, INT_MAX, INT_MIN};
    static const uint64_t counts[] = {
        0,         1, 9, 10, 99, 100, 4294967296ULL, (uint64_t)INT64_MAX, (uint64_t)INT64_MAX + 1,
        UINT64_MAX};
    struct audit_record r;
    size_t i;

    memset(&r, 0, sizeof(r));
    check(&r, "all null");
    for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        rec_all(&r, "x");
        r.port = (uint16_t)(i == 0 ? 0 : i == 1 ? 65535 : i);
        r.status = statuses[i % (sizeof(statuses) / sizeof(statuses[0]))];
        r.bytes_up = counts[i];
        r.bytes_down = counts[(i + 3) % (sizeof(counts) / sizeof(counts[0]))];
        r.ms = counts[(i + 7) % (sizeof(counts) / sizeof(counts[0]))];
        check(&r, "integers");
    }
}

/* n copies of unit (len bytes each) then tail, in a malloc'd string. */
static char *
repeat(const char *unit, size_t n, const char *tail)
{
    size_t ul = strlen(unit), tl = strlen(tail), i;
    char *s = malloc(ul * n + tl + 1);

    assert_non_null(s);
    for (i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    memcpy(s + ul * n, tail, tl + 1);
    return s;
}

static void
test_cut_lengths(void **state)
{
    struct audit_record r;
    char *s;
    size_t i;
    struct {
        const char *unit;
        size_t n;
        const char *tail;
    } cases[] = {
        {"a", AUDIT_FIELD_MAX - 1, ""},
        {"a", AUDIT_FIELD_MAX, ""},
        {"a", AUDIT_FIELD_MAX + 1, ""},
        {"a", AUDIT_FIELD_MAX - 1, "\xc3\xa9zz"}, /* é straddling the cut */
        {"a", AUDIT_FIELD_MAX, "\xff"},           /* invalid byte only past the cut */
        {"a", AUDIT_FIELD_MAX - 1, "\xff"},       /* invalid byte just inside */
        {"a", 3000, "?q=1"},                      /* path: '?' past the cut */
        {"a", 100, "?q=\xff"},                    /* path: invalid byte in the query */
        {"\xe2\x82\xac", 700, ""},                /* cut backs off to a 3-byte boundary */
        {"\xf0\x9f\x98\x80", 600, ""},
        {"\x01", AUDIT_FIELD_MAX + 5, ""}, /* most escapes */
        {"\"", 3000, ""},
        {"\xc3\xa9", 1500, "\x80"},
        {"\x80", 3000, ""},
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        s = repeat(cases[i].unit, cases[i].n, cases[i].tail);
        rec_all(&r, s);
        check(&r, "long field");
        free(s);
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t
next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* A string of 0..11 fragments drawn from the table plus single random bytes. */
static void
random_string(char *s, size_t cap)
{
    size_t len = 0, k, n = next_rand() % 12, fl;
    const char *f;
    char byte[2];

    for (k = 0; k < n; k++) {
        if (next_rand() % 4 == 0) {
            byte[0] = (char)(1 + next_rand() % 255);
            byte[1] = '\0';
            f = byte;
        } else {
            f = tricky[next_rand() % (sizeof(tricky) / sizeof(tricky[0]))];
        }
        fl = strlen(f);
        if (len + fl >= cap)
            break;
        memcpy(s + len, f, fl);
        len += fl;
    }
    s[len] = '\0';
}

static void
test_random_mix(void **state)
{
    char buf[10][256];
    const char **fields[10];
    struct audit_record r;
    int i, f;

    for (i = 0; i < 3000; i++) {
        memset(&r, 0, sizeof(r));
        fields[0] = &r.id, fields[1] = &r.agent, fields[2] = &r.via, fields[3] = &r.host;
        fields[4] = &r.method, fields[5] = &r.path, fields[6] = &r.rule;
        fields[7] = &r.decision, fields[8] = &r.credential, fields[9] = &r.approver;
        for (f = 0; f < 10; f++) {
            random_string(buf[f], sizeof(buf[f]));
            *fields[f] = next_rand() % 5 == 0 ? NULL : buf[f];
        }
        r.port = (uint16_t)next_rand();
        r.status = (int)(next_rand() % 700);
        r.bytes_down = next_rand();
        check(&r, "random");
    }
}

/* audit_log writes exactly the reference line, with its own ts and a correct chain. */
static void
test_written_line_matches(void **state)
{
    char dir[] = "/tmp/airlock-auditline-XXXXXX", path[64], before[40], after[40], ts[40];
    char prev[SHA256_HEX_LEN + 1], *s, *line, *nl, *want;
    struct audit_record r;
    struct audit *a;
    struct err err;
    size_t len;
    int i;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
    a = audit_open(path, &err);
    assert_non_null(a);
    rec_all(&r, "t\xc3\xa9st \"\x01\" /x?y \xff");
    /* Records 300 ms apart, so the cached second is re-formatted at least once. */
    for (i = 0; i < 5; i++) {
        util_rfc3339_ms(util_wall_ms(), before, sizeof(before));
        assert_int_equal(audit_log(a, &r, &err), 0);
        util_rfc3339_ms(util_wall_ms(), after, sizeof(after));
        s = util_read_file(path, 1 << 20, &len);
        assert_non_null(s);
        line = s;
        memset(prev, '0', SHA256_HEX_LEN);
        prev[SHA256_HEX_LEN] = '\0';
        while ((nl = strchr(line, '\n')) != NULL && nl[1] != '\0') {
            util_sha256_hex(line, (size_t)(nl - line), prev);
            line = nl + 1;
        }
        assert_int_equal(strncmp(line, "{\"ts\":\"", 7), 0);
        assert_true(strlen(before) < sizeof(ts) && strchr(line + 7, '"') != NULL);
        snprintf(ts, sizeof(ts), "%.*s", (int)(strchr(line + 7, '"') - (line + 7)), line + 7);
        /* Same-length RFC 3339 texts order like the times they name. */
        assert_int_equal(strlen(ts), strlen(before));
        assert_true(strcmp(before, ts) <= 0 && strcmp(ts, after) <= 0);
        want = ref_line(&r, ts, prev);
        assert_string_equal(line, want);
        free(want);
        free(s);
        usleep(300 * 1000);
    }
    audit_close(a);
    unlink(path);
    rmdir(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tricky_strings),       cmocka_unit_test(test_integers_and_nulls),
        cmocka_unit_test(test_cut_lengths),          cmocka_unit_test(test_random_mix),
        cmocka_unit_test(test_written_line_matches),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
