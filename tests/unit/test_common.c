/* Unit tests for common/: durations, sizes, hex, sha256, secbuf, atomic file writes. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/secmem.h"
#include "common/util.h"

static void
test_durations(void **state)
{
    uint64_t ms;

    assert_int_equal(util_parse_duration_ms("0s", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(util_parse_duration_ms("120s", &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(util_parse_duration_ms("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(util_parse_duration_ms("2h", &ms), 0);
    assert_int_equal(ms, 7200000);
    assert_int_equal(util_parse_duration_ms("5", &ms), -1);
    assert_int_equal(util_parse_duration_ms("s", &ms), -1);
    assert_int_equal(util_parse_duration_ms("-1s", &ms), -1);
    assert_int_equal(util_parse_duration_ms("1.5s", &ms), -1);
    assert_int_equal(util_parse_duration_ms("99999999999999999999s", &ms), -1);
}

static void
test_sizes(void **state)
{
    uint64_t b;

    assert_int_equal(util_parse_size("1MiB", &b), 0);
    assert_int_equal(b, 1048576);
    assert_int_equal(util_parse_size("64KiB", &b), 0);
    assert_int_equal(b, 65536);
    assert_int_equal(util_parse_size("1000", &b), 0);
    assert_int_equal(b, 1000);
    assert_int_equal(util_parse_size("1XB", &b), -1);
    assert_int_equal(util_parse_size("", &b), -1);
}

#define SHA_THREADS 4

static pthread_barrier_t sha_start;

/* Hashes "abc" and "" many times; 0 when every digest was right. */
static void *
sha_worker(void *arg)
{
    char hex[65];
    intptr_t bad = 0;
    int i;

    pthread_barrier_wait(&sha_start); /* all race for the first (once-only) fetch */
    for (i = 0; i < 200; i++) {
        util_sha256_hex("abc", 3, hex);
        bad |= strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        util_sha256_hex("", 0, hex);
        bad |= strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
    return (void *)bad;
}

/* The digest is fetched once, by whichever thread hashes first (the token worker may). */
static void
test_sha_threads(void **state)
{
    pthread_t t[SHA_THREADS];
    void *bad;
    int i;

    assert_int_equal(pthread_barrier_init(&sha_start, NULL, SHA_THREADS), 0);
    for (i = 0; i < SHA_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, sha_worker, NULL), 0);
    for (i = 0; i < SHA_THREADS; i++) {
        assert_int_equal(pthread_join(t[i], &bad), 0);
        assert_null(bad);
    }
    pthread_barrier_destroy(&sha_start);
}

static void
test_hex_sha(void **state)
{
    char hex[65];
    unsigned char raw[4];

    util_sha256_hex("test", 4, hex);
    assert_string_equal(hex, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    util_hex_encode("\x01\xab\xff\x00", 4, hex);
    assert_string_equal(hex, "01abff00");
    assert_int_equal(util_hex_decode("01ABff00", raw, 4), 0);
    assert_memory_equal(raw, "\x01\xab\xff\x00", 4);
    assert_int_equal(util_hex_decode("01zz", raw, 2), -1);
    assert_int_equal(util_hex_decode("01ab00", raw, 2), -1);
    assert_true(util_ct_equal("abc", "abc", 3));
    assert_false(util_ct_equal("abc", "abd", 3));
}

static void
test_secbuf(void **state)
{
    struct secbuf *sb = secbuf_new(100);

    assert_non_null(sb);
    assert_int_equal(secbuf_append(sb, "hello", 5), 0);
    assert_int_equal(sb->len, 5);
    assert_int_equal(secbuf_append(sb, sb->data, 96), -1);
    assert_int_equal(sb->len, 5);
    secbuf_wipe(sb);
    assert_int_equal(sb->len, 0);
    assert_int_equal(sb->data[0], 0);
    secbuf_free(sb);
    secbuf_free(NULL);
    assert_null(secbuf_new(0));
}

static struct secbuf *
read_pipe(const char *input, size_t cap, int line)
{
    struct secbuf *sb = secbuf_new(cap);
    int fds[2];

    assert_non_null(sb);
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], input, strlen(input)), (ssize_t)strlen(input));
    close(fds[1]);
    assert_int_equal(secbuf_read_fd(sb, fds[0], line), 0);
    close(fds[0]);
    return sb;
}

static void
test_secbuf_read_fd(void **state)
{
    struct secbuf *sb;

    /* A pipe delivers the whole write at once: line mode keeps the newline and the rest. */
    sb = read_pipe("tok\nmore", 64, 1);
    assert_int_equal(sb->len, 8);
    assert_memory_equal(sb->data, "tok\nmore", 8);
    secbuf_free(sb);
    sb = read_pipe("a\nb\n", 64, 0);
    assert_int_equal(sb->len, 4);
    secbuf_free(sb);
    /* Full buffer: stops at cap, so the caller can call it too long. */
    sb = read_pipe("0123456789", 4, 0);
    assert_int_equal(sb->len, sb->cap);
    secbuf_free(sb);
    sb = read_pipe("", 8, 1);
    assert_int_equal(sb->len, 0);
    secbuf_free(sb);
    sb = secbuf_new(8);
    assert_int_equal(secbuf_read_fd(sb, -1, 0), -1);
    secbuf_free(sb);
}

static void
test_atomic_write(void **state)
{
    char dir[] = "/tmp/airlock-test-XXXXXX", path[256];
    struct stat st;
    size_t len;
    char *data;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/f", dir);
    assert_int_equal(util_write_file_atomic(path, "abc", 3, 0600), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    data = util_read_file(path, 10, &len);
    assert_non_null(data);
    assert_int_equal(len, 3);
    assert_string_equal(data, "abc");
    free(data);
    assert_null(util_read_file(path, 2, &len));
    unlink(path);
    rmdir(dir);
}

static void
test_err(void **state)
{
    struct err e;

    assert_int_equal(err_set(&e, ERR_PARSE, "line %d", 3), -1);
    err_prefix(&e, "file.yaml");
    assert_string_equal(e.msg, "file.yaml: line 3");
    assert_int_equal(e.code, ERR_PARSE);
    assert_int_equal(err_set(NULL, ERR_IO, "x"), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha_threads), /* first: no hash before it in this process */
        cmocka_unit_test(test_durations), cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_hex_sha),   cmocka_unit_test(test_secbuf), cmocka_unit_test(test_secbuf_read_fd),
        cmocka_unit_test(test_atomic_write), cmocka_unit_test(test_err),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
