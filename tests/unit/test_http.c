/* Unit tests for proxy/http: head scanning limits, request smuggling cases with their exact
 * statuses, response framing, keep-alive, target helpers, suspicious paths and the chunked
 * framer fed across every split point. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http.h"

static long
scan(const char *s)
{
    return http_head_scan(s, strlen(s));
}

static void
test_head_scan(void **state)
{
    char *big;

    assert_int_equal(scan("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 27);
    assert_int_equal(scan("GET / HTTP/1.1\r\nHost: a\r\n\r\nextra"), 27);
    assert_int_equal(scan("GET / HTTP/1.1\r\nHost: a\r\n"), 0);
    assert_int_equal(scan("GET / HTTP/1.1\r\nHost: a\r\n\r"), 0);
    assert_int_equal(scan("GET / HTTP/1.1\r"), 0);
    assert_int_equal(scan(""), 0);
    assert_int_equal(scan("\r"), 0);
    assert_int_equal(scan("\r\n\r\nGET / HTTP/1.1\r\n\r\n"), 22);
    assert_int_equal(scan("GET / HTTP/1.1\nHost: a\r\n\r\n"), -400);
    assert_int_equal(scan("GET / HTTP/1.1\r\nHost: a\n\n"), -400);
    assert_int_equal(scan("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), -400);
    assert_int_equal(scan("\n"), -400);
    assert_int_equal(scan("\r\r"), -400);
    assert_int_equal(http_head_scan("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 26), -400);
    assert_int_equal(scan("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"), 34);
    assert_int_equal(scan("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"), -400);

    big = malloc(HTTP_MAX_HEAD + 100);
    assert_non_null(big);
    /* A line of exactly HTTP_MAX_LINE bytes is fine; one more is 431 even before its CRLF. */
    memset(big, 'a', HTTP_MAX_HEAD + 100);
    memcpy(big, "GET /", 5);
    memcpy(big + HTTP_MAX_LINE - 9, " HTTP/1.1\r\n\r\n", 13);
    assert_int_equal(http_head_scan(big, HTTP_MAX_LINE + 4), HTTP_MAX_LINE + 4);
    memset(big, 'a', HTTP_MAX_HEAD + 100);
    assert_int_equal(http_head_scan(big, HTTP_MAX_LINE), 0);
    assert_int_equal(http_head_scan(big, HTTP_MAX_LINE + 1), -431);
    /* Many short lines without an end: 431 once HTTP_MAX_HEAD is reached. */
    for (size_t i = 0; i + 5 <= HTTP_MAX_HEAD + 100; i += 5)
        memcpy(big + i, "a:b\r\n", 5);
    assert_int_equal(http_head_scan(big, HTTP_MAX_HEAD - 1), 0);
    assert_int_equal(http_head_scan(big, HTTP_MAX_HEAD + 100), -431);
    free(big);
}

/* Parses s as a request; returns 0 or the refusal status. */
static int
req_status(const char *s)
{
    struct http_msg m;
    int status = 0, r;

    r = http_parse_request(s, strlen(s), &m, &status);
    http_msg_clear(&m);
    return r == 0 ? 0 : status;
}

static void
test_request_refusals(void **state)
{
    static const struct {
        const char *head;
        int status;
    } cases[] = {
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400},
        {"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n: b\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX(y): b\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX: a\x01z\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX: a\x7fz\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX: a\rz\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX: a\nz: b\r\n\r\n", 400},
        {"GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1 \r\n\r\n", 400},
        {"GET /  HTTP/1.1\r\n\r\n", 400},
        {"GET /\tHTTP/1.1\r\n\r\n", 400},
        {"GET / http/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1x\r\n\r\n", 400},
        {"GET /\r\n\r\n", 400},
        {" GET / HTTP/1.1\r\n\r\n", 400},
        {"G(T / HTTP/1.1\r\n\r\n", 400},
        {"GET /\x80 HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/2.0\r\n\r\n", 505},
        {"GET / HTTP/1.2\r\n\r\n", 505},
        {"GET / HTTP/0.9\r\n\r\n", 505},
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\n", 400},
        {"\r\n", 400},
        {"", 400},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = req_status(cases[i].head);
        if (st != cases[i].status)
            fail_msg("case %zu: got %d, want %d: %s", i, st, cases[i].status, cases[i].head);
    }
}

