/*
 * Locked, non-dumpable buffers for secrets. Each secbuf is its own mapping so that
 * MADV_DONTDUMP and mlock apply to exactly the secret's pages and nothing else.
 */
#include "common/secmem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

struct secbuf *
secbuf_new(size_t cap)
{
    struct secbuf *sb;
    long page = sysconf(_SC_PAGESIZE);
    size_t map_len;
    void *p;

    if (page <= 0)
        page = 4096;
    if (cap == 0 || cap > (64u << 20)) {
        errno = EINVAL;
        return NULL;
    }
    map_len = (cap + (size_t)page - 1) & ~((size_t)page - 1);
    if ((sb = calloc(1, sizeof(*sb))) == NULL)
        return NULL;
    p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(sb);
        return NULL;
    }
    /* Best effort: RLIMIT_MEMLOCK may be small for unprivileged users; DONTDUMP still holds. */
    (void)mlock(p, map_len);
    (void)madvise(p, map_len, MADV_DONTDUMP);
    sb->data = p;
    sb->cap = cap;
    sb->map_len = map_len;
    return sb;
}

void
secbuf_free(struct secbuf *sb)
{
    if (sb == NULL)
        return;
    if (sb->data != NULL) {
        explicit_bzero(sb->data, sb->map_len);
        (void)munlock(sb->data, sb->map_len);
        (void)munmap(sb->data, sb->map_len);
    }
    explicit_bzero(sb, sizeof(*sb));
    free(sb);
}

int
secbuf_append(struct secbuf *sb, const void *p, size_t n)
{
    if (n > sb->cap - sb->len)
        return -1;
    memcpy(sb->data + sb->len, p, n);
    sb->len += n;
    return 0;
}

int
secbuf_read_fd(struct secbuf *sb, int fd, int stop_at_newline)
{
    ssize_t r;

    while (sb->len < sb->cap) { /* bounded: each pass adds bytes or ends */
        r = read(fd, sb->data + sb->len, sb->cap - sb->len);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1)
            return -1;
        if (r == 0)
            break;
        sb->len += (size_t)r;
        if (stop_at_newline && memchr(sb->data + sb->len - (size_t)r, '\n', (size_t)r) != NULL)
            break;
    }
    return 0;
}

void
secbuf_wipe(struct secbuf *sb)
{
    explicit_bzero(sb->data, sb->cap);
    sb->len = 0;
}

int
secmem_harden_process(void)
{
    struct rlimit rl = {0, 0};

    if (setrlimit(RLIMIT_CORE, &rl) == -1)
        return -1;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1)
        return -1;
    return 0;
}
