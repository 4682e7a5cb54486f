/*
 * Pending queue: a bounded list of held requests, oldest first, each with a deadline timer.
 * Every way out of the queue (decision, deadline, cancel, shutdown) goes through resolve(),
 * which unlinks the item before calling anyone, so callbacks may safely re-enter the queue.
 */
#include "approvals/approvals.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/util.h"

/* Crockford base32 without I, L, O, U: unambiguous when read off a small display. */
static const char id_alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

struct item {
    struct approval_info info;
    approvals_done_cb done;
    void *arg;
    struct event *timer;
    struct approvals *q;
    struct item *prev, *next;
    int announcing; /* observers are being told it is pending: keep it allocated */
    int resolved;   /* out of the queue; freed once announcing ends */
};

struct observer {
    approvals_event_cb cb;
    void *arg;
};

struct approvals {
    struct event_base *base;
    uint32_t max_pending;
    uint64_t timeout_ms;
    struct item *head, *tail;
    size_t count;
    int shut;
    struct observer observers[APPROVALS_MAX_OBSERVERS];
};

struct approvals *
approvals_new(struct event_base *base, uint32_t max_pending, uint64_t timeout_ms)
{
    struct approvals *q;

    if ((q = calloc(1, sizeof(*q))) == NULL)
        return NULL;
    q->base = base;
    q->max_pending = max_pending > 0 ? max_pending : 1;
    q->timeout_ms = timeout_ms;
    return q;
}

static void
item_free(struct item *it)
{
    if (it == NULL)
        return;
    if (it->timer != NULL)
        event_free(it->timer);
    free(it->info.agent);
    free(it->info.method);
    free(it->info.host);
    free(it->info.path);
    free(it->info.rule);
    free(it->info.credential);
    free(it);
}

void
approvals_free(struct approvals *q)
{
    struct item *it, *next;

    if (q == NULL)
        return;
    for (it = q->head; it != NULL; it = next) {
        next = it->next;
        item_free(it);
    }
    free(q);
}

static void
notify(struct approvals *q, int event, const struct approval_info *info,
    enum approval_outcome outcome, const char *approver)
{
    size_t i;

    /* Slots are re-read each time round: an observer may unobserve itself or others. */
    for (i = 0; i < APPROVALS_MAX_OBSERVERS; i++) {
        if (q->observers[i].cb != NULL)
            q->observers[i].cb(event, info, outcome, approver, q->observers[i].arg);
    }
}

static void
unlink_item(struct approvals *q, struct item *it)
{
    if (it->prev != NULL)
        it->prev->next = it->next;
    else
        q->head = it->next;
    if (it->next != NULL)
        it->next->prev = it->prev;
    else
        q->tail = it->prev;
    it->prev = it->next = NULL;
    q->count--;
}

/* The single exit from the queue. The item is out of the list before anyone is called. */
static void
resolve(struct approvals *q, struct item *it, enum approval_outcome outcome,
    const char *approver, int call_done)
{
    unlink_item(q, it);
    event_del(it->timer);
    if (call_done && it->done != NULL)
        it->done(outcome, approver, it->arg);
    notify(q, APPROVALS_EV_RESOLVED, &it->info, outcome, approver);
    it->resolved = 1;
    if (!it->announcing)
        item_free(it);
}

/*
 * Tells observers about a new item. One of them may decide it on the spot (an automatic
 * approver, a test): the item then stays allocated until the loop ends, and observers
 * after that one are not told about an item that is already gone.
 */
static void
announce(struct approvals *q, struct item *it)
{
    size_t i;

    it->announcing = 1;
    for (i = 0; i < APPROVALS_MAX_OBSERVERS && !it->resolved; i++) {
        if (q->observers[i].cb != NULL)
            q->observers[i].cb(APPROVALS_EV_PENDING, &it->info, APPROVAL_APPROVED, NULL,
                q->observers[i].arg);
    }
    it->announcing = 0;
    if (it->resolved)
        item_free(it);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct item *it = arg;

    resolve(it->q, it, APPROVAL_TIMEOUT, NULL, 1);
}

