/*
 * `airlock buddy pair`: hands a fresh pair key to a device in pairing mode and proves it
 * took: PAIR, then a HELLO challenge whose reply must verify under the new key. Blocking
 * with poll() and one overall deadline; the daemon is not involved.
 */
#include "device/buddy.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "device/buddy_internal.h"

static int
remaining_ms(uint64_t deadline_us)
{
    uint64_t now = util_now_us();

    return now >= deadline_us ? 0 : (int)((deadline_us - now + 999) / 1000);
}

static int
write_all(int fd, const char *p, size_t n, uint64_t deadline_us, struct err *err)
{
    while (n > 0) {
        struct pollfd pfd = {fd, POLLOUT, 0};
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return err_set(err, ERR_IO, "write: %s", strerror(errno));
        if (remaining_ms(deadline_us) == 0 || poll(&pfd, 1, remaining_ms(deadline_us)) < 0)
            return err_set(err, ERR_IO, "device is not reading");
    }
    return 0;
}

/* 1: paired (devid_out set), 0: keep reading, -1: the device refused (err set). */
static int
check_line(const char *line, size_t len, const unsigned char key[32], const char *hnonce,
    char devid_out[17], struct err *err)
{
    struct buddy_msg m;
    char msg[BUDDY_LINE_MAX];

    if (buddy_parse_line(line, len, &m) != BUDDY_PARSE_OK)
        return 0;
    if (m.type == BUDDY_MSG_ERR && strcmp(m.reason, "not-pairing") == 0)
        return err_set(err, ERR_TOKEN, "device is not in pairing mode (hold its button for "
                                       "3 s while plugging it in, then retry)");
    if (m.type == BUDDY_MSG_ERR && strcmp(m.reason, "store-failed") == 0)
        return err_set(err, ERR_TOKEN, "device could not store the key");
    if (m.type != BUDDY_MSG_HELLO_REPLY ||
        buddy_mac_message(BUDDY_MSG_HELLO_REPLY, m.devid, hnonce, msg, sizeof(msg)) < 0 ||
        !buddy_mac_verify(key, msg, m.mac))
        return 0;
    util_strlcpy(devid_out, m.devid, 17);
    return 1;
}

static int
exchange(int fd, const unsigned char key[32], char devid_out[17], uint64_t deadline_us,
    struct err *err)
{
    struct buddy_msg m;
    struct buddy_linebuf lb = {.len = 0};
    char lines[3 * BUDDY_LINE_MAX], hnonce[BUDDY_NONCE_LEN + 1];
    unsigned char raw[BUDDY_NONCE_LEN / 2], buf[256];
    int n1, n2, r;

    memset(&m, 0, sizeof(m));
    m.type = BUDDY_MSG_PAIR;
    buddy_hex_encode(key, BUDDY_KEY_LEN, m.key_hex);
    lines[0] = '\n';
    n1 = buddy_format_line(&m, lines + 1, sizeof(lines) - 1);
    explicit_bzero(&m, sizeof(m));
    if (util_random(raw, sizeof(raw)) < 0 || n1 < 0)
        return err_set(err, ERR_INTERNAL, "cannot prepare the PAIR line");
    buddy_hex_encode(raw, sizeof(raw), hnonce);
    m.type = BUDDY_MSG_HELLO;
    strcpy(m.nonce, hnonce);
    n2 = buddy_format_line(&m, lines + 1 + n1, sizeof(lines) - 1 - (size_t)n1);
    r = write_all(fd, lines, 1 + (size_t)n1 + (size_t)n2, deadline_us, err);
    explicit_bzero(lines, sizeof(lines));
    if (r < 0)
        return -1;
    while (remaining_ms(deadline_us) > 0) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t n, i;
        if (poll(&pfd, 1, remaining_ms(deadline_us)) <= 0)
            continue;
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            return err_set(err, ERR_IO, "device went away: %s", n < 0 ? strerror(errno) : "eof");
        for (i = 0; i < n; i++) {
            if (buddy_linebuf_feed(&lb, buf[i]) != BUDDY_LB_LINE)
                continue;
            r = check_line(lb.buf, lb.len, key, hnonce, devid_out, err);
            lb.len = 0;
            if (r != 0)
                return r > 0 ? 0 : -1;
        }
    }
    return err_set(err, ERR_TOKEN, "no HELLO under the new key from the device");
}

int
buddy_pair_blocking(const char *tty_path, unsigned baud, const unsigned char key[32],
    char devid_out[17], int timeout_ms, struct err *err)
{
    uint64_t deadline_us = util_now_us() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000;
    int fd, r;

    if ((fd = buddy_serial_open(tty_path, baud, err)) < 0)
        return -1;
    r = exchange(fd, key, devid_out, deadline_us, err);
    close(fd);
    if (r < 0)
        return err_prefix(err, "%s", tty_path);
    return 0;
}
