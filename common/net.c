/*
 * Address handling of common/net.h: strict numeric parsing (odd IPv4 forms are refused
 * before inet_pton ever sees them), CIDR matching, host-name normalisation and the
 * private-range guard that judges IPv6 forms embedding IPv4 by the embedded address.
 */
#include "common/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int
is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Strict dotted quad: four parts of 1..3 digits, no leading zero, each <= 255. */
static int
strict_quad(const char *s, size_t len, unsigned char out[4])
{
    size_t i = 0;
    int part;

    for (part = 0; part < 4; part++) {
        unsigned v = 0, n = 0;
        if (part > 0) {
            if (i >= len || s[i] != '.')
                return -1;
            i++;
        }
        while (i < len && is_digit(s[i]) && n < 4) {
            v = v * 10 + (unsigned)(s[i] - '0');
            i++;
            n++;
        }
        if (n == 0 || n > 3 || v > 255 || (n > 1 && s[i - n] == '0'))
            return -1;
        out[part] = (unsigned char)v;
    }
    return i == len ? 0 : -1;
}

/* IPv6 text without brackets or zone; only hex, ':' and '.' reach inet_pton. */
static int
strict_v6(const char *s, size_t len, unsigned char out[16])
{
    char buf[INET6_ADDRSTRLEN];
    size_t i;

    if (len == 0 || len >= sizeof(buf) || memchr(s, ':', len) == NULL)
        return -1;
    for (i = 0; i < len; i++)
        if (!is_hex(s[i]) && s[i] != ':' && s[i] != '.')
            return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

int
net_parse_ip(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    unsigned char a[16];
    size_t n;

    if (s == NULL || ss == NULL)
        return -1;
    n = strlen(s);
    memset(ss, 0, sizeof(*ss));
    if (strict_quad(s, n, a) == 0) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, a, 4);
        if (len != NULL)
            *len = sizeof(*sin);
        return 0;
    }
    if (strict_v6(s, n, a) == 0) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, a, 16);
        if (len != NULL)
            *len = sizeof(*sin6);
        return 0;
    }
    return -1;
}

/* Decimal 1..65535, no sign, no leading zero. */
static int
parse_port(const char *s, uint16_t *port)
{
    unsigned v = 0;
    size_t i;

    if (s[0] == '\0' || s[0] == '0')
        return -1;
    for (i = 0; s[i] != '\0'; i++) {
        if (!is_digit(s[i]) || i >= 5)
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int
net_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN];
    const char *colon, *start = s;
    size_t hlen;
    uint16_t port;

    if (s == NULL)
        return -1;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return -1;
        start = s + 1;
        hlen = (size_t)(rb - start);
        colon = rb + 1;
    } else {
        colon = strchr(s, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return -1;
        hlen = (size_t)(colon - s);
    }
    if (hlen == 0 || hlen >= sizeof(host) || parse_port(colon + 1, &port) == -1)
        return -1;
    memcpy(host, start, hlen);
    host[hlen] = '\0';
    if (net_parse_ip(host, ss, len) == -1)
        return -1;
    /* A bracket must hold IPv6 and a bare host must be IPv4. */
    if ((s[0] == '[') != (ss->ss_family == AF_INET6))
        return -1;
    net_addr_set_port((struct sockaddr *)ss, port);
    return 0;
}

void
net_format_addr(const struct sockaddr *sa, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];

    if (out == NULL || outlen == 0)
        return;
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        snprintf(out, outlen, "%s:%u", ip, ntohs(sin->sin_port));
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        snprintf(out, outlen, "[%s]:%u", ip, ntohs(sin6->sin6_port));
    } else {
        util_strlcpy(out, "?", outlen);
    }
}

uint16_t
net_addr_port(const struct sockaddr *sa)
{
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return 0;
}

