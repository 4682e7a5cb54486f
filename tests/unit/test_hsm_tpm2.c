/*
 * Unit tests for the TPM 2.0 token backend against a real swtpm on loopback, started by
 * scripts/swtpm-start in a temporary state directory: init, seal/unseal, name binding,
 * tampering, losing and regaining the TPM (swtpm stopped, then restarted), and the storage
 * primary checked against the name recorded at init.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "hsm/hsm.h"

struct env {
    char dir[128];
    char state[160];
    char port_file[160];
    char tcti[128];
    char name_file[160]; /* the storage primary's name, recorded by hsm_init */
    const char *src;
};

static struct env g;

static const unsigned char AAD_GITHUB[] = "ALCK\x01\x02github";
static const unsigned char AAD_OPENAI[] = "ALCK\x01\x02openai";

/* Runs a project script with a shell; captures the first output line if out is given. */
static int
run_script(const char *cmd, char *out, size_t outlen)
{
    FILE *p = popen(cmd, "r");
    char line[256] = "";
    int st;

    if (!p)
        return -1;
    if (!fgets(line, sizeof(line), p))
        line[0] = '\0';
    while (fgetc(p) != EOF) /* bounded by the script's output; drain so it can exit */
        ;
    st = pclose(p);
    line[strcspn(line, "\n")] = '\0';
    if (out)
        snprintf(out, outlen, "%s", line);
    return st == 0 ? 0 : -1;
}

static int
swtpm_start(void)
{
    char cmd[768];

    snprintf(cmd, sizeof(cmd), "'%s/scripts/swtpm-start' '%s' '%s'", g.src, g.state, g.port_file);
    return run_script(cmd, g.tcti, sizeof(g.tcti));
}

static int
swtpm_stop(void)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "'%s/scripts/swtpm-stop' '%s'", g.src, g.state);
    return run_script(cmd, NULL, 0);
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int
group_setup(void **state)
{
    /* The TCTI writes to a socket whose peer may be gone (swtpm stopped); the daemon
     * ignores SIGPIPE the same way. */
    signal(SIGPIPE, SIG_IGN);
    g.src = getenv("AIRLOCK_SOURCE_DIR");
    if (!g.src) {
        fprintf(stderr, "AIRLOCK_SOURCE_DIR is not set (run through ctest)\n");
        return -1;
    }
    /* swtpm is a project dependency: a missing one is a failure, not a skip. */
    if (system("command -v swtpm >/dev/null 2>&1") != 0) {
        fprintf(stderr, "swtpm is not installed (apt-get install swtpm swtpm-tools)\n");
        return -1;
    }
    snprintf(g.dir, sizeof(g.dir), "/tmp/airlock-tpm2-XXXXXX");
    if (!mkdtemp(g.dir))
        return -1;
    snprintf(g.state, sizeof(g.state), "%s/state", g.dir);
    snprintf(g.port_file, sizeof(g.port_file), "%s/port", g.dir);
    snprintf(g.name_file, sizeof(g.name_file), "%s/primary.name", g.dir);
    if (swtpm_start() < 0 || strncmp(g.tcti, "swtpm:host=127.0.0.1,port=", 26) != 0) {
        fprintf(stderr, "swtpm-start failed (tcti \"%s\")\n", g.tcti);
        return -1;
    }
    return 0;
}

