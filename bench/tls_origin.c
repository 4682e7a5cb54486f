/*
 * A small, fast HTTPS/1.1 keep-alive origin for bench/run's TLS rows (not part of the main
 * build): one epoll loop on 127.0.0.1:PORT with non-blocking OpenSSL, answering every request
 * with a fixed 13-byte body (request headers are never echoed), and /bytes/N with N bytes
 * streamed from a static buffer, so that the proxies, not the origin, are what the
 * benchmark measures. Sessions resume (cache and tickets) as a real
 * server's would. Usage: tls_origin PORT CERT_PEM KEY_PEM
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_CONNS 4096
#define IN_MAX 16384  /* a request head larger than this closes the connection */
#define OUT_MAX 16384 /* queued responses (pipelined requests are answered in one write) */
#define BULK_MAX (1ULL << 36)

struct conn {
    int fd;
    SSL *ssl;
    char in[IN_MAX];
    size_t in_len;
    char out[OUT_MAX];
    size_t out_len, out_off;
    unsigned long long skip_body; /* request body bytes still to discard */
    unsigned long long bulk_left; /* body bytes of /bytes/N still to send */
    int close_after;
    int counted;       /* the handshake was counted */
    int write_blocked; /* the last SSL_write wants a retry */
};

/* Printed on SIGTERM/SIGINT, so bench/run can tell whether the proxy resumes sessions. */
static volatile sig_atomic_t stop;
static unsigned long long handshakes, resumed, requests;

static void
on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static char pattern[16384];
static const char response[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 13\r\n\r\nhello, world\n";

static void
conn_close(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    SSL_free(c->ssl); /* no close_notify: the peer sees EOF, as from many servers */
    close(c->fd);
    free(c);
}

/* Consumes one complete request head at c->in and queues the fixed response.
 * 1 done, 0 need more (or no room to answer yet), -1 bad. */
static int
handle_one(struct conn *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4), *bytes;
    const char *cl;
    size_t head_len;

    if (end == NULL)
        return c->in_len >= IN_MAX ? -1 : 0;
    if (c->out_len + sizeof(response) - 1 > OUT_MAX || c->bulk_left > 0 || c->write_blocked)
        return 0; /* a blocked SSL_write must be retried with the same bytes */
    head_len = (size_t)(end - c->in) + 4;
    c->in[head_len - 1] = '\0'; /* the final '\n' is no longer needed */
    c->close_after = strcasestr(c->in, "\r\nConnection: close") != NULL;
    cl = strcasestr(c->in, "\r\nContent-Length:");
    c->skip_body = cl ? strtoull(cl + 17, NULL, 10) : 0;
    if ((bytes = strstr(c->in, " /bytes/")) != NULL && bytes < strstr(c->in, "\r\n")) {
        c->bulk_left = strtoull(bytes + 8, NULL, 10);
        if (c->bulk_left > BULK_MAX)
            c->bulk_left = BULK_MAX;
        c->out_len += (size_t)snprintf(c->out + c->out_len, OUT_MAX - c->out_len,
                                       "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream"
                                       "\r\nContent-Length: %llu\r\n\r\n",
                                       c->bulk_left);
    } else {
        memcpy(c->out + c->out_len, response, sizeof(response) - 1);
        c->out_len += sizeof(response) - 1;
    }
    requests++;
    memmove(c->in, c->in + head_len, c->in_len - head_len);
    c->in_len -= head_len;
    return 1;
}

/* Maps an SSL_read/SSL_write result: 0 want read, 1 want write, -1 closed or failed. */
static int
ssl_want(struct conn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return 0;
    case SSL_ERROR_WANT_WRITE:
        return 1;
    default:
        ERR_clear_error();
        return -1;
    }
}

