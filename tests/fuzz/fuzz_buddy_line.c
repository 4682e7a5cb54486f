/*
 * libFuzzer target for the buddy line protocol (device/): the shared parser (round trip
 * through the formatter), the firmware core fed the input as host lines, and the daemon's
 * link (device/link.c, HELLO handshake, mac and replay checks) driven as a scripted device
 * over a socketpair that stands in for the tty. The pair key is a fixed test key.
 *
 * The input is lines. For the link, a line starting with one of these is a device action
 * the harness performs with the right macs, anything else goes to the link verbatim:
 *   !DEVID  HELLO reply for the current challenge    ?DEVID  HELLO reply, wrong nonce
 *   +  -    APPROVE / DENY the item on show           <N     replay the N-th old nonce
 *   &ID TEXT  queue an item     ~ID  remove an item     %  toggle "daemon takes decisions"
 *   #       unplug (the device end closes)
 * Invariants: a decision reaches the callback exactly when the harness sent a fresh,
 * correctly signed one (never for raw lines or replays); every host line parses; the
 * firmware's macs equal OpenSSL's HMAC.
 */
#include <errno.h>
#include <linux/sockios.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/secmem.h"
#include "device/buddy.h"
#include "device/firmware/buddy_fw.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)
#define MAX_LINES 256
#define HISTORY 16

static const unsigned char test_key[BUDDY_KEY_LEN] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};

/* ---- the tty stand-in: link.c opens "the serial port" and gets a socketpair end ---- */

static int serial_fd = -1; /* handed out once per input */

int
buddy_serial_open(const char *path, unsigned baud, struct err *err)
{
    int fd = serial_fd;

    serial_fd = -1;
    if (fd < 0)
        return err_set(err, ERR_IO, "%s: unplugged", path);
    return fd;
}

int
buddy_serial_baud_supported(unsigned baud)
{
    return baud == 115200;
}

int
buddy_serial_auto_path(char *out, size_t cap)
{
    return -1;
}

/* ---- the parser ---- */

static void
check_parse(const char *line, size_t len)
{
    char out[BUDDY_LINE_MAX + 1];
    struct buddy_msg m, again;
    int n;

    if (buddy_parse_line(line, len, &m) != BUDDY_PARSE_OK)
        return;
    /* Strict grammar: formatting what parsed gives back exactly the line. */
    n = buddy_format_line(&m, out, sizeof(out));
    CHECK(n > 0 && (size_t)n == len + 1 && memcmp(out, line, len) == 0 && out[len] == '\n');
    CHECK(buddy_parse_line(out, len, &again) == BUDDY_PARSE_OK && again.type == m.type);
}

/* ---- the firmware, fed the input as the host's lines ---- */

struct fw_harness {
    struct buddy_fw fw;
    unsigned char key[BUDDY_KEY_LEN];
    int have_key;
    char hello_nonce[BUDDY_NONCE_LEN + 1];
    char shown_id[BUDDY_ID_LEN + 1], shown_nonce[BUDDY_NONCE_LEN + 1];
};

static void
fw_expect_mac(struct fw_harness *h, enum buddy_type type, const char *a, const char *b,
              const char *mac)
{
    char msg[BUDDY_LINE_MAX];

    if (!h->have_key) {
        CHECK(strcmp(mac, "-") == 0);
        return;
    }
    CHECK(buddy_mac_message(type, a, b, msg, sizeof(msg)) > 0);
    CHECK(buddy_mac_verify(h->key, msg, mac));
}

static void
fw_write(const char *line, size_t len, void *arg)
{
    struct fw_harness *h = arg;
    struct buddy_msg m;

    CHECK(len >= 2 && len <= BUDDY_LINE_MAX && line[len - 1] == '\n');
    CHECK(buddy_parse_line(line, len - 1, &m) == BUDDY_PARSE_OK);
    switch (m.type) {
    case BUDDY_MSG_HELLO_REPLY:
        fw_expect_mac(h, m.type, m.devid, h->hello_nonce, m.mac);
        break;
    case BUDDY_MSG_APPROVE:
    case BUDDY_MSG_DENY:
        CHECK(strcmp(m.id, h->shown_id) == 0);
        fw_expect_mac(h, m.type, m.id, h->shown_nonce, m.mac);
        break;
    case BUDDY_MSG_PONG:
    case BUDDY_MSG_ERR:
        break;
    default:
        abort(); /* the device never speaks the host's part */
    }
}

