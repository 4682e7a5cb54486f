/*
 * Relaying one exchange: the request head (rewritten to origin-form, hop-by-hop and
 * Proxy-* headers removed), the request body streamed by its framing, the response head
 * parsed and rewritten, the response body streamed back. Bodies are never buffered whole:
 * each side stops reading while the other's output is above PROXY_HIGH_WATER.
 */
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy_internal.h"

static void up_readcb(struct bufferevent *bev, void *arg);
static void up_writecb(struct bufferevent *bev, void *arg);
static void up_eventcb(struct bufferevent *bev, short what, void *arg);
static void client_writecb(struct bufferevent *bev, void *arg);

/* RFC 9110 7.6.1: connection-specific fields, plus the proxy's own. */
static int
hop_by_hop(const struct http_msg *m, const char *name, int keep_upgrade)
{
    static const char *const fixed[] = {"Connection", "Keep-Alive", "Proxy-Connection",
        "Proxy-Authorization", "Proxy-Authenticate", "TE", "Upgrade"};
    const char *conn;
    size_t i;

    for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (strcasecmp(name, fixed[i]) == 0)
            return !(keep_upgrade && strcasecmp(name, "Upgrade") == 0);
    if (strncasecmp(name, "Proxy-", 6) == 0)
        return 1;
    for (i = 0; i < m->nhdrs; i++) {
        if (strcasecmp(m->hdrs[i].name, "Connection") != 0)
            continue;
        conn = m->hdrs[i].value;
        if (http_header_has_token(conn, name))
            return 1;
    }
    return 0;
}

/*
 * The request head for the upstream. With an inject rule, a client-supplied header of the
 * credential's name is dropped and the credential is appended by inject_header(). The head
 * is built aside and moved into `out` whole, so a failed unseal sends nothing at all.
 */
static int
write_request_head(struct conn *c, struct evbuffer *out, struct err *err)
{
    struct exchange *ex = c->ex;
    const struct http_msg *m = &ex->req;
    const char *cred_header = NULL;
    struct evbuffer *head;
    size_t i;

    if (ex->rule != NULL && ex->rule->action == POLICY_INJECT)
        cred_header = ex->rule->credential->header;
    if ((head = evbuffer_new()) == NULL)
        return err_set(err, ERR_INTERNAL, "out of memory");
    evbuffer_add_printf(head, "%s %s HTTP/1.%d\r\n", m->method, ex->origin, m->version_minor);
    for (i = 0; i < m->nhdrs; i++) {
        if (hop_by_hop(m, m->hdrs[i].name, ex->upgrade) ||
            (cred_header != NULL && strcasecmp(m->hdrs[i].name, cred_header) == 0))
            continue;
        evbuffer_add_printf(head, "%s: %s\r\n", m->hdrs[i].name, m->hdrs[i].value);
    }
    if (ex->upgrade)
        evbuffer_add_printf(head, "Connection: Upgrade\r\n");
    if (cred_header != NULL && inject_header(c, head, err) == -1) {
        evbuffer_free(head);
        return -1;
    }
    evbuffer_add(head, "\r\n", 2);
    evbuffer_add_buffer(out, head);
    evbuffer_free(head);
    return 0;
}

static void
write_response_head(struct conn *c, const struct http_msg *m, int final)
{
    struct evbuffer *out = bufferevent_get_output(c->client);
    int upgrade = m->status == 101 && c->ex->upgrade;
    size_t i;

    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", m->status, m->reason);
    for (i = 0; i < m->nhdrs; i++) {
        if (hop_by_hop(m, m->hdrs[i].name, upgrade))
            continue;
        evbuffer_add_printf(out, "%s: %s\r\n", m->hdrs[i].name, m->hdrs[i].value);
    }
    if (upgrade)
        evbuffer_add_printf(out, "Connection: Upgrade\r\n");
    else if (final && c->ex->client_close)
        evbuffer_add_printf(out, "Connection: close\r\n");
    evbuffer_add(out, "\r\n", 2);
}

