/* Unit tests for common/net: strict IP parsing, CIDRs, host normalisation (odd IPv4
 * literals refused) and the private-range guard including every IPv6 embedding form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "common/net.h"

static struct sockaddr_storage
addr(const char *s)
{
    struct sockaddr_storage ss;

    if (net_parse_ip(s, &ss, NULL) == -1)
        fail_msg("cannot parse %s", s);
    return ss;
}

static int
is_private(const char *s)
{
    struct sockaddr_storage ss = addr(s);
    return net_addr_is_private((struct sockaddr *)&ss);
}

static void
test_parse_ip(void **state)
{
    struct sockaddr_storage ss;
    socklen_t len;
    static const char *bad[] = {"", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.256", "1.2.3.4 ",
        " 1.2.3.4", "0x1.2.3.4", "2130706433", "[::1]", "fe80::1%eth0", "1..2.3", "::g",
        "1.2.3.-4", "1.2.3.4/8", "+1.2.3.4", "0000.1.1.1", ":::"};
    size_t i;

    assert_int_equal(net_parse_ip("93.184.216.34", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(net_parse_ip("0.0.0.0", &ss, &len), 0);
    assert_int_equal(net_parse_ip("2606:2800::1", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    assert_int_equal(net_parse_ip("::ffff:1.2.3.4", &ss, &len), 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (net_parse_ip(bad[i], &ss, &len) != -1)
            fail_msg("accepted %s", bad[i]);
}

static void
test_hostport_format(void **state)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char out[64];

    assert_int_equal(net_parse_hostport("127.0.0.1:3128", &ss, &len), 0);
    assert_int_equal(net_addr_port((struct sockaddr *)&ss), 3128);
    net_format_addr((struct sockaddr *)&ss, out, sizeof(out));
    assert_string_equal(out, "127.0.0.1:3128");
    assert_int_equal(net_parse_hostport("[::1]:1080", &ss, &len), 0);
    net_format_addr((struct sockaddr *)&ss, out, sizeof(out));
    assert_string_equal(out, "[::1]:1080");
    net_addr_set_port((struct sockaddr *)&ss, 65535);
    assert_int_equal(net_addr_port((struct sockaddr *)&ss), 65535);
    assert_int_equal(net_parse_hostport("127.0.0.1:0", &ss, &len), -1);
    assert_int_equal(net_parse_hostport("127.0.0.1:65536", &ss, &len), -1);
    assert_int_equal(net_parse_hostport("127.0.0.1:080", &ss, &len), -1);
    assert_int_equal(net_parse_hostport("127.0.0.1", &ss, &len), -1);
    assert_int_equal(net_parse_hostport("127.0.0.1:", &ss, &len), -1);
    assert_int_equal(net_parse_hostport("::1:80", &ss, &len), -1);
    assert_int_equal(net_parse_hostport("[127.0.0.1]:80", &ss, &len), -1);
    assert_int_equal(net_parse_hostport("localhost:80", &ss, &len), -1);
    assert_int_equal(net_parse_hostport("[::1]80", &ss, &len), -1);
}

static void
test_cidr(void **state)
{
    struct cidr c;
    struct sockaddr_storage a;

    assert_int_equal(cidr_parse("10.0.0.0/8", &c), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 8);
    a = addr("10.255.1.2");
    assert_true(cidr_contains(&c, (struct sockaddr *)&a));
    a = addr("11.0.0.1");
    assert_false(cidr_contains(&c, (struct sockaddr *)&a));
    a = addr("::ffff:10.0.0.1"); /* no implicit mapping */
    assert_false(cidr_contains(&c, (struct sockaddr *)&a));

    assert_int_equal(cidr_parse("127.0.0.1", &c), 0);
    assert_int_equal(c.prefix, 32);
    a = addr("127.0.0.1");
    assert_true(cidr_contains(&c, (struct sockaddr *)&a));
    a = addr("127.0.0.2");
    assert_false(cidr_contains(&c, (struct sockaddr *)&a));

    assert_int_equal(cidr_parse("fc00::/7", &c), 0);
    a = addr("fdff::1");
    assert_true(cidr_contains(&c, (struct sockaddr *)&a));
    a = addr("fe00::1");
    assert_false(cidr_contains(&c, (struct sockaddr *)&a));
    assert_int_equal(cidr_parse("::1/128", &c), 0);
    a = addr("::1");
    assert_true(cidr_contains(&c, (struct sockaddr *)&a));

    assert_int_equal(cidr_parse("10.1.2.3/12", &c), 0); /* host bits dropped */
    a = addr("10.15.0.0");
    assert_true(cidr_contains(&c, (struct sockaddr *)&a));
    a = addr("10.16.0.0");
    assert_false(cidr_contains(&c, (struct sockaddr *)&a));
    assert_int_equal(cidr_parse("0.0.0.0/0", &c), 0);
    a = addr("203.0.113.9");
    assert_true(cidr_contains(&c, (struct sockaddr *)&a));

    assert_int_equal(cidr_parse("10.0.0.0/33", &c), -1);
    assert_int_equal(cidr_parse("::/129", &c), -1);
    assert_int_equal(cidr_parse("10.0.0.0/", &c), -1);
    assert_int_equal(cidr_parse("10.0.0.0/08", &c), -1);
    assert_int_equal(cidr_parse("10.0.0/8", &c), -1);
    assert_int_equal(cidr_parse("/8", &c), -1);
    assert_int_equal(cidr_parse("10.0.0.0/8x", &c), -1);
}

