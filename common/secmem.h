/*
 * Secure memory for secrets: page-backed, mlock()ed, MADV_DONTDUMP, wiped with
 * explicit_bzero() on release. Never printf a secbuf; never copy it into a plain buffer
 * except the final write into an upstream buffer that wipes it on release.
 */
#ifndef AIRLOCK_COMMON_SECMEM_H
#define AIRLOCK_COMMON_SECMEM_H

#include <stddef.h>

struct secbuf {
    unsigned char *data; /* cap bytes, locked and excluded from core dumps */
    size_t len;          /* bytes in use */
    size_t cap;          /* usable capacity */
    size_t map_len;      /* private: length of the mapping */
};

/* Allocates a locked buffer of at least cap bytes; NULL on failure (errno set). */
struct secbuf *secbuf_new(size_t cap);
/* Wipes and unmaps. NULL is a no-op. */
void secbuf_free(struct secbuf *sb);
/* Appends n bytes; -1 if it would exceed cap (nothing written). */
int secbuf_append(struct secbuf *sb, const void *p, size_t n);
/*
 * Reads from fd into sb until it is full, at end of file, or (with stop_at_newline) once a
 * newline has arrived; the newline stays in sb. A full buffer means the input may be
 * longer: callers treat it as too long. EINTR is retried; -1 on a read error.
 */
int secbuf_read_fd(struct secbuf *sb, int fd, int stop_at_newline);
/* Wipes the contents and sets len to 0. */
void secbuf_wipe(struct secbuf *sb);

/*
 * Makes the process non-dumpable (PR_SET_DUMPABLE 0) and sets RLIMIT_CORE to 0, so a
 * crash cannot leave secrets in a core file and other same-uid processes cannot ptrace
 * or read /proc/PID/mem. Returns -1 on failure.
 */
int secmem_harden_process(void);

#endif
