/*
 * Strict HTTP/1.1 message parsing for the proxy (SPEC section 3): head scanning, request
 * and response heads, framing decisions, target helpers and a streaming chunked framer.
 * Pure functions over byte buffers, no event loop; anything ambiguous is refused, because
 * a proxy and an origin that frame a message differently is how requests get smuggled.
 */
#ifndef AIRLOCK_PROXY_HTTP_H
#define AIRLOCK_PROXY_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "common/net.h"

#define HTTP_MAX_LINE 8192    /* request/status line or one header line, without CRLF */
#define HTTP_MAX_HEAD 65536   /* whole head including the final CRLFCRLF */
#define HTTP_MAX_HEADERS 100

/*
 * Scans for the end of a head (CRLFCRLF). Returns the head length (> 0) including the
 * final CRLFCRLF, 0 if more data is needed, or -status: -400 (bare LF, NUL, CR not
 * followed by LF, more than 8 leading empty lines), -431 (a line over HTTP_MAX_LINE, or
 * no end within HTTP_MAX_HEAD bytes). Re-scans from the start on every call. Leading
 * CRLFs before a request line are tolerated (RFC 9112 2.2) and count in the length.
 */
long http_head_scan(const char *buf, size_t len);

struct http_hdr {
    char *name;  /* NUL-terminated, point into msg->raw */
    char *value; /* OWS trimmed */
};

enum http_body { HTTP_BODY_NONE, HTTP_BODY_LENGTH, HTTP_BODY_CHUNKED, HTTP_BODY_CLOSE };

struct http_msg {
    char *raw;             /* owned copy of the head */
    char *method, *target; /* request */
    int status;            /* response */
    char *reason;
    int version_minor;     /* 0 or 1 (HTTP/1.0 or 1.1); anything else is refused */
    struct http_hdr *hdrs; /* owned, sized to the head's line count (<= HTTP_MAX_HEADERS) */
    size_t nhdrs, hdrs_cap;
    enum http_body body;   /* Content-Length: 0 is HTTP_BODY_NONE */
    uint64_t content_length;
    int keep_alive;        /* HTTP/1.1 default on unless Connection: close; 1.0 needs keep-alive */
    int upgrade_websocket; /* Connection has the "upgrade" token and Upgrade: websocket */
    int expect_continue;   /* Expect: 100-continue */
};

/*
 * Parses a complete request head (from http_head_scan). 0 ok; -1 with *status = 400
 * (malformed, or ambiguous framing: CL with TE, differing or listed CLs, "chunked" not
 * alone in TE), 431 (more than HTTP_MAX_HEADERS headers, line or head too long), 501
 * (a Transfer-Encoding without "chunked"), 505 (HTTP version other than 1.0/1.1). msg is
 * zeroed first and must be released with http_msg_clear (also after a failure).
 */
int http_parse_request(const char *head, size_t len, struct http_msg *msg, int *status);
/*
 * Parses a response head; req_method decides bodies (HEAD, and CONNECT with 2xx: none;
 * 1xx/204/304: none; then chunked as the final coding; Content-Length; else
 * HTTP_BODY_CLOSE). CL with TE, or differing CLs, are malformed. 0 ok, -1 malformed.
 */
int http_parse_response(const char *head, size_t len, const char *req_method,
    struct http_msg *msg);
void http_msg_clear(struct http_msg *msg); /* frees raw and hdrs, zeroes; NULL: no-op */
/* First header of that name (case-insensitive), or NULL. */
const char *http_msg_header(const struct http_msg *msg, const char *name);
int http_msg_header_count(const struct http_msg *msg, const char *name);
/* 1 when the comma-separated value holds token (case-insensitive, OWS ignored). */
int http_header_has_token(const char *value, const char *token);

/*
 * "http://host[:port]/path?q" (scheme case-insensitive, http only) → host (normalised
 * via net_normalize_host, hostlen >= NET_HOST_MAX + 1), port (default 80), *path_out
 * points into target at the origin-form ("/" if empty: then a static "/"). -1 on
 * anything else: userinfo ("@"), fragments, empty or zero port, "http://host?q".
 */
int http_parse_absolute(const char *target, char *host, size_t hostlen,
    enum net_host_kind *kind, uint16_t *port, const char **path_out);
/* CONNECT authority "host:port" / "[v6]:port" (port required, 1..65535) → host, port. */
int http_parse_authority(const char *target, char *host, size_t hostlen,
    enum net_host_kind *kind, uint16_t *port);
/* Copies the path part (before '?') into out; -1 if it does not fit. */
int http_path_only(const char *origin_form, char *out, size_t outlen);
/*
 * 1 when the path (a query is ignored) has dot-segments ("/./", "/../", trailing "/." or
 * "/..", also ".." before a ";param"), "//", a backslash, percent-encoded '/', '.', '\'
 * (%2f %2e %5c, any case), or is not origin-form. 0 otherwise.
 */
int http_path_is_suspicious(const char *path);

/* Streaming chunked-body framer: passes bytes through unchanged while finding the end. */
struct http_chunked {
    int state;
    uint64_t remaining;
    unsigned line_len;
    unsigned trailer_bytes;
};

void http_chunked_init(struct http_chunked *c);
/*
 * Consumes data[0..len): *used = bytes that belong to this body (<= len). Returns 1 when
 * the body (last-chunk, trailers and the final CRLF) ended at *used, 0 if more is needed
 * (*used == len), -1 on malformed framing (bad hex, size over 2^40, chunk-size line over
 * 1 KiB, missing CRLF after data, trailers over 8 KiB, bare LF, control bytes). Chunk
 * extensions are allowed within the line limit. After the end it returns 1 with *used 0.
 */
int http_chunked_feed(struct http_chunked *c, const char *data, size_t len, size_t *used);

#endif
