/*
 * Audit log writer: builds each record as compact JSON with keys in SPEC order, appends it
 * with one write(2), chains it to the previous line by SHA-256, and recovers the chain head
 * (and drops a torn tail) when the daemon restarts. Verification lives in audit_verify.c.
 */
#include "audit/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "audit/audit_internal.h"
#include "common/log.h"
#include "common/util.h"

#define SCAN_CHUNK 4096

struct audit {
    int fd;
    char *path;
    off_t size;       /* bytes of complete lines; a short write is truncated back to it */
    char prev[SHA256_HEX_LEN + 1];
    /* The fdatasync thread, and an error of it for the next record to fail on. */
    struct audit_syncer sync;
    int broken;       /* a short write could not be undone: refuse further records */
    off_t reserved;   /* end of the room allocated past size by audit_reserve() */
    int no_fallocate; /* the file system cannot reserve: rely on the write failing */
    char *line;       /* AUDIT_LINE_MAX bytes: the record being written */
    EVP_MD *md;       /* SHA-256, fetched once: an implicit fetch per line costs more */
    EVP_MD_CTX *mdctx;
    uint64_t ts_sec;  /* the second ts was formatted for */
    char ts[40];      /* RFC 3339 text of the last record's time */
};

/* Position of the last '\n' in [0, end), or -1 in *pos when there is none. */
static int
last_newline_before(int fd, off_t end, off_t *pos)
{
    char buf[SCAN_CHUNK];
    off_t off = end;
    ssize_t n, i;

    while (off > 0) {
        size_t want = off > SCAN_CHUNK ? SCAN_CHUNK : (size_t)off;

        off -= (off_t)want;
        if ((n = pread(fd, buf, want, off)) != (ssize_t)want)
            return -1;
        for (i = n - 1; i >= 0; i--) {
            if (buf[i] == '\n') {
                *pos = off + i;
                return 0;
            }
        }
    }
    *pos = -1;
    return 0;
}

