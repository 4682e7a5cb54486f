/*
 * Private to device/: the bounded line assembler shared by the event-driven link and the
 * blocking pairing exchange. A line longer than the protocol allows is discarded up to
 * its newline, so one bad line never desynchronises the next.
 */
#ifndef AIRLOCK_DEVICE_BUDDY_INTERNAL_H
#define AIRLOCK_DEVICE_BUDDY_INTERNAL_H

#include <stddef.h>

#include "device/firmware/buddy_proto.h"

struct buddy_linebuf {
    char buf[BUDDY_LINE_MAX];
    size_t len;
    int discarding;
};

enum { BUDDY_LB_MORE = 0, BUDDY_LB_LINE = 1, BUDDY_LB_OVERLONG = 2, BUDDY_LB_DONE_OVERLONG = 3 };

/*
 * Feeds one byte. LINE: buf[0..len) holds a complete line (without '\n'); the caller must
 * consume it and set len to 0 before the next call. OVERLONG: this byte made the line too long (reported
 * once per line). DONE_OVERLONG: the newline ending a discarded line.
 */
static inline int
buddy_linebuf_feed(struct buddy_linebuf *lb, unsigned char b)
{
    if (b == '\n') {
        int was = lb->discarding;
        lb->discarding = 0;
        if (was) {
            lb->len = 0;
            return BUDDY_LB_DONE_OVERLONG;
        }
        return BUDDY_LB_LINE;
    }
    if (lb->discarding)
        return BUDDY_LB_MORE;
    if (lb->len >= BUDDY_LINE_MAX - 1) {
        lb->discarding = 1;
        lb->len = 0;
        return BUDDY_LB_OVERLONG;
    }
    lb->buf[lb->len++] = (char)b;
    return BUDDY_LB_MORE;
}

#endif
