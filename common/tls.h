/* Mutual TLS 1.3 between Ferry hosts (docs/tls.md).
 *
 * Every Ferry host holds a credentials directory DIR:
 *   ca.pem    the CA that signs every Ferry host (the only trust anchor)
 *   cert.pem  this host's certificate (may be followed by its chain)
 *   key.pem   its private key (mode 0600)
 * and, on the host that keeps the cluster CA, ca-key.pem.
 * Any host whose certificate the CA signed is a peer: no host names are
 * checked, no system CAs are trusted.
 *
 * Errors are one line, "TLS: ..." (callers add their own prefix).
 * Thread-safe: contexts may be shared, connections handshake in parallel.
 * Writes never raise SIGPIPE (the socket BIO sends with MSG_NOSIGNAL).
 *
 * Writes are buffered (many records per syscall): call tls_flush() after
 * each message, before waiting for the peer. */
#ifndef FERRY_COMMON_TLS_H
#define FERRY_COMMON_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

/* Default validity of host certificates (`ferry tls init/issue --days`). */
#define TLS_DEFAULT_DAYS 825

/* A TLS 1.3 context for DIR's credentials, requiring a peer certificate
 * signed by DIR/ca.pem. Checks the files are readable, that the key matches
 * the certificate and that the certificate is valid now and signed by the
 * CA. NULL and a one-line reason on failure. */
SSL_CTX *tls_ctx_new(const char *dir, bool server, char *err, size_t errlen);

/* Handshake on a connected blocking socket (SO_RCVTIMEO/SO_SNDTIMEO are
 * honoured). The client returns only once the server has accepted its
 * certificate: the server confirms with one byte of application data that
 * tls_handshake consumes, so a refusal is reported here on both sides
 * rather than at the client's first read. Returns the SSL, or NULL with a
 * one-line reason. The SSL owns its BIOs but never closes fd. */
SSL *tls_handshake(SSL_CTX *ctx, int fd, bool server, char *err, size_t errlen);

/* One line for a failed SSL_read_ex/SSL_write_ex/SSL_shutdown (ret = the
 * call's return), incl. received alerts: "TLS: the peer rejected our
 * certificate (alert: unknown ca)". Uses and clears this thread's OpenSSL
 * error queue, so call it right after the failed call. */
void tls_error(SSL *ssl, int ret, const char *what, char *err, size_t errlen);

/* Push the buffered records to the socket: 0, or -1 with errno set. */
int tls_flush(SSL *ssl);

/* The negotiated cipher suite, e.g. "TLS_AES_128_GCM_SHA256". */
const char *tls_cipher(const SSL *ssl);

/* Best-effort close_notify (never blocks on a full socket), then SSL_free.
 * Does not close the fd. NULL is a no-op. */
void tls_free(SSL *ssl);

/* A new cluster CA in DIR (created 0700 if missing): ca.pem, ca-key.pem,
 * and a first host identity cert.pem + key.pem for cn (NULL: the host
 * name), so DIR is at once usable with --tls-dir. Host certificate valid
 * for days, the CA for 10 years (or days, if longer). Refuses a DIR that
 * already holds a CA or a host identity. 0, or -1 with a reason. */
int tls_ca_init(const char *dir, const char *cn, int days, char *err, size_t errlen);

/* A host identity for cn signed by cadir's CA: outdir/ca.pem (a copy),
 * outdir/cert.pem, outdir/key.pem (outdir created 0700 if missing). Files
 * are replaced atomically, so issuing again renews. 0, or -1 with a reason. */
int tls_issue(const char *cadir, const char *outdir, const char *cn, int days,
              char *err, size_t errlen);

#endif
