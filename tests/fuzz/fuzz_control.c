/*
 * libFuzzer target for the control socket (approvals/control.c): a real server on a Unix
 * socket in a temp dir, with a queue holding three items, gets the input as one client's
 * byte stream (in pieces, then EOF). Every reply must be one JSON object per line and
 * every request line gets exactly one {"ok":...} answer; the server must close after EOF.
 * "@@@@@0", "@@@@@1", "@@@@@2" in the input become the items' (random) ids.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "approvals/control.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)
#define NITEMS 3
#define MAX_INPUT (CONTROL_MAX_LINE + 8192)
#define MAX_ROUNDS 20000

static char dir[64], sock_path[128];

struct ctx {
    int done[NITEMS];
    char ids[NITEMS][APPROVALS_ID_LEN + 1];
    int reload_fails;
    char rx[CONTROL_MAX_LINE];
    size_t rxlen;
    size_t ok_replies;
};

struct done_arg {
    struct ctx *c;
    int i;
};

static void
cleanup(void)
{
    unlink(sock_path);
    rmdir(dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(dir, sizeof(dir), "/tmp/airlock-fuzz-ctl-XXXXXX");
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(sock_path, sizeof(sock_path), "%s/control.sock", dir);
    atexit(cleanup);
    return 0;
}

static void
on_done(enum approval_outcome outcome, const char *approver, void *arg)
{
    struct done_arg *d = arg;

    CHECK(d->c->done[d->i] == 0); /* exactly once */
    d->c->done[d->i] = 1 + (int)outcome;
    if (outcome == APPROVAL_APPROVED || outcome == APPROVAL_DENIED)
        CHECK(approver != NULL && strncmp(approver, "cli:uid=", 8) == 0);
}

static json_t *
status_fn(void *arg)
{
    return json_pack("{s:s, s:b}", "version", "fuzz", "ok", 0);
}

static int
reload_fn(void *arg, struct err *err)
{
    struct ctx *c = arg;

    if (c->reload_fails)
        return err_set(err, ERR_PARSE, "fuzz.yaml:1:1: unknown key \"x\"");
    return 0;
}

/* One reply line: a JSON object that either answers ({"ok": bool}) or is a watch event. */
static void
check_reply(struct ctx *c, const char *line, size_t len)
{
    json_t *o = json_loadb(line, len, 0, NULL), *ok;

    CHECK(o != NULL && json_is_object(o));
    if ((ok = json_object_get(o, "ok")) != NULL) {
        CHECK(json_is_boolean(ok));
        if (json_is_false(ok))
            CHECK(json_is_string(json_object_get(o, "error")));
        c->ok_replies++;
    } else {
        CHECK(json_is_string(json_object_get(o, "event")));
    }
    json_decref(o);
}

/* Reads what the server sent; 1 once it has closed the connection. */
static int
drain(struct ctx *c, int fd)
{
    size_t s, e;
    ssize_t n;

    for (;;) {
        n = recv(fd, c->rx + c->rxlen, sizeof(c->rx) - c->rxlen, MSG_DONTWAIT);
        if (n == 0)
            return 1;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : 1;
        c->rxlen += (size_t)n;
        for (s = 0, e = 0; e < c->rxlen; e++) {
            if (c->rx[e] != '\n')
                continue;
            check_reply(c, c->rx + s, e - s);
            s = e + 1;
        }
        memmove(c->rx, c->rx + s, c->rxlen - s);
        c->rxlen -= s;
        CHECK(c->rxlen < sizeof(c->rx)); /* no reply line is that long */
    }
}

/* Request lines the server must answer: every non-empty line, and a last unterminated
 * one only when it is already too long. */
static size_t
expected_replies(const char *buf, size_t len)
{
    size_t start, end, n, count = 0;

    for (start = 0; start < len; start = end + 1) {
        for (end = start; end < len && buf[end] != '\n'; end++)
            ;
        n = end - start;
        if (end == len) {
            count += n > CONTROL_MAX_LINE;
            break;
        }
        if (n > 0 && buf[end - 1] == '\r')
            n--;
        count += n > 0;
    }
    return count;
}

static void
hold_items(struct approvals *q, struct ctx *c, struct done_arg *args)
{
    static const enum policy_approve modes[NITEMS] = {POLICY_APPROVE_CLI, POLICY_APPROVE_ANY,
                                                      POLICY_APPROVE_DEVICE};
    struct approval_info info;
    int i;

    for (i = 0; i < NITEMS; i++) {
        memset(&info, 0, sizeof(info));
        info.agent = "ci-bot";
        info.method = "POST";
        info.host = "api.example.test";
        info.path = i == 0 ? "/repos/x" : NULL;
        info.rule = "write";
        info.body_bytes = 3;
        strcpy(info.body_sha256,
               "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        info.mode = modes[i];
        args[i].c = c;
        args[i].i = i;
        CHECK(approvals_hold(q, &info, on_done, &args[i], c->ids[i]) == 0);
    }
}

/* The input with the id placeholders filled in. */
static char *
substitute(struct ctx *c, const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    size_t i;

    if (buf == NULL)
        abort();
    memcpy(buf, data, size);
    for (i = 0; i + APPROVALS_ID_LEN <= size; i++) {
        if (memcmp(buf + i, "@@@@@", 5) == 0 && buf[i + 5] >= '0' && buf[i + 5] < '0' + NITEMS)
            memcpy(buf + i, c->ids[buf[i + 5] - '0'], APPROVALS_ID_LEN);
    }
    return buf;
}

static void
talk(struct event_base *base, struct ctx *c, const char *buf, size_t size)
{
    struct sockaddr_un sun;
    size_t sent = 0, piece;
    int fd, closed = 0, shut = 0;
    size_t rounds, max_rounds;
    ssize_t n;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, sock_path);
    CHECK((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) != -1);
    CHECK(connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0);
    /* Pieces of varying size so line assembly across reads is exercised too; at most ~32
     * of them plus the remainder, so long inputs stay fast. */
    piece = size > 0 ? 1 + ((unsigned char)buf[0] % 97) * 41 + size / 32 : 1;
    max_rounds = size / piece + MAX_ROUNDS;
    for (rounds = 0; rounds < max_rounds && !closed; rounds++) {
        if (sent < size) {
            n = send(fd, buf + sent, size - sent < piece ? size - sent : piece, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else
                CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
        } else if (!shut) {
            CHECK(shutdown(fd, SHUT_WR) == 0);
            shut = 1;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        closed = drain(c, fd);
    }
    CHECK(closed && shut); /* after EOF and the last reply, the server hangs up */
    close(fd);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct done_arg args[NITEMS];
    struct event_base *base;
    struct approvals *q;
    struct control *ctl;
    struct err err;
    struct ctx *c;
    char *buf;
    int i;

    if (size > MAX_INPUT)
        return 0;
    CHECK((c = calloc(1, sizeof(*c))) != NULL);
    c->reload_fails = size % 2;
    CHECK((base = event_base_new()) != NULL);
    CHECK((q = approvals_new(base, 8, 600000)) != NULL);
    hold_items(q, c, args);
    ctl = control_new(base, sock_path, q, status_fn, reload_fn, c, &err);
    CHECK(ctl != NULL);
    buf = substitute(c, data, size);
    talk(base, c, buf, size);
    CHECK(c->ok_replies == expected_replies(buf, size));
    free(buf);
    control_free(ctl);
    approvals_shutdown(q);
    for (i = 0; i < NITEMS; i++)
        CHECK(c->done[i] != 0);
    approvals_free(q);
    event_base_free(base);
    free(c);
    return 0;
}
