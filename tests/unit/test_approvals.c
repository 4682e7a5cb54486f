/*
 * Unit tests for the approvals queue: ids, bounds, deadlines on a real event_base, who may
 * decide what, cancel and shutdown, observers, and callbacks that re-enter the queue.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "approvals/approvals.h"
#include "common/util.h"

struct record {
    int calls;
    enum approval_outcome outcome;
    char approver[64];
};

struct events {
    int pending, resolved;
    enum approval_outcome last;
    char last_id[8];
};

static struct event_base *base;

static int
setup(void **state)
{
    base = event_base_new();
    return base == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    event_base_free(base);
    return 0;
}

static void
done_cb(enum approval_outcome outcome, const char *approver, void *arg)
{
    struct record *r = arg;

    r->calls++;
    r->outcome = outcome;
    util_strlcpy(r->approver, approver != NULL ? approver : "", sizeof(r->approver));
}

static void
observe_cb(int event, const struct approval_info *info, enum approval_outcome outcome,
    const char *approver, void *arg)
{
    struct events *e = arg;

    if (event == APPROVALS_EV_PENDING)
        e->pending++;
    else
        e->resolved++;
    e->last = outcome;
    util_strlcpy(e->last_id, info->id, sizeof(e->last_id));
}

static void
info_init(struct approval_info *info, enum policy_approve mode)
{
    memset(info, 0, sizeof(*info));
    info->agent = "ci-bot";
    info->method = "POST";
    info->host = "api.github.com";
    info->path = "/repos/x/issues";
    info->rule = "github-write";
    info->credential = "github";
    info->body_bytes = 12;
    memset(info->body_sha256, 'a', 64);
    info->mode = mode;
}

static int
collect_ids(const struct approval_info *info, void *arg)
{
    char (*ids)[8] = arg;
    int i = 0;

    while (ids[i][0] != '\0')
        i++;
    memcpy(ids[i], info->id, 7);
    return 0;
}

static void
test_ids_and_bound(void **state)
{
    struct approvals *q = approvals_new(base, 64, 60000);
    static char ids[65][8], seen[65][8];
    struct approval_info info;
    struct record r = {0};
    char extra[7];
    int i, j;

    info_init(&info, POLICY_APPROVE_ANY);
    memset(seen, 0, sizeof(seen));
    for (i = 0; i < 64; i++) {
        assert_int_equal(approvals_hold(q, &info, done_cb, &r, ids[i]), 0);
        assert_int_equal(strlen(ids[i]), 6);
        assert_int_equal(strspn(ids[i], "0123456789ABCDEFGHJKMNPQRSTVWXYZ"), 6);
        for (j = 0; j < i; j++)
            assert_string_not_equal(ids[i], ids[j]);
    }
    assert_int_equal(approvals_hold(q, &info, done_cb, &r, extra), -1);
    assert_int_equal(approvals_count(q), 64);
    assert_string_equal(approvals_oldest(q)->id, ids[0]);
    approvals_foreach(q, collect_ids, seen);
    for (i = 0; i < 64; i++)
        assert_string_equal(seen[i], ids[i]);
    approvals_cancel(q, ids[0]);
    assert_string_equal(approvals_oldest(q)->id, ids[1]);
    assert_int_equal(approvals_hold(q, &info, done_cb, &r, extra), 0);
    assert_int_equal(r.calls, 0);
    approvals_free(q); /* frees the rest silently */
}

static void
test_timeout(void **state)
{
    struct approvals *q = approvals_new(base, 4, 50);
    struct approval_info info;
    struct record r = {0};
    struct events e = {0};
    uint64_t start = util_now_us();
    char id[7];
    int spins = 0;

    approvals_observe(q, observe_cb, &e);
    info_init(&info, POLICY_APPROVE_DEVICE);
    assert_int_equal(approvals_hold(q, &info, done_cb, &r, id), 0);
    assert_int_equal(e.pending, 1);
    while (r.calls == 0 && spins++ < 200)
        event_base_loop(base, EVLOOP_ONCE); /* the timer wakes it; 200 x 50 ms at most */
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.outcome, APPROVAL_TIMEOUT);
    assert_string_equal(r.approver, "");
    assert_true(util_now_us() - start >= 45000);
    assert_int_equal(approvals_count(q), 0);
    assert_int_equal(e.resolved, 1);
    assert_int_equal(e.last, APPROVAL_TIMEOUT);
    assert_string_equal(e.last_id, id);
    approvals_free(q);
}

