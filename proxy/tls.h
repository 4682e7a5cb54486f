/*
 * The OpenSSL side of TLS interception (SPEC section 5): the local CA, per-host leaf
 * certificates minted on demand, the client-facing context (we are the server: SNI must
 * equal the CONNECT host) and the verified upstream context. No event loop in here: the
 * proxy core wraps the SSL objects in bufferevent_openssl.
 */
#ifndef AIRLOCK_PROXY_TLS_H
#define AIRLOCK_PROXY_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/err.h"
#include "common/secmem.h"

#define TLS_FINGERPRINT_LEN 96      /* "AB:CD:...": 32 * 3 bytes including the NUL */
#define TLS_LEAF_CACHE_DEFAULT 1024 /* minted certificates kept in memory */
#define TLS_SESSION_CACHE_MAX 64    /* upstream host:port sessions kept for resumption */

/*
 * Local CA (airlock init): ECDSA P-256, 10 years, subject CN "airlock local CA (<hostname>)",
 * basicConstraints critical CA:TRUE pathlen:0, keyUsage critical keyCertSign,cRLSign, SKI,
 * random 128-bit serial. On success *key_der is the private key as PKCS#8 DER in locked
 * memory (caller: secbuf_free) and *cert_pem a malloc'd PEM string (caller: free).
 */
int tls_ca_generate(const char *hostname, struct secbuf **key_der, char **cert_pem,
                    struct err *err);

/* SHA-256 fingerprint "AB:CD:..." of the PEM certificate at pem_path; outlen must be at least
 * TLS_FINGERPRINT_LEN. */
int tls_cert_fingerprint(const char *pem_path, char *out, size_t outlen, struct err *err);

typedef int (*tls_seal_fn)(void *arg, const struct secbuf *key_der, struct err *err);

/*
 * For `airlock init`, once the vault is ready: creates state_dir (0700) if absent; if
 * state_dir/ca.pem exists does nothing (idempotent); otherwise generates the CA, hands the
 * key to seal_key (the caller seals it in the vault as "_ca"), and only then writes ca.pem
 * (0644, atomically). The key is wiped before returning.
 */
int tls_ca_init(const char *state_dir, tls_seal_fn seal_key, void *arg, struct err *err);

/*
 * Leaf minting. get_key is called to unseal the CA key only when a leaf must be signed; the
 * minter wipes (secbuf_free) what it returns right after signing.
 */
typedef int (*tls_ca_key_fn)(void *arg, struct secbuf **key_der, struct err *err);
struct tls_minter;

/* Loads the CA certificate and generates the per-run ECDSA P-256 leaf key. */
struct tls_minter *tls_minter_new(const char *ca_pem_path, tls_ca_key_fn get_key, void *arg,
                                  struct err *err);
void tls_minter_free(struct tls_minter *m); /* NULL is a no-op */
/* Bounds the LRU cache (at least 1); evicts the oldest entries at once. */
void tls_minter_set_cache_size(struct tls_minter *m, size_t max_entries);
/*
 * Certificate for host (a normalised name, or an IP literal without brackets): SAN dNSName
 * or iPAddress, notBefore now - 1 h, notAfter now + 7 d, random serial, signed by the CA.
 * Served from the LRU cache when present. Returns a new reference (caller: X509_free).
 * Leaves the thread's OpenSSL error queue empty, whatever get_key left on it: this runs
 * inside a client's handshake, where a queued error fails it (util_ossl_clear).
 */
X509 *tls_minter_cert(struct tls_minter *m, const char *host, struct err *err);
/* The cached leaf for host while it is fresh (a new reference), or NULL: minting one needs
 * the CA key. Never calls the key source. */
X509 *tls_minter_cached(struct tls_minter *m, const char *host);
/* tls_minter_cert with the CA key at hand (PKCS#8 DER, e.g. just unsealed by the token
 * worker; only read) instead of asking the key source: the daemon's asynchronous mint. */
X509 *tls_minter_cert_with_key(struct tls_minter *m, const char *host, const struct secbuf *key_der,
                               struct err *err);
EVP_PKEY *tls_minter_leaf_key(struct tls_minter *m); /* borrowed */
size_t tls_minter_cache_count(const struct tls_minter *m);

/*
 * Client-facing context (we are the server): TLS >= 1.2, ALPN http/1.1 only (a client that
 * offers no http/1.1 simply gets no ALPN), no session resumption, and a servername callback
 * that aborts the handshake (unrecognized_name) unless the SNI equals the host expected for
 * that SSL, then installs the minted certificate and leaf key. m must outlive the context.
 */
SSL_CTX *tls_client_ctx_new(struct tls_minter *m, struct err *err);
/* An accepting SSL that expects expected_host (IP literals: no SNI, or the literal itself). */
SSL *tls_client_ssl_new(SSL_CTX *ctx, const char *expected_host);
/*
 * Pins the leaf the handshake on ssl installs once its SNI matches, minted beforehand (a
 * reference is taken): the handshake then never waits for the CA key. NULL pins "none":
 * the handshake fails with an internal_error alert (no leaf could be had). Without a pin
 * the servername callback mints through the minter. 0, or -1 when ssl is not ours.
 */
int tls_client_ssl_set_leaf(SSL *ssl, X509 *leaf);
/* 1 if the handshake on ssl failed because of the SNI check (audit: host-mismatch). */
int tls_client_sni_mismatch(SSL *ssl);

/*
 * Upstream context: peer verified against ca_file (PEM bundle) or the system default paths
 * when NULL, TLS >= 1.2, ALPN http/1.1, client session cache of TLS_SESSION_CACHE_MAX
 * host:port entries for resumption.
 */
SSL_CTX *tls_upstream_ctx_new(const char *ca_file, struct err *err);
/* A connecting SSL: SNI = host (not for IP literals), hostname (or IP) verification without
 * partial wildcards, and the cached session for host:port if any. NULL on a bad host. */
SSL *tls_upstream_ssl_new(SSL_CTX *ctx, const char *host, uint16_t port);
/* After a successful, verified handshake: remember the session for host:port. */
void tls_upstream_session_save(SSL_CTX *ctx, SSL *ssl, const char *host, uint16_t port);
/* The reason text of one OpenSSL error (errno's text for a system error), NULL for 0. */
const char *tls_error_reason(unsigned long e);
/*
 * Human-readable reason for a failed upstream handshake, written to buf; returns buf.
 * ossl_err is the OpenSSL error the handshake failed with, or 0 to take the newest one on
 * this thread's queue. Under libevent, pass what bufferevent_get_openssl_error() hands back:
 * the filter moves the queue into the bufferevent before the event callback runs, so the
 * queue no longer holds the reason. Leaves the queue empty.
 */
const char *tls_upstream_error(SSL *ssl, unsigned long ossl_err, char *buf, size_t buflen);

#endif
