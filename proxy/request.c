/*
 * The HTTP data path, top-down: read a request head, identify the agent, find the target,
 * check Host and path, decide by policy, hold for approval, inject, forward, audit. CONNECT
 * and SOCKS5 streams that need per-request decisions come through here too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "audit/audit.h"
#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy_internal.h"

static void on_request_dialed(struct conn *c, struct bufferevent *up, const char *decision,
    const char *detail);
static void on_tunnel_dialed(struct conn *c, struct bufferevent *up, const char *decision,
    const char *detail);

/* Proxy-Authorization: Basic base64(user:pass). Returns 0 and sets c->agent, else -1. */
static int
identify_agent(struct conn *c)
{
    const char *hdr, *name;
    unsigned char decoded[512];
    char *colon;
    size_t len;
    int n;

    if (c->pol->nagents == 0) {
        util_strlcpy(c->agent, "-", sizeof(c->agent));
        return 0;
    }
    if (http_msg_header_count(&c->ex->req, "Proxy-Authorization") != 1)
        return -1;
    hdr = http_msg_header(&c->ex->req, "Proxy-Authorization");
    if (strncasecmp(hdr, "Basic ", 6) != 0)
        return -1;
    hdr += 6;
    while (*hdr == ' ')
        hdr++;
    len = strlen(hdr);
    if (len == 0 || len % 4 != 0 || len / 4 * 3 >= sizeof(decoded))
        return -1;
    if ((n = EVP_DecodeBlock(decoded, (const unsigned char *)hdr, (int)len)) < 0)
        return -1;
    if (len >= 1 && hdr[len - 1] == '=')
        n--;
    if (len >= 2 && hdr[len - 2] == '=')
        n--;
    decoded[n] = '\0';
    if (memchr(decoded, '\0', (size_t)n) != NULL ||
        (colon = strchr((char *)decoded, ':')) == NULL) {
        explicit_bzero(decoded, sizeof(decoded));
        return -1;
    }
    *colon = '\0';
    name = policy_authenticate(c->pol, (char *)decoded, colon + 1,
        (size_t)n - (size_t)(colon + 1 - (char *)decoded));
    explicit_bzero(decoded, sizeof(decoded));
    if (name == NULL)
        return -1;
    util_strlcpy(c->agent, name, sizeof(c->agent));
    return 0;
}

/* Host header as "name", "name:port" or "[v6]:port": must name the exchange's target. */
static int
host_header_matches(struct conn *c)
{
    struct exchange *ex = c->ex;
    const char *h, *end, *colon = NULL;
    char host[NET_HOST_MAX + 1];
    enum net_host_kind kind;
    unsigned long port;
    char *ep;

    if (http_msg_header_count(&ex->req, "Host") == 0)
        return ex->req.version_minor == 0 && !c->fixed ? 1 : -1;
    if (http_msg_header_count(&ex->req, "Host") > 1)
        return -1;
    h = http_msg_header(&ex->req, "Host");
    end = h + strlen(h);
    if (*h == '[') {
        const char *rb = strchr(h, ']');
        if (rb == NULL)
            return -1;
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if (rb[1] != '\0' && colon == NULL)
            return -1;
    } else if ((colon = strrchr(h, ':')) != NULL && strchr(h, ':') != colon) {
        return -1;
    }
    if (colon != NULL) {
        port = strtoul(colon + 1, &ep, 10);
        if (colon[1] == '\0' || *ep != '\0' || port != ex->port)
            return -1;
        end = colon;
    }
    if (net_normalize_host(h, (size_t)(end - h), host, sizeof(host), &kind) == -1)
        return -1;
    return strcmp(host, ex->host) == 0 ? 1 : -1;
}

/* ex->path = the origin-form target without its query, in a buffer of just its size. */
static int
exchange_set_path(struct exchange *ex)
{
    size_t len = strcspn(ex->origin, "?");

    if (len >= PROXY_PATH_MAX || (ex->path_buf = malloc(len + 1)) == NULL)
        return -1;
    if (http_path_only(ex->origin, ex->path_buf, len + 1) == -1) {
        free(ex->path_buf);
        ex->path_buf = NULL;
        return -1;
    }
    ex->path = ex->path_buf;
    return 0;
}

