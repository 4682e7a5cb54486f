/*
 * A tiny, fast HTTP/1.1 keep-alive origin for bench/run (not part of the main build):
 * one epoll loop on 127.0.0.1:PORT answering every request with a fixed 13-byte body,
 * and /bytes/N with N bytes streamed from a static buffer, so that the proxies, not the
 * origin, are what the benchmark measures. Usage: origin PORT
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

#define MAX_CONNS 20000 /* bench/run holds 10,000 idle keep-alive connections */
#define IN_MAX 16384   /* a request head larger than this closes the connection */
#define OUT_MAX 512    /* response heads and the small body */
#define BULK_MAX (1ULL << 36)

struct conn {
    int fd;
    char in[IN_MAX];
    size_t in_len;
    char out[OUT_MAX];
    size_t out_len, out_off;
    unsigned long long bulk_left; /* body bytes of /bytes/N still to send */
    unsigned long long skip_body; /* request body bytes still to discard */
    int close_after;
};

static char pattern[65536];
static const char small_body[] = "hello, world\n";

static void
conn_close(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Parses one complete request head at c->in; queues its response. 1 done, 0 need more,
 * -1 bad. */
static int
handle_one(struct conn *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4), *p, *sp;
    size_t head_len;
    unsigned long long n = 0;
    const char *cl;
    int is_bytes = 0;

    if (end == NULL)
        return c->in_len >= IN_MAX ? -1 : 0;
    head_len = (size_t)(end - c->in) + 4;
    c->in[head_len - 1] = '\0'; /* safe: the final '\n' is no longer needed */
    sp = strchr(c->in, ' ');
    if (sp == NULL)
        return -1;
    p = sp + 1;
    if (strncmp(p, "http://", 7) == 0 && (p = strchr(p + 7, '/')) == NULL)
        return -1;
    if (strncmp(p, "/bytes/", 7) == 0) {
        n = strtoull(p + 7, NULL, 10);
        is_bytes = 1;
    }
    if (n > BULK_MAX)
        n = BULK_MAX;
    c->close_after = strcasestr(c->in, "\r\nConnection: close") != NULL;
    cl = strcasestr(c->in, "\r\nContent-Length:");
    c->skip_body = cl ? strtoull(cl + 17, NULL, 10) : 0;
    if (is_bytes)
        c->out_len = (size_t)snprintf(c->out, OUT_MAX,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: %llu\r\n\r\n", n);
    else
        c->out_len = (size_t)snprintf(c->out, OUT_MAX,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
            sizeof(small_body) - 1, small_body);
    c->out_off = 0;
    c->bulk_left = n;
    memmove(c->in, c->in + head_len, c->in_len - head_len);
    c->in_len -= head_len;
    return 1;
}

/* Sends what is queued. 1 all sent, 0 would block, -1 error. */
static int
flush_out(struct conn *c)
{
    ssize_t w;

    while (c->out_off < c->out_len) {
        w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        c->out_off += (size_t)w;
    }
    while (c->bulk_left > 0) {
        size_t len = c->bulk_left < sizeof(pattern) ? (size_t)c->bulk_left : sizeof(pattern);
        w = send(c->fd, pattern, len, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        c->bulk_left -= (unsigned long long)w;
    }
    return 1;
}

/* Reads, answers every complete request, and sets the epoll interest. -1: close. */
static int
on_ready(int ep, struct conn *c)
{
    struct epoll_event ev = { .data.ptr = c };
    ssize_t r;
    int st;

    for (;;) {
        if ((st = flush_out(c)) != 1)
            break;
        if (c->close_after)
            return -1;
        if (c->skip_body > 0 && c->in_len > 0) {
            size_t k = c->skip_body < c->in_len ? (size_t)c->skip_body : c->in_len;
            memmove(c->in, c->in + k, c->in_len - k);
            c->in_len -= k;
            c->skip_body -= k;
            continue;
        }
        if (c->skip_body == 0 && (st = handle_one(c)) != 0) {
            if (st < 0)
                return -1;
            continue;
        }
        r = recv(c->fd, c->in + c->in_len, IN_MAX - c->in_len, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN))
            return -1;
        if (r < 0) {
            st = 1;
            break;
        }
        c->in_len += (size_t)r;
    }
    if (st < 0)
        return -1;
    ev.events = st == 0 ? EPOLLOUT : EPOLLIN;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int
listen_on(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0) {
        perror("origin: listen");
        exit(1);
    }
    return fd;
}

static void
accept_all(int ep, int lfd, int *nconns)
{
    struct epoll_event ev = { .events = EPOLLIN };
    struct conn *c;
    int fd, one = 1;

    while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
        if (*nconns >= MAX_CONNS || (c = calloc(1, sizeof(*c))) == NULL) {
            close(fd);
            continue;
        }
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
    int lfd, ep, n, i, nconns = 0;
    static int listener_tag;

    if (argc != 2) {
        fprintf(stderr, "usage: origin PORT\n");
        return 2;
    }
    for (i = 0; i < (int)sizeof(pattern); i++)
        pattern[i] = (char)('a' + i % 26);
    signal(SIGPIPE, SIG_IGN);
    lfd = listen_on(atoi(argv[1]));
    ep = epoll_create1(0);
    evs[0].events = EPOLLIN;
    evs[0].data.ptr = &listener_tag;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &evs[0]);
    for (;;) {
        n = epoll_wait(ep, evs, 256, -1);
        for (i = 0; i < n; i++) {
            if (evs[i].data.ptr == &listener_tag) {
                accept_all(ep, lfd, &nconns);
            } else if (on_ready(ep, evs[i].data.ptr) < 0) {
                conn_close(ep, evs[i].data.ptr);
                nconns--;
            }
        }
    }
}
