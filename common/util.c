/* Shared helpers. Nothing here allocates except util_read_file. */
#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "common/log.h"

#define OSSL_CLEAR_MAX 64 /* entries counted before the rest is dropped uncounted */

static int
parse_number_unit(const char *s, uint64_t *num, const char **unit)
{
    uint64_t v = 0;
    const char *p = s;

    if (s == NULL || !isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p)) {
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
    }
    *num = v;
    *unit = p;
    return 0;
}

int
util_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    static const struct { const char *unit; uint64_t ms; } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    uint64_t v;
    const char *u;
    size_t i;

    if (parse_number_unit(s, &v, &u) == -1)
        return -1;
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(u, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].ms)
                return -1;
            *out_ms = v * units[i].ms;
            return 0;
        }
    }
    return -1;
}

int
util_parse_size(const char *s, uint64_t *out_bytes)
{
    static const struct { const char *unit; uint64_t mul; } units[] = {
        {"", 1}, {"B", 1}, {"KiB", 1024}, {"MiB", 1024 * 1024}, {"GiB", 1024ull * 1024 * 1024},
        {"KB", 1000}, {"MB", 1000000}, {"GB", 1000000000ull},
    };
    uint64_t v;
    const char *u;
    size_t i;

    if (parse_number_unit(s, &v, &u) == -1)
        return -1;
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(u, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].mul)
                return -1;
            *out_bytes = v * units[i].mul;
            return 0;
        }
    }
    return -1;
}

void
util_hex_encode(const void *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = in;
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 0xf];
    }
    out[2 * n] = '\0';
}

int
util_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
util_hex_decode(const char *hex, void *out, size_t n)
{
    unsigned char *p = out;
    size_t i;
    int hi, lo;

    for (i = 0; i < n; i++) {
        if ((hi = util_hex_digit((unsigned char)hex[2 * i])) < 0)
            return -1;
        if ((lo = util_hex_digit((unsigned char)hex[2 * i + 1])) < 0)
            return -1;
        p[i] = (unsigned char)(hi << 4 | lo);
    }
    return hex[2 * n] == '\0' ? 0 : -1;
}

int
util_ossl_clear(const char *what)
{
    unsigned long e = ERR_peek_error();
    char reason[256];
    int n = 0;

    if (e == 0)
        return 0;
    ERR_error_string_n(e, reason, sizeof(reason));
    while (n < OSSL_CLEAR_MAX && ERR_get_error() != 0)
        n++;
    ERR_clear_error();
    log_debug("%s: dropped %d stale openssl error%s, first: %s", what != NULL ? what : "openssl", n,
              n == 1 ? "" : "s", reason);
    return n;
}

/*
 * SHA-256 fetched once: EVP_sha256() makes every EVP_Digest look the algorithm up in the
 * provider store again (~2.3k instructions a call, per request). pthread_once because the
 * token worker hashes too. Never freed: it lives as long as the process (still reachable).
 */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;

static void
sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256_md == NULL)
        util_ossl_clear("sha-256 fetch"); /* falls back to the implicit fetch per call */
}

void
util_sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int outlen = 32;

    pthread_once(&sha256_once, sha256_fetch);
    if (EVP_Digest(data, len, out, &outlen, sha256_md != NULL ? sha256_md : EVP_sha256(),
            NULL) != 1)
        util_ossl_clear("sha-256"); /* only without memory; never leave the queue dirty */
}

void
util_sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1])
{
    unsigned char md[32];

    util_sha256(data, len, md);
    util_hex_encode(md, sizeof(md), out);
}

int
util_ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

int
util_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    ssize_t r;

    while (n > 0) {
        r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

struct timeval
util_ms_timeval(uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};

    return tv;
}

uint64_t
util_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t
util_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void
util_rfc3339_ms(uint64_t wall_ms, char *out, size_t outlen)
{
    time_t t = (time_t)(wall_ms / 1000);
    struct tm tm;
    char base[32];

    gmtime_r(&t, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, outlen, "%s.%03uZ", base, (unsigned)(wall_ms % 1000));
}

size_t
util_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);

    if (size > 0) {
        size_t c = n < size - 1 ? n : size - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

int
util_strcaseeq(const char *a, const char *b)
{
    while (*a && *b) {
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return 0;
        a++;
        b++;
    }
    return *a == *b;
}

char *
util_read_file(const char *path, size_t max, size_t *out_len)
{
    FILE *f;
    char *buf;
    size_t n;

    if ((f = fopen(path, "rb")) == NULL)
        return NULL;
    if ((buf = malloc(max + 1)) == NULL) {
        fclose(f);
        return NULL;
    }
    n = fread(buf, 1, max + 1, f);
    if (ferror(f) || n > max) {
        fclose(f);
        free(buf);
        errno = n > max ? EFBIG : EIO;
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    if (out_len != NULL)
        *out_len = n;
    return buf;
}

int
util_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
    char tmp[PATH_MAX];
    const unsigned char *p = data;
    int fd, saved;
    ssize_t w;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) == -1)
        return -1;
    while (len > 0) {
        w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fchmod(fd, mode) == -1 || fsync(fd) == -1)
        goto fail;
    if (close(fd) == -1) {
        fd = -1;
        goto fail;
    }
    if (rename(tmp, path) == -1) {
        fd = -1;
        goto fail;
    }
    return 0;
fail:
    saved = errno;
    if (fd != -1)
        close(fd);
    unlink(tmp);
    errno = saved;
    return -1;
}
