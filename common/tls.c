/* Mutual TLS 1.3 between Ferry hosts: contexts, handshakes with one-line
 * diagnoses, and the cluster CA (docs/tls.md). */
#include "common/tls.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

enum {
    BUF_LEN = 256 * 1024,        /* read-ahead and write coalescing: many 16 KiB records a syscall */
    CA_DAYS = 3650,              /* the CA outlives many host certificates */
    MAX_DAYS = 36500,
    BACKDATE_S = 3600,           /* hosts' clocks differ: a new certificate works at once on all */
    CONFIRM = 'F',               /* the server's handshake confirmation byte */
    MAX_CA_FILE = 1 << 20,
};

#define PLAINTEXT_PEER "TLS: the peer does not speak TLS (a plaintext Ferry migration stream? " \
                       "use --tls-dir on both ends, or --insecure on both)"
#define CLOSED_IN_HANDSHAKE "TLS: connection closed during the handshake " \
                            "(is the peer plaintext, started with --insecure?)"

/* Written once (init_once), read-only afterwards: our socket BIO method and
 * the ex_data slots for a context's directory and a handshake's diagnosis. */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static BIO_METHOD *sock_method;
static int ctx_dir_idx = -1, ssl_diag_idx = -1;

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char *errno_text(int e, char *buf, size_t len)
{
    if (e == EAGAIN || e == EWOULDBLOCK)
        return "timed out";
    if (e == 0)
        return "connection closed";
    return strerror_r(e, buf, len);
}

/* The reason of the last OpenSSL error on this thread, for the rare cases
 * we do not explain ourselves. */
static const char *ossl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unknown error";
}

static int ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
}

static bool path_in(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);
    return n >= 0 && (size_t)n < len;
}

/* Day precision for expiry; to the minute for "not yet valid" (clock skew). */
static void asn1_date(const ASN1_TIME *t, bool minutes, char *out, size_t len)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm)
        || !(minutes ? strftime(out, len, "%Y-%m-%d %H:%M UTC", &tm) : strftime(out, len, "%Y-%m-%d", &tm)))
        snprintf(out, len, "(unreadable date)");
}

/* ---- a socket BIO that never raises SIGPIPE ---- */

struct sock_bio {
    int fd;
    int last_errno;   /* of the last failed send/recv; 0 after EOF */
    bool eof;
    bool dontwait;    /* tls_free: a close_notify must not block on a full socket */
};

static int sock_write(BIO *b, const char *buf, size_t len, size_t *written)
{
    struct sock_bio *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL | (s->dontwait ? MSG_DONTWAIT : 0));
    if (n < 0) {
        s->last_errno = errno;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            BIO_set_retry_write(b);
        return 0;
    }
    *written = (size_t)n;
    return 1;
}

static int sock_read(BIO *b, char *buf, size_t len, size_t *readbytes)
{
    struct sock_bio *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = recv(s->fd, buf, len, 0);
    if (n <= 0) {
        s->last_errno = n ? errno : 0;
        s->eof = n == 0;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            BIO_set_retry_read(b);
        return 0;
    }
    *readbytes = (size_t)n;
    return 1;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct sock_bio *s = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_EOF:
        return s->eof;
    case BIO_C_GET_FD:     /* SSL_get_fd */
        if (ptr)
            *(int *)ptr = s->fd;
        return s->fd;
    default:
        return 0;
    }
}

static int sock_destroy(BIO *b)
{
    free(BIO_get_data(b));
    BIO_set_data(b, NULL);
    return 1;
}

