/*
 * Request-target helpers behind proxy/http.h (RFC 9112 3.2): absolute-form and CONNECT
 * authority parsing into a normalised host and port, and the path checks the policy
 * relies on. Userinfo, fragments and unbracketed IPv6 are refused, because those are
 * where "which host did this request name?" gets two answers.
 */
#include "proxy/http.h"

#include <string.h>
#include <strings.h>

#include "proxy/http_internal.h"

/* "host", "host:port", "[v6]", "[v6]:port" in s[0..n). port_required for CONNECT. */
static int
parse_hostport(const char *s, size_t n, char *host, size_t hostlen, enum net_host_kind *kind,
    uint16_t *port, int port_required)
{
    const char *hend, *colon = NULL;
    unsigned v = 0;
    size_t i, digits;

    if (n == 0)
        return -1;
    if (s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (rb == NULL)
            return -1;
        hend = rb + 1;
        if (hend < s + n) {
            if (*hend != ':')
                return -1;
            colon = hend;
        }
    } else {
        colon = memchr(s, ':', n);
        if (colon != NULL && memchr(colon + 1, ':', (size_t)(s + n - colon - 1)) != NULL)
            return -1; /* unbracketed IPv6 or junk */
        hend = colon != NULL ? colon : s + n;
    }
    if (colon == NULL) {
        if (port_required)
            return -1;
        v = 80;
    } else {
        digits = (size_t)(s + n - colon - 1);
        if (digits == 0 || digits > 5)
            return -1;
        for (i = 1; i <= digits; i++) {
            if (!is_digit(colon[i]))
                return -1;
            v = v * 10 + (unsigned)(colon[i] - '0');
        }
        if (v == 0 || v > 65535)
            return -1;
    }
    if (net_normalize_host(s, (size_t)(hend - s), host, hostlen, kind) == -1)
        return -1;
    if (port != NULL)
        *port = (uint16_t)v;
    return 0;
}

int
http_parse_absolute(const char *target, char *host, size_t hostlen,
    enum net_host_kind *kind, uint16_t *port, const char **path_out)
{
    const char *auth, *aend;

    if (target == NULL || host == NULL || strncasecmp(target, "http://", 7) != 0)
        return -1;
    auth = target + 7;
    aend = auth + strcspn(auth, "/?#");
    /* userinfo is where "http://allowed.com@evil.com/" confusion lives */
    if (memchr(auth, '@', (size_t)(aend - auth)) != NULL || strchr(target, '#') != NULL ||
        *aend == '?')
        return -1;
    if (parse_hostport(auth, (size_t)(aend - auth), host, hostlen, kind, port, 0) == -1)
        return -1;
    if (path_out != NULL)
        *path_out = *aend == '/' ? aend : "/";
    return 0;
}

int
http_parse_authority(const char *target, char *host, size_t hostlen,
    enum net_host_kind *kind, uint16_t *port)
{
    if (target == NULL || host == NULL || strpbrk(target, "/?#@") != NULL)
        return -1;
    return parse_hostport(target, strlen(target), host, hostlen, kind, port, 1);
}

int
http_path_only(const char *origin_form, char *out, size_t outlen)
{
    size_t n;

    if (origin_form == NULL || out == NULL || outlen == 0)
        return -1;
    n = strcspn(origin_form, "?");
    if (n + 1 > outlen)
        return -1;
    memcpy(out, origin_form, n);
    out[n] = '\0';
    return 0;
}

/* Is seg[0..n) "." or "..", ignoring a ";param" tail (Tomcat-style "..;/")? */
static int
is_dot_segment(const char *seg, size_t n)
{
    const char *semi = memchr(seg, ';', n);

    if (semi != NULL)
        n = (size_t)(semi - seg);
    return (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.');
}

int
http_path_is_suspicious(const char *path)
{
    size_t end, i, seg;

    if (path == NULL || path[0] != '/')
        return 1;
    end = strcspn(path, "?");
    for (i = 0; i < end; i++) {
        if (path[i] == '\\')
            return 1;
        if (path[i] == '%' && i + 2 < end) {
            char a = path[i + 1], b = (char)(path[i + 2] | 0x20);
            if ((a == '2' && (b == 'f' || b == 'e')) || (a == '5' && b == 'c'))
                return 1;
        }
    }
    for (i = 0; i < end; i = seg) { /* path[i] == '/' on every pass */
        for (seg = i + 1; seg < end && path[seg] != '/'; seg++)
            ;
        if (seg == i + 1 && seg < end) /* "//" */
            return 1;
        if (is_dot_segment(path + i + 1, seg - i - 1))
            return 1;
    }
    return 0;
}
