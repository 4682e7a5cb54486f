/*
 * Credential injection. Once the upstream is ready the exchange parks and the token
 * worker (unseal_worker.c) unseals the secret into the job's locked buffer, which is wiped
 * as soon as the header lines are formatted; exchanges that ask for the same credential
 * while an unseal runs share it (struct inject_flight); a held secret skips the worker. The line goes
 * into a locked buffer handed to the upstream evbuffer by reference with a cleanup that
 * wipes it: no plain copy is kept. Both buffers are reused (jobs and lines through small
 * pools of wiped buffers), so an injection normally maps and locks no memory. `hold:`
 * keeps the unsealed secret in locked memory for that long.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "common/secmem.h"
#include "common/util.h"
#include "hsm/hsm.h"
#include "proxy/proxy_internal.h"
#include "proxy/unseal_worker.h"
#include "vault/vault.h"

#define INJECT_HOLD_MAX 64
#define INJECT_LINE_MAX (8192 + 1024)
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

/*
 * One unseal of one credential, shared by every exchange that asks for it while it runs
 * (single flight): the first asks the worker, later ones park on the same flight. The
 * answer is used by all of them in one callback on the loop and wiped after the last, so
 * hold: 0s still keeps no plaintext past the moment of injection, while a burst of N
 * requests costs one token round trip instead of N queued ones.
 */
struct inject_flight {
    struct inject_state *st;
    struct policy *pol;       /* asked under it; the waiters' own references keep it alive */
    const struct policy_credential *cred; /* pol's */
    struct unseal_job *job;   /* once answered: the secret, or NULL after a failure */
    int answered;
    size_t refs;              /* exchanges with c->flight == f, + 1 while answering */
    struct conn_list waiting; /* parked on it until the answer */
    LIST_ENTRY(inject_flight) link; /* in st->flights while unanswered */
};

struct inject_state {
    struct unseal_worker *worker; /* owns the vault: every token call runs there */
    LIST_HEAD(, inject_flight) flights; /* unanswered, one per (policy, credential) at most */
    struct inject_hold hold[INJECT_HOLD_MAX];
    struct event *sweep;
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
    struct err err;

    if ((px->inject = calloc(1, sizeof(*px->inject))) == NULL ||
        (px->inject->pool = calloc(1, sizeof(*px->inject->pool))) == NULL)
        return -1;
    px->inject->worker = unseal_worker_new(px->deps.base, &err);
    if (px->inject->worker == NULL) {
        log_warn("vault: %s", err.msg);
        return -1;
    }
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
    pool_close(st->pool);
    unseal_worker_free(st->worker); /* closes the vault on its own thread */
    free(st);
    px->inject = NULL;
}

/* The token worker, for the other users of the token on the request path (the CA key
 * for minting leaves, intercept.c). NULL before inject_init. */
struct unseal_worker *
inject_worker(struct proxy *px)
{
    return px->inject != NULL ? px->inject->worker : NULL;
}

/* A live held copy of the credential (expired ones too when now_us is 0), or NULL. */
static struct inject_hold *
hold_find(struct inject_state *st, const char *name, uint64_t now_us)
{
    size_t i;

    for (i = 0; i < INJECT_HOLD_MAX; i++)
        if (st->hold[i].secret != NULL && strcmp(st->hold[i].name, name) == 0 &&
            (now_us == 0 || st->hold[i].expires_us > now_us))
            return &st->hold[i];
    return NULL;
}

/* Keeps a copy of a freshly unsealed secret for hold_ms (locked to locked memory). */
static void
hold_keep(struct inject_state *st, const struct policy_credential *cred, const struct secbuf *s)
{
    struct inject_hold *slot = NULL;
    struct secbuf *held;
    size_t i;

    for (i = 0; i < INJECT_HOLD_MAX && slot == NULL; i++)
        if (st->hold[i].secret == NULL || strcmp(st->hold[i].name, cred->name) == 0)
            slot = &st->hold[i];
    if (slot == NULL || (held = secbuf_new(s->len + 1)) == NULL)
        return; /* no room to hold: used once, like hold: 0s */
    secbuf_append(held, s->data, s->len);
    hold_wipe(slot);
    util_strlcpy(slot->name, cred->name, sizeof(slot->name));
    slot->secret = held;
    slot->expires_us = util_now_us() + cred->hold_ms * 1000;
}

/* Drops a reference; the last one wipes the secret (or cancels the unanswered job). */
static void
flight_drop(struct inject_flight *f)
{
    if (--f->refs > 0)
        return;
    if (!f->answered) {
        LIST_REMOVE(f, link);
        unseal_job_cancel(f->job); /* its result is wiped when it comes */
    } else {
        unseal_job_release(f->job); /* wipes; NULL after a failure */
    }
    free(f);
}

/*
 * The worker's answer, on the loop thread: every exchange parked on the flight goes on,
 * here, one after the other, and formats its header from the one secret; the flight's
 * own reference, dropped last, then wipes it.
 */
