/*
 * bench/tls_load: one connection's state machine. Opens a tunnel through the proxy (HTTP
 * CONNECT, or SOCKS5 with RFC 1929 auth), does a non-blocking TLS handshake that checks
 * the host name or IP, then sends keep-alive GETs and reads Content-Length responses,
 * counting each in the histogram; reconnects after -r requests or Connection: close.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls_load.h"

static void
fail(struct lconn *c, const char *fmt, ...)
{
    va_list ap;

    st.errors++;
    if (st.err_printed++ < 10) {
        fprintf(stderr, "tls_load: connection %d: ", c->fd);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    ERR_clear_error();
}

static int
set_interest(struct lconn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};

    if (c->events == events)
        return 0;
    c->events = events;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Queues the next proxy handshake message; returns its length (0: handshake done). */
static size_t
proxy_message(struct lconn *c)
{
    const char *colon = opt.auth ? strchr(opt.auth, ':') : NULL;
    unsigned char *o = (unsigned char *)c->out;
    size_t n = 0, ulen, plen, hlen = strlen(opt.host);

    if (!opt.socks5) {
        if (c->step > 0)
            return 0;
        n = (size_t)snprintf(c->out, sizeof(c->out), "CONNECT %s HTTP/1.1\r\nHost: %s\r\n",
                             opt.host_port, opt.host_port);
        if (opt.auth != NULL) {
            unsigned char b64[700];
            EVP_EncodeBlock(b64, (const unsigned char *)opt.auth, (int)strlen(opt.auth));
            n += (size_t)snprintf(c->out + n, sizeof(c->out) - n,
                                  "Proxy-Authorization: Basic %s\r\n", b64);
        }
        n += (size_t)snprintf(c->out + n, sizeof(c->out) - n, "\r\n");
        return n;
    }
    switch (c->step) {
    case 0: /* greeting: one method */
        o[0] = 5, o[1] = 1, o[2] = opt.auth ? 2 : 0;
        return 3;
    case 1: /* RFC 1929 username/password */
        ulen = (size_t)(colon - opt.auth), plen = strlen(colon + 1);
        o[n++] = 1, o[n++] = (unsigned char)ulen;
        memcpy(o + n, opt.auth, ulen), n += ulen;
        o[n++] = (unsigned char)plen;
        memcpy(o + n, colon + 1, plen), n += plen;
        return n;
    case 2: /* CONNECT by IP or name */
        o[n++] = 5, o[n++] = 1, o[n++] = 0;
        if (inet_pton(AF_INET, opt.host, o + 4) == 1) {
            o[n++] = 1, n += 4;
        } else {
            o[n++] = 3, o[n++] = (unsigned char)hlen;
            memcpy(o + n, opt.host, hlen), n += hlen;
        }
        o[n++] = (unsigned char)(opt.port >> 8), o[n++] = (unsigned char)opt.port;
        return n;
    default:
        return 0;
    }
}

/* Whether c->in holds the whole reply to the current step: 1 yes (consumed), 0 more, -1 bad. */
static int
proxy_reply(struct lconn *c)
{
    const unsigned char *in = (const unsigned char *)c->in;
    char *end;
    size_t need;

    if (!opt.socks5) {
        if ((end = memmem(c->in, c->in_len, "\r\n\r\n", 4)) == NULL)
            return c->in_len >= BUF_MAX ? -1 : 0;
        if (c->in_len != (size_t)(end - c->in) + 4 ||
            (strncmp(c->in, "HTTP/1.1 200", 12) != 0 && strncmp(c->in, "HTTP/1.0 200", 12) != 0))
            return -1;
        c->in_len = 0;
        return 1;
    }
    if (c->in_len < 2)
        return 0;
    if (c->step == 0)
        return in[0] == 5 && in[1] == (opt.auth ? 2 : 0) ? (c->in_len = 0, 1) : -1;
    if (c->step == 1)
        return in[0] == 1 && in[1] == 0 ? (c->in_len = 0, 1) : -1;
    if (c->in_len < 5)
        return 0;
    if (in[0] != 5 || in[1] != 0)
        return -1;
    need = in[3] == 1 ? 10 : in[3] == 4 ? 22 : in[3] == 3 ? 7 + (size_t)in[4] : 0;
    if (need == 0 || c->in_len > need)
        return -1;
    if (c->in_len < need)
        return 0;
    c->in_len = 0;
    return 1;
}