static void free_dir(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

static void init_once(void)
{
    int type = BIO_get_new_index();
    BIO_METHOD *m = type < 0 ? NULL : BIO_meth_new(type | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                                   "ferry socket");
    if (m && BIO_meth_set_write_ex(m, sock_write) && BIO_meth_set_read_ex(m, sock_read)
        && BIO_meth_set_ctrl(m, sock_ctrl) && BIO_meth_set_destroy(m, sock_destroy))
        sock_method = m;
    else
        BIO_meth_free(m);
    ctx_dir_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_dir);
    ssl_diag_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static BIO *sock_bio_new(int fd)
{
    struct sock_bio *s = calloc(1, sizeof(*s));
    BIO *b = s && sock_method ? BIO_new(sock_method) : NULL;
    if (!b) {
        free(s);
        return NULL;
    }
    s->fd = fd;
    BIO_set_data(b, s);
    BIO_set_init(b, 1);
    return b;
}

static struct sock_bio *sock_of(const SSL *ssl)
{
    BIO *r = SSL_get_rbio(ssl);
    return r ? BIO_get_data(r) : NULL;
}

/* ---- contexts ---- */

/* The first verification failure of a handshake, noted by verify_cb: by the
 * time SSL_accept/SSL_connect fails, the peer's certificate is gone. */
struct verify_diag {
    bool set;
    int code, depth;
    char cn[128], date[64];
};

/* The chain does not lead to our CA (whichever certificate it stops at). */
static bool not_our_ca(int code)
{
    switch (code) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE: case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        return true;
    default:
        return false;
    }
}

static int verify_cb(int ok, X509_STORE_CTX *sc)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(sc, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct verify_diag *d = ssl ? SSL_get_ex_data(ssl, ssl_diag_idx) : NULL;
    if (ok || !d || d->set)
        return ok;
    d->set = true;
    d->code = X509_STORE_CTX_get_error(sc);
    d->depth = X509_STORE_CTX_get_error_depth(sc);
    /* a foreign chain is named by its host, a date problem by its holder */
    X509 *x = not_our_ca(d->code) ? X509_STORE_CTX_get0_cert(sc) : X509_STORE_CTX_get_current_cert(sc);
    if (!x || X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, d->cn, sizeof(d->cn)) < 0)
        snprintf(d->cn, sizeof(d->cn), "?");
    if (x && d->code == X509_V_ERR_CERT_HAS_EXPIRED)
        asn1_date(X509_get0_notAfter(x), false, d->date, sizeof(d->date));
    else if (x && d->code == X509_V_ERR_CERT_NOT_YET_VALID)
        asn1_date(X509_get0_notBefore(x), true, d->date, sizeof(d->date));
    return ok;
}

/* Nanoseconds to seal 256 KiB in 16 KiB records with c (the second of two
 * tries: the first pays for lazy initialisation). */
static uint64_t aead_ns(const EVP_CIPHER *c)
{
    static const unsigned char key[32], iv[12], in[16384];
    static unsigned char out[16384 + 64];
    uint64_t best = UINT64_MAX;
    for (int k = 0; k < 2; k++) {
        EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
        struct timespec t0, t1;
        int len = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        bool ok = x && EVP_EncryptInit_ex(x, c, NULL, key, iv) == 1;
        for (int i = 0; ok && i < 16; i++)
            ok = EVP_EncryptUpdate(x, out, &len, in, (int)sizeof(in)) == 1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        EVP_CIPHER_CTX_free(x);
        uint64_t ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ull + (uint64_t)(t1.tv_nsec - t0.tv_nsec);
        if (ok && ns < best)
            best = ns;
    }
    return best;
}

static const char *preferred_suites;

/* AES-GCM on AES-NI is several times faster than ChaCha20-Poly1305, and
 * without AES instructions it is the other way round; so is it where AES is
 * emulated (QEMU's TCG: 26 against 184 MB/s). Both are measured once, on
 * this CPU, and the faster goes first; the server's preference decides, so
 * the receiving CPU picks (both are offered either way). */
static void pick_suites(void)
{
    /* the best of three, interleaved, and a clear margin (emulation is 7x
     * slower, not a few percent): a busy core must not flip the choice */
    uint64_t aes = UINT64_MAX, chacha_t = UINT64_MAX;
    for (int i = 0; i < 3; i++) {
        uint64_t a = aead_ns(EVP_aes_128_gcm()), c = aead_ns(EVP_chacha20_poly1305());
        aes = a < aes ? a : aes;
        chacha_t = c < chacha_t ? c : chacha_t;
    }
    bool chacha = chacha_t < UINT64_MAX / 2 && chacha_t * 2 < aes;
    preferred_suites = chacha
        ? "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"
        : "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
}

static const char *ciphersuites(void)
{
    static pthread_once_t picked = PTHREAD_ONCE_INIT;
    pthread_once(&picked, pick_suites);
    return preferred_suites;
}

