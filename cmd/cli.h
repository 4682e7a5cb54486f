/*
 * The airlock CLI's subcommands, one file per area: cli_vault.c (init, enroll, list,
 * remove), cli_control.c (pending, approve, deny, watch, status), cli_audit.c (audit
 * verify), cli_tls.c (ca, env), cli_buddy.c (buddy pair). Each returns an exit status:
 * 0 success, 1 runtime failure, 2 usage or configuration error.
 */
#ifndef AIRLOCK_CMD_CLI_H
#define AIRLOCK_CMD_CLI_H

struct policy;

int cli_init(const struct policy *p);
int cli_enroll(const struct policy *p, const char *name, int replace);
int cli_list(const struct policy *p);
int cli_remove(const struct policy *p, const char *name);

int cli_pending(const char *sock);
int cli_approve(const char *sock, const char *id, int approve);
int cli_status(const char *sock);
int cli_watch(const char *sock);

int cli_audit_verify(const char *path);

int cli_ca(const struct policy *p);
int cli_env(const struct policy *p, const char *agent, const char *token_file);

int cli_buddy_pair(const struct policy *p, const char *tty_path);

#endif
