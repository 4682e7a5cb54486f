/*
 * Unit tests for the control socket: a real Unix socket in a temp dir, served on an
 * event_base pumped from the test; clients are non-blocking sockets, or the blocking
 * client API and the CLI commands run in a thread while the test pumps the loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "approvals/control.h"
#include "cmd/cli.h"
#include "common/util.h"

static struct event_base *base;
static struct approvals *q;
static struct control *ctl;
static char dir[64], sock[128], outpath[128];
static int reload_fail;

static json_t *
status_fn(void *arg)
{
    return json_pack("{s:s, s:I}", "version", "test", "requests_total", (json_int_t)7);
}

static int
reload_fn(void *arg, struct err *err)
{
    if (reload_fail)
        return err_set(err, ERR_PARSE, "bad.yaml:3:1: unknown key \"foo\"");
    return 0;
}

static int
setup(void **state)
{
    struct err err;

    snprintf(dir, sizeof(dir), "/tmp/airlock-ctl-XXXXXX");
    if (mkdtemp(dir) == NULL || (base = event_base_new()) == NULL)
        return -1;
    snprintf(sock, sizeof(sock), "%s/control.sock", dir);
    snprintf(outpath, sizeof(outpath), "%s/out.txt", dir);
    q = approvals_new(base, 8, 60000);
    ctl = control_new(base, sock, q, status_fn, reload_fn, NULL, &err);
    reload_fail = 0;
    return ctl == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    char p[160];

    control_free(ctl);
    approvals_shutdown(q);
    approvals_free(q);
    event_base_free(base);
    unlink(outpath);
    snprintf(p, sizeof(p), "%s/file", dir);
    unlink(p);
    unlink(sock);
    rmdir(dir);
    return 0;
}

static void
pump(int n)
{
    while (n-- > 0)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

static int
cl_connect(void)
{
    struct err err;
    int fd = control_connect(sock, &err);

    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    pump(3);
    return fd;
}

static void
cl_send(int fd, const char *s)
{
    assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* One reply line as JSON, pumping the server meanwhile; bounded to about 2 s. */
static json_t *
cl_read(int fd)
{
    char line[8192];
    size_t n = 0;
    int spins;
    char c;

    for (spins = 0; spins < 2000 && n < sizeof(line) - 1;) {
        ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);

        if (r == 1 && c == '\n')
            return json_loadb(line, n, 0, NULL);
        if (r == 1) {
            line[n++] = c;
            continue;
        }
        if (r == 0)
            break;
        pump(2);
        usleep(1000);
        spins++;
    }
    return NULL;
}

/* Sends req, expects {"ok":false,"error":want}. */
static void
expect_error(int fd, const char *req, const char *want)
{
    json_t *o;

    cl_send(fd, req);
    o = cl_read(fd);
    assert_non_null(o);
    assert_true(json_is_false(json_object_get(o, "ok")));
    assert_string_equal(json_string_value(json_object_get(o, "error")), want);
    json_decref(o);
}

static json_t *
ask(int fd, const char *req)
{
    json_t *o;

    cl_send(fd, req);
    o = cl_read(fd);
    assert_non_null(o);
    assert_true(json_is_true(json_object_get(o, "ok")));
    return o;
}

struct done_rec {
    int calls;
    enum approval_outcome outcome;
    char approver[64];
};

static void
done_cb(enum approval_outcome outcome, const char *approver, void *arg)
{
    struct done_rec *r = arg;

    r->calls++;
    r->outcome = outcome;
    util_strlcpy(r->approver, approver != NULL ? approver : "", sizeof(r->approver));
}

static void
hold(enum policy_approve mode, struct done_rec *r, char id[7])
{
    struct approval_info info;

    memset(&info, 0, sizeof(info));
    info.agent = "ci-bot";
    info.method = "POST";
    info.host = "api.github.com";
    info.path = "/repos/x";
    info.rule = "github-write";
    info.mode = mode;
    assert_int_equal(approvals_hold(q, &info, done_cb, r, id), 0);
}

