/*
 * Unit tests for the PKCS#11 token backend against a real SoftHSM2 token created per test
 * by scripts/softhsm-setup in a temporary directory: init, seal/unseal, AAD binding,
 * tampering, the specific errors (wrong PIN, missing token/module/key, PIN file mode), and
 * losing the token directory and getting it back.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <p11-kit/p11-kit.h>

#include "hsm/hsm.h"

#define MODULE "/usr/lib/softhsm/libsofthsm2.so"

struct env {
    char dir[128];
    char conf[256];
    char pinfile[192];
};

static struct env g;

static const unsigned char AAD_GITHUB[] = "ALCK\x01\x01github";
static const unsigned char AAD_OPENAI[] = "ALCK\x01\x01openai";
static const unsigned char SECRET[] = "ghp_0123456789abcdefSECRET";

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* A fresh token "airlock" with PIN 1234 in its own directory, pointed at by SOFTHSM2_CONF. */
static int
setup(void **state)
{
    const char *src = getenv("AIRLOCK_SOURCE_DIR");
    char cmd[512], line[400] = "";
    FILE *p;

    if (src == NULL) {
        fprintf(stderr, "AIRLOCK_SOURCE_DIR is not set (run through ctest)\n");
        return -1;
    }
    snprintf(g.dir, sizeof(g.dir), "/tmp/airlock-p11-XXXXXX");
    if (mkdtemp(g.dir) == NULL)
        return -1;
    snprintf(cmd, sizeof(cmd), "'%s/scripts/softhsm-setup' '%s/h' airlock 1234 12345678", src,
             g.dir);
    if ((p = popen(cmd, "r")) == NULL)
        return -1;
    if (fgets(line, sizeof(line), p) == NULL)
        line[0] = '\0';
    if (pclose(p) != 0 || strncmp(line, "export SOFTHSM2_CONF=", 21) != 0) {
        fprintf(stderr, "softhsm-setup failed: %s\n", line);
        return -1;
    }
    line[strcspn(line, "\n")] = '\0';
    snprintf(g.conf, sizeof(g.conf), "%s", line + 21);
    setenv("SOFTHSM2_CONF", g.conf, 1);
    setenv("AIRLOCK_TEST_PIN", "1234", 1);
    return 0;
}

static int
teardown(void **state)
{
    if (g.dir[0] != '\0')
        nftw(g.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    memset(&g, 0, sizeof(g));
    return 0;
}

static struct hsm_config
config(void)
{
    struct hsm_config cfg = {
        .backend = HSM_BACKEND_PKCS11,
        .pkcs11_module = MODULE,
        .pkcs11_token_uri = "pkcs11:token=airlock",
        .pkcs11_pin = "env:AIRLOCK_TEST_PIN",
        .pkcs11_key_label = "airlock-vault",
    };
    return cfg;
}

static struct hsm *
open_ok(const struct hsm_config *cfg)
{
    struct err err = {0};
    struct hsm *h = hsm_open(cfg, &err);

    if (h == NULL)
        fail_msg("hsm_open: %s", err.msg);
    assert_int_equal(hsm_backend(h), HSM_BACKEND_PKCS11);
    return h;
}

static struct hsm *
open_init(void)
{
    struct hsm_config cfg = config();
    struct hsm *h = open_ok(&cfg);
    struct err err = {0};

    if (hsm_init(h, &err) == -1)
        fail_msg("hsm_init: %s", err.msg);
    return h;
}

static void
seal_ok(struct hsm *h, const unsigned char *aad, size_t aad_len, unsigned char **blob,
        size_t *blob_len)
{
    struct err err = {0};

    if (hsm_seal(h, aad, aad_len, SECRET, sizeof(SECRET) - 1, blob, blob_len, &err) == -1)
        fail_msg("hsm_seal: %s", err.msg);
}

static void
assert_unseals(struct hsm *h, const unsigned char *aad, size_t aad_len, const unsigned char *blob,
               size_t blob_len)
{
    struct secbuf *out = NULL;
    struct err err = {0};

    if (hsm_unseal(h, aad, aad_len, blob, blob_len, &out, &err) == -1)
        fail_msg("hsm_unseal: %s", err.msg);
    assert_int_equal(out->len, sizeof(SECRET) - 1);
    assert_memory_equal(out->data, SECRET, sizeof(SECRET) - 1);
    secbuf_free(out);
}

static void
assert_unseal_fails(struct hsm *h, const unsigned char *aad, size_t aad_len,
                    const unsigned char *blob, size_t blob_len, enum err_code code, const char *msg)
{
    struct secbuf *out = NULL;
    struct err err = {0};

    assert_int_equal(hsm_unseal(h, aad, aad_len, blob, blob_len, &out, &err), -1);
    assert_null(out);
    if (err.code != code || strstr(err.msg, msg) == NULL)
        fail_msg("expected code %d \"%s\", got %d: %s", code, msg, err.code, err.msg);
}

static void
assert_open_fails(const struct hsm_config *cfg, enum err_code code, const char *msg)
{
    struct err err = {0};
    struct hsm *h = hsm_open(cfg, &err);

    if (h != NULL) {
        hsm_close(h);
        fail_msg("hsm_open succeeded, expected \"%s\"", msg);
    }
    if (err.code != code || strstr(err.msg, msg) == NULL)
        fail_msg("expected code %d \"%s\", got %d: %s", code, msg, err.code, err.msg);
}

static void
test_init_idempotent(void **state)
{
    struct hsm_config cfg = config();
    struct hsm *h = open_ok(&cfg);
    unsigned char *blob = NULL;
    size_t blob_len = 0;
    struct err err = {0};

    /* Before init sealing says what to do. */
    assert_int_equal(hsm_seal(h, AAD_GITHUB, sizeof(AAD_GITHUB), SECRET, 4, &blob, &blob_len, &err),
                     -1);
    assert_int_equal(err.code, ERR_TOKEN);
    assert_string_equal(err.msg, "pkcs11: key \"airlock-vault\" not found (run airlock init)");
    assert_int_equal(hsm_init(h, &err), 0);
    assert_int_equal(hsm_init(h, &err), 0);
    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), &blob, &blob_len);
    hsm_close(h);

    /* A new connection finds the same key: init generates nothing new, old blobs open. */
    h = open_init();
    assert_unseals(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, blob_len);
    hsm_close(h);
    free(blob);
}

