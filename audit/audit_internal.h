/*
 * Private to audit/: the direct JSON encoder audit_log uses for each line (the same bytes
 * jansson's json_dumps(JSON_COMPACT | JSON_PRESERVE_ORDER) gave for the record object; the
 * unit test compares the two), and the background syncer (audit_sync.c), with its test hooks.
 */
#ifndef AIRLOCK_AUDIT_AUDIT_INTERNAL_H
#define AIRLOCK_AUDIT_AUDIT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "audit/audit.h"

/* String fields in a line (ts and prev included); each escapes to at most 6 bytes a byte. */
#define AUDIT_LINE_STRINGS 12
/* Longest line audit_line_encode can produce, newline included: a bound, not a typical size. */
#define AUDIT_LINE_MAX (AUDIT_LINE_STRINGS * (6 * AUDIT_FIELD_MAX + 2) + 512)

_Static_assert(AUDIT_LINE_MAX < AUDIT_VERIFY_LINE_MAX, "audit lines must stay verifiable");

/*
 * Encodes r as one compact JSON object with keys in SPEC order, ts first and prev last,
 * followed by '\n', into out (AUDIT_LINE_MAX bytes). Returns the length written, newline
 * included. Strings are cut at AUDIT_FIELD_MAX on a UTF-8 boundary ("path" first at its
 * '?'); a string that is not valid UTF-8 has every byte >= 0x80 replaced by '?'.
 */
size_t audit_line_encode(char *out, const struct audit_record *r, const char *ts, const char *prev);

/*
 * The thread that fdatasyncs the log at most every AUDIT_SYNC_MS, so the event loop never
 * waits for the disk. The loop calls audit_syncer_wrote after each write (an atomic swap;
 * a wake-up only when the log was clean) and audit_syncer_take_error before each write.
 */
struct audit_syncer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* dirty went 0 -> 1, or stop */
    int fd;
    const char *path;           /* the owner's, for messages */
    int stop;                   /* under mu */
    int running;                /* the thread was started (loop thread only) */
    atomic_int dirty;           /* written since the last sync began */
    atomic_int error;           /* errno of a failed background sync, until an append takes it */
    atomic_int test_fail_errno; /* test hook: the next background sync "fails" with it */
    atomic_uint syncs;          /* background syncs done (tests) */
};

/* Starts the thread for fd. 0, or an errno value (nothing to clean up then). */
int audit_syncer_start(struct audit_syncer *s, int fd, const char *path);
/* A record was written: make sure a sync follows within AUDIT_SYNC_MS. */
void audit_syncer_wrote(struct audit_syncer *s);
/* The errno of a background sync that failed since the last call (and clears it), or 0. */
int audit_syncer_take_error(struct audit_syncer *s);
/* fdatasync on the calling thread if dirty (close, tests). 0 / -1 with errno. */
int audit_syncer_sync_now(struct audit_syncer *s);
/* Stops and joins the thread (no sync: the caller does the last one). No-op if not running. */
void audit_syncer_stop(struct audit_syncer *s);

/* Test hooks: the next background sync reports errnum; background syncs done so far. */
void audit_test_fail_next_sync(struct audit *a, int errnum);
unsigned audit_test_syncs(struct audit *a);

#endif