/* Moves up to the end of the current body from src to dst. Returns 1 done, 0 more, -1 bad. */
static int
relay_body(struct evbuffer *src, struct evbuffer *dst, enum http_body kind, uint64_t *left,
    struct http_chunked *ch, uint64_t *count)
{
    struct evbuffer_iovec v;
    size_t n, used;
    int r;

    switch (kind) {
    case HTTP_BODY_NONE:
        return 1;
    case HTTP_BODY_CLOSE:
        n = evbuffer_get_length(src);
        *count += n;
        evbuffer_remove_buffer(src, dst, n);
        return 0;
    case HTTP_BODY_LENGTH:
        n = evbuffer_get_length(src);
        if (n > *left)
            n = (size_t)*left;
        evbuffer_remove_buffer(src, dst, n);
        *left -= n;
        *count += n;
        return *left == 0;
    case HTTP_BODY_CHUNKED:
        /* Bounded: every pass consumes a whole peeked segment or finishes the body. */
        while (evbuffer_peek(src, -1, NULL, &v, 1) > 0 && v.iov_len > 0) {
            r = http_chunked_feed(ch, v.iov_base, v.iov_len, &used);
            if (r == -1)
                return -1;
            evbuffer_remove_buffer(src, dst, used);
            *count += used;
            if (r == 1)
                return 1;
        }
        return 0;
    }
    return -1;
}

static void
exchange_done(struct conn *c)
{
    struct exchange *ex = c->ex;

    if (!ex->req_done) {
        /* The origin answered before reading the whole body: the stream is out of sync. */
        ex->client_close = 1;
        ex->up_keep = 0;
    }
    if (ex->up_keep && c->up != NULL && evbuffer_get_length(bufferevent_get_input(c->up)) > 0) {
        /* Bytes past the end of the response: the next request would get them as its
         * answer (response desync). An upstream out of step is never reused. */
        log_info("%s: %s %s:%u sent bytes past its response; not reusing it", c->peer, ex->id,
            ex->host, ex->port);
        ex->up_keep = 0;
    }
    conn_audit(c);
    conn_watch_client(c);
    if (!ex->up_keep && c->up != NULL) {
        bufferevent_free(c->up);
        c->up = NULL;
    }
    if (ex->client_close) {
        conn_close_when_flushed(c);
        return;
    }
    if (c->up != NULL) {
        /* Idle upstream: an EOF or stray byte from it now just drops it. */
        bufferevent_set_timeouts(c->up, NULL, NULL);
        bufferevent_enable(c->up, EV_READ);
    }
    request_next(c);
}

/*
 * (Re)arms the upstream stall timer: limits.upstream_timeout without a byte from the
 * upstream while a response is owed. Request body bytes sent upstream re-arm it too, so a
 * long upload to an origin that answers only at the end is not taken for a stall.
 */
static void
up_arm_timeout(struct conn *c)
{
    struct timeval tv = util_ms_timeval(c->pol->upstream_timeout_ms);

    bufferevent_set_timeouts(c->up, &tv, NULL);
}

/* The credential is unavailable: nothing was sent upstream; answer vault-unavailable. */
static void
unseal_failed(struct conn *c, const struct err *err)
{
    struct exchange *ex = c->ex;

    log_warn("%s: %s %s: %s", c->peer, ex->id, ex->credential ? ex->credential : "-", err->msg);
    inject_cancel(c);
    if (c->up != NULL) {
        bufferevent_free(c->up);
        c->up = NULL;
    }
    c->state = CS_HEAD;
    conn_respond(c, 503, "vault-unavailable", "the credential could not be unsealed");
}

/* Parked on the token: what the client sends waits in its buffer (forward_start relays
 * it); only a hang-up matters now, and http_client_eventcb sees that. */
static void
parked_readcb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    (void)arg;
}

