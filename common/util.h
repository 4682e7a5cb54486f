/*
 * Small utilities shared by every module: durations and sizes as written in the config,
 * hex, SHA-256, constant-time compare, clocks, RFC 3339 timestamps, safe string copy.
 */
#ifndef AIRLOCK_COMMON_UTIL_H
#define AIRLOCK_COMMON_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#define SHA256_HEX_LEN 64

/* "0s", "250ms", "30s", "5m", "2h", "1d" (one number, one unit) → milliseconds. */
int util_parse_duration_ms(const char *s, uint64_t *out_ms);
/* "1024", "64KiB", "1MiB", "2GiB", "10KB", "1MB" (KB = 1000) → bytes. */
int util_parse_size(const char *s, uint64_t *out_bytes);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void util_hex_encode(const void *in, size_t n, char *out);
/* The value of one hex digit (either case), -1 if c is not one. */
int util_hex_digit(int c);
/* Decodes exactly 2n hex characters into out[n]. -1 on any non-hex character. */
int util_hex_decode(const char *hex, void *out, size_t n);

/* SHA-256 of data as 64 lower-case hex characters plus NUL. */
void util_sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1]);
void util_sha256(const void *data, size_t len, unsigned char out[32]);

/*
 * Empties the calling thread's OpenSSL error queue; when it held anything, logs the oldest
 * entry at debug level under `what` and returns how many entries were dropped. SSL_get_error
 * (and so libevent's TLS filters) reads the queue after every SSL_read, SSL_write and
 * handshake step that returns <= 0, so an entry left behind by unrelated work, such as the
 * rdrand engine probe SoftHSM runs when it loads, fails a healthy TLS connection. Call it
 * after work that may leave entries (token calls, OpenSSL calls whose failure is handled).
 * Cheap when the queue is empty.
 */
int util_ossl_clear(const char *what);

/* Constant-time equality of two equal-length buffers. */
int util_ct_equal(const void *a, const void *b, size_t n);

/* Fills buf with cryptographically random bytes. -1 on failure. */
int util_random(void *buf, size_t n);

uint64_t util_now_us(void);       /* CLOCK_MONOTONIC */
/* ms as a struct timeval, for evtimer_add and bufferevent timeouts. */
struct timeval util_ms_timeval(uint64_t ms);
uint64_t util_wall_ms(void);      /* CLOCK_REALTIME, ms since the epoch */
/* "2026-11-22T23:11:05.123Z" into out (at least 25 bytes). */
void util_rfc3339_ms(uint64_t wall_ms, char *out, size_t outlen);

/* Copies with truncation, always NUL-terminates; returns strlen(src). */
size_t util_strlcpy(char *dst, const char *src, size_t size);
/* ASCII case-insensitive equality. */
int util_strcaseeq(const char *a, const char *b);

/* Reads a whole small file (at most max bytes) into a malloc'd NUL-terminated buffer. */
char *util_read_file(const char *path, size_t max, size_t *out_len);
/* Writes data to path atomically: temp file in the same directory, fsync, rename, mode. */
int util_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);

#endif
