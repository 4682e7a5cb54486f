/*
 * The control socket (SPEC §6): a mode-0600 Unix stream socket speaking newline-delimited
 * JSON, one object per line, for the CLI: list, approve, deny, watch, status, reload.
 * Only the daemon's own uid (or root) may talk to it (SO_PEERCRED).
 */
#ifndef AIRLOCK_APPROVALS_CONTROL_H
#define AIRLOCK_APPROVALS_CONTROL_H

#include <jansson.h>

#include "approvals/approvals.h"
#include "common/err.h"

struct event_base;

#define CONTROL_MAX_LINE (64 * 1024)        /* longest request line */
#define CONTROL_MAX_CLIENTS 64
#define CONTROL_MAX_OUTPUT (1024 * 1024)    /* a client that stops reading is dropped */
#define CONTROL_MAX_REPLY (4 * 1024 * 1024) /* longest reply control_request accepts */
#define CONTROL_REQUEST_TIMEOUT_MS 5000

/* Returns a new object whose members are merged into the status reply. */
typedef json_t *(*control_status_fn)(void *arg);
/* Reloads the configuration: 0, or -1 with err (the message goes back to the client). */
typedef int (*control_reload_fn)(void *arg, struct err *err);

struct control;

/*
 * Listens on path (created mode 0600). A stale socket (nothing listening) is replaced;
 * a live one means another daemon: error. A non-socket at path is never removed. status
 * and reload may be NULL (the op then answers an error). q is not owned.
 * Ops: list, approve/deny {"id"}, watch (replies ok, then a "pending" event for every
 * item already queued, then live "pending"/"resolved" events), status, reload.
 */
struct control *control_new(struct event_base *base, const char *path, struct approvals *q,
    control_status_fn status, control_reload_fn reload, void *arg, struct err *err);
/* Closes every client and unlinks the socket. NULL no-op. Free before the queue. */
void control_free(struct control *c);

/*
 * Client side (CLI): connects, sends req as one line, reads one reply line (bounded,
 * CONTROL_REQUEST_TIMEOUT_MS). *reply is a new object. -1 with err, e.g.
 * "cannot connect to control socket PATH: Connection refused".
 */
int control_request(const char *path, const json_t *req, json_t **reply, struct err *err);
/* Connected blocking socket for streaming use (watch); -1 with err as above. */
int control_connect(const char *path, struct err *err);

#endif
