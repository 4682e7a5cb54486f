/* Unit tests for proxy/socks5: greeting, RFC 1929 username/password, requests of every
 * address type and command (with the reply code for each refusal), and reply formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "proxy/socks5.h"

static void
test_greeting(void **state)
{
    int na = -1, up = -1;

    assert_int_equal(socks5_parse_greeting((const unsigned char *)"\x05\x01\x00", 3, &na, &up), 3);
    assert_int_equal(na, 1);
    assert_int_equal(up, 0);
    assert_int_equal(socks5_parse_greeting((const unsigned char *)"\x05\x02\x01\x02zz", 6, &na, &up),
        4);
    assert_int_equal(na, 0);
    assert_int_equal(up, 1);
    assert_int_equal(socks5_parse_greeting((const unsigned char *)"\x05\x03\x00\x01\x02", 5, &na,
                         &up), 5);
    assert_int_equal(na, 1);
    assert_int_equal(up, 1);
    assert_int_equal(socks5_parse_greeting((const unsigned char *)"", 0, &na, &up), 0);
    assert_int_equal(socks5_parse_greeting((const unsigned char *)"\x05", 1, &na, &up), 0);
    assert_int_equal(socks5_parse_greeting((const unsigned char *)"\x05\x03\x00", 3, &na, &up), 0);
    assert_int_equal(socks5_parse_greeting((const unsigned char *)"\x04\x01\x00", 3, &na, &up), -1);
    assert_int_equal(socks5_parse_greeting((const unsigned char *)"G", 1, &na, &up), -1);
    assert_int_equal(socks5_parse_greeting((const unsigned char *)"\x05\x00", 2, &na, &up), -1);
}

static void
test_userpass(void **state)
{
    char user[8], pass[8];
    const unsigned char ok[] = "\x01\x03" "bob" "\x04" "pw12";

    assert_int_equal(socks5_parse_userpass(ok, 10, user, sizeof(user), pass, sizeof(pass)), 10);
    assert_string_equal(user, "bob");
    assert_string_equal(pass, "pw12");
    for (size_t n = 0; n < 10; n++)
        assert_int_equal(socks5_parse_userpass(ok, n, user, sizeof(user), pass, sizeof(pass)), 0);
    assert_int_equal(socks5_parse_userpass((const unsigned char *)"\x01\x00\x00", 3, user,
                         sizeof(user), pass, sizeof(pass)), 3);
    assert_string_equal(user, "");
    assert_string_equal(pass, "");
    assert_int_equal(socks5_parse_userpass((const unsigned char *)"\x05\x01\x00", 3, user,
                         sizeof(user), pass, sizeof(pass)), -1);
    /* A NUL in the password would let "pw\0anything" authenticate as "pw". */
    assert_int_equal(socks5_parse_userpass((const unsigned char *)"\x01\x01u\x03p\0x", 7, user,
                         sizeof(user), pass, sizeof(pass)), -1);
    assert_int_equal(pass[0], 0);
    assert_int_equal(socks5_parse_userpass((const unsigned char *)"\x01\x01\0\x01p", 5, user,
                         sizeof(user), pass, sizeof(pass)), -1);
    /* Fields that do not fit the caller's buffers. */
    assert_int_equal(socks5_parse_userpass((const unsigned char *)"\x01\x08" "12345678" "\x01p",
                         12, user, sizeof(user), pass, sizeof(pass)), -1);
    assert_int_equal(socks5_parse_userpass((const unsigned char *)"\x01\x01u\x08" "12345678", 12,
                         user, sizeof(user), pass, sizeof(pass)), -1);
}

static long
request(const char *buf, size_t len, struct socks5_request *req, uint8_t *rep)
{
    *rep = 0xee;
    return socks5_parse_request((const unsigned char *)buf, len, req, rep);
}