/* Where the request goes: absolute-form on the HTTP listener, the fixed target otherwise. */
static int
find_target(struct conn *c, const char **why)
{
    struct exchange *ex = c->ex;
    enum net_host_kind kind;

    if (!c->fixed) {
        *why = "request target must be an absolute http:// URL";
        if (http_parse_absolute(ex->req.target, ex->host, sizeof(ex->host), &kind, &ex->port,
                &ex->origin) == -1)
            return -1;
    } else {
        *why = "request target must be in origin-form";
        if (ex->req.target[0] != '/')
            return -1;
        util_strlcpy(ex->host, c->host, sizeof(ex->host));
        ex->port = c->port;
        ex->origin = ex->req.target;
    }
    *why = "request path too long";
    return exchange_set_path(ex);
}

/* Begins an exchange for a head of head_len bytes at the front of the client input. */
static int
exchange_begin(struct conn *c, const char *head, size_t head_len)
{
    int status = 400;

    conn_exchange_begin(c);
    if (http_parse_request(head, head_len, &c->ex->req, &status) == -1) {
        /* Smuggling shapes (unknown codings, other versions) all get a plain 400. */
        conn_respond(c, status == 431 ? 431 : 400, "bad-request", "malformed request");
        return -1;
    }
    util_strlcpy(c->ex->method, c->ex->req.method, sizeof(c->ex->method));
    return 0;
}

static void
try_head(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->client);
    size_t len = evbuffer_get_length(in), scan;
    const char *buf;
    long r;

    if (len == 0)
        return;
    if (conn_exchange_alloc(c) == -1) {
        log_warn("%s: out of memory for a request", c->peer);
        conn_free(c);
        return;
    }
    if (c->inspect && c->first_request) {
        unsigned char first;
        evbuffer_copyout(in, &first, 1);
        c->first_request = 0;
        if (first == 0x16 && intercept_available(c->px)) {
            intercept_client(c);
            return;
        }
        if (first == 0x16) {
            /* TLS inside the tunnel and no interception: fail closed. */
            log_warn("%s: %s:%u needs TLS interception, which is off or has no CA", c->peer,
                c->host, c->port);
            conn_refuse_stream(c, "deny");
            return;
        }
    }
    scan = len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD;
    buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)scan);
    r = http_head_scan(buf, scan);
    if (r == 0) {
        if (scan >= HTTP_MAX_HEAD) {
            conn_respond(c, 431, "bad-request", "request head too large");
            return;
        }
        if (!c->head_timer) {
            c->head_timer = 1;
            conn_set_timer(c, c->pol->header_timeout_ms);
        }
        return;
    }
    if (r < 0) {
        conn_respond(c, (int)-r, "bad-request", "malformed request head");
        return;
    }
    c->head_timer = 0;
    conn_clear_timer(c);
    if (exchange_begin(c, buf, (size_t)r) == -1)
        return;
    evbuffer_drain(in, (size_t)r);
    request_on_head_ready(c);
}

static void connect_begin(struct conn *c);

/*
 * 1 when nothing may be forwarded now: the last audit write failed, or no room can be
 * reserved on disk for the records of the requests let through (the disk is full). Asked
 * before anything is forwarded, so no request is served whose record cannot be written.
 */
int
conn_audit_blocked(struct conn *c)
{
    struct proxy *px = c->px;
    struct err err;

    if (audit_reserve(px->deps.audit, &err) == -1) {
        if (!px->audit_full)
            log_error("audit: %s: denying requests until there is room again", err.msg);
        px->audit_full = 1;
    } else if (px->audit_full) {
        log_info("audit: %s has room again", px->pol->audit_path);
        px->audit_full = 0;
    }
    return px->audit_failed || px->audit_full;
}

/*
 * The pipeline for one request whose head has been parsed. Each step either answers the
 * request itself (and returns) or hands on to the next.
 */
