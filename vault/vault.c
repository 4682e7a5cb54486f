/*
 * The vault: files DIR/NAME.sealed (format in blob.c) sealed and unsealed through the
 * hsm token layer. Files are written atomically with mode 0600; reads are bounded by the
 * largest valid blob. Token errors pass through unchanged (callers map ERR_TOKEN to
 * "vault-unavailable"); a corrupt file is reported as "vault: NAME: ...". SoftHSM and
 * tpm2-tss run OpenSSL in our process and may leave its thread error queue dirty even on
 * success, which fails the next TLS read or write on that thread: every token call here
 * is followed by util_ossl_clear().
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vault/vault.h"

#define VAULT_FILE_MAX (32 + VAULT_NAME_MAX + VAULT_DATA_MAX) /* header + name + data */
#define VAULT_MAX_ENTRIES 4096 /* files listed; a vault this large is a mistake */
#define VAULT_AAD_MAX (6 + VAULT_NAME_MAX)
#define VAULT_SUFFIX ".sealed"

#define VAULT_CACHE_MAX 32 /* sealed files kept in memory for vault_unseal */

/*
 * A sealed file as last read, with the stat fields that tell whether it changed since.
 * Ciphertext is not secret; caching it saves the open/read/close of every unseal while a
 * stat still sees a replaced, rewritten or removed file at once.
 */
struct vault_cached {
    char name[VAULT_NAME_MAX + 1]; /* "" when the slot is free */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    char *file; /* malloc'd contents; data points into it */
    const unsigned char *data;
    size_t datalen;
    enum hsm_backend backend;
};

struct vault {
    struct hsm *hsm;
    char *dir;
    struct vault_cached cache[VAULT_CACHE_MAX];
    unsigned cache_next; /* round-robin victim when every slot is taken */
};

/* mkdir -p with mode 0700 for the components it creates. */
static int
vault_mkdir(const char *dir, struct err *err)
{
    char path[4096];
    size_t i, n = util_strlcpy(path, dir, sizeof(path));

    if (n >= sizeof(path))
        return err_set(err, ERR_USAGE, "vault: directory path too long");
    for (i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        path[i] = '\0';
        if (mkdir(path, 0700) == -1 && errno != EEXIST)
            return err_set(err, ERR_IO, "vault: mkdir %s: %s", path, strerror(errno));
        if (i < n)
            path[i] = '/';
    }
    return 0;
}

static int
vault_path(const struct vault *v, const char *name, char *out, size_t outlen, struct err *err)
{
    if (!vault_name_valid(name))
        return err_set(err, ERR_USAGE,
                       "vault: bad credential name \"%.64s\" (letters, digits, '_' and '-', 1-64)",
                       name != NULL ? name : "");
    if ((size_t)snprintf(out, outlen, "%s/%s%s", v->dir, name, VAULT_SUFFIX) >= outlen)
        return err_set(err, ERR_USAGE, "vault: path too long for %s", name);
    return 0;
}

/* The token, with the TPM storage primary's name recorded next to the blobs sealed under it
 * unless the caller named another file. */
static struct hsm *
vault_open_token(const struct hsm_config *cfg, const char *dir, struct err *err)
{
    struct hsm_config c = *cfg;
    char name_file[4096];
    struct hsm *h;

    if (c.tpm2_primary_name_file == NULL) {
        if ((size_t)snprintf(name_file, sizeof(name_file), "%s/%s", dir, VAULT_TPM2_PRIMARY_FILE) >=
            sizeof(name_file)) {
            err_set(err, ERR_USAGE, "vault: directory path too long");
            return NULL;
        }
        c.tpm2_primary_name_file = name_file;
    }
    h = hsm_open(&c, err);
    util_ossl_clear("vault: opening the token"); /* SoftHSM probes for an rdrand engine */
    return h;
}

