/*
 * Error reporting for every module: a code plus a lower-case message that says what and
 * where ("policy.yaml:14:9: unknown credential \"gihub\""). Functions return 0 / -1 (or a
 * pointer / NULL) and fill a struct err when the caller needs the reason.
 */
#ifndef AIRLOCK_COMMON_ERR_H
#define AIRLOCK_COMMON_ERR_H

#include <stddef.h>

#define ERR_MSG_MAX 512

/* Broad classes; callers map them to exit statuses or decisions. */
enum err_code {
    ERR_OK = 0,
    ERR_USAGE,     /* bad arguments or configuration: exit 2 */
    ERR_IO,        /* file or socket failure */
    ERR_PARSE,     /* malformed input */
    ERR_TOKEN,     /* hardware token unavailable or refused */
    ERR_CRYPTO,    /* integrity or crypto failure (bad tag, bad mac) */
    ERR_NOTFOUND,  /* named object does not exist */
    ERR_EXISTS,    /* named object already exists */
    ERR_LIMIT,     /* a bound was exceeded */
    ERR_INTERNAL,
};

struct err {
    enum err_code code;
    char msg[ERR_MSG_MAX];
};

/* Sets code and a printf-formatted message. err may be NULL. Always returns -1. */
int err_set(struct err *err, enum err_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the existing message with "prefix: ". err may be NULL. Returns -1. */
int err_prefix(struct err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void err_clear(struct err *err);

#endif