/* SHA-256 hex of the bytes [start, end) of fd, streamed so any line length works. */
static int
hash_range(int fd, off_t start, off_t end, char out[SHA256_HEX_LEN + 1])
{
    unsigned char buf[SCAN_CHUNK], md[32];
    unsigned int mdlen = sizeof(md);
    EVP_MD_CTX *ctx;
    int rc = -1;

    if ((ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    while (start < end) {
        size_t want = end - start > SCAN_CHUNK ? SCAN_CHUNK : (size_t)(end - start);

        if (pread(fd, buf, want, start) != (ssize_t)want)
            goto out;
        EVP_DigestUpdate(ctx, buf, want);
        start += (off_t)want;
    }
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
        goto out;
    util_hex_encode(md, sizeof(md), out);
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

/*
 * A last line without its newline was never fully written, so it never counted as a
 * record: cut it off (logged) so the chain continues from the last complete line. A
 * "tail" longer than any line we write means the file is not ours: refuse to touch it.
 */
static int
drop_torn_tail(struct audit *a, struct err *err)
{
    char last;
    off_t nl;

    if (a->size == 0)
        return 0;
    if (pread(a->fd, &last, 1, a->size - 1) != 1)
        return err_set(err, ERR_IO, "%s: read: %s", a->path, strerror(errno));
    if (last == '\n')
        return 0;
    if (last_newline_before(a->fd, a->size, &nl) == -1)
        return err_set(err, ERR_IO, "%s: read: %s", a->path, strerror(errno));
    if (a->size - (nl + 1) > AUDIT_VERIFY_LINE_MAX)
        return err_set(err, ERR_PARSE, "%s: last line is not an audit record", a->path);
    log_warn("audit: %s: dropping a torn last line of %lld bytes (interrupted write)",
        a->path, (long long)(a->size - (nl + 1)));
    if (ftruncate(a->fd, nl + 1) == -1)
        return err_set(err, ERR_IO, "%s: truncate: %s", a->path, strerror(errno));
    a->size = nl + 1;
    return 0;
}

/* prev for the next record: hash of the last line, or 64 zeros for an empty file. */
static int
load_chain_head(struct audit *a, struct err *err)
{
    off_t nl;

    memset(a->prev, '0', SHA256_HEX_LEN);
    a->prev[SHA256_HEX_LEN] = '\0';
    if (a->size == 0)
        return 0;
    if (last_newline_before(a->fd, a->size - 1, &nl) == -1 ||
        hash_range(a->fd, nl + 1, a->size - 1, a->prev) == -1)
        return err_set(err, ERR_IO, "%s: read: %s", a->path, strerror(errno));
    return 0;
}

struct audit *
audit_open(const char *path, struct err *err)
{
    struct audit *a;
    struct stat st;
    int rc;

    if ((a = calloc(1, sizeof(*a))) == NULL) {
        err_set(err, ERR_INTERNAL, "%s: out of memory", path);
        return NULL;
    }
    a->fd = -1;
    if ((a->path = strdup(path)) == NULL || (a->line = malloc(AUDIT_LINE_MAX)) == NULL ||
        (a->md = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL ||
        (a->mdctx = EVP_MD_CTX_new()) == NULL) {
        err_set(err, ERR_INTERNAL, "%s: out of memory (or no sha-256 in openssl)", path);
        goto fail;
    }
    a->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (a->fd == -1) {
        err_set(err, ERR_IO, "%s: open: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(a->fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        err_set(err, ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    a->size = st.st_size;
    if (drop_torn_tail(a, err) == -1 || load_chain_head(a, err) == -1)
        goto fail;
    if ((rc = audit_syncer_start(&a->sync, a->fd, a->path)) != 0) {
        err_set(err, ERR_INTERNAL, "%s: cannot start the sync thread: %s", path, strerror(rc));
        goto fail;
    }
    return a;
fail:
    audit_close(a);
    return NULL;
}

/*
 * ts for a record written now. gmtime_r + strftime cost more than the rest of the line,
 * so the text for the current second is kept and only the milliseconds are filled in.
 */
static const char *
timestamp(struct audit *a)
{
    uint64_t ms = util_wall_ms();
    size_t n;

    if (ms / 1000 != a->ts_sec || a->ts[0] == '\0') {
        util_rfc3339_ms(ms - ms % 1000, a->ts, sizeof(a->ts));
        a->ts_sec = ms / 1000;
    }
    n = strlen(a->ts); /* "....SS.mmmZ" */
    a->ts[n - 4] = (char)('0' + ms % 1000 / 100);
    a->ts[n - 3] = (char)('0' + ms % 100 / 10);
    a->ts[n - 2] = (char)('0' + ms % 10);
    return a->ts;
}

/* SHA-256 hex of line, with the digest fetched once at open and one reused context. */
static int
line_hash(struct audit *a, const char *line, size_t len, char out[SHA256_HEX_LEN + 1])
{
    unsigned char md[32];
    unsigned int mdlen = sizeof(md);

    if (EVP_DigestInit_ex2(a->mdctx, a->md, NULL) != 1 ||
        EVP_DigestUpdate(a->mdctx, line, len) != 1 || EVP_DigestFinal_ex(a->mdctx, md, &mdlen) != 1)
        return -1;
    util_hex_encode(md, sizeof(md), out);
    return 0;
}

int
audit_log(struct audit *a, const struct audit_record *rec, struct err *err)
{
    char next[SHA256_HEX_LEN + 1];
    size_t len;
    ssize_t n;
    int e;

    if (a == NULL)
        return 0;
    if (a->broken)
        return err_set(err, ERR_IO, "%s: log is unusable after a failed write", a->path);
    /* Records already written may be lost: refuse this one, as for a failed write. */
    if ((e = audit_syncer_take_error(&a->sync)) != 0)
        return err_set(err, ERR_IO, "%s: fdatasync: %s", a->path, strerror(e));
    len = audit_line_encode(a->line, rec, timestamp(a), a->prev);
    /* Hashed before the write: a line on disk always has its successor's prev ready. */
    if (line_hash(a, a->line, len - 1, next) == -1)
        return err_set(err, ERR_INTERNAL, "%s: cannot hash record", a->path);
    do
        n = write(a->fd, a->line, len);
    while (n == -1 && errno == EINTR);
    if (n != (ssize_t)len) {
        err_set(err, ERR_IO, "%s: write: %s", a->path, n == -1 ? strerror(errno) : "short write");
        /* Never leave half a line: the next record would be glued onto it. */
        if (n > 0 && ftruncate(a->fd, a->size) == -1)
            a->broken = 1;
        return -1;
    }
    memcpy(a->prev, next, sizeof(next));
    a->size += (off_t)len;
    audit_syncer_wrote(&a->sync);
    return 0;
}

int
audit_reserve(struct audit *a, struct err *err)
{
    struct rlimit rl;
    int r;

    if (a == NULL)
        return 0;
    if (a->broken)
        return err_set(err, ERR_IO, "%s: log is unusable after a failed write", a->path);
    if (a->no_fallocate || a->reserved - a->size >= AUDIT_RESERVE_LOW)
        return 0;
    /* RLIMIT_FSIZE caps the size, not the blocks: room past it would be no room at all. */
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)a->size + AUDIT_RESERVE_BYTES > rl.rlim_cur)
        return err_set(err, ERR_IO, "%s: no room for more records: %s", a->path, strerror(EFBIG));
    do
        r = fallocate(a->fd, FALLOC_FL_KEEP_SIZE, a->size, AUDIT_RESERVE_BYTES);
    while (r == -1 && errno == EINTR);
    if (r == 0) {
        a->reserved = a->size + AUDIT_RESERVE_BYTES;
        return 0;
    }
    if (errno == EOPNOTSUPP || errno == ENOSYS) {
        log_warn("audit: %s: the file system cannot reserve room (%s); a full disk is noticed "
                 "only when a write fails",
                 a->path, strerror(errno));
        a->no_fallocate = 1;
        return 0;
    }
    return err_set(err, ERR_IO, "%s: no room for more records: %s", a->path, strerror(errno));
}

int
audit_sync(struct audit *a)
{
    if (a == NULL)
        return 0;
    if (audit_syncer_sync_now(&a->sync) == -1) {
        log_warn("audit: %s: fdatasync: %s", a->path, strerror(errno));
        return -1;
    }
    return 0;
}

void
audit_close(struct audit *a)
{
    if (a == NULL)
        return;
    audit_syncer_stop(&a->sync);
    if (a->fd >= 0) {
        (void)audit_sync(a); /* the last sync, on the caller (shutdown), after the thread's */
        /* Same size: frees only the blocks reserved past the end (ext4, xfs, tmpfs). */
        if (a->reserved > a->size && !a->broken && ftruncate(a->fd, a->size) == -1)
            log_warn("audit: %s: cannot give back the reserve: %s", a->path, strerror(errno));
        close(a->fd);
    }
    EVP_MD_CTX_free(a->mdctx);
    EVP_MD_free(a->md);
    free(a->line);
    free(a->path);
    free(a);
}

void
audit_test_fail_next_sync(struct audit *a, int errnum)
{
    atomic_store(&a->sync.test_fail_errno, errnum);
}

unsigned
audit_test_syncs(struct audit *a)
{
    return atomic_load(&a->sync.syncs);
}
