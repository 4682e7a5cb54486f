/*
 * Buddy device state machine: assembles host lines (bounded, discard-until-newline when
 * too long), answers them, and turns debounced button presses into MAC'd APPROVE/DENY
 * lines for the item on show. Short press approves, a 1.5 s hold denies, a 3 s hold from
 * power-on enters pairing mode, the only state in which PAIR may replace the key.
 */
#include "buddy_fw.h"

#include <string.h>

#include "sha256.h"

static void
wipe(void *p, size_t n)
{
    volatile uint8_t *v = p;

    while (n-- > 0)
        *v++ = 0;
}

static void
emit(struct buddy_fw *fw, enum buddy_fw_event ev, const char *id, const char *text)
{
    if (fw->cfg.event != NULL)
        fw->cfg.event(ev, id, text, fw->cfg.arg);
}

static void
send_msg(struct buddy_fw *fw, const struct buddy_msg *m)
{
    char line[BUDDY_LINE_MAX + 1];
    int n = buddy_format_line(m, line, sizeof(line));

    if (n > 0 && fw->cfg.write != NULL)
        fw->cfg.write(line, (size_t)n, fw->cfg.arg);
}

static void
send_err(struct buddy_fw *fw, const char *reason)
{
    struct buddy_msg m;

    memset(&m, 0, sizeof(m));
    m.type = BUDDY_MSG_ERR;
    strncpy(m.reason, reason, sizeof(m.reason) - 1);
    send_msg(fw, &m);
    emit(fw, BUDDY_FW_EV_ERROR, NULL, reason);
}

/* mac over "TYPE|a|b" with the pair key, or "-" while unpaired. */
static void
make_mac(struct buddy_fw *fw, enum buddy_type type, const char *a, const char *b,
    char out[BUDDY_MAC_LEN + 1])
{
    char msg[BUDDY_LINE_MAX];
    uint8_t digest[BUDDY_SHA256_LEN];
    int n;

    n = buddy_mac_message(type, a, b, msg, sizeof(msg));
    if (!fw->have_key || n < 0) {
        strcpy(out, "-");
        return;
    }
    buddy_hmac_sha256(fw->key, sizeof(fw->key), msg, (size_t)n, digest);
    buddy_hex_encode(digest, BUDDY_MAC_LEN / 2, out);
    wipe(digest, sizeof(digest));
}

void
buddy_fw_init(struct buddy_fw *fw, const struct buddy_fw_config *cfg)
{
    memset(fw, 0, sizeof(*fw));
    fw->cfg = *cfg;
    fw->cfg.key = NULL; /* the copy below is the only one kept */
    if (cfg->devid != NULL && buddy_valid_devid(cfg->devid))
        strcpy(fw->devid, cfg->devid);
    else
        strcpy(fw->devid, "BUDDY");
    if (cfg->key != NULL) {
        memcpy(fw->key, cfg->key, sizeof(fw->key));
        fw->have_key = 1;
    }
    fw->pairing = cfg->pairing != 0;
}

void
buddy_fw_clear(struct buddy_fw *fw)
{
    wipe(fw->key, sizeof(fw->key));
    fw->have_key = 0;
}

static void
on_hello(struct buddy_fw *fw, const struct buddy_msg *in)
{
    struct buddy_msg m;

    memset(&m, 0, sizeof(m));
    m.type = BUDDY_MSG_HELLO_REPLY;
    strcpy(m.devid, fw->devid);
    make_mac(fw, BUDDY_MSG_HELLO_REPLY, fw->devid, in->nonce, m.mac);
    /* A new session: whatever was on show belongs to the old one; the host SHOWs again. */
    fw->showing = 0;
    fw->connected = 1;
    send_msg(fw, &m);
    emit(fw, BUDDY_FW_EV_HELLO, NULL, fw->devid);
}

static void
on_pair(struct buddy_fw *fw, const struct buddy_msg *in)
{
    uint8_t key[BUDDY_KEY_LEN];

    if (!fw->pairing) {
        send_err(fw, "not-pairing");
        return;
    }
    if (buddy_hex_decode(in->key_hex, key, sizeof(key)) < 0 ||
        (fw->cfg.store_key != NULL && fw->cfg.store_key(key, fw->cfg.arg) < 0)) {
        wipe(key, sizeof(key));
        send_err(fw, "store-failed");
        return;
    }
    memcpy(fw->key, key, sizeof(fw->key));
    wipe(key, sizeof(key));
    fw->have_key = 1;
    fw->pairing = 0;
    emit(fw, BUDDY_FW_EV_PAIRED, NULL, NULL);
}

static void
on_message(struct buddy_fw *fw, const struct buddy_msg *m)
{
    struct buddy_msg reply;

    switch (m->type) {
    case BUDDY_MSG_HELLO:
        on_hello(fw, m);
        break;
    case BUDDY_MSG_SHOW:
        strcpy(fw->shown_id, m->id);
        strcpy(fw->shown_nonce, m->nonce);
        fw->showing = 1;
        emit(fw, BUDDY_FW_EV_SHOWN, m->id, m->text);
        break;
    case BUDDY_MSG_CLEAR:
        if (fw->showing && strcmp(fw->shown_id, m->id) == 0)
            fw->showing = 0;
        emit(fw, BUDDY_FW_EV_CLEARED, m->id, NULL);
        break;
    case BUDDY_MSG_PING:
        memset(&reply, 0, sizeof(reply));
        reply.type = BUDDY_MSG_PONG;
        send_msg(fw, &reply);
        break;
    case BUDDY_MSG_PAIR:
        on_pair(fw, m);
        break;
    case BUDDY_MSG_ERR:
        break; /* never answer an ERR with an ERR: two confused ends would loop */
    default:
        send_err(fw, "unknown-command"); /* a device-to-host message sent to us */
    }
}