static int
group_teardown(void **state)
{
    if (g.src && g.dir[0]) {
        swtpm_stop();
        nftw(g.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    return 0;
}

static struct hsm *
open_tpm(void)
{
    struct hsm_config cfg = {
        .backend = HSM_BACKEND_TPM2, .tpm2_tcti = g.tcti, .tpm2_primary_name_file = g.name_file};
    struct err err = {0};
    struct hsm *h = hsm_open(&cfg, &err);

    if (!h)
        fprintf(stderr, "hsm_open: %s\n", err.msg);
    assert_non_null(h);
    assert_int_equal(hsm_backend(h), HSM_BACKEND_TPM2);
    return h;
}

static void
seal_ok(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *secret,
        size_t len, unsigned char **blob, size_t *blob_len)
{
    struct err err = {0};

    if (hsm_seal(h, aad, aad_len, secret, len, blob, blob_len, &err) < 0)
        fail_msg("hsm_seal: %s", err.msg);
}

static void
assert_unseals_to(struct hsm *h, const unsigned char *aad, size_t aad_len,
                  const unsigned char *blob, size_t blob_len, const unsigned char *want,
                  size_t want_len)
{
    struct secbuf *out = NULL;
    struct err err = {0};

    if (hsm_unseal(h, aad, aad_len, blob, blob_len, &out, &err) < 0)
        fail_msg("hsm_unseal: %s", err.msg);
    assert_int_equal(out->len, want_len);
    assert_memory_equal(out->data, want, want_len);
    secbuf_free(out);
}

/* Unseal must fail with code; returns nothing in *out. */
static void
assert_unseal_fails(struct hsm *h, const unsigned char *aad, size_t aad_len,
                    const unsigned char *blob, size_t blob_len, enum err_code code)
{
    struct secbuf *out = NULL;
    struct err err = {0};

    assert_int_equal(hsm_unseal(h, aad, aad_len, blob, blob_len, &out, &err), -1);
    assert_null(out);
    if (err.code != code)
        fail_msg("expected code %d, got %d: %s", code, err.code, err.msg);
}

static void
test_init_idempotent(void **state)
{
    struct hsm *h = open_tpm();
    struct err err = {0};
    unsigned char *blob = NULL;
    size_t blob_len = 0;
    char cmd[512], line[256];

    /* Before init the primary is absent and sealing says what to do. */
    assert_int_equal(hsm_seal(h, AAD_GITHUB, sizeof(AAD_GITHUB), (const unsigned char *)"x", 1,
                              &blob, &blob_len, &err),
                     -1);
    assert_int_equal(err.code, ERR_TOKEN);
    assert_non_null(strstr(err.msg, "storage primary 0x81000a1c missing (run airlock init)"));
    assert_int_equal(hsm_init(h, &err), 0);
    assert_int_equal(hsm_init(h, &err), 0);
    hsm_close(h);

    /* A second process sees the persisted primary and init is still a no-op. */
    h = open_tpm();
    assert_int_equal(hsm_init(h, &err), 0);
    hsm_close(h);

    /* swtpm serves one connection at a time: ask tpm2-tools after closing ours. */
    snprintf(cmd, sizeof(cmd),
             "TPM2TOOLS_TCTI='%s' timeout 20 tpm2_getcap handles-persistent 2>&1 | "
             "grep -ci '0x81000a1c'",
             g.tcti);
    assert_int_equal(run_script(cmd, line, sizeof(line)), 0);
    assert_string_equal(line, "1");

    /* init recorded the primary's TPM name, as tpm2_readpublic computes it, mode 0600. */
    snprintf(cmd, sizeof(cmd),
             "TPM2TOOLS_TCTI='%s' timeout 20 tpm2_readpublic -c 0x81000a1c | "
             "sed -n 's/^name: //p' | cmp -s - '%s' && stat -c %%a '%s'",
             g.tcti, g.name_file, g.name_file);
    assert_int_equal(run_script(cmd, line, sizeof(line)), 0);
    assert_string_equal(line, "600");
}

static void
test_seal_unseal_roundtrip(void **state)
{
    struct hsm *h = open_tpm();
    static unsigned char big[8192];
    const unsigned char small[] = "ghp_exampletoken1234567890";
    unsigned char *blob = NULL, *blob2 = NULL;
    size_t blob_len = 0, blob2_len = 0;
    struct err err = {0};

    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), small, sizeof(small) - 1, &blob, &blob_len);
    assert_null(memmem(blob, blob_len, small, sizeof(small) - 1));
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, small, sizeof(small) - 1);
    free(blob);

    /* 8 KiB, the largest credential the vault accepts, does not fit a TPM2B: envelope. */
    assert_int_equal(util_random(big, sizeof(big)), 0);
    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), big, sizeof(big), &blob, &blob_len);
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, big, sizeof(big));

    /* Sealing twice gives different blobs (fresh key, IV) that both unseal. */
    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), big, sizeof(big), &blob2, &blob2_len);
    assert_true(blob_len != blob2_len || memcmp(blob, blob2, blob_len) != 0);
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob2, blob2_len, big, sizeof(big));
    free(blob);
    free(blob2);

    /* An empty aad works too (hsm.h does not forbid it). */
    seal_ok(h, NULL, 0, small, 5, &blob, &blob_len);
    assert_unseals_to(h, NULL, 0, blob, blob_len, small, 5);
    free(blob);

    blob = NULL;
    assert_int_equal(
        hsm_seal(h, AAD_GITHUB, sizeof(AAD_GITHUB), big, sizeof(big) + 0, &blob, &blob_len, &err),
        0);
    free(blob);
    blob = NULL;
    {
        static unsigned char too_big[8193];
        assert_int_equal(hsm_seal(h, AAD_GITHUB, sizeof(AAD_GITHUB), too_big, sizeof(too_big),
                                  &blob, &blob_len, &err),
                         -1);
        assert_int_equal(err.code, ERR_LIMIT);
        assert_null(blob);
    }
    assert_int_equal(hsm_health(h, &err), 0);
    hsm_close(h);
}