static void
test_roundtrip(void **state)
{
    struct hsm *h = open_init();
    unsigned char *b1 = NULL, *b2 = NULL;
    size_t l1 = 0, l2 = 0;

    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), &b1, &l1);
    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), &b2, &l2);
    assert_int_equal(l1, 12 + sizeof(SECRET) - 1 + 16);
    assert_null(memmem(b1, l1, "SECRET", 6));
    /* Fresh IV per seal: the same secret never gives the same blob. */
    assert_int_equal(l1, l2);
    assert_memory_not_equal(b1, b2, 12);
    assert_unseals(h, AAD_GITHUB, sizeof(AAD_GITHUB), b1, l1);
    assert_unseals(h, AAD_GITHUB, sizeof(AAD_GITHUB), b2, l2);
    hsm_close(h);
    free(b1);
    free(b2);
}

static void
test_wrong_aad(void **state)
{
    struct hsm *h = open_init();
    unsigned char *blob = NULL;
    size_t len = 0;

    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), &blob, &len);
    assert_unseal_fails(h, AAD_OPENAI, sizeof(AAD_OPENAI), blob, len, ERR_CRYPTO,
                        "integrity check failed");
    assert_unseal_fails(h, NULL, 0, blob, len, ERR_CRYPTO, "integrity check failed");
    /* The session survives a failed tag check. */
    assert_unseals(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, len);
    hsm_close(h);
    free(blob);
}

static void
test_altered_blob(void **state)
{
    struct hsm *h = open_init();
    unsigned char *blob = NULL;
    size_t len = 0, i;
    size_t where[3];

    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), &blob, &len);
    where[0] = 0;       /* iv */
    where[1] = 12;      /* ciphertext */
    where[2] = len - 1; /* tag */
    for (i = 0; i < 3; i++) {
        blob[where[i]] ^= 0x01;
        assert_unseal_fails(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, len, ERR_CRYPTO,
                            "integrity check failed");
        blob[where[i]] ^= 0x01;
    }
    assert_unseal_fails(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, len - 1, ERR_CRYPTO,
                        "integrity check failed");
    assert_unseal_fails(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, 27, ERR_CRYPTO,
                        "integrity check failed");
    assert_unseal_fails(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, 0, ERR_CRYPTO,
                        "integrity check failed");
    assert_unseals(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, len);
    hsm_close(h);
    free(blob);
}

