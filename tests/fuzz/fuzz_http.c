/*
 * libFuzzer target for proxy/http and the host normaliser: scans and parses the input as
 * a request and a response head, frames what follows as a chunked body (whole, byte by
 * byte and split, which must agree) and runs the target helpers. Invariants abort.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/net.h"
#include "proxy/http.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static void
check_target(const char *target)
{
    char host[NET_HOST_MAX + 1], path[HTTP_MAX_LINE + 1];
    enum net_host_kind kind;
    uint16_t port;
    const char *origin;

    if (http_parse_absolute(target, host, sizeof(host), &kind, &port, &origin) == 0) {
        CHECK(strlen(host) > 0 && strlen(host) <= NET_HOST_MAX && port > 0);
        CHECK(origin[0] == '/');
        if (http_path_only(origin, path, sizeof(path)) == 0)
            CHECK(strchr(path, '?') == NULL && (http_path_is_suspicious(path) == 0 ||
                http_path_is_suspicious(path) == 1));
    }
    if (http_parse_authority(target, host, sizeof(host), &kind, &port) == 0)
        CHECK(strlen(host) > 0 && port > 0);
    (void)http_path_is_suspicious(target);
}

static void
check_request(const char *buf, size_t len)
{
    struct http_msg m;
    int status = 0;
    size_t i;

    if (http_parse_request(buf, len, &m, &status) == 0) {
        CHECK(m.method != NULL && m.target != NULL && m.nhdrs <= HTTP_MAX_HEADERS);
        CHECK(m.version_minor == 0 || m.version_minor == 1);
        /* Framing must never be ambiguous. */
        CHECK(!(http_msg_header(&m, "Content-Length") != NULL &&
            http_msg_header(&m, "Transfer-Encoding") != NULL));
        CHECK(m.body != HTTP_BODY_CLOSE);
        for (i = 0; i < m.nhdrs; i++) {
            CHECK(strpbrk(m.hdrs[i].value, "\r\n") == NULL);
            CHECK(http_msg_header_count(&m, m.hdrs[i].name) >= 1);
        }
        (void)http_header_has_token(http_msg_header(&m, "Connection"), "close");
        check_target(m.target);
    } else {
        CHECK(status == 400 || status == 431 || status == 501 || status == 505);
    }
    http_msg_clear(&m);
}

static void
check_response(const char *buf, size_t len)
{
    static const char *methods[] = {"GET", "HEAD", "CONNECT", NULL};
    struct http_msg m;
    size_t i;

    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (http_parse_response(buf, len, methods[i], &m) == 0) {
            CHECK(m.status >= 100 && m.status <= 999 && m.reason != NULL);
            CHECK(!(http_msg_header(&m, "Content-Length") != NULL &&
                http_msg_header(&m, "Transfer-Encoding") != NULL));
        }
        http_msg_clear(&m);
    }
}

/* Whole, byte-by-byte and two-piece feeds must find the same end. */
static void
check_chunked(const char *buf, size_t len)
{
    struct http_chunked c;
    size_t used, total = 0, i, cut;
    int whole, r = 0;

    http_chunked_init(&c);
    whole = http_chunked_feed(&c, buf, len, &used);
    CHECK(used <= len && (whole != 0 || used == len));
    size_t whole_used = used;

    http_chunked_init(&c);
    for (i = 0; i < len; i++) {
        r = http_chunked_feed(&c, buf + i, 1, &used);
        total += used;
        if (r != 0)
            break;
    }
    CHECK(r == whole);
    if (whole == 1)
        CHECK(total == whole_used);

    cut = len > 0 ? (unsigned char)buf[0] % len : 0;
    http_chunked_init(&c);
    r = http_chunked_feed(&c, buf, cut, &used);
    total = used;
    if (r == 0) {
        r = http_chunked_feed(&c, buf + cut, len - cut, &used);
        total += used;
    }
    CHECK(r == whole);
    if (whole == 1)
        CHECK(total == whole_used);
}

/* A name must never be something inet_aton() would read as an address. */
static void
check_normalize(const char *buf, size_t len)
{
    char out[NET_HOST_MAX + 1], again[NET_HOST_MAX + 1];
    enum net_host_kind kind, kind2;
    struct sockaddr_storage ss;
    struct in_addr a;

    if (len > 300 || net_normalize_host(buf, len, out, sizeof(out), &kind) == -1)
        return;
    CHECK(strlen(out) > 0 && strlen(out) <= NET_HOST_MAX);
    CHECK(net_normalize_host(out, strlen(out), again, sizeof(again), &kind2) == 0);
    CHECK(strcmp(out, again) == 0 && kind == kind2);
    if (kind == NET_HOST_NAME)
        CHECK(inet_aton(out, &a) == 0 && net_parse_ip(out, &ss, NULL) == -1);
    else
        CHECK(net_parse_ip(out, &ss, NULL) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    char *str;
    long h;

    if (size > HTTP_MAX_HEAD + 4096)
        return 0;
    h = http_head_scan(buf, size);
    CHECK(h == 0 || h == -400 || h == -431 || (h > 0 && (size_t)h <= size));
    if (h > 0) {
        check_request(buf, (size_t)h);
        check_response(buf, (size_t)h);
        check_chunked(buf + h, size - (size_t)h);
    } else {
        check_request(buf, size);
        check_chunked(buf, size);
    }
    check_normalize(buf, size);
    if ((str = malloc(size + 1)) == NULL)
        return 0;
    memcpy(str, buf, size);
    str[size] = '\0';
    check_target(str);
    free(str);
    return 0;
}
