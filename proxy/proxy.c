/*
 * Listeners and connection lifecycle: accept (bounded by max_connections), hand the new
 * connection to the HTTP or SOCKS5 front end, free it, swap policies, drain on shutdown.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/listener.h>

#include "audit/audit.h"
#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy_internal.h"

#define CLOSING_POLL_MS 10
#define CLOSING_MAX_MS 10000
/* accept() out of fds or memory: listeners rest this long instead of spinning on it. */
#define ACCEPT_PAUSE_MS 100

static size_t client_pending(struct conn *c);

/* Bytes relayed to the client by the exchange; between exchanges (none allocated) the
 * last snapshot stands, so the watchdog still sees the final response drain. */
static uint64_t
bytes_down(struct conn *c)
{
    return c->ex != NULL ? c->ex->bytes_down : c->watch_down;
}

/* Microseconds since the client last took a byte of what is queued for it. Snapshots are
 * compared: the relay adds bytes only as the client drains them, so any change is progress. */
static uint64_t
client_quiet_us(struct conn *c)
{
    size_t pending = client_pending(c);
    uint64_t now = util_now_us();

    if (pending != c->watch_pending || bytes_down(c) != c->watch_down) {
        c->watch_pending = pending;
        c->watch_down = bytes_down(c);
        c->watch_us = now;
    }
    return now - c->watch_us;
}

/* Takes a fresh snapshot for the send watchdog (the client just made progress). */
void
conn_watch_client(struct conn *c)
{
    c->watch_pending = client_pending(c);
    c->watch_down = bytes_down(c);
    c->watch_us = util_now_us();
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    uint64_t idle_us = c->pol->idle_timeout_ms * 1000, quiet;

    switch (c->state) {
    case CS_HEAD:
        if (evbuffer_get_length(bufferevent_get_input(c->client)) > 0 && c->kind == CONN_HTTP &&
            c->ex != NULL) {
            log_debug("%s: header read timeout", c->peer);
            c->ex_active = 0;
            conn_respond(c, 408, "bad-request", "request header timeout");
            return;
        }
        if (client_pending(c) > 0 && (quiet = client_quiet_us(c)) < idle_us) {
            /* Still taking the last response (a slow reader): not idle. */
            conn_set_timer(c, (idle_us - quiet) / 1000 + 1);
            return;
        }
        log_debug("%s: idle timeout", c->peer);
        break;
    case CS_SOCKS_GREETING:
    case CS_SOCKS_AUTH:
    case CS_SOCKS_REQUEST:
        log_debug("%s: socks5 handshake timeout", c->peer);
        break;
    case CS_HOLD_BODY:
        conn_respond(c, 408, "bad-request", "request body timeout");
        return;
    case CS_DIALING:
        /* The dial answers a connect that hangs by itself; this backstop (set by the
         * dial) catches a dialed upstream whose TLS handshake never finishes. */
        if (c->dial == NULL && c->ex_active && c->ex->req.raw != NULL) {
            log_info("%s: %s %s:%u: upstream TLS handshake timed out", c->peer, c->ex->id,
                c->ex->host, c->ex->port);
            if (c->up != NULL) {
                bufferevent_free(c->up);
                c->up = NULL;
            }
            c->state = CS_HEAD;
            conn_respond(c, 504, "upstream-timeout", "upstream did not answer in time");
            return;
        }
        break;
    case CS_EXCHANGE:
        /* Send watchdog: a client that takes nothing for idle_timeout while bytes wait
         * for it (it stopped reading, or vanished without a FIN) would pin this
         * connection and its upstream forever. Waiting for the upstream is not the
         * client's stall (the upstream timer covers that). */
        if (client_pending(c) == 0)
            c->watch_us = util_now_us();
        if (client_quiet_us(c) < idle_us) {
            conn_set_timer(c, c->pol->idle_timeout_ms / 4 + 1);
            return;
        }
        log_info("%s: %s client took no bytes for %llu ms; cutting", c->peer, c->ex->id,
            (unsigned long long)c->pol->idle_timeout_ms);
        break;
    case CS_CLOSING:
        /* Bounded: give a slow client CLOSING_MAX_MS to take its final response. */
        if (client_pending(c) > 0 && util_now_us() < c->closing_deadline_us) {
            conn_set_timer(c, CLOSING_POLL_MS);
            return;
        }
        break;
    default:
        break;
    }
    conn_free(c);
}