static bool ctx_policy(SSL_CTX *ctx)
{
    /* No tickets, no session cache: connections are few and long, and a
     * resumed session would skip the certificate check of a revoked host. */
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET
                        | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* send cert.pem as it is: the peer has the CA already */
    SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, BUF_LEN);
    return SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION)
        && SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)
        && SSL_CTX_set_ciphersuites(ctx, ciphersuites())
        && SSL_CTX_set_num_tickets(ctx, 0);
}

/* Our own certificate is usable now and chains to ca.pem: better said here
 * than as a refusal on the peer's side. */
static int check_own_cert(SSL_CTX *ctx, const char *cert, const char *ca, char *err, size_t errlen)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    char date[64];
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
        asn1_date(X509_get0_notAfter(x), false, date, sizeof(date));
        seterr(err, errlen, "TLS: %s expired on %s", cert, date);
        return -1;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
        asn1_date(X509_get0_notBefore(x), true, date, sizeof(date));
        seterr(err, errlen, "TLS: %s is not valid before %s (check this host's clock)", cert, date);
        return -1;
    }
    STACK_OF(X509) *chain = NULL;
    X509_STORE_CTX *sc = X509_STORE_CTX_new();
    SSL_CTX_get0_chain_certs(ctx, &chain);
    int ok = sc && X509_STORE_CTX_init(sc, SSL_CTX_get_cert_store(ctx), x, chain) == 1
             && X509_verify_cert(sc) == 1;
    if (!ok)
        seterr(err, errlen, "TLS: %s does not verify against %s: %s", cert, ca,
               sc ? X509_verify_cert_error_string(X509_STORE_CTX_get_error(sc)) : "out of memory");
    X509_STORE_CTX_free(sc);
    return ok ? 0 : -1;
}

static int load_creds(SSL_CTX *ctx, const char *ca, const char *cert, const char *key,
                      char *err, size_t errlen)
{
    if (!SSL_CTX_load_verify_file(ctx, ca)) {
        seterr(err, errlen, "TLS: %s: no usable CA certificate (%s)", ca, ossl_reason());
        return -1;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        seterr(err, errlen, "TLS: %s: no usable certificate (%s)", cert, ossl_reason());
        return -1;
    }
    unsigned long e = 0;
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        e = ERR_peek_last_error();
    bool mismatch = ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
    if (e && !mismatch) {
        seterr(err, errlen, "TLS: %s: no usable private key (%s)", key, ossl_reason());
        return -1;
    }
    if (mismatch || SSL_CTX_check_private_key(ctx) != 1) {
        seterr(err, errlen, "TLS: %s does not match %s (the key of another certificate)", key, cert);
        return -1;
    }
    return check_own_cert(ctx, cert, ca, err, errlen);
}

