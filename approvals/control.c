/*
 * Control socket server: accepts local CLI connections on the daemon's event loop, checks
 * the peer's uid, and answers NDJSON requests against the approvals queue. Watchers get
 * queue events fanned out from one queue observer. Clients are closed lazily (a reaper
 * event) because a close can be triggered from inside another client's callback.
 */
#include "approvals/control.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "common/log.h"
#include "common/util.h"

struct client {
    struct control *c;
    struct bufferevent *bev;
    uid_t uid;
    int watching, discarding, dead;
    int draining; /* peer sent EOF: close once the output is flushed */
    struct client *next;
};

struct control {
    struct event_base *base;
    char *path;
    dev_t dev;
    ino_t ino;
    struct approvals *q;
    control_status_fn status;
    control_reload_fn reload;
    void *arg;
    struct evconnlistener *lis;
    int observer;
    struct client *clients;
    size_t nclients;
    struct event *reaper;
};

static void
client_close(struct client *cl)
{
    if (cl->dead)
        return;
    cl->dead = 1;
    bufferevent_disable(cl->bev, EV_READ | EV_WRITE);
    event_active(cl->c->reaper, EV_TIMEOUT, 0);
}

static void
reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    struct control *c = arg;
    struct client **pp = &c->clients, *cl;

    while ((cl = *pp) != NULL) {
        if (!cl->dead) {
            pp = &cl->next;
            continue;
        }
        *pp = cl->next;
        bufferevent_free(cl->bev);
        free(cl);
        c->nclients--;
    }
}

static void
send_text(struct client *cl, const char *text, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(cl->bev);

    if (cl->dead)
        return;
    if (evbuffer_get_length(out) + len > CONTROL_MAX_OUTPUT) {
        log_warn("control: dropping a client that does not read its replies");
        client_close(cl);
        return;
    }
    evbuffer_add(out, text, len);
    evbuffer_add(out, "\n", 1);
}

/* Sends o as one line and releases it. */
static void
reply(struct client *cl, json_t *o)
{
    char *s;

    if (o == NULL)
        o = json_pack("{s:b, s:s}", "ok", 0, "error", "out of memory");
    if (o != NULL && (s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)) != NULL) {
        send_text(cl, s, strlen(s));
        free(s);
    }
    json_decref(o);
}

static void
reply_error(struct client *cl, const char *msg)
{
    reply(cl, json_pack("{s:b, s:s}", "ok", 0, "error", msg));
}

static int
add_pending(const struct approval_info *info, void *arg)
{
    return json_array_append_new(arg, approvals_info_json(info));
}

static void
op_list(struct client *cl)
{
    json_t *arr = json_array();

    if (arr == NULL || approvals_foreach(cl->c->q, add_pending, arr) != 0) {
        json_decref(arr);
        reply_error(cl, "out of memory");
        return;
    }
    reply(cl, json_pack("{s:b, s:o}", "ok", 1, "pending", arr));
}

static void
op_decide(struct client *cl, json_t *req, int approve)
{
    const char *id = json_string_value(json_object_get(req, "id"));
    char approver[48];
    struct err err;

    if (id == NULL) {
        reply_error(cl, "missing id");
        return;
    }
    snprintf(approver, sizeof(approver), "cli:uid=%u", (unsigned)cl->uid);
    if (approvals_decide(cl->c->q, id, approve, APPROVAL_SOURCE_CLI, approver, &err) == -1)
        reply_error(cl, err.msg);
    else
        reply(cl, json_pack("{s:b}", "ok", 1));
}

static int
watch_snapshot(const struct approval_info *info, void *arg)
{
    json_t *o = approvals_info_json(info);

    if (o != NULL)
        json_object_set_new(o, "event", json_string("pending"));
    reply(arg, o);
    return 0;
}

static void
op_watch(struct client *cl)
{
    cl->watching = 1;
    reply(cl, json_pack("{s:b}", "ok", 1));
    /* Items already waiting, so a watcher that starts late still sees them. */
    approvals_foreach(cl->c->q, watch_snapshot, cl);
}

static void
op_status(struct client *cl)
{
    json_t *o = json_pack("{s:b, s:I}", "ok", 1, "pending",
        (json_int_t)approvals_count(cl->c->q)), *extra;

    if (o != NULL && cl->c->status != NULL && (extra = cl->c->status(cl->c->arg)) != NULL) {
        if (json_is_object(extra))
            json_object_update(o, extra);
        json_decref(extra);
        json_object_set_new(o, "ok", json_true());
    }
    reply(cl, o);
}

