/* struct err helpers: fixed-size messages, never allocated, safe to use on any path. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int
err_set(struct err *err, enum err_code code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return -1;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

int
err_prefix(struct err *err, const char *fmt, ...)
{
    char prefix[ERR_MSG_MAX], old[ERR_MSG_MAX];
    va_list ap;

    if (err == NULL)
        return -1;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old);
    return -1;
}

void
err_clear(struct err *err)
{
    if (err == NULL)
        return;
    err->code = ERR_OK;
    err->msg[0] = '\0';
}
