/*
 * `airlock audit verify`: re-reads the log with a bounded line reader, checks each line is
 * a complete record, and recomputes the chain over the exact bytes of every line. Names
 * the first altered line, using one line of look-ahead to tell "this line was edited"
 * from "the line before it was edited".
 */
#include "audit/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/util.h"

#define READ_CHUNK 65536

enum line_status { LINE_EOF, LINE_OK, LINE_BAD };

struct line_reader {
    int fd;
    char buf[READ_CHUNK];
    size_t pos, len;
    char *line;       /* AUDIT_VERIFY_LINE_MAX + 1 bytes */
    size_t line_len;
};

/* Next byte, or -1 at EOF, -2 on error. */
static int
next_byte(struct line_reader *r)
{
    ssize_t n;

    if (r->pos == r->len) {
        do
            n = read(r->fd, r->buf, sizeof(r->buf));
        while (n == -1 && errno == EINTR);
        if (n < 0)
            return -2;
        if (n == 0)
            return -1;
        r->pos = 0;
        r->len = (size_t)n;
    }
    return (unsigned char)r->buf[r->pos++];
}

/*
 * Reads one line without its newline. LINE_BAD for a line with no newline (torn) or
 * longer than the bound (the rest of it is skipped). -1 on a read error.
 */
static int
read_line(struct line_reader *r)
{
    int c, overlong = 0;

    r->line_len = 0;
    for (;;) {
        if ((c = next_byte(r)) == -2)
            return -1;
        if (c == -1)
            return r->line_len == 0 && !overlong ? LINE_EOF : LINE_BAD;
        if (c == '\n')
            return overlong ? LINE_BAD : LINE_OK;
        if (r->line_len == AUDIT_VERIFY_LINE_MAX)
            overlong = 1;
        else
            r->line[r->line_len++] = (char)c;
    }
}

static int
is_hex64(const char *s)
{
    size_t i;

    for (i = 0; i < SHA256_HEX_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[i] == '\0';
}

/* 0 when the line is a complete record (every field, right types); its prev into prev. */
static int
check_record(const char *line, size_t len, char prev[SHA256_HEX_LEN + 1])
{
    static const char *const strs[] = {"id", "agent", "via", "host", "method", "path", "rule",
        "decision", "credential", "approver"};
    static const char *const ints[] = {"port", "status", "bytes_up", "bytes_down", "ms"};
    json_t *o, *v;
    size_t i;
    int rc = -1;

    if ((o = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL)) == NULL)
        return -1;
    if (!json_is_object(o) || json_object_size(o) != 17 ||
        !json_is_string(json_object_get(o, "ts")))
        goto out;
    for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        v = json_object_get(o, strs[i]);
        if (v == NULL || !(json_is_string(v) || json_is_null(v)))
            goto out;
    }
    for (i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        v = json_object_get(o, ints[i]);
        if (v == NULL || !(json_is_integer(v) || json_is_null(v)))
            goto out;
    }
    v = json_object_get(o, "prev");
    if (!json_is_string(v) || !is_hex64(json_string_value(v)))
        goto out;
    memcpy(prev, json_string_value(v), SHA256_HEX_LEN + 1);
    rc = 0;
out:
    json_decref(o);
    return rc;
}

/*
 * Walks the chain. A mismatch at line k means line k-1 was edited or line k's own prev
 * was: if line k+1 still chains to line k, line k is intact and k-1 is the culprit;
 * otherwise line k itself changed. A mismatch on the last line cannot be looked past
 * and is blamed on the line before it (a content edit is the likelier change).
 */
static int
walk(struct line_reader *r, uint64_t *records, uint64_t *bad_line)
{
    char want[SHA256_HEX_LEN + 1], got[SHA256_HEX_LEN + 1];
    uint64_t n = 0, pending = 0;
    int st;

    memset(want, '0', SHA256_HEX_LEN);
    want[SHA256_HEX_LEN] = '\0';
    while ((st = read_line(r)) != LINE_EOF) {
        if (st == -1)
            return -1;
        n++;
        if (st == LINE_BAD || check_record(r->line, r->line_len, got) == -1) {
            *bad_line = pending != 0 ? pending : n;
            return 1;
        }
        if (pending != 0) {
            *bad_line = strcmp(got, want) == 0 ? pending - 1 : pending;
            return 1;
        }
        if (strcmp(got, want) != 0) {
            if (n == 1) {
                *bad_line = 1;
                return 1;
            }
            pending = n;
        }
        util_sha256_hex(r->line, r->line_len, want);
    }
    if (pending != 0) {
        *bad_line = pending - 1;
        return 1;
    }
    *records = n;
    return 0;
}

int
audit_verify(const char *path, uint64_t *records, uint64_t *bad_line, struct err *err)
{
    struct line_reader *r;
    int rc;

    *records = 0;
    *bad_line = 0;
    if ((r = calloc(1, sizeof(*r))) == NULL || (r->line = malloc(AUDIT_VERIFY_LINE_MAX + 1)) ==
        NULL) {
        free(r);
        return err_set(err, ERR_INTERNAL, "%s: out of memory", path);
    }
    if ((r->fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
        rc = err_set(err, errno == ENOENT ? ERR_NOTFOUND : ERR_IO, "%s: %s", path,
            strerror(errno));
    } else if ((rc = walk(r, records, bad_line)) == -1) {
        err_set(err, ERR_IO, "%s: read: %s", path, strerror(errno));
    }
    if (r->fd >= 0)
        close(r->fd);
    free(r->line);
    free(r);
    return rc;
}