static void
test_private_v4(void **state)
{
    static const char *priv[] = {"127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3",
        "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1",
        "100.127.255.255", "169.254.169.254", "192.0.0.8", "198.18.0.1", "198.19.255.255",
        "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255"};
    static const char *pub[] = {"93.184.216.34", "8.8.8.8", "172.15.255.255", "172.32.0.0",
        "100.63.255.255", "100.128.0.0", "198.17.255.255", "198.20.0.0", "192.0.1.1",
        "169.253.0.1", "223.255.255.255", "11.0.0.1"};
    size_t i;

    for (i = 0; i < sizeof(priv) / sizeof(priv[0]); i++)
        if (!is_private(priv[i]))
            fail_msg("%s should be private", priv[i]);
    for (i = 0; i < sizeof(pub) / sizeof(pub[0]); i++)
        if (is_private(pub[i]))
            fail_msg("%s should be public", pub[i]);
}

static void
test_private_v6(void **state)
{
    static const char *priv[] = {"::", "::1", "fc00::1", "fd12:3456::1", "fe80::1",
        "febf::1", "fec0::1", "ff02::1", "ff05::2",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", /* v4-mapped */
        "::127.0.0.1", "::10.1.1.1", "::0.0.0.2",                         /* v4-compatible */
        "64:ff9b::7f00:1", "64:ff9b::192.168.0.1",                        /* NAT64 */
        "2002:7f00:0001::", "2002:0a00:0001:1234::5", "2002:c0a8:0101::1", /* 6to4 */
        "2001:0:4136:e378:8000:63bf:80ff:fffe", /* Teredo client 127.0.0.1 */
        "2001:0000:1:2:3:4:f5ff:fffe",          /* Teredo client 10.0.0.1 */
        "64:ff9b:1::1"};
    static const char *pub[] = {"2606:2800::1", "2a00:1450:4001::200e", "::ffff:93.184.216.34",
        "::93.184.216.34", "64:ff9b::5db8:d822", "2002:5db8:d822::1",
        "2001:0:4136:e378:8000:63bf:a247:27dd", /* Teredo client 93.184.216.34 */
        "2001:1::1", "fbff::1", "fe7f::1"};
    size_t i;

    for (i = 0; i < sizeof(priv) / sizeof(priv[0]); i++)
        if (!is_private(priv[i]))
            fail_msg("%s should be private", priv[i]);
    for (i = 0; i < sizeof(pub) / sizeof(pub[0]); i++)
        if (is_private(pub[i]))
            fail_msg("%s should be public", pub[i]);
}

static void
expect_unmap(const char *v6, int embedded, const char *v4)
{
    struct sockaddr_storage in = addr(v6), out;
    char text[64];

    net_addr_set_port((struct sockaddr *)&in, 443);
    assert_int_equal(net_addr_unmap((struct sockaddr *)&in, &out), embedded);
    assert_int_equal(net_addr_port((struct sockaddr *)&out), 443);
    net_format_addr((struct sockaddr *)&out, text, sizeof(text));
    assert_string_equal(text, v4);
}

