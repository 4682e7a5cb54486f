/*
 * The buddy link's items queue: the device shows the oldest pending item under a fresh
 * nonce, and an APPROVE/DENY line decides it only when id, nonce and mac all check out.
 * Used and superseded nonces are remembered so a late copy is counted as a replay, not
 * a forgery. The port and the HELLO handshake are in link.c.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "device/link_internal.h"

/* Remembers the shown nonce (used or superseded) so a late copy is called a replay. */
void
link_retire_shown(struct buddy_link *l)
{
    struct retired *r;

    if (!l->shown)
        return;
    if (!l->shown_used) {
        r = &l->retired[l->retired_next++ % RETIRED_MAX];
        strcpy(r->id, l->shown_id);
        strcpy(r->nonce, l->shown_nonce);
    }
    l->shown = 0;
    l->shown_used = 0;
}

void
link_show_next(struct buddy_link *l)
{
    struct item *it = TAILQ_FIRST(&l->items);
    struct buddy_msg m;

    if (l->state != LINK_READY || l->shown || it == NULL)
        return;
    memset(&m, 0, sizeof(m));
    m.type = BUDDY_MSG_SHOW;
    strcpy(m.id, it->id);
    link_random_nonce(m.nonce);
    strcpy(m.text, it->text);
    strcpy(l->shown_id, it->id);
    strcpy(l->shown_nonce, m.nonce);
    l->shown = 1;
    l->shown_used = 0;
    log_debug("buddy: showing %s", it->id);
    link_send_msg(l, &m);
}

/* A decision line whose mac matches an already used or superseded nonce of that id. */
static int
is_replay(const struct buddy_link *l, const struct buddy_msg *m)
{
    size_t i;

    for (i = 0; i < RETIRED_MAX; i++) {
        const struct retired *r = &l->retired[i];
        if (r->id[0] != '\0' && strcmp(r->id, m->id) == 0 &&
            link_mac_ok(l, m->type, r->id, r->nonce, m->mac))
            return 1;
    }
    return 0;
}

/* NULL when m may decide the item on show; else the counter to bump and why in *why. */
static uint64_t *
check_decision(struct buddy_link *l, const struct buddy_msg *m, const char **why)
{
    *why = "replayed (nonce already used)";
    if (l->state != LINK_READY) {
        *why = "before the HELLO handshake";
        return &l->stats.unknown_id;
    }
    if (!l->shown || strcmp(m->id, l->shown_id) != 0) {
        if (is_replay(l, m))
            return &l->stats.replayed;
        *why = "not the item on show";
        return &l->stats.unknown_id;
    }
    if (!link_mac_ok(l, m->type, m->id, l->shown_nonce, m->mac)) {
        if (is_replay(l, m))
            return &l->stats.replayed;
        *why = "wrong mac";
        return &l->stats.bad_mac;
    }
    return l->shown_used ? &l->stats.replayed : NULL;
}

void
link_on_decision(struct buddy_link *l, const struct buddy_msg *m)
{
    char id[BUDDY_ID_LEN + 1], devid[BUDDY_DEVID_MAX + 1];
    int approve = m->type == BUDDY_MSG_APPROVE;
    uint64_t *counter;
    const char *why;

    if ((counter = check_decision(l, m, &why)) != NULL) {
        (*counter)++;
        log_warn("buddy: %s: %s %s ignored: %s", l->open_path, approve ? "APPROVE" : "DENY",
            m->id, why);
        return;
    }
    /* Accept once: the nonce is spent before anything else can run. */
    l->shown_used = 1;
    {
        struct retired *r = &l->retired[l->retired_next++ % RETIRED_MAX];
        strcpy(r->id, l->shown_id);
        strcpy(r->nonce, l->shown_nonce);
    }
    strcpy(id, m->id);
    strcpy(devid, l->devid);
    log_info("buddy: device %s %s %s", devid, approve ? "approved" : "denied", id);
    l->cb(id, approve, devid, l->arg);
    /* The daemon did not take the decision (yet): show the item again, fresh nonce. */
    if (l->state == LINK_READY && l->shown && l->shown_used && strcmp(l->shown_id, id) == 0) {
        l->shown = 0;
        l->shown_used = 0;
        link_show_next(l);
    }
}

/* Printable ASCII only, cut to what fits in a SHOW line; never empty. */
static void
sanitise_text(const char *in, char out[BUDDY_TEXT_MAX + 1])
{
    size_t i;

    for (i = 0; in != NULL && in[i] != '\0' && i < BUDDY_TEXT_MAX; i++)
        out[i] = (in[i] >= 0x20 && in[i] <= 0x7e) ? in[i] : '?';
    out[i] = '\0';
    if (i == 0)
        strcpy(out, "-");
}

void
buddy_link_item_added(struct buddy_link *l, const char *id, const char *text)
{
    struct item *it;

    if (id == NULL || !buddy_valid_id(id)) {
        log_warn("buddy: pending item with an invalid id not shown");
        return;
    }
    TAILQ_FOREACH(it, &l->items, entry)
        if (strcmp(it->id, id) == 0)
            return;
    if (l->nitems >= BUDDY_MAX_ITEMS || (it = calloc(1, sizeof(*it))) == NULL) {
        log_warn("buddy: %s not shown on the device: too many pending items", id);
        return;
    }
    strcpy(it->id, id);
    sanitise_text(text, it->text);
    TAILQ_INSERT_TAIL(&l->items, it, entry);
    l->nitems++;
    link_show_next(l);
}

void
buddy_link_item_removed(struct buddy_link *l, const char *id)
{
    struct item *it;
    struct buddy_msg m;

    if (id == NULL)
        return;
    TAILQ_FOREACH(it, &l->items, entry)
        if (strcmp(it->id, id) == 0)
            break;
    if (it == NULL)
        return;
    TAILQ_REMOVE(&l->items, it, entry);
    l->nitems--;
    free(it);
    if (l->shown && strcmp(l->shown_id, id) == 0) {
        link_retire_shown(l);
        memset(&m, 0, sizeof(m));
        m.type = BUDDY_MSG_CLEAR;
        strcpy(m.id, id);
        link_send_msg(l, &m);
        link_show_next(l);
    }
}
