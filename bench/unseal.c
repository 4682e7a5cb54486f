/*
 * Unseal latency of one vault backend, for bench/run: opens the vault, enrolls a 40-byte
 * secret, then times N vault_unseal_into calls into one reused locked buffer (as airlockd
 * injects) and prints "median_us p99_us". Built by bench/run against the static libraries
 * of a build directory; not part of the main build.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vault/vault.h"

#define UNSEAL_RUNS 200

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* usage: unseal pkcs11 DIR MODULE TOKEN_URI PIN_SPEC | unseal tpm2 DIR TCTI */
static int parse_args(int argc, char **argv, struct hsm_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    if (argc == 6 && strcmp(argv[1], "pkcs11") == 0) {
        cfg->backend = HSM_BACKEND_PKCS11;
        cfg->pkcs11_module = argv[3];
        cfg->pkcs11_token_uri = argv[4];
        cfg->pkcs11_pin = argv[5];
        cfg->pkcs11_key_label = "airlock-vault";
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "tpm2") == 0) {
        cfg->backend = HSM_BACKEND_TPM2;
        cfg->tpm2_tcti = argv[3];
        cfg->tpm2_primary_handle = 0x81000A1Cu;
        return 0;
    }
    fprintf(stderr, "usage: unseal pkcs11 DIR MODULE TOKEN_URI PIN_SPEC | unseal tpm2 DIR TCTI\n");
    return -1;
}

int main(int argc, char **argv)
{
    struct hsm_config cfg;
    struct err err = {0};
    unsigned char secret[40];
    static double lat[UNSEAL_RUNS];

    if (parse_args(argc, argv, &cfg) == -1)
        return 2;
    memset(secret, 'x', sizeof(secret));
    struct vault *v = vault_open(&cfg, argv[2], &err);
    if (v == NULL || vault_init(v, &err) == -1 ||
        vault_enroll(v, "bench", secret, sizeof(secret), 1, &err) == -1) {
        fprintf(stderr, "unseal: %s\n", err.msg);
        vault_close(v);
        return 1;
    }
    struct secbuf *sb = secbuf_new(VAULT_SECRET_MAX + 4096);
    if (sb == NULL) {
        fprintf(stderr, "unseal: cannot allocate locked memory\n");
        vault_close(v);
        return 1;
    }
    for (int i = 0; i < UNSEAL_RUNS; i++) {
        double t0 = now_us();
        if (vault_unseal_into(v, "bench", sb, &err) == -1 || sb->len != sizeof(secret)) {
            fprintf(stderr, "unseal: run %d: %s\n", i,
                    sb->len != sizeof(secret) && err.msg[0] == '\0' ? "wrong length" : err.msg);
            secbuf_free(sb);
            vault_close(v);
            return 1;
        }
        lat[i] = now_us() - t0;
        secbuf_wipe(sb);
    }
    secbuf_free(sb);
    vault_close(v);
    qsort(lat, UNSEAL_RUNS, sizeof(lat[0]), cmp_double);
    printf("%.1f %.1f\n", lat[UNSEAL_RUNS / 2], lat[(UNSEAL_RUNS * 99) / 100]);
    return 0;
}