static void
test_request_limits(void **state)
{
    size_t cap = HTTP_MAX_HEAD + 200, n = 0;
    char *b = malloc(cap);
    int i;

    assert_non_null(b);
    n = (size_t)sprintf(b, "GET / HTTP/1.1\r\n");
    for (i = 0; i < HTTP_MAX_HEADERS; i++)
        n += (size_t)sprintf(b + n, "X-%d: v\r\n", i);
    memcpy(b + n, "\r\n", 3);
    assert_int_equal(req_status(b), 0);
    n += (size_t)sprintf(b + n, "X-last: v\r\n\r\n");
    assert_int_equal(req_status(b), 431);

    /* A header line over HTTP_MAX_LINE. */
    n = (size_t)sprintf(b, "GET / HTTP/1.1\r\nX: ");
    memset(b + n, 'v', HTTP_MAX_LINE);
    n += HTTP_MAX_LINE;
    memcpy(b + n, "\r\n\r\n", 5);
    assert_int_equal(req_status(b), 431);
    assert_int_equal(http_head_scan(b, strlen(b)), -431);
    free(b);
}

static void
test_request_good(void **state)
{
    struct http_msg m;
    int status = 0;
    const char *h = "\r\nPOST http://api.example.com/x?y=1 HTTP/1.1\r\nHost: api.example.com\r\n"
                    "content-length: 12\r\nContent-Length:12\r\nX-Empty:\r\n"
                    "X-Pad: \t padded value \t\r\nExpect: 100-Continue\r\nX-Obs: caf\xc3\xa9\r\n\r\n";

    assert_int_equal(http_parse_request(h, strlen(h), &m, &status), 0);
    assert_string_equal(m.method, "POST");
    assert_string_equal(m.target, "http://api.example.com/x?y=1");
    assert_int_equal(m.version_minor, 1);
    assert_int_equal(m.nhdrs, 7);
    /* The header table is sized to the head, not HTTP_MAX_HEADERS slots per message. */
    assert_true(m.hdrs_cap >= m.nhdrs && m.hdrs_cap <= 10);
    assert_int_equal(m.body, HTTP_BODY_LENGTH);
    assert_int_equal(m.content_length, 12);
    assert_true(m.keep_alive);
    assert_true(m.expect_continue);
    assert_false(m.upgrade_websocket);
    assert_string_equal(http_msg_header(&m, "x-pad"), "padded value");
    assert_string_equal(http_msg_header(&m, "X-EMPTY"), "");
    assert_string_equal(http_msg_header(&m, "content-LENGTH"), "12");
    assert_int_equal(http_msg_header_count(&m, "Content-Length"), 2);
    assert_int_equal(http_msg_header_count(&m, "Nope"), 0);
    assert_null(http_msg_header(&m, "Nope"));
    http_msg_clear(&m);
    assert_null(m.raw);
    assert_null(m.hdrs);
    http_msg_clear(&m);
    http_msg_clear(NULL);

    h = "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nConnection: Upgrade, close\r\n"
        "Upgrade: WebSocket\r\n\r\n";
    assert_int_equal(http_parse_request(h, strlen(h), &m, &status), 0);
    assert_int_equal(m.body, HTTP_BODY_CHUNKED);
    assert_false(m.keep_alive);
    assert_true(m.upgrade_websocket);
    http_msg_clear(&m);

    h = "GET / HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(http_parse_request(h, strlen(h), &m, &status), 0);
    assert_int_equal(m.version_minor, 0);
    assert_int_equal(m.body, HTTP_BODY_NONE);
    assert_false(m.keep_alive);
    http_msg_clear(&m);

    h = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
    assert_int_equal(http_parse_request(h, strlen(h), &m, &status), 0);
    assert_true(m.keep_alive);
    http_msg_clear(&m);

    h = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: keep-alive,"
        "  Upgrade\r\nConnection: close\r\n\r\n";
    assert_int_equal(http_parse_request(h, strlen(h), &m, &status), 0);
    assert_string_equal(m.target, "example.com:443");
    assert_false(m.keep_alive);
    assert_false(m.upgrade_websocket);
    http_msg_clear(&m);
}