static void
test_wrong_aad(void **state)
{
    struct hsm *h = open_tpm();
    const unsigned char secret[] = "sk-live-abc";
    unsigned char *blob = NULL;
    size_t blob_len = 0;
    struct secbuf *out = NULL;
    struct err err = {0};

    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), secret, sizeof(secret), &blob, &blob_len);
    /* First in a fresh session, which is kept for the refusals below. */
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, secret, sizeof(secret));
    /* A blob renamed to another credential: the object auth (SHA-256 of aad) differs. */
    assert_int_equal(hsm_unseal(h, AAD_OPENAI, sizeof(AAD_OPENAI), blob, blob_len, &out, &err), -1);
    assert_int_equal(err.code, ERR_CRYPTO);
    assert_string_equal(err.msg, "tpm2: unseal failed: integrity/auth check failed");
    assert_null(out);
    assert_unseal_fails(h, AAD_GITHUB, sizeof(AAD_GITHUB) - 1, blob, blob_len, ERR_CRYPTO);
    assert_unseal_fails(h, NULL, 0, blob, blob_len, ERR_CRYPTO);
    /* noDA: failed attempts do not lock the TPM out; the right name still works (in a
     * fresh session, the refused one was flushed), also in the session kept after it. */
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, secret, sizeof(secret));
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, secret, sizeof(secret));
    free(blob);
    hsm_close(h);
}

/* Offsets of the blob's parts, read from its length fields (see tpm2.c). */
struct layout {
    size_t pub, pub_len, priv, priv_len, iv, ct, ct_len, tag;
};

static struct layout
blob_layout(const unsigned char *b, size_t len)
{
    struct layout l;

    assert_true(len > 5);
    assert_int_equal(b[0], 1);
    l.pub_len = (size_t)b[1] << 8 | b[2];
    l.pub = 3;
    l.priv_len = (size_t)b[l.pub + l.pub_len] << 8 | b[l.pub + l.pub_len + 1];
    l.priv = l.pub + l.pub_len + 2;
    l.iv = l.priv + l.priv_len;
    l.ct_len = (size_t)b[l.iv + 12] << 24 | (size_t)b[l.iv + 13] << 16 | (size_t)b[l.iv + 14] << 8 |
               b[l.iv + 15];
    l.ct = l.iv + 16;
    l.tag = l.ct + l.ct_len;
    assert_int_equal(l.tag + 16, len);
    return l;
}

static void
flip_fails(struct hsm *h, const unsigned char *blob, size_t len, size_t at, int strict)
{
    unsigned char *copy = malloc(len);
    struct secbuf *out = NULL;
    struct err err = {0};

    assert_non_null(copy);
    memcpy(copy, blob, len);
    copy[at] ^= 0x01;
    assert_int_equal(hsm_unseal(h, AAD_GITHUB, sizeof(AAD_GITHUB), copy, len, &out, &err), -1);
    assert_null(out);
    /* Inside the TPM structures a flip may break the encoding itself (ERR_PARSE). */
    if (err.code != ERR_CRYPTO && (strict || err.code != ERR_PARSE))
        fail_msg("flip at %zu: code %d: %s", at, err.code, err.msg);
    free(copy);
}