struct vault *
vault_open(const struct hsm_config *cfg, const char *dir, struct err *err)
{
    struct vault *v;

    if (dir == NULL || *dir == '\0') {
        err_set(err, ERR_USAGE, "vault: no directory configured");
        return NULL;
    }
    if (vault_mkdir(dir, err) == -1)
        return NULL;
    if ((v = calloc(1, sizeof(*v))) == NULL || (v->dir = strdup(dir)) == NULL) {
        free(v);
        err_set(err, ERR_INTERNAL, "vault: out of memory");
        return NULL;
    }
    /* No token configuration: a headers-only vault for listing and removing, so `airlock
     * list` works with the token unplugged and asks for no PIN. */
    if (cfg != NULL && (v->hsm = vault_open_token(cfg, dir, err)) == NULL) {
        vault_close(v);
        return NULL;
    }
    return v;
}

/* Operations that need the token refuse a headers-only vault. */
static int
vault_need_token(const struct vault *v, struct err *err)
{
    if (v->hsm == NULL)
        return err_set(err, ERR_USAGE, "vault: opened without a token");
    return 0;
}

static void
vault_cache_drop(struct vault_cached *c)
{
    free(c->file);
    memset(c, 0, sizeof(*c));
}

static struct vault_cached *
vault_cache_find(struct vault *v, const char *name)
{
    size_t i;

    for (i = 0; i < VAULT_CACHE_MAX; i++)
        if (strcmp(v->cache[i].name, name) == 0)
            return &v->cache[i];
    return NULL;
}

void
vault_close(struct vault *v)
{
    size_t i;

    if (v == NULL)
        return;
    for (i = 0; i < VAULT_CACHE_MAX; i++)
        vault_cache_drop(&v->cache[i]);
    hsm_close(v->hsm);
    util_ossl_clear("vault: closing the token");
    free(v->dir);
    free(v);
}

int
vault_init(struct vault *v, struct err *err)
{
    int rc;

    if (vault_need_token(v, err) == -1)
        return -1;
    rc = hsm_init(v->hsm, err);
    util_ossl_clear("vault: preparing the token");
    return rc;
}

int
vault_health(struct vault *v, struct err *err)
{
    int rc;

    if (vault_need_token(v, err) == -1)
        return -1;
    rc = hsm_health(v->hsm, err); /* may reconnect, which reloads the module */
    util_ossl_clear("vault: checking the token");
    return rc;
}