static int
tls_start(struct lconn *c)
{
    X509_VERIFY_PARAM *param;

    if ((c->ssl = SSL_new(ctx)) == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
        return -1;
    param = SSL_get0_param(c->ssl);
    if (opt.host_is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(param, opt.host) != 1)
            return -1;
    } else if (SSL_set_tlsext_host_name(c->ssl, opt.host) != 1 ||
               SSL_set1_host(c->ssl, opt.host) != 1) {
        return -1;
    }
    if (session != NULL)
        SSL_set_session(c->ssl, session);
    SSL_set_connect_state(c->ssl);
    c->st = S_TLS;
    return 0;
}

/* Parses the response head in c->in. 1 parsed, 0 more, -1 bad. */
static int
response_head(struct lconn *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4), *cl;
    size_t head_len, have;
    int status;

    if (end == NULL)
        return c->in_len >= BUF_MAX ? -1 : 0;
    head_len = (size_t)(end - c->in) + 4;
    *end = '\0';
    if (sscanf(c->in, "HTTP/1.%*1d %3d", &status) != 1)
        return -1;
    if (status != opt.expect) {
        st.bad_status++;
        if (st.err_printed++ < 10)
            fprintf(stderr, "tls_load: unexpected response: %.200s\n", c->in);
    }
    if (strcasestr(c->in, "\r\nTransfer-Encoding:") != NULL ||
        (cl = strcasestr(c->in, "\r\nContent-Length:")) == NULL)
        return -1; /* the bench origin always sends Content-Length */
    c->body_left = strtoull(cl + 17, NULL, 10);
    c->resp_close = strcasestr(c->in, "\r\nConnection: close") != NULL;
    have = c->in_len - head_len;
    if (have > c->body_left)
        return -1; /* bytes beyond the response: nothing was pipelined */
    c->body_left -= have;
    c->in_len = 0;
    c->head_done = 1;
    return 1;
}

void
conn_reset(struct lconn *c)
{
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->ssl = NULL;
    c->fd = -1;
}

/* An SSL call returned r <= 0: 0 with the interest set for a retry, -1 failed. */
static int
ssl_wait(struct lconn *c, int r, const char *what)
{
    int e = SSL_get_error(c->ssl, r);
    long v;

    if (e == SSL_ERROR_WANT_READ)
        return set_interest(c, EPOLLIN);
    if (e == SSL_ERROR_WANT_WRITE)
        return set_interest(c, EPOLLOUT);
    if (c->st == S_TLS && (v = SSL_get_verify_result(c->ssl)) != X509_V_OK)
        fail(c, "%s: certificate: %s", what, X509_verify_cert_error_string(v));
    else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
        fail(c, "%s: connection closed", what);
    else
        fail(c, "%s: %s", what, ERR_reason_error_string(ERR_peek_error()));
    return -1;
}

/* Plain-socket I/O during the proxy handshake. 1 progress, 0 wait, -1 failed. */
static int
proxy_step(struct lconn *c)
{
    ssize_t n;
    int r;

    if (c->out_off < c->out_len) {
        n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN)
            return set_interest(c, EPOLLOUT);
        if (n < 0) {
            fail(c, "proxy: send: %s", strerror(errno));
            return -1;
        }
        c->out_off += (size_t)n;
        return 1;
    }
    n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
    if (n < 0 && errno == EAGAIN)
        return set_interest(c, EPOLLIN);
    if (n <= 0) {
        fail(c, "proxy: %s", n == 0 ? "closed during the handshake" : strerror(errno));
        return -1;
    }
    c->in_len += (size_t)n;
    if ((r = proxy_reply(c)) <= 0) {
        if (r < 0)
            fail(c, "proxy refused: %.*s", (int)(c->in_len < 80 ? c->in_len : 80), c->in);
        return r;
    }
    c->step++;
    if (opt.socks5 && c->step == 1 && opt.auth == NULL)
        c->step++; /* no-auth was chosen: no RFC 1929 step */
    c->out_off = 0;
    if ((c->out_len = proxy_message(c)) > 0)
        return 1;
    if (tls_start(c) == -1) {
        fail(c, "tls: cannot set up the connection");
        return -1;
    }
    return 1;
}

