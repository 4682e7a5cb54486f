/*
 * Unit tests for audit/: record format and key order, chain continued across reopen,
 * verification naming the altered line, torn tails, fail-closed short writes, and the
 * `airlock audit verify` command's exit statuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "audit/audit.h"
#include "cmd/cli.h"
#include "common/util.h"

static char dir[64], logpath[128];

static int
setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/airlock-audit-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(logpath, sizeof(logpath), "%s/audit.jsonl", dir);
    return 0;
}

static int
teardown(void **state)
{
    char p[160];

    unlink(logpath);
    snprintf(p, sizeof(p), "%s/other", dir);
    unlink(p);
    rmdir(dir);
    return 0;
}

static void
rec_init(struct audit_record *r, int i)
{
    static char ids[8][8];

    memset(r, 0, sizeof(*r));
    snprintf(ids[i % 8], sizeof(ids[0]), "r%05d", i);
    r->id = ids[i % 8];
    r->agent = "ci-bot";
    r->via = "connect";
    r->host = "api.example.test";
    r->port = 443;
    r->method = "GET";
    r->path = "/repos/x";
    r->rule = "github-read";
    r->decision = "inject";
    r->credential = "github";
    r->status = 200;
    r->bytes_up = 10;
    r->bytes_down = 20;
    r->ms = 5;
}

static void
write_records(int from, int count)
{
    struct audit_record r;
    struct audit *a;
    struct err err;
    int i;

    a = audit_open(logpath, &err);
    assert_non_null(a);
    for (i = from; i < from + count; i++) {
        rec_init(&r, i);
        assert_int_equal(audit_log(a, &r, &err), 0);
    }
    assert_int_equal(audit_sync(a), 0);
    audit_close(a);
}

static char *
slurp(size_t *len)
{
    char *s = util_read_file(logpath, 1 << 20, len);

    assert_non_null(s);
    return s;
}

static void
spit(const char *s, size_t len)
{
    FILE *f = fopen(logpath, "w");

    assert_non_null(f);
    assert_int_equal(fwrite(s, 1, len, f), len);
    fclose(f);
}

/* Start of line n (1-based) in s. */
static char *
line_at(char *s, int n)
{
    while (--n > 0) {
        s = strchr(s, '\n');
        assert_non_null(s);
        s++;
    }
    return s;
}

static int
verify(uint64_t *records, uint64_t *bad)
{
    struct err err;

    return audit_verify(logpath, records, bad, &err);
}

