/*
 * Private to policy/: the YAML document as a small tree with source positions (built by
 * yaml_tree.c from libyaml events), and the typed accessors the loader uses so that every
 * error names PATH:LINE:COL of the offending node.
 */
#ifndef AIRLOCK_POLICY_INTERNAL_H
#define AIRLOCK_POLICY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "policy/policy.h"

#define POLICY_MAX_FILE (1024 * 1024) /* bytes */
#define POLICY_MAX_RULES 10000
#define POLICY_MAX_DEPTH 32           /* nesting of mappings and sequences */
#define POLICY_MAX_NODES 400000       /* scalars + collections in one file */
#define POLICY_MAX_MAP_KEYS 10000     /* keeps the duplicate-key check bounded */
#define POLICY_MAX_SEQ 100000

enum ynode_type { YNODE_SCALAR, YNODE_SEQ, YNODE_MAP };

struct ynode {
    enum ynode_type type;
    int line, col;         /* 1-based */
    int is_null;           /* plain "", "~" or "null" */
    char *value;           /* scalars: NUL-free text */
    struct ynode **kids;   /* sequences: items; mappings: key, value, key, value... */
    size_t nkids;
    size_t cap;
};

/* Parses buf (len bytes) into a tree. On error fills err with "path:line:col: ...". */
struct ynode *ytree_parse(const char *path, const char *buf, size_t len, struct err *err);
void ytree_free(struct ynode *n);

/* Loader state shared by load*.c. */
struct lctx {
    const char *path;
    struct err *err;
    struct policy *p;
    const struct ynode *root;
};

/* Sets err to "path:line:col: message" for node n (ERR_USAGE). Returns -1. */
int lerr(struct lctx *c, const struct ynode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Printable, bounded copy of user text for messages. */
const char *lquote(const char *s, char *buf, size_t size);
const char *ynode_kind(const struct ynode *n);

/* Mapping helpers; a NULL or null node behaves as an empty mapping. */
const struct ynode *ymap_get(const struct ynode *map, const char *key);
int lcheck_map(struct lctx *c, const struct ynode *n, const char *what);
int lcheck_keys(struct lctx *c, const struct ynode *map, const char *const *keys,
    const char *what);
int lcheck_seq(struct lctx *c, const struct ynode *n, const char *what, size_t max);
size_t yseq_len(const struct ynode *n);

/* Typed values; n must be non-NULL. */
int lstr(struct lctx *c, const struct ynode *n, const char *what, const char **out);
int lstrdup(struct lctx *c, const struct ynode *n, const char *what, char **out);
int lbool(struct lctx *c, const struct ynode *n, const char *what, int *out);
int luint(struct lctx *c, const struct ynode *n, const char *what, uint64_t min, uint64_t max,
    uint64_t *out);
int lduration(struct lctx *c, const struct ynode *n, const char *what, uint64_t min,
    uint64_t *out);
int lduration_range(struct lctx *c, const struct ynode *n, const char *what, uint64_t min,
    uint64_t max, uint64_t *out);
int lsize(struct lctx *c, const struct ynode *n, const char *what, uint64_t min, uint64_t max,
    uint64_t *out);
/* A path made absolute against the config file's directory. */
int lpath(struct lctx *c, const struct ynode *n, const char *what, char **out);
char *lpath_join(const char *dir, const char *rel);

/* Sections; each validates completely and fills c->p. n is NULL when the key is absent. */
int load_listen(struct lctx *c, const struct ynode *n);
int load_vault(struct lctx *c, const struct ynode *n);
int load_tls(struct lctx *c, const struct ynode *n);
int load_resolve(struct lctx *c, const struct ynode *n);
int load_network(struct lctx *c, const struct ynode *n);
int load_agents(struct lctx *c, const struct ynode *n);
int load_credentials(struct lctx *c, const struct ynode *n);
int load_rules(struct lctx *c, const struct ynode *n);

void policy_free(struct policy *p);

#endif