static void
test_altered_blob(void **state)
{
    struct hsm *h = open_tpm();
    const unsigned char secret[] = "xoxb-slack-token";
    unsigned char *blob = NULL, *longer;
    size_t blob_len = 0, n;
    struct layout l;

    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), secret, sizeof(secret), &blob, &blob_len);
    l = blob_layout(blob, blob_len);
    assert_int_equal(l.ct_len, sizeof(secret));
    flip_fails(h, blob, blob_len, l.pub + l.pub_len / 2, 0);   /* public area */
    flip_fails(h, blob, blob_len, l.pub + l.pub_len - 1, 0);   /* unique digest */
    flip_fails(h, blob, blob_len, l.priv + l.priv_len / 2, 0); /* encrypted sensitive */
    flip_fails(h, blob, blob_len, l.priv + 4, 0);              /* integrity hmac */
    flip_fails(h, blob, blob_len, l.iv + 3, 1);
    flip_fails(h, blob, blob_len, l.ct + 2, 1);
    flip_fails(h, blob, blob_len, l.tag + 15, 1);

    /* Every truncation and an appended byte are refused before reaching the TPM. */
    for (n = 0; n < blob_len; n++)
        assert_unseal_fails(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, n, ERR_PARSE);
    longer = malloc(blob_len + 1);
    assert_non_null(longer);
    memcpy(longer, blob, blob_len);
    longer[blob_len] = 0;
    assert_unseal_fails(h, AAD_GITHUB, sizeof(AAD_GITHUB), longer, blob_len + 1, ERR_PARSE);
    /* A length field pointing past the end. */
    memcpy(longer, blob, blob_len);
    longer[1] = 0xff;
    assert_unseal_fails(h, AAD_GITHUB, sizeof(AAD_GITHUB), longer, blob_len, ERR_PARSE);
    assert_unseal_fails(h, AAD_GITHUB, sizeof(AAD_GITHUB), NULL, 0, ERR_PARSE);
    /* A duplicable object (fixedTPM cleared in objectAttributes, after size, type, nameAlg)
     * is not one we made: refused before Load. */
    memcpy(longer, blob, blob_len);
    longer[l.pub + 9] ^= 0x02;
    assert_unseal_fails(h, AAD_GITHUB, sizeof(AAD_GITHUB), longer, blob_len, ERR_PARSE);
    free(longer);

    /* The untouched blob still unseals: nothing above damaged the TPM state. */
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, secret, sizeof(secret));
    free(blob);
    hsm_close(h);
}

static void
test_swtpm_stop_and_restart(void **state)
{
    struct hsm *h = open_tpm(), *h2;
    const unsigned char secret[] = "glpat-restart-survivor";
    struct hsm_config cfg = {
        .backend = HSM_BACKEND_TPM2, .tpm2_tcti = g.tcti, .tpm2_primary_name_file = g.name_file};
    unsigned char *blob = NULL, *blob2 = NULL;
    size_t blob_len = 0, blob2_len = 0;
    struct secbuf *out = NULL;
    struct err err = {0};
    char tcti_before[sizeof(g.tcti)];

    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), secret, sizeof(secret), &blob, &blob_len);
    assert_int_equal(hsm_health(h, &err), 0);

    assert_int_equal(swtpm_stop(), 0);
    assert_int_equal(hsm_health(h, &err), -1);
    assert_int_equal(err.code, ERR_TOKEN);
    assert_non_null(strstr(err.msg, "tpm2:"));
    err_clear(&err);
    assert_int_equal(hsm_unseal(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, &out, &err), -1);
    assert_int_equal(err.code, ERR_TOKEN);
    assert_null(out);
    assert_int_equal(
        hsm_seal(h, AAD_GITHUB, sizeof(AAD_GITHUB), secret, 4, &blob2, &blob2_len, &err), -1);
    assert_int_equal(err.code, ERR_TOKEN);
    assert_null(blob2);
    assert_null(hsm_open(&cfg, &err));
    assert_int_equal(err.code, ERR_TOKEN);
    assert_non_null(strstr(err.msg, "tpm2: cannot connect to TPM (tcti \"swtpm:host=127.0.0.1"));

    /* Same state directory and port: like the machine rebooting with the same TPM. */
    snprintf(tcti_before, sizeof(tcti_before), "%s", g.tcti);
    assert_int_equal(swtpm_start(), 0);
    assert_string_equal(g.tcti, tcti_before);
    assert_int_equal(hsm_health(h, &err), 0);
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, secret, sizeof(secret));
    hsm_close(h);

    /* A stop between calls on an idle handle: seal reconnects once by itself. */
    h2 = open_tpm();
    assert_int_equal(swtpm_stop(), 0);
    assert_int_equal(swtpm_start(), 0);
    seal_ok(h2, AAD_GITHUB, sizeof(AAD_GITHUB), secret, 4, &blob2, &blob2_len);
    assert_unseals_to(h2, AAD_GITHUB, sizeof(AAD_GITHUB), blob2, blob2_len, secret, 4);
    assert_unseals_to(h2, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, secret, sizeof(secret));
    hsm_close(h2);
    free(blob);
    free(blob2);
}

