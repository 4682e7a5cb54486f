/*
 * Private to the PKCS#11 backend: the connection state shared by pkcs11_session.c (module,
 * slot, PIN, login, reconnecting) and pkcs11.c (the wrapping key, seal, unseal, the ops).
 */
#ifndef AIRLOCK_HSM_PKCS11_INTERNAL_H
#define AIRLOCK_HSM_PKCS11_INTERNAL_H

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include "hsm/hsm_internal.h"

#define P11_MAX_SLOTS 64 /* slots scanned for the token */
#define P11_MAX_PIN 256  /* bytes of PIN read from env or file */

struct p11 {
    CK_FUNCTION_LIST *mod; /* loaded and initialised, or NULL */
    CK_SESSION_HANDLE session;
    int have_session; /* session open and logged in */
    CK_OBJECT_HANDLE key;
    int have_key;
    int broken; /* last call hit a session/device error: reconnect first */
    P11KitUri *uri;
    char token_name[80]; /* for messages: the URI's token label, or the URI */
    const char *module_path, *pin_ref, *label;
};

typedef int (*p11_op_fn)(struct p11 *p, void *arg, struct err *err);

/* Name of a return value for messages ("CKR_PIN_INCORRECT"). */
const char *p11_rv_name(CK_RV rv);
/* Errors that mean the session, login or token is gone rather than the operation refused. */
int p11_rv_is_lost(CK_RV rv);
/* Sets err (ERR_TOKEN) from rv and marks the connection broken when rv says it is lost. */
int p11_fail(struct p11 *p, CK_RV rv, const char *what, struct err *err);
/* Loads the module, finds the token, opens a session and logs in. All or nothing. */
int p11_connect(struct p11 *p, struct err *err);
/* Closes the session and finalises the module; the key handle is forgotten. */
void p11_disconnect(struct p11 *p);
/*
 * Runs fn, reconnecting first when the last call lost the token, and once more after a
 * reconnect when fn itself hits a lost session. Errors from fn are final otherwise.
 */
int p11_run(struct p11 *p, p11_op_fn fn, void *arg, struct err *err);

#endif
