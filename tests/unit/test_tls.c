/* common/tls.c: mutual TLS 1.3 between two threads over a socketpair. A
 * good handshake and 16 MiB intact, parallel handshakes, and the refusals
 * with their one-line reasons on both sides: another CA, an expired
 * certificate, no certificate, a plaintext or silent peer, a record
 * altered in flight; tls_ctx_new's checks. */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/tls.h"

#define MiB (1024 * 1024)

static char root[64];

static void dir_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", root, name);
}

static void contains(const char *s, const char *want)
{
    if (!strstr(s, want))
        fail_msg("\"%s\" does not contain \"%s\"", s, want);
}

/* ---- one side of a connection, run in its own thread ---- */

struct side {
    SSL_CTX *ctx;
    int fd;
    bool server;
    void (*body)(struct side *, SSL *);   /* after a good handshake */
    size_t total;                          /* bytes the body moves */
    char err[512];                         /* tls_handshake's or the body's reason */
    char cipher[64];
    bool ok;                               /* the handshake succeeded */
    bool corrupt;                          /* the body received a wrong byte */
    size_t moved;
};

static void *side_run(void *arg)
{
    struct side *s = arg;
    SSL *ssl = tls_handshake(s->ctx, s->fd, s->server, s->err, sizeof(s->err));
    s->ok = ssl != NULL;
    if (ssl) {
        snprintf(s->cipher, sizeof(s->cipher), "%s", tls_cipher(ssl));
        if (s->body)
            s->body(s, ssl);
    }
    tls_free(ssl);
    shutdown(s->fd, SHUT_RDWR);   /* the peer sees EOF, whatever happened here */
    return NULL;
}

