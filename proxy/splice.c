/*
 * Zero-copy blind relay for tunnels between two plain sockets (CONNECT, SOCKS5, websockets
 * after 101 when nothing is intercepted): splice(2) socket -> pipe -> socket, one pipe per
 * direction (made on first data), driven by libevent events on the raw fds, EOF passed on
 * as a half-close. The bufferevents stay, disabled, as owners of the fds; tunnel.c falls
 * back to them when this cannot start.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "proxy/proxy_internal.h"

/* Ask for more than a pipe holds: the kernel moves what fits. */
#define SPLICE_LEN (1u << 20)
/* Pipe rounds per callback before yielding to other connections. */
#define SPLICE_ROUNDS 16
/*
 * A direction that has moved SPLICE_BULK_BYTES gets a SPLICE_BIG_PIPE pipe: a third fewer
 * CPU cycles per byte than the 64 KiB default on loopback. The kernel charges pipe
 * capacity to the user (fs.pipe-user-pages-soft, 64 MiB by default, and pipes created past
 * it shrink to two pages), so big pipes share a budget of SPLICE_BIG_BUDGET bytes.
 */
#define SPLICE_BULK_BYTES (4u << 20)
#define SPLICE_BIG_PIPE (1u << 20)
#define SPLICE_BIG_BUDGET (16u << 20)

static size_t splice_big_bytes; /* big pipe capacity held by all tunnels (one event loop) */

struct splice_dir {
    struct splice_relay *r;
    int from, to;
    int pipe[2];
    size_t in_pipe;           /* bytes spliced in, not yet out */
    int eof;                  /* `from` said EOF */
    int shut;                 /* `to` has been shut down for writing */
    int big;                  /* the pipe was grown to SPLICE_BIG_PIPE */
    uint64_t moved;           /* bytes through this pipe, for the bulk test */
    struct evbuffer *pending; /* bytes queued before the relay started: sent first */
    uint64_t *count;
    struct event *rd, *wr; /* readable `from`, writable `to`; in the relay's allocation */
    int assigned;          /* rd and wr are assigned (event_del is safe) */
};

/* One allocation per tunnel: the relay, then its four events (event_assign). */
struct splice_relay {
    struct conn *c;
    struct splice_dir dir[2]; /* [0] client -> upstream, [1] upstream -> client */
};

#define SPLICE_EV_OFFSET ((sizeof(struct splice_relay) + 15) & ~(size_t)15)

static void
dir_close(struct splice_dir *d)
{
    if (d->big)
        splice_big_bytes -= SPLICE_BIG_PIPE;
    if (d->assigned) {
        event_del(d->rd);
        event_del(d->wr);
    }
    if (d->pipe[0] >= 0)
        close(d->pipe[0]);
    if (d->pipe[1] >= 0)
        close(d->pipe[1]);
}

void
splice_relay_free(struct splice_relay *r)
{
    if (r == NULL)
        return;
    dir_close(&r->dir[0]);
    dir_close(&r->dir[1]);
    free(r);
}

