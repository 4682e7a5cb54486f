/*
 * Strict HTTP/1.1 parsing (RFC 9110/9112) behind proxy/http.h: head scanning, request and
 * response heads with their framing decision, and header lookups. The request-target
 * helpers are in http_target.c, the chunked framer in http_chunked.c. Whatever two
 * implementations could read differently (CL with TE, folded lines, bare LF) is refused
 * rather than interpreted.
 */
#include "proxy/http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "proxy/http_internal.h"

#define HTTP_MAX_LEADING_CRLF 8

long
http_head_scan(const char *buf, size_t len)
{
    size_t i = 0, line_start;
    int leading = 0;

    if (buf == NULL)
        return 0;
    /* RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request. */
    while (i < len && buf[i] == '\r') {
        if (i + 1 >= len)
            return 0;
        if (buf[i + 1] != '\n' || ++leading > HTTP_MAX_LEADING_CRLF)
            return -400;
        i += 2;
    }
    for (line_start = i; i < len; i++) {
        if (i >= HTTP_MAX_HEAD)
            return -431;
        switch (buf[i]) {
        case '\0':
            return -400;
        case '\n':
            if (i == 0 || buf[i - 1] != '\r')
                return -400;
            if (i - 1 - line_start > HTTP_MAX_LINE)
                return -431;
            if (i - 1 == line_start)
                return (long)(i + 1);
            line_start = i + 1;
            break;
        case '\r':
            if (i + 1 < len && buf[i + 1] != '\n')
                return -400;
            break;
        default:
            if (i - line_start >= HTTP_MAX_LINE)
                return -431;
        }
    }
    return len >= HTTP_MAX_HEAD ? -431 : 0;
}

/*
 * Cuts the next CRLF-terminated line out of [*p, end) in place. Returns the line
 * (NUL-terminated) or NULL with *status set when there is none or it holds CR/LF/NUL.
 */
static char *
next_line(char **p, char *end, int *status)
{
    char *line = *p, *q;

    for (q = line; q < end && *q != '\r' && *q != '\n' && *q != '\0'; q++)
        ;
    if (q + 1 >= end || q[0] != '\r' || q[1] != '\n') {
        *status = 400;
        return NULL;
    }
    if ((size_t)(q - line) > HTTP_MAX_LINE) {
        *status = 431;
        return NULL;
    }
    *q = '\0';
    *p = q + 2;
    return line;
}

static int
parse_header_line(struct http_msg *msg, char *line, int *status)
{
    char *colon, *v, *e;

    *status = 400;
    if (is_ows(line[0])) /* obs-fold (RFC 9112 5.2) */
        return -1;
    colon = strchr(line, ':');
    if (colon == NULL || colon == line)
        return -1;
    for (e = line; e < colon; e++)
        if (!is_tchar((unsigned char)*e)) /* also refuses "Name :" */
            return -1;
    for (v = colon + 1; is_ows(*v); v++)
        ;
    for (e = v; *e != '\0'; e++)
        if (!is_field_byte((unsigned char)*e))
            return -1;
    while (e > v && is_ows(e[-1]))
        e--;
    *e = '\0';
    *colon = '\0';
    if (msg->nhdrs >= HTTP_MAX_HEADERS || msg->nhdrs >= msg->hdrs_cap) {
        *status = 431;
        return -1;
    }
    msg->hdrs[msg->nhdrs].name = line;
    msg->hdrs[msg->nhdrs].value = v;
    msg->nhdrs++;
    return 0;
}

/*
 * The header table, sized to the head: at most one header per line after the start line.
 * Allocated per message rather than embedded (HTTP_MAX_HEADERS slots are 1.6 KB) so an
 * idle connection holds none; more lines than HTTP_MAX_HEADERS still get their 431.
 */
static int
alloc_headers(struct http_msg *msg, size_t len)
{
    size_t lines = 0;
    const char *p = msg->raw, *end = msg->raw + len;

    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p++;
    }
    msg->hdrs_cap = lines > HTTP_MAX_HEADERS ? HTTP_MAX_HEADERS : lines;
    if (msg->hdrs_cap == 0)
        return 0;
    msg->hdrs = calloc(msg->hdrs_cap, sizeof(*msg->hdrs));
    return msg->hdrs != NULL ? 0 : -1;
}

/*
 * Copies the head, checks its size and ending, returns the start line and fills the
 * header table. skip_crlf allows the leading empty lines a request may carry.
 */
