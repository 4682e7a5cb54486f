/*
 * The streaming chunked-body framer behind proxy/http.h (RFC 9112 7.1): bytes pass
 * through unchanged while a byte-at-a-time state machine finds where the body ends.
 * Odd chunk sizes, bare LF and control bytes are refused, since a proxy and an origin
 * that find different ends are how a second request gets smuggled in.
 */
#include "proxy/http.h"

#include <string.h>

#include "common/util.h"
#include "proxy/http_internal.h"

#define CHUNK_MAX_SIZE ((uint64_t)1 << 40)
#define CHUNK_MAX_LINE 1024
#define CHUNK_MAX_TRAILERS 8192

enum {
    CK_SIZE0, CK_SIZE, CK_BWS, CK_EXT, CK_SIZE_LF, CK_DATA, CK_DATA_CR, CK_DATA_LF,
    CK_TRL_START, CK_TRL_LINE, CK_TRL_LF, CK_END_LF, CK_DONE, CK_ERROR
};

void
http_chunked_init(struct http_chunked *c)
{
    memset(c, 0, sizeof(*c));
    c->state = CK_SIZE0;
}

/*
 * One byte of the chunk-size line (RFC 9112 7.1): hex digits, optional whitespace, then
 * ";extensions". "5 5" is refused: a size must not read differently to another parser.
 * Returns the next state.
 */
static int
chunk_size_byte(struct http_chunked *c, char ch)
{
    int h = util_hex_digit((unsigned char)ch);

    if (ch == '\r')
        return c->state == CK_SIZE0 ? CK_ERROR : CK_SIZE_LF;
    if (++c->line_len > CHUNK_MAX_LINE)
        return CK_ERROR;
    switch (c->state) {
    case CK_SIZE0:
    case CK_SIZE:
        if (h >= 0) {
            c->remaining = (c->state == CK_SIZE0 ? 0 : c->remaining * 16) + (uint64_t)h;
            return c->remaining > CHUNK_MAX_SIZE ? CK_ERROR : CK_SIZE;
        }
        if (c->state == CK_SIZE0)
            return CK_ERROR;
        /* FALLTHROUGH */
    case CK_BWS:
        if (is_ows(ch))
            return CK_BWS;
        return ch == ';' ? CK_EXT : CK_ERROR;
    default:
        return is_field_byte((unsigned char)ch) ? CK_EXT : CK_ERROR;
    }
}

/* One byte of the trailer section, which ends with an empty line. */
static int
chunk_trailer_byte(struct http_chunked *c, char ch)
{
    if (++c->trailer_bytes > CHUNK_MAX_TRAILERS)
        return CK_ERROR;
    switch (c->state) {
    case CK_TRL_START:
        if (ch == '\r')
            return CK_END_LF;
        return is_field_byte((unsigned char)ch) ? CK_TRL_LINE : CK_ERROR;
    case CK_TRL_LINE:
        if (ch == '\r')
            return CK_TRL_LF;
        return is_field_byte((unsigned char)ch) ? CK_TRL_LINE : CK_ERROR;
    case CK_TRL_LF:
        return ch == '\n' ? CK_TRL_START : CK_ERROR;
    case CK_END_LF:
        return ch == '\n' ? CK_DONE : CK_ERROR;
    }
    return CK_ERROR;
}

int
http_chunked_feed(struct http_chunked *c, const char *data, size_t len, size_t *used)
{
    size_t i = 0;

    *used = 0;
    if (c->state == CK_DONE)
        return 1;
    while (i < len && c->state != CK_ERROR) { /* bounded: every pass consumes >= 1 byte */
        char ch = data[i];
        switch (c->state) {
        case CK_SIZE0:
        case CK_SIZE:
        case CK_BWS:
        case CK_EXT:
            c->state = chunk_size_byte(c, ch);
            break;
        case CK_SIZE_LF:
            c->line_len = 0;
            if (ch != '\n')
                c->state = CK_ERROR;
            else
                c->state = c->remaining == 0 ? CK_TRL_START : CK_DATA;
            break;
        case CK_DATA: {
            size_t n = len - i < c->remaining ? len - i : (size_t)c->remaining;
            c->remaining -= n;
            i += n;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            continue;
        }
        case CK_DATA_CR:
            c->state = ch == '\r' ? CK_DATA_LF : CK_ERROR;
            break;
        case CK_DATA_LF:
            c->state = ch == '\n' ? CK_SIZE0 : CK_ERROR;
            break;
        default:
            c->state = chunk_trailer_byte(c, ch);
            break;
        }
        i++;
        if (c->state == CK_DONE) {
            *used = i;
            return 1;
        }
    }
    if (c->state == CK_ERROR)
        return -1;
    *used = len;
    return 0;
}