static void
test_socket_file(void **state)
{
    struct sockaddr_un sun;
    struct control *other;
    struct stat st;
    struct err err;
    char p[160];
    int fd;

    assert_int_equal(lstat(sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    /* a live daemon owns it */
    assert_null(control_new(base, sock, q, NULL, NULL, NULL, &err));
    assert_non_null(strstr(err.msg, "another daemon is listening"));
    /* a stale socket (nothing listening) is replaced */
    control_free(ctl);
    assert_int_equal(lstat(sock, &st), -1);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    util_strlcpy(sun.sun_path, sock, sizeof(sun.sun_path));
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(fd);
    ctl = control_new(base, sock, q, status_fn, reload_fn, NULL, &err);
    assert_non_null(ctl);
    /* a regular file is never removed */
    snprintf(p, sizeof(p), "%s/file", dir);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    assert_null(other = control_new(base, p, q, NULL, NULL, NULL, &err));
    assert_non_null(strstr(err.msg, "not a socket"));
    assert_int_equal(lstat(p, &st), 0);
}

static void
test_ops(void **state)
{
    struct done_rec dev = {0}, cli = {0};
    char id_dev[7], id_cli[7], req[128], want[64];
    int fd = cl_connect();
    json_t *o, *arr;

    o = ask(fd, "{\"op\":\"list\"}\n");
    assert_int_equal(json_array_size(json_object_get(o, "pending")), 0);
    json_decref(o);
    hold(POLICY_APPROVE_DEVICE, &dev, id_dev);
    hold(POLICY_APPROVE_CLI, &cli, id_cli);
    o = ask(fd, "{\"op\":\"list\"}\n");
    arr = json_object_get(o, "pending");
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "id")), id_dev);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "host")),
        "api.github.com");
    json_decref(o);

    expect_error(fd, "{\"op\":\"approve\",\"id\":\"ZZZZZZ\"}\n", "unknown id");
    expect_error(fd, "{\"op\":\"approve\"}\n", "missing id");
    snprintf(req, sizeof(req), "{\"op\":\"approve\",\"id\":\"%s\"}\n", id_dev);
    expect_error(fd, req, "item requires device approval");
    assert_int_equal(dev.calls, 0);
    snprintf(req, sizeof(req), "{\"op\":\"deny\",\"id\":\"%s\"}\n", id_cli);
    json_decref(ask(fd, req));
    assert_int_equal(cli.calls, 1);
    assert_int_equal(cli.outcome, APPROVAL_DENIED);
    snprintf(want, sizeof(want), "cli:uid=%u", (unsigned)geteuid());
    assert_string_equal(cli.approver, want);
    expect_error(fd, req, "unknown id"); /* already decided */

    o = ask(fd, "{\"op\":\"status\"}\n");
    assert_string_equal(json_string_value(json_object_get(o, "version")), "test");
    assert_int_equal(json_integer_value(json_object_get(o, "requests_total")), 7);
    assert_int_equal(json_integer_value(json_object_get(o, "pending")), 1);
    json_decref(o);
    json_decref(ask(fd, "{\"op\":\"reload\"}\n"));
    reload_fail = 1;
    expect_error(fd, "{\"op\":\"reload\"}\n", "bad.yaml:3:1: unknown key \"foo\"");
    close(fd);
}

static void
test_malformed_keeps_connection(void **state)
{
    static char big[CONTROL_MAX_LINE * 4];
    int fd = cl_connect();
    size_t off = 0;
    json_t *o;

    expect_error(fd, "{not json\n", "malformed json");
    expect_error(fd, "[1,2]\n", "malformed json");
    expect_error(fd, "{\"id\":\"X\"}\n", "missing op");
    expect_error(fd, "{\"op\":7}\n", "missing op");
    expect_error(fd, "{\"op\":\"format-disk\"}\n", "unknown op");
    cl_send(fd, "\n\r\n");
    expect_error(fd, "\"op\"\n", "malformed json");
    /* an overlong line: one error, the rest of it skipped, then the connection works */
    memset(big, 'x', sizeof(big));
    big[sizeof(big) - 1] = '\n';
    while (off < sizeof(big)) {
        ssize_t n = send(fd, big + off, sizeof(big) - off, MSG_DONTWAIT | MSG_NOSIGNAL);

        if (n > 0)
            off += (size_t)n;
        pump(2);
    }
    o = cl_read(fd);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "error")), "line too long");
    json_decref(o);
    o = ask(fd, "{\"op\":\"list\"}\n");
    json_decref(o);
    close(fd);
}

