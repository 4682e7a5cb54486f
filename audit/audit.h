/*
 * Hash-chained JSON Lines audit log (SPEC §8): one object per decision, appended with a
 * single write(2) to an O_APPEND file; each line carries "prev", the SHA-256 hex of the
 * previous line's exact bytes, so `airlock audit verify` finds edited or removed lines.
 */
#ifndef AIRLOCK_AUDIT_AUDIT_H
#define AIRLOCK_AUDIT_AUDIT_H

#include <stdint.h>

#include "common/err.h"

/* Longest string field written; longer host/path/... values are cut (on a UTF-8 boundary). */
#define AUDIT_FIELD_MAX 2048
/* Longest line audit_verify accepts; our own lines stay far below it. */
#define AUDIT_VERIFY_LINE_MAX (256 * 1024)
/* Room kept allocated past the end of the log for records still to come (audit_reserve). */
#define AUDIT_RESERVE_BYTES (128 * 1024)
#define AUDIT_RESERVE_LOW (32 * 1024)
/* A written record reaches the disk (fdatasync, on a thread of the log's own) within this. */
#define AUDIT_SYNC_MS 100

/*
 * One decision. NULL strings are written as JSON null; port 0 and status 0 as null.
 * path is cut at the first '?' (no query strings in the log, ever).
 */
struct audit_record {
    const char *id, *agent, *via, *host;
    uint16_t port;
    const char *method, *path, *rule, *decision, *credential, *approver;
    int status;
    uint64_t bytes_up, bytes_down, ms;
};

struct audit;

/*
 * Opens (creating with mode 0600) the log at path and continues the chain from its last
 * line. A torn last line (no trailing newline: a crash or ENOSPC mid-write) is a record
 * that was never committed: it is truncated away with a warning and the chain continues
 * from the last complete line, so the file stays verifiable.
 */
struct audit *audit_open(const char *path, struct err *err);
/*
 * Appends one record (keys in SPEC order, ts first, prev last) with one write(). -1 when
 * the write fails or is short, or when a background fdatasync failed since the last record
 * (this record is then not written): the caller must then deny (fail closed). A short
 * write is truncated back so the file never holds a partial line. a == NULL (no audit
 * configured, tests) is a no-op returning 0.
 */
int audit_log(struct audit *a, const struct audit_record *rec, struct err *err);
/*
 * Keeps room allocated past the end of the file (fallocate with FALLOC_FL_KEEP_SIZE,
 * refilled to AUDIT_RESERVE_BYTES once less than AUDIT_RESERVE_LOW is left), so the records
 * of requests already let through can still be written when the disk fills up. Cheap
 * while the reserve lasts (no system call). -1 when the file system cannot give the room
 * (ENOSPC, EDQUOT, EFBIG): the caller must forward nothing new. A file system without
 * fallocate counts as ready (the write itself then fails closed). a == NULL: 0.
 */
int audit_reserve(struct audit *a, struct err *err);
/*
 * fdatasync on the calling thread if anything was written since the last sync. 0 / -1.
 * Not needed for durability: a thread of the log's own (started by audit_open) syncs each
 * record within AUDIT_SYNC_MS; when that sync fails, the next audit_log fails (and writes
 * nothing), so the caller denies as for a failed write.
 */
int audit_sync(struct audit *a);
/* Stops the sync thread, syncs, gives back the unused reserve and closes. NULL: no-op. */
void audit_close(struct audit *a);

/*
 * Checks the whole chain. 0 and *records on an intact file (an empty file is intact with
 * 0 records); 1 and *bad_line (1-based) naming the first altered line; -1 with err when
 * the file cannot be read. A line is broken when it is not a complete JSON object with
 * every field, or when the next line's prev does not match its hash. Limitation: an edit
 * of the last line that keeps it valid JSON cannot be detected (nothing follows it).
 */
int audit_verify(const char *path, uint64_t *records, uint64_t *bad_line, struct err *err);

#endif