static int
resp(const char *h, const char *method, struct http_msg *m)
{
    return http_parse_response(h, strlen(h), method, m);
}

static void
test_response(void **state)
{
    struct http_msg m;

    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", &m), 0);
    assert_int_equal(m.status, 200);
    assert_string_equal(m.reason, "OK");
    assert_int_equal(m.body, HTTP_BODY_LENGTH);
    assert_int_equal(m.content_length, 5);
    assert_true(m.keep_alive);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", &m), 0);
    assert_int_equal(m.body, HTTP_BODY_NONE);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", &m), 0);
    assert_int_equal(m.body, HTTP_BODY_NONE);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.1 407 No\r\n\r\n", "CONNECT", &m), 0);
    assert_int_equal(m.body, HTTP_BODY_CLOSE);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", "GET", &m), 0);
    assert_int_equal(m.body, HTTP_BODY_NONE);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.1 304 Not Modified\r\n\r\n", "GET", &m), 0);
    assert_int_equal(m.body, HTTP_BODY_NONE);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.1 100 Continue\r\n\r\n", "POST", &m), 0);
    assert_int_equal(m.body, HTTP_BODY_NONE);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.1 101 Switching\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                         "GET", &m), 0);
    assert_true(m.upgrade_websocket);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "GET", &m), 0);
    assert_int_equal(m.body, HTTP_BODY_CHUNKED);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", &m), 0);
    assert_int_equal(m.body, HTTP_BODY_CLOSE);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.0 200\r\n\r\n", "GET", &m), 0);
    assert_string_equal(m.reason, "");
    assert_int_equal(m.body, HTTP_BODY_CLOSE);
    assert_false(m.keep_alive);
    http_msg_clear(&m);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                         "GET", &m), 0);
    assert_int_equal(m.body, HTTP_BODY_NONE);
    assert_false(m.keep_alive);
    http_msg_clear(&m);

    static const char *bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\n folded\r\n\r\n", "HTTP/2.0 200 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 099 OK\r\n\r\n", "HTTP/1.1 200OK\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n", "HTTP/1.1 200 O\x01K\r\n\r\n", "\r\nHTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\nX: y\r\n\r\n", "ICY 200 OK\r\n\r\n", "HTTP/1.1 200 OK\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (resp(bad[i], "GET", &m) != -1)
            fail_msg("accepted response %zu: %s", i, bad[i]);
        http_msg_clear(&m);
    }
}

static void
test_tokens(void **state)
{
    assert_true(http_header_has_token("keep-alive, Upgrade", "upgrade"));
    assert_true(http_header_has_token("close", "close"));
    assert_true(http_header_has_token(" a ,\tclose\t", "close"));
    assert_false(http_header_has_token("closed", "close"));
    assert_false(http_header_has_token("not-close", "close"));
    assert_false(http_header_has_token("", "close"));
    assert_false(http_header_has_token(",,", "close"));
    assert_false(http_header_has_token(NULL, "close"));
}