static void
test_open_errors(void **state)
{
    struct hsm_config cfg = config();

    setenv("AIRLOCK_TEST_PIN", "9999", 1);
    assert_open_fails(&cfg, ERR_TOKEN, "pkcs11: login failed: wrong PIN");
    setenv("AIRLOCK_TEST_PIN", "1234", 1);
    cfg.pkcs11_token_uri = "pkcs11:token=nope";
    assert_open_fails(&cfg, ERR_TOKEN, "pkcs11: token \"nope\" not found");
    cfg = config();
    cfg.pkcs11_module = "/nonexistent/libnothing.so";
    assert_open_fails(&cfg, ERR_TOKEN, "pkcs11: module load failed: ");
    cfg = config();
    cfg.pkcs11_pin = "1234"; /* the PIN itself is never accepted in the config */
    assert_open_fails(&cfg, ERR_USAGE, "env:NAME");
    cfg.pkcs11_pin = "env:AIRLOCK_TEST_NO_SUCH_VAR";
    assert_open_fails(&cfg, ERR_USAGE, "AIRLOCK_TEST_NO_SUCH_VAR is not set");
    cfg = config();
    cfg.pkcs11_token_uri = "https://example.com/";
    assert_open_fails(&cfg, ERR_USAGE, "bad token uri");
}

static void
write_pin_file(const char *content, mode_t mode)
{
    FILE *f;

    snprintf(g.pinfile, sizeof(g.pinfile), "%s/pin", g.dir);
    unlink(g.pinfile);
    assert_non_null(f = fopen(g.pinfile, "w"));
    fputs(content, f);
    fclose(f);
    assert_int_equal(chmod(g.pinfile, mode), 0);
}

static void
test_pin_file(void **state)
{
    struct hsm_config cfg = config();
    char ref[256];
    struct hsm *h;

    snprintf(ref, sizeof(ref), "file:%s/pin", g.dir);
    cfg.pkcs11_pin = ref;
    write_pin_file("1234\nsecond line ignored\n", 0600);
    h = open_ok(&cfg);
    hsm_close(h);
    write_pin_file("1234\n", 0640);
    assert_open_fails(&cfg, ERR_USAGE, "readable only by its owner");
    write_pin_file("1234", 0604);
    assert_open_fails(&cfg, ERR_USAGE, "readable only by its owner");
    write_pin_file("4321\n", 0400);
    assert_open_fails(&cfg, ERR_TOKEN, "pkcs11: login failed: wrong PIN");
    snprintf(ref, sizeof(ref), "file:%s/absent", g.dir);
    assert_open_fails(&cfg, ERR_IO, "absent");
}

/* The token directory disappears (token unplugged) and comes back. */
static void
test_token_lost_and_back(void **state)
{
    struct hsm *h = open_init();
    char tokens[256], away[256];
    unsigned char *blob = NULL;
    struct secbuf *out = NULL;
    struct err err = {0};
    size_t len = 0;

    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), &blob, &len);
    snprintf(tokens, sizeof(tokens), "%s/h/tokens", g.dir);
    snprintf(away, sizeof(away), "%s/h/tokens.away", g.dir);
    assert_int_equal(rename(tokens, away), 0);
    assert_int_equal(mkdir(tokens, 0700), 0);

    assert_int_equal(hsm_health(h, &err), -1);
    assert_int_equal(err.code, ERR_TOKEN);
    assert_int_equal(hsm_unseal(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, len, &out, &err), -1);
    assert_null(out);
    assert_int_equal(err.code, ERR_TOKEN);
    assert_non_null(strstr(err.msg, "pkcs11: token \"airlock\" not found"));

    assert_int_equal(rmdir(tokens), 0);
    assert_int_equal(rename(away, tokens), 0);
    if (hsm_health(h, &err) == -1)
        fail_msg("hsm_health after the token came back: %s", err.msg);
    assert_unseals(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, len);
    hsm_close(h);
    free(blob);
}

/* Logs the whole application out of every token, as another user of the module in this
 * process could (PKCS#11 login state is per application, not per session). */