void
net_addr_set_port(struct sockaddr *sa, uint16_t port)
{
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons(port);
    else if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

int
cidr_parse(const char *s, struct cidr *out)
{
    char addr[INET6_ADDRSTRLEN];
    struct sockaddr_storage ss;
    const char *slash;
    unsigned prefix = 0, max, i, n = 0;
    size_t alen;

    if (s == NULL || out == NULL)
        return -1;
    slash = strchr(s, '/');
    alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof(addr))
        return -1;
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    if (net_parse_ip(addr, &ss, NULL) == -1)
        return -1;
    memset(out, 0, sizeof(*out));
    out->family = ss.ss_family;
    max = ss.ss_family == AF_INET ? 32 : 128;
    if (ss.ss_family == AF_INET)
        memcpy(out->addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    else
        memcpy(out->addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    if (slash == NULL) {
        out->prefix = max;
        return 0;
    }
    for (i = 1; slash[i] != '\0'; i++, n++) {
        if (!is_digit(slash[i]) || n >= 3)
            return -1;
        prefix = prefix * 10 + (unsigned)(slash[i] - '0');
    }
    if (n == 0 || prefix > max || (n > 1 && slash[1] == '0'))
        return -1;
    out->prefix = prefix;
    /* Keep only the network bits so "10.1.2.3/8" means 10.0.0.0/8. */
    for (i = 0; i < max / 8; i++) {
        unsigned bits = prefix > i * 8 ? prefix - i * 8 : 0;
        if (bits < 8)
            out->addr[i] &= (unsigned char)(0xff00u >> bits);
    }
    return 0;
}

static int
prefix_match(const unsigned char *a, const unsigned char *net, unsigned prefix)
{
    unsigned full = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((a[full] ^ net[full]) & (0xff00u >> rest)) == 0;
}

int
cidr_contains(const struct cidr *c, const struct sockaddr *sa)
{
    if (c == NULL || sa == NULL || sa->sa_family != c->family)
        return 0;
    if (sa->sa_family == AF_INET)
        return prefix_match((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr,
            c->addr, c->prefix);
    if (sa->sa_family == AF_INET6)
        return prefix_match((const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr,
            c->addr, c->prefix);
    return 0;
}

/* Labels of 1..63 bytes of [a-z0-9-_]; the name already lower-cased without a final dot. */
static int
check_labels(const char *s, size_t len)
{
    size_t i, label = 0;

    for (i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (label == 0)
                return -1;
            label = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || is_digit(ch) || ch == '-' || ch == '_'))
            return -1;
        if (++label > 63)
            return -1;
    }
    return label == 0 ? -1 : 0;
}

/*
 * Would a URL parser or inet_aton() read this name as an IPv4 address? Browsers and libc
 * treat a numeric last label (decimal, octal "0177", hex "0x7f") as the start of an IPv4
 * literal, so any such name must be a strict quad or nothing.
 */
static int
looks_numeric(const char *s, size_t len)
{
    const char *last = s;
    size_t i, llen;

    for (i = 0; i < len; i++)
        if (s[i] == '.')
            last = s + i + 1;
    llen = len - (size_t)(last - s);
    if (llen >= 2 && last[0] == '0' && last[1] == 'x')
        return 1;
    for (i = 0; i < llen; i++)
        if (!is_digit(last[i]))
            break;
    if (i == llen)
        return 1;
    /* Every label decimal or 0x-hex ("0x7f.1.0x0.1") reads as an address too. */
    for (i = 0; i < len;) {
        size_t j = i;
        if (j + 1 < len && s[j] == '0' && s[j + 1] == 'x') {
            for (j += 2; j < len && is_hex(s[j]); j++)
                ;
        } else {
            for (; j < len && is_digit(s[j]); j++)
                ;
        }
        if (j == i || (j < len && s[j] != '.'))
            return 0;
        i = j + 1;
    }
    return 1;
}

static int
normalize_v6(const char *in, size_t len, char *out, size_t outlen, enum net_host_kind *kind)
{
    unsigned char a[16];
    char text[INET6_ADDRSTRLEN];

    if (strict_v6(in, len, a) == -1 || inet_ntop(AF_INET6, a, text, sizeof(text)) == NULL ||
        strlen(text) + 1 > outlen)
        return -1;
    util_strlcpy(out, text, outlen);
    *kind = NET_HOST_IPV6;
    return 0;
}

int
net_normalize_host(const char *in, size_t len, char *out, size_t outlen,
    enum net_host_kind *kind)
{
    char buf[NET_HOST_MAX + 2];
    unsigned char quad[4];
    enum net_host_kind dummy;
    size_t i;

    if (kind == NULL)
        kind = &dummy;
    if (in == NULL || out == NULL || outlen == 0 || len == 0)
        return -1;
    if (in[0] == '[') {
        if (len < 3 || in[len - 1] != ']')
            return -1;
        return normalize_v6(in + 1, len - 2, out, outlen, kind);
    }
    if (memchr(in, ':', len) != NULL)
        return normalize_v6(in, len, out, outlen, kind);
    if (len > NET_HOST_MAX + 1)
        return -1;
    for (i = 0; i < len; i++)
        buf[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
    if (buf[len - 1] == '.')
        len--;
    if (len == 0 || len > NET_HOST_MAX || len + 1 > outlen || check_labels(buf, len) == -1)
        return -1;
    buf[len] = '\0';
    if (looks_numeric(buf, len)) {
        if (strict_quad(buf, len, quad) == -1)
            return -1;
        *kind = NET_HOST_IPV4;
    } else {
        *kind = NET_HOST_NAME;
    }
    memcpy(out, buf, len + 1);
    return 0;
}

/* The IPv4 address an IPv6 address carries, if it is one of the embedding forms. */
static int
embedded_v4(const unsigned char *a, unsigned char v4[4])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char zero[12];
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    int i;

    if (memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0) {
        memcpy(v4, a + 12, 4);
        return 1;
    }
    /* v4-compatible ::a.b.c.d; "::" and "::1" are IPv6's own unspecified and loopback. */
    if (memcmp(a, zero, 12) == 0 && !(a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] <= 1)) {
        memcpy(v4, a + 12, 4);
        return 1;
    }
    if (a[0] == 0x20 && a[1] == 0x02) { /* 6to4: 2002:AABB:CCDD::/48 */
        memcpy(v4, a + 2, 4);
        return 1;
    }
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0) { /* Teredo client, obfuscated */
        for (i = 0; i < 4; i++)
            v4[i] = (unsigned char)(a[12 + i] ^ 0xff);
        return 1;
    }
    return 0;
}