void
conn_set_timer(struct conn *c, uint64_t ms)
{
    struct timeval tv = util_ms_timeval(ms);

    evtimer_add(c->timer, &tv);
}

void
conn_clear_timer(struct conn *c)
{
    evtimer_del(c->timer);
}

/*
 * The exchange lives on the heap from accept, or from the first byte of the next request
 * on a kept-alive connection, until request_next: an idle connection holds none (10,000
 * idle keep-alive connections must fit in 100 MB). 0, or -1 out of memory.
 */
int
conn_exchange_alloc(struct conn *c)
{
    if (c->ex != NULL)
        return 0;
    if ((c->ex = calloc(1, sizeof(*c->ex))) == NULL)
        return -1;
    c->ex->path = "";
    return 0;
}

/* Frees what the exchange holds on the heap: request and response heads, the path. */
static void
exchange_release(struct exchange *ex)
{
    http_msg_clear(&ex->req);
    http_msg_clear(&ex->resp);
    free(ex->path_buf);
    ex->path_buf = NULL;
    ex->path = "";
}

/* Frees the exchange; the connection is idle (or going). NULL c->ex is a no-op. */
void
conn_exchange_free(struct conn *c)
{
    if (c->ex == NULL)
        return;
    exchange_release(c->ex);
    free(c->ex);
    c->ex = NULL;
}

/* Starts a fresh exchange on c (allocated, see conn_exchange_alloc): new id, clock
 * started, any earlier message released. */
void
conn_exchange_begin(struct conn *c)
{
    exchange_release(c->ex);
    memset(c->ex, 0, sizeof(*c->ex));
    c->ex->path = "";
    conn_new_id(c->ex->id);
    c->ex->start_us = util_now_us();
    c->ex_active = 1;
}

/* Remembers the exchange's target as the one c->up is connected to, for reuse by the
 * next request. A copy of its own length, not NET_HOST_MAX bytes in every connection;
 * out of memory only means the upstream is not reused. */
void
conn_note_upstream(struct conn *c)
{
    free(c->up_host);
    c->up_host = strdup(c->ex->host);
    c->up_port = c->ex->port;
}

/* Refuses a CONNECT/SOCKS5 stream before any request on it: audited, then closed. */
void
conn_refuse_stream(struct conn *c, const char *decision)
{
    conn_exchange_begin(c);
    util_strlcpy(c->ex->host, c->host, sizeof(c->ex->host));
    c->ex->port = c->port;
    c->ex->decision = decision;
    conn_free(c); /* writes the audit line for the active exchange */
}

/*
 * Ids are random, as before, but the bytes come from a pool filled by one getrandom per
 * ID_POOL_IDS ids instead of one per connection. The event loop is the only caller.
 */
#define ID_POOL_IDS 64

void
conn_new_id(char id[7])
{
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    static unsigned char pool[6 * ID_POOL_IDS];
    static size_t used = sizeof(pool);
    unsigned char *r;
    int i;

    if (used == sizeof(pool)) {
        if (util_random(pool, sizeof(pool)) == -1)
            memset(pool, 0, sizeof(pool));
        used = 0;
    }
    r = pool + used;
    used += 6;
    for (i = 0; i < 6; i++)
        id[i] = alphabet[r[i] & 31];
    id[6] = '\0';
}

static void
proxy_check_drained(struct proxy *px)
{
    void (*done)(void *);

    if (!px->draining || !TAILQ_EMPTY(&px->conns) || px->drain_done == NULL)
        return;
    done = px->drain_done;
    px->drain_done = NULL;
    if (px->drain_timer != NULL)
        evtimer_del(px->drain_timer);
    done(px->drain_arg);
}

