/*
 * SOCKS5 parsers of proxy/socks5.h (RFC 1928, RFC 1929). Each function looks only at the
 * bytes it was given, says how many it consumed, and never reads past a length byte it
 * has not checked against len.
 */
#include "proxy/socks5.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

long
socks5_parse_greeting(const unsigned char *buf, size_t len, int *offers_noauth,
    int *offers_userpass)
{
    size_t i, n;
    int noauth = 0, userpass = 0;

    if (buf == NULL || len < 1)
        return 0;
    if (buf[0] != 5)
        return -1;
    if (len < 2)
        return 0;
    n = buf[1];
    if (n == 0)
        return -1;
    if (len < 2 + n)
        return 0;
    for (i = 0; i < n; i++) {
        noauth |= buf[2 + i] == 0x00;
        userpass |= buf[2 + i] == 0x02;
    }
    if (offers_noauth != NULL)
        *offers_noauth = noauth;
    if (offers_userpass != NULL)
        *offers_userpass = userpass;
    return (long)(2 + n);
}

/* Copies a length-prefixed field into out as a C string; -1 on NUL bytes or no room. */
static int
copy_field(const unsigned char *src, size_t n, char *out, size_t outsz)
{
    if (out == NULL || n + 1 > outsz || memchr(src, '\0', n) != NULL)
        return -1;
    memcpy(out, src, n);
    out[n] = '\0';
    return 0;
}

long
socks5_parse_userpass(const unsigned char *buf, size_t len, char *user, size_t usz,
    char *pass, size_t psz)
{
    size_t ulen, plen;

    if (buf == NULL || len < 1)
        return 0;
    if (buf[0] != 1)
        return -1;
    if (len < 2)
        return 0;
    ulen = buf[1];
    if (len < 2 + ulen + 1)
        return 0;
    plen = buf[2 + ulen];
    if (len < 3 + ulen + plen)
        return 0;
    if (copy_field(buf + 2, ulen, user, usz) == -1)
        return -1;
    if (copy_field(buf + 3 + ulen, plen, pass, psz) == -1) {
        if (pass != NULL && psz > 0)
            explicit_bzero(pass, psz);
        return -1;
    }
    return (long)(3 + ulen + plen);
}

/* a[0..3] as a dotted quad, as inet_ntop writes it but without its printf (every IPv4
 * SOCKS5 request comes through here). out holds at least 16 bytes. */
static void
format_ipv4(const unsigned char *a, char *out)
{
    int i;

    for (i = 0; i < 4; i++) {
        if (a[i] >= 100)
            *out++ = (char)('0' + a[i] / 100);
        if (a[i] >= 10)
            *out++ = (char)('0' + a[i] / 10 % 10);
        *out++ = (char)('0' + a[i] % 10);
        *out++ = i < 3 ? '.' : '\0';
    }
}

static long
request_fail(uint8_t *reply, uint8_t code)
{
    if (reply != NULL)
        *reply = code;
    return -1;
}

long
socks5_parse_request(const unsigned char *buf, size_t len, struct socks5_request *req,
    uint8_t *reply)
{
    size_t need, alen;
    const unsigned char *a;

    if (buf == NULL || req == NULL || len < 1)
        return 0;
    if (buf[0] != 5)
        return request_fail(reply, 0x01);
    if (len < 4)
        return len >= 3 && buf[2] != 0 ? request_fail(reply, 0x01) : 0;
    if (buf[2] != 0)
        return request_fail(reply, 0x01);
    switch (buf[3]) {
    case SOCKS5_ATYP_IPV4:
        alen = 4;
        need = 4 + alen + 2;
        break;
    case SOCKS5_ATYP_IPV6:
        alen = 16;
        need = 4 + alen + 2;
        break;
    case SOCKS5_ATYP_DOMAIN:
        if (len < 5)
            return 0;
        alen = buf[4];
        if (alen == 0)
            return request_fail(reply, 0x01);
        need = 5 + alen + 2;
        break;
    default:
        return request_fail(reply, 0x08);
    }
    if (len < need)
        return 0;
    /* Only now, with the whole request in hand, is the command judged. */
    if (buf[1] != SOCKS5_CMD_CONNECT)
        return request_fail(reply, 0x07);
    req->cmd = buf[1];
    req->atyp = buf[3];
    a = buf + (buf[3] == SOCKS5_ATYP_DOMAIN ? 5 : 4);
    if (buf[3] == SOCKS5_ATYP_DOMAIN) {
        if (memchr(a, '\0', alen) != NULL)
            return request_fail(reply, 0x01);
        memcpy(req->host, a, alen);
        req->host[alen] = '\0';
    } else if (alen == 4) {
        format_ipv4(a, req->host);
    } else {
        inet_ntop(AF_INET6, a, req->host, sizeof(req->host));
    }
    req->port = (uint16_t)(a[alen] << 8 | a[alen + 1]);
    return (long)need;
}

size_t
socks5_format_reply(unsigned char *out, uint8_t rep, const struct sockaddr *bound)
{
    size_t n = 4;

    out[0] = 5;
    out[1] = rep;
    out[2] = 0;
    if (bound != NULL && bound->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)bound;
        out[3] = SOCKS5_ATYP_IPV6;
        memcpy(out + n, &s6->sin6_addr, 16);
        n += 16;
        memcpy(out + n, &s6->sin6_port, 2); /* already network order */
    } else if (bound != NULL && bound->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)bound;
        out[3] = SOCKS5_ATYP_IPV4;
        memcpy(out + n, &s4->sin_addr, 4);
        n += 4;
        memcpy(out + n, &s4->sin_port, 2);
    } else {
        out[3] = SOCKS5_ATYP_IPV4;
        memset(out + n, 0, 6);
        n += 4;
    }
    return n + 2;
}
