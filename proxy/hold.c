/*
 * Holding a request for approval: buffer its body (up to approvals.max_body, else 413),
 * put it in the pending queue (full: 429), and release exactly this request when a person
 * approves it. Denied, timed out or shut down: 403. Client gone: the item is cancelled.
 */
#include <string.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "approvals/approvals.h"
#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy_internal.h"

/* Room for pipelined bytes behind a held request; beyond it the socket is not read. */
#define HOLD_SLACK (64u * 1024)

/* 1 when the whole body is buffered, 0 when more is needed, -1 when it is too large or bad. */
static int
hold_body_complete(struct conn *c, size_t *body_len)
{
    struct exchange *ex = c->ex;
    struct evbuffer *in = bufferevent_get_input(c->client);
    uint64_t max = c->pol->approvals.max_body;
    struct evbuffer_ptr pos;
    struct evbuffer_iovec v;
    size_t used, len = evbuffer_get_length(in);
    int r;

    switch (ex->req.body) {
    case HTTP_BODY_NONE:
    case HTTP_BODY_CLOSE:
        *body_len = 0;
        return 1;
    case HTTP_BODY_LENGTH:
        if (ex->req.content_length > max)
            return -1;
        *body_len = (size_t)ex->req.content_length;
        return len >= *body_len;
    case HTTP_BODY_CHUNKED:
        /* Resume the framer where the last pass stopped; each pass eats one segment. */
        while (ex->hold_scanned < len) {
            if (evbuffer_ptr_set(in, &pos, ex->hold_scanned, EVBUFFER_PTR_SET) == -1 ||
                evbuffer_peek(in, -1, &pos, &v, 1) < 1 || v.iov_len == 0)
                return 0;
            r = http_chunked_feed(&ex->hold_chunk, v.iov_base, v.iov_len, &used);
            if (r == -1)
                return -1;
            ex->hold_scanned += used;
            if (ex->hold_scanned > max + max / 8 + 1024)
                return -1;
            if (r == 1) {
                *body_len = ex->hold_scanned;
                return 1;
            }
        }
        return 0;
    }
    return -1;
}

/* SHA-256 of the first len bytes of buf, segment by segment (no linear copy). */
static void
body_digest(struct evbuffer *buf, size_t len, char out[SHA256_HEX_LEN + 1])
{
    unsigned char md[32];
    unsigned int mdlen = sizeof(md);
    struct evbuffer_ptr pos;
    struct evbuffer_iovec v;
    EVP_MD_CTX *ctx;
    size_t done = 0, take;

    out[0] = '\0';
    if ((ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        util_ossl_clear("hold: body digest"); /* never leave the loop's queue dirty */
        return;
    }
    /* Bounded by len: each pass hashes one non-empty segment. */
    while (done < len && evbuffer_ptr_set(buf, &pos, done, EVBUFFER_PTR_SET) == 0 &&
        evbuffer_peek(buf, (ev_ssize_t)(len - done), &pos, &v, 1) > 0 && v.iov_len > 0) {
        take = v.iov_len < len - done ? v.iov_len : len - done;
        EVP_DigestUpdate(ctx, v.iov_base, take);
        done += take;
    }
    if (done == len && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1)
        util_hex_encode(md, sizeof(md), out);
    EVP_MD_CTX_free(ctx);
    if (out[0] == '\0')
        util_ossl_clear("hold: body digest");
}

static void
hold_done(enum approval_outcome outcome, const char *approver, void *arg)
{
    struct conn *c = arg;
    struct exchange *ex = c->ex;

    c->held = 0;
    if (approver != NULL)
        util_strlcpy(ex->approver, approver, sizeof(ex->approver));
    bufferevent_setwatermark(c->client, EV_READ, 0, 0);
    switch (outcome) {
    case APPROVAL_APPROVED:
        log_info("%s: %s approved by %s", c->peer, ex->id, approver ? approver : "-");
        if (conn_audit_blocked(c)) { /* the disk filled up during the wait */
            c->state = CS_HEAD;
            conn_respond(c, 503, "audit-unavailable", "the audit log cannot be written");
            return;
        }
        request_proceed(c);
        return;
    case APPROVAL_TIMEOUT:
        c->state = CS_HEAD;
        conn_respond(c, 403, "approval-timeout", "nobody approved the request in time");
        return;
    case APPROVAL_SHUTDOWN:
        c->state = CS_HEAD;
        conn_respond(c, 403, "approval-denied", "airlockd is shutting down");
        return;
    default:
        c->state = CS_HEAD;
        conn_respond(c, 403, "approval-denied", "a person denied the request");
        return;
    }
}

static void
hold_enqueue(struct conn *c, size_t body_len)
{
    struct exchange *ex = c->ex;
    struct approval_info info;
    char id[APPROVALS_ID_LEN + 1];

    memset(&info, 0, sizeof(info));
    info.agent = c->agent;
    info.method = ex->method;
    info.host = ex->host;
    info.path = ex->path;
    info.rule = ex->rule->name;
    info.credential = (char *)ex->credential;
    info.mode = ex->rule->approve;
    info.body_bytes = body_len;
    /* The digest is over the body as sent (chunk framing included), so it can be compared. */
    body_digest(bufferevent_get_input(c->client), body_len, info.body_sha256);
    if (approvals_hold(c->px->deps.approvals, &info, hold_done, c, id) == -1) {
        c->state = CS_HEAD;
        conn_respond(c, 429, "approval-queue-full", "too many requests are waiting for approval");
        return;
    }
    /* The audit line and `airlock approve` name the same id. */
    memcpy(ex->id, id, sizeof(ex->id));
    c->held = 1;
    c->state = CS_HELD;
    log_info("%s: %s held for approval (%s %s %s, rule %s)", c->peer, id, ex->method, ex->host,
        ex->path, ex->rule->name);
}

/* Called when the head is decided and whenever more body bytes arrive while buffering. */
void
hold_step(struct conn *c)
{
    size_t body_len = 0;
    int r;

    if (c->px->deps.approvals == NULL) {
        conn_respond(c, 503, "vault-unavailable", "approvals are not available");
        return;
    }
    if (c->state != CS_HOLD_BODY) {
        c->state = CS_HOLD_BODY;
        http_chunked_init(&c->ex->hold_chunk);
        c->ex->hold_scanned = 0;
        conn_set_timer(c, c->pol->idle_timeout_ms);
        bufferevent_setwatermark(c->client, EV_READ, 0,
            c->pol->approvals.max_body + c->pol->approvals.max_body / 8 + HOLD_SLACK);
        bufferevent_enable(c->client, EV_READ);
    }
    r = hold_body_complete(c, &body_len);
    if (r == -1) {
        c->state = CS_HEAD;
        conn_respond(c, 413, "approval-body-too-large",
            "the body of a request that needs approval is over approvals.max_body");
        return;
    }
    if (r == 0)
        return;
    conn_clear_timer(c);
    hold_enqueue(c, body_len);
}

/* The client went away while its request was held: withdraw the item. */
void
hold_cancel(struct conn *c)
{
    if (!c->held)
        return;
    c->held = 0;
    approvals_cancel(c->px->deps.approvals, c->ex->id);
    c->ex->decision = "approval-cancelled";
    c->ex->status = 499;
}
