/*
 * The buddy device in the daemon: the link shows the oldest pending item that a device may
 * decide, and a verified press becomes approvals_decide(..., APPROVAL_SOURCE_DEVICE). With
 * auth hmac the pair key is unsealed from the vault (credential "_buddy") and kept only in
 * the link's locked memory. The unseal goes through the proxy's token worker, so a token
 * that hangs never stalls the loop. While the token cannot give the key the device stays
 * off (closed: items wait; the CLI decides where the rule allows) and the key is tried
 * again, 1 s doubling to 30 s apart; when it comes the link starts and is handed the
 * pending items.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "approvals/approvals.h"
#include "cmd/daemon_internal.h"
#include "common/log.h"
#include "common/util.h"
#include "device/buddy.h"
#include "proxy/proxy.h"
#include "proxy/unseal_worker.h"

#define KEY_RETRY_FIRST_MS 1000
#define KEY_RETRY_MAX_MS 30000

struct daemon_device {
    struct daemon *d;
    struct buddy_link *link; /* NULL while off (no key yet) */
    int observer;            /* approvals observer handle while link is up, else -1 */
    struct event *retry;     /* the next pair-key attempt */
    struct unseal_job *job;  /* the pair-key unseal under way on the token worker, or NULL */
    uint32_t retry_ms;       /* delay before the attempt after the next failure */
    unsigned attempts;       /* pair-key attempts since the device side started */
    int waiting;             /* the last attempt failed */
    int why_logged;          /* why was logged; a different reason is a new state */
    struct err why;          /* reason of the last failure */
    /* The settings this side runs with: a reload that changes them restarts it. */
    char *path;
    unsigned baud;
    int auth_hmac;
};

static void
on_device_decision(const char *id, int approve, const char *devid, void *arg)
{
    struct daemon *d = arg;
    char approver[64];
    struct err err;

    snprintf(approver, sizeof(approver), "device:%s", devid);
    if (approvals_decide(d->approvals, id, approve, APPROVAL_SOURCE_DEVICE, approver, &err) == -1)
        log_warn("device %s: %s %s: %s", devid, approve ? "approve" : "deny", id, err.msg);
}

static int
device_may_decide(enum policy_approve mode)
{
    return mode == POLICY_APPROVE_DEVICE || mode == POLICY_APPROVE_ANY ||
        mode == POLICY_APPROVE_NONE;
}

static void
show_item(struct daemon_device *dv, const struct approval_info *info)
{
    char text[160];

    if (!device_may_decide(info->mode))
        return;
    snprintf(text, sizeof(text), "%s %s %s (%s)", info->method ? info->method : "-",
        info->host ? info->host : "-", info->path ? info->path : "-",
        info->agent ? info->agent : "-");
    buddy_link_item_added(dv->link, info->id, text);
}

static void
on_approval_event(int event, const struct approval_info *info, enum approval_outcome outcome,
    const char *approver, void *arg)
{
    struct daemon_device *dv = arg;

    if (dv->link == NULL)
        return;
    if (event == APPROVALS_EV_PENDING)
        show_item(dv, info);
    else
        buddy_link_item_removed(dv->link, info->id);
}

/* Items that were already waiting when the link came up (oldest first). */
static int
show_pending(const struct approval_info *info, void *arg)
{
    show_item(arg, info);
    return 0;
}

/* Starts the link with key (NULL for auth none) and gives it the pending items. */
static int
link_up(struct daemon_device *dv, const struct secbuf *key, struct err *err)
{
    struct buddy_link_config cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.path = dv->path;
    cfg.baud = dv->baud;
    cfg.auth_hmac = dv->auth_hmac;
    dv->link = buddy_link_new(dv->d->base, &cfg, key, on_device_decision, dv->d, err);
    if (dv->link == NULL)
        return -1;
    if ((dv->observer = approvals_observe(dv->d->approvals, on_approval_event, dv)) < 0) {
        buddy_link_free(dv->link);
        dv->link = NULL;
        return err_set(err, ERR_INTERNAL, "buddy: no room for another approvals observer");
    }
    (void)approvals_foreach(dv->d->approvals, show_pending, dv);
    return 0;
}