static char *
split_head(const char *head, size_t len, struct http_msg *msg, int skip_crlf, int *status)
{
    char *p, *end, *start, *line;
    int leading = 0;

    memset(msg, 0, sizeof(*msg));
    *status = 400;
    if (head == NULL || len < 4)
        return NULL;
    if (len > HTTP_MAX_HEAD) {
        *status = 431;
        return NULL;
    }
    if ((msg->raw = malloc(len + 1)) == NULL) {
        *status = 503;
        return NULL;
    }
    memcpy(msg->raw, head, len);
    msg->raw[len] = '\0';
    if (alloc_headers(msg, len) == -1) {
        *status = 503;
        return NULL;
    }
    p = msg->raw;
    end = msg->raw + len;
    while (skip_crlf && end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
        if (++leading > HTTP_MAX_LEADING_CRLF)
            return NULL;
        p += 2;
    }
    if ((start = next_line(&p, end, status)) == NULL || *start == '\0')
        return NULL;
    for (;;) { /* bounded by the head: every pass consumes one line */
        if ((line = next_line(&p, end, status)) == NULL)
            return NULL;
        if (*line == '\0')
            break;
        if (parse_header_line(msg, line, status) == -1)
            return NULL;
    }
    if (p != end) /* bytes after the blank line are not part of a head */
        return NULL;
    return start;
}

/* "HTTP/1.1" → 1. -1 malformed (400), -2 well-formed but another version (505). */
static int
parse_version(const char *s)
{
    if (strncmp(s, "HTTP/", 5) != 0 || !is_digit(s[5]) || s[6] != '.' || !is_digit(s[7]) ||
        s[8] != '\0')
        return -1;
    if (s[5] != '1' || (s[7] != '0' && s[7] != '1'))
        return -2;
    return s[7] - '0';
}