static int
fw_store_key(const uint8_t key[BUDDY_KEY_LEN], void *arg)
{
    struct fw_harness *h = arg;

    memcpy(h->key, key, BUDDY_KEY_LEN);
    h->have_key = 1;
    return 0;
}

/* '*' at the start of a line: a short press after it; '/': a long one. */
static void
fw_press(struct fw_harness *h, uint32_t *now, uint32_t hold_ms)
{
    uint32_t t;

    for (t = 0; t <= hold_ms + 100; t += 50)
        buddy_fw_tick(&h->fw, *now + t, t < hold_ms);
    *now += hold_ms + 200;
    buddy_fw_tick(&h->fw, *now, 0);
}

static void
run_firmware(const char *data, size_t size, int with_key, int pairing)
{
    struct fw_harness h;
    struct buddy_fw_config cfg;
    struct buddy_msg m;
    size_t start, end, i;
    uint32_t now = 1000;

    memset(&h, 0, sizeof(h));
    memcpy(h.key, test_key, sizeof(h.key));
    h.have_key = with_key;
    memset(&cfg, 0, sizeof(cfg));
    cfg.devid = "FUZZ1";
    cfg.key = with_key ? test_key : NULL;
    cfg.pairing = pairing;
    cfg.write = fw_write;
    cfg.store_key = fw_store_key;
    cfg.arg = &h;
    buddy_fw_init(&h.fw, &cfg);
    buddy_fw_tick(&h.fw, now, 0);
    for (start = 0; start < size; start = end + 1) {
        for (end = start; end < size && data[end] != '\n'; end++)
            ;
        /* What the device will make of this line, to check its answers against. */
        if (end < size && buddy_parse_line(data + start, end - start, &m) == BUDDY_PARSE_OK) {
            if (m.type == BUDDY_MSG_HELLO)
                strcpy(h.hello_nonce, m.nonce);
            else if (m.type == BUDDY_MSG_SHOW) {
                strcpy(h.shown_id, m.id);
                strcpy(h.shown_nonce, m.nonce);
            }
        }
        for (i = start; i <= end && i < size; i++)
            buddy_fw_feed_byte(&h.fw, (uint8_t)data[i]);
        buddy_fw_tick(&h.fw, now += 10, 0);
        if (end > start && data[start] == '*')
            fw_press(&h, &now, 100);
        else if (end > start && data[start] == '/')
            fw_press(&h, &now, BUDDY_FW_LONG_PRESS_MS + 100);
        CHECK(buddy_fw_led(&h.fw) <= BUDDY_LED_FAST_BLINK);
    }
    buddy_fw_clear(&h.fw);
}

/* ---- the daemon's link against a scripted device ---- */

struct old_nonce {
    char id[BUDDY_ID_LEN + 1];
    char nonce[BUDDY_NONCE_LEN + 1];
};

struct dev {
    struct event_base *base;
    struct buddy_link *link;
    int fd; /* the device's end; -1 after unplug */
    int auth_hmac;
    int take; /* the daemon removes an item once decided */
    char hnonce[BUDDY_NONCE_LEN + 1];
    int hnonce_fresh;
    int shown, shown_used;
    char shown_id[BUDDY_ID_LEN + 1], shown_nonce[BUDDY_NONCE_LEN + 1];
    struct old_nonce hist[HISTORY];
    size_t nhist;
    char rx[4096];
    size_t rxlen;
    /* the decision the harness is entitled to, and what arrived */
    int expect, expect_approve;
    int decided;
};

static void
mac_for(const struct dev *d, enum buddy_type type, const char *a, const char *b,
        char mac[BUDDY_MAC_LEN + 1])
{
    char msg[BUDDY_LINE_MAX];

    if (!d->auth_hmac || buddy_mac_message(type, a, b, msg, sizeof(msg)) < 0) {
        strcpy(mac, "-");
        return;
    }
    buddy_mac(test_key, msg, mac);
}

static void
on_decision(const char *id, int approve, const char *devid, void *arg)
{
    struct dev *d = arg;

    /* With auth none any line naming the item on show decides it; with hmac only ours. */
    CHECK(!d->decided && d->shown && !d->shown_used && strcmp(id, d->shown_id) == 0);
    if (d->auth_hmac)
        CHECK(d->expect && approve == d->expect_approve);
    CHECK(devid != NULL && buddy_valid_devid(devid));
    d->decided = 1;
    d->shown_used = 1;
    if (d->take)
        buddy_link_item_removed(d->link, id);
}

