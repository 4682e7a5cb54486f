/*
 * The pending-approval queue (SPEC §6): held requests wait here, with a deadline timer on
 * the daemon's event_base, until the buddy device or the CLI approves or denies them.
 * Observers (device link, control-socket watchers) hear about every item coming and going.
 */
#ifndef AIRLOCK_APPROVALS_APPROVALS_H
#define AIRLOCK_APPROVALS_APPROVALS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "policy/policy.h"

struct event_base;

#define APPROVALS_ID_LEN 6
#define APPROVALS_MAX_OBSERVERS 32
/* Strings copied into an item are cut at this length (hosts and paths are already bounded). */
#define APPROVALS_FIELD_MAX 4096

enum approval_outcome {
    APPROVAL_APPROVED,
    APPROVAL_DENIED,
    APPROVAL_TIMEOUT,
    APPROVAL_CANCELLED,
    APPROVAL_SHUTDOWN,
};
enum approval_source { APPROVAL_SOURCE_DEVICE, APPROVAL_SOURCE_CLI };

enum { APPROVALS_EV_PENDING = 1, APPROVALS_EV_RESOLVED = 2 };

struct approval_info {
    char id[APPROVALS_ID_LEN + 1];
    char *agent, *method, *host, *path, *rule, *credential; /* may be NULL */
    uint64_t body_bytes;
    char body_sha256[65];
    uint64_t created_ms, deadline_ms; /* wall clock, ms since the epoch */
    enum policy_approve mode;         /* who may decide; NONE is treated as ANY */
};

/* Called exactly once per held item (unless cancelled). approver is NULL unless decided. */
typedef void (*approvals_done_cb)(enum approval_outcome outcome, const char *approver, void *arg);
/* event is APPROVALS_EV_PENDING (outcome/approver unused) or APPROVALS_EV_RESOLVED. */
typedef void (*approvals_event_cb)(int event, const struct approval_info *info,
    enum approval_outcome outcome, const char *approver, void *arg);

struct approvals;

/* max_pending: queue bound (0 → 1); timeout_ms: deadline after hold. NULL on ENOMEM. */
struct approvals *approvals_new(struct event_base *base, uint32_t max_pending,
    uint64_t timeout_ms);
/* Frees remaining items WITHOUT calling anyone: call approvals_shutdown first. NULL no-op. */
void approvals_free(struct approvals *q);

/*
 * Queues a copy of info's strings, body size and hash, and mode (id, created_ms and
 * deadline_ms are set here: now and now + timeout). Writes the new unique id to id_out.
 * -1 when the queue is full or shut down (caller answers 429). done is called exactly once
 * unless the item is cancelled; it may run before this returns if an observer decides at
 * once. Callbacks may call back into the queue, but must not free it.
 */
int approvals_hold(struct approvals *q, const struct approval_info *info,
    approvals_done_cb done, void *arg, char id_out[APPROVALS_ID_LEN + 1]);
/* The client went away: observers hear RESOLVED/CANCELLED; done is never called. */
void approvals_cancel(struct approvals *q, const char *id);
/*
 * Approves (approve != 0) or denies. -1 with "unknown id", or "item requires device
 * approval" / "item requires cli approval" when src does not match the item's mode.
 * approver names the decider, e.g. "device:AB12" or "cli:uid=1000".
 */
int approvals_decide(struct approvals *q, const char *id, int approve,
    enum approval_source src, const char *approver, struct err *err);
/* Resolves every pending item with APPROVAL_SHUTDOWN and refuses new ones. */
void approvals_shutdown(struct approvals *q);

size_t approvals_count(const struct approvals *q);
/* Oldest pending item (what the device shows), or NULL. */
const struct approval_info *approvals_oldest(const struct approvals *q);
/* Calls fn for each pending item, oldest first, until fn returns non-zero (returned). */
int approvals_foreach(const struct approvals *q,
    int (*fn)(const struct approval_info *, void *), void *arg);
/* Observers get every PENDING and RESOLVED event. Returns a handle, or -1 when full. */
int approvals_observe(struct approvals *q, approvals_event_cb cb, void *arg);
void approvals_unobserve(struct approvals *q, int handle);

/*
 * New JSON object for list/watch: id, agent, method, host, path, rule, credential,
 * body_bytes, body_sha256, created, deadline (RFC 3339), mode, and expires_in_ms (time
 * left at the moment of the call, for countdowns).
 */
json_t *approvals_info_json(const struct approval_info *info);
/* "approved", "denied", "timeout", "cancelled", "shutdown". */
const char *approvals_outcome_name(enum approval_outcome outcome);

#endif
