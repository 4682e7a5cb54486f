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

#include <jansson.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "common/util.h"

#define SCAN_CHUNK 4096

struct audit {
    int fd;
    char *path;
    off_t size;       /* bytes of complete lines; a short write is truncated back to it */
    char prev[SHA256_HEX_LEN + 1];
    int dirty;        /* written since the last fdatasync */
    int broken;       /* a short write could not be undone: refuse further records */
    off_t reserved;   /* end of the room allocated past size by audit_reserve() */
    int no_fallocate; /* the file system cannot reserve: rely on the write failing */
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

    if ((a = calloc(1, sizeof(*a))) == NULL || (a->path = strdup(path)) == NULL) {
        free(a);
        err_set(err, ERR_INTERNAL, "%s: out of memory", path);
        return NULL;
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
    return a;
fail:
    audit_close(a);
    return NULL;
}

/* A JSON string for s, cut at AUDIT_FIELD_MAX on a UTF-8 boundary; invalid UTF-8 → '?'. */
static json_t *
field_string(const char *s, int cut_query)
{
    size_t len = strlen(s), i;
    json_t *j;
    char *copy;

    if (cut_query && strchr(s, '?') != NULL)
        len = (size_t)(strchr(s, '?') - s);
    if (len > AUDIT_FIELD_MAX) {
        len = AUDIT_FIELD_MAX;
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
            len--;
    }
    if ((j = json_stringn(s, len)) != NULL)
        return j;
    if ((copy = malloc(len + 1)) == NULL)
        return NULL;
    for (i = 0; i < len; i++)
        copy[i] = (unsigned char)s[i] >= 0x80 ? '?' : s[i];
    j = json_stringn(copy, len);
    free(copy);
    return j;
}

static int
put(json_t *o, const char *key, json_t *v)
{
    return v == NULL ? -1 : json_object_set_new(o, key, v);
}

static int
put_str(json_t *o, const char *key, const char *s)
{
    return put(o, key, s == NULL ? json_null() : field_string(s, strcmp(key, "path") == 0));
}

static int
put_int(json_t *o, const char *key, long long v, int zero_is_null)
{
    return put(o, key, v == 0 && zero_is_null ? json_null() : json_integer(v));
}

static long long
clamp_u64(uint64_t v)
{
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (long long)v;
}

/* The record as one compact JSON line with its newline; malloc'd. */
static char *
build_line(const struct audit *a, const struct audit_record *r, size_t *len)
{
    char ts[32], *s, *line = NULL;
    json_t *o;
    int bad = 0;

    util_rfc3339_ms(util_wall_ms(), ts, sizeof(ts));
    if ((o = json_object()) == NULL)
        return NULL;
    bad |= put_str(o, "ts", ts) | put_str(o, "id", r->id) | put_str(o, "agent", r->agent);
    bad |= put_str(o, "via", r->via) | put_str(o, "host", r->host);
    bad |= put_int(o, "port", r->port, 1) | put_str(o, "method", r->method);
    bad |= put_str(o, "path", r->path) | put_str(o, "rule", r->rule);
    bad |= put_str(o, "decision", r->decision) | put_str(o, "credential", r->credential);
    bad |= put_str(o, "approver", r->approver) | put_int(o, "status", r->status, 1);
    bad |= put_int(o, "bytes_up", clamp_u64(r->bytes_up), 0);
    bad |= put_int(o, "bytes_down", clamp_u64(r->bytes_down), 0);
    bad |= put_int(o, "ms", clamp_u64(r->ms), 0) | put_str(o, "prev", a->prev);
    if (!bad && (s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)) != NULL) {
        *len = strlen(s);
        if ((line = realloc(s, *len + 2)) == NULL)
            free(s);
        else
            memcpy(line + (*len)++, "\n", 2);
    }
    json_decref(o);
    return line;
}

int
audit_log(struct audit *a, const struct audit_record *rec, struct err *err)
{
    size_t len;
    ssize_t n;
    char *line;

    if (a == NULL)
        return 0;
    if (a->broken)
        return err_set(err, ERR_IO, "%s: log is unusable after a failed write", a->path);
    if ((line = build_line(a, rec, &len)) == NULL)
        return err_set(err, ERR_INTERNAL, "%s: cannot encode record", a->path);
    do
        n = write(a->fd, line, len);
    while (n == -1 && errno == EINTR);
    if (n != (ssize_t)len) {
        err_set(err, ERR_IO, "%s: write: %s", a->path, n == -1 ? strerror(errno) : "short write");
        /* Never leave half a line: the next record would be glued onto it. */
        if (n > 0 && ftruncate(a->fd, a->size) == -1)
            a->broken = 1;
        free(line);
        return -1;
    }
    util_sha256_hex(line, len - 1, a->prev);
    a->size += (off_t)len;
    a->dirty = 1;
    free(line);
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
    if (a == NULL || !a->dirty)
        return 0;
    if (fdatasync(a->fd) == -1) {
        log_warn("audit: %s: fdatasync: %s", a->path, strerror(errno));
        return -1;
    }
    a->dirty = 0;
    return 0;
}

void
audit_close(struct audit *a)
{
    if (a == NULL)
        return;
    if (a->fd >= 0) {
        (void)audit_sync(a);
        /* Same size: frees only the blocks reserved past the end (ext4, xfs, tmpfs). */
        if (a->reserved > a->size && !a->broken && ftruncate(a->fd, a->size) == -1)
            log_warn("audit: %s: cannot give back the reserve: %s", a->path, strerror(errno));
        close(a->fd);
    }
    free(a->path);
    free(a);
}
