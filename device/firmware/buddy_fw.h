/*
 * The buddy device's state machine, portable C with no OS calls: bytes from the host go
 * in through buddy_fw_feed_byte(), the button is sampled by buddy_fw_tick(), lines to the
 * host and key storage go out through callbacks. The Arduino sketch and the simulator
 * (cmd/airlock-buddy-sim.c) are thin shells around it, so both run the same logic.
 */
#ifndef AIRLOCK_BUDDY_FW_H
#define AIRLOCK_BUDDY_FW_H

#include <stddef.h>
#include <stdint.h>

#include "buddy_proto.h"

#ifdef __cplusplus
extern "C" { /* the Arduino sketch is C++ */
#endif

#define BUDDY_FW_DEBOUNCE_MS 30
#define BUDDY_FW_LONG_PRESS_MS 1500   /* held this long: DENY (fires while still held) */
#define BUDDY_FW_PAIRING_HOLD_MS 3000 /* held this long from power-on: pairing mode */
#define BUDDY_FW_HOST_TIMEOUT_MS 15000 /* no line from the host (it PINGs every 5 s) */

enum buddy_led {
    BUDDY_LED_OFF,        /* no host */
    BUDDY_LED_ON,         /* host connected, nothing to decide */
    BUDDY_LED_BLINK,      /* an item is shown: press to approve, hold to deny */
    BUDDY_LED_FAST_BLINK, /* pairing mode */
};

enum buddy_fw_event {
    BUDDY_FW_EV_HELLO,     /* host said HELLO (text: devid) */
    BUDDY_FW_EV_SHOWN,     /* id, text */
    BUDDY_FW_EV_CLEARED,   /* id */
    BUDDY_FW_EV_APPROVED,  /* id: APPROVE sent */
    BUDDY_FW_EV_DENIED,    /* id: DENY sent */
    BUDDY_FW_EV_PAIRING,   /* entered pairing mode */
    BUDDY_FW_EV_PAIRED,    /* new key stored */
    BUDDY_FW_EV_ERROR,     /* text: the reason sent in ERR */
    BUDDY_FW_EV_HOST_LOST, /* no host line for BUDDY_FW_HOST_TIMEOUT_MS */
};

/* One complete line including '\n'. */
typedef void (*buddy_fw_write_cb)(const char *line, size_t len, void *arg);
/* Persist a new pair key (EEPROM, a file); 0 ok, -1 failed (the old key stays). */
typedef int (*buddy_fw_store_key_cb)(const uint8_t key[BUDDY_KEY_LEN], void *arg);
/* For displays and logs; id and text may be NULL. Optional. */
typedef void (*buddy_fw_event_cb)(enum buddy_fw_event ev, const char *id, const char *text,
    void *arg);

struct buddy_fw_config {
    const char *devid;    /* [A-Z0-9]{1,16}; invalid → "BUDDY" */
    const uint8_t *key;   /* BUDDY_KEY_LEN bytes, or NULL: unpaired, macs are "-" */
    int pairing;          /* start in pairing mode (else: hold the button at power-on) */
    buddy_fw_write_cb write;
    buddy_fw_store_key_cb store_key;
    buddy_fw_event_cb event;
    void *arg;
};

/* Embedded in the caller (no heap); fields are private. */
struct buddy_fw {
    struct buddy_fw_config cfg;
    char devid[BUDDY_DEVID_MAX + 1];
    uint8_t key[BUDDY_KEY_LEN];
    int have_key, pairing, connected;
    /* host line assembly */
    char line[BUDDY_LINE_MAX];
    size_t len;
    int discarding, rx_seen;
    uint32_t last_rx_ms;
    /* the item on show */
    int showing;
    char shown_id[BUDDY_ID_LEN + 1];
    char shown_nonce[BUDDY_NONCE_LEN + 1];
    /* button */
    int started, raw, stable, consumed, boot_hold;
    uint32_t raw_since_ms, press_start_ms;
};

void buddy_fw_init(struct buddy_fw *fw, const struct buddy_fw_config *cfg);
/* Wipes the key copy. */
void buddy_fw_clear(struct buddy_fw *fw);
void buddy_fw_feed_byte(struct buddy_fw *fw, uint8_t b);
/* Call every few ms with a monotonic clock (wraps safely) and the raw button level. */
void buddy_fw_tick(struct buddy_fw *fw, uint32_t now_ms, int button_down);

enum buddy_led buddy_fw_led(const struct buddy_fw *fw);
/* 1 when the LED should be lit at now_ms (blinks at 1 Hz, fast blink at 5 Hz). */
int buddy_fw_led_level(const struct buddy_fw *fw, uint32_t now_ms);
/* The id on show, or NULL. */
const char *buddy_fw_shown_id(const struct buddy_fw *fw);
int buddy_fw_pairing(const struct buddy_fw *fw);

#ifdef __cplusplus
}
#endif

#endif
