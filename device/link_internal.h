/*
 * Private to device/: the buddy link's state, shared by link.c (the port: open, poll,
 * HELLO handshake, read/write, timers) and link_decide.c (the items queue: which item is
 * on show under which nonce, and whether an APPROVE/DENY line may decide it).
 */
#ifndef AIRLOCK_DEVICE_LINK_INTERNAL_H
#define AIRLOCK_DEVICE_LINK_INTERNAL_H

#include <limits.h>
#include <stdint.h>
#include <sys/queue.h>

#include "device/buddy.h"
#include "device/buddy_internal.h"

struct event;
struct evbuffer;

#define RETIRED_MAX 64      /* nonces remembered to tell replays from forgeries */

struct item {
    TAILQ_ENTRY(item) entry;
    char id[BUDDY_ID_LEN + 1];
    char text[BUDDY_TEXT_MAX + 1];
};

enum link_state { LINK_CLOSED, LINK_HELLO, LINK_READY };

struct retired {
    char id[BUDDY_ID_LEN + 1];
    char nonce[BUDDY_NONCE_LEN + 1];
};

struct buddy_link {
    struct event_base *base;
    char *path;
    unsigned baud;
    int auth_hmac;
    struct secbuf *key;
    buddy_decision_cb cb;
    void *arg;

    int fd;
    char open_path[PATH_MAX];
    struct event *ev_read, *ev_write, *ev_timer;
    struct evbuffer *out;
    enum link_state state;
    int absent_logged;
    char absent_why[256]; /* why the last open failed, for buddy_link_status */
    /* One line per state change, not per attempt: a device that keeps answering HELLO
     * with a wrong mac, or a port that opens and drops before any handshake, is logged
     * once until a handshake verifies. */
    int bad_hello_logged, quiet_reopen;
    char hnonce[BUDDY_NONCE_LEN + 1];
    uint64_t hello_us, ping_us, pong_us;
    char devid[BUDDY_DEVID_MAX + 1];
    struct buddy_linebuf lb;

    TAILQ_HEAD(, item) items;
    size_t nitems;
    int shown, shown_used;
    char shown_id[BUDDY_ID_LEN + 1];
    char shown_nonce[BUDDY_NONCE_LEN + 1];
    struct retired retired[RETIRED_MAX];
    size_t retired_next;

    struct buddy_link_stats stats;
};

/* link.c */
void link_send_msg(struct buddy_link *l, const struct buddy_msg *m);
void link_random_nonce(char out[BUDDY_NONCE_LEN + 1]);
/* 1 when mac is right for (type, a, b): always with auth none. */
int link_mac_ok(const struct buddy_link *l, enum buddy_type type, const char *a,
    const char *b, const char *mac);

/* link_decide.c */
/* Sends SHOW for the oldest item when the link is ready and nothing is on show. */
void link_show_next(struct buddy_link *l);
/* Forgets the item on show; its nonce, if unused, is remembered as retired. */
void link_retire_shown(struct buddy_link *l);
/* An APPROVE or DENY line: decides the item on show, or is counted and logged. */
void link_on_decision(struct buddy_link *l, const struct buddy_msg *m);

#endif
