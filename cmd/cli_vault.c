/*
 * `airlock init | enroll NAME [--replace] | list | remove NAME`: the vault commands. They
 * talk to the token directly (no daemon needed). Secrets come from standard input only,
 * straight into locked memory, never from argv or the environment.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <jansson.h>

#include "cmd/cli.h"
#include "common/secmem.h"
#include "common/util.h"
#include "hsm/hsm.h"
#include "policy/policy.h"
#include "proxy/tls.h"
#include "vault/vault.h"

#define AUDIT_TAIL_BYTES (16u << 20) /* last-used looks at the newest 16 MiB of audit */
#define AUDIT_LINE_MAX 65536         /* longer lines are not ours: skipped */

/* Exit status for an error: 2 for usage/configuration, 1 for everything else. */
static int
exit_for(const struct err *err)
{
    return err->code == ERR_USAGE ? 2 : 1;
}

static const char *
backend_name(enum hsm_backend b)
{
    return b == HSM_BACKEND_TPM2 ? "tpm2" : "pkcs11";
}

static enum hsm_backend
policy_hsm_backend(const struct policy *p)
{
    return p->vault.backend == POLICY_BACKEND_TPM2 ? HSM_BACKEND_TPM2 : HSM_BACKEND_PKCS11;
}

/*
 * Opens the configured vault, with the token when token is 1 (list and remove only read and
 * delete files, so they work with the token unplugged and ask for no PIN). Prints the error
 * as "airlock: WHAT: ..." on failure.
 */
static struct vault *
open_vault(const struct policy *p, const char *what, int token, int *rc)
{
    struct hsm_config cfg;
    struct vault *v;
    struct err err;

    if (p->vault.backend == POLICY_BACKEND_NONE) {
        fprintf(stderr, "airlock: %s: %s has no vault: section\n", what, p->path);
        *rc = 2;
        return NULL;
    }
    vault_config_from_policy(p, &cfg);
    err_clear(&err);
    if ((v = vault_open(token ? &cfg : NULL, p->vault.dir, &err)) == NULL) {
        fprintf(stderr, "airlock: %s: %s\n", what, err.msg);
        *rc = exit_for(&err);
    }
    return v;
}

static int
seal_ca_key(void *arg, const struct secbuf *key_der, struct err *err)
{
    return vault_enroll(arg, "_ca", key_der->data, key_der->len, 1, err);
}

int
cli_init(const struct policy *p)
{
    struct vault *v;
    struct err err;
    int rc = 0;

    if ((v = open_vault(p, "init", 1, &rc)) == NULL)
        return rc;
    err_clear(&err);
    if (vault_init(v, &err) == -1) {
        fprintf(stderr, "airlock: init: %s\n", err.msg);
        vault_close(v);
        return exit_for(&err);
    }
    /* The local CA (SPEC section 5): its key is sealed in this vault as "_ca". */
    if (p->tls.intercept && tls_ca_init(p->state_dir, seal_ca_key, v, &err) == -1) {
        fprintf(stderr, "airlock: init: local CA: %s\n", err.msg);
        vault_close(v);
        return exit_for(&err);
    }
    if (p->vault.backend == POLICY_BACKEND_TPM2)
        printf("vault ready (tpm2, %s)\n", p->vault.tpm2_tcti ? p->vault.tpm2_tcti : "-");
    else
        printf("vault ready (pkcs11, %s)\n",
               p->vault.pkcs11_token_uri ? p->vault.pkcs11_token_uri : "-");
    fflush(stdout);
    vault_close(v);
    return 0;
}

/* The terminal settings to put back if a signal ends the process while echo is off. */
static struct termios tty_saved;
static const int tty_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

