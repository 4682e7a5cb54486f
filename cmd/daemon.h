/*
 * The daemon's wiring: load the policy, open the audit log, vault, approvals, control
 * socket and device link, bind the proxy, run the event loop, reload on SIGHUP and drain
 * on SIGTERM. airlockd.c only parses arguments and calls daemon_run().
 */
#ifndef AIRLOCK_CMD_DAEMON_H
#define AIRLOCK_CMD_DAEMON_H

/* Runs until SIGTERM/SIGINT. Returns the process exit status (0, 1, or 2 for config). */
int daemon_run(const char *config_path);
/* Loads and validates only; prints the error with its position. Exit status. */
int daemon_check(const char *config_path);
/* -c PATH, else $AIRLOCK_CONFIG, else ~/.config/airlock/airlock.yaml, into out. */
int daemon_config_path(const char *arg, char *out, size_t outlen);

#endif
