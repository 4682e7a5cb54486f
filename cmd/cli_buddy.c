/*
 * `airlock buddy pair [TTY]`: makes a fresh 32-byte pair key, hands it to a buddy device
 * in pairing mode (device/pair.c proves the device took it), then seals it in the vault
 * as the credential "_buddy", which the daemon unseals for `auth: hmac`.
 */
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"
#include "common/secmem.h"
#include "common/util.h"
#include "device/buddy.h"
#include "hsm/hsm.h"
#include "policy/policy.h"
#include "vault/vault.h"

#define BUDDY_CREDENTIAL "_buddy"
#define PAIR_TIMEOUT_MS 10000

/* The tty to use: the argument, else approvals.device.path, resolving "auto". */
static int
pick_tty(const struct policy *p, const char *arg, char *out, size_t cap)
{
    const char *path = arg != NULL ? arg : p->approvals.device_path;

    if (path == NULL || strcmp(path, "auto") == 0) {
        if (buddy_serial_auto_path(out, cap) < 0) {
            fprintf(stderr, "airlock: no device under /dev/serial/by-id; plug it in or name "
                            "the tty: airlock buddy pair /dev/ttyACM0\n");
            return -1;
        }
        return 0;
    }
    util_strlcpy(out, path, cap);
    return 0;
}

/* Pairs and returns the device id; the key in *key is what the device now holds. */
static int
pair_device(const char *tty, unsigned baud, struct secbuf *key, char devid[17])
{
    struct err err;

    err_clear(&err);
    if (util_random(key->data, BUDDY_KEY_LEN) < 0) {
        fprintf(stderr, "airlock: cannot get random bytes for the pair key\n");
        return -1;
    }
    key->len = BUDDY_KEY_LEN;
    printf("pairing with the device on %s (it must be in pairing mode: hold its button "
           "for 3 s while plugging it in; airlockd must not hold the port)\n", tty);
    fflush(stdout);
    if (buddy_pair_blocking(tty, baud, key->data, devid, PAIR_TIMEOUT_MS, &err) < 0) {
        fprintf(stderr, "airlock: buddy pair: %s\n", err.msg);
        return -1;
    }
    return 0;
}

int
cli_buddy_pair(const struct policy *p, const char *tty_path)
{
    struct hsm_config cfg;
    struct vault *v;
    struct secbuf *key;
    struct err err;
    char tty[512], devid[17] = "";
    int rc = 1;

    if (p->vault.backend == POLICY_BACKEND_NONE) {
        fprintf(stderr, "airlock: %s: no vault: section; the pair key is kept sealed in "
                        "the vault\n", p->path);
        return 2;
    }
    if (pick_tty(p, tty_path, tty, sizeof(tty)) < 0)
        return 2;
    /* The vault first: if the token is away, leave the device's current pairing alone. */
    err_clear(&err);
    vault_config_from_policy(p, &cfg);
    if ((v = vault_open(&cfg, p->vault.dir, &err)) == NULL) {
        fprintf(stderr, "airlock: vault: %s\n", err.msg);
        return 1;
    }
    if ((key = secbuf_new(BUDDY_KEY_LEN)) == NULL) {
        fprintf(stderr, "airlock: cannot allocate locked memory for the pair key\n");
        vault_close(v);
        return 1;
    }
    if (pair_device(tty, p->approvals.device_baud ? p->approvals.device_baud : 115200, key,
            devid) == 0) {
        if (vault_enroll(v, BUDDY_CREDENTIAL, key->data, key->len, 1, &err) < 0) {
            fprintf(stderr, "airlock: device %s took the key but the vault did not (%s); "
                            "pair again\n", devid, err.msg);
        } else {
            printf("paired with device %s; key sealed in the vault as %s (restart airlockd "
                   "to use it)\n", devid, BUDDY_CREDENTIAL);
            rc = 0;
        }
    }
    secbuf_free(key);
    vault_close(v);
    return rc;
}