static struct item *
find(const struct approvals *q, const char *id)
{
    struct item *it;

    if (id == NULL)
        return NULL;
    for (it = q->head; it != NULL; it = it->next) {
        if (strcmp(it->info.id, id) == 0)
            return it;
    }
    return NULL;
}

/* A random id not used by any pending item. */
static int
new_id(const struct approvals *q, char out[APPROVALS_ID_LEN + 1])
{
    unsigned char rnd[APPROVALS_ID_LEN];
    int attempt, i;

    for (attempt = 0; attempt < 16; attempt++) {
        if (util_random(rnd, sizeof(rnd)) == -1)
            return -1;
        for (i = 0; i < APPROVALS_ID_LEN; i++)
            out[i] = id_alphabet[rnd[i] & 31];
        out[APPROVALS_ID_LEN] = '\0';
        if (find(q, out) == NULL)
            return 0;
    }
    return -1;
}

static int
copy_str(char **dst, const char *src)
{
    *dst = NULL;
    if (src == NULL)
        return 0;
    return (*dst = strndup(src, APPROVALS_FIELD_MAX)) == NULL ? -1 : 0;
}

static struct item *
item_new(struct approvals *q, const struct approval_info *info)
{
    struct item *it;
    int bad = 0;

    if ((it = calloc(1, sizeof(*it))) == NULL)
        return NULL;
    it->q = q;
    bad |= copy_str(&it->info.agent, info->agent) | copy_str(&it->info.method, info->method);
    bad |= copy_str(&it->info.host, info->host) | copy_str(&it->info.path, info->path);
    bad |= copy_str(&it->info.rule, info->rule);
    bad |= copy_str(&it->info.credential, info->credential);
    it->info.body_bytes = info->body_bytes;
    util_strlcpy(it->info.body_sha256, info->body_sha256, sizeof(it->info.body_sha256));
    it->info.mode = info->mode;
    it->info.created_ms = util_wall_ms();
    it->info.deadline_ms = it->info.created_ms + q->timeout_ms;
    if (bad || (it->timer = evtimer_new(q->base, deadline_cb, it)) == NULL ||
        new_id(q, it->info.id) == -1) {
        item_free(it);
        return NULL;
    }
    return it;
}

int
approvals_hold(struct approvals *q, const struct approval_info *info,
    approvals_done_cb done, void *arg, char id_out[APPROVALS_ID_LEN + 1])
{
    struct timeval tv;
    struct item *it;

    if (q->shut || q->count >= q->max_pending || (it = item_new(q, info)) == NULL)
        return -1;
    tv = util_ms_timeval(q->timeout_ms);
    if (evtimer_add(it->timer, &tv) == -1) {
        item_free(it);
        return -1;
    }
    it->done = done;
    it->arg = arg;
    it->prev = q->tail;
    if (q->tail != NULL)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->count++;
    memcpy(id_out, it->info.id, APPROVALS_ID_LEN + 1);
    /* Last: an observer may decide the item at once. */
    announce(q, it);
    return 0;
}

void
approvals_cancel(struct approvals *q, const char *id)
{
    struct item *it;

    if (q != NULL && (it = find(q, id)) != NULL)
        resolve(q, it, APPROVAL_CANCELLED, NULL, 0);
}

static int
source_allowed(enum policy_approve mode, enum approval_source src)
{
    if (mode == POLICY_APPROVE_ANY || mode == POLICY_APPROVE_NONE)
        return 1;
    if (src == APPROVAL_SOURCE_DEVICE)
        return mode == POLICY_APPROVE_DEVICE;
    return mode == POLICY_APPROVE_CLI;
}