static void
test_request(void **state)
{
    struct socks5_request req;
    uint8_t rep;
    const char v4[] = "\x05\x01\x00\x01\x7f\x00\x00\x01\x01\xbb";
    const char v6[] = "\x05\x01\x00\x04" "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01" "\x00\x50";
    const char dn[] = "\x05\x01\x00\x03\x0b" "example.com" "\x1f\x90";

    assert_int_equal(request(v4, 10, &req, &rep), 10);
    assert_int_equal(req.cmd, 1);
    assert_int_equal(req.atyp, SOCKS5_ATYP_IPV4);
    assert_string_equal(req.host, "127.0.0.1");
    assert_int_equal(req.port, 443);
    /* IPv4 text is written without inet_ntop: every digit count, both ends of the range */
    {
        static const unsigned char quads[][4] = {{0, 0, 0, 0},
                                                 {255, 255, 255, 255},
                                                 {10, 0, 100, 9},
                                                 {1, 20, 199, 250},
                                                 {192, 168, 99, 101}};
        unsigned char buf[10] = {5, 1, 0, 1, 0, 0, 0, 0, 0, 80};
        char want[INET_ADDRSTRLEN];

        for (size_t i = 0; i < sizeof(quads) / sizeof(quads[0]); i++) {
            memcpy(buf + 4, quads[i], 4);
            assert_int_equal(socks5_parse_request(buf, sizeof(buf), &req, &rep), 10);
            inet_ntop(AF_INET, quads[i], want, sizeof(want));
            assert_string_equal(req.host, want);
        }
    }
    assert_int_equal(request(v6, 22, &req, &rep), 22);
    assert_int_equal(req.atyp, SOCKS5_ATYP_IPV6);
    assert_string_equal(req.host, "2001:db8::1");
    assert_int_equal(req.port, 80);
    assert_int_equal(request(dn, 18, &req, &rep), 18);
    assert_int_equal(req.atyp, SOCKS5_ATYP_DOMAIN);
    assert_string_equal(req.host, "example.com");
    assert_int_equal(req.port, 8080);
    for (size_t n = 0; n < 18; n++)
        assert_int_equal(request(dn, n, &req, &rep), 0);
    for (size_t n = 0; n < 22; n++)
        assert_int_equal(request(v6, n, &req, &rep), 0);

    /* BIND and UDP ASSOCIATE: 0x07, but only once the whole request is there. */
    assert_int_equal(request("\x05\x02\x00\x01\x7f\x00\x00\x01\x01", 9, &req, &rep), 0);
    assert_int_equal(request("\x05\x02\x00\x01\x7f\x00\x00\x01\x01\xbb", 10, &req, &rep), -1);
    assert_int_equal(rep, 0x07);
    assert_int_equal(request("\x05\x03\x00\x03\x01x\x00\x35", 8, &req, &rep), -1);
    assert_int_equal(rep, 0x07);
    assert_int_equal(request("\x05\x09\x00\x01\x7f\x00\x00\x01\x01\xbb", 10, &req, &rep), -1);
    assert_int_equal(rep, 0x07);
    /* Address types. */
    assert_int_equal(request("\x05\x01\x00\x02", 4, &req, &rep), -1);
    assert_int_equal(rep, 0x08);
    assert_int_equal(request("\x05\x01\x00\x05zzzzzz", 10, &req, &rep), -1);
    assert_int_equal(rep, 0x08);
    /* General failures: version, reserved byte, empty or NUL-holding domain. */
    assert_int_equal(request("\x04\x01\x00\x01", 4, &req, &rep), -1);
    assert_int_equal(rep, 0x01);
    assert_int_equal(request("\x05\x01\x01", 3, &req, &rep), -1);
    assert_int_equal(rep, 0x01);
    assert_int_equal(request("\x05\x01\x00\x03\x00\x00\x50", 7, &req, &rep), -1);
    assert_int_equal(rep, 0x01);
    assert_int_equal(request("\x05\x01\x00\x03\x03" "a\0b" "\x00\x50", 10, &req, &rep), -1);
    assert_int_equal(rep, 0x01);
}

static void
test_long_domain(void **state)
{
    unsigned char buf[4 + 1 + 255 + 2];
    struct socks5_request req;
    uint8_t rep;

    memcpy(buf, "\x05\x01\x00\x03\xff", 5);
    memset(buf + 5, 'a', 255);
    buf[260] = 0;
    buf[261] = 22;
    assert_int_equal(socks5_parse_request(buf, sizeof(buf), &req, &rep), 262);
    assert_int_equal(strlen(req.host), 255);
    assert_int_equal(req.port, 22);
}

static void
test_reply(void **state)
{
    unsigned char out[SOCKS5_REPLY_MAX];
    struct sockaddr_in s4;
    struct sockaddr_in6 s6;

    assert_int_equal(socks5_format_reply(out, 0x02, NULL), 10);
    assert_memory_equal(out, "\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00", 10);

    memset(&s4, 0, sizeof(s4));
    s4.sin_family = AF_INET;
    s4.sin_port = htons(3128);
    inet_pton(AF_INET, "127.0.0.1", &s4.sin_addr);
    assert_int_equal(socks5_format_reply(out, 0, (struct sockaddr *)&s4), 10);
    assert_memory_equal(out, "\x05\x00\x00\x01\x7f\x00\x00\x01\x0c\x38", 10);

    memset(&s6, 0, sizeof(s6));
    s6.sin6_family = AF_INET6;
    s6.sin6_port = htons(1080);
    inet_pton(AF_INET6, "::1", &s6.sin6_addr);
    assert_int_equal(socks5_format_reply(out, 0, (struct sockaddr *)&s6), 22);
    assert_memory_equal(out, "\x05\x00\x00\x04", 4);
    assert_memory_equal(out + 4, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
    assert_memory_equal(out + 20, "\x04\x38", 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greeting),
        cmocka_unit_test(test_userpass),
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_long_domain),
        cmocka_unit_test(test_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
