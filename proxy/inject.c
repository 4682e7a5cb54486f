/*
 * Credential injection. The secret is unsealed through the token at the moment the
 * request head is written, formatted into a locked buffer and handed to the upstream
 * evbuffer by reference with a cleanup that wipes and unmaps it: no plain copy is kept.
 * `hold:` keeps the unsealed secret in locked memory for that long, for high-rate APIs.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "common/secmem.h"
#include "common/util.h"
#include "hsm/hsm.h"
#include "proxy/proxy_internal.h"
#include "vault/vault.h"

#define INJECT_HOLD_MAX 64
#define INJECT_LINE_MAX (8192 + 1024)

struct inject_hold {
    char name[65];
    struct secbuf *secret;
    uint64_t expires_us;
};

struct inject_state {
    struct vault *vault;
    uint64_t retry_after_us;    /* after a failed open, do not hammer a missing token */
    struct inject_hold hold[INJECT_HOLD_MAX];
    struct event *sweep;
};

static void
hold_wipe(struct inject_hold *h)
{
    secbuf_free(h->secret);
    memset(h, 0, sizeof(*h));
}

static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct inject_state *st = arg;
    uint64_t now = util_now_us();
    size_t i;

    for (i = 0; i < INJECT_HOLD_MAX; i++)
        if (st->hold[i].secret != NULL && st->hold[i].expires_us <= now)
            hold_wipe(&st->hold[i]);
}

int
inject_init(struct proxy *px)
{
    struct timeval one_second = {1, 0};

    if ((px->inject = calloc(1, sizeof(*px->inject))) == NULL)
        return -1;
    px->inject->sweep = event_new(px->deps.base, -1, EV_PERSIST, sweep_cb, px->inject);
    if (px->inject->sweep == NULL)
        return -1;
    evtimer_add(px->inject->sweep, &one_second);
    return 0;
}

void
inject_free(struct proxy *px)
{
    struct inject_state *st = px->inject;
    size_t i;

    if (st == NULL)
        return;
    for (i = 0; i < INJECT_HOLD_MAX; i++)
        hold_wipe(&st->hold[i]);
    if (st->sweep != NULL)
        event_free(st->sweep);
    vault_close(st->vault);
    free(st);
    px->inject = NULL;
}

/* The vault, opened on first use and reopened after the token comes back. */
static struct vault *
inject_vault(struct proxy *px, const struct policy *p, struct err *err)
{
    struct inject_state *st = px->inject;
    struct hsm_config cfg;
    uint64_t now = util_now_us();

    if (st->vault != NULL)
        return st->vault;
    if (p->vault.backend == POLICY_BACKEND_NONE) {
        err_set(err, ERR_USAGE, "no vault configured");
        return NULL;
    }
    if (now < st->retry_after_us) {
        err_set(err, ERR_TOKEN, "token unavailable (retrying shortly)");
        return NULL;
    }
    vault_config_from_policy(p, &cfg);
    if ((st->vault = vault_open(&cfg, p->vault.dir, err)) == NULL)
        st->retry_after_us = now + 250000;
    return st->vault;
}

/* Unseals an internal credential such as the CA key ("_ca"); the caller frees it. */
int
inject_unseal_named(struct proxy *px, const struct policy *p, const char *name,
    struct secbuf **out, struct err *err)
{
    struct vault *v;

    if ((v = inject_vault(px, p, err)) == NULL)
        return -1;
    if (vault_unseal(v, name, out, err) == -1) {
        if (err->code == ERR_TOKEN) {
            vault_close(px->inject->vault);
            px->inject->vault = NULL;
        }
        return -1;
    }
    return 0;
}

static struct secbuf *
unseal(struct proxy *px, const struct policy *p, const struct policy_credential *cred,
    struct err *err)
{
    struct inject_state *st = px->inject;
    struct inject_hold *slot = NULL;
    struct secbuf *sb = NULL, *copy;
    struct vault *v;
    size_t i;

    if (cred->hold_ms > 0) {
        for (i = 0; i < INJECT_HOLD_MAX; i++) {
            if (st->hold[i].secret != NULL && strcmp(st->hold[i].name, cred->name) == 0 &&
                st->hold[i].expires_us > util_now_us())
                slot = &st->hold[i];
        }
    }
    if (slot == NULL) {
        if ((v = inject_vault(px, p, err)) == NULL)
            return NULL;
        if (vault_unseal(v, cred->name, &sb, err) == -1) {
            /* Drop the handle so the next request reconnects to a token that came back. */
            if (err->code == ERR_TOKEN) {
                vault_close(st->vault);
                st->vault = NULL;
            }
            return NULL;
        }
        if (cred->hold_ms == 0)
            return sb;
        for (i = 0; i < INJECT_HOLD_MAX && slot == NULL; i++)
            if (st->hold[i].secret == NULL || strcmp(st->hold[i].name, cred->name) == 0)
                slot = &st->hold[i];
        if (slot == NULL)
            return sb;
        hold_wipe(slot);
        util_strlcpy(slot->name, cred->name, sizeof(slot->name));
        slot->secret = sb;
        slot->expires_us = util_now_us() + cred->hold_ms * 1000;
    }
    if ((copy = secbuf_new(slot->secret->len + 1)) == NULL) {
        err_set(err, ERR_INTERNAL, "out of locked memory");
        return NULL;
    }
    secbuf_append(copy, slot->secret->data, slot->secret->len);
    return copy;
}

static void
wipe_cleanup(const void *data, size_t len, void *arg)
{
    secbuf_free(arg);
}

/* A secret that could end the header line would let a credential smuggle headers. */
static int
header_value_safe(const unsigned char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
            return 0;
    return 1;
}

/*
 * Appends "Header: format-with-secret\r\n" to out. -1 with err when the token or the
 * credential is unavailable: the caller answers vault-unavailable and sends nothing.
 */
int
inject_header(struct conn *c, struct evbuffer *out, struct err *err)
{
    const struct policy_credential *cred = c->ex.rule->credential;
    const char *at = strstr(cred->format, "{secret}");
    struct secbuf *secret, *line;
    size_t prefix = (size_t)(at - cred->format), need;

    if ((secret = unseal(c->px, c->pol, cred, err)) == NULL)
        return -1;
    need = strlen(cred->header) + 2 + strlen(cred->format) - 8 + secret->len + 2;
    if (!header_value_safe(secret->data, secret->len) || need > INJECT_LINE_MAX ||
        (line = secbuf_new(need)) == NULL) {
        secbuf_free(secret);
        return err_set(err, ERR_CRYPTO, "credential %s cannot be used in a header", cred->name);
    }
    secbuf_append(line, cred->header, strlen(cred->header));
    secbuf_append(line, ": ", 2);
    secbuf_append(line, cred->format, prefix);
    secbuf_append(line, secret->data, secret->len);
    secbuf_append(line, at + 8, strlen(at + 8));
    secbuf_append(line, "\r\n", 2);
    secbuf_free(secret);
    if (evbuffer_add_reference(out, line->data, line->len, wipe_cleanup, line) == -1) {
        secbuf_free(line);
        return err_set(err, ERR_INTERNAL, "cannot queue the credential");
    }
    return 0;
}