/* Reads, answers every complete request, flushes, and sets the epoll interest. -1: close. */
static int
on_ready(int ep, struct conn *c)
{
    struct epoll_event ev = {.data.ptr = c};
    int r, want = 0;

    for (;;) { /* each pass consumes input, sends output or stops on a want */
        while (c->skip_body == 0 && (r = handle_one(c)) != 0) {
            if (r < 0)
                return -1;
        }
        if (c->skip_body > 0 && c->in_len > 0) {
            size_t k = c->skip_body < c->in_len ? (size_t)c->skip_body : c->in_len;
            memmove(c->in, c->in + k, c->in_len - k);
            c->in_len -= k;
            c->skip_body -= k;
            continue;
        }
        if (c->out_off < c->out_len) {
            r = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
            if ((c->write_blocked = r <= 0)) {
                if ((want = ssl_want(c, r)) < 0)
                    return -1;
                break;
            }
            c->out_off += (size_t)r;
            if (c->out_off == c->out_len)
                c->out_off = c->out_len = 0;
            continue;
        }
        if (c->bulk_left > 0) {
            r = SSL_write(c->ssl, pattern,
                          (int)(c->bulk_left < sizeof(pattern) ? c->bulk_left : sizeof(pattern)));
            if (r <= 0) {
                if ((want = ssl_want(c, r)) < 0)
                    return -1;
                break;
            }
            c->bulk_left -= (unsigned long long)r;
            continue;
        }
        if (c->close_after)
            return -1;
        if (c->in_len == IN_MAX) /* a full buffer without a complete head */
            return -1;
        r = SSL_read(c->ssl, c->in + c->in_len, (int)(IN_MAX - c->in_len));
        if (!c->counted && SSL_is_init_finished(c->ssl)) {
            c->counted = 1;
            handshakes++;
            resumed += SSL_session_reused(c->ssl) == 1;
        }
        if (r <= 0) {
            if ((want = ssl_want(c, r)) < 0)
                return -1;
            break;
        }
        c->in_len += (size_t)r;
    }
    ev.events = want ? EPOLLOUT : EPOLLIN;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static SSL_CTX *
server_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"tls_origin", 10);
    return ctx;
}

static int
listen_on(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0) {
        perror("tls_origin: listen");
        exit(1);
    }
    return fd;
}

static void
accept_all(int ep, int lfd, SSL_CTX *ctx, int *nconns)
{
    struct epoll_event ev = {.events = EPOLLIN};
    struct conn *c;
    int fd, one = 1;

    while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
        if (*nconns >= MAX_CONNS || (c = calloc(1, sizeof(*c))) == NULL) {
            close(fd);
            continue;
        }
        if ((c->ssl = SSL_new(ctx)) == NULL || SSL_set_fd(c->ssl, fd) != 1) {
            ERR_clear_error();
            SSL_free(c->ssl);
            free(c);
            close(fd);
            continue;
        }
        SSL_set_accept_state(c->ssl);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->fd = fd;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        (*nconns)++;
    }
}

int
main(int argc, char **argv)
{
    struct epoll_event evs[256];
    static int listener_tag;
    int lfd, ep, n, i, nconns = 0;
    SSL_CTX *ctx;

    if (argc != 4) {
        fprintf(stderr, "usage: tls_origin PORT CERT_PEM KEY_PEM\n");
        return 2;
    }
    for (i = 0; i < (int)sizeof(pattern); i++)
        pattern[i] = (char)('a' + i % 26);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    ctx = server_ctx(argv[2], argv[3]);
    lfd = listen_on(atoi(argv[1]));
    ep = epoll_create1(0);
    evs[0].events = EPOLLIN;
    evs[0].data.ptr = &listener_tag;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &evs[0]);
    while (!stop) {
        if ((n = epoll_wait(ep, evs, 256, -1)) < 0 && errno != EINTR)
            break;
        for (i = 0; i < n; i++) {
            if (evs[i].data.ptr == &listener_tag) {
                accept_all(ep, lfd, ctx, &nconns);
            } else if (on_ready(ep, evs[i].data.ptr) < 0) {
                conn_close(ep, evs[i].data.ptr);
                nconns--;
            }
        }
    }
    fprintf(stderr, "tls_origin: handshakes=%llu resumed=%llu requests=%llu\n", handshakes, resumed,
            requests);
    return 0;
}
