/*
 * Address handling shared by policy (allow_cidrs, resolve:, listen addresses) and proxy
 * (target checks): numeric parsing, CIDR matching, host-name normalisation and the
 * private-range guard of SPEC section 3 step 2.
 */
#ifndef AIRLOCK_COMMON_NET_H
#define AIRLOCK_COMMON_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NET_HOST_MAX 255 /* longest DNS name; buffers are NET_HOST_MAX + 1 */

struct cidr {
    int family;            /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network address, 4 or 16 bytes used */
    unsigned prefix;       /* 0..32 or 0..128 */
};

/* "10.0.0.0/8", "127.0.0.1/32", "::1/128", "fc00::/7"; a bare address is a host route. */
int cidr_parse(const char *s, struct cidr *out);
/* 1 when sa (AF_INET or AF_INET6) lies in c; families must match (no implicit mapping). */
int cidr_contains(const struct cidr *c, const struct sockaddr *sa);

/* Strict numeric IP: dotted-quad IPv4 (no leading zeros, no short forms) or IPv6 text
 * (no brackets, no zone). Fills ss with port 0. -1 otherwise. */
int net_parse_ip(const char *s, struct sockaddr_storage *ss, socklen_t *len);
/* "127.0.0.1:3128", "[::1]:1080" (numeric only, port 1..65535). */
int net_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len);
/* "1.2.3.4:80" / "[::1]:80" into out. */
void net_format_addr(const struct sockaddr *sa, char *out, size_t outlen);
uint16_t net_addr_port(const struct sockaddr *sa);
void net_addr_set_port(struct sockaddr *sa, uint16_t port);

enum net_host_kind { NET_HOST_NAME, NET_HOST_IPV4, NET_HOST_IPV6 };

/*
 * Normalises a host as received (in[0..len), IPv6 may be bracketed): lower case, one
 * trailing dot removed, brackets stripped. Refuses (returns -1) empty names, names over
 * 255 bytes or with labels over 63, characters outside [a-z0-9-_.], empty labels, and IP
 * literals in any odd form: decimal ("2130706433"), octal ("0177.0.0.1"), hex ("0x7f.1"),
 * short ("127.1"), or any all-numeric last label that is not a strict dotted quad.
 * out must hold NET_HOST_MAX + 1 bytes. *kind says whether it is a name or a literal.
 */
int net_normalize_host(const char *in, size_t len, char *out, size_t outlen,
    enum net_host_kind *kind);

/*
 * The private-range guard: 1 when sa must not be dialled under deny_private: loopback,
 * 0.0.0.0/8, RFC 1918, 100.64/10, 169.254/16, 192.0.0/24, 198.18/15, multicast (224/4),
 * 240/4 and broadcast, ::, ::1, fc00::/7, fe80::/10, ff00::/8, and IPv6 forms that embed
 * IPv4 (v4-mapped, v4-compatible, 64:ff9b::/96, 2002::/16, 2001::/32 Teredo) judged by the
 * embedded address.
 */
int net_addr_is_private(const struct sockaddr *sa);
/* If sa embeds an IPv4 address (forms above), writes it as AF_INET to out and returns 1;
 * otherwise copies sa and returns 0. Port is kept. */
int net_addr_unmap(const struct sockaddr *sa, struct sockaddr_storage *out);

#endif