static void
tty_restore_and_die(int sig)
{
    (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &tty_saved); /* async-signal-safe */
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Prompts on stderr with echo off when stdin is a terminal; reads into sb. */
static int
read_secret(const char *name, struct secbuf *sb)
{
    struct sigaction sa, old_sa[sizeof(tty_signals) / sizeof(tty_signals[0])];
    struct termios quiet;
    size_t i;
    int rc;

    if (!isatty(STDIN_FILENO))
        return secbuf_read_fd(sb, STDIN_FILENO, 0);
    if (tcgetattr(STDIN_FILENO, &tty_saved) == -1)
        return -1;
    quiet = tty_saved;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = tty_restore_and_die;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < sizeof(tty_signals) / sizeof(tty_signals[0]); i++)
        sigaction(tty_signals[i], &sa, &old_sa[i]);
    fprintf(stderr, "secret for %s: ", name);
    fflush(stderr);
    rc = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    if (rc == 0)
        rc = secbuf_read_fd(sb, STDIN_FILENO, 1);
    (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &tty_saved);
    for (i = 0; i < sizeof(tty_signals) / sizeof(tty_signals[0]); i++)
        sigaction(tty_signals[i], &old_sa[i], NULL);
    fputc('\n', stderr);
    return rc;
}

/* Reads, strips one trailing "\n" or "\r\n" and checks the size; messages on stderr. */
static struct secbuf *
get_secret(const char *name)
{
    struct secbuf *sb;

    if ((sb = secbuf_new(VAULT_SECRET_MAX + 2)) == NULL) {
        fprintf(stderr, "airlock: enroll %s: cannot allocate locked memory\n", name);
        return NULL;
    }
    if (read_secret(name, sb) == -1) {
        fprintf(stderr, "airlock: enroll %s: read standard input: %s\n", name, strerror(errno));
        goto fail;
    }
    if (sb->len > 0 && sb->data[sb->len - 1] == '\n') {
        sb->len--;
        if (sb->len > 0 && sb->data[sb->len - 1] == '\r')
            sb->len--;
    }
    if (sb->len > VAULT_SECRET_MAX) {
        fprintf(stderr, "airlock: enroll %s: secret longer than 8 KiB\n", name);
        goto fail;
    }
    if (sb->len == 0) {
        fprintf(stderr, "airlock: enroll %s: empty secret on standard input\n", name);
        goto fail;
    }
    return sb;
fail:
    secbuf_free(sb);
    return NULL;
}

int
cli_enroll(const struct policy *p, const char *name, int replace)
{
    struct secbuf *secret;
    struct vault *v;
    struct err err;
    char what[128];
    int rc = 0;

    snprintf(what, sizeof(what), "enroll %.64s", name);
    if (!vault_name_valid(name)) {
        fprintf(stderr, "airlock: %s: bad name (letters, digits, '_' and '-', 1-64)\n", what);
        return 2;
    }
    /* Token first: do not ask for a secret the vault cannot take. */
    if ((v = open_vault(p, what, 1, &rc)) == NULL)
        return rc;
    if ((secret = get_secret(name)) == NULL) {
        vault_close(v);
        return 1;
    }
    err_clear(&err);
    if (vault_enroll(v, name, secret->data, secret->len, replace, &err) == -1) {
        fprintf(stderr, "airlock: %s: %s\n", what, err.msg);
        rc = err.code == ERR_EXISTS ? 1 : exit_for(&err);
    } else {
        printf("enrolled %s (%s)\n", name, backend_name(policy_hsm_backend(p)));
    }
    secbuf_free(secret);
    vault_close(v);
    return rc;
}

