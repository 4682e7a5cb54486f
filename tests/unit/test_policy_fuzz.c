/*
 * policy_load_buffer(), the in-memory entry point the fuzzer drives, and the inputs the
 * fuzzer found (tests/fuzz/corpus/policy keeps a copy of each): every one must be refused
 * or loaded with the exact result below, never crash or leak.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/policy.h"

static struct policy *
load(const char *text, size_t len, struct err *err)
{
    return policy_load_buffer("/etc/airlock.yaml", text, len, err);
}

static void
test_buffer_loads_without_nul(void **state)
{
    static const char text[] = "listen: {http: 127.0.0.1:3128}\n"
                               "audit: {path: log/audit.jsonl}\n"
                               "rules: [{name: a, host: example.com, action: allow}]\nXX";
    struct policy *p;
    struct err err;

    /* The length ends the text: the trailing "XX" is not part of it. */
    p = load(text, sizeof(text) - 3, &err);
    assert_non_null(p);
    assert_int_equal(p->nrules, 1);
    assert_string_equal(p->rules[0].host, "example.com");
    /* Relative paths resolve against the directory of the path given. */
    assert_string_equal(p->audit_path, "/etc/log/audit.jsonl");
    assert_string_equal(p->path, "/etc/airlock.yaml");
    policy_unref(p);
}

static void
test_buffer_errors_name_the_path(void **state)
{
    struct err err;
    char *big;

    assert_null(load("listen: {http: 127.0.0.1:3128}\nrulez: []\n", 41, &err));
    assert_int_equal(err.code, ERR_USAGE);
    assert_string_equal(err.msg, "/etc/airlock.yaml:2:1: unknown key \"rulez\"");

    assert_null(load("", 0, &err));
    assert_string_equal(err.msg, "/etc/airlock.yaml:1:1: missing required key \"listen\"");

    assert_null(load(NULL, 5, &err));
    assert_int_equal(err.code, ERR_USAGE);

    /* Over 1 MiB is refused before parsing, as from a file. */
    big = calloc(1, 1024 * 1024 + 1);
    assert_non_null(big);
    memset(big, '#', 1024 * 1024 + 1);
    assert_null(load(big, 1024 * 1024 + 1, &err));
    assert_string_equal(err.msg, "/etc/airlock.yaml:1:1: file is larger than 1 MiB");
    free(big);

    assert_null(policy_load_buffer("/no/such/dir/airlock.yaml", "", 0, &err));
    assert_int_equal(err.code, ERR_IO);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffer_loads_without_nul),
        cmocka_unit_test(test_buffer_errors_name_the_path),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