/* A line the daemon sent: it must parse, and it updates what the device knows. */
static void
host_line(struct dev *d, const char *line, size_t len)
{
    struct buddy_msg m;

    if (len == 0)
        return; /* the resynchronising empty line before HELLO */
    CHECK(buddy_parse_line(line, len, &m) == BUDDY_PARSE_OK);
    switch (m.type) {
    case BUDDY_MSG_HELLO:
        strcpy(d->hnonce, m.nonce);
        d->hnonce_fresh = 1;
        break;
    case BUDDY_MSG_SHOW:
        d->shown = 1;
        d->shown_used = 0;
        strcpy(d->shown_id, m.id);
        strcpy(d->shown_nonce, m.nonce);
        strcpy(d->hist[d->nhist % HISTORY].id, m.id);
        strcpy(d->hist[d->nhist % HISTORY].nonce, m.nonce);
        d->nhist++;
        break;
    case BUDDY_MSG_CLEAR:
        if (d->shown && strcmp(d->shown_id, m.id) == 0)
            d->shown = 0;
        break;
    case BUDDY_MSG_PING:
        break;
    default:
        abort(); /* the daemon never speaks the device's part */
    }
}

/* Lets the link read everything written so far, then reads what it answered. */
static void
pump(struct dev *d)
{
    int i, unread = 0;
    ssize_t n;
    size_t s, e;

    for (i = 0; i < 32; i++) {
        event_base_loop(d->base, EVLOOP_NONBLOCK);
        if (d->fd < 0 || ioctl(d->fd, SIOCOUTQ, &unread) == -1 || unread == 0)
            break;
    }
    if (d->fd < 0)
        return;
    for (;;) {
        n = recv(d->fd, d->rx + d->rxlen, sizeof(d->rx) - d->rxlen, MSG_DONTWAIT);
        if (n <= 0)
            break;
        d->rxlen += (size_t)n;
        for (s = 0, e = 0; e < d->rxlen; e++) {
            if (d->rx[e] != '\n')
                continue;
            host_line(d, d->rx + s, e - s);
            s = e + 1;
        }
        memmove(d->rx, d->rx + s, d->rxlen - s);
        d->rxlen -= s;
        CHECK(d->rxlen < BUDDY_LINE_MAX); /* no host line is longer */
    }
    if (buddy_link_connected(d->link))
        d->hnonce_fresh = 0; /* a connected link has spent its challenge */
}

static void
dev_send(struct dev *d, const char *line, size_t len)
{
    if (d->fd < 0)
        return;
    /* Small writes on an emptied socket are never short; failing means the link hung up
     * (only its own timers do that, e.g. on a very slow run). */
    if (send(d->fd, line, len, MSG_NOSIGNAL) != (ssize_t)len ||
        send(d->fd, "\n", 1, MSG_NOSIGNAL) != 1) {
        close(d->fd);
        d->fd = -1;
        return;
    }
    pump(d);
}

/* A decision for (id, nonce): the callback must fire iff that is the fresh item on show. */
static void
dev_decide(struct dev *d, int approve, const char *id, const char *nonce)
{
    enum buddy_type type = approve ? BUDDY_MSG_APPROVE : BUDDY_MSG_DENY;
    char line[BUDDY_LINE_MAX], mac[BUDDY_MAC_LEN + 1];
    int n, fresh;

    fresh = d->fd >= 0 && buddy_link_connected(d->link) && d->shown && !d->shown_used &&
            strcmp(id, d->shown_id) == 0 && (!d->auth_hmac || strcmp(nonce, d->shown_nonce) == 0);
    mac_for(d, type, id, nonce, mac);
    n = snprintf(line, sizeof(line), "%s %s %s", approve ? "APPROVE" : "DENY", id, mac);
    d->expect = fresh;
    d->expect_approve = approve;
    d->decided = 0;
    dev_send(d, line, (size_t)n);
    CHECK(d->decided == fresh || d->fd < 0);
    d->expect = 0;
}

static void
dev_hello(struct dev *d, const char *devid, size_t len, int right_nonce)
{
    char id[BUDDY_DEVID_MAX + 1], line[BUDDY_LINE_MAX], mac[BUDDY_MAC_LEN + 1];
    int was = buddy_link_connected(d->link), n, valid, accept;

    if (len > BUDDY_DEVID_MAX)
        len = BUDDY_DEVID_MAX;
    memcpy(id, devid, len);
    id[len] = '\0';
    valid = len > 0 && strlen(id) == len && buddy_valid_devid(id);
    if (!valid)
        strcpy(id, "FUZZ");
    mac_for(d, BUDDY_MSG_HELLO_REPLY, id, right_nonce ? d->hnonce : "0123456789abcdef", mac);
    n = snprintf(line, sizeof(line), "HELLO 1 %s %s", id, mac);
    /* Unless the harness answers the live challenge, nothing changes (replayed HELLO). */
    accept = d->fd >= 0 && d->hnonce_fresh && !was && (right_nonce || !d->auth_hmac);
    dev_send(d, line, (size_t)n);
    if (d->fd < 0)
        return;
    CHECK(buddy_link_connected(d->link) == (was || accept));
    if (accept)
        CHECK(strcmp(buddy_link_devid(d->link), id) == 0);
}