static void
schedule_retry(struct daemon_device *dv)
{
    struct timeval tv = util_ms_timeval(dv->retry_ms);

    evtimer_add(dv->retry, &tv);
    dv->retry_ms = dv->retry_ms >= KEY_RETRY_MAX_MS / 2 ? KEY_RETRY_MAX_MS : dv->retry_ms * 2;
}

/* Starts the link (key NULL for auth none); -1 when it cannot be made: off until a reload,
 * for that reason (status shows it). */
static int
device_on(struct daemon_device *dv, const struct secbuf *key, struct err *err)
{
    if (link_up(dv, key, err) == -1) {
        dv->waiting = 0;
        dv->why = *err;
        return -1;
    }
    dv->waiting = 0;
    dv->why_logged = 0;
    log_info("buddy device: watching %s", dv->path);
    return 0;
}

/*
 * A failed attempt at the key. It is logged only when its reason differs from the one
 * logged last (one line per state change, not per attempt), then the next attempt is
 * scheduled.
 */
static void
key_failed(struct daemon_device *dv, const struct err *e)
{
    if (!dv->why_logged || e->code != dv->why.code || strcmp(e->msg, dv->why.msg) != 0)
        log_warn("buddy device: off, pair key unavailable: %s (retrying every %d s "
                 "at most; device approvals wait)", e->msg, KEY_RETRY_MAX_MS / 1000);
    dv->why = *e;
    dv->why_logged = 1;
    dv->waiting = 1;
    schedule_retry(dv);
}

/* The token worker's answer to a pair-key attempt, on the loop thread. */
static void
on_key(void *arg, struct unseal_job *job, const struct err *err)
{
    struct daemon_device *dv = arg;
    const struct secbuf *key;
    struct err e;

    dv->job = NULL;
    if (dv->d->stopping) { /* shutting down: no link now, no more attempts */
        unseal_job_release(job);
        return;
    }
    if (job == NULL) {
        key_failed(dv, err);
        return;
    }
    key = unseal_job_secret(job);
    if (key->len != BUDDY_KEY_LEN) {
        err_set(&e, ERR_CRYPTO, "pair key _buddy has %zu bytes, not %d", key->len,
            BUDDY_KEY_LEN);
        unseal_job_release(job);
        key_failed(dv, &e);
        return;
    }
    if (dv->waiting)
        log_info("buddy device: pair key unsealed (attempt %u); device on", dv->attempts);
    if (device_on(dv, key, &e) == -1)
        log_error("buddy device: %s; device off until a reload", e.msg);
    unseal_job_release(job); /* the link keeps its own locked copy; this one is wiped */
}

/*
 * One attempt to start the link. With auth hmac it asks the token worker for the key and
 * returns: on_key goes on (or a refusal at once, e.g. the token is known stuck, is a
 * failed attempt like any other). -1 only when the link itself cannot be made (it is then
 * off until a reload; the error is in err).
 */
static int
try_device(struct daemon_device *dv, struct err *err)
{
    struct unseal_worker *w;
    struct err e;

    if (!dv->auth_hmac)
        return device_on(dv, NULL, err);
    if (dv->job != NULL)
        return 0; /* an attempt is under way: its answer counts */
    dv->attempts++;
    if ((w = proxy_token_worker(dv->d->proxy)) == NULL)
        err_set(&e, ERR_INTERNAL, "no token worker");
    else if ((dv->job = unseal_submit(w, dv->d->pol, "_buddy", on_key, dv, &e)) != NULL)
        return 0;
    key_failed(dv, &e);
    return 0;
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct daemon_device *dv = arg;
    struct err err;

    if (dv->d->stopping || dv->link != NULL)
        return;
    if (try_device(dv, &err) == -1)
        log_error("buddy device: %s; device off until a reload", err.msg);
}

static void
device_free(struct daemon_device *dv)
{
    if (dv == NULL)
        return;
    if (dv->link != NULL) {
        approvals_unobserve(dv->d->approvals, dv->observer);
        buddy_link_free(dv->link);
    }
    unseal_job_cancel(dv->job); /* the key, if it comes, is wiped unseen */
    if (dv->retry != NULL)
        event_free(dv->retry);
    free(dv->path);
    free(dv);
}