static void
on_unsealed(void *arg, struct unseal_job *job, const struct err *err)
{
    struct inject_flight *f = arg;
    struct conn *c;

    LIST_REMOVE(f, link); /* answered: later exchanges start a flight of their own */
    f->answered = 1;
    f->job = job;
    if (job != NULL && f->cred->hold_ms > 0)
        hold_keep(f->st, f->cred, unseal_job_secret(job));
    f->refs++;
    /* Bounded: the list only shrinks (a waiter freed meanwhile unlinks itself). */
    while ((c = TAILQ_FIRST(&f->waiting)) != NULL) {
        TAILQ_REMOVE(&f->waiting, c, flight_link);
        forward_unsealed(c, err); /* uses the secret and lets go of f, or fails */
    }
    flight_drop(f);
}

/*
 * Before the request head is written: 1 when the credential is at hand (held, or the
 * flight has answered), 0 when the exchange parked on a flight (forward_unsealed resumes
 * it), -1 with err when the token cannot be asked now (fail closed).
 */
int
inject_begin(struct conn *c, struct err *err)
{
    const struct policy_credential *cred = c->ex->rule->credential;
    struct inject_state *st = c->px->inject;
    struct inject_flight *f = c->flight;

    if (f != NULL) {
        if (!f->answered)
            return 0;
        if (f->job != NULL)
            return 1;
        return err_set(err, ERR_TOKEN, "credential %s was not unsealed", cred->name);
    }
    if (cred->hold_ms > 0 && hold_find(st, cred->name, util_now_us()) != NULL)
        return 1;
    LIST_FOREACH(f, &st->flights, link)
        if (f->pol == c->pol && strcmp(f->cred->name, cred->name) == 0)
            break;
    if (f == NULL) {
        if ((f = calloc(1, sizeof(*f))) == NULL)
            return err_set(err, ERR_INTERNAL, "out of memory");
        f->st = st;
        f->pol = c->pol;
        f->cred = cred;
        TAILQ_INIT(&f->waiting);
        if ((f->job = unseal_submit(st->worker, c->pol, cred->name, on_unsealed, f, err)) ==
            NULL) {
            free(f);
            return -1;
        }
        c->px->stats.unseals_total++;
        LIST_INSERT_HEAD(&st->flights, f, link);
    }
    TAILQ_INSERT_TAIL(&f->waiting, c, flight_link);
    f->refs++;
    c->flight = f;
    return 0;
}

/* Lets go of the exchange's flight: a parked exchange leaves it (the last one to leave
 * cancels the job, whose result is then wiped unseen); an answered one drops its use of
 * the secret, which the last user wipes. */
void
inject_cancel(struct conn *c)
{
    struct inject_flight *f = c->flight;

    if (f == NULL)
        return;
    if (!f->answered)
        TAILQ_REMOVE(&f->waiting, c, flight_link);
    c->flight = NULL;
    flight_drop(f);
}

/* The plaintext inject_begin found: the flight's answer or a held copy. */
static const struct secbuf *
unsealed(struct conn *c, const struct policy_credential *cred, struct err *err)
{
    struct inject_hold *h;

    if (c->flight != NULL && c->flight->answered && c->flight->job != NULL)
        return unseal_job_secret(c->flight->job);
    /* inject_begin saw it live a moment ago; the sweep has not run since. */
    if ((h = hold_find(c->px->inject, cred->name, 0)) != NULL)
        return h->secret;
    err_set(err, ERR_INTERNAL, "credential %s was not unsealed", cred->name);
    return NULL;
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
    const struct policy_credential *cred = c->ex->rule->credential;
    struct inject_state *st = c->px->inject;
    const char *at = strstr(cred->format, "{secret}");
    int rc = 0;
    size_t prefix = (size_t)(at - cred->format), need;
    const struct secbuf *secret;
    struct inject_line *line = NULL;
    struct secbuf *sb;

    if ((secret = unsealed(c, cred, err)) == NULL) {
        inject_cancel(c);
        return -1;
    }
    need = strlen(cred->header) + 2 + strlen(cred->format) - 8 + secret->len + 2;
    if (!header_value_safe(secret->data, secret->len) || need > INJECT_LINE_MAX ||
        (line = line_get(st->pool, need)) == NULL) {
        inject_cancel(c); /* wipes the worker's copy */
        return err_set(err, ERR_CRYPTO, "credential %s cannot be used in a header", cred->name);
    }
    sb = line->sb;
    secbuf_append(sb, cred->header, strlen(cred->header));
    secbuf_append(sb, ": ", 2);
    secbuf_append(sb, cred->format, prefix);
    secbuf_append(sb, secret->data, secret->len);
    secbuf_append(sb, at + 8, strlen(at + 8));
    secbuf_append(sb, "\r\n", 2);
    inject_cancel(c); /* this exchange is done with the unsealed copy (the last one wipes it) */
    if (evbuffer_add_reference(out, sb->data, sb->len, line_release, line) == -1) {
        line_release(sb->data, sb->len, line);
        return err_set(err, ERR_INTERNAL, "cannot queue the credential");
    }
    c->px->stats.injections_total++;
    return rc;
}