static void
test_watch(void **state)
{
    struct done_rec early = {0}, r = {0};
    char early_id[7], id[7], req[128], want[64];
    int w = cl_connect(), a = cl_connect();
    json_t *o;

    hold(POLICY_APPROVE_ANY, &early, early_id);
    json_decref(ask(w, "{\"op\":\"watch\"}\n"));
    o = cl_read(w); /* snapshot of what was already waiting */
    assert_string_equal(json_string_value(json_object_get(o, "event")), "pending");
    assert_string_equal(json_string_value(json_object_get(o, "id")), early_id);
    json_decref(o);

    hold(POLICY_APPROVE_CLI, &r, id);
    o = cl_read(w);
    assert_string_equal(json_string_value(json_object_get(o, "event")), "pending");
    assert_string_equal(json_string_value(json_object_get(o, "id")), id);
    assert_string_equal(json_string_value(json_object_get(o, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(o, "mode")), "cli");
    json_decref(o);

    snprintf(req, sizeof(req), "{\"op\":\"approve\",\"id\":\"%s\"}\n", id);
    json_decref(ask(a, req));
    assert_int_equal(r.outcome, APPROVAL_APPROVED);
    o = cl_read(w);
    assert_string_equal(json_string_value(json_object_get(o, "event")), "resolved");
    assert_string_equal(json_string_value(json_object_get(o, "id")), id);
    assert_string_equal(json_string_value(json_object_get(o, "outcome")), "approved");
    snprintf(want, sizeof(want), "cli:uid=%u", (unsigned)geteuid());
    assert_string_equal(json_string_value(json_object_get(o, "by")), want);
    json_decref(o);

    approvals_cancel(q, early_id);
    o = cl_read(w);
    assert_string_equal(json_string_value(json_object_get(o, "outcome")), "cancelled");
    assert_true(json_is_null(json_object_get(o, "by")));
    json_decref(o);
    /* the watcher still answers requests on the same connection */
    json_decref(ask(w, "{\"op\":\"status\"}\n"));
    close(w);
    close(a);
    pump(5);
}

static void
test_client_limit(void **state)
{
    int fds[CONTROL_MAX_CLIENTS + 1], i;
    json_t *o;

    for (i = 0; i < CONTROL_MAX_CLIENTS; i++)
        fds[i] = cl_connect();
    fds[i] = cl_connect();
    o = cl_read(fds[i]);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "error")),
        "too many control clients");
    json_decref(o);
    close(fds[i]);
    json_decref(ask(fds[0], "{\"op\":\"list\"}\n"));
    close(fds[1]);
    pump(10); /* a slot frees up once a client leaves */
    fds[1] = cl_connect();
    json_decref(ask(fds[1], "{\"op\":\"list\"}\n"));
    for (i = 0; i < CONTROL_MAX_CLIENTS; i++)
        close(fds[i]);
    pump(10);
}