/*
 * An inject exchange asks the token worker before its head is written and parks
 * meanwhile: nothing reaches the upstream and the loop serves every other connection.
 * 1 to go on now, 0 parked (forward_unsealed resumes), -1 answered.
 */
static int
unseal_step(struct conn *c)
{
    struct err err;
    int r;

    if (c->ex->rule == NULL || c->ex->rule->action != POLICY_INJECT)
        return 1;
    if ((r = inject_begin(c, &err)) == -1) {
        unseal_failed(c, &err);
        return -1;
    }
    if (r == 0) {
        c->state = CS_UNSEAL;
        /* The upstream stays as it is: if it talks or closes while parked, up_readcb and
         * up_eventcb drop it (not CS_EXCHANGE) and forward_unsealed dials again. Not
         * switching its reads off and on saves two epoll_ctl calls per injection. */
        bufferevent_setcb(c->up, up_readcb, up_writecb, up_eventcb, c);
        /* The client is still read, into its buffer and at most PROXY_HIGH_WATER, so that
         * a hang-up is seen at once: its exchange leaves the unseal and is never sent. */
        bufferevent_setcb(c->client, parked_readcb, client_writecb, http_client_eventcb, c);
        bufferevent_setwatermark(c->client, EV_READ, 0, PROXY_HIGH_WATER);
        bufferevent_enable(c->client, EV_READ);
    }
    return r;
}

/* The token worker answered (err NULL: the secret is on c) or gave up (deadline, error). */
void
forward_unsealed(struct conn *c, const struct err *err)
{
    bufferevent_setwatermark(c->client, EV_READ, 0, 0); /* parked_readcb's bound */
    if (err != NULL) {
        unseal_failed(c, err);
        return;
    }
    if (c->up == NULL) {
        /* A kept-alive upstream closed while parked: dial again (the job is dropped, the
         * next unseal comes from the hold or the worker). */
        inject_cancel(c);
        request_redial(c);
        return;
    }
    forward_start(c);
}

