/*
 * Client side of the control socket, for the CLI: connect, send one NDJSON request, read
 * one bounded reply line under a deadline so a wedged daemon cannot hang the CLI.
 */
#include "approvals/control.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util.h"

int
control_connect(const char *path, struct err *err)
{
    struct sockaddr_un sun;
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (util_strlcpy(sun.sun_path, path, sizeof(sun.sun_path)) >= sizeof(sun.sun_path))
        return err_set(err, ERR_USAGE, "cannot connect to control socket %s: path too long",
            path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
        return err_set(err, ERR_IO, "cannot connect to control socket %s: %s", path,
            strerror(errno));
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
        err_set(err, ERR_IO, "cannot connect to control socket %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Waits for fd to be ready for events before deadline_us. 0 ready, -1 timeout/error. */
static int
wait_fd(int fd, short events, uint64_t deadline_us)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    uint64_t now;
    int rc;

    for (;;) {
        if ((now = util_now_us()) >= deadline_us)
            return -1;
        rc = poll(&pfd, 1, (int)((deadline_us - now + 999) / 1000));
        if (rc > 0)
            return 0;
        if (rc == 0 || errno != EINTR)
            return -1;
    }
}

static int
send_all(int fd, const char *buf, size_t len, uint64_t deadline_us)
{
    ssize_t n;

    while (len > 0) {
        if (wait_fd(fd, POLLOUT, deadline_us) == -1)
            return -1;
        n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads up to the first newline into a malloc'd buffer (newline excluded). */
static char *
recv_line(int fd, uint64_t deadline_us, size_t *len, const char **why)
{
    size_t cap = 4096, have = 0;
    char *buf = malloc(cap), *nl, *grown;
    ssize_t n;

    *why = "out of memory";
    while (buf != NULL) {
        if (have == cap) {
            *why = "reply too long";
            if (cap >= CONTROL_MAX_REPLY || (grown = realloc(buf, cap * 2)) == NULL)
                break;
            buf = grown;
            cap *= 2;
        }
        *why = "timed out";
        if (wait_fd(fd, POLLIN, deadline_us) == -1)
            break;
        n = recv(fd, buf + have, cap - have, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        *why = n == 0 ? "connection closed by the daemon" : strerror(errno);
        if (n <= 0)
            break;
        if ((nl = memchr(buf + have, '\n', (size_t)n)) != NULL) {
            *len = (size_t)(nl - buf);
            return buf;
        }
        have += (size_t)n;
    }
    free(buf);
    return NULL;
}

int
control_request(const char *path, const json_t *req, json_t **reply, struct err *err)
{
    uint64_t deadline = util_now_us() + (uint64_t)CONTROL_REQUEST_TIMEOUT_MS * 1000;
    const char *why = "cannot encode request";
    char *line = NULL;
    size_t len;
    int fd;

    *reply = NULL;
    if ((fd = control_connect(path, err)) == -1)
        return -1;
    if ((line = json_dumps(req, JSON_COMPACT)) != NULL) {
        why = "send failed";
        len = strlen(line);
        line[len] = '\n'; /* json_dumps leaves room for the NUL: replace it */
        if (send_all(fd, line, len + 1, deadline) == 0) {
            free(line);
            if ((line = recv_line(fd, deadline, &len, &why)) != NULL &&
                (*reply = json_loadb(line, len, 0, NULL)) == NULL)
                why = "malformed reply";
        }
    }
    free(line);
    close(fd);
    if (*reply != NULL && !json_is_object(*reply)) {
        json_decref(*reply);
        *reply = NULL;
        why = "malformed reply";
    }
    if (*reply == NULL)
        return err_set(err, ERR_IO, "control socket %s: %s", path, why);
    return 0;
}