int
daemon_device_start(struct daemon *d)
{
    const struct policy *p = d->pol;
    struct daemon_device *dv;
    struct err err;

    if (!p->approvals.device_enabled)
        return 0;
    if (p->approvals.device_auth_hmac && p->vault.backend == POLICY_BACKEND_NONE) {
        log_error("buddy device disabled: approvals.device.auth is hmac but no vault holds "
                  "the pair key; device approvals will time out");
        return 0;
    }
    if ((dv = calloc(1, sizeof(*dv))) == NULL ||
        (dv->path = strdup(p->approvals.device_path)) == NULL ||
        (dv->retry = evtimer_new(d->base, on_retry, dv)) == NULL) {
        log_error("buddy device: out of memory");
        device_free(dv);
        return -1;
    }
    dv->d = d;
    dv->observer = -1;
    dv->retry_ms = KEY_RETRY_FIRST_MS;
    dv->baud = p->approvals.device_baud;
    dv->auth_hmac = p->approvals.device_auth_hmac != 0;
    if (try_device(dv, &err) == -1) {
        log_error("buddy device: %s", err.msg);
        device_free(dv);
        return -1;
    }
    d->device = dv;
    return 0;
}

void
daemon_device_stop(struct daemon *d)
{
    device_free(d->device);
    d->device = NULL;
}

/* The link's own state: absent, connecting or connected. */
static json_t *
link_status(const struct buddy_link *link)
{
    struct buddy_link_status st;

    buddy_link_status(link, &st);
    switch (st.state) {
    case BUDDY_LINK_ABSENT:
        return json_pack("{s:s, s:s, s:s}", "state", "absent", "path", st.path, "reason",
            st.reason[0] != '\0' ? st.reason : "not opened yet");
    case BUDDY_LINK_HANDSHAKE:
        if (st.wrong_mac)
            return json_pack("{s:s, s:s, s:s}", "state", "connecting", "path", st.path,
                "reason", "HELLO reply with a wrong mac (paired with another key?)");
        return json_pack("{s:s, s:s}", "state", "connecting", "path", st.path);
    case BUDDY_LINK_CONNECTED:
        return json_pack("{s:s, s:s, s:s}", "state", "connected", "path", st.path, "devid",
            st.devid);
    }
    return NULL;
}

json_t *
daemon_device_status(const struct daemon *d)
{
    const struct daemon_device *dv = d->device;
    const struct policy *p = d->pol;

    if (dv == NULL && !p->approvals.device_enabled)
        return json_pack("{s:s}", "state", "not_configured");
    if (dv == NULL)
        return json_pack("{s:s, s:s}", "state", "off", "reason",
            p->approvals.device_auth_hmac && p->vault.backend == POLICY_BACKEND_NONE ?
                "approvals.device.auth is hmac but no vault holds the pair key" :
                "the device side could not be started; off until a reload");
    if (dv->link != NULL)
        return link_status(dv->link);
    if (dv->waiting || dv->job != NULL)
        return json_pack("{s:s, s:s, s:s, s:I}", "state", "waiting_for_key", "path", dv->path,
            "reason", dv->waiting ? dv->why.msg : "unsealing the pair key", "attempts",
            (json_int_t)dv->attempts);
    return json_pack("{s:s, s:s, s:s}", "state", "off", "path", dv->path, "reason",
        dv->why.msg);
}

static int
same_settings(const struct daemon_device *dv, const struct policy *p)
{
    return p->approvals.device_enabled && strcmp(dv->path, p->approvals.device_path) == 0 &&
        dv->baud == p->approvals.device_baud &&
        dv->auth_hmac == (p->approvals.device_auth_hmac != 0);
}

void
daemon_device_reload(struct daemon *d)
{
    struct daemon_device *dv = d->device;
    struct err err;

    if (dv != NULL && same_settings(dv, d->pol)) {
        if (dv->link != NULL)
            return; /* running: the device stays connected */
        /* Off: a reload is a request to try now (the token may be back, or the vault
         * settings changed); its outcome is logged again, once. */
        event_del(dv->retry);
        dv->retry_ms = KEY_RETRY_FIRST_MS;
        dv->why_logged = 0;
        if (try_device(dv, &err) == -1)
            log_error("buddy device: %s; device off until a reload", err.msg);
        return;
    }
    if (dv == NULL && !d->pol->approvals.device_enabled)
        return;
    if (dv != NULL)
        log_info("buddy device: settings changed by the reload; restarting the device side");
    daemon_device_stop(d);
    if (daemon_device_start(d) == -1)
        log_error("buddy device: off until a reload");
}