/* Sends what was queued before the relay started. 0 done or blocked, -1 broken. */
static int
dir_flush_pending(struct splice_dir *d)
{
    while (evbuffer_get_length(d->pending) > 0) {
        if (evbuffer_write(d->pending, d->to) < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
    }
    return 0;
}

/*
 * The pipe is made on the first readable event that is not EOF: most short tunnels (a
 * refused TLS handshake, a probe) never need one, and a pipe pair is two fds and three
 * syscalls. 1 pipe ready, 0 not needed yet (EOF or spurious wake-up), -1 broken.
 *
 * The client's socket gets TCP_NODELAY here, before the first bytes go to it (the dial
 * already set it on the upstream): with Nagle on, a small write right behind another
 * still unacknowledged one waits for the client's delayed ACK, so a relay of small
 * messages (SSH, websockets) stalled up to 40 ms per message that the endpoints, which
 * chose their own Nagle setting, never asked for. Bulk loses nothing: full segments
 * never wait for Nagle.
 */
static int
dir_open_pipe(struct splice_dir *d)
{
    char b;
    ssize_t n;
    int one = 1;

    if (d->pipe[0] >= 0)
        return 1;
    n = recv(d->from, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        d->eof = 1;
    if (n <= 0)
        return n == 0 || errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) == -1) {
        d->pipe[0] = d->pipe[1] = -1;
        return -1;
    }
    if (d == &d->r->dir[1])
        (void)setsockopt(d->to, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 1;
}

/* Pending bytes first, then pipe rounds. 0 ok (maybe blocked), -1 the tunnel is broken. */
static int
dir_pump(struct splice_dir *d)
{
    ssize_t n;
    int i, progress, r;

    if (dir_flush_pending(d) == -1)
        return -1;
    if (evbuffer_get_length(d->pending) > 0)
        return 0;
    if ((r = dir_open_pipe(d)) != 1)
        return r;
    for (i = 0; i < SPLICE_ROUNDS; i++) {
        progress = 0;
        if (!d->eof) {
            n = splice(d->from, NULL, d->pipe[1], NULL, SPLICE_LEN,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->in_pipe += (size_t)n;
                d->moved += (uint64_t)n;
                *d->count += (uint64_t)n;
                progress = 1;
            } else if (n == 0) {
                d->eof = 1;
            } else if (errno != EAGAIN && errno != EINTR) {
                return -1;
            }
        }
        if (d->in_pipe > 0) {
            n = splice(d->pipe[0], NULL, d->to, NULL, d->in_pipe,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->in_pipe -= (size_t)n;
                progress = 1;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                return -1;
            }
        }
        if (!progress)
            break;
    }
    if (!d->big && d->moved >= SPLICE_BULK_BYTES &&
        splice_big_bytes + SPLICE_BIG_PIPE <= SPLICE_BIG_BUDGET &&
        fcntl(d->pipe[1], F_SETPIPE_SZ, (int)SPLICE_BIG_PIPE) >= 0) {
        d->big = 1;
        splice_big_bytes += SPLICE_BIG_PIPE;
    }
    return 0;
}

/* Waits for `to` while bytes are pending, else for `from` until EOF. */
static void
dir_arm(struct splice_dir *d)
{
    int want_write = d->in_pipe > 0 || evbuffer_get_length(d->pending) > 0;

    if (want_write)
        event_add(d->wr, NULL);
    else
        event_del(d->wr);
    if (!want_write && !d->eof)
        event_add(d->rd, NULL);
    else
        event_del(d->rd);
}

static void
splice_cb(evutil_socket_t fd, short what, void *arg)
{
    struct splice_dir *d = arg;
    struct splice_relay *r = d->r;
    struct conn *c = r->c;
    struct splice_dir *other = d == &r->dir[0] ? &r->dir[1] : &r->dir[0];

    if (dir_pump(d) == -1) {
        log_debug("%s: tunnel to %s:%u closed: %s", c->peer, c->host, (unsigned)c->port,
                  strerror(errno));
        conn_free(c);
        return;
    }
    if (d->eof && d->in_pipe == 0 && !d->shut) {
        /* Half-close: pass the EOF on and keep relaying the other way. When the other way
         * is done too, the close in conn_free sends that FIN: no shutdown call. */
        if (!other->shut)
            shutdown(d->to, SHUT_WR);
        d->shut = 1;
        if (d == &r->dir[0] && c->ex->status == 0)
            c->ex->status = 200;
    }
    if (d->shut && other->shut) {
        conn_free(c);
        return;
    }
    dir_arm(d);
    /* Half-closed tunnels are bounded by the idle timeout; full ones have no timer. */
    if (d->shut || other->shut)
        conn_set_timer(c, c->pol->idle_timeout_ms);
}

static int
dir_init(struct splice_relay *r, struct splice_dir *d, struct bufferevent *from,
         struct bufferevent *to, uint64_t *count)
{
    struct event_base *base = bufferevent_get_base(from);
    size_t evsz = event_get_struct_event_size();
    char *ev = (char *)r + SPLICE_EV_OFFSET + (size_t)(d - r->dir) * 2 * evsz;

    d->r = r;
    d->from = bufferevent_getfd(from);
    d->to = bufferevent_getfd(to);
    d->pending = bufferevent_get_output(to);
    d->count = count;
    d->rd = (struct event *)ev;
    d->wr = (struct event *)(ev + evsz);
    if (event_assign(d->rd, base, d->from, EV_READ | EV_PERSIST, splice_cb, d) == -1 ||
        event_assign(d->wr, base, d->to, EV_WRITE | EV_PERSIST, splice_cb, d) == -1)
        return -1;
    d->assigned = 1;
    return 0;
}

/*
 * Takes over c's two socket bufferevents: what their inputs hold must already have been
 * moved to the other side's output, which is sent before anything spliced. 0 relaying,
 * -1 not possible here (filters, no fds, no memory): c is untouched, use bufferevents.
 */
int
splice_relay_start(struct conn *c)
{
    struct splice_relay *r;

    if (c->tls || c->up == NULL || bufferevent_get_underlying(c->client) != NULL ||
        bufferevent_get_underlying(c->up) != NULL || bufferevent_getfd(c->client) < 0 ||
        bufferevent_getfd(c->up) < 0)
        return -1;
    if ((r = calloc(1, SPLICE_EV_OFFSET + 4 * event_get_struct_event_size())) == NULL)
        return -1;
    r->c = c;
    r->dir[0].pipe[0] = r->dir[0].pipe[1] = r->dir[1].pipe[0] = r->dir[1].pipe[1] = -1;
    if (dir_init(r, &r->dir[0], c->client, c->up, &c->ex->bytes_up) == -1 ||
        dir_init(r, &r->dir[1], c->up, c->client, &c->ex->bytes_down) == -1) {
        log_debug("%s: no splice relay (%s), using buffers", c->peer, strerror(errno));
        splice_relay_free(r);
        return -1;
    }
    /* A socket bufferevent freezes the start of its output (only it drains it); both are
     * disabled for good below, so the relay drains them instead. */
    evbuffer_unfreeze(r->dir[0].pending, 1);
    evbuffer_unfreeze(r->dir[1].pending, 1);
    bufferevent_setcb(c->client, NULL, NULL, NULL, NULL);
    bufferevent_setcb(c->up, NULL, NULL, NULL, NULL);
    c->splice = r;
    /* The CONNECT / SOCKS5 reply usually fits the socket buffer: send it now rather than
     * after a wake-up for writability. A failure leaves it queued, and the write event
     * then finds the error and frees c from the event loop, not under our caller. */
    (void)dir_flush_pending(&r->dir[0]);
    (void)dir_flush_pending(&r->dir[1]);
    /* Arm before the bufferevents let go: an fd one of them still reads (the SOCKS5 client
     * does, through the dial) stays registered, and the hand-over costs no epoll_ctl
     * (disabling first would remove it from epoll and add it right back). */
    dir_arm(&r->dir[0]);
    dir_arm(&r->dir[1]);
    bufferevent_disable(c->client, EV_READ | EV_WRITE);
    bufferevent_disable(c->up, EV_READ | EV_WRITE);
    return 0;
}