static void timeouts(int fd)
{
    struct timeval tv = { .tv_sec = 20 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void socket_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    timeouts(sv[0]);
    timeouts(sv[1]);
}

/* n connections at once, srv[i] <-> cli[i] */
static void run_pairs(struct side *srv, struct side *cli, int n)
{
    int sv[16][2];
    pthread_t t[16][2];
    for (int i = 0; i < n; i++) {
        socket_pair(sv[i]);
        srv[i].fd = sv[i][0], srv[i].server = true;
        cli[i].fd = sv[i][1], cli[i].server = false;
        assert_int_equal(pthread_create(&t[i][0], NULL, side_run, &srv[i]), 0);
        assert_int_equal(pthread_create(&t[i][1], NULL, side_run, &cli[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i][0], NULL);
        pthread_join(t[i][1], NULL);
        close(sv[i][0]);
        close(sv[i][1]);
    }
}

static SSL_CTX *ctx_for(const char *name, bool server)
{
    char dir[128], err[512];
    dir_of(dir, sizeof(dir), name);
    SSL_CTX *ctx = tls_ctx_new(dir, server, err, sizeof(err));
    if (!ctx)
        fail_msg("tls_ctx_new(%s): %s", dir, err);
    return ctx;
}

/* ---- the data: a pattern both sides can regenerate ---- */

static uint8_t pattern(size_t i)
{
    uint64_t x = (i / 8 + 1) * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    return (uint8_t)(x >> (8 * (i % 8)));
}

static void send_pattern(struct side *s, SSL *ssl)
{
    enum { CHUNK = MiB };
    uint8_t *buf = malloc(CHUNK);
    size_t n;
    assert_non_null(buf);
    for (size_t off = 0; off < s->total; off += CHUNK) {
        for (size_t i = 0; i < CHUNK; i++)
            buf[i] = pattern(off + i);
        int ret = SSL_write_ex(ssl, buf, CHUNK, &n);
        if (ret != 1) {
            tls_error(ssl, ret, "write", s->err, sizeof(s->err));
            break;
        }
        if (tls_flush(ssl) < 0) {
            snprintf(s->err, sizeof(s->err), "flush: %s", strerror(errno));
            break;
        }
        s->moved += n;
    }
    free(buf);
}

/* Up to total bytes, each checked against the pattern as it arrives. */
static void recv_pattern(struct side *s, SSL *ssl)
{
    static __thread uint8_t buf[65536];
    size_t n;
    while (s->moved < s->total) {
        size_t want = s->total - s->moved < sizeof(buf) ? s->total - s->moved : sizeof(buf);
        int ret = SSL_read_ex(ssl, buf, want, &n);
        if (ret != 1) {
            tls_error(ssl, ret, "read", s->err, sizeof(s->err));
            return;
        }
        for (size_t i = 0; i < n; i++)
            if (buf[i] != pattern(s->moved + i)) {
                s->corrupt = true;
                return;
            }
        s->moved += n;
    }
}

/* The client sends, the server receives, then answers "ok": data both ways. */
static void client_body(struct side *s, SSL *ssl)
{
    char ack[3] = "";
    size_t n;
    send_pattern(s, ssl);
    int ret = SSL_read_ex(ssl, ack, 2, &n);
    if (ret != 1)
        tls_error(ssl, ret, "read", s->err, sizeof(s->err));
    else if (strcmp(ack, "ok"))
        snprintf(s->err, sizeof(s->err), "bad ack '%s'", ack);
}

static void server_body(struct side *s, SSL *ssl)
{
    size_t n;
    recv_pattern(s, ssl);
    if (s->moved == s->total && !s->corrupt && SSL_write_ex(ssl, "ok", 2, &n) == 1)
        tls_flush(ssl);
}

static const char *expected_cipher(void)
{
    return __builtin_cpu_supports("aes") ? "TLS_AES_128_GCM_SHA256" : "TLS_CHACHA20_POLY1305_SHA256";
}

static void test_transfer(void **state)
{
    struct side srv = { .ctx = ctx_for("a", true), .body = server_body, .total = 16 * MiB };
    struct side cli = { .ctx = ctx_for("a2", false), .body = client_body, .total = 16 * MiB };
    run_pairs(&srv, &cli, 1);
    assert_true(srv.ok);
    assert_true(cli.ok);
    assert_string_equal(srv.err, "");
    assert_string_equal(cli.err, "");
    assert_false(srv.corrupt);
    assert_int_equal(srv.moved, 16 * MiB);
    assert_int_equal(cli.moved, 16 * MiB);
    assert_string_equal(cli.cipher, expected_cipher());
    assert_string_equal(srv.cipher, expected_cipher());
    SSL_CTX_free(srv.ctx);
    SSL_CTX_free(cli.ctx);
}

/* Several handshakes and transfers at once on shared contexts. */
static void test_parallel(void **state)
{
    enum { N = 8 };
    SSL_CTX *sctx = ctx_for("a", true), *cctx = ctx_for("a2", false);
    struct side srv[N], cli[N];
    for (int i = 0; i < N; i++) {
        srv[i] = (struct side){ .ctx = sctx, .body = server_body, .total = MiB };
        cli[i] = (struct side){ .ctx = cctx, .body = client_body, .total = MiB };
    }
    run_pairs(srv, cli, N);
    for (int i = 0; i < N; i++) {
        assert_string_equal(srv[i].err, "");
        assert_string_equal(cli[i].err, "");
        assert_int_equal(srv[i].moved, MiB);
    }
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

/* ---- refusals ---- */

static void expect_refusal(SSL_CTX *sctx, SSL_CTX *cctx, const char *srv_err, const char *cli_err)
{
    struct side srv = { .ctx = sctx }, cli = { .ctx = cctx };
    run_pairs(&srv, &cli, 1);
    assert_false(srv.ok);
    assert_false(cli.ok);
    contains(srv.err, srv_err);
    contains(cli.err, cli_err);
    assert_null(strchr(srv.err, '\n'));
    assert_null(strchr(cli.err, '\n'));
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

/* The client trusts only CA b: it refuses a's server. */
static void test_other_ca_server(void **state)
{
    char want[256];
    snprintf(want, sizeof(want), "TLS: the peer's certificate (CN=host-a) is not signed by our CA (%s/b/ca.pem): "
             "unable to get local issuer certificate", root);
    expect_refusal(ctx_for("a", true), ctx_for("b", false),
                   "TLS: the peer rejected our certificate (alert: unknown ca)", want);
}

/* The client trusts a and b, its certificate is b's: a's server refuses it. */
static void test_other_ca_client(void **state)
{
    char want[256];
    snprintf(want, sizeof(want), "TLS: the peer's certificate (CN=host-ab) is not signed by our CA (%s/a/ca.pem): "
             "unable to get local issuer certificate", root);
    expect_refusal(ctx_for("a", true), ctx_for("ab", false),
                   want, "TLS: the peer rejected our certificate (alert: unknown ca)");
}

/* ---- certificates made here, outside tls_issue ---- */

static EVP_PKEY *read_key(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    return k;
}

static X509 *read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

/* A host certificate from CA a that expired yesterday, and its key. */
static void make_expired(X509 **cert, EVP_PKEY **key)
{
    char p[128];
    dir_of(p, sizeof(p), "a/ca.pem");
    X509 *ca = read_cert(p);
    dir_of(p, sizeof(p), "a/ca-key.pem");
    EVP_PKEY *cakey = read_key(p);
    X509 *x = X509_new();
    *key = EVP_EC_gen("P-256");
    assert_non_null(*key);
    assert_true(X509_set_version(x, X509_VERSION_3));
    assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), 42));
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -10 * 86400));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), -86400));
    assert_true(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                           (const unsigned char *)"host-old", -1, -1, 0));
    assert_true(X509_set_issuer_name(x, X509_get_subject_name(ca)));
    assert_true(X509_set_pubkey(x, *key));
    assert_true(X509_sign(x, cakey, EVP_sha256()) > 0);
    X509_free(ca);
    EVP_PKEY_free(cakey);
    *cert = x;
}

