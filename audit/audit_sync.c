/*
 * The audit log's background fdatasync (SPEC §8: "at most every 100 ms"). The event loop
 * only marks the log dirty after a write; one small thread syncs it, so no request waits
 * for the disk. A failed sync is kept in an atomic errno that the next append takes and
 * fails on, which makes the proxy deny (503 audit-unavailable) as for a failed write.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit_internal.h"
#include "common/log.h"

static void
deadline_after(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* One fdatasync covering every write that set dirty before it was cleared here. */
static void
syncer_sync(struct audit_syncer *s)
{
    char buf[128];
    int e, rc;

    if (!atomic_exchange(&s->dirty, 0))
        return;
    do
        rc = fdatasync(s->fd);
    while (rc == -1 && errno == EINTR);
    e = rc == -1 ? errno : atomic_exchange(&s->test_fail_errno, 0);
    if (e != 0) {
        /* Linux marks the pages clean after a failed writeback: a retry would "succeed". */
        atomic_store(&s->error, e);
        log_error("audit: %s: fdatasync: %s: refusing the next record", s->path,
            strerror_r(e, buf, sizeof(buf)));
    }
    atomic_fetch_add(&s->syncs, 1); /* after error: a test that sees the count sees it */
}

static void *
syncer_main(void *arg)
{
    struct audit_syncer *s = arg;
    struct timespec next;
    int stop = 0;

    deadline_after(&next, 0);
    pthread_mutex_lock(&s->mu);
    while (!stop) {
        while (!s->stop && !atomic_load(&s->dirty))
            pthread_cond_wait(&s->cv, &s->mu);
        /* At most one sync per interval; the close that stops us does the last one. */
        while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &next) == 0)
            ;
        if ((stop = s->stop) == 0) {
            pthread_mutex_unlock(&s->mu);
            syncer_sync(s);
            deadline_after(&next, AUDIT_SYNC_MS);
            pthread_mutex_lock(&s->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int
audit_syncer_start(struct audit_syncer *s, int fd, const char *path)
{
    pthread_condattr_t ca;
    sigset_t all, old;
    int rc;

    s->fd = fd;
    s->path = path;
    s->stop = 0;
    atomic_init(&s->dirty, 0);
    atomic_init(&s->error, 0);
    atomic_init(&s->test_fail_errno, 0);
    atomic_init(&s->syncs, 0);
    if ((rc = pthread_condattr_init(&ca)) != 0)
        return rc;
    if ((rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)) != 0 ||
        (rc = pthread_cond_init(&s->cv, &ca)) != 0) {
        pthread_condattr_destroy(&ca);
        return rc;
    }
    pthread_condattr_destroy(&ca);
    if ((rc = pthread_mutex_init(&s->mu, NULL)) != 0) {
        pthread_cond_destroy(&s->cv);
        return rc;
    }
    /* Signals stay with the loop thread (libevent's evsignal). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&s->thread, NULL, syncer_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        return rc;
    }
    s->running = 1;
    return 0;
}

void
audit_syncer_wrote(struct audit_syncer *s)
{
    /* Only the clean -> dirty edge wakes the thread: about one wake-up per interval. */
    if (atomic_exchange(&s->dirty, 1))
        return;
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int
audit_syncer_take_error(struct audit_syncer *s)
{
    /* A load first keeps the common case (no error) free of a locked instruction. */
    if (atomic_load_explicit(&s->error, memory_order_relaxed) == 0)
        return 0;
    return atomic_exchange(&s->error, 0);
}

int
audit_syncer_sync_now(struct audit_syncer *s)
{
    int rc;

    if (!atomic_exchange(&s->dirty, 0))
        return 0;
    do
        rc = fdatasync(s->fd);
    while (rc == -1 && errno == EINTR);
    if (rc == -1)
        atomic_store(&s->dirty, 1);
    return rc;
}

void
audit_syncer_stop(struct audit_syncer *s)
{
    if (!s->running)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    s->running = 0;
}
