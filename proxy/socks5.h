/*
 * SOCKS5 wire parsing for the proxy's SOCKS listener: RFC 1928 greeting and request, RFC
 * 1929 username/password. Pure functions over byte buffers; the caller owns the socket
 * and decides what to answer. Every length byte is checked before anything is read.
 */
#ifndef AIRLOCK_PROXY_SOCKS5_H
#define AIRLOCK_PROXY_SOCKS5_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/net.h"

#define SOCKS5_CMD_CONNECT 0x01
#define SOCKS5_ATYP_IPV4 0x01
#define SOCKS5_ATYP_DOMAIN 0x03
#define SOCKS5_ATYP_IPV6 0x04
#define SOCKS5_REPLY_MAX 22 /* VER REP RSV ATYP + 16-byte address + port */

struct socks5_request {
    uint8_t cmd;
    uint8_t atyp;
    char host[NET_HOST_MAX + 1]; /* raw domain (caller normalises) or IP text */
    uint16_t port;
};

/* Each parser returns the bytes consumed (> 0), 0 if more are needed, -1 if malformed. */

/* VER=5, NMETHODS >= 1, METHODS: says whether 0x00 and 0x02 are offered. */
long socks5_parse_greeting(const unsigned char *buf, size_t len, int *offers_noauth,
    int *offers_userpass);
/*
 * RFC 1929: VER=1 ULEN UNAME PLEN PASSWD into NUL-terminated user and pass. -1 if VER is
 * not 1, a field holds a NUL byte (it would truncate the password), or a field does not
 * fit its buffer. pass is wiped on -1; the caller wipes it after use.
 */
long socks5_parse_userpass(const unsigned char *buf, size_t len, char *user, size_t usz,
    char *pass, size_t psz);
/*
 * VER CMD RSV ATYP DST.ADDR DST.PORT. On -1 sets *reply: 0x07 command not supported
 * (BIND, UDP ASSOCIATE, unknown; reported only once the whole request has arrived), 0x08
 * address type not supported, 0x01 general failure (bad version, reserved byte, empty or
 * NUL-holding domain). Domains are copied raw; IPv4/IPv6 are written as text.
 */
long socks5_parse_request(const unsigned char *buf, size_t len, struct socks5_request *req,
    uint8_t *reply);
/*
 * Formats VER REP RSV ATYP BND.ADDR BND.PORT into out (>= SOCKS5_REPLY_MAX bytes); bound
 * may be NULL (0.0.0.0:0). Returns the length.
 */
size_t socks5_format_reply(unsigned char *out, uint8_t rep, const struct sockaddr *bound);

#endif