int
vault_enroll(struct vault *v, const char *name, const unsigned char *secret, size_t len,
             int replace, struct err *err)
{
    unsigned char aad[VAULT_AAD_MAX], *sealed = NULL, *file = NULL;
    size_t aad_len, sealed_len, file_len;
    struct vault_cached *c;
    enum hsm_backend b;
    char path[4096];
    struct stat st;
    int rc = -1;

    if (vault_need_token(v, err) == -1 || vault_path(v, name, path, sizeof(path), err) == -1)
        return -1;
    b = hsm_backend(v->hsm);
    if (len == 0 || secret == NULL)
        return err_set(err, ERR_USAGE, "vault: %s: empty secret", name);
    if (len > VAULT_SECRET_MAX)
        return err_set(err, ERR_LIMIT, "vault: %s: secret of %zu bytes exceeds %d", name, len,
                       VAULT_SECRET_MAX);
    if (!replace && lstat(path, &st) == 0)
        return err_set(err, ERR_EXISTS, "vault: %s: already enrolled (use --replace)", name);
    aad_len = vault_blob_aad(b, name, aad, sizeof(aad));
    rc = hsm_seal(v->hsm, aad, aad_len, secret, len, &sealed, &sealed_len, err);
    util_ossl_clear("vault: sealing");
    if (rc == -1)
        return -1;
    rc = -1;
    if (vault_blob_encode(b, name, util_wall_ms(), sealed, sealed_len, &file, &file_len) == -1) {
        err_set(err, ERR_LIMIT, "vault: %s: sealed blob of %zu bytes does not fit", name,
                sealed_len);
        goto out;
    }
    if ((c = vault_cache_find(v, name)) != NULL)
        vault_cache_drop(c);
    if (util_write_file_atomic(path, file, file_len, 0600) == -1) {
        err_set(err, ERR_IO, "vault: %s: write %s: %s", name, path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    free(sealed);
    free(file);
    return rc;
}

/* Reads and decodes DIR/NAME.sealed; *file is the malloc'd contents *data points into. */
static int
vault_read(struct vault *v, const char *name, char **file, enum hsm_backend *b,
           uint64_t *created_ms, const unsigned char **data, size_t *datalen, struct err *err)
{
    char path[4096], embedded[VAULT_NAME_MAX + 1];
    size_t len;

    if (vault_path(v, name, path, sizeof(path), err) == -1)
        return -1;
    /* One byte over the limit so an oversized file is told apart from a valid one. */
    if ((*file = util_read_file(path, VAULT_FILE_MAX + 1, &len)) == NULL) {
        if (errno == ENOENT)
            return err_set(err, ERR_NOTFOUND, "vault: %s: not enrolled", name);
        if (errno == EFBIG)
            return err_set(err, ERR_PARSE, "vault: %s: blob file larger than %d bytes", name,
                           VAULT_FILE_MAX);
        return err_set(err, ERR_IO, "vault: %s: read %s: %s", name, path, strerror(errno));
    }
    if (vault_blob_decode((unsigned char *)*file, len, b, embedded, created_ms, data, datalen,
                          err) == -1)
        goto fail;
    if (strcmp(embedded, name) != 0) {
        err_set(err, ERR_PARSE, "blob name mismatch (file holds \"%s\")", embedded);
        goto fail;
    }
    return 0;
fail:
    err_prefix(err, "vault: %s", name);
    free(*file);
    *file = NULL;
    return -1;
}

static int
vault_stat_same(const struct vault_cached *c, const struct stat *st)
{
    return c->dev == st->st_dev && c->ino == st->st_ino && c->size == st->st_size &&
           c->mtime.tv_sec == st->st_mtim.tv_sec && c->mtime.tv_nsec == st->st_mtim.tv_nsec &&
           c->ctime.tv_sec == st->st_ctim.tv_sec && c->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

/*
 * The decoded sealed file of name: from the cache when a stat of the file matches what was
 * read last time, else read afresh. The stat comes first, so a file changing during the
 * read is read again next time. The result stays valid until the next vault call.
 */
static struct vault_cached *
vault_sealed(struct vault *v, const char *name, struct err *err)
{
    struct vault_cached *c = NULL;
    uint64_t created;
    char path[4096];
    struct stat st;
    size_t i;

    if (vault_path(v, name, path, sizeof(path), err) == -1)
        return NULL;
    c = vault_cache_find(v, name);
    if (stat(path, &st) == -1) {
        if (c != NULL)
            vault_cache_drop(c);
        if (errno == ENOENT)
            err_set(err, ERR_NOTFOUND, "vault: %s: not enrolled", name);
        else
            err_set(err, ERR_IO, "vault: %s: stat %s: %s", name, path, strerror(errno));
        return NULL;
    }
    if (c != NULL && vault_stat_same(c, &st))
        return c;
    if (c == NULL) {
        for (i = 0; i < VAULT_CACHE_MAX && c == NULL; i++)
            if (v->cache[i].name[0] == '\0')
                c = &v->cache[i];
        if (c == NULL)
            c = &v->cache[v->cache_next++ % VAULT_CACHE_MAX];
    }
    vault_cache_drop(c);
    if (vault_read(v, name, &c->file, &c->backend, &created, &c->data, &c->datalen, err) == -1)
        return NULL;
    util_strlcpy(c->name, name, sizeof(c->name));
    c->dev = st.st_dev;
    c->ino = st.st_ino;
    c->size = st.st_size;
    c->mtime = st.st_mtim;
    c->ctime = st.st_ctim;
    return c;
}

/* Unseals the sealed file c (of name) into out, which has room for it. */
static int
vault_unseal_cached(struct vault *v, const char *name, const struct vault_cached *c,
    struct secbuf *out, struct err *err)
{
    unsigned char aad[VAULT_AAD_MAX];
    size_t aad_len;
    int rc;

    if (c->backend != hsm_backend(v->hsm))
        return err_set(err, ERR_USAGE, "vault: %s: sealed by the %s backend, not this one", name,
                       c->backend == HSM_BACKEND_TPM2 ? "tpm2" : "pkcs11");
    aad_len = vault_blob_aad(c->backend, name, aad, sizeof(aad));
    rc = hsm_unseal_into(v->hsm, aad, aad_len, c->data, c->datalen, out, err);
    util_ossl_clear("vault: unsealing");
    if (rc == -1 && err != NULL && (err->code == ERR_CRYPTO || err->code == ERR_PARSE))
        err_prefix(err, "vault: %s", name);
    return rc;
}

int
vault_unseal_into(struct vault *v, const char *name, struct secbuf *out, struct err *err)
{
    struct vault_cached *c;

    out->len = 0;
    if (vault_need_token(v, err) == -1 || (c = vault_sealed(v, name, err)) == NULL)
        return -1;
    return vault_unseal_cached(v, name, c, out, err);
}

int
vault_unseal(struct vault *v, const char *name, struct secbuf **out, struct err *err)
{
    struct vault_cached *c;
    struct secbuf *sb;

    *out = NULL;
    if (vault_need_token(v, err) == -1 || (c = vault_sealed(v, name, err)) == NULL)
        return -1;
    if ((sb = secbuf_new(c->datalen > 0 ? c->datalen : 1)) == NULL)
        return err_set(err, ERR_INTERNAL, "vault: cannot allocate locked memory");
    if (vault_unseal_cached(v, name, c, sb, err) == -1) {
        secbuf_free(sb);
        return -1;
    }
    *out = sb;
    return 0;
}

static int
vault_entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct vault_entry *)a)->name, ((const struct vault_entry *)b)->name);
}