static void
test_absolute(void **state)
{
    char host[NET_HOST_MAX + 1];
    enum net_host_kind kind;
    uint16_t port;
    const char *path;

    assert_int_equal(http_parse_absolute("http://API.Example.com/a/b?c=d", host, sizeof(host),
                         &kind, &port, &path), 0);
    assert_string_equal(host, "api.example.com");
    assert_int_equal(kind, NET_HOST_NAME);
    assert_int_equal(port, 80);
    assert_string_equal(path, "/a/b?c=d");
    assert_int_equal(http_parse_absolute("HTTP://example.com:8080", host, sizeof(host), &kind,
                         &port, &path), 0);
    assert_int_equal(port, 8080);
    assert_string_equal(path, "/");
    assert_int_equal(http_parse_absolute("http://[::1]:3000/x", host, sizeof(host), &kind, &port,
                         &path), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(kind, NET_HOST_IPV6);
    assert_int_equal(port, 3000);
    assert_int_equal(http_parse_absolute("http://127.0.0.1/", host, sizeof(host), &kind, &port,
                         &path), 0);
    assert_int_equal(kind, NET_HOST_IPV4);

    static const char *bad[] = {"https://example.com/", "/relative", "http:/example.com/",
        "http://", "http:///x", "http://user@example.com/", "http://a.com@b.com/",
        "http://example.com:/", "http://example.com:0/", "http://example.com:65536/",
        "http://example.com:123456/", "http://example.com:8o/", "http://example.com#f",
        "http://example.com/#frag", "http://example.com?q", "http://2130706433/",
        "http://0x7f.0.0.1/", "http://127.1/", "http://[::1/", "http://::1/",
        "http://ex ample.com/", "ftp://example.com/", "http://exa%6dple.com/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (http_parse_absolute(bad[i], host, sizeof(host), &kind, &port, &path) != -1)
            fail_msg("accepted %s", bad[i]);
}

static void
test_authority(void **state)
{
    char host[NET_HOST_MAX + 1];
    enum net_host_kind kind;
    uint16_t port;

    assert_int_equal(http_parse_authority("Example.COM.:443", host, sizeof(host), &kind, &port), 0);
    assert_string_equal(host, "example.com");
    assert_int_equal(port, 443);
    assert_int_equal(http_parse_authority("[2001:DB8::1]:8443", host, sizeof(host), &kind, &port),
        0);
    assert_string_equal(host, "2001:db8::1");
    assert_int_equal(port, 8443);
    assert_int_equal(http_parse_authority("10.0.0.1:65535", host, sizeof(host), &kind, &port), 0);
    assert_int_equal(kind, NET_HOST_IPV4);
    assert_int_equal(port, 65535);

    static const char *bad[] = {"example.com", "example.com:", "example.com:0",
        "example.com:65536", ":443", "[::1]", "::1:443", "[::1]443", "a@example.com:443",
        "example.com:443/", "0177.0.0.1:443", "example.com:-1", "example.com:+443", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (http_parse_authority(bad[i], host, sizeof(host), &kind, &port) != -1)
            fail_msg("accepted %s", bad[i]);
}

static void
test_paths(void **state)
{
    char out[8];
    static const char *sus[] = {"/a/../b", "/a/./b", "/..", "/.", "/a/..", "/a/.", "/a//b",
        "//a", "/a\\b", "/a%2fb", "/a%2Fb", "/%2e%2e/x", "/a%2E", "/a%5cb", "/a%5C", "a/b", "",
        "*", "/a/..;/b", "/a/.;x/b", "/a/..?x"};
    static const char *ok[] = {"/", "/a/b", "/a/b/", "/a.b/c..d/...", "/.well-known/x",
        "/a?x=/../", "/a?x=%2f", "/%41b", "/a%2", "/a%", "/a;b/c"};
    size_t i;

    assert_int_equal(http_path_only("/a/b?c", out, sizeof(out)), 0);
    assert_string_equal(out, "/a/b");
    assert_int_equal(http_path_only("/1234567", out, sizeof(out)), -1);
    assert_int_equal(http_path_only("/123456?long query", out, sizeof(out)), 0);
    assert_string_equal(out, "/123456");
    for (i = 0; i < sizeof(sus) / sizeof(sus[0]); i++)
        if (http_path_is_suspicious(sus[i]) != 1)
            fail_msg("not suspicious: %s", sus[i]);
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (http_path_is_suspicious(ok[i]) != 0)
            fail_msg("suspicious: %s", ok[i]);
}

/* Feeds body in two parts split at every point; the end must be found at want. */
static void
chunked_expect(const char *body, size_t len, int want_r, size_t want_used)
{
    for (size_t cut = 0; cut <= len; cut++) {
        struct http_chunked c;
        size_t u1 = 0, u2 = 0;
        int r;

        http_chunked_init(&c);
        r = http_chunked_feed(&c, body, cut, &u1);
        if (r == 0) {
            assert_int_equal(u1, cut);
            r = http_chunked_feed(&c, body + cut, len - cut, &u2);
        }
        if (r != want_r)
            fail_msg("cut %zu: got %d, want %d", cut, r, want_r);
        if (r == 1 && u1 + u2 != want_used)
            fail_msg("cut %zu: used %zu, want %zu", cut, u1 + u2, want_used);
    }
}

static void
test_chunked(void **state)
{
    const char *good = "5\r\nhello\r\n1A;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                       "0\r\nTrailer: x\r\nOther: y\r\n\r\nNEXT REQUEST";
    const char *simple = "0\r\n\r\n";
    struct http_chunked c;
    size_t used, i;
    char *big;

    chunked_expect(good, strlen(good), 1, strlen(good) - strlen("NEXT REQUEST"));
    chunked_expect(simple, strlen(simple), 1, 5);
    chunked_expect("000\r\n\r\n", 7, 1, 7);
    chunked_expect("a \t;x\r\n0123456789\r\n0\r\n\r\n", 24, 1, 24);

    /* Byte by byte. */
    http_chunked_init(&c);
    for (i = 0; i < strlen(good); i++) {
        int r = http_chunked_feed(&c, good + i, 1, &used);
        if (r == 1) {
            assert_int_equal(used, 1);
            break;
        }
        assert_int_equal(r, 0);
    }
    assert_int_equal(i + 1, strlen(good) - strlen("NEXT REQUEST"));
    assert_int_equal(http_chunked_feed(&c, "x", 1, &used), 1);
    assert_int_equal(used, 0);

    static const char *bad[] = {"x\r\n", "\r\n", "5\nhello\r\n", "5\r\nhelloX\r\n",
        "5\r\nhello\rX", "5\r\nhello\n", "0x5\r\n", "-5\r\n", "5 5\r\n", "5;a\x01\r\n",
        "5;a\nb\r\n", "5 a\r\n", "5 ;\x7f\r\n", "5\t\n", "0\r\nX: y\n\r\n", "0\r\n\n", "0\r\nX: \x01\r\n\r\n", "0\r\n\rX",
        "10000000001\r\n", "ffffffffffffffffff\r\n", "5\r\rhello"};
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        http_chunked_init(&c);
        if (http_chunked_feed(&c, bad[i], strlen(bad[i]), &used) != -1)
            fail_msg("accepted chunked %zu", i);
        /* Once broken, it stays broken. */
        assert_int_equal(http_chunked_feed(&c, "0\r\n\r\n", 5, &used), -1);
    }
    /* 2^40 is the largest size accepted. */
    http_chunked_init(&c);
    assert_int_equal(http_chunked_feed(&c, "10000000000\r\n", 13, &used), 0);

    big = malloc(10000);
    assert_non_null(big);
    /* Chunk-size line of 1024 bytes is fine, 1025 is not. */
    memset(big, 'x', 10000);
    memcpy(big, "1;", 2);
    memcpy(big + 1024, "\r\n", 2);
    http_chunked_init(&c);
    assert_int_equal(http_chunked_feed(&c, big, 1026, &used), 0);
    memcpy(big + 1024, "x\r\n", 3);
    http_chunked_init(&c);
    assert_int_equal(http_chunked_feed(&c, big, 1027, &used), -1);
    /* Trailers over 8 KiB. */
    memset(big, 'x', 10000);
    memcpy(big, "0\r\nT: ", 6);
    http_chunked_init(&c);
    assert_int_equal(http_chunked_feed(&c, big, 8000, &used), 0);
    assert_int_equal(http_chunked_feed(&c, big + 8000, 2000, &used), -1);
    free(big);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_scan),
        cmocka_unit_test(test_request_refusals),
        cmocka_unit_test(test_request_limits),
        cmocka_unit_test(test_request_good),
        cmocka_unit_test(test_response),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_absolute),
        cmocka_unit_test(test_authority),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_chunked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
