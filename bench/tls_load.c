/*
 * HTTPS load through an intercepting proxy for bench/run (wrk cannot CONNECT; not part of
 * the main build). One epoll loop drives N connections with non-blocking OpenSSL: each
 * opens a tunnel (HTTP CONNECT, or SOCKS5 with -5), does a TLS handshake trusting CA_PEM
 * (SNI and hostname check for names, IP check for literals), then sends keep-alive GETs
 * until the run ends, reconnecting after -r requests or when the proxy closes.
 * Prints one line: rps=... requests=... p50_ms=... p99_ms=... bad_status=... errors=...
 * and, with -P PID, the CPU the proxy process spent per request (cpu_us_per_req=..., from
 * /proc/PID/stat, all its threads): steadier than req/s on a shared machine.
 * Exits 1 if any response had another status than -e (200) or anything failed.
 * Usage: tls_load [-5] [-a USER:PASS] [-c CONNS] [-d SECONDS] [-p PATH] [-e STATUS]
 *                 [-r REQS_PER_CONN] [-P PROXY_PID] PROXY_PORT HOST:PORT CA_PEM
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define MAX_CONNS 1024
#define BUF_MAX 16384           /* response heads; bodies beyond what fits are discarded */
#define STALL_NS 10000000000ULL /* a connection without progress for 10 s is an error */
#define ERRORS_MAX 1000         /* give up on a run that fails this often */
#define HIST_LINEAR 1024        /* latency histogram: exact below 1024 us... */
#define HIST_SUB 512            /* ...then 512 buckets per power of two (0.2 %) */
#define HIST_SIZE (HIST_LINEAR + 23 * HIST_SUB)

enum state { S_TCP, S_PROXY, S_TLS, S_REQUEST, S_RESPONSE };

struct lconn {
    int fd;
    SSL *ssl;
    enum state st;
    int step;        /* proxy handshake step */
    uint32_t events; /* current epoll interest */
    char out[1024];
    size_t out_len, out_off;
    char in[BUF_MAX];
    size_t in_len;
    unsigned long long body_left;
    int head_done, resp_close;
    unsigned nreq;
    uint64_t req_start_ns, progress_ns;
};

static struct {
    int socks5, conns, expect, proxy_pid;
    double secs;
    unsigned reqs_per_conn; /* 0: unlimited */
    const char *path, *auth, *host_port;
    char host[256];
    uint16_t port, proxy_port;
    int host_is_ip;
} opt = {.conns = 8, .secs = 10, .expect = 200, .path = "/tls"};

static struct {
    unsigned long long requests, bad_status, errors, connects, stalls;
    unsigned long long hist[HIST_SIZE];
    unsigned err_printed;
} st;

static SSL_CTX *ctx;
static SSL_SESSION *session; /* the last ticket, offered on reconnect as curl would */
static char request[1024];
static size_t request_len;
static int ep;
static uint64_t deadline_ns;

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static size_t
hist_index(uint64_t us)
{
    unsigned shift;

    if (us < HIST_LINEAR)
        return (size_t)us;
    shift = (unsigned)(63 - __builtin_clzll(us)) - 9; /* us >> shift is in [512, 1024) */
    if (shift > 23)
        return HIST_SIZE - 1;
    return HIST_LINEAR + (shift - 1) * HIST_SUB + (size_t)((us >> shift) - HIST_SUB);
}

static double
hist_value_us(size_t i)
{
    unsigned shift;

    if (i < HIST_LINEAR)
        return (double)i;
    shift = (unsigned)((i - HIST_LINEAR) / HIST_SUB) + 1;
    return (double)(((i - HIST_LINEAR) % HIST_SUB + HIST_SUB) << shift);
}

static double
hist_percentile(double p)
{
    unsigned long long want = (unsigned long long)(p * (double)st.requests), seen = 0;
    size_t i;

    for (i = 0; i < HIST_SIZE; i++) {
        seen += st.hist[i];
        if (seen > want)
            return hist_value_us(i);
    }
    return 0;
}

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

static void conn_open(struct lconn *c);

static void
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
static int
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

static void
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

