/*
 * The daemon's side of the buddy device: opens the tty (polling every second while it is
 * absent), authenticates the device with HELLO, and turns the lines it sends into calls
 * into the items queue (link_decide.c). Everything malformed is ignored, counted and
 * logged; nothing from the wire can reach the decision callback without a verified mac
 * (auth hmac).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "common/util.h"
#include "device/link_internal.h"

#define OUT_MAX_BYTES 8192  /* a device that stops reading is treated as unplugged */
#define READS_PER_EVENT 8   /* then yield to the loop */

static void link_close(struct buddy_link *l, const char *why);

void
link_random_nonce(char out[BUDDY_NONCE_LEN + 1])
{
    unsigned char raw[BUDDY_NONCE_LEN / 2];

    if (util_random(raw, sizeof(raw)) < 0)
        abort(); /* no randomness: a predictable nonce would allow replays */
    buddy_hex_encode(raw, sizeof(raw), out);
}

static void
flush_out(struct buddy_link *l)
{
    while (l->fd >= 0 && evbuffer_get_length(l->out) > 0) {
        int n = evbuffer_write(l->out, l->fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(l->ev_write, NULL);
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        link_close(l, n < 0 ? strerror(errno) : "write returned 0");
        return;
    }
}

static void
send_raw(struct buddy_link *l, const char *s, size_t n)
{
    if (l->fd < 0)
        return;
    if (evbuffer_get_length(l->out) + n > OUT_MAX_BYTES) {
        link_close(l, "device is not reading");
        return;
    }
    evbuffer_add(l->out, s, n);
    flush_out(l);
}

void
link_send_msg(struct buddy_link *l, const struct buddy_msg *m)
{
    char line[BUDDY_LINE_MAX + 1];
    int n = buddy_format_line(m, line, sizeof(line));

    if (n < 0) {
        log_error("buddy: %s: cannot format a line of type %d", l->open_path, (int)m->type);
        return;
    }
    send_raw(l, line, (size_t)n);
}

static void
send_hello(struct buddy_link *l)
{
    struct buddy_msg m;

    memset(&m, 0, sizeof(m));
    m.type = BUDDY_MSG_HELLO;
    link_random_nonce(l->hnonce);
    strcpy(m.nonce, l->hnonce);
    l->hello_us = util_now_us();
    /* The empty line first ends any half line the device still holds from before. */
    send_raw(l, "\n", 1);
    link_send_msg(l, &m);
}

static void
link_close(struct buddy_link *l, const char *why)
{
    if (l->fd < 0)
        return;
    snprintf(l->absent_why, sizeof(l->absent_why), "%s: %s", l->open_path, why);
    if (l->quiet_reopen)
        log_debug("buddy: %s: %s; device closed again before a handshake", l->open_path, why);
    else
        log_warn("buddy: %s: %s; device closed, polling for it", l->open_path, why);
    if (l->state != LINK_READY)
        l->quiet_reopen = 1;
    l->bad_hello_logged = 0;
    event_free(l->ev_read);
    event_free(l->ev_write);
    l->ev_read = l->ev_write = NULL;
    close(l->fd);
    l->fd = -1;
    evbuffer_drain(l->out, evbuffer_get_length(l->out));
    link_retire_shown(l);
    l->state = LINK_CLOSED;
    l->devid[0] = '\0';
    l->hnonce[0] = '\0';
    l->lb.len = 0;
    l->lb.discarding = 0;
}

/* Always 1 with auth none. */
int
link_mac_ok(const struct buddy_link *l, enum buddy_type type, const char *a, const char *b,
    const char *mac)
{
    char msg[BUDDY_LINE_MAX];

    if (!l->auth_hmac)
        return 1;
    if (buddy_mac_message(type, a, b, msg, sizeof(msg)) < 0)
        return 0;
    return buddy_mac_verify(l->key->data, msg, mac);
}

static void
on_hello_reply(struct buddy_link *l, const struct buddy_msg *m)
{
    if (l->state != LINK_HELLO || l->hnonce[0] == '\0') {
        log_debug("buddy: %s: HELLO outside a handshake ignored", l->open_path);
        return;
    }
    if (!link_mac_ok(l, BUDDY_MSG_HELLO_REPLY, m->devid, l->hnonce, m->mac)) {
        l->stats.bad_mac++;
        if (l->bad_hello_logged)
            log_debug("buddy: %s: HELLO from %s with a wrong mac ignored", l->open_path,
                m->devid);
        else
            log_warn("buddy: %s: HELLO from %s with a wrong mac ignored (paired with another "
                     "key?); asking again every %d s", l->open_path, m->devid,
                BUDDY_HELLO_RETRY_MS / 1000);
        l->bad_hello_logged = 1;
        return;
    }
    l->hnonce[0] = '\0'; /* one HELLO reply per challenge */
    l->state = LINK_READY;
    l->bad_hello_logged = 0;
    l->quiet_reopen = 0;
    util_strlcpy(l->devid, m->devid, sizeof(l->devid));
    l->ping_us = l->pong_us = util_now_us();
    log_info("buddy: %s: device %s connected (auth %s)", l->open_path, l->devid,
        l->auth_hmac ? "hmac" : "none");
    link_show_next(l);
}

static void
handle_line(struct buddy_link *l, const char *line, size_t len)
{
    struct buddy_msg m;

    if (buddy_parse_line(line, len, &m) != BUDDY_PARSE_OK) {
        l->stats.malformed++;
        log_warn("buddy: %s: malformed line of %zu bytes ignored", l->open_path, len);
        return;
    }
    switch (m.type) {
    case BUDDY_MSG_HELLO_REPLY:
        on_hello_reply(l, &m);
        break;
    case BUDDY_MSG_APPROVE:
    case BUDDY_MSG_DENY:
        link_on_decision(l, &m);
        break;
    case BUDDY_MSG_PONG:
        l->pong_us = util_now_us();
        break;
    case BUDDY_MSG_ERR:
        log_info("buddy: %s: device reports: %s", l->open_path, m.reason);
        break;
    default:
        l->stats.malformed++;
        log_warn("buddy: %s: host-side message from the device ignored", l->open_path);
    }
}

static void
feed(struct buddy_link *l, const unsigned char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n && l->fd >= 0; i++) {
        switch (buddy_linebuf_feed(&l->lb, p[i])) {
        case BUDDY_LB_LINE:
            handle_line(l, l->lb.buf, l->lb.len);
            l->lb.len = 0;
            break;
        case BUDDY_LB_OVERLONG:
            l->stats.overlong++;
            log_warn("buddy: %s: line longer than %d bytes discarded", l->open_path,
                BUDDY_LINE_MAX);
            break;
        default:
            break;
        }
    }
}