SSL_CTX *tls_ctx_new(const char *dir, bool server, char *err, size_t errlen)
{
    pthread_once(&once, init_once);
    ERR_clear_error();
    char path[3][PATH_MAX], ebuf[128];
    static const char *const names[3] = { "ca.pem", "cert.pem", "key.pem" };
    for (int i = 0; i < 3; i++) {
        if (!path_in(path[i], sizeof(path[i]), dir, names[i])) {
            seterr(err, errlen, "TLS: %s: path too long", dir);
            return NULL;
        }
        if (access(path[i], R_OK)) {
            seterr(err, errlen, "TLS: cannot read %s: %s", path[i], errno_text(errno, ebuf, sizeof(ebuf)));
            return NULL;
        }
    }
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    char *dircopy = strdup(dir);
    int rc = -1;
    if (!ctx || !dircopy || !sock_method || !ctx_policy(ctx)
        || !SSL_CTX_set_ex_data(ctx, ctx_dir_idx, dircopy))
        seterr(err, errlen, "TLS: cannot set up a context: %s", ossl_reason());
    else
        rc = load_creds(ctx, path[0], path[1], path[2], err, errlen);
    if (ctx && SSL_CTX_get_ex_data(ctx, ctx_dir_idx) == dircopy)
        dircopy = NULL;   /* the context frees it */
    free(dircopy);
    ERR_clear_error();
    if (rc < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ---- handshakes and errors ---- */

/* A fatal alert the peer sent, from the error queue; 0 if none. */
static int received_alert(const char **desc)
{
    unsigned long e = ERR_peek_last_error();
    int r = ERR_GET_REASON(e);
    if (ERR_GET_LIB(e) != ERR_LIB_SSL || r <= SSL_AD_REASON_OFFSET || r >= SSL_AD_REASON_OFFSET + 256)
        return 0;
    /* "tlsv1 alert unknown ca" -> "unknown ca" */
    const char *s = ERR_reason_error_string(e), *a = s ? strstr(s, "alert ") : NULL;
    *desc = a ? a + strlen("alert ") : "unknown";
    return r - SSL_AD_REASON_OFFSET;
}

static void alert_error(int alert, const char *desc, const char *what, char *err, size_t errlen)
{
    switch (alert) {
    case SSL_AD_CERTIFICATE_REQUIRED:
        seterr(err, errlen, "TLS: the peer requires a certificate and we sent none (alert: %s)", desc);
        break;
    case SSL_AD_BAD_CERTIFICATE: case SSL_AD_UNSUPPORTED_CERTIFICATE: case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED: case SSL_AD_CERTIFICATE_UNKNOWN: case SSL_AD_UNKNOWN_CA:
        seterr(err, errlen, "TLS: the peer rejected our certificate (alert: %s)", desc);
        break;
    case SSL_AD_PROTOCOL_VERSION:
        seterr(err, errlen, "TLS: the peer does not accept TLS 1.3 (alert: %s)", desc);
        break;
    default:
        seterr(err, errlen, "TLS: %s: the peer aborted the connection (alert: %s)", what, desc);
    }
}

/* The transport ended: EOF without close_notify, or a reset. */
static bool transport_closed(const SSL *ssl, int code)
{
    const struct sock_bio *s = sock_of(ssl);
    int e = s ? s->last_errno : 0;
    if (code == SSL_ERROR_SSL)
        return ssl_reason() == SSL_R_UNEXPECTED_EOF_WHILE_READING;
    return code == SSL_ERROR_SYSCALL && (e == 0 || e == ECONNRESET || e == EPIPE);
}

void tls_error(SSL *ssl, int ret, const char *what, char *err, size_t errlen)
{
    int code = SSL_get_error(ssl, ret), alert;
    const struct sock_bio *s = sock_of(ssl);
    const char *desc;
    char ebuf[128];
    if ((alert = received_alert(&desc)))
        alert_error(alert, desc, what, err, errlen);
    else if (code == SSL_ERROR_ZERO_RETURN)
        seterr(err, errlen, "TLS: %s: the peer closed the connection", what);
    else if (transport_closed(ssl, code))
        seterr(err, errlen, "TLS: %s: the connection was closed or reset without close_notify", what);
    else if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE || code == SSL_ERROR_SYSCALL)
        seterr(err, errlen, "TLS: %s: %s", what, s && s->last_errno == EINTR ? "interrupted"
               : errno_text(s && s->last_errno ? s->last_errno : EIO, ebuf, sizeof(ebuf)));
    else if (ssl_reason() == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC)
        seterr(err, errlen, "TLS: %s: a record failed its integrity check "
               "(data corrupted or altered in transit)", what);
    else
        seterr(err, errlen, "TLS: %s: %s", what, ossl_reason());
    ERR_clear_error();
}

static void peer_cert_error(const SSL *ssl, const struct verify_diag *d, char *err, size_t errlen)
{
    const char *dir = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_dir_idx);
    const char *which = d->depth ? "a CA certificate in the peer's chain" : "the peer's certificate";
    const char *why = X509_verify_cert_error_string(d->code);
    if (not_our_ca(d->code) && dir)
        seterr(err, errlen, "TLS: the peer's certificate (CN=%s) is not signed by our CA (%s/ca.pem): %s",
               d->cn, dir, why);
    else if (not_our_ca(d->code))   /* a context not made by tls_ctx_new */
        seterr(err, errlen, "TLS: the peer's certificate (CN=%s) is not signed by our CA: %s", d->cn, why);
    else if (d->code == X509_V_ERR_CERT_HAS_EXPIRED)
        seterr(err, errlen, "TLS: %s (CN=%s) expired on %s", which, d->cn, d->date);
    else if (d->code == X509_V_ERR_CERT_NOT_YET_VALID)
        seterr(err, errlen, "TLS: %s (CN=%s) is not valid before %s (check the clocks)", which, d->cn, d->date);
    else
        seterr(err, errlen, "TLS: %s (CN=%s) was refused: %s", which, d->cn, why);
}

