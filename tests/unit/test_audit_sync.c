/*
 * Unit tests for the audit log's sync thread (audit/audit_sync.c): records reach the disk
 * without anyone calling audit_sync, at most once per AUDIT_SYNC_MS, and a sync that fails
 * on the thread makes the next append fail (fail closed) without writing, after which the
 * log goes on and still verifies.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "audit/audit.h"
#include "audit/audit_internal.h"
#include "common/util.h"

#define WAIT_MS 5000 /* bound on waiting for the thread (ASan, a loaded machine) */

static char dir[64], logpath[128];

static int
setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/airlock-auditsync-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(logpath, sizeof(logpath), "%s/audit.jsonl", dir);
    return 0;
}

static int
teardown(void **state)
{
    unlink(logpath);
    rmdir(dir);
    return 0;
}

static void
rec_init(struct audit_record *r, const char *id)
{
    memset(r, 0, sizeof(*r));
    r->id = id;
    r->agent = "ci-bot";
    r->via = "http";
    r->host = "api.example.test";
    r->port = 80;
    r->method = "GET";
    r->path = "/x";
    r->rule = "api";
    r->decision = "allow";
    r->status = 200;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Waits (bounded) until the thread has done at least n syncs; returns the ms waited. */
static uint64_t
wait_syncs(struct audit *a, unsigned n)
{
    uint64_t start = util_now_us() / 1000;

    while (audit_test_syncs(a) < n && util_now_us() / 1000 - start < WAIT_MS)
        sleep_ms(1);
    assert_true(audit_test_syncs(a) >= n);
    return util_now_us() / 1000 - start;
}

static off_t
file_size(void)
{
    struct stat st;

    assert_int_equal(stat(logpath, &st), 0);
    return st.st_size;
}

/* Nobody calls audit_sync: the thread syncs a record on its own, and only when dirty. */
static void
test_thread_syncs_written_records(void **state)
{
    struct audit_record r;
    struct audit *a;
    struct err err;

    a = audit_open(logpath, &err);
    assert_non_null(a);
    sleep_ms(2 * AUDIT_SYNC_MS);
    assert_int_equal(audit_test_syncs(a), 0); /* nothing written, nothing synced */
    rec_init(&r, "AAAAAA");
    assert_int_equal(audit_log(a, &r, &err), 0);
    wait_syncs(a, 1);
    sleep_ms(2 * AUDIT_SYNC_MS);
    assert_int_equal(audit_test_syncs(a), 1); /* clean again: no more syncs */
    audit_close(a);
}

/* A steady stream of records gets one sync per AUDIT_SYNC_MS, not one per record. */
static void
test_sync_at_most_every_interval(void **state)
{
    struct audit_record r;
    struct audit *a;
    struct err err;
    uint64_t start, elapsed_ms;
    unsigned before, done;
    int i;

    a = audit_open(logpath, &err);
    assert_non_null(a);
    rec_init(&r, "BBBBBB");
    assert_int_equal(audit_log(a, &r, &err), 0);
    wait_syncs(a, 1);
    before = audit_test_syncs(a);
    start = util_now_us();
    for (i = 0; i < 400 && util_now_us() - start < 450 * 1000; i++) {
        assert_int_equal(audit_log(a, &r, &err), 0);
        sleep_ms(1);
    }
    elapsed_ms = (util_now_us() - start) / 1000;
    done = audit_test_syncs(a) - before;
    print_message("%d records in %llu ms: %u background syncs\n", i,
        (unsigned long long)elapsed_ms, done);
    assert_true(done >= 1);
    /* +1: the interval in force when the loop began may end right after it started. */
    assert_true(done <= elapsed_ms / AUDIT_SYNC_MS + 1);
    assert_true(done < (unsigned)i);
    audit_close(a);
}

/*
 * A failed fdatasync on the thread (injected: EIO) is taken by the next append, which
 * fails and writes nothing, like a failed write; the error is reported once, the append
 * after it succeeds, and the chain still verifies.
 */
static void
test_sync_error_fails_next_append(void **state)
{
    struct audit_record r;
    struct audit *a;
    struct err err;
    uint64_t n, bad;
    off_t size;

    a = audit_open(logpath, &err);
    assert_non_null(a);
    rec_init(&r, "CCCCCC");
    audit_test_fail_next_sync(a, EIO);
    assert_int_equal(audit_log(a, &r, &err), 0);
    wait_syncs(a, 1);
    size = file_size();
    rec_init(&r, "DDDDDD");
    assert_int_equal(audit_log(a, &r, &err), -1);
    assert_int_equal(err.code, ERR_IO);
    assert_non_null(strstr(err.msg, "fdatasync"));
    assert_non_null(strstr(err.msg, strerror(EIO)));
    assert_non_null(strstr(err.msg, logpath));
    assert_int_equal(file_size(), size); /* the refused record was not written */
    assert_int_equal(audit_log(a, &r, &err), 0);
    assert_true(file_size() > size);
    audit_close(a);
    assert_int_equal(audit_verify(logpath, &n, &bad, &err), 0);
    assert_int_equal(n, 2);
}

/* audit_sync still syncs on the caller; close after writes joins the thread cleanly. */
static void
test_sync_now_and_close(void **state)
{
    struct audit_record r;
    struct audit *a;
    struct err err;
    uint64_t n, bad;
    int i;

    assert_int_equal(audit_sync(NULL), 0);
    a = audit_open(logpath, &err);
    assert_non_null(a);
    rec_init(&r, "EEEEEE");
    assert_int_equal(audit_sync(a), 0); /* clean: no-op */
    for (i = 0; i < 50; i++)
        assert_int_equal(audit_log(a, &r, &err), 0);
    assert_int_equal(audit_sync(a), 0);
    assert_int_equal(audit_log(a, &r, &err), 0);
    audit_close(a); /* dirty at close: the thread is stopped, then the last sync runs */
    assert_int_equal(audit_verify(logpath, &n, &bad, &err), 0);
    assert_int_equal(n, 51);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_thread_syncs_written_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_at_most_every_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_error_fails_next_append, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_now_and_close, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
