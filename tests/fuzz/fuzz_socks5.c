/*
 * libFuzzer target for proxy/socks5: runs the input through greeting, user/pass and
 * request as a session would, and each parser on the whole input. A complete message
 * must read as "need more" at every shorter prefix. Invariants abort.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/net.h"
#include "proxy/socks5.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static long
greeting(const unsigned char *p, size_t n)
{
    int na = 0, up = 0;
    long r = socks5_parse_greeting(p, n, &na, &up);

    CHECK(r >= -1 && r <= (long)n);
    for (size_t k = 0; r > 0 && k < (size_t)r; k++)
        CHECK(socks5_parse_greeting(p, k, &na, &up) == 0);
    return r;
}

static long
userpass(const unsigned char *p, size_t n)
{
    char user[256], pass[256];
    long r = socks5_parse_userpass(p, n, user, sizeof(user), pass, sizeof(pass));

    CHECK(r >= -1 && r <= (long)n);
    if (r > 0) {
        CHECK(strlen(user) < sizeof(user) && strlen(pass) < sizeof(pass));
        CHECK((size_t)r == 3 + strlen(user) + strlen(pass));
        for (size_t k = 0; k < (size_t)r; k++)
            CHECK(socks5_parse_userpass(p, k, user, sizeof(user), pass, sizeof(pass)) == 0);
    }
    return r;
}

static long
request(const unsigned char *p, size_t n)
{
    struct socks5_request req;
    char host[NET_HOST_MAX + 1];
    enum net_host_kind kind;
    uint8_t rep = 0xee;
    long r = socks5_parse_request(p, n, &req, &rep);

    CHECK(r >= -1 && r <= (long)n);
    if (r == -1)
        CHECK(rep == 0x01 || rep == 0x07 || rep == 0x08);
    if (r > 0) {
        CHECK(req.cmd == 1 && strlen(req.host) > 0 && strlen(req.host) <= NET_HOST_MAX);
        if (req.atyp != 3)
            CHECK(net_normalize_host(req.host, strlen(req.host), host, sizeof(host), &kind) == 0);
        else
            (void)net_normalize_host(req.host, strlen(req.host), host, sizeof(host), &kind);
        for (size_t k = 0; k < (size_t)r; k++)
            CHECK(socks5_parse_request(p, k, &req, &rep) == 0);
    }
    return r;
}

static void
reply(const unsigned char *p, size_t n)
{
    unsigned char out[SOCKS5_REPLY_MAX];
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (n >= 18 && p[0] & 1) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, p + 2, 16);
        CHECK(socks5_format_reply(out, p[1], (struct sockaddr *)&ss) == 22);
    } else if (n >= 6) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, p + 2, 4);
        CHECK(socks5_format_reply(out, p[1], (struct sockaddr *)&ss) == 10);
    } else {
        CHECK(socks5_format_reply(out, 1, NULL) == 10);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const unsigned char *p = data;
    size_t n = size;
    long r;

    if (size > 4096)
        return 0;
    (void)greeting(data, size);
    (void)userpass(data, size);
    (void)request(data, size);
    reply(data, size);
    /* The session order: greeting, then user/pass if offered, then the request. */
    if ((r = greeting(p, n)) <= 0)
        return 0;
    p += r;
    n -= (size_t)r;
    if (n > 0 && p[0] == 1) {
        if ((r = userpass(p, n)) <= 0)
            return 0;
        p += r;
        n -= (size_t)r;
    }
    (void)request(p, n);
    return 0;
}
