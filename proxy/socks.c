/*
 * SOCKS5 front end (RFC 1928 CONNECT, RFC 1929 username/password): the handshake, then
 * the same connection-level decision as HTTP CONNECT. No-auth is offered only when the
 * policy has no agents; BIND and UDP ASSOCIATE are refused with 0x07.
 */
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy_internal.h"
#include "proxy/socks5.h"

/* Bytes read ahead from a client that sends after its request, before the reply (plus
 * one read); the rest waits in the kernel until the tunnel starts. */
#define SOCKS_EARLY_MAX (16 * 1024)

/*
 * Handshake replies are a few bytes for a socket with nothing queued: send them now rather
 * than a loop turn later on writability, which costs a wake-up and two epoll_ctl calls per
 * reply (three replies per SOCKS5 connection). Whatever does not go is queued as before.
 */
static void
socks_send(struct conn *c, const unsigned char *buf, size_t n)
{
    ssize_t w = 0;

    if (evbuffer_get_length(bufferevent_get_output(c->client)) == 0 &&
        bufferevent_get_underlying(c->client) == NULL)
        w = send(bufferevent_getfd(c->client), buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0)
        w = 0; /* the bufferevent meets the error itself */
    if ((size_t)w < n)
        bufferevent_write(c->client, buf + w, n - (size_t)w);
}

void
socks_reply(struct conn *c, unsigned char rep)
{
    unsigned char out[32];
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    const struct sockaddr *bound = NULL;
    size_t n;

    if (rep == 0 && c->up != NULL &&
        getsockname(bufferevent_getfd(c->up), (struct sockaddr *)&ss, &len) == 0)
        bound = (const struct sockaddr *)&ss;
    n = socks5_format_reply(out, rep, bound);
    socks_send(c, out, n);
}

/*
 * While the target is dialed, EOF from the client is a half-close, not a departure: what
 * it sent stays queued for the tunnel, and the relay passes the EOF on (the socket reports
 * it again). Errors still end the connection.
 */
static void
socks_dial_eventcb(struct bufferevent *bev, short what, void *arg)
{
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR))
        return; /* libevent stopped reading by itself */
    http_client_eventcb(bev, what, arg);
}

static void
socks_fail(struct conn *c, const char *decision, unsigned char rep)
{
    if (!c->ex_active)
        conn_exchange_begin(c);
    c->ex->decision = decision;
    conn_audit(c);
    socks_reply(c, rep);
    conn_close_when_flushed(c);
}

static int
socks_greeting(struct conn *c, struct evbuffer *in)
{
    unsigned char *buf, reply[2] = {5, 0xff};
    size_t len = evbuffer_get_length(in);
    int noauth = 0, userpass = 0;
    long r;

    buf = evbuffer_pullup(in, (ev_ssize_t)(len < 512 ? len : 512));
    if ((r = socks5_parse_greeting(buf, len < 512 ? len : 512, &noauth, &userpass)) == 0)
        return 0;
    if (r < 0) {
        log_debug("%s: malformed socks5 greeting", c->peer);
        conn_free(c);
        return 0;
    }
    evbuffer_drain(in, (size_t)r);
    if (c->pol->nagents == 0 && noauth) {
        reply[1] = 0x00;
        c->authed = 1;
        c->state = CS_SOCKS_REQUEST;
    } else if (c->pol->nagents > 0 && userpass) {
        reply[1] = 0x02;
        c->state = CS_SOCKS_AUTH;
    }
    socks_send(c, reply, sizeof(reply));
    if (reply[1] == 0xff) {
        conn_close_when_flushed(c);
        return 0;
    }
    return 1;
}

static int
socks_auth(struct conn *c, struct evbuffer *in)
{
    char user[256], pass[256];
    unsigned char *buf, reply[2] = {1, 1};
    size_t len = evbuffer_get_length(in);
    const char *agent;
    long r;

    buf = evbuffer_pullup(in, (ev_ssize_t)(len < 520 ? len : 520));
    r = socks5_parse_userpass(buf, len < 520 ? len : 520, user, sizeof(user), pass, sizeof(pass));
    if (r == 0)
        return 0;
    if (r < 0) {
        explicit_bzero(pass, sizeof(pass));
        conn_free(c);
        return 0;
    }
    evbuffer_drain(in, (size_t)r);
    agent = policy_authenticate(c->pol, user, pass, strlen(pass));
    explicit_bzero(pass, sizeof(pass));
    if (agent == NULL) {
        conn_exchange_begin(c);
        c->ex->decision = "auth-failed";
        conn_audit(c);
        socks_send(c, reply, sizeof(reply));
        conn_close_when_flushed(c);
        return 0;
    }
    util_strlcpy(c->agent, agent, sizeof(c->agent));
    reply[1] = 0;
    c->authed = 1;
    c->state = CS_SOCKS_REQUEST;
    socks_send(c, reply, sizeof(reply));
    return 1;
}

static int
socks_request(struct conn *c, struct evbuffer *in)
{
    struct socks5_request req;
    unsigned char *buf, rep = 0x01;
    size_t len = evbuffer_get_length(in);
    enum net_host_kind kind;
    long r;

    buf = evbuffer_pullup(in, (ev_ssize_t)(len < 300 ? len : 300));
    r = socks5_parse_request(buf, len < 300 ? len : 300, &req, &rep);
    if (r == 0)
        return 0;
    conn_exchange_begin(c);
    util_strlcpy(c->ex->method, "CONNECT", sizeof(c->ex->method));
    if (r < 0) {
        socks_fail(c, "bad-request", rep);
        return 0;
    }
    evbuffer_drain(in, (size_t)r);
    c->ex->port = req.port;
    if (net_normalize_host(req.host, strlen(req.host), c->ex->host, sizeof(c->ex->host),
            &kind) == -1 || req.port == 0) {
        util_strlcpy(c->ex->host, "-", sizeof(c->ex->host));
        socks_fail(c, "bad-request", 0x01);
        return 0;
    }
    conn_clear_timer(c);
    c->fixed = 1;
    util_strlcpy(c->host, c->ex->host, sizeof(c->host));
    c->port = req.port;
    /* The client's socket stays registered for reading through the dial (removing it and
     * adding it back for the relay cost two epoll_ctl per connection). What it sends early
     * waits in its input (socks_client_readcb) and goes first once the tunnel starts. */
    bufferevent_setcb(c->client, socks_client_readcb, NULL, socks_dial_eventcb, c);
    socks_connect_decide(c);
    return 0; /* c may be gone: the decision owns it now */
}

void
socks_client_readcb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    int more = 1, steps;

    if (c->state == CS_DIALING) {
        /* Early bytes, sent before the reply: bounded, the kernel holds the rest. Whoever
         * takes the connection next (tunnel, inspected stream) enables reading again. */
        if (evbuffer_get_length(in) >= SOCKS_EARLY_MAX)
            bufferevent_disable(bev, EV_READ);
        return;
    }
    /* One message per step; a client may send greeting, auth and request back to back.
     * A step returning 0 may have freed c, so nothing touches c after it. */
    for (steps = 0; more && steps < 3 && evbuffer_get_length(in) > 0; steps++) {
        if (c->state == CS_SOCKS_GREETING)
            more = socks_greeting(c, in);
        else if (c->state == CS_SOCKS_AUTH)
            more = socks_auth(c, in);
        else if (c->state == CS_SOCKS_REQUEST)
            more = socks_request(c, in);
        else
            return;
    }
}
