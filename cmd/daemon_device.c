/*
 * The buddy device in the daemon: the link shows the oldest pending item that a device may
 * decide, and a verified press becomes approvals_decide(..., APPROVAL_SOURCE_DEVICE). The
 * pair key is unsealed from the vault (credential "_buddy") once at start-up and kept only
 * inside the link's locked memory. No key or no device: items wait and time out (closed).
 */
#include <stdio.h>
#include <string.h>

#include "approvals/approvals.h"
#include "cmd/daemon_internal.h"
#include "common/log.h"
#include "device/buddy.h"
#include "hsm/hsm.h"
#include "vault/vault.h"

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
on_approval_event(int event, const struct approval_info *info, enum approval_outcome outcome,
    const char *approver, void *arg)
{
    struct daemon *d = arg;
    char text[160];

    if (d->buddy == NULL || !device_may_decide(info->mode))
        return;
    if (event == APPROVALS_EV_PENDING) {
        snprintf(text, sizeof(text), "%s %s %s (%s)", info->method ? info->method : "-",
            info->host ? info->host : "-", info->path ? info->path : "-",
            info->agent ? info->agent : "-");
        buddy_link_item_added(d->buddy, info->id, text);
    } else {
        buddy_link_item_removed(d->buddy, info->id);
    }
}

static struct secbuf *
device_key(const struct policy *p, struct err *err)
{
    struct hsm_config cfg;
    struct secbuf *key = NULL;
    struct vault *v;

    if (p->vault.backend == POLICY_BACKEND_NONE) {
        err_set(err, ERR_USAGE, "approvals.device.auth is hmac but no vault holds the pair key");
        return NULL;
    }
    vault_config_from_policy(p, &cfg);
    if ((v = vault_open(&cfg, p->vault.dir, err)) == NULL)
        return NULL;
    if (vault_unseal(v, "_buddy", &key, err) == 0 && key->len != 32) {
        err_set(err, ERR_CRYPTO, "pair key _buddy has %zu bytes, not 32", key->len);
        secbuf_free(key);
        key = NULL;
    }
    vault_close(v);
    return key;
}

int
daemon_device_start(struct daemon *d)
{
    const struct policy *p = d->pol;
    struct buddy_link_config cfg;
    struct secbuf *key = NULL;
    struct err err;

    if (!p->approvals.device_enabled)
        return 0;
    if (p->approvals.device_auth_hmac && (key = device_key(p, &err)) == NULL) {
        log_error("buddy device disabled: %s (run airlock buddy pair); device approvals will "
                  "time out", err.msg);
        return 0;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.path = p->approvals.device_path;
    cfg.baud = p->approvals.device_baud;
    cfg.auth_hmac = p->approvals.device_auth_hmac;
    d->buddy = buddy_link_new(d->base, &cfg, key, on_device_decision, d, &err);
    secbuf_free(key);
    if (d->buddy == NULL) {
        log_error("buddy device: %s", err.msg);
        return -1;
    }
    d->buddy_observer = approvals_observe(d->approvals, on_approval_event, d);
    log_info("buddy device: watching %s", cfg.path);
    return 0;
}

void
daemon_device_stop(struct daemon *d)
{
    if (d->buddy == NULL)
        return;
    approvals_unobserve(d->approvals, d->buddy_observer);
    buddy_link_free(d->buddy);
    d->buddy = NULL;
}