void
request_on_head_ready(struct conn *c)
{
    struct exchange *ex = c->ex;
    struct policy_request pr;
    const char *why;
    int target_ok;

    if (!c->fixed && strcmp(ex->method, "CONNECT") == 0) {
        connect_begin(c);
        return;
    }
    /* The target is parsed first so that even a 407 is audited with host and path. */
    target_ok = find_target(c, &why);
    if (!c->fixed && identify_agent(c) == -1) {
        conn_respond(c, 407, "auth-failed", "proxy authentication required");
        return;
    }
    if (target_ok == -1) {
        conn_respond(c, 400, "bad-request", why);
        return;
    }
    if (host_header_matches(c) == -1) {
        conn_respond(c, 403, "host-mismatch", "Host header does not name the target");
        return;
    }
    if (http_path_is_suspicious(ex->path) && policy_host_has_path_rules(c->pol, ex->host)) {
        conn_respond(c, 400, "bad-request", "ambiguous path (dot-segments or encoded separators)");
        return;
    }
    memset(&pr, 0, sizeof(pr));
    pr.agent = c->agent;
    pr.host = ex->host;
    pr.port = ex->port;
    pr.tls = c->tls;
    pr.method = ex->method;
    pr.path = ex->path;
    ex->rule = policy_match(c->pol, &pr);
    if (ex->rule == NULL && c->pol->default_action != POLICY_ALLOW) {
        conn_respond(c, 403, "no-rule", "no rule allows this request");
        return;
    }
    if (ex->rule != NULL && ex->rule->action == POLICY_DENY) {
        conn_respond(c, 403, "deny", "denied by policy");
        return;
    }
    if (conn_audit_blocked(c)) {
        conn_respond(c, 503, "audit-unavailable", "the audit log cannot be written");
        return;
    }
    ex->decision = "allow";
    if (ex->rule != NULL && ex->rule->action == POLICY_INJECT) {
        ex->credential = ex->rule->credential->name;
        if (!c->tls && !ex->rule->allow_cleartext) {
            conn_respond(c, 403, "deny",
                "credential injection over cleartext is refused (rule lacks allow_cleartext)");
            return;
        }
        ex->decision = "inject";
    }
    if (ex->rule != NULL && ex->rule->approve != POLICY_APPROVE_NONE) {
        hold_step(c);
        return;
    }
    request_proceed(c);
}

/* The request is allowed (and approved, if it had to be): reuse or dial the upstream. */
void
request_proceed(struct conn *c)
{
    struct exchange *ex = c->ex;

    if (c->up != NULL && c->up_host != NULL && strcmp(c->up_host, ex->host) == 0 &&
        c->up_port == ex->port) {
        ex->up_reused = 1;
        forward_start(c);
        return;
    }
    if (c->up != NULL) {
        bufferevent_free(c->up);
        c->up = NULL;
    }
    request_redial(c);
}

/* Dials the exchange's target for a request (also used to retry a stale upstream once). */
void
request_redial(struct conn *c)
{
    c->state = CS_DIALING;
    bufferevent_disable(c->client, EV_READ);
    c->dial = dial_start(c, c->ex->host, c->ex->port, on_request_dialed);
}

static void
on_request_dialed(struct conn *c, struct bufferevent *up, const char *decision,
    const char *detail)
{
    c->dial = NULL;
    if (up == NULL) {
        c->state = CS_HEAD;
        conn_respond(c, decision_status(decision), decision, detail);
        return;
    }
    if (c->tls) {
        conn_note_upstream(c);
        intercept_upstream(c, up);
        return;
    }
    c->up = up;
    conn_note_upstream(c);
    forward_start(c);
}

/* CONNECT host:port on the HTTP listener: a connection-level decision, then tunnel or parse. */
static void
connect_begin(struct conn *c)
{
    struct exchange *ex = c->ex;
    enum net_host_kind kind;
    enum policy_conn_verdict verdict;

    c->via = "connect";
    if (identify_agent(c) == -1) {
        conn_respond(c, 407, "auth-failed", "proxy authentication required");
        return;
    }
    if (http_parse_authority(ex->req.target, ex->host, sizeof(ex->host), &kind, &ex->port) == -1 ||
        ex->req.body != HTTP_BODY_NONE) {
        conn_respond(c, 400, "bad-request", "CONNECT needs host:port and no body");
        return;
    }
    verdict = policy_decide_connection(c->pol, c->agent, ex->host, ex->port, &ex->rule);
    if (verdict == POLICY_CONN_DENY) {
        conn_respond(c, 403, ex->rule != NULL ? "deny" : "no-rule",
            ex->rule != NULL ? "denied by policy" : "no rule allows this host");
        return;
    }
    if (conn_audit_blocked(c)) {
        conn_respond(c, 503, "audit-unavailable", "the audit log cannot be written");
        return;
    }
    c->fixed = 1;
    util_strlcpy(c->host, ex->host, sizeof(c->host));
    c->port = ex->port;
    if (verdict == POLICY_CONN_TUNNEL) {
        ex->decision = "allow";
        c->state = CS_DIALING;
        bufferevent_disable(c->client, EV_READ);
        c->dial = dial_start(c, c->host, c->port, on_tunnel_dialed);
        return;
    }
    evbuffer_add_printf(bufferevent_get_output(c->client),
        "HTTP/1.1 200 Connection established\r\n\r\n");
    connect_established(c, verdict);
}