/* What tls_ctx_new would make, minus its checks of our own certificate. */
static SSL_CTX *raw_ctx(bool server, X509 *cert, EVP_PKEY *key)
{
    char ca[128];
    dir_of(ca, sizeof(ca), "a/ca.pem");
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    assert_non_null(ctx);
    assert_true(SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION));
    assert_true(SSL_CTX_load_verify_file(ctx, ca));
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    if (cert) {
        assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
    }
    return ctx;
}

static void test_expired_client(void **state)
{
    X509 *x;
    EVP_PKEY *k;
    make_expired(&x, &k);
    expect_refusal(ctx_for("a", true), raw_ctx(false, x, k),
                   "TLS: the peer's certificate (CN=host-old) expired on ",
                   "TLS: the peer rejected our certificate (alert: certificate expired)");
    X509_free(x);
    EVP_PKEY_free(k);
}

static void test_expired_server(void **state)
{
    X509 *x;
    EVP_PKEY *k;
    make_expired(&x, &k);
    expect_refusal(raw_ctx(true, x, k), ctx_for("a2", false),
                   "TLS: the peer rejected our certificate (alert: certificate expired)",
                   "TLS: the peer's certificate (CN=host-old) expired on ");
    X509_free(x);
    EVP_PKEY_free(k);
}

/* tls_ctx_new refuses an expired certificate of its own, with the date. */
static void test_ctx_expired(void **state)
{
    X509 *x;
    EVP_PKEY *k;
    char dir[128], p[160], err[512], want[256], date[16];
    make_expired(&x, &k);
    dir_of(dir, sizeof(dir), "expired");
    snprintf(p, sizeof(p), "%s/cert.pem", dir);
    FILE *f = fopen(p, "w");
    assert_true(PEM_write_X509(f, x));
    fclose(f);
    snprintf(p, sizeof(p), "%s/key.pem", dir);
    f = fopen(p, "w");
    assert_true(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL));
    fclose(f);
    time_t yesterday = time(NULL) - 86400;
    strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&yesterday));
    assert_null(tls_ctx_new(dir, true, err, sizeof(err)));
    snprintf(want, sizeof(want), "TLS: %s/cert.pem expired on %s", dir, date);
    assert_string_equal(err, want);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void test_no_client_cert(void **state)
{
    expect_refusal(ctx_for("a", true), raw_ctx(false, NULL, NULL),
                   "TLS: the peer sent no certificate",
                   "TLS: the peer requires a certificate and we sent none (alert: certificate required)");
}

/* ---- plaintext peers ---- */

static void *plaintext_client(void *arg)
{
    int fd = *(int *)arg;
    char buf[256];
    static const char hello[] = "FERRY-MIGRATION 1\n";
    if (send(fd, hello, sizeof(hello) - 1, MSG_NOSIGNAL) < 0)
        return NULL;
    while (recv(fd, buf, sizeof(buf), 0) > 0)
        ;
    return NULL;
}