void
conn_free(struct conn *c)
{
    struct proxy *px;

    if (c == NULL)
        return;
    px = c->px;
    if (c->dial != NULL)
        dial_cancel(c->dial);
    hold_cancel(c);
    inject_cancel(c); /* a running unseal's result is wiped when it comes */
    intercept_release(c); /* a parked leaf mint, the TLS write coalescing */
    if (c->ex_active && c->ex->decision != NULL)
        conn_audit(c);
    conn_exchange_free(c);
    free(c->up_host);
    splice_relay_free(c->splice); /* its events watch the fds freed below */
    if (c->up != NULL)
        bufferevent_free(c->up);
    if (c->client != NULL)
        bufferevent_free(c->client);
    if (c->timer != NULL)
        event_free(c->timer);
    policy_unref(c->pol);
    TAILQ_REMOVE(&px->conns, c, link);
    px->stats.connections_active--;
    free(c);
    proxy_check_drained(px);
}

/* Bytes still queued for the client, including under a TLS filter: the filter's own
 * buffer empties as soon as the bytes are encrypted into the socket bufferevent below. */
static size_t
client_pending(struct conn *c)
{
    struct bufferevent *under = bufferevent_get_underlying(c->client);
    size_t n = evbuffer_get_length(bufferevent_get_output(c->client));

    if (under != NULL)
        n += evbuffer_get_length(bufferevent_get_output(under));
    return n;
}

static void
closing_writecb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    if (client_pending(c) == 0)
        conn_free(c);
    else
        conn_set_timer(c, CLOSING_POLL_MS); /* the socket below is still writing */
}

static void
closing_eventcb(struct bufferevent *bev, short what, void *arg)
{
    conn_free(arg);
}

/* Sends whatever is queued for the client, then frees the connection. */
void
conn_close_when_flushed(struct conn *c)
{
    c->state = CS_CLOSING;
    if (c->dial != NULL) {
        dial_cancel(c->dial);
        c->dial = NULL;
    }
    if (c->up != NULL) {
        bufferevent_free(c->up);
        c->up = NULL;
    }
    bufferevent_disable(c->client, EV_READ);
    if (client_pending(c) == 0) {
        conn_free(c);
        return;
    }
    c->closing_deadline_us = util_now_us() + CLOSING_MAX_MS * 1000;
    bufferevent_setwatermark(c->client, EV_WRITE, 0, 0);
    bufferevent_setcb(c->client, NULL, closing_writecb, closing_eventcb, c);
    bufferevent_enable(c->client, EV_WRITE);
    conn_set_timer(c, CLOSING_POLL_MS);
}

static void
refuse_over_limit(struct proxy *px, evutil_socket_t fd, enum conn_kind kind,
    const struct sockaddr *sa)
{
    static const char http503[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        "X-Airlock-Decision: connection-limit\r\nConnection: close\r\nContent-Length: 41\r\n\r\n"
        "airlock: too many connections, try later\n";
    static const unsigned char socks_refuse[] = {5, 0xff};
    unsigned char drop[512];
    struct audit_record rec;
    char peer[64], id[7];

    net_format_addr(sa, peer, sizeof(peer));
    log_warn("%s: refused: %u connections already open", peer, px->pol->max_connections);
    /* Best effort: the socket is non-blocking and these fit in any send buffer. */
    if (kind == CONN_HTTP) {
        (void)!write(fd, http503, sizeof(http503) - 1);
    } else {
        (void)!write(fd, socks_refuse, sizeof(socks_refuse));
        /* Its greeting is already here (deferred accept): closing with it unread would
         * send a reset in place of the answer's FIN. */
        (void)!recv(fd, drop, sizeof(drop), MSG_DONTWAIT);
    }
    evutil_closesocket(fd);
    /* A decision like any other: audited, with no agent or target (nothing was read). */
    memset(&rec, 0, sizeof(rec));
    conn_new_id(id);
    rec.id = id;
    rec.agent = "-";
    rec.via = kind == CONN_HTTP ? "http" : "socks5";
    rec.decision = "connection-limit";
    rec.status = kind == CONN_HTTP ? 503 : 0;
    proxy_audit_write(px, &rec);
    px->stats.denied_total++;
}

/*
 * The SOCKS5 listener defers accepting until the client has sent something, so its
 * greeting is normally here already: answer it now, not a loop turn later, and without
 * the FIONREAD libevent asks before each of its reads. Nothing yet, EOF or an error: the
 * bufferevent meets it when the socket turns readable.
 */
static void
socks_take_greeting(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->client);
    unsigned char buf[1024];
    ssize_t n = recv(bufferevent_getfd(c->client), buf, sizeof(buf), MSG_DONTWAIT);
    int r;

    if (n <= 0)
        return;
    /* The bufferevent keeps its input's end frozen between its own reads; this is one. */
    evbuffer_unfreeze(in, 0);
    r = evbuffer_add(in, buf, (size_t)n);
    evbuffer_freeze(in, 0);
    if (r == -1) {
        conn_free(c);
        return;
    }
    socks_client_readcb(c->client, c);
}