static void
handle_line(struct buddy_fw *fw)
{
    struct buddy_msg m;
    enum buddy_parse_result r;

    /* An empty line is how a host resynchronises a half-received line: not an error. */
    if (fw->len == 0)
        return;
    r = buddy_parse_line(fw->line, fw->len, &m);
    if (r == BUDDY_PARSE_OK)
        on_message(fw, &m);
    else if (r == BUDDY_PARSE_UNKNOWN)
        send_err(fw, "unknown-command");
    else if (r == BUDDY_PARSE_TOO_LONG)
        send_err(fw, "too-long");
    else
        send_err(fw, "malformed");
}

void
buddy_fw_feed_byte(struct buddy_fw *fw, uint8_t b)
{
    fw->rx_seen = 1;
    if (b == '\n') {
        if (fw->discarding)
            send_err(fw, "too-long");
        else
            handle_line(fw);
        fw->len = 0;
        fw->discarding = 0;
        return;
    }
    if (fw->discarding)
        return;
    if (fw->len >= BUDDY_LINE_MAX - 1) {
        fw->discarding = 1; /* the '\n' would make it 201 bytes or more */
        return;
    }
    fw->line[fw->len++] = (char)b;
}

/* The debounced press became a decision: APPROVE or DENY the item on show, once. */
static void
decide(struct buddy_fw *fw, int approve)
{
    struct buddy_msg m;
    enum buddy_type type = approve ? BUDDY_MSG_APPROVE : BUDDY_MSG_DENY;

    if (!fw->showing)
        return;
    memset(&m, 0, sizeof(m));
    m.type = type;
    strcpy(m.id, fw->shown_id);
    make_mac(fw, type, fw->shown_id, fw->shown_nonce, m.mac);
    fw->showing = 0; /* one press, one decision: a nonce is good for one line anyway */
    send_msg(fw, &m);
    emit(fw, approve ? BUDDY_FW_EV_APPROVED : BUDDY_FW_EV_DENIED, m.id, NULL);
}

/* Debounced level changes; times are taken from when the raw level first changed. */
static void
button_edge(struct buddy_fw *fw)
{
    if (fw->stable) {
        fw->press_start_ms = fw->raw_since_ms;
        fw->consumed = 0;
        return;
    }
    if (!fw->consumed &&
        (uint32_t)(fw->raw_since_ms - fw->press_start_ms) < BUDDY_FW_LONG_PRESS_MS)
        decide(fw, 1);
    fw->consumed = 1;
    fw->boot_hold = 0;
}

static void
button_held(struct buddy_fw *fw, uint32_t now_ms)
{
    uint32_t held = now_ms - fw->press_start_ms;

    if (fw->boot_hold && held >= BUDDY_FW_PAIRING_HOLD_MS) {
        fw->boot_hold = 0;
        fw->pairing = 1;
        emit(fw, BUDDY_FW_EV_PAIRING, NULL, NULL);
    } else if (!fw->consumed && held >= BUDDY_FW_LONG_PRESS_MS) {
        fw->consumed = 1;
        decide(fw, 0);
    }
}

void
buddy_fw_tick(struct buddy_fw *fw, uint32_t now_ms, int button_down)
{
    button_down = button_down != 0;
    if (!fw->started) {
        /* Power-on: a button already down is the pairing gesture, never a decision. */
        fw->started = 1;
        fw->raw = fw->stable = button_down;
        fw->raw_since_ms = fw->press_start_ms = fw->last_rx_ms = now_ms;
        fw->consumed = 1;
        fw->boot_hold = button_down;
    }
    if (fw->rx_seen) {
        fw->rx_seen = 0;
        fw->last_rx_ms = now_ms;
    }
    if (fw->connected && now_ms - fw->last_rx_ms >= BUDDY_FW_HOST_TIMEOUT_MS) {
        fw->connected = 0;
        fw->showing = 0;
        emit(fw, BUDDY_FW_EV_HOST_LOST, NULL, NULL);
    }
    if (button_down != fw->raw) {
        fw->raw = button_down;
        fw->raw_since_ms = now_ms;
    }
    if (fw->raw != fw->stable && now_ms - fw->raw_since_ms >= BUDDY_FW_DEBOUNCE_MS) {
        fw->stable = fw->raw;
        button_edge(fw);
    }
    if (fw->stable)
        button_held(fw, now_ms);
}

enum buddy_led
buddy_fw_led(const struct buddy_fw *fw)
{
    if (fw->pairing)
        return BUDDY_LED_FAST_BLINK;
    if (fw->showing)
        return BUDDY_LED_BLINK;
    return fw->connected ? BUDDY_LED_ON : BUDDY_LED_OFF;
}

int
buddy_fw_led_level(const struct buddy_fw *fw, uint32_t now_ms)
{
    switch (buddy_fw_led(fw)) {
    case BUDDY_LED_ON:
        return 1;
    case BUDDY_LED_BLINK:
        return (now_ms / 500) % 2 == 0;
    case BUDDY_LED_FAST_BLINK:
        return (now_ms / 100) % 2 == 0;
    default:
        return 0;
    }
}

const char *
buddy_fw_shown_id(const struct buddy_fw *fw)
{
    return fw->showing ? fw->shown_id : NULL;
}

int
buddy_fw_pairing(const struct buddy_fw *fw)
{
    return fw->pairing;
}