/* "NAME.sealed" → NAME in out; 0 if the file name is not a blob of a valid name. */
static int
vault_file_name(const char *fname, char out[VAULT_NAME_MAX + 1])
{
    size_t n = strlen(fname), s = strlen(VAULT_SUFFIX);

    if (n <= s || n - s > VAULT_NAME_MAX || strcmp(fname + n - s, VAULT_SUFFIX) != 0)
        return 0;
    memcpy(out, fname, n - s);
    out[n - s] = '\0';
    return vault_name_valid(out);
}

static int
vault_list_add(struct vault *v, const char *name, struct vault_entry *e)
{
    const unsigned char *data;
    size_t datalen;
    struct err e2;
    char *file;

    if (vault_read(v, name, &file, &e->backend, &e->created_ms, &data, &datalen, &e2) == -1) {
        log_warn("%s", e2.msg); /* a corrupt file must not hide the others */
        return -1;
    }
    free(file);
    util_strlcpy(e->name, name, sizeof(e->name));
    return 0;
}

int
vault_list(struct vault *v, struct vault_entry **entries, size_t *n, struct err *err)
{
    struct vault_entry *list = NULL;
    char name[VAULT_NAME_MAX + 1];
    struct dirent *de;
    size_t count = 0;
    DIR *d;

    *entries = NULL;
    *n = 0;
    if ((d = opendir(v->dir)) == NULL)
        return err_set(err, ERR_IO, "vault: open %s: %s", v->dir, strerror(errno));
    while ((de = readdir(d)) != NULL) {
        if (!vault_file_name(de->d_name, name))
            continue;
        if (count == VAULT_MAX_ENTRIES) {
            log_warn("vault: %s: more than %d blobs, listing the first", v->dir, VAULT_MAX_ENTRIES);
            break;
        }
        if (list == NULL && (list = calloc(VAULT_MAX_ENTRIES, sizeof(*list))) == NULL) {
            closedir(d);
            return err_set(err, ERR_INTERNAL, "vault: out of memory");
        }
        if (vault_list_add(v, name, &list[count]) == 0)
            count++;
    }
    closedir(d);
    if (count == 0) {
        free(list);
        return 0;
    }
    qsort(list, count, sizeof(*list), vault_entry_cmp);
    *entries = list;
    *n = count;
    return 0;
}

int
vault_remove(struct vault *v, const char *name, struct err *err)
{
    char path[4096];

    struct vault_cached *c;

    if (vault_path(v, name, path, sizeof(path), err) == -1)
        return -1;
    if ((c = vault_cache_find(v, name)) != NULL)
        vault_cache_drop(c);
    if (unlink(path) == -1) {
        if (errno == ENOENT)
            return err_set(err, ERR_NOTFOUND, "vault: %s: not enrolled", name);
        return err_set(err, ERR_IO, "vault: %s: remove %s: %s", name, path, strerror(errno));
    }
    return 0;
}