static void
on_read(evutil_socket_t fd, short what, void *arg)
{
    struct buddy_link *l = arg;
    unsigned char buf[512];
    int i;

    for (i = 0; i < READS_PER_EVENT && l->fd >= 0; i++) {
        ssize_t n = read(l->fd, buf, sizeof(buf));
        if (n > 0) {
            feed(l, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* EOF, EIO, ENXIO: the device was unplugged (or the pty's other end closed). */
        link_close(l, n == 0 ? "end of file" : strerror(errno));
        return;
    }
}

static void
on_write(evutil_socket_t fd, short what, void *arg)
{
    flush_out(arg);
}

static void
try_open(struct buddy_link *l)
{
    struct err err;
    char path[PATH_MAX];
    int fd;

    if (strcmp(l->path, "auto") == 0) {
        if (buddy_serial_auto_path(path, sizeof(path)) < 0) {
            util_strlcpy(l->absent_why, "no device under /dev/serial/by-id",
                sizeof(l->absent_why));
            if (!l->absent_logged)
                log_info("buddy: no device under /dev/serial/by-id yet; polling every %d ms",
                    BUDDY_POLL_MS);
            l->absent_logged = 1;
            return;
        }
    } else {
        util_strlcpy(path, l->path, sizeof(path));
    }
    if ((fd = buddy_serial_open(path, l->baud, &err)) < 0) {
        util_strlcpy(l->absent_why, err.msg, sizeof(l->absent_why));
        if (!l->absent_logged)
            log_info("buddy: %s; polling every %d ms", err.msg, BUDDY_POLL_MS);
        l->absent_logged = 1;
        return;
    }
    l->ev_read = event_new(l->base, fd, EV_READ | EV_PERSIST, on_read, l);
    l->ev_write = event_new(l->base, fd, EV_WRITE, on_write, l);
    if (l->ev_read == NULL || l->ev_write == NULL || event_add(l->ev_read, NULL) < 0) {
        log_error("buddy: %s: cannot register events", path);
        snprintf(l->absent_why, sizeof(l->absent_why), "%s: cannot register events", path);
        event_free(l->ev_read);
        event_free(l->ev_write);
        l->ev_read = l->ev_write = NULL;
        close(fd);
        return;
    }
    l->fd = fd;
    l->absent_why[0] = '\0';
    util_strlcpy(l->open_path, path, sizeof(l->open_path));
    if (!l->quiet_reopen)
        l->absent_logged = 0;
    l->state = LINK_HELLO;
    if (l->quiet_reopen)
        log_debug("buddy: %s: opened, sending HELLO", path);
    else
        log_info("buddy: %s: opened, sending HELLO", path);
    send_hello(l);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct buddy_link *l = arg;
    uint64_t now = util_now_us();
    struct buddy_msg m;

    switch (l->state) {
    case LINK_CLOSED:
        try_open(l);
        break;
    case LINK_HELLO:
        if (now - l->hello_us >= (uint64_t)BUDDY_HELLO_RETRY_MS * 1000)
            send_hello(l);
        break;
    case LINK_READY:
        if (now - l->pong_us >= (uint64_t)BUDDY_PONG_TIMEOUT_MS * 1000) {
            link_close(l, "no PONG for 10 s");
        } else if (now - l->ping_us >= (uint64_t)BUDDY_PING_MS * 1000) {
            memset(&m, 0, sizeof(m));
            m.type = BUDDY_MSG_PING;
            l->ping_us = now;
            link_send_msg(l, &m);
        }
        break;
    }
}

struct buddy_link *
buddy_link_new(struct event_base *base, const struct buddy_link_config *cfg,
    const struct secbuf *key, buddy_decision_cb cb, void *arg, struct err *err)
{
    struct buddy_link *l;
    struct timeval tv = util_ms_timeval(BUDDY_POLL_MS);

    if (cfg->path == NULL || cfg->path[0] == '\0' || cb == NULL) {
        err_set(err, ERR_USAGE, "buddy: no device path configured");
        return NULL;
    }
    if (!buddy_serial_baud_supported(cfg->baud)) {
        err_set(err, ERR_USAGE, "buddy: %s: unsupported baud rate %u", cfg->path, cfg->baud);
        return NULL;
    }
    if (cfg->auth_hmac && (key == NULL || key->len != BUDDY_KEY_LEN)) {
        err_set(err, ERR_USAGE, "buddy: auth hmac needs the %d-byte pair key (airlock buddy "
                                "pair)", BUDDY_KEY_LEN);
        return NULL;
    }
    if ((l = calloc(1, sizeof(*l))) == NULL) {
        err_set(err, ERR_INTERNAL, "buddy: out of memory");
        return NULL;
    }
    l->base = base;
    l->fd = -1;
    l->baud = cfg->baud;
    l->auth_hmac = cfg->auth_hmac != 0;
    l->cb = cb;
    l->arg = arg;
    TAILQ_INIT(&l->items);
    util_strlcpy(l->open_path, cfg->path, sizeof(l->open_path));
    l->path = strdup(cfg->path);
    l->key = secbuf_new(BUDDY_KEY_LEN);
    l->out = evbuffer_new();
    l->ev_timer = event_new(base, -1, EV_PERSIST, on_timer, l);
    if (l->path == NULL || l->key == NULL || l->out == NULL || l->ev_timer == NULL ||
        event_add(l->ev_timer, &tv) < 0) {
        err_set(err, ERR_INTERNAL, "buddy: cannot allocate the link");
        buddy_link_free(l);
        return NULL;
    }
    if (l->auth_hmac)
        secbuf_append(l->key, key->data, BUDDY_KEY_LEN);
    try_open(l);
    return l;
}

void
buddy_link_free(struct buddy_link *l)
{
    struct item *it;

    if (l == NULL)
        return;
    if (l->fd >= 0) {
        event_free(l->ev_read);
        event_free(l->ev_write);
        close(l->fd);
    }
    if (l->ev_timer != NULL)
        event_free(l->ev_timer);
    if (l->out != NULL)
        evbuffer_free(l->out);
    while ((it = TAILQ_FIRST(&l->items)) != NULL) {
        TAILQ_REMOVE(&l->items, it, entry);
        free(it);
    }
    secbuf_free(l->key);
    free(l->path);
    free(l);
}

int
buddy_link_connected(const struct buddy_link *l)
{
    return l->state == LINK_READY;
}

const char *
buddy_link_devid(const struct buddy_link *l)
{
    return l->state == LINK_READY ? l->devid : NULL;
}

void
buddy_link_stats(const struct buddy_link *l, struct buddy_link_stats *out)
{
    *out = l->stats;
}

void
buddy_link_status(const struct buddy_link *l, struct buddy_link_status *out)
{
    memset(out, 0, sizeof(*out));
    switch (l->state) {
    case LINK_CLOSED:
        out->state = BUDDY_LINK_ABSENT;
        out->path = l->path;
        out->reason = l->absent_why;
        break;
    case LINK_HELLO:
        out->state = BUDDY_LINK_HANDSHAKE;
        out->path = l->open_path;
        out->wrong_mac = l->bad_hello_logged;
        break;
    case LINK_READY:
        out->state = BUDDY_LINK_CONNECTED;
        out->path = l->open_path;
        out->devid = l->devid;
        break;
    }
}