/* Finds the next TPM command with code cc in a capture; returns its offset or -1. */
static long
find_command(const unsigned char *p, size_t len, size_t from, uint32_t cc)
{
    for (size_t i = from; i + 10 <= len; i++) {
        uint32_t size = (uint32_t)p[i + 2] << 24 | (uint32_t)p[i + 3] << 16 |
                        (uint32_t)p[i + 4] << 8 | p[i + 5];
        uint32_t code = (uint32_t)p[i + 6] << 24 | (uint32_t)p[i + 7] << 16 |
                        (uint32_t)p[i + 8] << 8 | p[i + 9];
        if (p[i] == 0x80 && (p[i + 1] == 0x01 || p[i + 1] == 0x02) && code == cc && size >= 10 &&
            size <= 8192 && i + size <= len)
            return (long)i;
    }
    return -1;
}

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Session attributes of the first authorization of a one-handle command at off. */
static unsigned
session_attrs(const unsigned char *p, size_t len, long off)
{
    size_t s = (size_t)off + 10 + 4 + 4; /* header, handle, authorizationSize */
    size_t nonce;

    assert_true(s + 6 < len);
    assert_int_equal(p[off + 1], 0x02);  /* TPM_ST_SESSIONS */
    assert_int_equal(p[s] & 0xff, 0x02); /* an HMAC session handle, not a password */
    nonce = (size_t)p[s + 4] << 8 | p[s + 5];
    assert_true(s + 6 + nonce < len);
    return p[s + 6 + nonce];
}

/*
 * Records the wire traffic with the pcap TCTI and checks the protection SPEC section 4
 * asks for: sessions salted with the storage primary, TPM2_Create sending the key with
 * parameter encryption (decrypt), TPM2_Unseal returning it encrypted (encrypt).
 */
static void
test_session_salted_encrypted(void **state)
{
    char pcap[256], tcti[256];
    struct hsm_config cfg = {
        .backend = HSM_BACKEND_TPM2, .tpm2_tcti = tcti, .tpm2_primary_name_file = g.name_file};
    const unsigned char secret[] = "wire-check";
    unsigned char *blob = NULL, *cap;
    size_t blob_len = 0, cap_len = 0, salt;
    struct err err = {0};
    struct hsm *h;
    long off;

    snprintf(pcap, sizeof(pcap), "%s/wire.pcap", g.dir);
    snprintf(tcti, sizeof(tcti), "pcap:%s", g.tcti);
    setenv("TCTI_PCAP_FILE", pcap, 1);
    h = hsm_open(&cfg, &err);
    if (!h)
        fail_msg("hsm_open: %s", err.msg);
    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), secret, sizeof(secret), &blob, &blob_len);
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, secret, sizeof(secret));
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, secret, sizeof(secret));
    hsm_close(h);
    unsetenv("TCTI_PCAP_FILE");
    free(blob);

    cap = (unsigned char *)util_read_file(pcap, 1 << 20, &cap_len);
    assert_non_null(cap);
    /* StartAuthSession(tpmKey = primary, bind = TPM_RH_NULL, nonce, encryptedSalt, HMAC). */
    off = find_command(cap, cap_len, 0, 0x176);
    assert_true(off >= 0);
    assert_int_equal(be32(cap + off + 10), 0x81000a1c);
    assert_int_equal(be32(cap + off + 14), 0x40000007);
    salt = (size_t)off + 18 + 2 + ((size_t)cap[off + 18] << 8 | cap[off + 19]);
    assert_true(((size_t)cap[salt] << 8 | cap[salt + 1]) > 0);
    assert_int_equal(cap[salt + 2 + ((size_t)cap[salt] << 8 | cap[salt + 1])], 0x00); /* HMAC */

    off = find_command(cap, cap_len, 0, 0x153); /* TPM2_Create */
    assert_true(off >= 0);
    assert_true(session_attrs(cap, cap_len, off) & 0x20); /* TPMA_SESSION_DECRYPT */
    off = find_command(cap, cap_len, 0, 0x15e);           /* TPM2_Unseal */
    assert_true(off >= 0);
    assert_true(session_attrs(cap, cap_len, off) & 0x40); /* TPMA_SESSION_ENCRYPT */
    /* The second unseal reuses the salted session (no StartAuthSession in between) and
     * its response is still encrypted. */
    salt = (size_t)off;
    off = find_command(cap, cap_len, salt + 10, 0x15e);
    assert_true(off >= 0);
    assert_true(session_attrs(cap, cap_len, off) & 0x40);
    assert_true(find_command(cap, cap_len, salt + 10, 0x176) == -1 ||
                find_command(cap, cap_len, salt + 10, 0x176) > off);
    free(cap);
}