static void
dev_script_line(struct dev *d, const char *s, size_t len)
{
    char id[BUDDY_ID_LEN + 1], text[BUDDY_LINE_MAX];
    size_t k;
    int was;

    switch (len > 0 ? s[0] : 0) {
    case '!':
    case '?':
        dev_hello(d, s + 1, len - 1, s[0] == '!');
        return;
    case '+':
    case '-':
        if (d->shown)
            dev_decide(d, s[0] == '+', d->shown_id, d->shown_nonce);
        return;
    case '<':
        if (d->nhist > 0) {
            k = (len > 1 ? (unsigned char)s[1] : 0) % (d->nhist < HISTORY ? d->nhist : HISTORY);
            dev_decide(d, (len > 2 ? s[2] : 0) != 'D', d->hist[k].id, d->hist[k].nonce);
        }
        return;
    case '&':
    case '~':
        k = len - 1 < BUDDY_ID_LEN ? len - 1 : BUDDY_ID_LEN;
        memcpy(id, s + 1, k);
        id[k] = '\0';
        if (s[0] == '~') {
            buddy_link_item_removed(d->link, k > 0 ? id : (d->shown ? d->shown_id : ""));
        } else {
            k = len > 8 ? len - 8 : 0;
            if (k >= sizeof(text))
                k = sizeof(text) - 1;
            memcpy(text, s + 8, k);
            text[k] = '\0';
            buddy_link_item_added(d->link, id, text);
        }
        pump(d);
        return;
    case '%':
        d->take = !d->take;
        return;
    case '#':
        if (d->fd >= 0) {
            close(d->fd);
            d->fd = -1;
            event_base_loop(d->base, EVLOOP_NONBLOCK);
            event_base_loop(d->base, EVLOOP_NONBLOCK);
            CHECK(!buddy_link_connected(d->link));
        }
        return;
    default:
        /* Raw bytes from the wire: without the key they can never decide or connect. */
        was = buddy_link_connected(d->link);
        d->expect = 0;
        d->decided = 0;
        dev_send(d, s, len);
        CHECK(buddy_link_connected(d->link) == was || !d->auth_hmac || d->fd < 0);
        return;
    }
}

static void
run_link(const char *data, size_t size, int auth_hmac)
{
    struct buddy_link_config cfg = {"fuzz-tty", 115200, auth_hmac};
    struct buddy_link_stats st;
    struct secbuf *key;
    struct err err;
    struct dev d;
    size_t start, end, lines = 0;
    int sv[2];

    memset(&d, 0, sizeof(d));
    d.auth_hmac = auth_hmac;
    d.take = 1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1)
        abort();
    serial_fd = sv[0];
    d.fd = sv[1];
    CHECK((d.base = event_base_new()) != NULL);
    CHECK((key = secbuf_new(BUDDY_KEY_LEN)) != NULL);
    CHECK(secbuf_append(key, test_key, sizeof(test_key)) == 0);
    d.link = buddy_link_new(d.base, &cfg, key, on_decision, &d, &err);
    CHECK(d.link != NULL && serial_fd == -1);
    pump(&d);
    CHECK(d.hnonce_fresh); /* it opened the port and challenged the device */
    for (start = 0; start < size && lines++ < MAX_LINES; start = end + 1) {
        for (end = start; end < size && data[end] != '\n'; end++)
            ;
        dev_script_line(&d, data + start, end - start);
    }
    buddy_link_stats(d.link, &st);
    buddy_link_free(d.link);
    secbuf_free(key);
    event_base_free(d.base);
    if (d.fd >= 0)
        close(d.fd);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    size_t start, end;

    if (size > 8192)
        return 0;
    for (start = 0; start < size; start = end + 1) {
        for (end = start; end < size && buf[end] != '\n'; end++)
            ;
        check_parse(buf + start, end - start);
    }
    /* The mode comes from the input's length so every byte stays free for the script. */
    run_firmware(buf, size, size % 3 != 0, size % 5 == 0);
    run_link(buf, size, size % 7 != 0);
    return 0;
}