static int
parse_request_line(struct http_msg *msg, char *line, int *status)
{
    char *sp1, *sp2, *p;
    int v;

    *status = 400;
    if ((sp1 = strchr(line, ' ')) == NULL || sp1 == line)
        return -1;
    if ((sp2 = strchr(sp1 + 1, ' ')) == NULL || sp2 == sp1 + 1 || strchr(sp2 + 1, ' ') != NULL)
        return -1;
    *sp1 = '\0';
    *sp2 = '\0';
    for (p = line; *p != '\0'; p++)
        if (!is_tchar((unsigned char)*p))
            return -1;
    for (p = sp1 + 1; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return -1;
    if ((v = parse_version(sp2 + 1)) < 0) {
        if (v == -2)
            *status = 505;
        return -1;
    }
    msg->method = line;
    msg->target = sp1 + 1;
    msg->version_minor = v;
    return 0;
}

/* Content-Length headers: each a plain decimal, all equal. 1 found, 0 absent, -1 bad. */
static int
content_length(const struct http_msg *msg, uint64_t *out)
{
    int found = 0;
    size_t i;

    for (i = 0; i < msg->nhdrs; i++) {
        const char *v = msg->hdrs[i].value;
        uint64_t n = 0;
        if (strcasecmp(msg->hdrs[i].name, "Content-Length") != 0)
            continue;
        if (*v == '\0')
            return -1;
        for (; *v != '\0'; v++) {
            if (!is_digit(*v) || n > (UINT64_MAX - 9) / 10)
                return -1;
            n = n * 10 + (uint64_t)(*v - '0');
        }
        if (found && n != *out)
            return -1;
        *out = n;
        found = 1;
    }
    return found;
}

struct te_summary {
    int present, ntokens, nchunked, last_chunked;
};

/* Reads every Transfer-Encoding header as one list of plain tokens. -1 on a bad list. */
static int
transfer_encoding(const struct http_msg *msg, struct te_summary *te)
{
    size_t i;

    memset(te, 0, sizeof(*te));
    for (i = 0; i < msg->nhdrs; i++) {
        const char *p = msg->hdrs[i].value;
        if (strcasecmp(msg->hdrs[i].name, "Transfer-Encoding") != 0)
            continue;
        te->present = 1;
        for (;;) { /* bounded by the value: every pass consumes one element */
            const char *s, *e;
            while (is_ows(*p))
                p++;
            for (s = e = p; is_tchar((unsigned char)*e); e++)
                ;
            if (e == s)
                return -1;
            te->ntokens++;
            te->last_chunked = (size_t)(e - s) == 7 && strncasecmp(s, "chunked", 7) == 0;
            te->nchunked += te->last_chunked;
            for (p = e; is_ows(*p); p++)
                ;
            if (*p == '\0')
                break;
            if (*p++ != ',')
                return -1;
        }
    }
    return 0;
}

static int
any_header_has_token(const struct http_msg *msg, const char *name, const char *token)
{
    size_t i;

    for (i = 0; i < msg->nhdrs; i++)
        if (strcasecmp(msg->hdrs[i].name, name) == 0 &&
            http_header_has_token(msg->hdrs[i].value, token))
            return 1;
    return 0;
}

static void
connection_flags(struct http_msg *msg)
{
    const char *expect = http_msg_header(msg, "Expect");
    int conn_close = any_header_has_token(msg, "Connection", "close");

    if (msg->version_minor == 1)
        msg->keep_alive = !conn_close;
    else
        msg->keep_alive = !conn_close && any_header_has_token(msg, "Connection", "keep-alive");
    msg->upgrade_websocket = any_header_has_token(msg, "Connection", "upgrade") &&
        any_header_has_token(msg, "Upgrade", "websocket");
    msg->expect_continue = expect != NULL && strcasecmp(expect, "100-continue") == 0;
}

/* Request framing, RFC 9112 6.1-6.3, refusing what a smuggler would send. */
static int
request_framing(struct http_msg *msg, int *status)
{
    struct te_summary te;
    int cl;

    *status = 400;
    if ((cl = content_length(msg, &msg->content_length)) == -1 ||
        transfer_encoding(msg, &te) == -1)
        return -1;
    if (te.present) {
        /* TE in HTTP/1.0 is faulty framing (RFC 9112 6.1); TE with CL is the classic. */
        if (cl || msg->version_minor == 0)
            return -1;
        if (te.nchunked == 0) {
            *status = 501;
            return -1;
        }
        if (te.ntokens != 1)
            return -1;
        msg->body = HTTP_BODY_CHUNKED;
        return 0;
    }
    msg->body = cl && msg->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
    return 0;
}

int
http_parse_request(const char *head, size_t len, struct http_msg *msg, int *status)
{
    int st = 400;
    char *line;

    if (msg == NULL)
        return -1;
    if ((line = split_head(head, len, msg, 1, &st)) == NULL ||
        parse_request_line(msg, line, &st) == -1 || request_framing(msg, &st) == -1) {
        if (status != NULL)
            *status = st;
        return -1;
    }
    connection_flags(msg);
    return 0;
}

static int
parse_status_line(struct http_msg *msg, char *line)
{
    char *p;
    int v;

    if (strlen(line) < 12 || line[8] != ' ' || !is_digit(line[9]) || !is_digit(line[10]) ||
        !is_digit(line[11]) || line[9] == '0' || (line[12] != ' ' && line[12] != '\0'))
        return -1;
    line[8] = '\0';
    if ((v = parse_version(line)) < 0)
        return -1;
    msg->version_minor = v;
    msg->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    msg->reason = line[12] == ' ' ? line + 13 : line + 12;
    for (p = msg->reason; *p != '\0'; p++)
        if (!is_field_byte((unsigned char)*p))
            return -1;
    return 0;
}

/* Response framing, RFC 9112 6.3, in its order of precedence. */
static int
response_framing(struct http_msg *msg, const char *req_method)
{
    struct te_summary te;
    int cl, s = msg->status;

    if ((cl = content_length(msg, &msg->content_length)) == -1 ||
        transfer_encoding(msg, &te) == -1)
        return -1;
    if (te.present && (cl || msg->version_minor == 0))
        return -1;
    if (te.nchunked > 1 || (te.nchunked == 1 && !te.last_chunked))
        return -1;
    if ((req_method != NULL && strcmp(req_method, "HEAD") == 0) || (s >= 100 && s < 200) ||
        s == 204 || s == 304 ||
        (req_method != NULL && strcmp(req_method, "CONNECT") == 0 && s >= 200 && s < 300))
        msg->body = HTTP_BODY_NONE;
    else if (te.present)
        msg->body = te.last_chunked ? HTTP_BODY_CHUNKED : HTTP_BODY_CLOSE;
    else if (cl)
        msg->body = msg->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
    else
        msg->body = HTTP_BODY_CLOSE;
    return 0;
}

int
http_parse_response(const char *head, size_t len, const char *req_method,
    struct http_msg *msg)
{
    int st;
    char *line;

    if (msg == NULL)
        return -1;
    if ((line = split_head(head, len, msg, 0, &st)) == NULL ||
        parse_status_line(msg, line) == -1 || response_framing(msg, req_method) == -1)
        return -1;
    connection_flags(msg);
    return 0;
}

void
http_msg_clear(struct http_msg *msg)
{
    if (msg == NULL)
        return;
    free(msg->raw);
    free(msg->hdrs);
    memset(msg, 0, sizeof(*msg));
}

const char *
http_msg_header(const struct http_msg *msg, const char *name)
{
    size_t i;

    if (msg == NULL || name == NULL)
        return NULL;
    for (i = 0; i < msg->nhdrs; i++)
        if (strcasecmp(msg->hdrs[i].name, name) == 0)
            return msg->hdrs[i].value;
    return NULL;
}

int
http_msg_header_count(const struct http_msg *msg, const char *name)
{
    size_t i;
    int n = 0;

    if (msg == NULL || name == NULL)
        return 0;
    for (i = 0; i < msg->nhdrs; i++)
        n += strcasecmp(msg->hdrs[i].name, name) == 0;
    return n;
}

int
http_header_has_token(const char *value, const char *token)
{
    size_t tlen;
    const char *p = value;

    if (value == NULL || token == NULL)
        return 0;
    tlen = strlen(token);
    for (;;) { /* bounded by the value: every pass consumes one element */
        const char *s, *e;
        while (is_ows(*p))
            p++;
        s = p;
        while (*p != '\0' && *p != ',')
            p++;
        for (e = p; e > s && is_ows(e[-1]); e--)
            ;
        if ((size_t)(e - s) == tlen && strncasecmp(s, token, tlen) == 0)
            return 1;
        if (*p == '\0')
            return 0;
        p++;
    }
}
