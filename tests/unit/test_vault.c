/*
 * Unit tests for the vault: the blob file codec on hostile bytes (every truncation, bad
 * fields, trailing data), name rules, and enroll/unseal/list/remove on a real token:
 * SoftHSM2 per test by default; a TPM when AIRLOCK_TEST_BACKEND=tpm2 (AIRLOCK_TEST_TCTI, or a
 * swtpm of its own). Also the vault commands of the CLI (cmd/cli_vault.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cmd/cli.h"
#include "common/util.h"
#include "policy/policy.h"
#include "vault/vault.h"

#define MODULE "/usr/lib/softhsm/libsofthsm2.so"

struct env {
    const char *src;
    int tpm2;
    char tpmdir[128]; /* swtpm state, for the whole group */
    char tcti[128];
    char dir[128]; /* per test */
    char vdir[192];
};

static struct env g;

static const char SECRET[] = "sk-live-0123456789-SECRET-VALUE";

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* Runs a shell command; the first output line into out. */
static int
run(const char *cmd, char *out, size_t outlen)
{
    char line[400] = "";
    FILE *p = popen(cmd, "r");

    if (p == NULL)
        return -1;
    if (fgets(line, sizeof(line), p) == NULL)
        line[0] = '\0';
    while (fgetc(p) != EOF) /* bounded by the script's output */
        ;
    line[strcspn(line, "\n")] = '\0';
    if (out != NULL)
        snprintf(out, outlen, "%s", line);
    return pclose(p) == 0 ? 0 : -1;
}

static int
group_setup(void **state)
{
    const char *b = getenv("AIRLOCK_TEST_BACKEND");
    char cmd[768];

    signal(SIGPIPE, SIG_IGN);
    if ((g.src = getenv("AIRLOCK_SOURCE_DIR")) == NULL) {
        fprintf(stderr, "AIRLOCK_SOURCE_DIR is not set (run through ctest)\n");
        return -1;
    }
    g.tpm2 = b != NULL && strcmp(b, "tpm2") == 0;
    if (!g.tpm2)
        return 0;
    if (getenv("AIRLOCK_TEST_TCTI") != NULL) { /* a TPM the caller runs */
        snprintf(g.tcti, sizeof(g.tcti), "%s", getenv("AIRLOCK_TEST_TCTI"));
        return 0;
    }
    snprintf(g.tpmdir, sizeof(g.tpmdir), "/tmp/airlock-vtpm-XXXXXX");
    if (mkdtemp(g.tpmdir) == NULL)
        return -1;
    snprintf(cmd, sizeof(cmd), "'%s/scripts/swtpm-start' '%s/state' '%s/port'", g.src, g.tpmdir,
             g.tpmdir);
    if (run(cmd, g.tcti, sizeof(g.tcti)) == -1) {
        fprintf(stderr, "swtpm-start failed\n");
        return -1;
    }
    return 0;
}

