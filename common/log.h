/*
 * One-line-per-event logging to stderr, systemd style (no timestamps: the journal adds
 * them). Like OpenBSD's log.c: the object first, then what went wrong. Never pass secret
 * bytes to these functions.
 */
#ifndef AIRLOCK_COMMON_LOG_H
#define AIRLOCK_COMMON_LOG_H

void log_init(const char *progname, int verbose);
int log_verbose(void);
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Start-up only: log and exit with status. fatal() appends strerror(errno). */
void fatal(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
void fatalx(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

#endif
