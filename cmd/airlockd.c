/* airlockd: the egress proxy daemon. Runs in the foreground, logs to stderr. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/daemon.h"
#include "common/log.h"

static void
usage(FILE *f)
{
    fprintf(f, "usage: airlockd [-v] [--check] [-c PATH]\n");
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'k'},
        {"verbose", no_argument, NULL, 'v'},      {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    char path[PATH_MAX];
    int ch, check = 0, verbose = 0;

    while ((ch = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'k': check = 1; break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    log_init("airlockd", verbose);
    if (daemon_config_path(config, path, sizeof(path)) == -1) {
        log_error("no configuration: give -c PATH or set AIRLOCK_CONFIG");
        return 2;
    }
    return check ? daemon_check(path) : daemon_run(path);
}
