/*
 * Responses airlock generates itself (403, 407, 502, ...) and the audit line for every
 * exchange. Generated bodies are one line of plain text naming the decision and the rule,
 * never a secret.
 */
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "audit/audit.h"
#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy_internal.h"

static const struct {
    const char *decision;
    int status;
} decision_statuses[] = {
    {"deny", 403}, {"no-rule", 403}, {"host-mismatch", 403}, {"private-address", 403},
    {"bad-request", 400}, {"approval-denied", 403}, {"approval-timeout", 403},
    {"approval-queue-full", 429}, {"approval-body-too-large", 413},
    {"vault-unavailable", 503}, {"audit-unavailable", 503}, {"upstream-dns", 502},
    {"upstream-connect", 502}, {"upstream-tls", 502}, {"upstream-timeout", 504},
    {"auth-failed", 407}, {"connection-limit", 503},
};

int
decision_status(const char *decision)
{
    size_t i;

    for (i = 0; i < sizeof(decision_statuses) / sizeof(decision_statuses[0]); i++)
        if (strcmp(decision_statuses[i].decision, decision) == 0)
            return decision_statuses[i].status;
    return 500;
}

static const char *
reason_phrase(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* Rule names are validated by the policy loader; still, never let one break a header. */
static int
header_safe(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return 0;
    return 1;
}

/*
 * Answers the current request with a generated response. The connection stays open for
 * the next request only when the request had no body left unread; otherwise it closes.
 */
void
conn_respond(struct conn *c, int status, const char *decision, const char *text)
{
    struct evbuffer *out = bufferevent_get_output(c->client);
    const struct policy_rule *rule = c->ex_active ? c->ex->rule : NULL;
    char body[512];
    int keep, n;

    if (!c->ex_active)
        conn_exchange_begin(c);
    c->ex->decision = decision;
    c->ex->status = status;
    keep = c->ex->req.raw != NULL && c->ex->req.keep_alive && c->ex->req.body == HTTP_BODY_NONE &&
        c->state != CS_EXCHANGE && status != 408 && status != 431 && status != 400 &&
        !c->px->draining;
    if (rule != NULL)
        n = snprintf(body, sizeof(body), "airlock: %s (rule %s): %s\n", decision, rule->name,
            text);
    else
        n = snprintf(body, sizeof(body), "airlock: %s: %s\n", decision, text);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)strlen(body);
    evbuffer_add_printf(out,
        "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        "X-Airlock-Decision: %s\r\n",
        status, reason_phrase(status), n, decision);
    if (rule != NULL && header_safe(rule->name))
        evbuffer_add_printf(out, "X-Airlock-Rule: %s\r\n", rule->name);
    if (status == 407)
        evbuffer_add_printf(out, "Proxy-Authenticate: Basic realm=\"airlock\"\r\n");
    evbuffer_add_printf(out, "%s\r\n", keep ? "" : "Connection: close\r\n");
    evbuffer_add(out, body, (size_t)n);
    conn_audit(c);
    c->px->stats.denied_total++;
    if (keep)
        request_next(c);
    else
        conn_close_when_flushed(c);
}

/* Writes one audit line. Fail closed: while the log cannot be written, nothing more is
 * forwarded. */
void
proxy_audit_write(struct proxy *px, const struct audit_record *rec)
{
    struct err err;

    if (audit_log(px->deps.audit, rec, &err) == -1) {
        if (!px->audit_failed)
            log_error("audit: %s: denying requests until it can be written again", err.msg);
        px->audit_failed = 1;
    } else if (px->audit_failed) {
        log_info("audit: writable again");
        px->audit_failed = 0;
    }
}

/* Writes the audit line for the current exchange and marks it done. */
void
conn_audit(struct conn *c)
{
    struct exchange *ex = c->ex;
    struct audit_record rec;
    uint64_t now = util_now_us();

    if (!c->ex_active)
        return;
    memset(&rec, 0, sizeof(rec));
    rec.id = ex->id;
    rec.agent = c->agent;
    rec.via = c->via;
    rec.host = ex->host[0] != '\0' ? ex->host : NULL;
    rec.port = ex->port;
    rec.method = ex->method[0] != '\0' ? ex->method : NULL;
    rec.path = ex->path[0] != '\0' ? ex->path : NULL;
    rec.rule = ex->rule != NULL ? ex->rule->name : NULL;
    rec.decision = ex->decision != NULL ? ex->decision : "error";
    rec.credential = ex->credential;
    rec.approver = ex->approver[0] != '\0' ? ex->approver : NULL;
    rec.status = ex->status;
    rec.bytes_up = ex->bytes_up;
    rec.bytes_down = ex->bytes_down;
    rec.ms = now > ex->start_us ? (now - ex->start_us) / 1000 : 0;
    proxy_audit_write(c->px, &rec);
    log_debug("%s %s %s %s:%u%s -> %s %d", ex->id, c->agent, rec.method ? rec.method : "-",
        rec.host ? rec.host : "-", ex->port, rec.path ? rec.path : "", rec.decision, ex->status);
    c->px->stats.requests_total++;
    c->ex_active = 0;
}