static void handshake_error(SSL *ssl, int ret, const struct verify_diag *d, char *err, size_t errlen)
{
    int reason = ssl_reason();
    if (d->set)
        peer_cert_error(ssl, d, err, errlen);
    else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        seterr(err, errlen, "TLS: the peer sent no certificate");
    else if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG
             || reason == SSL_R_HTTP_REQUEST)
        seterr(err, errlen, PLAINTEXT_PEER);
    else if (reason == SSL_R_UNSUPPORTED_PROTOCOL)
        seterr(err, errlen, "TLS: the peer does not offer TLS 1.3");
    else if (transport_closed(ssl, SSL_get_error(ssl, ret)))
        seterr(err, errlen, CLOSED_IN_HANDSHAKE);
    else
        tls_error(ssl, ret, "handshake", err, errlen);
    ERR_clear_error();
}

/* A server reading a plaintext stream as TLS would fail with an obscure
 * record error (or wait for more bytes): look first. */
static int peek_tls(int fd, char *err, size_t errlen)
{
    unsigned char h[4];
    char ebuf[128];
    ssize_t n;
    do
        n = recv(fd, h, sizeof(h), MSG_PEEK | MSG_WAITALL);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        seterr(err, errlen, "TLS: waiting for the peer's handshake: %s", errno_text(errno, ebuf, sizeof(ebuf)));
        return -1;
    }
    if (n == 0) {
        seterr(err, errlen, "TLS: the peer closed the connection before the handshake");
        return -1;
    }
    if (h[0] != 0x16 || (n >= 2 && h[1] != 0x03)) {   /* handshake record, version 3.x */
        seterr(err, errlen, PLAINTEXT_PEER);
        return -1;
    }
    return 0;
}

/* The socket BIO reads directly; writes go through a 256 KiB buffer BIO so
 * a burst of records leaves in one send (tls_flush empties it). */
static SSL *new_ssl(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    BIO *sock = sock_bio_new(fd), *buf = BIO_new(BIO_f_buffer());
    if (!ssl || !sock || !buf || BIO_set_write_buffer_size(buf, BUF_LEN) != 1 || !BIO_up_ref(sock)) {
        SSL_free(ssl);
        BIO_free(sock);
        BIO_free(buf);
        return NULL;
    }
    BIO_push(buf, sock);
    SSL_set_bio(ssl, sock, buf);   /* takes both references to sock */
    return ssl;
}

/* A TLS 1.3 client completes before the server has checked its certificate,
 * and would hear of a refusal only at its first read, or as a reset
 * mid-stream if it writes first. The server's one-byte confirmation brings
 * the verdict into the handshake on both sides. */
static int confirm(SSL *ssl, bool server, struct verify_diag *d, char *err, size_t errlen)
{
    unsigned char b = CONFIRM;
    size_t n;
    char ebuf[128];
    int ret = server ? SSL_write_ex(ssl, &b, 1, &n) : SSL_read_ex(ssl, &b, 1, &n);
    if (ret != 1) {
        handshake_error(ssl, ret, d, err, errlen);
        return -1;
    }
    if (server && tls_flush(ssl) < 0) {
        seterr(err, errlen, "TLS: handshake: %s", errno_text(errno, ebuf, sizeof(ebuf)));
        return -1;
    }
    if (!server && b != CONFIRM) {
        seterr(err, errlen, "TLS: the peer is not a Ferry TLS endpoint (unexpected data after the handshake)");
        return -1;
    }
    return 0;
}

