/*
 * Private to proxy/: the RFC 9110 character classes shared by the head parser (http.c),
 * the request-target helpers (http_target.c) and the chunked framer (http_chunked.c), so
 * all three refuse exactly the same bytes.
 */
#ifndef AIRLOCK_PROXY_HTTP_INTERNAL_H
#define AIRLOCK_PROXY_HTTP_INTERNAL_H

#include <string.h>

/* RFC 9110 5.6.2 tchar. */
static inline int
is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Field-value bytes: VCHAR, obs-text, SP, HT. Everything else is a CTL (incl. DEL). */
static inline int
is_field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static inline int
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static inline int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

#endif
