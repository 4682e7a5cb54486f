/*
 * CLI commands that talk to a running airlockd over its control socket: pending,
 * approve/deny, status and watch (a live list with countdowns on a terminal, one line per
 * event otherwise). Exit statuses: 0 ok, 1 runtime failure (daemon not running, unknown id).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "approvals/control.h"
#include "cmd/cli.h"
#include "common/util.h"

#define WATCH_MAX_ITEMS 1024

/* One request; prints the daemon's error and returns 1 unless the reply says ok. */
static int
request(const char *sock, json_t *req, json_t **reply)
{
    const char *msg;
    struct err err;
    int rc;

    err_clear(&err);
    rc = control_request(sock, req, reply, &err);
    json_decref(req);
    if (rc == -1) {
        fprintf(stderr, "airlock: %s\n", err.msg);
        return 1;
    }
    if (!json_is_true(json_object_get(*reply, "ok"))) {
        msg = json_string_value(json_object_get(*reply, "error"));
        fprintf(stderr, "airlock: %s\n", msg != NULL ? msg : "request failed");
        json_decref(*reply);
        *reply = NULL;
        return 1;
    }
    return 0;
}

static const char *
field(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));

    return s != NULL ? s : "-";
}

/* "K3F9QX  POST api.github.com/repos/x  agent=ci-bot rule=... (device)  97s left" */
static void
print_item(FILE *f, const json_t *it, long long left_s)
{
    fprintf(f, "%s  %s %s%s  agent=%s rule=%s credential=%s body=%lldB (%s)  %llds left\n",
        field(it, "id"), field(it, "method"), field(it, "host"), field(it, "path"),
        field(it, "agent"), field(it, "rule"), field(it, "credential"),
        (long long)json_integer_value(json_object_get(it, "body_bytes")), field(it, "mode"),
        left_s);
}

static long long
left_seconds(const json_t *it)
{
    return (json_integer_value(json_object_get(it, "expires_in_ms")) + 999) / 1000;
}

int
cli_pending(const char *sock)
{
    json_t *reply, *items, *it;
    size_t i;

    if (request(sock, json_pack("{s:s}", "op", "list"), &reply) != 0)
        return 1;
    items = json_object_get(reply, "pending");
    if (json_array_size(items) == 0)
        printf("no pending requests\n");
    json_array_foreach(items, i, it)
        print_item(stdout, it, left_seconds(it));
    fflush(stdout);
    json_decref(reply);
    return 0;
}

int
cli_approve(const char *sock, const char *id, int approve)
{
    const char *op = approve ? "approve" : "deny";
    json_t *reply;

    if (request(sock, json_pack("{s:s, s:s}", "op", op, "id", id), &reply) != 0)
        return 1;
    printf("%s %s\n", approve ? "approved" : "denied", id);
    fflush(stdout);
    json_decref(reply);
    return 0;
}

/* One line for the buddy device: its state in words, then what goes with it. */
static void
print_device(json_t *dev)
{
    const char *state = field(dev, "state");

    if (strcmp(state, "connected") == 0)
        printf("device: connected, device %s on %s\n", field(dev, "devid"), field(dev, "path"));
    else if (strcmp(state, "connecting") == 0 && json_object_get(dev, "reason") != NULL)
        printf("device: connecting on %s: %s\n", field(dev, "path"), field(dev, "reason"));
    else if (strcmp(state, "connecting") == 0)
        printf("device: connecting on %s (HELLO sent)\n", field(dev, "path"));
    else if (strcmp(state, "absent") == 0)
        printf("device: port absent (%s), polling: %s\n", field(dev, "path"),
            field(dev, "reason"));
    else if (strcmp(state, "waiting_for_key") == 0)
        printf("device: waiting for the pair key (%lld attempts): %s\n",
            (long long)json_integer_value(json_object_get(dev, "attempts")),
            field(dev, "reason"));
    else if (strcmp(state, "off") == 0)
        printf("device: off: %s\n", field(dev, "reason"));
    else if (strcmp(state, "not_configured") == 0)
        printf("device: not configured\n");
    else
        printf("device: %s\n", state);
}

int
cli_status(const char *sock)
{
    json_t *reply, *v;
    const char *key;
    char *s;

    if (request(sock, json_pack("{s:s}", "op", "status"), &reply) != 0)
        return 1;
    json_object_foreach(reply, key, v) {
        if (strcmp(key, "ok") == 0)
            continue;
        if (strcmp(key, "device") == 0 && json_is_object(v)) {
            print_device(v);
        } else if (json_is_string(v)) {
            printf("%s: %s\n", key, json_string_value(v));
        } else if ((s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT)) != NULL) {
            printf("%s: %s\n", key, s);
            free(s);
        }
    }
    fflush(stdout);
    json_decref(reply);
    return 0;
}