/* a plaintext destination: reads the first line, cannot parse it, hangs up */
static void *plaintext_server(void *arg)
{
    int fd = *(int *)arg;
    char buf[256];
    (void)!recv(fd, buf, sizeof(buf), 0);
    shutdown(fd, SHUT_RDWR);
    return NULL;
}

static void plaintext_peer(bool tls_server, const char *want)
{
    int sv[2];
    pthread_t t;
    struct side s = { .ctx = ctx_for(tls_server ? "a" : "a2", tls_server) };
    socket_pair(sv);
    s.fd = sv[0], s.server = tls_server;
    assert_int_equal(pthread_create(&t, NULL, tls_server ? plaintext_client : plaintext_server, &sv[1]), 0);
    side_run(&s);
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);
    assert_false(s.ok);
    assert_string_equal(s.err, want);
    SSL_CTX_free(s.ctx);
}

static void test_plaintext_client(void **state)
{
    plaintext_peer(true, "TLS: the peer does not speak TLS (a plaintext Ferry migration stream? "
                         "use --tls-dir on both ends, or --insecure on both)");
}

static void test_plaintext_server(void **state)
{
    plaintext_peer(false, "TLS: connection closed during the handshake "
                          "(is the peer plaintext, started with --insecure?)");
}

/* A peer that never speaks: SO_RCVTIMEO bounds the handshake on either side. */
static void silent_peer(bool server, const char *want)
{
    int sv[2];
    char err[512];
    struct timeval tv = { .tv_usec = 200000 };
    SSL_CTX *ctx = ctx_for(server ? "a" : "a2", server);
    socket_pair(sv);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_null(tls_handshake(ctx, sv[0], server, err, sizeof(err)));
    assert_string_equal(err, want);
    close(sv[0]);
    close(sv[1]);
    SSL_CTX_free(ctx);
}

static void test_timeout(void **state)
{
    silent_peer(true, "TLS: waiting for the peer's handshake: timed out");
    silent_peer(false, "TLS: handshake: timed out");
}

/* ---- a record altered in flight ---- */

struct relay {
    int from, to;
    bool flip;   /* alter one byte inside the first full-size application record */
};

static bool read_full(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            return false;
        p += r, n -= (size_t)r;
    }
    return true;
}

static bool write_full(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r <= 0)
            return false;
        p += r, n -= (size_t)r;
    }
    return true;
}

/* Forwards whole TLS records (5-byte header + payload). */
static void *relay_run(void *arg)
{
    struct relay *r = arg;
    static __thread uint8_t rec[5 + 18 * 1024 + 256];
    bool flipped = false;
    for (;;) {
        if (!read_full(r->from, rec, 5))
            break;
        size_t len = (size_t)rec[3] << 8 | rec[4];
        if (len > sizeof(rec) - 5 || !read_full(r->from, rec + 5, len))
            break;
        if (r->flip && !flipped && rec[0] == 0x17 && len > 16000) {
            rec[5 + len / 2] ^= 0x01;   /* ciphertext, mid-record */
            flipped = true;
        }
        if (!write_full(r->to, rec, 5 + len))
            break;
    }
    shutdown(r->from, SHUT_RDWR);
    shutdown(r->to, SHUT_RDWR);
    return NULL;
}

static void test_flipped_byte(void **state)
{
    int a[2], b[2];
    pthread_t t[4];
    socket_pair(a);   /* client a[0] <-> a[1] relay */
    socket_pair(b);   /* relay b[0] <-> b[1] server */
    struct side srv = { .ctx = ctx_for("a", true), .fd = b[1], .server = true, .body = recv_pattern,
                        .total = 4 * MiB };
    struct side cli = { .ctx = ctx_for("a2", false), .fd = a[0], .body = send_pattern, .total = 4 * MiB };
    struct relay up = { .from = a[1], .to = b[0], .flip = true }, down = { .from = b[0], .to = a[1] };
    assert_int_equal(pthread_create(&t[0], NULL, relay_run, &up), 0);
    assert_int_equal(pthread_create(&t[1], NULL, relay_run, &down), 0);
    assert_int_equal(pthread_create(&t[2], NULL, side_run, &srv), 0);
    assert_int_equal(pthread_create(&t[3], NULL, side_run, &cli), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(b[i]);
    }
    assert_true(srv.ok);
    assert_false(srv.corrupt);   /* never a wrong byte delivered */
    assert_true(srv.moved < 4 * MiB);
    assert_true(cli.err[0]);      /* the writer, cut off, got an error (and no SIGPIPE) */
    assert_string_equal(srv.err, "TLS: read: a record failed its integrity check "
                                 "(data corrupted or altered in transit)");
    SSL_CTX_free(srv.ctx);
    SSL_CTX_free(cli.ctx);
}