static void
op_reload(struct client *cl)
{
    struct err err;

    if (cl->c->reload == NULL) {
        reply_error(cl, "reload not available");
        return;
    }
    err_clear(&err);
    if (cl->c->reload(cl->c->arg, &err) == -1)
        reply_error(cl, err.msg[0] != '\0' ? err.msg : "reload failed");
    else
        reply(cl, json_pack("{s:b}", "ok", 1));
}

static void
handle_line(struct client *cl, const char *line, size_t len)
{
    json_t *req;
    const char *op;

    if ((req = json_loadb(line, len, 0, NULL)) == NULL || !json_is_object(req)) {
        reply_error(cl, "malformed json");
    } else if ((op = json_string_value(json_object_get(req, "op"))) == NULL) {
        reply_error(cl, "missing op");
    } else if (strcmp(op, "list") == 0) {
        op_list(cl);
    } else if (strcmp(op, "approve") == 0 || strcmp(op, "deny") == 0) {
        op_decide(cl, req, op[0] == 'a');
    } else if (strcmp(op, "watch") == 0) {
        op_watch(cl);
    } else if (strcmp(op, "status") == 0) {
        op_status(cl);
    } else if (strcmp(op, "reload") == 0) {
        op_reload(cl);
    } else {
        reply_error(cl, "unknown op");
    }
    json_decref(req);
}

/*
 * Lines are handled one at a time; an overlong line gets one error and is skipped up to
 * its newline. The read high-watermark bounds how much is buffered per client.
 */
static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct client *cl = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr eol;
    size_t n;
    char *line;

    while (!cl->dead && evbuffer_get_length(in) > 0) {
        if (cl->discarding) {
            eol = evbuffer_search_eol(in, NULL, &n, EVBUFFER_EOL_LF);
            if (eol.pos == -1) {
                evbuffer_drain(in, evbuffer_get_length(in));
                return;
            }
            evbuffer_drain(in, (size_t)eol.pos + n);
            cl->discarding = 0;
            continue;
        }
        if ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) == NULL) {
            if (evbuffer_get_length(in) > CONTROL_MAX_LINE) {
                reply_error(cl, "line too long");
                cl->discarding = 1;
                continue; /* drain now: at the high-watermark no further read would come */
            }
            return;
        }
        if (n > 0 && line[n - 1] == '\r')
            n--; /* tolerate CRLF from hand-typed sessions (socat, nc) */
        if (n > CONTROL_MAX_LINE)
            reply_error(cl, "line too long");
        else if (n > 0)
            handle_line(cl, line, n);
        free(line);
    }
}

/* After the peer's EOF, finish sending what is queued, then close. */
static void
write_cb(struct bufferevent *bev, void *arg)
{
    struct client *cl = arg;

    if (cl->draining && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        client_close(cl);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct client *cl = arg;

    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
        evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        cl->draining = 1;
        cl->watching = 0;
        bufferevent_disable(bev, EV_READ);
        return;
    }
    client_close(cl);
}

/* Best effort one-line answer on a connection we will not serve. */
static void
refuse(evutil_socket_t fd, const char *msg)
{
    char line[128];
    int n = snprintf(line, sizeof(line), "{\"ok\":false,\"error\":\"%s\"}\n", msg);

    (void)!send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    evutil_closesocket(fd);
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen,
    void *arg)
{
    struct control *c = arg;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    struct client *cl;

    memset(&cred, 0, sizeof(cred));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1 ||
        (cred.uid != geteuid() && cred.uid != 0)) {
        log_warn("control: refusing a client with uid %u", (unsigned)cred.uid);
        refuse(fd, "permission denied");
        return;
    }
    if (c->nclients >= CONTROL_MAX_CLIENTS) {
        refuse(fd, "too many control clients");
        return;
    }
    if ((cl = calloc(1, sizeof(*cl))) == NULL ||
        (cl->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        free(cl);
        evutil_closesocket(fd);
        return;
    }
    cl->c = c;
    cl->uid = cred.uid;
    cl->next = c->clients;
    c->clients = cl;
    c->nclients++;
    bufferevent_setcb(cl->bev, read_cb, write_cb, event_cb, cl);
    bufferevent_setwatermark(cl->bev, EV_READ, 0, CONTROL_MAX_LINE + 4096);
    bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
}