static void
test_unmap(void **state)
{
    expect_unmap("::ffff:1.2.3.4", 1, "1.2.3.4:443");
    expect_unmap("::1.2.3.4", 1, "1.2.3.4:443");
    expect_unmap("64:ff9b::102:304", 1, "1.2.3.4:443");
    expect_unmap("2002:0102:0304::1", 1, "1.2.3.4:443");
    expect_unmap("2001:0:4136:e378:8000:63bf:fefd:fcfb", 1, "1.2.3.4:443");
    expect_unmap("::1", 0, "[::1]:443");
    expect_unmap("::", 0, "[::]:443");
    expect_unmap("2001:db8::1", 0, "[2001:db8::1]:443");
    expect_unmap("5.6.7.8", 0, "5.6.7.8:443");
}

static int
norm(const char *in, char *out, enum net_host_kind *kind)
{
    return net_normalize_host(in, strlen(in), out, NET_HOST_MAX + 1, kind);
}

static void
test_normalize(void **state)
{
    char out[NET_HOST_MAX + 1], big[400];
    enum net_host_kind kind;

    assert_int_equal(norm("API.GitHub.COM", out, &kind), 0);
    assert_string_equal(out, "api.github.com");
    assert_int_equal(kind, NET_HOST_NAME);
    assert_int_equal(norm("example.com.", out, &kind), 0);
    assert_string_equal(out, "example.com");
    assert_int_equal(norm("example.com..", out, &kind), -1);
    assert_int_equal(norm("my_host-1.internal", out, &kind), 0);
    assert_int_equal(norm("[::1]", out, &kind), 0);
    assert_string_equal(out, "::1");
    assert_int_equal(kind, NET_HOST_IPV6);
    assert_int_equal(norm("[2001:DB8:0:0::1]", out, &kind), 0);
    assert_string_equal(out, "2001:db8::1");
    assert_int_equal(norm("::1", out, &kind), 0);
    assert_int_equal(kind, NET_HOST_IPV6);
    assert_int_equal(norm("127.0.0.1", out, &kind), 0);
    assert_string_equal(out, "127.0.0.1");
    assert_int_equal(kind, NET_HOST_IPV4);
    assert_int_equal(norm("127.0.0.1.", out, &kind), 0);
    assert_string_equal(out, "127.0.0.1");
    assert_int_equal(kind, NET_HOST_IPV4);
    assert_int_equal(norm("0xdead.example", out, &kind), 0); /* a name, not a literal */
    assert_int_equal(kind, NET_HOST_NAME);
    assert_int_equal(norm("1password.com", out, &kind), 0);
    assert_int_equal(norm("123.example", out, &kind), 0);

    assert_int_equal(net_normalize_host("example.com\0evil", 16, out, sizeof(out), &kind), -1);
    assert_int_equal(net_normalize_host("a.b", 3, out, 3, &kind), -1); /* out too small */
    assert_int_equal(net_normalize_host("a.b", 3, out, 4, &kind), 0);
    memset(big, 'a', sizeof(big));
    big[63] = '.';
    assert_int_equal(net_normalize_host(big, 64 + 63, out, sizeof(out), &kind), 0);
    assert_int_equal(net_normalize_host(big, 64 + 64, out, sizeof(out), &kind), -1);
    for (int i = 63; i < 255; i += 64)
        big[i] = '.';
    assert_int_equal(net_normalize_host(big, 255, out, sizeof(out), &kind), 0);
    big[255] = '.';
    assert_int_equal(net_normalize_host(big, 256, out, sizeof(out), &kind), 0);
    assert_int_equal(strlen(out), 255);
    big[255] = 'a';
    assert_int_equal(net_normalize_host(big, 256, out, sizeof(out), &kind), -1);
    big[255] = '.';
    big[256] = 'a';
    assert_int_equal(net_normalize_host(big, 257, out, sizeof(out), &kind), -1);
}

static void
test_normalize_refused(void **state)
{
    static const char *bad[] = {"", ".", "..", ".example.com", "a..b", "exa mple.com",
        "example.com:80", "ex@mple.com", "ex%41mple.com", "[::1", "::1]", "[]", "[1.2.3.4]",
        "[fe80::1%eth0]", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f.1", "127.1",
        "127.0.1", "127.000.0.1", "1.2.3.4.5", "256.1.1.1", "0x7f000001", "0X7F.0.0.1",
        "017700000001", "example.123", "foo.0x1", "1.2.3.0x4", "0x.0x", "1.2.3.4..",
        "\xc3\xa9xample.com", "exa\tmple.com"};
    char out[NET_HOST_MAX + 1];
    enum net_host_kind kind;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (norm(bad[i], out, &kind) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ip),
        cmocka_unit_test(test_hostport_format),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_private_v4),
        cmocka_unit_test(test_private_v6),
        cmocka_unit_test(test_unmap),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_normalize_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
