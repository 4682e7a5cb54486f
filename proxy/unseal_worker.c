/*
 * The token worker: one thread owns the vault and runs unseal jobs from a bounded queue.
 * A job is the loop's while queued (it may be unlinked and freed), the worker's while it
 * runs, and comes back through the done list and an eventfd; only the loop thread touches
 * libevent, the done callbacks and the policy references. A cancelled job (its exchange
 * went away, or its deadline passed) keeps running but its result is wiped and dropped.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy.h"
#include "proxy/proxy_internal.h"
#include "proxy/unseal_worker.h"
#include "vault/vault.h"

#define UNSEAL_SCRATCH (VAULT_SECRET_MAX + 4096) /* see vault_unseal_into */
#define UNSEAL_IDLE_MAX 4      /* finished jobs kept with their locked buffer for reuse */
#define UNSEAL_RETRY_US 250000 /* after a failed open, do not hammer a missing token */

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_TAKEN };

struct unseal_job {
    struct unseal_worker *w;
    enum job_state state; /* under w->mu */
    /* input, fixed before the job is queued */
    char name[VAULT_NAME_MAX + 1];
    struct policy *pol;
    uint64_t deadline_ms; /* from pol: limits.unseal_timeout */
    /* output, written by the worker, read by the loop once the job is done */
    struct secbuf *secret; /* reused scratch, wiped between jobs */
    int rc;
    struct err err;
    /* loop thread only */
    unseal_done_fn done; /* NULL once cancelled */
    void *arg;
    struct event *deadline;
    TAILQ_ENTRY(unseal_job) link;
};

TAILQ_HEAD(job_list, unseal_job);

struct unseal_worker {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* a job was queued, or stop */
    struct job_list queue, done;
    size_t n_queued;
    int stop;
    int efd;
    /* worker thread only */
    struct vault *vault;
    uint64_t retry_after_us;
    struct err open_err; /* why the last open failed: the answer until retry_after_us */
    /* loop thread only */
    struct event_base *base;
    struct event *wake;
    uint64_t longest_ms; /* the longest deadline of any job so far (how long to wait at exit) */
    uint64_t stall_ms;   /* the deadline the stalled operation overran */
    int stalled;         /* an operation overran its deadline and has not come back */
    size_t n_out;        /* jobs submitted and not yet freed */
    struct job_list idle;
    size_t n_idle;
};

/* ---- worker thread ---- */

static struct vault *
worker_vault(struct unseal_worker *w, struct unseal_job *j, struct err *err)
{
    struct hsm_config cfg;
    uint64_t now = util_now_us();

    if (w->vault != NULL)
        return w->vault;
    if (now < w->retry_after_us) {
        /* The same reason as the open that failed: its users (the device's log lines)
         * tell a state change by the reason. */
        *err = w->open_err;
        return NULL;
    }
    vault_config_from_policy(j->pol, &cfg);
    if ((w->vault = vault_open(&cfg, j->pol->vault.dir, err)) == NULL) {
        w->retry_after_us = now + UNSEAL_RETRY_US;
        w->open_err = *err;
    }
    return w->vault;
}

static void
worker_run(struct unseal_worker *w, struct unseal_job *j)
{
    struct vault *v;

    err_clear(&j->err);
    j->rc = -1;
    ERR_clear_error(); /* this thread's OpenSSL queue: a stale entry must not fail a job */
    if ((v = worker_vault(w, j, &j->err)) == NULL)
        return;
    j->rc = vault_unseal_into(v, j->name, j->secret, &j->err);
    if (j->rc == -1 && j->err.code == ERR_TOKEN) {
        /* Reconnect on the next job, to a token that may have come back. */
        vault_close(w->vault);
        w->vault = NULL;
    }
}

static void *
worker_main(void *arg)
{
    struct unseal_worker *w = arg;
    struct unseal_job *j;
    uint64_t one = 1;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && TAILQ_EMPTY(&w->queue))
            pthread_cond_wait(&w->work_cv, &w->mu);
        if (w->stop)
            break;
        j = TAILQ_FIRST(&w->queue);
        TAILQ_REMOVE(&w->queue, j, link);
        w->n_queued--;
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&w->mu);
        worker_run(w, j);
        pthread_mutex_lock(&w->mu);
        j->state = JOB_DONE;
        TAILQ_INSERT_TAIL(&w->done, j, link);
        (void)!write(w->efd, &one, sizeof(one));
    }
    pthread_mutex_unlock(&w->mu);
    vault_close(w->vault);
    w->vault = NULL;
    return NULL;
}

