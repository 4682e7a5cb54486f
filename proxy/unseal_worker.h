/*
 * The one thread that talks to the token for the daemon (the proxy's injections and leaf
 * mints, and the buddy device's pair key through proxy_token_worker()). The token session
 * is not safe to share, so the worker owns the vault (and with it the PKCS#11 session or
 * TPM context); the loop thread submits jobs and gets each result back on the loop through
 * an eventfd. A token that hangs stalls the worker, never the loop.
 */
#ifndef AIRLOCK_PROXY_UNSEAL_WORKER_H
#define AIRLOCK_PROXY_UNSEAL_WORKER_H

#include <stdint.h>

#include <event2/event.h>

#include "common/err.h"
#include "common/secmem.h"
#include "policy/policy.h"

/* Jobs waiting for the worker at most; more fail at once (the token cannot keep up). */
#define UNSEAL_QUEUE_MAX 256

struct unseal_worker;
struct unseal_job;

/*
 * Called on the loop thread once with the result. Success: job is the caller's, holding
 * the secret (unseal_job_secret) until unseal_job_release. Failure (token error, or no
 * answer within the deadline): job is NULL and err says why; nothing is left to free.
 */
typedef void (*unseal_done_fn)(void *arg, struct unseal_job *job, const struct err *err);

/* Starts the thread; its events go on base. NULL with err on failure. */
struct unseal_worker *unseal_worker_new(struct event_base *base, struct err *err);
/*
 * Stops the thread (a queued job is dropped, a running one finishes first) and closes the
 * vault. A worker stuck in a token call longer than the longest deadline it was given (plus
 * 1 s) is left behind, detached. NULL is a no-op. Every job must have been cancelled or
 * released before.
 */
void unseal_worker_free(struct unseal_worker *w);
/*
 * Queues an unseal of credential name with p's vault settings (p is referenced until the
 * job is freed). Its deadline is p->unseal_timeout_ms (limits.unseal_timeout), so a reload
 * applies to jobs submitted under the new policy. done(arg, ...) is called later, never
 * from inside this call. NULL with err at once when the token is stalled (an operation
 * overran its deadline and has not returned yet), the queue is full or p has no vault:
 * fail closed without waiting.
 */
struct unseal_job *unseal_submit(struct unseal_worker *w, struct policy *p, const char *name,
                                 unseal_done_fn done, void *arg, struct err *err);
/* The caller no longer wants a job's result (its exchange went away): done is never
 * called, and the result, when it comes, is wiped and dropped. */
void unseal_job_cancel(struct unseal_job *job);
/* The plaintext of a successful job (locked memory; never copy it into plain memory). */
const struct secbuf *unseal_job_secret(const struct unseal_job *job);
/* Wipes the secret and frees the job. NULL is a no-op. */
void unseal_job_release(struct unseal_job *job);

#endif