static void
logout_behind(void)
{
    CK_FUNCTION_LIST *m = p11_kit_module_load(MODULE, 0);
    CK_SLOT_ID slots[8];
    CK_ULONG n = 8, i;
    CK_SESSION_HANDLE s;

    assert_non_null(m);
    assert_int_equal(p11_kit_module_initialize(m), CKR_OK);
    assert_int_equal(m->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    for (i = 0; i < n; i++) {
        if (m->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
            continue;
        (void)m->C_Logout(s);
        m->C_CloseSession(s);
    }
    p11_kit_module_finalize(m);
    p11_kit_module_release(m);
}

/* A session that lost its login under us: seal and unseal reconnect once and succeed
 * without a health check first. */
static void
test_session_lost_retry(void **state)
{
    struct hsm *h = open_init();
    unsigned char *blob = NULL, *blob2 = NULL;
    size_t len = 0, len2 = 0;

    seal_ok(h, AAD_GITHUB, sizeof(AAD_GITHUB), &blob, &len);
    logout_behind();
    assert_unseals(h, AAD_GITHUB, sizeof(AAD_GITHUB), blob, len);
    logout_behind();
    seal_ok(h, AAD_OPENAI, sizeof(AAD_OPENAI), &blob2, &len2);
    assert_unseals(h, AAD_OPENAI, sizeof(AAD_OPENAI), blob2, len2);
    hsm_close(h);
    free(blob);
    free(blob2);
}

/* Puts an AES key labelled "airlock-vault" on the token that may be extracted. */
static void
plant_weak_key(void)
{
    CK_FUNCTION_LIST *m = p11_kit_module_load(MODULE, 0);
    CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG len = 32, n = 8, i;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE t[] = {
        {CKA_LABEL, "airlock-vault", 13},
        {CKA_VALUE_LEN, &len, sizeof(len)},
        {CKA_TOKEN, &yes, 1},
        {CKA_PRIVATE, &yes, 1},
        {CKA_SENSITIVE, &no, 1},
        {CKA_EXTRACTABLE, &yes, 1},
        {CKA_ENCRYPT, &yes, 1},
        {CKA_DECRYPT, &yes, 1},
    };
    CK_SLOT_ID slots[8];
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE k;

    assert_non_null(m);
    assert_int_equal(p11_kit_module_initialize(m), CKR_OK);
    assert_int_equal(m->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    for (i = 0; i < n; i++) {
        if (m->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) !=
            CKR_OK)
            continue;
        if (m->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "1234", 4) == CKR_OK) {
            assert_int_equal(m->C_GenerateKey(s, &mech, t, 8, &k), CKR_OK);
            m->C_Logout(s);
        }
        m->C_CloseSession(s);
    }
    p11_kit_module_finalize(m);
    p11_kit_module_release(m);
}

/* A key under our label that could leave the token is refused, not used. */
static void
test_refuses_extractable_key(void **state)
{
    struct hsm_config cfg = config();
    struct err err = {0};
    struct hsm *h;

    plant_weak_key();
    h = open_ok(&cfg);
    assert_int_equal(hsm_init(h, &err), -1);
    assert_int_equal(err.code, ERR_TOKEN);
    assert_string_equal(
        err.msg, "pkcs11: key \"airlock-vault\" is not a sensitive, non-extractable AES-256 key");
    hsm_close(h);
}

/* Two handles on one token in one process (the daemon's proxy and device link do this):
 * closing one must not log the other out or finalise the module under it. */
static void
test_two_handles(void **state)
{
    struct hsm_config cfg = config();
    struct hsm *h1 = open_init(), *h2 = open_ok(&cfg);
    unsigned char *blob = NULL;
    struct err err = {0};
    size_t len = 0;

    seal_ok(h1, AAD_GITHUB, sizeof(AAD_GITHUB), &blob, &len);
    assert_unseals(h2, AAD_GITHUB, sizeof(AAD_GITHUB), blob, len);
    hsm_close(h1);
    assert_int_equal(hsm_health(h2, &err), 0);
    assert_unseals(h2, AAD_GITHUB, sizeof(AAD_GITHUB), blob, len);
    hsm_close(h2);
    free(blob);
}

static void
test_close_null(void **state)
{
    struct err err = {0};

    hsm_close(NULL);
    assert_null(hsm_open(NULL, &err));
    assert_int_equal(err.code, ERR_USAGE);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_aad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_altered_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pin_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_lost_and_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_lost_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_extractable_key, setup, teardown),
        cmocka_unit_test(test_close_null),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