SSL *tls_handshake(SSL_CTX *ctx, int fd, bool server, char *err, size_t errlen)
{
    pthread_once(&once, init_once);
    ERR_clear_error();
    if (server && peek_tls(fd, err, errlen) < 0)
        return NULL;
    SSL *ssl = new_ssl(ctx, fd);
    if (!ssl) {
        seterr(err, errlen, "TLS: cannot set up the connection: %s", ossl_reason());
        ERR_clear_error();
        return NULL;
    }
    struct verify_diag d = { 0 };
    SSL_set_ex_data(ssl, ssl_diag_idx, &d);
    int ret = server ? SSL_accept(ssl) : SSL_connect(ssl);
    int rc = ret == 1 ? confirm(ssl, server, &d, err, errlen) : -1;
    if (ret != 1)
        handshake_error(ssl, ret, &d, err, errlen);
    SSL_set_ex_data(ssl, ssl_diag_idx, NULL);
    if (rc < 0) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

int tls_flush(SSL *ssl)
{
    BIO *w = SSL_get_wbio(ssl);
    if (w && BIO_flush(w) == 1)
        return 0;
    const struct sock_bio *s = sock_of(ssl);
    errno = s && s->last_errno ? s->last_errno : EIO;
    return -1;
}

const char *tls_cipher(const SSL *ssl)
{
    return SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
}

void tls_free(SSL *ssl)
{
    if (!ssl)
        return;
    struct sock_bio *s = sock_of(ssl);
    if (s)
        s->dontwait = true;
    if (SSL_is_init_finished(ssl) && SSL_shutdown(ssl) >= 0)
        tls_flush(ssl);
    ERR_clear_error();
    SSL_free(ssl);
}

/* ---- the cluster CA ---- */

/* Host names only: the name goes into a SAN and a one-line config string. */
static int check_args(const char *cn, int days, char *err, size_t errlen)
{
    size_t n = strlen(cn);
    if (!n || n > 64 || cn[0] == '.' || cn[0] == '-'
        || strspn(cn, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != n) {
        seterr(err, errlen, "TLS: '%s' is not a host name (letters, digits, '.', '-', '_'; at most 64)", cn);
        return -1;
    }
    if (days < 1 || days > MAX_DAYS) {
        seterr(err, errlen, "TLS: a certificate must be valid for 1 to %d days, not %d", MAX_DAYS, days);
        return -1;
    }
    return 0;
}

static bool add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
    bool ok = ext && X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

static bool add_exts(X509 *x, X509 *issuer, const char *cn, bool ca)
{
    char san[80];
    snprintf(san, sizeof(san), "DNS:%s", cn);
    bool ok = ca ? add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0")
                   && add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign")
                 : add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE")
                   && add_ext(x, issuer, NID_key_usage, "critical,digitalSignature")
                   && add_ext(x, issuer, NID_ext_key_usage, "serverAuth,clientAuth")
                   && add_ext(x, issuer, NID_subject_alt_name, san);
    /* the subject key id first: a self-signed CA's authority key id is it */
    return ok && add_ext(x, issuer, NID_subject_key_identifier, "hash")
           && add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
}

static bool random_serial(X509 *x)
{
    unsigned char r[16];
    BIGNUM *bn = NULL;
    bool ok = RAND_bytes(r, sizeof(r)) == 1 && (bn = BN_bin2bn(r, sizeof(r), NULL))
              && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    return ok;
}

/* issuer NULL: self-signed (the CA). */
static X509 *new_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, int days)
{
    X509 *x = X509_new();
    bool ca = !issuer;
    bool ok = x && X509_set_version(x, X509_VERSION_3) && random_serial(x)
              && X509_gmtime_adj(X509_getm_notBefore(x), -BACKDATE_S)
              && X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL)
              && X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName, MBSTRING_UTF8,
                                            (const unsigned char *)cn, -1, -1, 0)
              && X509_set_issuer_name(x, X509_get_subject_name(ca ? x : issuer))
              && X509_set_pubkey(x, key)
              && add_exts(x, ca ? x : issuer, cn, ca)
              && X509_sign(x, issuer_key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

struct blob { const char *data; size_t len; };

static int emit_key(FILE *f, const void *k) { return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL); }
static int emit_cert(FILE *f, const void *x) { return PEM_write_X509(f, x); }
static int emit_blob(FILE *f, const void *b)
{
    const struct blob *bl = b;
    return fwrite(bl->data, 1, bl->len, f) == bl->len;
}

/* Through a temporary file, so no reader sees half a file or a key with
 * loose permissions. replace false: fail if path exists (link, not rename,
 * so a concurrent init cannot be overwritten either). */