/* ---- loop thread ---- */

/* Wipes the job's secret and frees it (or keeps it, wiped, for the next job). */
static void
job_free(struct unseal_job *j)
{
    struct unseal_worker *w = j->w;

    if (j->deadline != NULL)
        event_del(j->deadline);
    policy_unref(j->pol);
    j->pol = NULL;
    w->n_out--;
    if (j->secret != NULL && w->n_idle < UNSEAL_IDLE_MAX && !w->stop) {
        secbuf_wipe(j->secret);
        TAILQ_INSERT_HEAD(&w->idle, j, link);
        w->n_idle++;
        return;
    }
    if (j->deadline != NULL)
        event_free(j->deadline);
    secbuf_free(j->secret);
    free(j);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg);

static struct unseal_job *
job_new(struct unseal_worker *w)
{
    struct unseal_job *j;

    if ((j = TAILQ_FIRST(&w->idle)) != NULL) {
        TAILQ_REMOVE(&w->idle, j, link);
        w->n_idle--;
    } else {
        if ((j = calloc(1, sizeof(*j))) == NULL)
            return NULL;
        j->w = w;
        if ((j->deadline = evtimer_new(w->base, deadline_cb, j)) == NULL ||
            (j->secret = secbuf_new(UNSEAL_SCRATCH)) == NULL) {
            if (j->deadline != NULL)
                event_free(j->deadline);
            free(j);
            return NULL;
        }
    }
    j->state = JOB_QUEUED;
    j->done = NULL;
    j->arg = NULL;
    j->rc = -1;
    err_clear(&j->err);
    w->n_out++;
    return j;
}

/* Unlinks a queued job (under mu). 1 if it was still queued: it is the loop's again. */
static int
job_unqueue(struct unseal_job *j)
{
    if (j->state != JOB_QUEUED)
        return 0;
    TAILQ_REMOVE(&j->w->queue, j, link);
    j->w->n_queued--;
    j->state = JOB_TAKEN;
    return 1;
}

void
unseal_job_cancel(struct unseal_job *j)
{
    struct unseal_worker *w;
    int mine;

    if (j == NULL)
        return;
    w = j->w;
    j->done = NULL;
    j->arg = NULL;
    event_del(j->deadline);
    pthread_mutex_lock(&w->mu);
    mine = job_unqueue(j);
    pthread_mutex_unlock(&w->mu);
    /* Running or done: it comes back through the done list, where it is dropped. */
    if (mine)
        job_free(j);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct unseal_job *j = arg;
    struct unseal_worker *w = j->w;
    unseal_done_fn done = j->done;
    void *done_arg = j->arg;
    struct err err;

    if (!w->stalled)
        log_warn("vault: the token did not answer within %llu ms; injection fails until it "
                 "does",
                 (unsigned long long)j->deadline_ms);
    w->stalled = 1;
    w->stall_ms = j->deadline_ms;
    err_set(&err, ERR_TOKEN, "the token did not answer within %llu ms",
            (unsigned long long)j->deadline_ms);
    unseal_job_cancel(j); /* may free j */
    if (done != NULL)
        done(done_arg, NULL, &err);
}

static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct unseal_worker *w = arg;
    struct unseal_job *j;
    uint64_t n;
    unseal_done_fn done;

    (void)!read(w->efd, &n, sizeof(n));
    for (;;) { /* bounded: at most UNSEAL_QUEUE_MAX jobs are ever out */
        pthread_mutex_lock(&w->mu);
        if ((j = TAILQ_FIRST(&w->done)) != NULL) {
            TAILQ_REMOVE(&w->done, j, link);
            j->state = JOB_TAKEN;
        }
        pthread_mutex_unlock(&w->mu);
        if (j == NULL)
            return;
        if (w->stalled)
            log_info("vault: the token answers again");
        w->stalled = 0;
        event_del(j->deadline);
        if ((done = j->done) == NULL) {
            job_free(j); /* cancelled: the secret is wiped unseen */
            continue;
        }
        j->done = NULL;
        if (j->rc == -1) {
            struct err err = j->err;
            void *done_arg = j->arg;
            job_free(j);
            done(done_arg, NULL, &err);
            continue;
        }
        done(j->arg, j, NULL);
    }
}