/* CONNECT or SOCKS5 accepted with per-request decisions: parse what the client sends. */
void
connect_established(struct conn *c, enum policy_conn_verdict verdict)
{
    http_msg_clear(&c->ex->req);
    c->ex_active = 0;
    c->inspect = 1;
    c->first_request = 1;
    c->state = CS_HEAD;
    bufferevent_setcb(c->client, http_client_readcb, NULL, http_client_eventcb, c);
    bufferevent_enable(c->client, EV_READ);
    conn_set_timer(c, c->pol->header_timeout_ms);
    if (evbuffer_get_length(bufferevent_get_input(c->client)) > 0)
        bufferevent_trigger(c->client, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

static void
on_tunnel_dialed(struct conn *c, struct bufferevent *up, const char *decision,
    const char *detail)
{
    c->dial = NULL;
    if (up == NULL) {
        if (c->kind == CONN_SOCKS5) {
            c->ex->decision = decision;
            conn_audit(c);
            socks_reply(c, strcmp(decision, "upstream-timeout") == 0 ? 0x06
                    : strcmp(decision, "upstream-dns") == 0        ? 0x04
                    : strcmp(decision, "upstream-connect") == 0    ? 0x05
                                                                   : 0x02);
            conn_close_when_flushed(c);
            return;
        }
        c->state = CS_HEAD;
        conn_respond(c, decision_status(decision), decision, detail);
        return;
    }
    c->up = up;
    if (c->kind == CONN_SOCKS5)
        socks_reply(c, 0x00);
    else
        evbuffer_add_printf(bufferevent_get_output(c->client),
            "HTTP/1.1 200 Connection established\r\n\r\n");
    c->ex->status = 200;
    tunnel_start(c);
}

/* SOCKS5 entry into the same decisions (socks.c calls this once the request is parsed). */
void
socks_connect_decide(struct conn *c)
{
    enum policy_conn_verdict verdict;

    verdict = policy_decide_connection(c->pol, c->agent, c->host, c->port, &c->ex->rule);
    if (verdict == POLICY_CONN_DENY || conn_audit_blocked(c)) {
        c->ex->decision = verdict != POLICY_CONN_DENY ? "audit-unavailable"
            : c->ex->rule != NULL                     ? "deny"
                                                      : "no-rule";
        conn_audit(c);
        socks_reply(c, verdict == POLICY_CONN_DENY ? 0x02 : 0x01);
        conn_close_when_flushed(c);
        return;
    }
    if (verdict == POLICY_CONN_TUNNEL) {
        c->ex->decision = "allow";
        c->state = CS_DIALING;
        c->dial = dial_start(c, c->host, c->port, on_tunnel_dialed);
        return;
    }
    socks_reply(c, 0x00);
    c->ex_active = 0;
    connect_established(c, verdict);
}

/* After an exchange: wait for the next request (keep-alive) or parse one already buffered. */
void
request_next(struct conn *c)
{
    conn_exchange_free(c); /* an idle connection holds no exchange */
    c->ex_active = 0;
    c->state = CS_HEAD;
    c->head_timer = 0;
    if (c->px->draining) {
        conn_close_when_flushed(c);
        return;
    }
    bufferevent_setcb(c->client, http_client_readcb, NULL, http_client_eventcb, c);
    bufferevent_enable(c->client, EV_READ);
    conn_set_timer(c, c->pol->idle_timeout_ms);
    /* Pipelined bytes: deferred, so a run of denied requests cannot recurse. */
    if (evbuffer_get_length(bufferevent_get_input(c->client)) > 0)
        bufferevent_trigger(c->client, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

void
http_client_readcb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    if (c->state == CS_HEAD)
        try_head(c);
    else if (c->state == CS_HOLD_BODY)
        hold_step(c);
    else if (c->state == CS_EXCHANGE)
        (void)forward_client_data(c);
}

void
http_client_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    if (what & BEV_EVENT_ERROR)
        log_debug("%s: client error: %s", c->peer,
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    /* Client gone: whatever is in flight is cancelled; the audit line says so. */
    if (c->ex_active && c->ex->decision != NULL && c->ex->status == 0)
        c->ex->status = 499;
    conn_free(c);
}