/* Runs tpm2-tools commands against the swtpm (no hsm handle may be open: one connection).
 * Without a resource manager the tools leave transient objects loaded: flush them after. */
static void
tpm2_tools(const char *cmds)
{
    char cmd[1536];

    snprintf(cmd, sizeof(cmd), "export TPM2TOOLS_TCTI='%s'; cd '%s' && %s", g.tcti, g.dir, cmds);
    if (run_script(cmd, NULL, 0) < 0)
        fail_msg("tpm2-tools failed: %s", cmds);
}

/* Every call that reaches the primary fails with code and a message containing want. */
static void
assert_primary_refused(const unsigned char *blob, size_t blob_len, enum err_code code,
                       const char *want)
{
    struct hsm *h = open_tpm();
    unsigned char *blob2 = NULL;
    size_t blob2_len = 0;
    struct secbuf *out = NULL;
    struct err err = {0};

    assert_int_equal(hsm_unseal(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, &out, &err), -1);
    assert_null(out);
    if (err.code != code || !strstr(err.msg, want))
        fail_msg("unseal: want %d \"%s\", got %d: %s", code, want, err.code, err.msg);
    err_clear(&err);
    assert_int_equal(hsm_seal(h, AAD_GITHUB, sizeof(AAD_GITHUB), (const unsigned char *)"x", 1,
                              &blob2, &blob2_len, &err),
                     -1);
    assert_null(blob2);
    if (err.code != code || !strstr(err.msg, want))
        fail_msg("seal: want %d \"%s\", got %d: %s", code, want, err.code, err.msg);
    hsm_close(h);
}

/*
 * The storage primary is authenticated against the name recorded at init before its key
 * salts a session: another key at the handle (what an attacker answering ReadPublic on the
 * bus would offer) is refused, as is a missing or malformed record; init records a missing
 * one, never overwrites one, and a primary re-created from the same template matches.
 */
static void
test_primary_checked_against_record(void **state)
{
    const unsigned char secret[] = "pinned-primary";
    unsigned char *blob = NULL;
    size_t blob_len = 0, rec_len = 0, len = 0;
    char *rec, *now, moved[200];
    struct err err = {0};
    struct hsm *h = open_tpm();

    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), secret, sizeof(secret), &blob, &blob_len);
    hsm_close(h);
    rec = util_read_file(g.name_file, 256, &rec_len);
    assert_non_null(rec);

    /* No record (a vault from before records existed): refused until init records it. */
    snprintf(moved, sizeof(moved), "%s.away", g.name_file);
    assert_int_equal(rename(g.name_file, moved), 0);
    assert_primary_refused(blob, blob_len, ERR_TOKEN, "no storage primary recorded in");
    h = open_tpm();
    assert_int_equal(hsm_init(h, &err), 0);
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, secret, sizeof(secret));
    hsm_close(h);
    now = util_read_file(g.name_file, 256, &len);
    assert_non_null(now);
    assert_string_equal(now, rec);
    free(now);

    /* A malformed record is refused, not rewritten by init. */
    assert_int_equal(util_write_file_atomic(g.name_file, "000bzz\n", 7, 0600), 0);
    assert_primary_refused(blob, blob_len, ERR_TOKEN, "is malformed");
    h = open_tpm();
    assert_int_equal(hsm_init(h, &err), -1);
    assert_non_null(strstr(err.msg, "is malformed"));
    hsm_close(h);
    assert_int_equal(util_write_file_atomic(g.name_file, rec, rec_len, 0600), 0);

    /* Another storage key at the handle (ECC P-256 too, but without noDA: another key
     * and another name). Unseal, seal and init all refuse it; the record stays. */
    tpm2_tools("timeout 20 tpm2_evictcontrol -Q -C o -c 0x81000a1c && "
               "timeout 20 tpm2_createprimary -Q -C o -G ecc256:aes128cfb -c other.ctx -a "
               "'restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth' && "
               "timeout 20 tpm2_evictcontrol -Q -C o -c other.ctx 0x81000a1c && "
               "timeout 20 tpm2_flushcontext -t");
    assert_primary_refused(blob, blob_len, ERR_TOKEN,
                           "tpm2: storage primary at 0x81000a1c does not match the one recorded "
                           "at init in");
    h = open_tpm();
    assert_int_equal(hsm_init(h, &err), -1);
    assert_int_equal(err.code, ERR_TOKEN);
    assert_non_null(strstr(err.msg, "does not match the one recorded at init"));
    hsm_close(h);
    now = util_read_file(g.name_file, 256, &len);
    assert_non_null(now);
    assert_string_equal(now, rec);
    free(now);

    /* The impostor gone, init re-creates the SRK from the same template and owner seed:
     * the same key and name, so the record matches and the old blob unseals. */
    tpm2_tools("timeout 20 tpm2_evictcontrol -Q -C o -c 0x81000a1c");
    h = open_tpm();
    assert_int_equal(hsm_init(h, &err), 0);
    assert_unseals_to(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len, secret, sizeof(secret));
    hsm_close(h);
    free(rec);
    free(blob);
}