static int write_atomic(const char *path, mode_t mode, bool replace, int (*emit)(FILE *, const void *),
                        const void *obj, char *err, size_t errlen)
{
    char tmp[PATH_MAX], ebuf[128];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp)) {
        seterr(err, errlen, "TLS: %s: path too long", path);
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        seterr(err, errlen, "TLS: cannot create %s: %s", tmp, errno_text(errno, ebuf, sizeof(ebuf)));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    bool ok = f && fchmod(fd, mode) == 0 && emit(f, obj) && fflush(f) == 0 && fsync(fd) == 0;
    int e = errno;
    if ((f ? fclose(f) : close(fd)) && ok) {
        ok = false;
        e = errno;
    }
    if (ok && (replace ? rename(tmp, path) : link(tmp, path))) {
        ok = false;
        e = errno;
    }
    if (!ok || !replace)
        unlink(tmp);
    if (ok)
        return 0;
    if (e == EEXIST)
        seterr(err, errlen, "TLS: %s already exists", path);
    else
        seterr(err, errlen, "TLS: cannot write %s: %s", path, errno_text(e ? e : EIO, ebuf, sizeof(ebuf)));
    return -1;
}

static int make_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    char ebuf[128];
    if (mkdir(dir, 0700) && errno != EEXIST) {
        seterr(err, errlen, "TLS: cannot create %s: %s", dir, errno_text(errno, ebuf, sizeof(ebuf)));
        return -1;
    }
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        seterr(err, errlen, "TLS: %s is not a directory", dir);
        return -1;
    }
    return 0;
}

/* A private key and its certificate: the CA's, or a host's. */
struct ident { EVP_PKEY *key; X509 *cert; };

/* One file of a credentials directory. */
struct out_file {
    const char *name;
    mode_t mode;
    int (*emit)(FILE *, const void *);
    const void *obj;
};

/* The files in order. replace false (a new CA): none may exist, and after a
 * failure the ones written are removed again, so that a retry is not
 * refused as "already holds a CA". */
static int write_files(const char *dir, const struct out_file *f, int n, bool replace, char *err, size_t errlen)
{
    char p[PATH_MAX];
    int done = 0;
    for (; done < n; done++) {
        if (!path_in(p, sizeof(p), dir, f[done].name)) {
            seterr(err, errlen, "TLS: %s: path too long", dir);
            break;
        }
        if (write_atomic(p, f[done].mode, replace, f[done].emit, f[done].obj, err, errlen) < 0)
            break;
    }
    if (done == n)
        return 0;
    while (!replace && done-- > 0)
        if (path_in(p, sizeof(p), dir, f[done].name))
            unlink(p);
    return -1;
}

static void ident_free(struct ident *id)
{
    EVP_PKEY_free(id->key);
    X509_free(id->cert);
}

/* A fresh P-256 key and its certificate; issuer NULL: a self-signed CA. */
static int make_ident(struct ident *id, const char *cn, const struct ident *issuer, int days,
                      char *err, size_t errlen)
{
    id->key = EVP_EC_gen("P-256");
    id->cert = id->key ? new_cert(cn, id->key, issuer ? issuer->cert : NULL,
                                  issuer ? issuer->key : id->key, days) : NULL;
    if (!id->cert) {
        seterr(err, errlen, "TLS: cannot make a certificate for %s: %s", cn, ossl_reason());
        ERR_clear_error();
        return -1;
    }
    return 0;
}

static bool exists_in(const char *dir, const char *name)
{
    char p[PATH_MAX];
    return path_in(p, sizeof(p), dir, name) && access(p, F_OK) == 0;
}

static int refuse_existing(const char *dir, char *err, size_t errlen)
{
    static const char *const others[] = { "ca.pem", "cert.pem", "key.pem" };
    if (exists_in(dir, "ca-key.pem")) {
        seterr(err, errlen, "TLS: %s already holds a CA (ca-key.pem); use `ferry tls issue`", dir);
        return -1;
    }
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        if (exists_in(dir, others[i])) {
            seterr(err, errlen, "TLS: %s already holds credentials (%s); use an empty directory", dir, others[i]);
            return -1;
        }
    return 0;
}