static void
accept_common(struct proxy *px, evutil_socket_t fd, struct sockaddr *sa, enum conn_kind kind)
{
    struct conn *c;

    if (px->draining) {
        evutil_closesocket(fd);
        return;
    }
    if (px->stats.connections_active >= px->pol->max_connections) {
        refuse_over_limit(px, fd, kind, sa);
        return;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->px = px;
    c->pol = policy_ref(px->pol);
    c->kind = kind;
    c->via = kind == CONN_HTTP ? "http" : "socks5";
    net_format_addr(sa, c->peer, sizeof(c->peer));
    util_strlcpy(c->agent, "-", sizeof(c->agent));
    c->client = bufferevent_socket_new(px->deps.base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(px->deps.base, conn_timer_cb, c);
    TAILQ_INSERT_TAIL(&px->conns, c, link);
    px->stats.connections_active++;
    px->stats.connections_total++;
    if (c->client == NULL || c->timer == NULL || conn_exchange_alloc(c) == -1) {
        if (c->client == NULL)
            evutil_closesocket(fd);
        conn_free(c);
        return;
    }
    if (kind == CONN_HTTP) {
        c->state = CS_HEAD;
        bufferevent_setcb(c->client, http_client_readcb, NULL, http_client_eventcb, c);
        conn_set_timer(c, c->pol->header_timeout_ms);
    } else {
        c->state = CS_SOCKS_GREETING;
        bufferevent_setcb(c->client, socks_client_readcb, NULL, http_client_eventcb, c);
        conn_set_timer(c, c->pol->header_timeout_ms);
    }
    /* Writing is enabled from birth: the write event is armed once output is queued.
     * Enabling it here would arm it on an empty buffer (two epoll_ctl and a wake-up). */
    bufferevent_enable(c->client, EV_READ);
    if (kind == CONN_SOCKS5)
        socks_take_greeting(c); /* may free c */
}

static void
http_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
    void *arg)
{
    accept_common(arg, fd, sa, CONN_HTTP);
}

static void
socks_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
    void *arg)
{
    accept_common(arg, fd, sa, CONN_SOCKS5);
}

static void
accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *px = arg;

    if (px->draining)
        return;
    if (px->http_listener != NULL)
        evconnlistener_enable(px->http_listener);
    if (px->socks_listener != NULL)
        evconnlistener_enable(px->socks_listener);
}

static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct proxy *px = arg;
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    int e = errno;

    /*
     * EMFILE and friends leave the connection queued and the listener readable, so
     * listening on would spin at full CPU (and log each turn). Rest, then try again; the
     * queued clients wait in the backlog until a descriptor is free.
     */
    log_warn("accept: %s: pausing new connections for %d ms", strerror(e), ACCEPT_PAUSE_MS);
    evconnlistener_disable(l);
    if (px->accept_timer != NULL)
        evtimer_add(px->accept_timer, &tv);
}