static void
observer_cb(int event, const struct approval_info *info, enum approval_outcome outcome,
    const char *approver, void *arg)
{
    struct control *c = arg;
    struct client *cl;
    json_t *o;
    char *s;

    if (event == APPROVALS_EV_PENDING) {
        if ((o = approvals_info_json(info)) != NULL)
            json_object_set_new(o, "event", json_string("pending"));
    } else {
        o = json_pack("{s:s, s:s, s:s, s:o}", "event", "resolved", "id", info->id, "outcome",
            approvals_outcome_name(outcome), "by",
            approver != NULL ? json_string(approver) : json_null());
    }
    if (o == NULL || (s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL) {
        json_decref(o);
        return;
    }
    for (cl = c->clients; cl != NULL; cl = cl->next) {
        if (cl->watching && !cl->dead)
            send_text(cl, s, strlen(s));
    }
    free(s);
    json_decref(o);
}

/*
 * A socket file left by a crashed daemon is replaced; one that still accepts means another
 * daemon owns it. Anything that is not a socket is never removed.
 */
static int
claim_path(const struct sockaddr_un *sun, struct err *err)
{
    struct stat st;
    int fd, rc;

    if (lstat(sun->sun_path, &st) == -1)
        return errno == ENOENT ? 0 : err_set(err, ERR_IO, "%s: %s", sun->sun_path,
            strerror(errno));
    if (!S_ISSOCK(st.st_mode))
        return err_set(err, ERR_EXISTS, "%s: exists and is not a socket", sun->sun_path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
        return err_set(err, ERR_IO, "%s: socket: %s", sun->sun_path, strerror(errno));
    rc = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
    close(fd);
    if (rc == 0)
        return err_set(err, ERR_EXISTS, "%s: another daemon is listening", sun->sun_path);
    if (errno != ECONNREFUSED)
        return err_set(err, ERR_IO, "%s: %s", sun->sun_path, strerror(errno));
    if (unlink(sun->sun_path) == -1 && errno != ENOENT)
        return err_set(err, ERR_IO, "%s: unlink stale socket: %s", sun->sun_path,
            strerror(errno));
    return 0;
}

/* Bound with umask 0177 so the socket is never, even briefly, reachable by others. */
static int
listen_socket(struct control *c, struct err *err)
{
    struct sockaddr_un sun;
    struct stat st;
    mode_t old;
    int fd, rc;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (util_strlcpy(sun.sun_path, c->path, sizeof(sun.sun_path)) >= sizeof(sun.sun_path))
        return err_set(err, ERR_USAGE, "%s: control socket path too long", c->path);
    if (claim_path(&sun, err) == -1)
        return -1;
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) == -1)
        return err_set(err, ERR_IO, "%s: socket: %s", c->path, strerror(errno));
    old = umask(0177);
    rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (rc == -1 || chmod(c->path, 0600) == -1 || stat(c->path, &st) == -1) {
        err_set(err, ERR_IO, "%s: bind: %s", c->path, strerror(errno));
        close(fd);
        return -1;
    }
    c->dev = st.st_dev;
    c->ino = st.st_ino;
    c->lis = evconnlistener_new(c->base, accept_cb, c, LEV_OPT_CLOSE_ON_FREE |
        LEV_OPT_CLOSE_ON_EXEC, 16, fd);
    if (c->lis == NULL) {
        err_set(err, ERR_IO, "%s: listen: %s", c->path, strerror(errno));
        close(fd);
        unlink(c->path);
        return -1;
    }
    return 0;
}

struct control *
control_new(struct event_base *base, const char *path, struct approvals *q,
    control_status_fn status, control_reload_fn reload, void *arg, struct err *err)
{
    struct control *c;

    if ((c = calloc(1, sizeof(*c))) == NULL || (c->path = strdup(path)) == NULL) {
        free(c);
        err_set(err, ERR_INTERNAL, "%s: out of memory", path);
        return NULL;
    }
    c->base = base;
    c->q = q;
    c->status = status;
    c->reload = reload;
    c->arg = arg;
    c->observer = -1;
    if ((c->reaper = event_new(base, -1, 0, reaper_cb, c)) == NULL) {
        err_set(err, ERR_INTERNAL, "%s: out of memory", path);
        goto fail;
    }
    if ((c->observer = approvals_observe(q, observer_cb, c)) == -1) {
        err_set(err, ERR_LIMIT, "%s: too many approval observers", path);
        goto fail;
    }
    if (listen_socket(c, err) == -1)
        goto fail;
    return c;
fail:
    control_free(c);
    return NULL;
}

void
control_free(struct control *c)
{
    struct client *cl;
    struct stat st;

    if (c == NULL)
        return;
    if (c->observer != -1)
        approvals_unobserve(c->q, c->observer);
    while ((cl = c->clients) != NULL) {
        c->clients = cl->next;
        bufferevent_free(cl->bev);
        free(cl);
    }
    if (c->lis != NULL) {
        evconnlistener_free(c->lis);
        /* Only our own socket: a newer daemon may have replaced it meanwhile. */
        if (lstat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
            unlink(c->path);
    }
    if (c->reaper != NULL)
        event_free(c->reaper);
    free(c->path);
    free(c);
}