static void
test_modes(void **state)
{
    struct approvals *q = approvals_new(base, 8, 60000);
    struct approval_info info;
    struct record dev = {0}, cli = {0}, any = {0};
    char idd[7], idc[7], ida[7];
    struct err err;

    info_init(&info, POLICY_APPROVE_DEVICE);
    assert_int_equal(approvals_hold(q, &info, done_cb, &dev, idd), 0);
    info.mode = POLICY_APPROVE_CLI;
    assert_int_equal(approvals_hold(q, &info, done_cb, &cli, idc), 0);
    info.mode = POLICY_APPROVE_ANY;
    assert_int_equal(approvals_hold(q, &info, done_cb, &any, ida), 0);

    assert_int_equal(approvals_decide(q, idd, 1, APPROVAL_SOURCE_CLI, "cli:uid=1", &err), -1);
    assert_string_equal(err.msg, "item requires device approval");
    assert_int_equal(approvals_decide(q, idc, 1, APPROVAL_SOURCE_DEVICE, "device:AB12", &err),
        -1);
    assert_string_equal(err.msg, "item requires cli approval");
    assert_int_equal(approvals_decide(q, "ZZZZZZ", 1, APPROVAL_SOURCE_CLI, "cli", &err), -1);
    assert_string_equal(err.msg, "unknown id");
    assert_int_equal(approvals_decide(q, NULL, 1, APPROVAL_SOURCE_CLI, "cli", &err), -1);
    assert_int_equal(dev.calls + cli.calls + any.calls, 0);

    assert_int_equal(approvals_decide(q, idd, 1, APPROVAL_SOURCE_DEVICE, "device:AB12", &err), 0);
    assert_int_equal(dev.calls, 1);
    assert_int_equal(dev.outcome, APPROVAL_APPROVED);
    assert_string_equal(dev.approver, "device:AB12");
    /* one approval releases exactly one request */
    assert_int_equal(approvals_decide(q, idd, 1, APPROVAL_SOURCE_DEVICE, "device:AB12", &err),
        -1);
    assert_int_equal(dev.calls, 1);
    assert_int_equal(approvals_decide(q, idc, 0, APPROVAL_SOURCE_CLI, "cli:uid=1", &err), 0);
    assert_int_equal(cli.outcome, APPROVAL_DENIED);
    assert_int_equal(approvals_decide(q, ida, 1, APPROVAL_SOURCE_CLI, "cli:uid=1", &err), 0);
    assert_int_equal(any.outcome, APPROVAL_APPROVED);
    info.mode = POLICY_APPROVE_ANY;
    assert_int_equal(approvals_hold(q, &info, done_cb, &any, ida), 0);
    assert_int_equal(approvals_decide(q, ida, 0, APPROVAL_SOURCE_DEVICE, "device:X", &err), 0);
    assert_int_equal(any.outcome, APPROVAL_DENIED);
    assert_int_equal(approvals_count(q), 0);
    approvals_free(q);
}

static void
test_cancel_and_shutdown(void **state)
{
    struct approvals *q = approvals_new(base, 8, 60000);
    struct approval_info info;
    struct record r[3] = {{0}}, late = {0};
    struct events e = {0};
    char id[3][7];
    int i;

    approvals_observe(q, observe_cb, &e);
    info_init(&info, POLICY_APPROVE_ANY);
    for (i = 0; i < 3; i++)
        assert_int_equal(approvals_hold(q, &info, done_cb, &r[i], id[i]), 0);
    approvals_cancel(q, id[1]);
    approvals_cancel(q, id[1]); /* twice: no-op */
    approvals_cancel(q, "nope");
    assert_int_equal(r[1].calls, 0);
    assert_int_equal(e.resolved, 1);
    assert_int_equal(e.last, APPROVAL_CANCELLED);
    approvals_shutdown(q);
    assert_int_equal(r[0].calls, 1);
    assert_int_equal(r[0].outcome, APPROVAL_SHUTDOWN);
    assert_int_equal(r[2].outcome, APPROVAL_SHUTDOWN);
    assert_int_equal(e.resolved, 3);
    assert_int_equal(approvals_count(q), 0);
    assert_null(approvals_oldest(q));
    assert_int_equal(approvals_hold(q, &info, done_cb, &late, id[0]), -1);
    approvals_free(q);
    approvals_free(NULL);
}

/* Re-entrancy: callbacks that cancel, hold, decide and unobserve from inside the queue. */
struct reenter {
    struct approvals *q;
    char victim[7], added[7];
    struct record victim_rec, added_rec;
    int calls, handle;
};

static void
reenter_done(enum approval_outcome outcome, const char *approver, void *arg)
{
    struct reenter *re = arg;
    struct approval_info info;

    re->calls++;
    approvals_cancel(re->q, re->victim);
    info_init(&info, POLICY_APPROVE_CLI);
    assert_int_equal(approvals_hold(re->q, &info, done_cb, &re->added_rec, re->added), 0);
}