/* Live state of `airlock watch`: pending items with a local monotonic deadline each. */
struct watch {
    int tty;
    size_t n;
    json_t *items[WATCH_MAX_ITEMS];
    uint64_t deadline_us[WATCH_MAX_ITEMS];
};

static void
watch_render(const struct watch *w)
{
    uint64_t now = util_now_us();
    size_t i;

    printf("\033[H\033[J" "airlock watch: %zu pending (ctrl-c to quit)\n\n", w->n);
    for (i = 0; i < w->n; i++)
        print_item(stdout, w->items[i], w->deadline_us[i] > now ?
            (long long)((w->deadline_us[i] - now + 999999) / 1000000) : 0);
    fflush(stdout);
}

static void
watch_event(struct watch *w, json_t *ev)
{
    const char *kind = field(ev, "event"), *id = field(ev, "id");
    size_t i;

    if (strcmp(kind, "pending") == 0) {
        if (!w->tty)
            print_item(stdout, ev, left_seconds(ev));
        if (w->n < WATCH_MAX_ITEMS) {
            w->items[w->n] = json_incref(ev);
            w->deadline_us[w->n++] = util_now_us() +
                (uint64_t)json_integer_value(json_object_get(ev, "expires_in_ms")) * 1000;
        }
    } else if (strcmp(kind, "resolved") == 0) {
        if (!w->tty)
            printf("%s  %s by %s\n", id, field(ev, "outcome"), field(ev, "by"));
        for (i = 0; i < w->n; i++) {
            if (strcmp(field(w->items[i], "id"), id) == 0) {
                json_decref(w->items[i]);
                w->items[i] = w->items[w->n - 1];
                w->deadline_us[i] = w->deadline_us[w->n - 1];
                w->n--;
                break;
            }
        }
    }
    fflush(stdout);
}

/* Handles every complete line in buf; keeps the partial tail. -1 on a bad first reply. */
static int
watch_lines(struct watch *w, char *buf, size_t *have, int *acked)
{
    char *nl, *line = buf;
    json_t *o;

    while ((nl = memchr(line, '\n', *have - (size_t)(line - buf))) != NULL) {
        o = json_loadb(line, (size_t)(nl - line), 0, NULL);
        if (!*acked) {
            if (o == NULL || !json_is_true(json_object_get(o, "ok"))) {
                fprintf(stderr, "airlock: watch refused: %s\n", field(o, "error"));
                json_decref(o);
                return -1;
            }
            *acked = 1;
        } else if (o != NULL) {
            watch_event(w, o);
        }
        json_decref(o);
        line = nl + 1;
    }
    *have -= (size_t)(line - buf);
    memmove(buf, line, *have);
    return 0;
}

static int
watch_loop(int fd, struct watch *w)
{
    static char buf[CONTROL_MAX_LINE * 4];
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    size_t have = 0;
    int acked = 0, rc;
    ssize_t n;

    for (;;) {
        if (w->tty && acked)
            watch_render(w);
        if ((rc = poll(&pfd, 1, 1000)) == -1 && errno != EINTR)
            return 1;
        if (rc <= 0)
            continue;
        if ((n = read(fd, buf + have, sizeof(buf) - have)) == 0)
            return 0; /* the daemon went away: a normal end of the stream */
        if (n < 0 && errno != EINTR)
            return 1;
        have += n > 0 ? (size_t)n : 0;
        if (watch_lines(w, buf, &have, &acked) == -1)
            return 1;
        if (have == sizeof(buf)) {
            fprintf(stderr, "airlock: control socket line too long\n");
            return 1;
        }
    }
}

int
cli_watch(const char *sock)
{
    static const char req[] = "{\"op\":\"watch\"}\n";
    struct watch *w;
    struct err err;
    int fd, rc;
    size_t i;

    if ((fd = control_connect(sock, &err)) == -1) {
        fprintf(stderr, "airlock: %s\n", err.msg);
        return 1;
    }
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1 ||
        (w = calloc(1, sizeof(*w))) == NULL) {
        fprintf(stderr, "airlock: control socket %s: %s\n", sock, strerror(errno));
        close(fd);
        return 1;
    }
    w->tty = isatty(STDOUT_FILENO);
    rc = watch_loop(fd, w);
    for (i = 0; i < w->n; i++)
        json_decref(w->items[i]);
    free(w);
    close(fd);
    return rc;
}
