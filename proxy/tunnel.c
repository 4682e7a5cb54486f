/*
 * Blind relay between client and upstream (allowed CONNECT / SOCKS5 tunnels, and
 * websockets after 101). Between two plain sockets splice.c relays with splice(2); on a
 * TLS filter (intercepted websockets) or without pipes this falls back to buffers, the
 * way libevent's sample/le-proxy.c does it: move whole buffer chains, stop reading a side
 * while the other's output is above the high-water mark.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy_internal.h"

#define TUNNEL_IO_CHUNK (256 * 1024)

static void tunnel_readcb(struct bufferevent *bev, void *arg);
static void tunnel_writecb(struct bufferevent *bev, void *arg);
static void tunnel_eventcb(struct bufferevent *bev, short what, void *arg);

static void
tunnel_move(struct conn *c, struct bufferevent *from)
{
    struct bufferevent *to = from == c->client ? c->up : c->client;
    struct evbuffer *src = bufferevent_get_input(from);
    struct evbuffer *dst = bufferevent_get_output(to);
    size_t n = evbuffer_get_length(src);

    if (from == c->client)
        c->ex->bytes_up += n;
    else
        c->ex->bytes_down += n;
    evbuffer_add_buffer(dst, src);
    if (evbuffer_get_length(dst) >= PROXY_HIGH_WATER) {
        /* Resume from tunnel_writecb once `to` drains below half. */
        bufferevent_setwatermark(to, EV_WRITE, PROXY_HIGH_WATER / 2, PROXY_HIGH_WATER);
        bufferevent_disable(from, EV_READ);
    }
}

void
tunnel_start(struct conn *c)
{
    int one = 1;

    c->state = CS_TUNNEL;
    conn_clear_timer(c);
    if (c->tunnel_start_us == 0)
        c->tunnel_start_us = util_now_us();
    bufferevent_set_timeouts(c->up, NULL, NULL);
    /* Bytes that arrived with the CONNECT head or the 101 response go first. */
    c->ex->bytes_up += evbuffer_get_length(bufferevent_get_input(c->client));
    evbuffer_add_buffer(bufferevent_get_output(c->up), bufferevent_get_input(c->client));
    c->ex->bytes_down += evbuffer_get_length(bufferevent_get_input(c->up));
    evbuffer_add_buffer(bufferevent_get_output(c->client), bufferevent_get_input(c->up));
    if (splice_relay_start(c) == 0)
        return;
    /* As in splice.c: a relay must not add Nagle delays the endpoints did not ask for
     * (under a TLS filter intercept.c has set it already; again costs nothing). */
    if (bufferevent_getfd(c->client) >= 0)
        (void)setsockopt(bufferevent_getfd(c->client), IPPROTO_TCP, TCP_NODELAY, &one,
                         sizeof(one));
    /* libevent reads 16 KiB per callback by default; bulk tunnels want far bigger bites. */
    bufferevent_set_max_single_read(c->client, TUNNEL_IO_CHUNK);
    bufferevent_set_max_single_write(c->client, TUNNEL_IO_CHUNK);
    bufferevent_set_max_single_read(c->up, TUNNEL_IO_CHUNK);
    bufferevent_set_max_single_write(c->up, TUNNEL_IO_CHUNK);
    bufferevent_setwatermark(c->client, EV_WRITE, 0, 0);
    bufferevent_setwatermark(c->up, EV_WRITE, 0, 0);
    bufferevent_setcb(c->client, tunnel_readcb, tunnel_writecb, tunnel_eventcb, c);
    bufferevent_setcb(c->up, tunnel_readcb, tunnel_writecb, tunnel_eventcb, c);
    bufferevent_enable(c->client, EV_READ | EV_WRITE);
    bufferevent_enable(c->up, EV_READ | EV_WRITE);
}

static void
tunnel_readcb(struct bufferevent *bev, void *arg)
{
    tunnel_move(arg, bev);
}

static void
tunnel_writecb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct bufferevent *other = bev == c->client ? c->up : c->client;

    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    if (other != NULL)
        bufferevent_enable(other, EV_READ);
}

/* After one side closed: free once the survivor has flushed what it was sent. */
static void
drain_writecb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

static void
drain_eventcb(struct bufferevent *bev, short what, void *arg)
{
    conn_free(arg);
}

static void
tunnel_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    struct bufferevent *other = bev == c->client ? c->up : c->client;

    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
            tunnel_move(c, bev);
        if (bev == c->client && c->ex->status == 0)
            c->ex->status = 200;
        if (other != NULL && evbuffer_get_length(bufferevent_get_output(other)) > 0) {
            /* Let the survivor flush; the closed side is done. */
            bufferevent_disable(bev, EV_READ | EV_WRITE);
            bufferevent_disable(other, EV_READ);
            bufferevent_setwatermark(other, EV_WRITE, 0, 0);
            bufferevent_setcb(other, NULL, drain_writecb, drain_eventcb, c);
            conn_set_timer(c, 10000);
            return;
        }
        conn_free(c);
    }
}