static int
group_teardown(void **state)
{
    char cmd[512];

    if (g.tpm2 && g.tpmdir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "'%s/scripts/swtpm-stop' '%s/state'", g.src, g.tpmdir);
        run(cmd, NULL, 0);
        nftw(g.tpmdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    return 0;
}

static int
setup(void **state)
{
    char cmd[512], line[400];

    snprintf(g.dir, sizeof(g.dir), "/tmp/airlock-vault-XXXXXX");
    if (mkdtemp(g.dir) == NULL)
        return -1;
    snprintf(g.vdir, sizeof(g.vdir), "%s/state/vault", g.dir); /* two levels to create */
    if (g.tpm2)
        return 0;
    snprintf(cmd, sizeof(cmd), "'%s/scripts/softhsm-setup' '%s/h' airlock 1234", g.src, g.dir);
    if (run(cmd, line, sizeof(line)) == -1 || strncmp(line, "export SOFTHSM2_CONF=", 21) != 0) {
        fprintf(stderr, "softhsm-setup failed: %s\n", line);
        return -1;
    }
    setenv("SOFTHSM2_CONF", line + 21, 1);
    setenv("AIRLOCK_TEST_PIN", "1234", 1);
    return 0;
}

static int
teardown(void **state)
{
    nftw(g.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static enum hsm_backend
backend(void)
{
    return g.tpm2 ? HSM_BACKEND_TPM2 : HSM_BACKEND_PKCS11;
}

static struct vault *
open_vault(void)
{
    struct hsm_config cfg = {
        .backend = backend(),
        .pkcs11_module = MODULE,
        .pkcs11_token_uri = "pkcs11:token=airlock",
        .pkcs11_pin = "env:AIRLOCK_TEST_PIN",
        .pkcs11_key_label = "airlock-vault",
        .tpm2_tcti = g.tcti,
        .tpm2_primary_handle = HSM_TPM2_DEFAULT_PRIMARY,
    };
    struct err err = {0};
    struct vault *v = vault_open(&cfg, g.vdir, &err);

    if (v == NULL)
        fail_msg("vault_open: %s", err.msg);
    if (vault_init(v, &err) == -1)
        fail_msg("vault_init: %s", err.msg);
    return v;
}

static void
enroll_ok(struct vault *v, const char *name, const char *secret, int replace)
{
    struct err err = {0};

    if (vault_enroll(v, name, (const unsigned char *)secret, strlen(secret), replace, &err))
        fail_msg("vault_enroll %s: %s", name, err.msg);
}

static void
assert_unseals(struct vault *v, const char *name, const char *want)
{
    struct secbuf *out = NULL;
    struct err err = {0};

    if (vault_unseal(v, name, &out, &err) == -1)
        fail_msg("vault_unseal %s: %s", name, err.msg);
    assert_int_equal(out->len, strlen(want));
    assert_memory_equal(out->data, want, strlen(want));
    secbuf_free(out);
}

static void
assert_unseal_fails(struct vault *v, const char *name, enum err_code code, const char *msg)
{
    struct secbuf *out = NULL;
    struct err err = {0};

    assert_int_equal(vault_unseal(v, name, &out, &err), -1);
    assert_null(out);
    if (err.code != code || strstr(err.msg, msg) == NULL)
        fail_msg("unseal %s: expected %d \"%s\", got %d: %s", name, code, msg, err.code, err.msg);
}

static char *
blob_path(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s.sealed", g.vdir, name);
    return buf;
}

/* ---- codec, no token ---- */

static void
test_blob_roundtrip_and_truncations(void **state)
{
    const unsigned char data[] = {0, 1, 2, 3, 0xff, 0xfe};
    const unsigned char *d;
    unsigned char *buf = NULL;
    size_t len = 0, dlen, i;
    enum hsm_backend b;
    char name[VAULT_NAME_MAX + 1];
    uint64_t created;
    struct err err;

    assert_int_equal(vault_blob_encode(HSM_BACKEND_TPM2, "github", 0x0102030405060708ull, data,
                                       sizeof(data), &buf, &len),
                     0);
    assert_int_equal(len, 4 + 3 + 6 + 8 + 4 + sizeof(data));
    assert_memory_equal(buf, "ALCK\x01\x02\x06github\x01\x02\x03\x04\x05\x06\x07\x08", 21);
    assert_int_equal(vault_blob_decode(buf, len, &b, name, &created, &d, &dlen, &err), 0);
    assert_int_equal(b, HSM_BACKEND_TPM2);
    assert_string_equal(name, "github");
    assert_true(created == 0x0102030405060708ull);
    assert_int_equal(dlen, sizeof(data));
    assert_memory_equal(d, data, sizeof(data));
    for (i = 0; i < len; i++) {
        err.code = ERR_OK;
        assert_int_equal(vault_blob_decode(buf, i, &b, name, &created, &d, &dlen, &err), -1);
        assert_int_equal(err.code, ERR_PARSE);
    }
    free(buf);
}

/* Decoding buf with byte at off set to val must fail with ERR_PARSE. */
static void
assert_bad_byte(const unsigned char *orig, size_t len, size_t off, unsigned char val)
{
    unsigned char copy[128];
    const unsigned char *d;
    char name[VAULT_NAME_MAX + 1];
    enum hsm_backend b;
    uint64_t created;
    size_t dlen;
    struct err err = {0};

    assert_true(len <= sizeof(copy));
    memcpy(copy, orig, len);
    copy[off] = val;
    assert_int_equal(vault_blob_decode(copy, len, &b, name, &created, &d, &dlen, &err), -1);
    assert_int_equal(err.code, ERR_PARSE);
}

static void
test_blob_bad_fields(void **state)
{
    unsigned char *buf = NULL, big[80];
    size_t len = 0;
    const unsigned char *d;
    char name[VAULT_NAME_MAX + 1];
    enum hsm_backend b;
    uint64_t created;
    size_t dlen;
    struct err err = {0};

    assert_int_equal(
        vault_blob_encode(HSM_BACKEND_PKCS11, "ab", 1, (const unsigned char *)"xy", 2, &buf, &len),
        0);
    assert_bad_byte(buf, len, 0, 'X'); /* magic */
    assert_bad_byte(buf, len, 4, 2);   /* version */
    assert_bad_byte(buf, len, 5, 0);   /* backend */
    assert_bad_byte(buf, len, 5, 3);
    assert_bad_byte(buf, len, 6, 0); /* name length */
    assert_bad_byte(buf, len, 6, 3);
    assert_bad_byte(buf, len, 6, 200);
    assert_bad_byte(buf, len, 7, '/'); /* name characters */
    assert_bad_byte(buf, len, 8, '\0');
    assert_bad_byte(buf, len, 8 + 8 + 4, 3); /* data length */
    assert_bad_byte(buf, len, 8 + 8 + 1, 1); /* data length over 64 KiB (and over len) */
    /* One trailing byte. */
    memcpy(big, buf, len);
    big[len] = 0;
    assert_int_equal(vault_blob_decode(big, len + 1, &b, name, &created, &d, &dlen, &err), -1);
    assert_int_equal(err.code, ERR_PARSE);
    free(buf);

    /* The encoder refuses what the decoder would. */
    assert_int_equal(vault_blob_encode(HSM_BACKEND_PKCS11, "a/b", 1, big, 1, &buf, &len), -1);
    assert_int_equal(vault_blob_encode(HSM_BACKEND_PKCS11, "", 1, big, 1, &buf, &len), -1);
    assert_int_equal(vault_blob_encode((enum hsm_backend)7, "a", 1, big, 1, &buf, &len), -1);
    assert_int_equal(
        vault_blob_encode(HSM_BACKEND_PKCS11, "a", 1, big, VAULT_DATA_MAX + 1, &buf, &len), -1);
}

static void
test_names_and_aad(void **state)
{
    char n64[65], n65[66];
    unsigned char aad[80];

    memset(n64, 'a', 64);
    n64[64] = '\0';
    memset(n65, 'a', 65);
    n65[65] = '\0';
    assert_true(vault_name_valid("github"));
    assert_true(vault_name_valid("_buddy"));
    assert_true(vault_name_valid("_ca"));
    assert_true(vault_name_valid("Open-AI_2"));
    assert_true(vault_name_valid(n64));
    assert_false(vault_name_valid(n65));
    assert_false(vault_name_valid(""));
    assert_false(vault_name_valid(NULL));
    assert_false(vault_name_valid("../etc"));
    assert_false(vault_name_valid("a.b"));
    assert_false(vault_name_valid("a b"));
    assert_false(vault_name_valid("caf\xc3\xa9"));

    assert_int_equal(vault_blob_aad(HSM_BACKEND_PKCS11, "github", aad, sizeof(aad)), 12);
    assert_memory_equal(aad, "ALCK\x01\x01github", 12);
    assert_int_equal(vault_blob_aad(HSM_BACKEND_TPM2, "github", aad, sizeof(aad)), 12);
    assert_memory_equal(aad, "ALCK\x01\x02github", 12);
    assert_int_equal(vault_blob_aad(HSM_BACKEND_TPM2, "github", aad, 11), 0);
    assert_int_equal(vault_blob_aad(HSM_BACKEND_TPM2, "a.b", aad, sizeof(aad)), 0);
}

/* ---- on a token ---- */

static void
test_enroll_list_remove(void **state)
{
    struct vault *v = open_vault();
    struct vault_entry *e = NULL;
    struct err err = {0};
    uint64_t before = util_wall_ms();
    struct stat st;
    size_t n = 0;
    char path[256];
    FILE *f;

    assert_int_equal(stat(g.vdir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(vault_list(v, &e, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_null(e);
    enroll_ok(v, "openai", "sk-openai", 0);
    enroll_ok(v, "github", SECRET, 0);
    enroll_ok(v, "_buddy", "pairkey", 0);
    /* Files that are not blobs are ignored; a corrupt blob is skipped, not fatal. */
    assert_non_null(f = fopen(blob_path("junk", path, sizeof(path)), "w"));
    fputs("not a blob", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/README", g.vdir);
    assert_non_null(f = fopen(path, "w"));
    fclose(f);

    assert_int_equal(vault_list(v, &e, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(e[0].name, "_buddy");
    assert_string_equal(e[1].name, "github");
    assert_string_equal(e[2].name, "openai");
    assert_int_equal(e[1].backend, backend());
    assert_true(e[1].created_ms >= before && e[1].created_ms <= util_wall_ms());
    free(e);

    assert_unseals(v, "github", SECRET);
    assert_unseals(v, "_buddy", "pairkey");
    assert_int_equal(vault_remove(v, "github", &err), 0);
    assert_unseal_fails(v, "github", ERR_NOTFOUND, "vault: github: not enrolled");
    assert_int_equal(vault_remove(v, "github", &err), -1);
    assert_int_equal(err.code, ERR_NOTFOUND);
    assert_int_equal(vault_remove(v, "../h", &err), -1);
    assert_int_equal(err.code, ERR_USAGE);
    assert_unseals(v, "openai", "sk-openai");
    assert_int_equal(vault_health(v, &err), 0);
    vault_close(v);
    vault_close(NULL);
}

static void
test_replace_and_limits(void **state)
{
    struct vault *v = open_vault();
    unsigned char *big = calloc(1, VAULT_SECRET_MAX + 1);
    struct err err = {0};

    assert_non_null(big);
    enroll_ok(v, "github", "first", 0);
    assert_int_equal(vault_enroll(v, "github", (const unsigned char *)"second", 6, 0, &err), -1);
    assert_int_equal(err.code, ERR_EXISTS);
    assert_unseals(v, "github", "first");
    enroll_ok(v, "github", "second", 1);
    assert_unseals(v, "github", "second");
    enroll_ok(v, "fresh", "x", 1); /* replace of an absent name just enrolls */
    assert_unseals(v, "fresh", "x");

    memset(big, 'k', VAULT_SECRET_MAX + 1);
    assert_int_equal(vault_enroll(v, "big", big, VAULT_SECRET_MAX + 1, 0, &err), -1);
    assert_int_equal(err.code, ERR_LIMIT);
    assert_int_equal(vault_enroll(v, "big", big, VAULT_SECRET_MAX, 0, &err), 0);
    assert_int_equal(vault_enroll(v, "empty", big, 0, 0, &err), -1);
    assert_int_equal(err.code, ERR_USAGE);
    assert_int_equal(vault_enroll(v, "a/b", big, 1, 0, &err), -1);
    assert_int_equal(err.code, ERR_USAGE);
    vault_close(v);
    free(big);
}

/* Reads a whole blob file (small) into buf; returns its length. */
static size_t
slurp(const char *name, unsigned char *buf, size_t cap)
{
    char path[256];
    size_t n;
    FILE *f;

    assert_non_null(f = fopen(blob_path(name, path, sizeof(path)), "rb"));
    n = fread(buf, 1, cap, f);
    fclose(f);
    assert_true(n < cap);
    return n;
}

static void
spill(const char *name, const unsigned char *buf, size_t len)
{
    char path[256];
    FILE *f;

    assert_non_null(f = fopen(blob_path(name, path, sizeof(path)), "wb"));
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

/*
 * vault_unseal_into reuses the caller's buffer and the sealed file's bytes cached in the
 * vault; a file replaced by another process (the CLI), altered in place or removed is
 * seen by the very next unseal.
 */
static void
test_unseal_into_and_cache(void **state)
{
    struct vault *v = open_vault(), *cli = open_vault();
    struct secbuf *buf = secbuf_new(VAULT_SECRET_MAX + 4096), *tiny = secbuf_new(8);
    static unsigned char blob[80000];
    struct err err = {0};
    char path[256];
    struct timespec later[2] = {{0, UTIME_OMIT}, {0, 0}};
    struct stat st;
    size_t n;
    int i;

    assert_non_null(buf);
    assert_non_null(tiny);
    enroll_ok(cli, "github", SECRET, 0);
    for (i = 0; i < 3; i++) {
        assert_int_equal(vault_unseal_into(v, "github", buf, &err), 0);
        assert_int_equal(buf->len, strlen(SECRET));
        assert_memory_equal(buf->data, SECRET, strlen(SECRET));
    }
    /* A buffer smaller than the blob is refused before the token sees anything. */
    assert_int_equal(vault_unseal_into(v, "github", tiny, &err), -1);
    assert_int_equal(err.code, ERR_LIMIT);
    assert_int_equal(tiny->len, 0);
    /* Rotated by another vault handle: a new file (rename), so a new inode. */
    enroll_ok(cli, "github", "rotated", 1);
    assert_int_equal(vault_unseal_into(v, "github", buf, &err), 0);
    assert_int_equal(buf->len, 7);
    assert_memory_equal(buf->data, "rotated", 7);
    /* Altered in place, same inode and size; the mtime moves on (set explicitly: a rewrite
     * within one clock tick keeps it, then the cached, authentic blob is used). */
    n = slurp("github", blob, sizeof(blob));
    blob[n - 5] ^= 0x40;
    spill("github", blob, n);
    assert_int_equal(stat(blob_path("github", path, sizeof(path)), &st), 0);
    later[1].tv_sec = st.st_mtim.tv_sec + 10;
    assert_int_equal(utimensat(AT_FDCWD, path, later, 0), 0);
    assert_int_equal(vault_unseal_into(v, "github", buf, &err), -1);
    assert_int_equal(err.code, ERR_CRYPTO);
    assert_int_equal(buf->len, 0);
    /* Removed by the other handle: not enrolled at once. */
    assert_int_equal(vault_remove(cli, "github", &err), 0);
    assert_int_equal(vault_unseal_into(v, "github", buf, &err), -1);
    assert_int_equal(err.code, ERR_NOTFOUND);
    enroll_ok(cli, "github", "back", 0);
    assert_unseals(v, "github", "back");
    secbuf_free(buf);
    secbuf_free(tiny);
    vault_close(cli);
    vault_close(v);
}

static void
test_file_mode_and_no_plaintext(void **state)
{
    struct vault *v = open_vault();
    static unsigned char buf[80000];
    char path[256];
    struct stat st;
    size_t n;

    enroll_ok(v, "github", SECRET, 0);
    assert_int_equal(stat(blob_path("github", path, sizeof(path)), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    n = slurp("github", buf, sizeof(buf));
    assert_null(memmem(buf, n, SECRET, strlen(SECRET)));
    assert_null(memmem(buf, n, "SECRET", 6));
    assert_memory_equal(buf, "ALCK\x01", 5);
    enroll_ok(v, "github", SECRET, 1); /* replacing keeps the mode */
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    vault_close(v);
}

static void
test_copied_and_corrupt_blobs(void **state)
{
    struct vault *v = open_vault();
    static unsigned char buf[80000];
    unsigned char *forged = NULL;
    const unsigned char *d;
    char name[VAULT_NAME_MAX + 1];
    enum hsm_backend b;
    uint64_t created;
    size_t n, dlen, flen = 0;
    struct err err = {0};

    enroll_ok(v, "github", SECRET, 0);
    n = slurp("github", buf, sizeof(buf));

    /* Copied as is: the header names another credential. */
    spill("openai", buf, n);
    assert_unseal_fails(v, "openai", ERR_PARSE, "vault: openai: blob name mismatch");
    /* Header rewritten to match: the seal is still bound to "github". */
    assert_int_equal(vault_blob_decode(buf, n, &b, name, &created, &d, &dlen, &err), 0);
    assert_int_equal(vault_blob_encode(b, "openai", created, d, dlen, &forged, &flen), 0);
    spill("openai", forged, flen);
    free(forged);
    assert_unseal_fails(v, "openai", ERR_CRYPTO, "vault: openai: ");

    /* Truncated, trailing garbage, flipped sealed byte, empty file. */
    spill("github", buf, n - 1);
    assert_unseal_fails(v, "github", ERR_PARSE, "vault: github: truncated blob");
    buf[n] = 'x';
    spill("github", buf, n + 1);
    assert_unseal_fails(v, "github", ERR_PARSE, "vault: github: 1 trailing bytes");
    buf[n - 1] ^= 0x40;
    spill("github", buf, n);
    assert_unseal_fails(v, "github", ERR_CRYPTO, "vault: github: ");
    buf[n - 1] ^= 0x40;
    spill("github", buf, 0);
    assert_unseal_fails(v, "github", ERR_PARSE, "vault: github: truncated blob");
    spill("github", buf, n);
    assert_unseals(v, "github", SECRET);

    /* A blob larger than any valid one is refused before it is read whole. */
    memset(buf, 'A', sizeof(buf));
    spill("huge", buf, sizeof(buf));
    assert_unseal_fails(v, "huge", ERR_PARSE, "vault: huge: blob file larger than");
    vault_close(v);
}

/* Without a token configuration list and remove still work; the rest refuse. */
static void
test_headers_only(void **state)
{
    struct vault *v = open_vault(), *hv;
    struct vault_entry *e = NULL;
    struct secbuf *out = NULL;
    struct err err = {0};
    size_t n = 0;

    enroll_ok(v, "github", SECRET, 0);
    enroll_ok(v, "openai", SECRET, 0);
    vault_close(v);
    assert_non_null(hv = vault_open(NULL, g.vdir, &err));
    assert_int_equal(vault_list(hv, &e, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(e[0].name, "github");
    free(e);
    assert_int_equal(vault_unseal(hv, "github", &out, &err), -1);
    assert_null(out);
    assert_int_equal(err.code, ERR_USAGE);
    assert_int_equal(vault_enroll(hv, "x", (const unsigned char *)"s", 1, 0, &err), -1);
    assert_int_equal(err.code, ERR_USAGE);
    assert_int_equal(vault_init(hv, &err), -1);
    assert_int_equal(vault_health(hv, &err), -1);
    assert_int_equal(vault_remove(hv, "openai", &err), 0);
    vault_close(hv);
}

/* ---- the CLI's vault commands ---- */

/* The parts of a loaded policy that cmd/cli_vault.c reads. */
static void
cli_policy(struct policy *p, char *audit)
{
    memset(p, 0, sizeof(*p));
    p->path = (char *)"test.yaml";
    p->vault.backend = g.tpm2 ? POLICY_BACKEND_TPM2 : POLICY_BACKEND_PKCS11;
    p->vault.dir = g.vdir;
    p->vault.pkcs11_module = (char *)MODULE;
    p->vault.pkcs11_token_uri = (char *)"pkcs11:token=airlock";
    p->vault.pkcs11_pin = (char *)"env:AIRLOCK_TEST_PIN";
    p->vault.pkcs11_key_label = (char *)"airlock-vault";
    p->vault.tpm2_tcti = g.tcti;
    p->vault.tpm2_primary_handle = HSM_TPM2_DEFAULT_PRIMARY;
    p->audit_path = audit;
}

/* Runs cli_enroll with input on standard input (a regular file, so no prompt). */
static int
cli_enroll_with(const struct policy *p, const char *name, int replace, const void *in, size_t n)
{
    char path[256];
    int fd, saved, rc;
    FILE *f;

    snprintf(path, sizeof(path), "%s/stdin", g.dir);
    assert_non_null(f = fopen(path, "wb"));
    assert_int_equal(fwrite(in, 1, n, f), n);
    fclose(f);
    assert_true((fd = open(path, O_RDONLY)) >= 0);
    saved = dup(STDIN_FILENO);
    dup2(fd, STDIN_FILENO);
    close(fd);
    rc = cli_enroll(p, name, replace);
    dup2(saved, STDIN_FILENO);
    close(saved);
    return rc;
}

/* Runs cli_list with standard output captured into out. */
static int
cli_list_to(const struct policy *p, char *out, size_t cap)
{
    char path[256];
    int fd, saved, rc;
    ssize_t r;

    snprintf(path, sizeof(path), "%s/stdout", g.dir);
    fflush(stdout);
    assert_true((fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600)) >= 0);
    saved = dup(STDOUT_FILENO);
    dup2(fd, STDOUT_FILENO);
    rc = cli_list(p);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    r = pread(fd, out, cap - 1, 0);
    close(fd);
    out[r > 0 ? r : 0] = '\0';
    return rc;
}

static void
assert_vault_holds(const char *name, const void *want, size_t n)
{
    struct vault *v = open_vault();
    struct secbuf *out = NULL;
    struct err err = {0};

    if (vault_unseal(v, name, &out, &err) == -1)
        fail_msg("vault_unseal %s: %s", name, err.msg);
    assert_int_equal(out->len, n);
    assert_memory_equal(out->data, want, n);
    secbuf_free(out);
    vault_close(v);
}

static void
test_cli_enroll(void **state)
{
    static char big[VAULT_SECRET_MAX + 2];
    struct policy p;

    cli_policy(&p, NULL);
    vault_close(open_vault()); /* init */
    assert_int_equal(cli_enroll_with(&p, "github", 0, "tok\r\n", 5), 0);
    assert_vault_holds("github", "tok", 3);
    assert_int_equal(cli_enroll_with(&p, "github", 0, "other\n", 6), 1); /* exists */
    assert_int_equal(cli_enroll_with(&p, "github", 1, "two\n\n", 5), 0); /* strips one */
    assert_vault_holds("github", "two\n", 4);
    memset(big, 'b', sizeof(big));
    big[VAULT_SECRET_MAX] = '\n';
    assert_int_equal(cli_enroll_with(&p, "big", 0, big, VAULT_SECRET_MAX + 1), 0);
    assert_vault_holds("big", big, VAULT_SECRET_MAX);
    big[VAULT_SECRET_MAX] = 'b';
    assert_int_equal(cli_enroll_with(&p, "big2", 0, big, VAULT_SECRET_MAX + 1), 1);
    assert_int_equal(cli_enroll_with(&p, "big3", 0, big, sizeof(big)), 1);
    assert_int_equal(cli_enroll_with(&p, "empty", 0, "", 0), 1);
    assert_int_equal(cli_enroll_with(&p, "empty", 0, "\n", 1), 1);
    assert_int_equal(cli_enroll_with(&p, "a/b", 0, "x\n", 2), 2);
    assert_int_equal(access(g.vdir, F_OK), 0);
    if (!g.tpm2) {
        setenv("AIRLOCK_TEST_PIN", "9999", 1);
        assert_int_equal(cli_enroll_with(&p, "gitlab", 0, "x\n", 2), 1);
        setenv("AIRLOCK_TEST_PIN", "1234", 1);
    }
    p.vault.backend = POLICY_BACKEND_NONE;
    assert_int_equal(cli_enroll_with(&p, "gitlab", 0, "x\n", 2), 2);
    assert_int_equal(cli_init(&p), 2);
}

/* Last use comes from the newest 16 MiB of the audit log only. */
static void
test_cli_list_remove(void **state)
{
    static char out[4096];
    char audit[256], *line;
    struct vault *v = open_vault();
    struct policy p;
    FILE *f;
    int i;

    enroll_ok(v, "github", SECRET, 0);
    enroll_ok(v, "openai", SECRET, 0);
    vault_close(v);
    snprintf(audit, sizeof(audit), "%s/audit.jsonl", g.dir);
    assert_non_null(f = fopen(audit, "w"));
    fputs("{\"ts\":\"2020-01-01T00:00:00.000Z\",\"credential\":\"openai\"}\n", f);
    for (i = 0; i < 17 * 1024; i++) /* 17 MiB of records that name no credential */
        fprintf(f, "{\"ts\":\"2021-01-01T00:00:00.000Z\",\"pad\":\"%01000d\"}\n", i);
    fputs("{\"ts\":\"2026-01-01T00:00:00.000Z\",\"credential\":\"github\"}\n"
          "not json \"credential\"\n"
          "{\"ts\":\"2026-02-02T00:00:00.000Z\",\"credential\":\"github\"}\n"
          "{\"ts\":\"2026-03-03T00:00:00.000Z\",\"credential\":\"githubx\"}\n"
          "{\"ts\":\"\\u001b[2J\",\"credential\":\"github\"}\n",
          f);
    fclose(f);
    cli_policy(&p, audit);
    setenv("AIRLOCK_TEST_PIN", "9999", 1); /* list and remove need no token */
    assert_int_equal(cli_list_to(&p, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "NAME"));
    assert_non_null(strstr(out, "LAST-USED"));
    assert_non_null(line = strstr(out, "\ngithub "));
    assert_non_null(strstr(line, g.tpm2 ? " tpm2 " : " pkcs11 "));
    assert_non_null(strstr(line, "2026-02-02T00:00:00.000Z\n"));
    assert_non_null(line = strstr(out, "\nopenai "));
    assert_non_null(strstr(line, " -\n")); /* its only use is older than the tail */
    assert_null(strstr(out, SECRET));
    assert_int_equal(cli_remove(&p, "github"), 0);
    assert_int_equal(cli_remove(&p, "github"), 1);
    assert_int_equal(cli_remove(&p, "../x"), 2);
    setenv("AIRLOCK_TEST_PIN", "1234", 1);
    p.audit_path = NULL;
    assert_int_equal(cli_list_to(&p, out, sizeof(out)), 0);
    assert_null(strstr(out, "github"));
    assert_non_null(strstr(out, "openai"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blob_roundtrip_and_truncations),
        cmocka_unit_test(test_blob_bad_fields),
        cmocka_unit_test(test_names_and_aad),
        cmocka_unit_test_setup_teardown(test_enroll_list_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_and_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_mode_and_no_plaintext, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unseal_into_and_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copied_and_corrupt_blobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_enroll, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_list_remove, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