/* Another uid (here: root dropping to nobody) is refused even if it can reach the file. */
static void
test_peer_uid(void **state)
{
    int status = -1, spins;
    pid_t pid;

    if (geteuid() != 0) {
        skip();
        return;
    }
    chmod(dir, 0755);
    chmod(sock, 0666);
    if ((pid = fork()) == 0) {
        struct timeval tv = {5, 0};
        struct err err;
        char buf[256] = {0};
        int fd;

        if (setgid(65534) != 0 || setuid(65534) != 0 || (fd = control_connect(sock, &err)) < 0)
            _exit(3);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)!read(fd, buf, sizeof(buf) - 1);
        _exit(strcmp(buf, "{\"ok\":false,\"error\":\"permission denied\"}\n") == 0 ? 0 : 4);
    }
    for (spins = 0; spins < 3000 && waitpid(pid, &status, WNOHANG) == 0; spins++) {
        pump(2);
        usleep(1000);
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* Blocking client calls and CLI commands run in a thread while the test serves. */
struct job {
    int (*fn)(struct job *);
    const char *id;
    int approve, rc, done;
    json_t *reply;
};

static void *
job_main(void *arg)
{
    struct job *j = arg;

    j->rc = j->fn(j);
    __atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* Runs j with stdout captured into outpath; returns j->rc. */
static int
run_job(struct job *j)
{
    pthread_t t;
    int saved, fd, spins;

    fflush(stdout);
    saved = dup(1);
    fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    close(fd);
    assert_int_equal(pthread_create(&t, NULL, job_main, j), 0);
    for (spins = 0; spins < 5000 && !__atomic_load_n(&j->done, __ATOMIC_SEQ_CST); spins++) {
        pump(2);
        usleep(1000);
    }
    pthread_join(t, NULL);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return j->rc;
}

static char *
output(void)
{
    size_t len;
    char *s = util_read_file(outpath, 1 << 20, &len);

    assert_non_null(s);
    return s;
}

static int
do_request(struct job *j)
{
    struct err err;
    json_t *req = json_pack("{s:s}", "op", "status");
    int rc = control_request(sock, req, &j->reply, &err);

    json_decref(req);
    return rc;
}

static int
do_approve(struct job *j)
{
    return cli_approve(sock, j->id, j->approve);
}

static int
do_pending(struct job *j)
{
    return cli_pending(sock);
}

static int
do_status(struct job *j)
{
    return cli_status(sock);
}

static void
test_client_and_cli(void **state)
{
    struct job j = {.fn = do_request};
    struct done_rec r = {0};
    char id[7], *out, want[32];

    assert_int_equal(run_job(&j), 0);
    assert_int_equal(json_integer_value(json_object_get(j.reply, "requests_total")), 7);
    json_decref(j.reply);

    hold(POLICY_APPROVE_ANY, &r, id);
    j = (struct job){.fn = do_pending};
    assert_int_equal(run_job(&j), 0);
    out = output();
    assert_non_null(strstr(out, id));
    assert_non_null(strstr(out, "POST api.github.com/repos/x"));
    free(out);
    j = (struct job){.fn = do_status};
    assert_int_equal(run_job(&j), 0);
    out = output();
    assert_non_null(strstr(out, "version: test\n"));
    assert_non_null(strstr(out, "pending: 1\n"));
    free(out);
    j = (struct job){.fn = do_approve, .id = "ZZZZZZ", .approve = 1};
    assert_int_equal(run_job(&j), 1);
    j = (struct job){.fn = do_approve, .id = id, .approve = 0};
    assert_int_equal(run_job(&j), 0);
    assert_int_equal(r.outcome, APPROVAL_DENIED);
    out = output();
    snprintf(want, sizeof(want), "denied %s\n", id);
    assert_string_equal(out, want);
    free(out);
}

static int
do_watch(struct job *j)
{
    return cli_watch(sock);
}

/* Non-tty `airlock watch`: one line per event, ends cleanly when the daemon goes away. */
static void
test_cli_watch(void **state)
{
    struct job j = {.fn = do_watch};
    struct done_rec r = {0};
    char id[7], want[96], *out;
    struct err err;
    pthread_t t;
    int saved, fd, spins;

    fflush(stdout);
    saved = dup(1);
    fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    close(fd);
    assert_int_equal(pthread_create(&t, NULL, job_main, &j), 0);
    for (spins = 0; spins < 300; spins++) { /* let the watcher connect and subscribe */
        pump(2);
        usleep(1000);
    }
    hold(POLICY_APPROVE_CLI, &r, id);
    pump(20);
    assert_int_equal(approvals_decide(q, id, 1, APPROVAL_SOURCE_CLI, "cli:uid=0", &err), 0);
    for (spins = 0; spins < 100; spins++) {
        pump(2);
        usleep(1000);
    }
    control_free(ctl); /* daemon goes away: EOF */
    ctl = NULL;
    for (spins = 0; spins < 5000 && !__atomic_load_n(&j.done, __ATOMIC_SEQ_CST); spins++) {
        pump(2); /* libevent closes freed bufferevents' sockets from the loop */
        usleep(1000);
    }
    assert_true(__atomic_load_n(&j.done, __ATOMIC_SEQ_CST));
    pthread_join(t, NULL);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    assert_int_equal(j.rc, 0);
    out = output();
    snprintf(want, sizeof(want), "%s  POST api.github.com/repos/x  agent=ci-bot", id);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof(want), "%s  approved by cli:uid=0\n", id);
    assert_non_null(strstr(out, want));
    free(out);
    /* no daemon at all: runtime failure */
    assert_int_equal(cli_watch(sock), 1);
    assert_int_equal(cli_pending(sock), 1);
    assert_int_equal(cli_approve(sock, "ABCDEF", 1), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_socket_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_keeps_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_uid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_and_cli, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_watch, setup, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