int
approvals_decide(struct approvals *q, const char *id, int approve, enum approval_source src,
    const char *approver, struct err *err)
{
    struct item *it;

    if ((it = find(q, id)) == NULL)
        return err_set(err, ERR_NOTFOUND, "unknown id");
    if (!source_allowed(it->info.mode, src))
        return err_set(err, ERR_USAGE, "item requires %s approval",
            it->info.mode == POLICY_APPROVE_DEVICE ? "device" : "cli");
    resolve(q, it, approve ? APPROVAL_APPROVED : APPROVAL_DENIED, approver, 1);
    return 0;
}

void
approvals_shutdown(struct approvals *q)
{
    if (q == NULL)
        return;
    q->shut = 1;
    /* Bounded: nothing can join once shut is set. */
    while (q->head != NULL)
        resolve(q, q->head, APPROVAL_SHUTDOWN, NULL, 1);
}

size_t
approvals_count(const struct approvals *q)
{
    return q->count;
}

const struct approval_info *
approvals_oldest(const struct approvals *q)
{
    return q->head != NULL ? &q->head->info : NULL;
}

int
approvals_foreach(const struct approvals *q, int (*fn)(const struct approval_info *, void *),
    void *arg)
{
    const struct item *it;
    int rc;

    for (it = q->head; it != NULL; it = it->next) {
        if ((rc = fn(&it->info, arg)) != 0)
            return rc;
    }
    return 0;
}

int
approvals_observe(struct approvals *q, approvals_event_cb cb, void *arg)
{
    int i;

    for (i = 0; i < APPROVALS_MAX_OBSERVERS; i++) {
        if (q->observers[i].cb == NULL) {
            q->observers[i].cb = cb;
            q->observers[i].arg = arg;
            return i;
        }
    }
    return -1;
}

void
approvals_unobserve(struct approvals *q, int handle)
{
    if (q == NULL || handle < 0 || handle >= APPROVALS_MAX_OBSERVERS)
        return;
    q->observers[handle].cb = NULL;
    q->observers[handle].arg = NULL;
}

const char *
approvals_outcome_name(enum approval_outcome outcome)
{
    switch (outcome) {
    case APPROVAL_APPROVED:
        return "approved";
    case APPROVAL_DENIED:
        return "denied";
    case APPROVAL_TIMEOUT:
        return "timeout";
    case APPROVAL_CANCELLED:
        return "cancelled";
    case APPROVAL_SHUTDOWN:
        return "shutdown";
    }
    return "unknown";
}

static const char *
mode_name(enum policy_approve mode)
{
    switch (mode) {
    case POLICY_APPROVE_DEVICE:
        return "device";
    case POLICY_APPROVE_CLI:
        return "cli";
    default:
        return "any";
    }
}

static json_t *
str_or_null(const char *s)
{
    json_t *j = s != NULL ? json_string(s) : NULL;

    /* Invalid UTF-8 cannot be a JSON string; say so rather than drop the field. */
    return j != NULL ? j : s != NULL ? json_string("(not utf-8)") : json_null();
}

json_t *
approvals_info_json(const struct approval_info *info)
{
    char created[32], deadline[32];
    uint64_t now = util_wall_ms();
    json_t *o;

    util_rfc3339_ms(info->created_ms, created, sizeof(created));
    util_rfc3339_ms(info->deadline_ms, deadline, sizeof(deadline));
    o = json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:s, s:s, s:s, s:s, s:I}",
        "id", info->id, "agent", str_or_null(info->agent), "method", str_or_null(info->method),
        "host", str_or_null(info->host), "path", str_or_null(info->path),
        "rule", str_or_null(info->rule), "credential", str_or_null(info->credential),
        "body_bytes", (json_int_t)info->body_bytes, "body_sha256", info->body_sha256,
        "created", created, "deadline", deadline, "mode", mode_name(info->mode),
        "expires_in_ms", (json_int_t)(info->deadline_ms > now ? info->deadline_ms - now : 0));
    return o;
}