static void
test_format_and_chain(void **state)
{
    char *s, *l2, hash[65], want[80];
    uint64_t n, bad;
    struct stat st;
    size_t len;

    write_records(0, 3);
    write_records(3, 2); /* reopen continues the chain */
    assert_int_equal(stat(logpath, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(verify(&n, &bad), 0);
    assert_int_equal(n, 5);

    s = slurp(&len);
    assert_memory_equal(s, "{\"ts\":\"", 7);
    assert_non_null(strstr(s, "\"prev\":\"0000000000000000000000000000000000000000000000000000"
                              "000000000000\"}\n"));
    assert_non_null(strstr(s, ",\"id\":\"r00000\",\"agent\":\"ci-bot\",\"via\":\"connect\","
                              "\"host\":\"api.example.test\",\"port\":443,\"method\":\"GET\","
                              "\"path\":\"/repos/x\",\"rule\":\"github-read\",\"decision\":"
                              "\"inject\",\"credential\":\"github\",\"approver\":null,"
                              "\"status\":200,\"bytes_up\":10,\"bytes_down\":20,\"ms\":5,"
                              "\"prev\":"));
    /* line 4 (first after reopen) chains to line 3's exact bytes */
    l2 = line_at(s, 3);
    util_sha256_hex(l2, (size_t)(strchr(l2, '\n') - l2), hash);
    snprintf(want, sizeof(want), "\"prev\":\"%s\"}\n", hash);
    assert_memory_equal(strchr(line_at(s, 4), '\n') - strlen(want) + 1, want, strlen(want));
    free(s);
}

static void
test_nulls_query_and_escaping(void **state)
{
    struct audit_record r;
    char big[5000], *s;
    struct audit *a;
    struct err err;
    uint64_t n, bad;
    json_t *o;
    size_t len;

    memset(&r, 0, sizeof(r));
    r.decision = "deny";
    r.path = "/a?token=SECRET";
    r.host = "evil\n\"host\x01";
    a = audit_open(logpath, &err);
    assert_non_null(a);
    assert_int_equal(audit_log(a, &r, &err), 0);
    memset(big, 'p', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big + 2047, "\xc3\xa9", 2); /* é straddling the cut */
    r.path = big;
    r.host = "bad\xff\xfeutf8";
    assert_int_equal(audit_log(a, &r, &err), 0);
    audit_close(a);

    s = slurp(&len);
    assert_null(strstr(s, "SECRET"));
    assert_null(strchr(s, '\x01'));
    o = json_loadb(s, (size_t)(strchr(s, '\n') - s), 0, NULL);
    assert_non_null(o);
    assert_true(json_is_null(json_object_get(o, "port")));
    assert_true(json_is_null(json_object_get(o, "status")));
    assert_true(json_is_null(json_object_get(o, "agent")));
    assert_string_equal(json_string_value(json_object_get(o, "path")), "/a");
    assert_string_equal(json_string_value(json_object_get(o, "host")), "evil\n\"host\x01");
    json_decref(o);
    o = json_loads(line_at(s, 2), JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(o);
    assert_int_equal(strlen(json_string_value(json_object_get(o, "path"))), 2047);
    assert_string_equal(json_string_value(json_object_get(o, "host")), "bad??utf8");
    json_decref(o);
    free(s);
    assert_int_equal(verify(&n, &bad), 0);
    assert_int_equal(n, 2);
}

/* Writes 5 records, applies edit() to the file text, expects the verdict. */
static void
tamper(void (*edit)(char *s, size_t *len), int want_rc, uint64_t want)
{
    uint64_t n = 0, bad = 0;
    size_t len;
    char *s;

    write_records(0, 5);
    s = slurp(&len);
    s = realloc(s, len + 1024);
    edit(s, &len);
    spit(s, len);
    free(s);
    assert_int_equal(verify(&n, &bad), want_rc);
    if (want_rc == 1)
        assert_int_equal(bad, want);
    else
        assert_int_equal(n, want);
    unlink(logpath);
}

static void
edit_host_l2(char *s, size_t *len)
{
    strstr(line_at(s, 2), "api.example")[0] = 'b'; /* still valid JSON */
}

static void
edit_syntax_l2(char *s, size_t *len)
{
    line_at(s, 2)[0] = '['; /* no longer JSON */
}

static void
edit_prev_l2(char *s, size_t *len)
{
    char *p = strstr(line_at(s, 2), "\"prev\":\"") + 8;

    *p = *p == 'a' ? 'b' : 'a';
}

static void
edit_l4(char *s, size_t *len)
{
    strstr(line_at(s, 4), "GET")[0] = 'P';
}

static void
edit_last(char *s, size_t *len)
{
    strstr(line_at(s, 5), "GET")[0] = 'P'; /* undetectable: nothing follows it */
}

static void
edit_delete_l3(char *s, size_t *len)
{
    char *a = line_at(s, 3), *b = line_at(s, 4);

    memmove(a, b, *len - (size_t)(b - s));
    *len -= (size_t)(b - a);
}

static void
edit_missing_field_l2(char *s, size_t *len)
{
    memcpy(strstr(line_at(s, 2), "\"ms\""), "\"mz\"", 4);
}

static void
edit_torn(char *s, size_t *len)
{
    memcpy(s + *len, "{\"ts\":\"20", 9);
    *len += 9;
}

static void
edit_first_prev(char *s, size_t *len)
{
    strstr(s, "\"prev\":\"0")[8] = '1';
}

static void
test_tamper(void **state)
{
    tamper(edit_host_l2, 1, 2);
    tamper(edit_syntax_l2, 1, 2);
    tamper(edit_prev_l2, 1, 2);
    tamper(edit_l4, 1, 4);
    tamper(edit_last, 0, 5);
    tamper(edit_delete_l3, 1, 2);
    tamper(edit_missing_field_l2, 1, 2);
    tamper(edit_torn, 1, 6);
    tamper(edit_first_prev, 1, 1);
}

static void
test_torn_tail_dropped_on_open(void **state)
{
    uint64_t n, bad;
    FILE *f;

    write_records(0, 3);
    f = fopen(logpath, "a");
    fputs("{\"ts\":\"2026-01-01T00:00", f);
    fclose(f);
    assert_int_equal(verify(&n, &bad), 1);
    assert_int_equal(bad, 4);
    write_records(3, 2);
    assert_int_equal(verify(&n, &bad), 0);
    assert_int_equal(n, 5);
}

static void
test_edge_files(void **state)
{
    uint64_t n = 99, bad = 99;
    struct err err;
    char other[160];
    static char huge[AUDIT_VERIFY_LINE_MAX + 10];

    assert_int_equal(audit_verify(logpath, &n, &bad, &err), -1);
    assert_non_null(strstr(err.msg, "audit.jsonl"));
    spit("", 0);
    assert_int_equal(verify(&n, &bad), 0);
    assert_int_equal(n, 0);
    spit("garbage\n", 8);
    assert_int_equal(verify(&n, &bad), 1);
    assert_int_equal(bad, 1);
    spit("\n", 1);
    assert_int_equal(verify(&n, &bad), 1);
    assert_int_equal(bad, 1);
    memset(huge, 'x', sizeof(huge));
    huge[sizeof(huge) - 1] = '\n';
    spit(huge, sizeof(huge));
    assert_int_equal(verify(&n, &bad), 1);
    assert_int_equal(bad, 1);
    /* a directory, or a "torn tail" far longer than any record, is not ours to touch */
    assert_null(audit_open(dir, &err));
    spit(huge, sizeof(huge) - 1);
    assert_null(audit_open(logpath, &err));
    snprintf(other, sizeof(other), "%s/other", dir);
    assert_int_equal(symlink(logpath, other), 0);
    assert_null(audit_open(other, &err));
    audit_close(NULL);
    assert_int_equal(audit_log(NULL, NULL, &err), 0);
}

/* A short write (file size limit) fails closed and leaves no partial line behind. */
static void
test_short_write_fails_closed(void **state)
{
    struct audit_record r;
    struct rlimit old, lim;
    struct audit *a;
    struct stat st;
    struct err err;
    uint64_t n, bad;
    off_t before;

    write_records(0, 2);
    assert_int_equal(stat(logpath, &st), 0);
    a = audit_open(logpath, &err);
    assert_non_null(a);
    rec_init(&r, 2);
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size + 50;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_equal(audit_log(a, &r, &err), -1);
    assert_non_null(strstr(err.msg, "write"));
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    before = st.st_size;
    assert_int_equal(stat(logpath, &st), 0);
    assert_int_equal(st.st_size, before); /* the 50-byte fragment was cut off again */
    assert_int_equal(verify(&n, &bad), 0);
    assert_int_equal(n, 2);
    assert_int_equal(audit_log(a, &r, &err), 0);
    audit_close(a);
    assert_int_equal(verify(&n, &bad), 0);
    assert_int_equal(n, 3);
}

/*
 * audit_reserve: room for the next records is allocated past the end of the file before
 * anything is forwarded; where it cannot be had (here RLIMIT_FSIZE), it fails so the proxy
 * denies instead of serving a request whose record would not fit. The file is unchanged.
 */
static void
test_reserve_refuses_without_room(void **state)
{
    struct rlimit old, lim;
    struct audit *a;
    struct stat st;
    struct err err;

    write_records(0, 2);
    a = audit_open(logpath, &err);
    assert_non_null(a);
    assert_int_equal(audit_reserve(NULL, &err), 0);
    assert_int_equal(audit_reserve(a, &err), 0);
    assert_int_equal(stat(logpath, &st), 0);
    audit_close(a);
    a = audit_open(logpath, &err);
    assert_non_null(a);
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size + AUDIT_RESERVE_BYTES - 1;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_equal(audit_reserve(a, &err), -1);
    assert_non_null(strstr(err.msg, "no room"));
    lim.rlim_cur = (rlim_t)st.st_size + AUDIT_RESERVE_BYTES;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_equal(audit_reserve(a, &err), 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    audit_close(a);
    assert_int_equal(stat(logpath, &st), 0);
    assert_int_equal(st.st_blocks * 512 < AUDIT_RESERVE_BYTES, 1); /* reserve given back */
}

/* Runs cli_audit_verify with stdout captured into out. */
static int
run_cli(char *out, size_t outlen)
{
    char cap[160];
    int saved, fd, rc;
    FILE *f;
    size_t got;

    snprintf(cap, sizeof(cap), "%s/other", dir);
    fflush(stdout);
    saved = dup(1);
    fd = open(cap, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    close(fd);
    rc = cli_audit_verify(logpath);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    f = fopen(cap, "r");
    got = fread(out, 1, outlen - 1, f);
    out[got] = '\0';
    fclose(f);
    unlink(cap);
    return rc;
}

static void
test_cli(void **state)
{
    char out[512], want[256];

    assert_int_equal(run_cli(out, sizeof(out)), 2);
    write_records(0, 5);
    assert_int_equal(run_cli(out, sizeof(out)), 0);
    assert_string_equal(out, "ok 5 records\n");
    unlink(logpath);
    write_records(0, 5);
    {
        size_t len;
        char *s = slurp(&len);

        edit_host_l2(s, &len);
        spit(s, len);
        free(s);
    }
    assert_int_equal(run_cli(out, sizeof(out)), 1);
    snprintf(want, sizeof(want), "%s:2: audit chain broken\n", logpath);
    assert_string_equal(out, want);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_format_and_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nulls_query_and_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_dropped_on_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edge_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_write_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_refuses_without_room, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
