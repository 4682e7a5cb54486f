/*
 * common/log.h for the stateful fuzz targets: every message is still formatted (so a bad
 * format argument is caught by the sanitizers) but nothing is written, which keeps the
 * fuzzer fast and its log readable. fatal()/fatalx() abort: start-up errors are findings.
 */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int quiet_verbose;

void
log_init(const char *progname, int verbose)
{
    (void)progname;
    quiet_verbose = verbose;
}

int
log_verbose(void)
{
    return quiet_verbose;
}

#define QUIET_FN(fn)                                                                               \
    void fn(const char *fmt, ...)                                                                  \
    {                                                                                              \
        char line[2048];                                                                           \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        (void)vsnprintf(line, sizeof(line), fmt, ap);                                              \
        va_end(ap);                                                                                \
    }

QUIET_FN(log_debug)
QUIET_FN(log_info)
QUIET_FN(log_warn)
QUIET_FN(log_error)

void
fatal(int status, const char *fmt, ...)
{
    (void)status;
    (void)fmt;
    abort();
}

void
fatalx(int status, const char *fmt, ...)
{
    (void)status;
    (void)fmt;
    abort();
}