/* A signing key persisted at the configured handle is not silently used as the SRK. */
static void
test_init_refuses_non_storage_key(void **state)
{
    struct hsm_config cfg = {.backend = HSM_BACKEND_TPM2,
                             .tpm2_tcti = g.tcti,
                             .tpm2_primary_name_file = g.name_file,
                             .tpm2_primary_handle = 0x81000a1du};
    struct err err = {0};
    char cmd[1024];
    struct hsm *h;

    snprintf(cmd, sizeof(cmd),
             "export TPM2TOOLS_TCTI='%s'; cd '%s' && "
             "timeout 20 tpm2_createprimary -Q -C o -G ecc256:ecdsa-sha256 -c sign.ctx "
             "-a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign' && "
             "timeout 20 tpm2_evictcontrol -Q -C o -c sign.ctx 0x81000a1d",
             g.tcti, g.dir);
    assert_int_equal(run_script(cmd, NULL, 0), 0);
    h = hsm_open(&cfg, &err);
    assert_non_null(h);
    assert_int_equal(hsm_init(h, &err), -1);
    assert_int_equal(err.code, ERR_EXISTS);
    assert_non_null(strstr(err.msg, "0x81000a1d holds an object that is not a storage key"));
    hsm_close(h);
}

static void
test_bad_config(void **state)
{
    struct hsm_config cfg = {.backend = HSM_BACKEND_TPM2,
                             .tpm2_tcti = g.tcti,
                             .tpm2_primary_name_file = g.name_file,
                             .tpm2_primary_handle = 0x80000001u};
    struct err err = {0};

    assert_null(hsm_open(&cfg, &err));
    assert_int_equal(err.code, ERR_USAGE);
    cfg.tpm2_primary_handle = 0;
    cfg.tpm2_primary_name_file = NULL;
    assert_null(hsm_open(&cfg, &err));
    assert_int_equal(err.code, ERR_USAGE);
    assert_non_null(strstr(err.msg, "no file to record the storage primary's name in"));
    cfg.tpm2_primary_name_file = g.name_file;
    cfg.tpm2_tcti = "nosuchtcti:foo";
    assert_null(hsm_open(&cfg, &err));
    assert_int_equal(err.code, ERR_TOKEN);
    assert_non_null(strstr(err.msg, "nosuchtcti:foo"));
    hsm_close(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_idempotent),
        cmocka_unit_test(test_seal_unseal_roundtrip),
        cmocka_unit_test(test_wrong_aad),
        cmocka_unit_test(test_altered_blob),
        cmocka_unit_test(test_session_salted_encrypted),
        cmocka_unit_test(test_swtpm_stop_and_restart),
        cmocka_unit_test(test_primary_checked_against_record),
        cmocka_unit_test(test_init_refuses_non_storage_key),
        cmocka_unit_test(test_bad_config),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
