/* airlock: the command-line interface. Parses arguments and calls the cli_*.c commands. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "cmd/daemon.h"
#include "common/log.h"
#include "policy/policy.h"

static void
usage(FILE *f)
{
    fprintf(f,
        "usage: airlock [-c PATH] COMMAND [ARGS]\n"
        "commands:\n"
        "  init                      prepare the token and the local CA\n"
        "  enroll NAME [--replace]   seal a secret read from standard input\n"
        "  list                      list enrolled credentials (never their values)\n"
        "  remove NAME               delete a credential\n"
        "  pending                   list requests waiting for approval\n"
        "  approve ID | deny ID      decide a pending request\n"
        "  watch                     follow pending requests live\n"
        "  status                    show the daemon's state\n"
        "  ca                        print the local CA certificate path and fingerprint\n"
        "  env [--agent NAME] [--token-file PATH]\n"
        "                            print shell lines that route tools through airlock\n"
        "  audit verify [PATH]       check the audit log's hash chain\n"
        "  buddy pair [TTY]          pair a buddy device (hold its button while plugging in)\n");
}

static struct policy *
load_policy(const char *config)
{
    char path[PATH_MAX];
    struct policy *p;
    struct err err;

    if (daemon_config_path(config, path, sizeof(path)) == -1) {
        fprintf(stderr, "airlock: no configuration: give -c PATH or set AIRLOCK_CONFIG\n");
        return NULL;
    }
    if ((p = policy_load(path, &err)) == NULL)
        fprintf(stderr, "airlock: %s\n", err.msg);
    return p;
}

static const char *
control_socket(const struct policy *p)
{
    if (p->control_path == NULL)
        fprintf(stderr, "airlock: %s: listen.control is not configured\n", p->path);
    return p->control_path;
}

/* Commands that talk to the daemon over the control socket. */
static int
run_control(const struct policy *p, const char *cmd, int argc, char **argv)
{
    const char *sock = control_socket(p);

    if (sock == NULL)
        return 2;
    if (strcmp(cmd, "pending") == 0 && argc == 0)
        return cli_pending(sock);
    if (strcmp(cmd, "status") == 0 && argc == 0)
        return cli_status(sock);
    if (strcmp(cmd, "watch") == 0 && argc == 0)
        return cli_watch(sock);
    if ((strcmp(cmd, "approve") == 0 || strcmp(cmd, "deny") == 0) && argc == 1)
        return cli_approve(sock, argv[0], strcmp(cmd, "approve") == 0);
    usage(stderr);
    return 2;
}

static int
run_env(const struct policy *p, int argc, char **argv)
{
    const char *agent = NULL, *token_file = NULL;
    int i;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc)
            agent = argv[++i];
        else if (strcmp(argv[i], "--token-file") == 0 && i + 1 < argc)
            token_file = argv[++i];
        else {
            usage(stderr);
            return 2;
        }
    }
    return cli_env(p, agent, token_file);
}

#ifndef AIRLOCK_HAVE_TLS
/* Built without the TLS toolkit: interception, and so `ca` and `env`, are unavailable. */
int
cli_ca(const struct policy *p)
{
    fprintf(stderr, "airlock: ca: this build has no TLS interception\n");
    return 1;
}

int
cli_env(const struct policy *p, const char *agent, const char *token_file)
{
    fprintf(stderr, "airlock: env: this build has no TLS interception\n");
    return 1;
}
#endif

static int
run(const struct policy *p, const char *cmd, int argc, char **argv)
{
    if (strcmp(cmd, "init") == 0 && argc == 0)
        return cli_init(p);
    if (strcmp(cmd, "enroll") == 0 && argc == 1)
        return cli_enroll(p, argv[0], 0);
    if (strcmp(cmd, "enroll") == 0 && argc == 2 && strcmp(argv[1], "--replace") == 0)
        return cli_enroll(p, argv[0], 1);
    if (strcmp(cmd, "list") == 0 && argc == 0)
        return cli_list(p);
    if (strcmp(cmd, "remove") == 0 && argc == 1)
        return cli_remove(p, argv[0]);
    if (strcmp(cmd, "ca") == 0 && argc == 0)
        return cli_ca(p);
    if (strcmp(cmd, "env") == 0)
        return run_env(p, argc, argv);
    if (strcmp(cmd, "audit") == 0 && argc == 1 && strcmp(argv[0], "verify") == 0)
        return cli_audit_verify(p->audit_path);
    if (strcmp(cmd, "buddy") == 0 && argc >= 1 && argc <= 2 && strcmp(argv[0], "pair") == 0)
        return cli_buddy_pair(p, argc == 2 ? argv[1] : NULL);
    return run_control(p, cmd, argc, argv);
}

int
main(int argc, char **argv)
{
    const char *config = NULL;
    struct policy *p;
    int ch, status;

    log_init("airlock", 0);
    while ((ch = getopt(argc, argv, "+c:hv")) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'v': log_init("airlock", 1); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    /* audit verify PATH needs no configuration: it is how a copied log is checked. */
    if (strcmp(argv[0], "audit") == 0 && argc == 3 && strcmp(argv[1], "verify") == 0)
        return cli_audit_verify(argv[2]);
    if ((p = load_policy(config)) == NULL)
        return 2;
    status = run(p, argv[0], argc - 1, argv + 1);
    policy_unref(p);
    return status;
}