static int
parse_args(int argc, char **argv)
{
    const char *colon;
    struct in_addr a4;
    struct in6_addr a6;
    int ch;

    while ((ch = getopt(argc, argv, "5a:c:d:p:e:r:P:")) != -1) {
        switch (ch) {
        case '5':
            opt.socks5 = 1;
            break;
        case 'a':
            opt.auth = optarg;
            break;
        case 'c':
            opt.conns = atoi(optarg);
            break;
        case 'd':
            opt.secs = atof(optarg);
            break;
        case 'p':
            opt.path = optarg;
            break;
        case 'e':
            opt.expect = atoi(optarg);
            break;
        case 'r':
            opt.reqs_per_conn = (unsigned)atoi(optarg);
            break;
        case 'P':
            opt.proxy_pid = atoi(optarg);
            break;
        default:
            return -1;
        }
    }
    if (argc - optind != 3 || opt.conns < 1 || opt.conns > MAX_CONNS || opt.secs <= 0 ||
        (opt.auth != NULL && (strchr(opt.auth, ':') == NULL || strlen(opt.auth) > 500)))
        return -1;
    opt.proxy_port = (uint16_t)atoi(argv[optind]);
    opt.host_port = argv[optind + 1];
    if ((colon = strrchr(opt.host_port, ':')) == NULL || colon - opt.host_port >= 255 ||
        colon == opt.host_port)
        return -1;
    memcpy(opt.host, opt.host_port, (size_t)(colon - opt.host_port));
    opt.port = (uint16_t)atoi(colon + 1);
    opt.host_is_ip = inet_pton(AF_INET, opt.host, &a4) == 1 || inet_pton(AF_INET6, opt.host, &a6);
    if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
        SSL_CTX_load_verify_locations(ctx, argv[optind + 2], NULL) != 1) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    request_len = (size_t)snprintf(request, sizeof(request),
                                   "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tls_load\r\n"
                                   "Accept: */*\r\n\r\n",
                                   opt.path, opt.host_port);
    return request_len < sizeof(request) ? 0 : -1;
}

/* CPU seconds (user + system, all threads) the proxy has used; -1 if unknown. */
static double
proxy_cpu_s(void)
{
    char path[64], buf[1024], *p;
    unsigned long long ut, st_;
    ssize_t n;
    int fd;

    if (opt.proxy_pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/stat", opt.proxy_pid);
    if ((fd = open(path, O_RDONLY)) < 0)
        return -1;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* After "pid (comm) ", whose comm may hold spaces: state is field 3, utime 14, stime 15. */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st_) != 2)
        return -1;
    return (double)(ut + st_) / (double)sysconf(_SC_CLK_TCK);
}

/* Fails connections that made no progress for STALL_NS. */
static void
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

int
main(int argc, char **argv)
{
    static struct lconn conns[MAX_CONNS];
    struct epoll_event evs[256];
    uint64_t start, end, now, last_check;
    double cpu0, cpu1;
    int i, n;

    signal(SIGPIPE, SIG_IGN);
    if (parse_args(argc, argv) == -1) {
        fprintf(stderr, "usage: tls_load [-5] [-a USER:PASS] [-c CONNS] [-d SECONDS] [-p PATH] "
                        "[-e STATUS] [-r REQS_PER_CONN] [-P PROXY_PID] PROXY_PORT HOST:PORT "
                        "CA_PEM\n");
        return 2;
    }
    ep = epoll_create1(0);
    cpu0 = proxy_cpu_s();
    start = last_check = now_ns();
    deadline_ns = start + (uint64_t)(opt.secs * 1e9);
    for (i = 0; i < opt.conns; i++)
        conn_open(&conns[i]);
    while ((now = now_ns()) < deadline_ns && st.errors < ERRORS_MAX) {
        n = epoll_wait(ep, evs, 256, 100);
        for (i = 0; i < n; i++) {
            struct lconn *c = evs[i].data.ptr;
            if (c->fd >= 0 && advance(c) < 0) {
                conn_reset(c);
                if (now_ns() < deadline_ns)
                    conn_open(c);
            }
        }
        if (now - last_check > 100000000ULL) {
            check_stalls(conns, now);
            last_check = now;
        }
    }
    end = now < deadline_ns ? now : deadline_ns;
    cpu1 = proxy_cpu_s();
    printf("rps=%.1f requests=%llu seconds=%.2f p50_ms=%.3f p99_ms=%.3f bad_status=%llu "
           "errors=%llu connects=%llu",
           (double)st.requests / ((double)(end - start) / 1e9), st.requests,
           (double)(end - start) / 1e9, hist_percentile(0.50) / 1000, hist_percentile(0.99) / 1000,
           st.bad_status, st.errors, st.connects);
    if (cpu0 >= 0 && cpu1 >= cpu0 && st.requests > 0)
        printf(" cpu_us_per_req=%.0f", (cpu1 - cpu0) * 1e6 / (double)st.requests);
    printf("\n");
    for (i = 0; i < opt.conns; i++)
        conn_reset(&conns[i]);
    SSL_SESSION_free(session);
    SSL_CTX_free(ctx);
    return st.bad_status == 0 && st.errors == 0 && st.requests > 0 ? 0 : 1;
}