void
forward_start(struct conn *c)
{
    struct exchange *ex = c->ex;
    struct bufferevent *under;
    struct err err;

    conn_clear_timer(c);
    if (unseal_step(c) != 1)
        return;
    c->state = CS_EXCHANGE;
    ex->upgrade = ex->req.upgrade_websocket;
    ex->req_body = ex->req.body;
    ex->req_left = ex->req.content_length;
    http_chunked_init(&ex->req_chunk);
    ex->req_done = ex->req_body == HTTP_BODY_NONE ||
        (ex->req_body == HTTP_BODY_LENGTH && ex->req_left == 0);
    ex->client_close = !ex->req.keep_alive || c->px->draining;
    bufferevent_setcb(c->up, up_readcb, up_writecb, up_eventcb, c);
    up_arm_timeout(c);
    bufferevent_setwatermark(c->up, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
    if (write_request_head(c, bufferevent_get_output(c->up), &err) == -1) {
        unseal_failed(c, &err);
        return;
    }
    bufferevent_enable(c->up, EV_READ | EV_WRITE);
    bufferevent_setcb(c->client, http_client_readcb, client_writecb, http_client_eventcb, c);
    bufferevent_setwatermark(c->client, EV_WRITE, PROXY_HIGH_WATER / 2, 0);
    if ((under = bufferevent_get_underlying(c->client)) != NULL)
        /* Under a TLS filter: the filter encrypts only while the socket's queue is below
         * this, so its own output (checked against PROXY_HIGH_WATER) backs up too. */
        bufferevent_setwatermark(under, EV_WRITE, PROXY_HIGH_WATER / 2, PROXY_HIGH_WATER);
    /* The send watchdog (proxy.c): a client that stops taking its response is cut. */
    conn_watch_client(c);
    conn_set_timer(c, c->pol->idle_timeout_ms / 4 + 1);
    if (ex->req_done)
        bufferevent_disable(c->client, EV_READ);
    else
        bufferevent_enable(c->client, EV_READ);
    if (!forward_client_data(c))
        return;
    /* Already-buffered response bytes (a reused upstream answered early) are handled now. */
    if (c->up != NULL &&
        evbuffer_get_length(bufferevent_get_input(c->up)) > 0)
        up_readcb(c->up, c);
}

/* Request body bytes from the client. Returns 1 while the exchange goes on; after 0 the
 * exchange finished (c may be freed) and must not be touched. */
int
forward_client_data(struct conn *c)
{
    struct exchange *ex = c->ex;
    struct evbuffer *upout;
    uint64_t sent = ex->bytes_up;
    int r;

    if (ex->req_done || c->up == NULL)
        return 1;
    upout = bufferevent_get_output(c->up);
    r = relay_body(bufferevent_get_input(c->client), upout, ex->req_body, &ex->req_left,
        &ex->req_chunk, &ex->bytes_up);
    if (r != -1 && ex->bytes_up != sent)
        up_arm_timeout(c);
    if (r == -1) {
        log_info("%s: %s malformed chunked request body", c->peer, ex->id);
        if (!ex->resp_head_done) {
            /* Nothing answered yet: drop the upstream mid-request and say why. */
            bufferevent_free(c->up);
            c->up = NULL;
            c->state = CS_HEAD;
            conn_respond(c, 400, "bad-request", "malformed chunked request body");
            return 0;
        }
        ex->decision = "bad-request";
        ex->status = 400;
        conn_free(c);
        return 0;
    }
    if (r == 1) {
        ex->req_done = 1;
        bufferevent_disable(c->client, EV_READ);
        if (ex->resp_done) {
            exchange_done(c);
            return 0;
        }
        return 1;
    }
    if (evbuffer_get_length(upout) > PROXY_HIGH_WATER)
        bufferevent_disable(c->client, EV_READ);
    return 1;
}

static void
up_writecb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    /* Below the low-water mark again: resume reading the request body. */
    if (c->state == CS_EXCHANGE && !c->ex->req_done)
        bufferevent_enable(c->client, EV_READ);
}

static void
client_writecb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    if (c->state == CS_EXCHANGE && c->up != NULL && !c->ex->resp_done)
        bufferevent_enable(c->up, EV_READ);
}

static void
upstream_failed(struct conn *c, const char *decision, const char *detail)
{
    log_info("%s: %s %s:%u: %s", c->peer, c->ex->id, c->ex->host, c->ex->port, detail);
    if (c->ex->resp_head_done) {
        /* Mid-body: the client must see a truncated response, never a completed one. */
        c->ex->status = c->ex->status ? c->ex->status : 502;
        conn_free(c);
        return;
    }
    bufferevent_free(c->up);
    c->up = NULL;
    c->ex->up_keep = 0;
    conn_respond(c, decision_status(decision), decision, detail);
}

/* Parses the response head (skipping 1xx interim responses). 1 ready, 0 more, -1 failed. */
static int
response_head(struct conn *c)
{
    struct exchange *ex = c->ex;
    struct evbuffer *in = bufferevent_get_input(c->up);
    size_t len, scan;
    const char *buf;
    long r;

    for (;;) { /* bounded by the input: each pass consumes one head */
        len = evbuffer_get_length(in);
        scan = len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD;
        if (scan == 0)
            return 0;
        buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)scan);
        r = http_head_scan(buf, scan);
        if (r == 0 && scan < HTTP_MAX_HEAD)
            return 0;
        http_msg_clear(&ex->resp);
        if (r <= 0 || http_parse_response(buf, (size_t)r, ex->method, &ex->resp) == -1) {
            upstream_failed(c, "upstream-connect", "malformed response from upstream");
            return -1;
        }
        evbuffer_drain(in, (size_t)r);
        if (ex->resp.status >= 100 && ex->resp.status < 200 && ex->resp.status != 101) {
            write_response_head(c, &ex->resp, 0);
            continue;
        }
        return 1;
    }
}

