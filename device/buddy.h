/*
 * The buddy device (SPEC §7) as the daemon and CLI see it: the shared line protocol
 * (device/firmware/buddy_proto.h, the same code the firmware runs), HMAC helpers over
 * OpenSSL, a raw serial port opener, and the libevent link that shows pending approvals
 * on the device and turns authenticated button presses into decisions.
 */
#ifndef AIRLOCK_DEVICE_BUDDY_H
#define AIRLOCK_DEVICE_BUDDY_H

#include <stdint.h>

#include "common/err.h"
#include "common/secmem.h"
#include "device/firmware/buddy_proto.h"

struct event_base;

#define BUDDY_POLL_MS 1000        /* reopen attempts while disconnected (hot-plug) */
#define BUDDY_PING_MS 5000
#define BUDDY_PONG_TIMEOUT_MS 10000
#define BUDDY_HELLO_RETRY_MS 3000 /* a new HELLO when the device has not answered */
#define BUDDY_MAX_ITEMS 4096      /* the approvals queue is smaller; this is a backstop */

/* mac = first 32 hex chars of HMAC-SHA256(key, msg). */
void buddy_mac(const unsigned char key[32], const char *msg, char out[BUDDY_MAC_LEN + 1]);
/* 1 when mac_hex is the mac of msg under key (constant time), else 0. */
int buddy_mac_verify(const unsigned char key[32], const char *msg, const char *mac_hex);

/*
 * Opens a tty O_RDWR|O_NOCTTY|O_NONBLOCK, raw 8N1 at baud (CLOCAL|CREAD, no flow control),
 * flushes both directions. Returns the fd or -1 (err says which path and why).
 */
int buddy_serial_open(const char *path, unsigned baud, struct err *err);
/* 1 when baud is one buddy_serial_open() can set (9600 ... 921600). */
int buddy_serial_baud_supported(unsigned baud);
/* "auto": the first entry (by name) of /dev/serial/by-id into out; -1 when none. */
int buddy_serial_auto_path(char *out, size_t cap);

struct buddy_link_config {
    const char *path; /* tty path or "auto" (scan /dev/serial/by-id, first entry) */
    unsigned baud;
    int auth_hmac;    /* 0: auth none, macs are "-" and not checked */
};

/*
 * Called for an authenticated press on the shown item. The daemon then calls
 * buddy_link_item_removed() (from inside the callback or later). If the item is still
 * pending when the callback returns, it is shown again with a fresh nonce. The callback
 * must not free the link.
 */
typedef void (*buddy_decision_cb)(const char *id, int approve, const char *devid, void *arg);

struct buddy_link;

/* key: 32-byte pair key (NULL when auth none); the link keeps its own locked copy. */
struct buddy_link *buddy_link_new(struct event_base *base, const struct buddy_link_config *cfg,
    const struct secbuf *key, buddy_decision_cb cb, void *arg, struct err *err);
void buddy_link_free(struct buddy_link *l); /* NULL is a no-op */

/*
 * The queue's view: the link shows the OLDEST pending item. text, e.g. "POST
 * api.github.com /repos/x (ci-bot)", is sanitised to printable ASCII and cut to fit a line.
 * Only add items the device may decide (approve: device or any).
 */
void buddy_link_item_added(struct buddy_link *l, const char *id, const char *text);
/* Sends CLEAR id if it was shown, then shows the next oldest. Unknown ids are ignored. */
void buddy_link_item_removed(struct buddy_link *l, const char *id);

/* 1 after a HELLO that verified, until unplug. */
int buddy_link_connected(const struct buddy_link *l);
/* The connected device's id, or NULL. */
const char *buddy_link_devid(const struct buddy_link *l);

enum buddy_link_state {
    BUDDY_LINK_ABSENT,    /* no port open; tried again every BUDDY_POLL_MS */
    BUDDY_LINK_HANDSHAKE, /* port open, no HELLO reply has verified yet */
    BUDDY_LINK_CONNECTED  /* a HELLO verified: presses on the shown item decide it */
};

/* What `airlock status` shows of the link; the strings live as long as the link state. */
struct buddy_link_status {
    enum buddy_link_state state;
    const char *path;   /* ABSENT: as configured ("auto" or a tty); else the port open */
    const char *reason; /* ABSENT: why the last open failed ("" before the first try) */
    const char *devid;  /* CONNECTED: the device's id, else NULL */
    int wrong_mac;      /* HANDSHAKE: a HELLO reply failed the mac (paired with another key?) */
};
void buddy_link_status(const struct buddy_link *l, struct buddy_link_status *out);

/* Lines that were ignored, by reason. */
struct buddy_link_stats {
    uint64_t malformed, bad_mac, replayed, unknown_id, overlong;
};
void buddy_link_stats(const struct buddy_link *l, struct buddy_link_stats *out);

/*
 * Pairing: sends PAIR <key-hex> (the device must be in pairing mode) and waits up to
 * timeout_ms for a HELLO reply that verifies with the new key. Blocking, no event loop;
 * used by `airlock buddy pair`. The daemon must not have the device open meanwhile.
 */
int buddy_pair_blocking(const char *tty_path, unsigned baud, const unsigned char key[32],
    char devid_out[17], int timeout_ms, struct err *err);

#endif
