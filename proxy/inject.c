/*
 * Credential injection. The secret is unsealed through the token at the moment the
 * request head is written, into a locked scratch buffer that is wiped as soon as the
 * header line is formatted. The line goes into a locked buffer handed to the upstream
 * evbuffer by reference with a cleanup that wipes it: no plain copy is kept. Both buffers
 * are reused (lines through a small pool of wiped buffers), so an injection maps and
 * locks no memory. `hold:` keeps the unsealed secret in locked memory for that long.
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
#define INJECT_SCRATCH (VAULT_SECRET_MAX + 4096) /* see vault_unseal_into */
#define INJECT_POOL_CAP 4096 /* bytes per pooled line buffer; longer lines get their own */
#define INJECT_POOL_IDLE 32  /* idle line buffers kept locked */

struct inject_hold {
    char name[65];
    struct secbuf *secret;
    uint64_t expires_us;
};

struct inject_pool;

/* A locked line buffer; while queued on an evbuffer it is that evbuffer's to release. */
struct inject_line {
    struct secbuf *sb;
    struct inject_pool *pool; /* NULL: a one-off buffer for a long line */
    struct inject_line *next; /* in the pool's idle list */
};

/* Outlives inject_state while lines are still queued on buffers that are freed later. */
struct inject_pool {
    struct inject_line *idle; /* wiped, ready for reuse */
    size_t n_idle, n_out;
    int closed;
};

struct inject_state {
    struct vault *vault;
    uint64_t retry_after_us; /* after a failed open, do not hammer a missing token */
    struct inject_hold hold[INJECT_HOLD_MAX];
    struct event *sweep;
    struct secbuf *scratch; /* unsealed secret between unseal and formatting; wiped */
    struct inject_pool *pool;
};

static void
hold_wipe(struct inject_hold *h)
{
    secbuf_free(h->secret);
    memset(h, 0, sizeof(*h));
}

static void
line_free(struct inject_line *l)
{
    secbuf_free(l->sb); /* wipes */
    free(l);
}

static void
pool_close(struct inject_pool *pool)
{
    struct inject_line *l;

    if (pool == NULL)
        return;
    while ((l = pool->idle) != NULL) {
        pool->idle = l->next;
        line_free(l);
    }
    pool->n_idle = 0;
    pool->closed = 1;
    if (pool->n_out == 0)
        free(pool);
}

/* A wiped line buffer of at least need bytes, from the pool when it fits. */
static struct inject_line *
line_get(struct inject_pool *pool, size_t need)
{
    struct inject_line *l;

    if (need <= INJECT_POOL_CAP && pool->idle != NULL) {
        l = pool->idle;
        pool->idle = l->next;
        pool->n_idle--;
        pool->n_out++;
        return l;
    }
    if ((l = calloc(1, sizeof(*l))) == NULL)
        return NULL;
    if ((l->sb = secbuf_new(need <= INJECT_POOL_CAP ? INJECT_POOL_CAP : need)) == NULL) {
        free(l);
        return NULL;
    }
    if (need <= INJECT_POOL_CAP) {
        l->pool = pool;
        pool->n_out++;
    }
    return l;
}