/* ---- tls_ctx_new's own checks ---- */

static void test_ctx_missing_file(void **state)
{
    char dir[128], err[512], want[256];
    dir_of(dir, sizeof(dir), "nokey");
    assert_null(tls_ctx_new(dir, false, err, sizeof(err)));
    snprintf(want, sizeof(want), "TLS: cannot read %s/key.pem: No such file or directory", dir);
    assert_string_equal(err, want);
    dir_of(dir, sizeof(dir), "nonexistent");
    assert_null(tls_ctx_new(dir, true, err, sizeof(err)));
    snprintf(want, sizeof(want), "TLS: cannot read %s/ca.pem: No such file or directory", dir);
    assert_string_equal(err, want);
}

static void test_ctx_key_mismatch(void **state)
{
    char dir[128], err[512], want[400];
    dir_of(dir, sizeof(dir), "mismatch");
    assert_null(tls_ctx_new(dir, true, err, sizeof(err)));
    snprintf(want, sizeof(want), "TLS: %s/key.pem does not match %s/cert.pem", dir, dir);
    contains(err, want);
}

/* ---- fixtures: credential directories made with tls_ca_init/tls_issue ---- */

static void copy_file(const char *from, const char *to, const char *mode)
{
    char buf[8192];
    FILE *in = fopen(from, "r"), *out = fopen(to, mode);
    assert_non_null(in);
    assert_non_null(out);
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)))
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

static void cp(const char *from, const char *to, const char *mode)
{
    char f[128], t[128];
    dir_of(f, sizeof(f), from);
    dir_of(t, sizeof(t), to);
    copy_file(f, t, mode);
}

static int setup(void **state)
{
    char a[128], b[128], out[128], err[512];
    snprintf(root, sizeof(root), "%s/ferry-tls.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(root))
        return -1;
    dir_of(a, sizeof(a), "a");
    dir_of(b, sizeof(b), "b");
    if (tls_ca_init(a, "host-a", 30, err, sizeof(err)) || tls_ca_init(b, "host-b", 30, err, sizeof(err)))
        fail_msg("tls_ca_init: %s", err);
    dir_of(out, sizeof(out), "a2");
    if (tls_issue(a, out, "host-a2", 30, err, sizeof(err)))
        fail_msg("tls_issue: %s", err);
    dir_of(out, sizeof(out), "ab");   /* b's host that also trusts a */
    if (tls_issue(b, out, "host-ab", 30, err, sizeof(err)))
        fail_msg("tls_issue: %s", err);
    cp("a/ca.pem", "ab/ca.pem", "a");
    for (const char *d = "nokey\0mismatch\0expired\0"; *d; d += strlen(d) + 1) {
        dir_of(out, sizeof(out), d);
        if (mkdir(out, 0700))
            return -1;
    }
    cp("a/ca.pem", "nokey/ca.pem", "w");
    cp("a/cert.pem", "nokey/cert.pem", "w");
    cp("a/ca.pem", "mismatch/ca.pem", "w");
    cp("a/cert.pem", "mismatch/cert.pem", "w");
    cp("a2/key.pem", "mismatch/key.pem", "w");
    cp("a/ca.pem", "expired/ca.pem", "w");
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    return nftw(root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transfer),
        cmocka_unit_test(test_parallel),
        cmocka_unit_test(test_other_ca_server),
        cmocka_unit_test(test_other_ca_client),
        cmocka_unit_test(test_expired_client),
        cmocka_unit_test(test_expired_server),
        cmocka_unit_test(test_ctx_expired),
        cmocka_unit_test(test_no_client_cert),
        cmocka_unit_test(test_plaintext_client),
        cmocka_unit_test(test_plaintext_server),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_flipped_byte),
        cmocka_unit_test(test_ctx_missing_file),
        cmocka_unit_test(test_ctx_key_mismatch),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