int
net_addr_unmap(const struct sockaddr *sa, struct sockaddr_storage *out)
{
    unsigned char v4[4];
    struct sockaddr_in *sin = (struct sockaddr_in *)out;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

    if (sa == NULL || out == NULL)
        return 0;
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET6 && embedded_v4(sin6->sin6_addr.s6_addr, v4)) {
        sin->sin_family = AF_INET;
        sin->sin_port = sin6->sin6_port;
        memcpy(&sin->sin_addr, v4, 4);
        return 1;
    }
    if (sa->sa_family == AF_INET)
        memcpy(out, sa, sizeof(struct sockaddr_in));
    else if (sa->sa_family == AF_INET6)
        memcpy(out, sa, sizeof(struct sockaddr_in6));
    else
        out->ss_family = sa->sa_family;
    return 0;
}

static int
v4_is_private(const unsigned char *a)
{
    unsigned x = (unsigned)a[0] << 24 | (unsigned)a[1] << 16 | (unsigned)a[2] << 8 | a[3];
    static const struct { unsigned net, mask; } ranges[] = {
        {0x00000000u, 0xff000000u}, /* 0.0.0.0/8 */
        {0x0a000000u, 0xff000000u}, /* 10/8 */
        {0x64400000u, 0xffc00000u}, /* 100.64/10 CGNAT */
        {0x7f000000u, 0xff000000u}, /* loopback */
        {0xa9fe0000u, 0xffff0000u}, /* 169.254/16 link-local */
        {0xac100000u, 0xfff00000u}, /* 172.16/12 */
        {0xc0000000u, 0xffffff00u}, /* 192.0.0/24 */
        {0xc0a80000u, 0xffff0000u}, /* 192.168/16 */
        {0xc6120000u, 0xfffe0000u}, /* 198.18/15 benchmarking */
        {0xe0000000u, 0xf0000000u}, /* multicast 224/4 */
        {0xf0000000u, 0xf0000000u}, /* 240/4 reserved, includes broadcast */
    };
    size_t i;

    for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
        if ((x & ranges[i].mask) == ranges[i].net)
            return 1;
    return 0;
}

static int
v6_is_private(const unsigned char *a)
{
    static const unsigned char zero[15];

    if (memcmp(a, zero, 15) == 0 && a[15] <= 1) /* :: and ::1 */
        return 1;
    if ((a[0] & 0xfe) == 0xfc) /* fc00::/7 unique local */
        return 1;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) /* fe80::/10 link-local */
        return 1;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) /* fec0::/10 deprecated site-local */
        return 1;
    if (a[0] == 0xff) /* multicast */
        return 1;
    /* 64:ff9b:1::/48 is local-use NAT64 (RFC 8215): its embedding is site-defined. */
    if (a[0] == 0 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b && a[4] == 0 && a[5] == 1)
        return 1;
    return 0;
}

int
net_addr_is_private(const struct sockaddr *sa)
{
    struct sockaddr_storage u;

    if (sa == NULL)
        return 1;
    net_addr_unmap(sa, &u);
    if (u.ss_family == AF_INET)
        return v4_is_private((const unsigned char *)&((struct sockaddr_in *)&u)->sin_addr);
    if (u.ss_family == AF_INET6)
        return v6_is_private(((struct sockaddr_in6 *)&u)->sin6_addr.s6_addr);
    return 1; /* unknown families are never dialled */
}
