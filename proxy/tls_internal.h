/*
 * Private to the TLS toolkit (proxy/tls_*.c): certificate-building helpers shared by the
 * CA generator and the leaf minter, key (de)serialisation through locked memory, and
 * OpenSSL error reporting into struct err.
 */
#ifndef AIRLOCK_PROXY_TLS_INTERNAL_H
#define AIRLOCK_PROXY_TLS_INTERNAL_H

#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/err.h"
#include "common/secmem.h"

/*
 * TLS 1.3 suites in preference order, for both sides of interception: AES-128-GCM first,
 * because its SHA-256 key schedule costs about half of SHA-384's per handshake (and uses the
 * SHA extensions where the CPU has them); all three are the RFC 8446 9.1 set.
 */
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"

/* Sets err to "what: <openssl reason>" and empties the OpenSSL error queue. Returns -1. */
int tls_ossl_err(struct err *err, const char *what);

EVP_PKEY *tls_key_generate(struct err *err); /* ECDSA P-256 */
/* PKCS#8 DER of key, written straight into locked memory. */
struct secbuf *tls_key_to_der(EVP_PKEY *key, struct err *err);
EVP_PKEY *tls_key_from_der(const struct secbuf *der, struct err *err);

/* Version 3, random positive 128-bit serial, validity [now + from_s, now + to_s]. */
int tls_x509_prepare(X509 *x, time_t now, long from_s, long to_s, struct err *err);
/* Adds one extension in openssl.cnf syntax ("critical,CA:TRUE"); issuer may equal x. */
int tls_x509_add_ext(X509 *x, X509 *issuer, int nid, const char *value, struct err *err);
/* Subject (and, when issuer is NULL, issuer) CN = cn. */
int tls_x509_set_cn(X509 *x, const char *cn, int self_issued, struct err *err);

#endif