static void
up_readcb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct exchange *ex = c->ex;
    struct evbuffer *cout = bufferevent_get_output(c->client);
    int r;

    if (c->state != CS_EXCHANGE) {
        /* An idle kept-alive upstream must not talk; drop it. */
        bufferevent_free(c->up);
        c->up = NULL;
        return;
    }
    if (!ex->resp_head_done) {
        if ((r = response_head(c)) == -1)
            return;
        if (r == 0) {
            /* Interim (1xx) responses fill the client's buffer like body bytes do: an
             * endless run of them must not grow it without bound. */
            if (evbuffer_get_length(cout) > PROXY_HIGH_WATER)
                bufferevent_disable(c->up, EV_READ);
            return;
        }
        ex->resp_head_done = 1;
        ex->status = ex->resp.status;
        if (ex->resp.status == 101 && ex->upgrade) {
            write_response_head(c, &ex->resp, 1);
            tunnel_start(c);
            return;
        }
        ex->resp_body = ex->resp.body;
        ex->resp_left = ex->resp.content_length;
        http_chunked_init(&ex->resp_chunk);
        ex->up_keep = ex->resp.keep_alive && ex->resp_body != HTTP_BODY_CLOSE;
        if (ex->resp_body == HTTP_BODY_CLOSE)
            ex->client_close = 1;
        write_response_head(c, &ex->resp, 1);
    }
    r = relay_body(bufferevent_get_input(c->up), cout, ex->resp_body, &ex->resp_left,
        &ex->resp_chunk, &ex->bytes_down);
    if (r == -1) {
        upstream_failed(c, "upstream-connect", "malformed chunked response from upstream");
        return;
    }
    if (r == 1) {
        ex->resp_done = 1;
        exchange_done(c);
        return;
    }
    if (evbuffer_get_length(cout) > PROXY_HIGH_WATER)
        bufferevent_disable(c->up, EV_READ);
}

static void
up_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    struct exchange *ex = c->ex;

    if (c->state != CS_EXCHANGE) {
        bufferevent_free(c->up);
        c->up = NULL;
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (!ex->req_done && !ex->resp_head_done &&
            evbuffer_get_length(bufferevent_get_output(c->up)) == 0) {
            /* All the client sent went upstream and no more came: the client stalls
             * mid-body, not the upstream (which would leave our output unsent). */
            log_info("%s: %s request body stalled", c->peer, ex->id);
            bufferevent_free(c->up);
            c->up = NULL;
            ex->up_keep = 0;
            conn_respond(c, 408, "bad-request", "request body timeout");
            return;
        }
        upstream_failed(c, "upstream-timeout", "upstream stalled");
        return;
    }
    if ((what & BEV_EVENT_EOF) && ex->resp_head_done && ex->resp_body == HTTP_BODY_CLOSE) {
        struct evbuffer *in = bufferevent_get_input(c->up);
        ex->bytes_down += evbuffer_get_length(in);
        evbuffer_add_buffer(bufferevent_get_output(c->client), in);
        ex->resp_done = 1;
        ex->client_close = 1;
        ex->up_keep = 0;
        exchange_done(c);
        return;
    }
    if (!ex->resp_head_done && ex->up_reused && ex->bytes_up == 0 &&
        ex->req_body == HTTP_BODY_NONE) {
        /* A kept-alive upstream closed as we reused it: retry once on a fresh connection. */
        log_debug("%s: %s stale upstream, redialing", c->peer, ex->id);
        bufferevent_free(c->up);
        c->up = NULL;
        ex->up_reused = 0;
        request_redial(c);
        return;
    }
    upstream_failed(c, "upstream-connect",
        (what & BEV_EVENT_EOF) ? "upstream closed the connection" : "upstream connection failed");
}