/* One response finished: count it, then send the next request, reconnect or stop. */
static int
response_done(struct lconn *c, uint64_t now)
{
    uint64_t us = (now - c->req_start_ns) / 1000;

    if (now <= deadline_ns) {
        st.requests++;
        st.hist[hist_index(us)]++;
    }
    if (session == NULL && c->ssl != NULL && SSL_session_reused(c->ssl) == 0)
        session = SSL_get1_session(c->ssl);
    c->nreq++;
    c->head_done = 0;
    c->st = S_REQUEST;
    if (c->resp_close || (opt.reqs_per_conn > 0 && c->nreq >= opt.reqs_per_conn)) {
        conn_reset(c);
        if (now < deadline_ns)
            conn_open(c);
        return 0;
    }
    return 1;
}

/* Drives c as far as it goes without blocking. 0 waiting, -1 failed (caller resets). */
int
advance(struct lconn *c)
{
    char drain[BUF_MAX];
    uint64_t now;
    int r;

    for (;;) { /* every pass makes progress or returns */
        switch (c->st) {
        case S_TCP: {
            int err = 0;
            socklen_t len = sizeof(err);
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
                fail(c, "connect to the proxy: %s", strerror(err ? err : errno));
                return -1;
            }
            c->st = S_PROXY;
            break;
        }
        case S_PROXY:
            if ((r = proxy_step(c)) <= 0)
                return r;
            break;
        case S_TLS:
            if ((r = SSL_connect(c->ssl)) <= 0)
                return ssl_wait(c, r, "tls handshake");
            c->st = S_REQUEST;
            c->out_off = 0;
            break;
        case S_REQUEST:
            if (now_ns() >= deadline_ns)
                return 0; /* done: leave the connection idle */
            if (c->out_off == 0)
                c->req_start_ns = now_ns();
            r = SSL_write(c->ssl, request + c->out_off, (int)(request_len - c->out_off));
            if (r <= 0)
                return ssl_wait(c, r, "request");
            c->out_off += (size_t)r;
            if (c->out_off == request_len) {
                c->out_off = 0;
                c->st = S_RESPONSE;
            }
            break;
        case S_RESPONSE:
            if (!c->head_done) {
                r = SSL_read(c->ssl, c->in + c->in_len, (int)(sizeof(c->in) - c->in_len));
                if (r <= 0)
                    return ssl_wait(c, r, "response");
                c->in_len += (size_t)r;
                if ((r = response_head(c)) == 0)
                    break;
                if (r < 0) {
                    fail(c, "malformed response: %.80s", c->in);
                    return -1;
                }
            } else {
                r = SSL_read(c->ssl, drain,
                             (int)(c->body_left < sizeof(drain) ? c->body_left : sizeof(drain)));
                if (r <= 0)
                    return ssl_wait(c, r, "response body");
                c->body_left -= (unsigned long long)r;
            }
            if (c->body_left > 0)
                break;
            now = now_ns();
            c->progress_ns = now;
            if (response_done(c, now) == 0)
                return 0;
            break;
        }
        c->progress_ns = now_ns();
    }
}

void
conn_open(struct lconn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(opt.proxy_port)};
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    int one = 1;

    memset(c, 0, sizeof(*c));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->progress_ns = now_ns();
    if ((c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) < 0) {
        fail(c, "socket: %s", strerror(errno));
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        fail(c, "connect to the proxy: %s", strerror(errno));
        close(c->fd);
        c->fd = -1;
        return;
    }
    st.connects++;
    c->out_len = proxy_message(c);
    c->events = EPOLLOUT;
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Fails connections that made no progress for STALL_NS. */
void
check_stalls(struct lconn *conns, uint64_t now)
{
    int i;

    for (i = 0; i < opt.conns; i++) {
        if (conns[i].fd < 0 || conns[i].progress_ns + STALL_NS > now)
            continue;
        if (conns[i].st == S_REQUEST && conns[i].out_off == 0)
            continue; /* idle after the deadline */
        st.stalls++;
        fail(&conns[i], "no progress for 10 s");
        conn_reset(&conns[i]);
        if (now < deadline_ns)
            conn_open(&conns[i]);
    }
}