/* evbuffer cleanup (and error path): wipe, then back to the pool or unmapped. */
static void
line_release(const void *data, size_t len, void *arg)
{
    struct inject_line *l = arg;
    struct inject_pool *pool = l->pool;

    if (pool == NULL) {
        line_free(l);
        return;
    }
    pool->n_out--;
    if (pool->closed || pool->n_idle >= INJECT_POOL_IDLE) {
        line_free(l);
        if (pool->closed && pool->n_out == 0)
            free(pool);
        return;
    }
    secbuf_wipe(l->sb);
    l->next = pool->idle;
    pool->idle = l;
    pool->n_idle++;
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

    if ((px->inject = calloc(1, sizeof(*px->inject))) == NULL ||
        (px->inject->pool = calloc(1, sizeof(*px->inject->pool))) == NULL ||
        (px->inject->scratch = secbuf_new(INJECT_SCRATCH)) == NULL)
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
    secbuf_free(st->scratch);
    pool_close(st->pool);
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

/* Forgets the vault after a token error so the next request reconnects to a token that
 * came back. */
static void
inject_token_failed(struct inject_state *st, const struct err *err)
{
    if (err->code == ERR_TOKEN) {
        vault_close(st->vault);
        st->vault = NULL;
    }
}

/* Unseals an internal credential such as the CA key ("_ca"); the caller frees it. */
int
inject_unseal_named(struct proxy *px, const struct policy *p, const char *name, struct secbuf **out,
                    struct err *err)
{
    struct vault *v;

    if ((v = inject_vault(px, p, err)) == NULL)
        return -1;
    if (vault_unseal(v, name, out, err) == -1) {
        inject_token_failed(px->inject, err);
        return -1;
    }
    return 0;
}

/*
 * The credential's plaintext: a held copy, or st->scratch, which the caller wipes as soon
 * as it has formatted the line (on every path). NULL with err when unavailable.
 */
static const struct secbuf *
unseal(struct proxy *px, const struct policy *p, const struct policy_credential *cred,
       struct err *err)
{
    struct inject_state *st = px->inject;
    struct inject_hold *slot = NULL;
    struct secbuf *held;
    struct vault *v;
    size_t i;

    if (cred->hold_ms > 0) {
        for (i = 0; i < INJECT_HOLD_MAX; i++) {
            if (st->hold[i].secret != NULL && strcmp(st->hold[i].name, cred->name) == 0 &&
                st->hold[i].expires_us > util_now_us())
                return st->hold[i].secret;
        }
    }
    if ((v = inject_vault(px, p, err)) == NULL)
        return NULL;
    if (vault_unseal_into(v, cred->name, st->scratch, err) == -1) {
        inject_token_failed(st, err);
        return NULL;
    }
    if (cred->hold_ms == 0)
        return st->scratch;
    for (i = 0; i < INJECT_HOLD_MAX && slot == NULL; i++)
        if (st->hold[i].secret == NULL || strcmp(st->hold[i].name, cred->name) == 0)
            slot = &st->hold[i];
    if (slot == NULL || (held = secbuf_new(st->scratch->len + 1)) == NULL)
        return st->scratch; /* no room to hold: used once, like hold: 0s */
    secbuf_append(held, st->scratch->data, st->scratch->len);
    hold_wipe(slot);
    util_strlcpy(slot->name, cred->name, sizeof(slot->name));
    slot->secret = held;
    slot->expires_us = util_now_us() + cred->hold_ms * 1000;
    return held;
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
    struct inject_state *st = c->px->inject;
    const char *at = strstr(cred->format, "{secret}");
    size_t prefix = (size_t)(at - cred->format), need;
    const struct secbuf *secret;
    struct inject_line *line = NULL;
    struct secbuf *sb;

    if ((secret = unseal(c->px, c->pol, cred, err)) == NULL)
        return -1;
    need = strlen(cred->header) + 2 + strlen(cred->format) - 8 + secret->len + 2;
    if (!header_value_safe(secret->data, secret->len) || need > INJECT_LINE_MAX ||
        (line = line_get(st->pool, need)) == NULL) {
        secbuf_wipe(st->scratch);
        return err_set(err, ERR_CRYPTO, "credential %s cannot be used in a header", cred->name);
    }
    sb = line->sb;
    secbuf_append(sb, cred->header, strlen(cred->header));
    secbuf_append(sb, ": ", 2);
    secbuf_append(sb, cred->format, prefix);
    secbuf_append(sb, secret->data, secret->len);
    secbuf_append(sb, at + 8, strlen(at + 8));
    secbuf_append(sb, "\r\n", 2);
    secbuf_wipe(st->scratch);
    if (evbuffer_add_reference(out, sb->data, sb->len, line_release, line) == -1) {
        line_release(sb->data, sb->len, line);
        return err_set(err, ERR_INTERNAL, "cannot queue the credential");
    }
    return 0;
}