static struct evconnlistener *
listen_on(struct proxy *px, const struct policy_listen *pl, evconnlistener_cb cb,
    unsigned flags, struct err *err)
{
    struct evconnlistener *l;

    l = evconnlistener_new_bind(px->deps.base, cb, px,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC | flags, 1024,
        (const struct sockaddr *)&pl->addr, (int)pl->addr_len);
    if (l == NULL) {
        err_set(err, ERR_IO, "listen %s: %s", pl->text, strerror(errno));
        return NULL;
    }
    evconnlistener_set_error_cb(l, accept_error_cb);
    log_info("listening on %s", pl->text);
    return l;
}

struct proxy *
proxy_new(const struct proxy_deps *deps, struct policy *p, struct err *err)
{
    struct proxy *px;

    if ((px = calloc(1, sizeof(*px))) == NULL) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    px->deps = *deps;
    px->pol = policy_ref(p);
    TAILQ_INIT(&px->conns);
    if ((px->accept_timer = evtimer_new(deps->base, accept_resume_cb, px)) == NULL) {
        err_set(err, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    if (inject_init(px) == -1) {
        err_set(err, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    if (intercept_init(px, p, err) == -1)
        goto fail;
    if (p->listen_http.enabled &&
        (px->http_listener = listen_on(px, &p->listen_http, http_accept_cb, 0, err)) == NULL)
        goto fail;
    /* A SOCKS5 client speaks first: the kernel completes the handshake but hands the
     * connection over only with its greeting (TCP_DEFER_ACCEPT; one with nothing to say is
     * handed over after a second anyway), so one wake-up takes both. */
    if (p->listen_socks5.enabled &&
        (px->socks_listener = listen_on(px, &p->listen_socks5, socks_accept_cb,
             LEV_OPT_DEFERRED_ACCEPT, err)) == NULL)
        goto fail;
    return px;
fail:
    proxy_free(px);
    return NULL;
}

void
proxy_set_policy(struct proxy *px, struct policy *p)
{
    struct policy *old = px->pol;

    px->pol = policy_ref(p);
    policy_unref(old);
}

static void
drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *px = arg;

    log_warn("shutdown: cutting %llu connections still open",
        (unsigned long long)px->stats.connections_active);
    while (!TAILQ_EMPTY(&px->conns))
        conn_free(TAILQ_FIRST(&px->conns));
}

void
proxy_drain(struct proxy *px, uint64_t grace_ms, void (*done)(void *arg), void *arg)
{
    struct conn *c, *next;
    struct timeval tv = util_ms_timeval(grace_ms);

    px->draining = 1;
    px->drain_done = done;
    px->drain_arg = arg;
    if (px->http_listener != NULL)
        evconnlistener_disable(px->http_listener);
    if (px->socks_listener != NULL)
        evconnlistener_disable(px->socks_listener);
    /* Idle connections (no request in flight) go now; the rest get the grace period. */
    for (c = TAILQ_FIRST(&px->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if ((c->state == CS_HEAD && !c->ex_active &&
                evbuffer_get_length(bufferevent_get_input(c->client)) == 0) ||
            c->state == CS_SOCKS_GREETING || c->state == CS_SOCKS_AUTH ||
            c->state == CS_SOCKS_REQUEST)
            conn_free(c);
    }
    px->drain_timer = evtimer_new(px->deps.base, drain_timeout_cb, px);
    evtimer_add(px->drain_timer, &tv);
    proxy_check_drained(px);
}

void
proxy_stats(const struct proxy *px, struct proxy_stats *out)
{
    *out = px->stats;
}

void
proxy_free(struct proxy *px)
{
    if (px == NULL)
        return;
    px->drain_done = NULL;
    while (!TAILQ_EMPTY(&px->conns))
        conn_free(TAILQ_FIRST(&px->conns));
    if (px->http_listener != NULL)
        evconnlistener_free(px->http_listener);
    if (px->socks_listener != NULL)
        evconnlistener_free(px->socks_listener);
    if (px->drain_timer != NULL)
        event_free(px->drain_timer);
    if (px->accept_timer != NULL)
        event_free(px->accept_timer);
    intercept_free(px);
    inject_free(px);
    policy_unref(px->pol);
    free(px);
}
