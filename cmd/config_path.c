/* Where the configuration is: -c PATH, else $AIRLOCK_CONFIG, else ~/.config/airlock/. */
#include <stdio.h>
#include <stdlib.h>

#include "cmd/daemon.h"
#include "common/util.h"

int
daemon_config_path(const char *arg, char *out, size_t outlen)
{
    const char *env = getenv("AIRLOCK_CONFIG"), *home = getenv("HOME");

    if (arg != NULL)
        return util_strlcpy(out, arg, outlen) < outlen ? 0 : -1;
    if (env != NULL && *env != '\0')
        return util_strlcpy(out, env, outlen) < outlen ? 0 : -1;
    if (home == NULL || *home == '\0')
        return -1;
    return snprintf(out, outlen, "%s/.config/airlock/airlock.yaml", home) < (int)outlen ? 0 : -1;
}