/* The newest AUDIT_TAIL_BYTES of the audit log, starting at a line boundary. NULL if none. */
static char *
audit_tail(const char *path, size_t *len)
{
    struct stat st;
    off_t start = 0;
    size_t n = 0, want;
    ssize_t r;
    char *buf, *nl;
    int fd;

    if (path == NULL || (fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1)
        return NULL;
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        close(fd);
        return NULL;
    }
    /* Sized to the file (a log that grows meanwhile is read up to that size). */
    want = st.st_size > (off_t)AUDIT_TAIL_BYTES ? AUDIT_TAIL_BYTES : (size_t)st.st_size;
    if ((buf = malloc(want + 1)) == NULL) {
        close(fd);
        return NULL;
    }
    start = st.st_size - (off_t)want;
    while (n < want) {
        r = pread(fd, buf + n, want - n, start + (off_t)n);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    /* A read that starts mid-file starts mid-line: drop the partial first line. */
    if (start > 0 && (nl = memchr(buf, '\n', n)) != NULL) {
        n -= (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, n + 1);
    }
    *len = n;
    return buf;
}

/* 1 for an RFC 3339 timestamp as the audit writes it: nothing a terminal would act on. */
static int
audit_ts_ok(const char *ts)
{
    size_t n = strlen(ts);

    return n > 0 && n < 32 && strspn(ts, "0123456789-:.TZ+") == n;
}

/* Records the line's "ts" as last used for the entry named by its "credential". */
static void
audit_line(const char *line, size_t len, const struct vault_entry *e, size_t n, char (*last)[32])
{
    json_t *o, *c, *ts;
    size_t lo = 0, hi = n, mid;
    int cmp;

    if (len > AUDIT_LINE_MAX || memmem(line, len, "\"credential\"", 12) == NULL)
        return;
    if ((o = json_loadb(line, len, 0, NULL)) == NULL)
        return;
    c = json_object_get(o, "credential");
    ts = json_object_get(o, "ts");
    if (!json_is_string(ts) || !audit_ts_ok(json_string_value(ts)))
        lo = hi; /* a record without a usable time says nothing about last use */
    while (json_is_string(c) && lo < hi) {
        mid = lo + (hi - lo) / 2;
        cmp = strcmp(json_string_value(c), e[mid].name);
        if (cmp == 0) {
            snprintf(last[mid], sizeof(last[mid]), "%s", json_string_value(ts));
            break;
        }
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    json_decref(o);
}

/* last[i] = "ts" of the newest audit record using e[i] (entries sorted by name), else "-". */
static void
audit_last_used(const char *path, const struct vault_entry *e, size_t n, char (*last)[32])
{
    size_t len = 0, i, off = 0;
    char *buf, *nl;

    for (i = 0; i < n; i++)
        snprintf(last[i], sizeof(last[i]), "-");
    if ((buf = audit_tail(path, &len)) == NULL)
        return;
    while (off < len) {
        nl = memchr(buf + off, '\n', len - off);
        i = nl != NULL ? (size_t)(nl - buf) : len;
        audit_line(buf + off, i - off, e, n, last);
        off = i + 1;
    }
    free(buf);
}

int
cli_list(const struct policy *p)
{
    struct vault_entry *e = NULL;
    char(*last)[32] = NULL, created[32];
    struct vault *v;
    struct err err;
    size_t n = 0, i;
    int rc = 0;

    if ((v = open_vault(p, "list", 0, &rc)) == NULL)
        return rc;
    err_clear(&err);
    if (vault_list(v, &e, &n, &err) == -1) {
        fprintf(stderr, "airlock: list: %s\n", err.msg);
        vault_close(v);
        return exit_for(&err);
    }
    vault_close(v);
    if (n > 0 && (last = calloc(n, sizeof(*last))) == NULL) {
        fprintf(stderr, "airlock: list: out of memory\n");
        free(e);
        return 1;
    }
    audit_last_used(p->audit_path, e, n, last);
    printf("%-24s %-7s %-24s %s\n", "NAME", "BACKEND", "CREATED", "LAST-USED");
    for (i = 0; i < n; i++) {
        util_rfc3339_ms(e[i].created_ms, created, sizeof(created));
        printf("%-24s %-7s %-24s %s\n", e[i].name, backend_name(e[i].backend), created, last[i]);
    }
    fflush(stdout);
    free(last);
    free(e);
    return 0;
}

int
cli_remove(const struct policy *p, const char *name)
{
    struct vault *v;
    struct err err;
    char what[128];
    int rc = 0;

    snprintf(what, sizeof(what), "remove %.64s", name);
    if (!vault_name_valid(name)) {
        fprintf(stderr, "airlock: %s: bad name (letters, digits, '_' and '-', 1-64)\n", what);
        return 2;
    }
    if ((v = open_vault(p, what, 0, &rc)) == NULL)
        return rc;
    err_clear(&err);
    if (vault_remove(v, name, &err) == -1) {
        fprintf(stderr, "airlock: %s: %s\n", what, err.msg);
        rc = exit_for(&err);
    } else {
        printf("removed %s\n", name);
    }
    vault_close(v);
    return rc;
}
