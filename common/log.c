/* stderr logger: "<prog>: <level>: message". A single write per line keeps lines whole. */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *log_prog = "airlock";
static int log_level_verbose;

void
log_init(const char *progname, int verbose)
{
    log_prog = progname;
    log_level_verbose = verbose;
}

int
log_verbose(void)
{
    return log_level_verbose;
}

static void log_vemit(const char *level, const char *fmt, va_list ap, const char *suffix)
    __attribute__((format(printf, 2, 0)));

static void
log_vemit(const char *level, const char *fmt, va_list ap, const char *suffix)
{
    char line[2048];
    int n, m;

    n = snprintf(line, sizeof(line), "%s: %s: ", log_prog, level);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    if (m < 0)
        return;
    n += m;
    if ((size_t)n >= sizeof(line) - 64)
        n = (int)sizeof(line) - 64;
    if (suffix != NULL)
        n += snprintf(line + n, sizeof(line) - (size_t)n, ": %s", suffix);
    if ((size_t)n >= sizeof(line) - 1)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    (void)!write(STDERR_FILENO, line, (size_t)n);
}

#define LOG_FN(fn, level, cond)                                                                    \
    void fn(const char *fmt, ...)                                                                  \
    {                                                                                              \
        va_list ap;                                                                                \
        if (!(cond))                                                                               \
            return;                                                                                \
        va_start(ap, fmt);                                                                         \
        log_vemit(level, fmt, ap, NULL);                                                           \
        va_end(ap);                                                                                \
    }

LOG_FN(log_debug, "debug", log_level_verbose)
LOG_FN(log_info, "info", 1)
LOG_FN(log_warn, "warning", 1)
LOG_FN(log_error, "error", 1)

void
fatal(int status, const char *fmt, ...)
{
    va_list ap;
    const char *e = strerror(errno);

    va_start(ap, fmt);
    log_vemit("fatal", fmt, ap, e);
    va_end(ap);
    exit(status);
}

void
fatalx(int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit("fatal", fmt, ap, NULL);
    va_end(ap);
    exit(status);
}