static void
auto_approve(int event, const struct approval_info *info, enum approval_outcome outcome,
    const char *approver, void *arg)
{
    struct reenter *re = arg;
    struct err err;

    if (event == APPROVALS_EV_PENDING && info->mode == POLICY_APPROVE_DEVICE)
        assert_int_equal(approvals_decide(re->q, info->id, 1, APPROVAL_SOURCE_DEVICE,
            "device:AUTO", &err), 0);
    if (event == APPROVALS_EV_RESOLVED && outcome == APPROVAL_SHUTDOWN)
        approvals_unobserve(re->q, re->handle); /* unobserving itself mid-notify */
}

static void
test_reentrancy(void **state)
{
    struct approvals *q = approvals_new(base, 8, 60000);
    struct approval_info info;
    struct reenter re;
    struct record auto_rec = {0};
    struct events e = {0};
    char first[7], auto_id[7];
    struct err err;

    memset(&re, 0, sizeof(re));
    re.q = q;
    info_init(&info, POLICY_APPROVE_ANY);
    assert_int_equal(approvals_hold(q, &info, reenter_done, &re, first), 0);
    assert_int_equal(approvals_hold(q, &info, done_cb, &re.victim_rec, re.victim), 0);
    assert_int_equal(approvals_decide(q, first, 1, APPROVAL_SOURCE_CLI, "cli:uid=0", &err), 0);
    assert_int_equal(re.calls, 1);
    assert_int_equal(re.victim_rec.calls, 0); /* cancelled, never done */
    assert_int_equal(approvals_count(q), 1);
    assert_string_equal(approvals_oldest(q)->id, re.added);

    /* an observer that decides synchronously: done runs before hold returns */
    re.handle = approvals_observe(q, auto_approve, &re);
    assert_true(re.handle >= 0);
    approvals_observe(q, observe_cb, &e);
    info.mode = POLICY_APPROVE_DEVICE;
    assert_int_equal(approvals_hold(q, &info, done_cb, &auto_rec, auto_id), 0);
    assert_int_equal(auto_rec.calls, 1);
    assert_string_equal(auto_rec.approver, "device:AUTO");
    assert_int_equal(e.pending, 0); /* decided before this observer's turn: only RESOLVED */
    assert_int_equal(e.resolved, 1);
    assert_int_equal(approvals_count(q), 1);
    approvals_shutdown(q);
    assert_int_equal(re.added_rec.outcome, APPROVAL_SHUTDOWN);
    assert_int_equal(e.resolved, 2);
    approvals_free(q);
}

static void
test_observer_slots_and_json(void **state)
{
    struct approvals *q = approvals_new(base, 8, 120000);
    struct approval_info info;
    struct events e = {0};
    struct record r = {0};
    char id[7];
    json_t *o;
    int i, h[APPROVALS_MAX_OBSERVERS];

    for (i = 0; i < APPROVALS_MAX_OBSERVERS; i++)
        assert_int_equal(h[i] = approvals_observe(q, observe_cb, &e), i);
    assert_int_equal(approvals_observe(q, observe_cb, &e), -1);
    approvals_unobserve(q, h[5]);
    assert_int_equal(approvals_observe(q, observe_cb, &e), 5);
    approvals_unobserve(q, 99);

    info_init(&info, POLICY_APPROVE_DEVICE);
    info.credential = NULL;
    assert_int_equal(approvals_hold(q, &info, done_cb, &r, id), 0);
    assert_int_equal(e.pending, APPROVALS_MAX_OBSERVERS);
    o = approvals_info_json(approvals_oldest(q));
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "id")), id);
    assert_string_equal(json_string_value(json_object_get(o, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(o, "host")), "api.github.com");
    assert_string_equal(json_string_value(json_object_get(o, "path")), "/repos/x/issues");
    assert_string_equal(json_string_value(json_object_get(o, "rule")), "github-write");
    assert_true(json_is_null(json_object_get(o, "credential")));
    assert_int_equal(json_integer_value(json_object_get(o, "body_bytes")), 12);
    assert_int_equal(strlen(json_string_value(json_object_get(o, "body_sha256"))), 64);
    assert_string_equal(json_string_value(json_object_get(o, "mode")), "device");
    assert_int_equal(strlen(json_string_value(json_object_get(o, "created"))), 24);
    assert_true(json_integer_value(json_object_get(o, "expires_in_ms")) > 110000);
    assert_int_equal(approvals_oldest(q)->deadline_ms - approvals_oldest(q)->created_ms,
        120000);
    json_decref(o);
    assert_string_equal(approvals_outcome_name(APPROVAL_TIMEOUT), "timeout");
    approvals_shutdown(q);
    approvals_free(q);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ids_and_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reentrancy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_observer_slots_and_json, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