int tls_ca_init(const char *dir, const char *cn, int days, char *err, size_t errlen)
{
    char host[256], cacn[sizeof(host) + 16];
    if (!cn) {
        if (gethostname(host, sizeof(host)))
            snprintf(host, sizeof(host), "localhost");
        host[sizeof(host) - 1] = 0;
        cn = host;
    }
    if (check_args(cn, days, err, errlen) < 0 || make_dir(dir, err, errlen) < 0
        || refuse_existing(dir, err, errlen) < 0)
        return -1;
    snprintf(cacn, sizeof(cacn), "Ferry CA (%s)", cn);   /* never equal to a host's subject */
    struct ident ca = { 0 }, host_id = { 0 };
    int rc = make_ident(&ca, cacn, NULL, days > CA_DAYS ? days : CA_DAYS, err, errlen);
    if (!rc)
        rc = make_ident(&host_id, cn, &ca, days, err, errlen);
    if (!rc) {
        const struct out_file files[] = {
            { "ca-key.pem", 0600, emit_key, ca.key }, { "ca.pem", 0644, emit_cert, ca.cert },
            { "key.pem", 0600, emit_key, host_id.key }, { "cert.pem", 0644, emit_cert, host_id.cert },
        };
        rc = write_files(dir, files, 4, false, err, errlen);
    }
    ident_free(&ca);
    ident_free(&host_id);
    return rc;
}

/* The whole of CADIR/ca.pem (it may hold more than one CA) and its first
 * certificate, which ca-key.pem must belong to. */
static int load_ca(const char *cadir, struct ident *ca, struct blob *pem, char *err, size_t errlen)
{
    char cap[PATH_MAX], keyp[PATH_MAX], ebuf[128], date[64];
    if (!path_in(cap, sizeof(cap), cadir, "ca.pem") || !path_in(keyp, sizeof(keyp), cadir, "ca-key.pem")) {
        seterr(err, errlen, "TLS: %s: path too long", cadir);
        return -1;
    }
    FILE *kf = fopen(keyp, "r");
    if (!kf) {
        if (errno == ENOENT)
            seterr(err, errlen, "TLS: %s holds no CA key (ca-key.pem): issue on the host where "
                   "`ferry tls init` made the CA", cadir);
        else
            seterr(err, errlen, "TLS: cannot read %s: %s", keyp, errno_text(errno, ebuf, sizeof(ebuf)));
        return -1;
    }
    ca->key = PEM_read_PrivateKey(kf, NULL, NULL, NULL);
    fclose(kf);
    if (!ca->key) {
        seterr(err, errlen, "TLS: %s: no usable private key (%s)", keyp, ossl_reason());
        return -1;
    }
    FILE *cf = fopen(cap, "r");
    char *data = cf ? malloc(MAX_CA_FILE) : NULL;
    pem->len = data ? fread(data, 1, MAX_CA_FILE, cf) : 0;
    int e = errno;
    if (cf)
        fclose(cf);
    pem->data = data;
    BIO *mem = pem->len ? BIO_new_mem_buf(data, (int)pem->len) : NULL;
    ca->cert = mem ? PEM_read_bio_X509(mem, NULL, NULL, NULL) : NULL;
    BIO_free(mem);
    if (!ca->cert) {
        seterr(err, errlen, "TLS: %s: %s", cap, !cf ? errno_text(e, ebuf, sizeof(ebuf)) : "no usable certificate");
        return -1;
    }
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        seterr(err, errlen, "TLS: %s does not match %s", keyp, cap);
        return -1;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(ca->cert)) < 0) {
        asn1_date(X509_get0_notAfter(ca->cert), false, date, sizeof(date));
        seterr(err, errlen, "TLS: %s expired on %s", cap, date);
        return -1;
    }
    return 0;
}

int tls_issue(const char *cadir, const char *outdir, const char *cn, int days, char *err, size_t errlen)
{
    if (check_args(cn, days, err, errlen) < 0)
        return -1;
    struct ident ca = { 0 }, host_id = { 0 };
    struct blob pem = { 0 };
    int rc = load_ca(cadir, &ca, &pem, err, errlen);
    if (!rc)
        rc = make_dir(outdir, err, errlen);
    if (!rc)
        rc = make_ident(&host_id, cn, &ca, days, err, errlen);
    if (!rc) {
        const struct out_file files[] = {
            { "ca.pem", 0644, emit_blob, &pem }, { "key.pem", 0600, emit_key, host_id.key },
            { "cert.pem", 0644, emit_cert, host_id.cert },
        };
        rc = write_files(outdir, files, 3, true, err, errlen);
    }
    ERR_clear_error();
    free((char *)pem.data);
    ident_free(&ca);
    ident_free(&host_id);
    return rc;
}