static int
job_prepare(struct unseal_job *j, struct policy *p, const char *name, struct err *err)
{
    if (p->vault.backend == POLICY_BACKEND_NONE) {
        err_set(err, ERR_USAGE, "no vault configured");
        return -1;
    }
    if (util_strlcpy(j->name, name, sizeof(j->name)) >= sizeof(j->name)) {
        err_set(err, ERR_USAGE, "credential name too long");
        return -1;
    }
    j->pol = policy_ref(p);
    j->deadline_ms = p->unseal_timeout_ms;
    return 0;
}

static int
worker_admits(struct unseal_worker *w, struct err *err)
{
    if (w->stalled)
        return err_set(err, ERR_TOKEN, "the token is not answering (an operation overran %llu ms)",
                       (unsigned long long)w->stall_ms);
    if (w->n_queued >= UNSEAL_QUEUE_MAX)
        return err_set(err, ERR_LIMIT, "too many unseals waiting for the token");
    return 0;
}

struct unseal_job *
unseal_submit(struct unseal_worker *w, struct policy *p, const char *name, unseal_done_fn done,
              void *arg, struct err *err)
{
    struct timeval tv;
    struct unseal_job *j;

    if (worker_admits(w, err) == -1)
        return NULL;
    if ((j = job_new(w)) == NULL) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (job_prepare(j, p, name, err) == -1) {
        job_free(j);
        return NULL;
    }
    j->done = done;
    j->arg = arg;
    tv = util_ms_timeval(j->deadline_ms);
    if (j->deadline_ms > w->longest_ms)
        w->longest_ms = j->deadline_ms;
    evtimer_add(j->deadline, &tv);
    pthread_mutex_lock(&w->mu);
    TAILQ_INSERT_TAIL(&w->queue, j, link);
    w->n_queued++;
    pthread_cond_signal(&w->work_cv);
    pthread_mutex_unlock(&w->mu);
    return j;
}

const struct secbuf *
unseal_job_secret(const struct unseal_job *j)
{
    return j->secret;
}

void
unseal_job_release(struct unseal_job *j)
{
    if (j != NULL)
        job_free(j);
}

struct unseal_worker *
unseal_worker_new(struct event_base *base, struct err *err)
{
    struct unseal_worker *w;
    sigset_t all, old;
    int rc;

    if ((w = calloc(1, sizeof(*w))) == NULL) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    w->base = base;
    TAILQ_INIT(&w->queue);
    TAILQ_INIT(&w->done);
    TAILQ_INIT(&w->idle);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->work_cv, NULL);
    if ((w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
        err_set(err, ERR_INTERNAL, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if ((w->wake = event_new(base, w->efd, EV_READ | EV_PERSIST, wake_cb, w)) == NULL ||
        event_add(w->wake, NULL) == -1) {
        err_set(err, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    /* The worker takes no signals: they stay with the loop thread (libevent's handlers). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        err_set(err, ERR_INTERNAL, "cannot start the token worker: %s", strerror(rc));
        goto fail;
    }
    return w;
fail:
    if (w->wake != NULL)
        event_free(w->wake);
    if (w->efd != -1)
        close(w->efd);
    pthread_cond_destroy(&w->work_cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return NULL;
}

static void
drop_all(struct unseal_worker *w, struct job_list *list)
{
    struct unseal_job *j;

    while ((j = TAILQ_FIRST(list)) != NULL) { /* bounded: the list only shrinks */
        TAILQ_REMOVE(list, j, link);
        if (list == &w->idle) {
            w->n_idle--;
            w->n_out++; /* job_free counts it out again */
        }
        j->state = JOB_TAKEN;
        job_free(j);
    }
}

void
unseal_worker_free(struct unseal_worker *w)
{
    struct timespec until;

    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->work_cv);
    pthread_mutex_unlock(&w->mu);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)((w->longest_ms + 999) / 1000) + 1;
    if (pthread_timedjoin_np(w->thread, NULL, &until) != 0) {
        /* Stuck in the token: it still uses w, so w stays (a leak at exit, not a crash). */
        log_warn("vault: the token worker is stuck in a token call; leaving it behind");
        pthread_detach(w->thread);
        return;
    }
    drop_all(w, &w->queue);
    drop_all(w, &w->done);
    drop_all(w, &w->idle);
    if (w->n_out != 0)
        log_warn("vault: %zu unseal jobs still out at shutdown", w->n_out);
    event_free(w->wake);
    close(w->efd);
    pthread_cond_destroy(&w->work_cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* proxy.h: the proxy's worker, for the daemon's other token users (the buddy pair key). */
struct unseal_worker *
proxy_token_worker(struct proxy *px)
{
    return px != NULL ? inject_worker(px) : NULL;
}
