/* Migration wire protocol 3.0: framing round trips and every way a message
 * can be damaged, the HELLO / ACK / JOIN / DIGEST codecs, and MEM_PAGES end
 * to end (plaintext, lz4, zstd, TLS) into a fake guest RAM, including every
 * malformed frame the receiver must refuse before it writes a page. */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <lz4.h>
#include <xxhash.h>
#include <zstd.h>

#include "common/tls.h"
#include "migration/chan.h"
#include "migration/digest.h"
#include "migration/pages.h"
#include "migration/stream.h"
#include "vmm/memory.h"

#define PG       MIG_PAGE_SIZE
#define RAM      (4ull << 20)          /* 1024 pages: a guest with one region */
#define FILL     0xee                  /* what destination RAM held before */
#define BIG_RAM  (GMEM_PCI_HOLE_START + (3ull << 20))   /* two regions, short last chunk */

/* ==== framing ============================================================ */

/* The bytes msg_write produces for one message. */
static size_t capture(uint16_t type, const void *payload, uint32_t len, uint8_t *out, size_t cap)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct chan c = CHAN_PLAIN(p[1]);
    assert_int_equal(msg_write(&c, type, payload, len), 0);
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(p[0], out + n, cap - n)) > 0)
        n += (size_t)r;
    close(p[0]);
    return n;
}

/* A read end that yields exactly these bytes (< a pipe's capacity), then EOF. */
static int feed(const uint8_t *bytes, size_t n)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], bytes, n), (ssize_t)n);
    close(p[1]);
    return p[0];
}

/* msg_read on these bytes must fail with error kind e and a message containing msg. */
static void expect_read_error(const uint8_t *bytes, size_t n, enum msg_error e, const char *msg)
{
    struct chan c = CHAN_PLAIN(feed(bytes, n));
    struct msg m;
    char err[256] = "";
    assert_int_equal(msg_read(&c, &m, err, sizeof(err)), -1);
    if (!strstr(err, msg))
        fail_msg("error \"%s\" does not contain \"%s\"", err, msg);
    assert_int_equal(m.error, e);
    assert_null(m.payload);
    close(c.fd);
}

static void test_round_trip_socketpair(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct chan tx = CHAN_PLAIN(sv[0]), rx = CHAN_PLAIN(sv[1]);
    const char *reason = "disk full";
    assert_int_equal(msg_write(&tx, MSG_ABORT, reason, (uint32_t)strlen(reason)), 0);
    assert_int_equal(msg_write(&tx, MSG_COMPLETE, NULL, 0), 0);
    assert_int_equal(msg_write(&tx, MSG_FLUSH, NULL, 0), 0);
    assert_int_equal(chan_flush(&tx), 0);            /* a no-op in plaintext */
    close(sv[0]);

    struct msg m;
    char err[256], text[64];
    assert_int_equal(msg_read(&rx, &m, err, sizeof(err)), 0);
    assert_int_equal(m.type, MSG_ABORT);
    assert_int_equal(m.len, 9);
    msg_text(&m, 0, text, sizeof(text));
    assert_string_equal(text, "disk full");
    msg_free(&m);

    assert_int_equal(msg_read(&rx, &m, err, sizeof(err)), 0);
    assert_int_equal(m.type, MSG_COMPLETE);
    assert_int_equal(m.len, 0);
    assert_non_null(m.payload);
    msg_free(&m);

    assert_int_equal(msg_read(&rx, &m, err, sizeof(err)), 0);
    assert_int_equal(m.type, MSG_FLUSH);
    assert_string_equal(msg_type_name(m.type), "FLUSH");
    assert_int_equal(m.len, 0);
    msg_free(&m);

    assert_int_equal(msg_read(&rx, &m, err, sizeof(err)), -1);
    assert_int_equal(m.error, MSG_E_EOF);
    assert_string_equal(err, "migration connection closed by peer");
    close(sv[1]);
}

struct writer {
    int fd;
    const uint8_t *p;
    uint32_t len;
    int ret;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct chan c = CHAN_PLAIN(w->fd);
    w->ret = msg_write(&c, MSG_STATE, w->p, w->len);
    return NULL;
}

static void test_large_message(void **state)
{
    /* bigger than the socket buffer: exercises short writes and reads */
    uint32_t len = 3u << 20;
    uint8_t *p = malloc(len);
    assert_non_null(p);
    for (uint32_t i = 0; i < len; i++)
        p[i] = (uint8_t)(i * 2654435761u >> 24);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct writer w = { .fd = sv[0], .p = p, .len = len };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
    struct chan c = CHAN_PLAIN(sv[1]);
    struct msg m;
    char err[256];
    assert_int_equal(msg_read(&c, &m, err, sizeof(err)), 0);
    pthread_join(t, NULL);
    assert_int_equal(w.ret, 0);
    assert_int_equal(m.type, MSG_STATE);
    assert_int_equal(m.len, len);
    assert_memory_equal(m.payload, p, len);
    msg_free(&m);
    close(sv[0]);
    close(sv[1]);
    free(p);
}

/* A closed peer is an error (-1, c->err), never a SIGPIPE that kills the VMM. */
static void test_write_to_closed_socket(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[1]);
    struct chan c = CHAN_PLAIN(sv[0]);
    assert_int_equal(msg_write(&c, MSG_COMPLETE, NULL, 0), -1);
    assert_string_equal(c.err, strerror(EPIPE));

    /* the same for a gathered MEM_PAGES message */
    static uint8_t data[PG];
    data[0] = 1;
    struct pages_tx tx = { 0 };
    char err[256];
    pages_tx_add(&tx, 0x1000, data);
    c.err[0] = '\0';
    assert_int_equal(pages_tx_send(&tx, &c, err, sizeof(err)), -1);
    assert_string_equal(err, "connection to destination lost while sending MEM_PAGES: Broken pipe");
    pages_tx_free(&tx);
    close(sv[0]);
}

static void test_header_layout(void **state)
{
    uint8_t b[64];
    size_t n = capture(MSG_ACK, "\x01\0\0\0ok", 6, b, sizeof(b));
    assert_int_equal(n, MSG_HEADER_SIZE + 6);
    assert_memory_equal(b, "FRRY", 4);
    assert_int_equal(le32_load(b), MSG_MAGIC);
    assert_int_equal(le16_load(b + 4), MSG_ACK);
    assert_int_equal(le16_load(b + 6), 0);
    assert_int_equal(le32_load(b + 8), 6);
    /* plaintext: low 32 bits of XXH3-64 of the payload */
    assert_int_equal(le32_load(b + 12), (uint32_t)XXH3_64bits("\x01\0\0\0ok", 6));
}

static void test_flipped_payload_byte(void **state)
{
    uint8_t b[64];
    size_t n = capture(MSG_ABORT, "source gave up", 14, b, sizeof(b));
    b[MSG_HEADER_SIZE + 3] ^= 0x20;
    expect_read_error(b, n, MSG_E_CHECKSUM, "ABORT message checksum mismatch");
}

static void test_flipped_header_bytes(void **state)
{
    uint8_t b[64], c[64];
    size_t n = capture(MSG_ABORT, "x", 1, b, sizeof(b));

    memcpy(c, b, n);
    c[1] ^= 0x01;
    expect_read_error(c, n, MSG_E_MAGIC, "bad magic 0x59525346");
    memcpy(c, b, n);
    c[4] ^= 0x40;
    expect_read_error(c, n, MSG_E_TYPE, "unknown message type 70");
    memcpy(c, b, n);
    c[5] ^= 0x01;
    expect_read_error(c, n, MSG_E_TYPE, "unknown message type 262");
    memcpy(c, b, n);
    c[4] = MSG_TYPE_MAX + 1;            /* just past the last type */
    char past[40];
    snprintf(past, sizeof(past), "unknown message type %d", MSG_TYPE_MAX + 1);
    expect_read_error(c, n, MSG_E_TYPE, past);
    memcpy(c, b, n);
    c[4] = 0;
    expect_read_error(c, n, MSG_E_TYPE, "unknown message type 0");
    memcpy(c, b, n);
    c[7] ^= 0x80;
    expect_read_error(c, n, MSG_E_FLAGS, "ABORT message has unknown flags 0x8000");
    memcpy(c, b, n);
    c[13] ^= 0x01;
    expect_read_error(c, n, MSG_E_CHECKSUM, "checksum mismatch");
    memcpy(c, b, n);
    c[8] ^= 0x02;           /* length 1 -> 3: the payload runs out */
    expect_read_error(c, n, MSG_E_TRUNCATED, "ABORT message ended early (2 bytes short)");
}

static void test_truncated(void **state)
{
    uint8_t b[64];
    size_t n = capture(MSG_ABORT, "truncate me", 11, b, sizeof(b));
    expect_read_error(b, n - 4, MSG_E_TRUNCATED,
                      "migration stream truncated: ABORT message ended early (4 bytes short)");
    expect_read_error(b, 5, MSG_E_TRUNCATED, "closed after 5 of 16 header bytes");
    expect_read_error(b, 0, MSG_E_EOF, "closed by peer");
}

static void test_oversized(void **state)
{
    uint8_t b[64];
    capture(MSG_STATE, "s", 1, b, sizeof(b));
    /* Only the header is there: had msg_read allocated and read the claimed
     * length it would report truncation, not the size. */
    b[8] = 0xf0, b[9] = 0xff, b[10] = 0xff, b[11] = 0xff;
    expect_read_error(b, MSG_HEADER_SIZE, MSG_E_OVERSIZED,
                      "STATE message of 4294967280 bytes exceeds the 16777216-byte limit");
    uint32_t len = MSG_MAX_PAYLOAD + 1;
    memcpy(b + 8, &len, 4);
    expect_read_error(b, MSG_HEADER_SIZE, MSG_E_OVERSIZED, "exceeds");

    /* the sender refuses them too, before writing anything */
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct chan c = CHAN_PLAIN(p[1]);
    assert_int_equal(msg_write(&c, MSG_STATE, b, MSG_MAX_PAYLOAD + 1), -1);
    assert_string_equal(c.err, "STATE message of 16777217 bytes exceeds the 16777216-byte limit");
    assert_int_equal(msg_write(&c, 99, NULL, 0), -1);
    assert_non_null(strstr(c.err, "bad message type 99"));
    assert_int_equal(msg_write(&c, 0, NULL, 0), -1);
    close(p[1]);
    assert_int_equal(read(p[0], b, sizeof(b)), 0);
    close(p[0]);
}

/* Write what b holds as one message and read it back. */
static void loop_back(uint16_t type, const struct buf *b, struct msg *m)
{
    int p[2];
    char err[256];
    assert_int_equal(pipe(p), 0);
    struct chan w = CHAN_PLAIN(p[1]), r = CHAN_PLAIN(p[0]);
    assert_int_equal(msg_write(&w, type, b->data, (uint32_t)b->len), 0);
    assert_int_equal(msg_read(&r, m, err, sizeof(err)), 0);
    close(p[0]);
    close(p[1]);
}

static void test_hello(void **state)
{
    const char *cfg = "{\"vcpus\":2,\"memory\":[{\"gpa\":0,\"size\":268435456}],\"cpuid\":[]}";
    struct buf b = { 0 };
    assert_int_equal(hello_encode(&b, cfg), 0);
    struct msg m;
    loop_back(MSG_HELLO, &b, &m);
    assert_int_equal(le32_load(m.payload), 3u << 16);         /* 3.0 */
    uint32_t v;
    char *json, err[256];
    assert_int_equal(hello_decode(&m, &v, &json, err, sizeof(err)), 0);
    assert_int_equal(v, MIG_PROTO_VERSION);
    assert_string_equal(json, cfg);
    free(json);

    /* a newer minor is fine, another major is not (1.x speaks MEM_PAGES v1) */
    buf_patch_u32(&b, 0, MIG_PROTO_MAJOR << 16 | 5);
    memcpy(m.payload, b.data, 4);
    assert_int_equal(hello_decode(&m, &v, &json, err, sizeof(err)), 0);
    assert_int_equal(v, MIG_PROTO_MAJOR << 16 | 5);
    free(json);
    buf_patch_u32(&b, 0, 1u << 16 | 1);
    memcpy(m.payload, b.data, 4);
    assert_int_equal(hello_decode(&m, &v, &json, err, sizeof(err)), -1);
    assert_string_equal(err, "incompatible migration protocol version 1.1 (this side speaks 3.0)");
    assert_null(json);
    /* an old peer (no disk messages) is refused, and a newer one */
    buf_patch_u32(&b, 0, 2u << 16);
    memcpy(m.payload, b.data, 4);
    assert_int_equal(hello_decode(&m, &v, &json, err, sizeof(err)), -1);
    assert_string_equal(err, "incompatible migration protocol version 2.0 (this side speaks 3.0)");
    buf_patch_u32(&b, 0, 4u << 16);
    memcpy(m.payload, b.data, 4);
    assert_int_equal(hello_decode(&m, &v, &json, err, sizeof(err)), -1);
    assert_string_equal(err, "incompatible migration protocol version 4.0 (this side speaks 3.0)");
    m.len = 3;
    assert_int_equal(hello_decode(&m, &v, &json, err, sizeof(err)), -1);
    assert_string_equal(err, "HELLO: payload of 3 bytes has no protocol version");
    msg_free(&m);
    buf_free(&b);
}

static void test_ack_and_digest(void **state)
{
    struct buf b = { 0 };
    struct msg m;
    char err[256], reason[64];
    uint32_t status;
    assert_int_equal(ack_encode(&b, ACK_REJECTED, "CPUID mismatch\n"), 0);
    loop_back(MSG_ACK, &b, &m);
    assert_int_equal(ack_decode(&m, &status, reason, sizeof(reason), err, sizeof(err)), 0);
    assert_int_equal(status, ACK_REJECTED);
    assert_string_equal(reason, "CPUID mismatch?");
    m.payload[0] = 9;
    assert_int_equal(ack_decode(&m, &status, reason, sizeof(reason), err, sizeof(err)), -1);
    assert_string_equal(err, "ACK: unknown status 9");
    msg_free(&m);

    /* the statuses of the check after the hand-over */
    b.len = 0;
    assert_int_equal(ack_encode(&b, ACK_VERIFIED, NULL), 0);
    loop_back(MSG_ACK, &b, &m);
    assert_int_equal(m.len, 4);
    assert_int_equal(ack_decode(&m, &status, reason, sizeof(reason), err, sizeof(err)), 0);
    assert_int_equal(status, 4);
    assert_string_equal(reason, "");
    msg_free(&m);
    b.len = 0;
    assert_int_equal(ack_encode(&b, ACK_MISMATCH, "chunk at GPA 0x200000"), 0);
    loop_back(MSG_ACK, &b, &m);
    assert_int_equal(ack_decode(&m, &status, reason, sizeof(reason), err, sizeof(err)), 0);
    assert_int_equal(status, 5);
    assert_string_equal(reason, "chunk at GPA 0x200000");
    m.payload[0] = 6;
    assert_int_equal(ack_decode(&m, &status, reason, sizeof(reason), err, sizeof(err)), -1);
    assert_string_equal(err, "ACK: unknown status 6");
    m.payload[0] = 0;
    assert_int_equal(ack_decode(&m, &status, reason, sizeof(reason), err, sizeof(err)), -1);
    assert_string_equal(err, "ACK: unknown status 0");
    m.type = MSG_COMMIT;
    assert_int_equal(ack_decode(&m, &status, reason, sizeof(reason), err, sizeof(err)), -1);
    assert_string_equal(err, "expected a ACK message, got COMMIT");
    msg_free(&m);

    uint64_t d[3] = { 1, 0xffffffffffffffffull, 42 }, chunk, *got;
    size_t n;
    b.len = 0;
    assert_int_equal(digest_encode(&b, 2u << 20, d, 3), 0);
    loop_back(MSG_DIGEST, &b, &m);
    assert_int_equal(digest_decode(&m, &chunk, &got, &n, err, sizeof(err)), 0);
    assert_int_equal(chunk, 2u << 20);
    assert_int_equal(n, 3);
    assert_memory_equal(got, d, sizeof(d));
    free(got);
    m.len -= 3;
    assert_int_equal(digest_decode(&m, &chunk, &got, &n, err, sizeof(err)), -1);
    assert_string_equal(err, "DIGEST: payload of 29 bytes is not a chunk size and u64 digests");
    assert_null(got);
    m.len += 3;
    m.payload[0] = 1;                   /* chunk size 2 MiB + 1 */
    assert_int_equal(digest_decode(&m, &chunk, &got, &n, err, sizeof(err)), -1);
    assert_string_equal(err, "DIGEST: chunk size 2097153 is not a non-zero multiple of 4096");
    msg_free(&m);
    buf_free(&b);
}

static void test_join(void **state)
{
    uint8_t sid[SESSION_ID_LEN], got[SESSION_ID_LEN];
    for (int i = 0; i < SESSION_ID_LEN; i++)
        sid[i] = (uint8_t)(0xa0 + i);
    struct buf b = { 0 };
    assert_int_equal(join_encode(&b, sid, 3), 0);
    assert_int_equal(b.len, SESSION_ID_LEN + 4);
    struct msg m;
    loop_back(MSG_JOIN, &b, &m);
    assert_int_equal(m.type, MSG_JOIN);
    assert_memory_equal(m.payload, sid, SESSION_ID_LEN);
    assert_int_equal(le32_load(m.payload + SESSION_ID_LEN), 3);
    uint32_t idx = 0;
    char err[256];
    assert_int_equal(join_decode(&m, got, &idx, err, sizeof(err)), 0);
    assert_memory_equal(got, sid, SESSION_ID_LEN);
    assert_int_equal(idx, 3);

    m.len = SESSION_ID_LEN + 3;
    assert_int_equal(join_decode(&m, got, &idx, err, sizeof(err)), -1);
    assert_string_equal(err, "JOIN: payload of 19 bytes, expected 20");
    m.len = 0;
    assert_int_equal(join_decode(&m, got, &idx, err, sizeof(err)), -1);
    assert_string_equal(err, "JOIN: payload of 0 bytes, expected 20");
    msg_free(&m);

    /* one byte too many */
    assert_int_equal(buf_put_u8(&b, 0), 0);
    loop_back(MSG_JOIN, &b, &m);
    assert_int_equal(join_decode(&m, got, &idx, err, sizeof(err)), -1);
    assert_string_equal(err, "JOIN: payload of 21 bytes, expected 20");
    m.type = MSG_HELLO;
    assert_int_equal(join_decode(&m, got, &idx, err, sizeof(err)), -1);
    assert_string_equal(err, "expected a JOIN message, got HELLO");
    msg_free(&m);
    buf_free(&b);
}

/* ==== MEM_PAGES ========================================================== */

static uint8_t *ram_map(uint64_t size)
{
    /* untouched pages cost nothing, so a guest above the PCI hole fits */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

/* One side's guest RAM and, on the destination, its receiver. */
struct side {
    struct guest_mem m;
    uint8_t *buf;
    struct pages_rx rx;
};

static void side_init(struct side *s, uint64_t size, int fill)
{
    memset(s, 0, sizeof(*s));
    s->buf = ram_map(size);
    if (fill)
        memset(s->buf, fill, size);
    gmem_init_fake(&s->m, size, s->buf);
    s->rx.mem = &s->m;
    s->rx.hash = digest_hashes_new(&s->m);
    assert_non_null(s->rx.hash);
}

static void side_free(struct side *s)
{
    pages_rx_free(&s->rx);
    free(s->rx.hash);
    munmap(s->buf, s->m.ram_size);
}

static uint8_t *pg_at(const struct side *s, uint64_t gpa)
{
    uint8_t *p = gmem_ptr(&s->m, gpa, PG);
    assert_non_null(p);
    return p;
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Incompressible bytes. */
static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull | 1;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = xorshift(&x);
        memcpy(p + i, &v, 8);
    }
}

/* Text-like bytes, different for each seed: compress well. */
static void fill_text(uint8_t *p, uint32_t seed)
{
    size_t n = 0;
    for (unsigned line = 0; n < PG; line++) {
        char l[64];
        int k = snprintf(l, sizeof(l), "page %u line %u: the quick brown fox\n", seed, line);
        size_t take = PG - n < (size_t)k ? PG - n : (size_t)k;
        memcpy(p + n, l, take);
        n += take;
    }
}

static bool queue(struct pages_tx *tx, const struct side *src, uint64_t gpa)
{
    return pages_tx_add(tx, gpa, pg_at(src, gpa));
}

/* ---- moving bytes through a socket, a thread on the other end ---- */

struct drain {
    int fd;
    uint8_t *p;
    size_t n, cap;
};

static void *drain_main(void *arg)
{
    struct drain *d = arg;
    for (;;) {
        if (d->n == d->cap) {
            d->cap = d->cap ? 2 * d->cap : 1 << 16;
            uint8_t *np = realloc(d->p, d->cap);
            if (!np)
                break;
            d->p = np;
        }
        ssize_t r = read(d->fd, d->p + d->n, d->cap - d->n);
        if (r <= 0)
            break;
        d->n += (size_t)r;
    }
    return NULL;
}

/* Send what tx holds over a plaintext socket: the bytes on the wire (free them). */
static uint8_t *tx_wire(struct pages_tx *tx, size_t *n)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct drain d = { .fd = sv[1] };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, drain_main, &d), 0);
    struct chan c = CHAN_PLAIN(sv[0]);
    char err[256];
    int rc = pages_tx_send(tx, &c, err, sizeof(err));
    close(sv[0]);
    pthread_join(t, NULL);
    close(sv[1]);
    assert_int_equal(rc, 0);
    *n = d.n;
    return d.p;
}

struct feeder {
    int fd;
    const uint8_t *p;
    size_t n;
};

static void *feeder_main(void *arg)
{
    struct feeder *f = arg;
    for (size_t done = 0; done < f->n;) {
        ssize_t r = send(f->fd, f->p + done, f->n - done, MSG_NOSIGNAL);
        if (r <= 0)
            break;                      /* the receiver gave up */
        done += (size_t)r;
    }
    close(f->fd);                       /* the peer closes: EOF after the bytes */
    return NULL;
}

/* Feed these bytes to rx as a stream of MEM_PAGES messages: 0 once it ends
 * cleanly, or -1 with the receiver's error. */
static int rx_wire(struct pages_rx *rx, const uint8_t *p, size_t n, char *err, size_t errlen)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct feeder f = { sv[0], p, n };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, feeder_main, &f), 0);
    struct chan c = CHAN_PLAIN(sv[1]);
    int rc;
    for (;;) {
        struct msg m;
        if (msg_read_header(&c, &m, err, errlen) < 0) {
            rc = m.error == MSG_E_EOF ? 0 : -1;
            break;
        }
        if (m.type != MSG_MEM_PAGES) {
            snprintf(err, errlen, "unexpected %s message", msg_type_name(m.type));
            rc = -1;
            break;
        }
        rc = pages_rx_recv(rx, &c, &m, err, errlen);
        msg_free(&m);
        if (rc < 0)
            break;
    }
    close(sv[1]);                       /* unblocks the feeder if we stopped early */
    pthread_join(t, NULL);
    return rc;
}

/* ---- checks on the destination ---- */

/* dst holds src's page at gpa, and recorded the hash of those bytes. */
static void assert_landed(const struct side *dst, const struct side *src, uint64_t gpa)
{
    const uint8_t *d = pg_at(dst, gpa), *s = pg_at(src, gpa);
    if (memcmp(d, s, PG))
        fail_msg("page at GPA 0x%llx differs", (unsigned long long)gpa);
    size_t i = digest_page_index(&dst->m, gpa);
    assert_true(i != (size_t)-1);
    assert_int_equal(dst->rx.hash[i], XXH3_64bits(s, PG));
    if (page_is_zero(s))
        assert_int_equal(dst->rx.hash[i], digest_zero_page());
}

/* The page at gpa is as before the migration: FILL bytes, no hash recorded. */
static void assert_untouched(const struct side *dst, uint64_t gpa)
{
    const uint8_t *d = pg_at(dst, gpa);
    for (size_t i = 0; i < PG; i++)
        if (d[i] != FILL)
            fail_msg("page at GPA 0x%llx was written (byte %zu is 0x%02x)",
                     (unsigned long long)gpa, i, d[i]);
    assert_int_equal(dst->rx.hash[digest_page_index(&dst->m, gpa)], digest_zero_page());
}

static void assert_all_untouched(const struct side *dst)
{
    for (uint64_t gpa = 0; gpa < dst->m.ram_size; gpa += PG)
        assert_untouched(dst, gpa);
    assert_int_equal(dst->rx.st.pages, 0);
    assert_int_equal(dst->rx.st.wire_bytes, 0);
}

static void assert_stats_equal(const struct page_stats *a, const struct page_stats *b)
{
    assert_int_equal(a->pages, b->pages);
    assert_int_equal(a->zero_pages, b->zero_pages);
    assert_int_equal(a->data_bytes, b->data_bytes);
    assert_int_equal(a->wire_bytes, b->wire_bytes);
}

static void test_zero_page_hash(void **state)
{
    static const uint8_t zeros[PG];
    assert_int_equal(digest_zero_page(), XXH3_64bits(zeros, PG));
    uint8_t p[PG] = { 0 };
    assert_true(page_is_zero(p));
    p[PG - 1] = 1;                      /* non-zero only in its very last byte */
    assert_false(page_is_zero(p));
    p[PG - 1] = 0;
    p[0] = 0x80;
    assert_false(page_is_zero(p));
}

static void test_pages_round_trip(void **state)
{
    struct side src, dst;
    side_init(&src, RAM, 0);
    side_init(&dst, RAM, FILL);          /* zero pages must clear what was there */
    for (uint64_t pgn = 1; pgn <= 4; pgn++)
        fill_random(pg_at(&src, pgn * PG), PG, pgn);
    fill_random(pg_at(&src, 0xa000), PG, 10);
    pg_at(&src, 0x3ff000)[PG - 1] = 1;   /* the last page, non-zero in its last byte */

    /* data 1..4 are contiguous in RAM (a zero page between them in the
     * entries does not break the run); 0xa000 and the last page are not */
    static const uint64_t order[] = { 0x0, 0x1000, 0x2000, 0x1f4000, 0x3000, 0x4000,
                                      0xb000, 0xa000, 0x3ff000 };
    struct pages_tx tx = { 0 };
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        assert_false(queue(&tx, &src, order[i]));
    assert_int_equal(tx.n, 9);
    assert_int_equal(tx.ndata, 6);
    assert_int_equal(tx.niov, 2 + 3);
    assert_ptr_equal(tx.iov[2].iov_base, pg_at(&src, 0x1000));
    assert_int_equal(tx.iov[2].iov_len, 4 * PG);
    assert_ptr_equal(tx.iov[3].iov_base, pg_at(&src, 0xa000));
    assert_int_equal(tx.iov[3].iov_len, PG);
    assert_int_equal(tx.iov[4].iov_len, PG);
    assert_int_equal(tx.st.pages, 9);
    assert_int_equal(tx.st.zero_pages, 3);

    size_t n;
    uint8_t *w = tx_wire(&tx, &n);
    /* zero pages cost their 8-byte entry only */
    size_t len = PAGES_HEAD + 9 * 8 + 6 * PG;
    assert_int_equal(n, MSG_HEADER_SIZE + len);
    assert_int_equal(le16_load(w + 4), MSG_MEM_PAGES);
    assert_int_equal(le32_load(w + 8), len);
    assert_int_equal(le32_load(w + 12), (uint32_t)XXH3_64bits(w + MSG_HEADER_SIZE, PAGES_HEAD + 9 * 8));
    const uint8_t *h = w + MSG_HEADER_SIZE;
    assert_int_equal(le32_load(h), 9);
    assert_memory_equal(h + 4, "\0\0\0\0", 4);            /* codec none, reserved */
    for (size_t i = 0; i < 9; i++)
        assert_int_equal(le64_load(h + PAGES_HEAD + 8 * i),
                         order[i] | (page_is_zero(pg_at(&src, order[i])) ? PAGE_F_ZERO : 0));
    assert_memory_equal(h + PAGES_HEAD + 9 * 8, pg_at(&src, 0x1000), 4 * PG);
    assert_memory_equal(h + PAGES_HEAD + 9 * 8 + 4 * PG, pg_at(&src, 0xa000), PG);
    assert_memory_equal(h + PAGES_HEAD + 9 * 8 + 5 * PG, pg_at(&src, 0x3ff000), PG);
    /* sent: the queue is empty again, and sending nothing writes nothing */
    assert_int_equal(tx.n, 0);
    assert_int_equal(tx.niov, 0);
    assert_int_equal(tx.st.data_bytes, 6 * PG);
    assert_int_equal(tx.st.wire_bytes, n);
    size_t n0;
    uint8_t *w0 = tx_wire(&tx, &n0);
    assert_int_equal(n0, 0);
    free(w0);

    char err[256];
    assert_int_equal(rx_wire(&dst.rx, w, n, err, sizeof(err)), 0);
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        assert_landed(&dst, &src, order[i]);
    assert_untouched(&dst, 0x5000);
    assert_untouched(&dst, 0x9000);
    assert_untouched(&dst, 0x3fe000);
    assert_stats_equal(&dst.rx.st, &tx.st);

    /* a later round sends page 1 again, now zero: the old data goes */
    memset(pg_at(&src, 0x1000), 0, PG);
    assert_false(queue(&tx, &src, 0x1000));
    assert_int_equal(tx.niov, 0);                          /* no data pages */
    free(w);
    w = tx_wire(&tx, &n);
    assert_int_equal(n, MSG_HEADER_SIZE + PAGES_HEAD + 8);
    assert_int_equal(rx_wire(&dst.rx, w, n, err, sizeof(err)), 0);
    assert_landed(&dst, &src, 0x1000);
    assert_int_equal(dst.rx.st.pages, 10);
    assert_int_equal(dst.rx.st.zero_pages, 4);
    assert_stats_equal(&dst.rx.st, &tx.st);
    free(w);
    pages_tx_free(&tx);
    side_free(&src);
    side_free(&dst);
}

/* PAGES_MAX pages in one message (1 MiB of data when none is zero), then a
 * second message on the same stream. */
static void test_pages_full_message(void **state)
{
    struct side src, dst;
    side_init(&src, RAM, 0);
    side_init(&dst, RAM, FILL);
    for (uint64_t gpa = 0; gpa < RAM; gpa += PG)
        fill_random(pg_at(&src, gpa), PG, gpa + 1);

    struct pages_tx tx = { 0 };
    for (int i = 0; i < PAGES_MAX - 1; i++)
        assert_false(queue(&tx, &src, 0x100000 + (uint64_t)i * PG));
    assert_true(queue(&tx, &src, 0x100000 + (uint64_t)(PAGES_MAX - 1) * PG));
    assert_int_equal(tx.niov, 3);                          /* one contiguous run */
    assert_int_equal(tx.iov[2].iov_len, PAGES_MAX * PG);
    size_t n1, n2;
    uint8_t *w1 = tx_wire(&tx, &n1);
    assert_int_equal(n1, MSG_HEADER_SIZE + PAGES_HEAD + PAGES_MAX * (8 + PG));

    /* a full message of every third page zero, scattered */
    for (int i = 0; i < PAGES_MAX; i++) {
        uint64_t gpa = (uint64_t)(i * 3) * PG;
        if (i % 3 == 0)
            memset(pg_at(&src, gpa), 0, PG);
        assert_int_equal(queue(&tx, &src, gpa), i == PAGES_MAX - 1);
    }
    uint8_t *w2 = tx_wire(&tx, &n2);
    uint8_t *both = malloc(n1 + n2);
    assert_non_null(both);
    memcpy(both, w1, n1);
    memcpy(both + n1, w2, n2);

    char err[256];
    assert_int_equal(rx_wire(&dst.rx, both, n1 + n2, err, sizeof(err)), 0);
    for (int i = 0; i < PAGES_MAX; i++) {
        assert_landed(&dst, &src, 0x100000 + (uint64_t)i * PG);
        assert_landed(&dst, &src, (uint64_t)(i * 3) * PG);
    }
    assert_untouched(&dst, (uint64_t)(PAGES_MAX * 3) * PG);
    assert_int_equal(dst.rx.st.pages, 2 * PAGES_MAX);
    assert_int_equal(dst.rx.st.zero_pages, (PAGES_MAX + 2) / 3);
    assert_int_equal(dst.rx.st.wire_bytes, n1 + n2);
    assert_stats_equal(&dst.rx.st, &tx.st);
    free(both);
    free(w1);
    free(w2);
    pages_tx_free(&tx);
    side_free(&src);
    side_free(&dst);
}

/* lz4 / zstd: compressible pages travel compressed (codec byte set), random
 * ones raw (codec 0), zero pages never enter the body; all land intact. */
static void codec_round_trip(enum page_codec codec)
{
    struct side src, dst;
    side_init(&src, RAM, 0);
    side_init(&dst, RAM, FILL);
    struct pages_tx tx = { .codec = codec };
    char err[256];

    /* a full message: 1 MiB-ish of text with zero pages among it */
    for (int i = 0; i < PAGES_MAX; i++) {
        uint64_t gpa = (uint64_t)i * PG;
        if (i % 5 != 2)
            fill_text(pg_at(&src, gpa), (uint32_t)i);
        assert_int_equal(queue(&tx, &src, gpa), i == PAGES_MAX - 1);
    }
    uint32_t ndata = (uint32_t)tx.ndata;
    size_t n1;
    uint8_t *w1 = tx_wire(&tx, &n1);
    size_t meta = MSG_HEADER_SIZE + PAGES_HEAD + PAGES_MAX * 8;
    assert_int_equal(w1[MSG_HEADER_SIZE + 4], codec);
    assert_true(n1 < meta + (size_t)ndata * PG / 4);
    assert_int_equal(tx.st.data_bytes, (uint64_t)ndata * PG);    /* before compression */
    assert_int_equal(tx.st.wire_bytes, n1);

    /* random pages do not compress: sent raw although the codec is on */
    for (int i = 0; i < 4; i++) {
        uint64_t gpa = 0x200000 + (uint64_t)i * PG;
        fill_random(pg_at(&src, gpa), PG, 1000u + (unsigned)i);
        assert_false(queue(&tx, &src, gpa));
    }
    assert_false(queue(&tx, &src, 0x300000));             /* zero */
    size_t n2;
    uint8_t *w2 = tx_wire(&tx, &n2);
    assert_int_equal(n2, MSG_HEADER_SIZE + PAGES_HEAD + 5 * 8 + 4 * PG);
    assert_int_equal(w2[MSG_HEADER_SIZE + 4], CODEC_NONE);
    assert_memory_equal(w2 + n2 - 4 * PG, pg_at(&src, 0x200000), 4 * PG);

    /* zero pages only: nothing to compress */
    assert_false(queue(&tx, &src, 0x301000));
    size_t n3;
    uint8_t *w3 = tx_wire(&tx, &n3);
    assert_int_equal(n3, MSG_HEADER_SIZE + PAGES_HEAD + 8);
    assert_int_equal(w3[MSG_HEADER_SIZE + 4], CODEC_NONE);

    /* one small compressible message after that: the codec state is reusable */
    fill_text(pg_at(&src, 0x310000), 77);
    assert_false(queue(&tx, &src, 0x310000));
    size_t n4;
    uint8_t *w4 = tx_wire(&tx, &n4);
    assert_int_equal(w4[MSG_HEADER_SIZE + 4], codec);
    assert_true(n4 < MSG_HEADER_SIZE + PAGES_HEAD + 8 + PG);

    size_t n = n1 + n2 + n3 + n4;
    uint8_t *all = malloc(n);
    assert_non_null(all);
    memcpy(all, w1, n1);
    memcpy(all + n1, w2, n2);
    memcpy(all + n1 + n2, w3, n3);
    memcpy(all + n1 + n2 + n3, w4, n4);
    assert_int_equal(rx_wire(&dst.rx, all, n, err, sizeof(err)), 0);
    for (int i = 0; i < PAGES_MAX; i++)
        assert_landed(&dst, &src, (uint64_t)i * PG);
    for (int i = 0; i < 4; i++)
        assert_landed(&dst, &src, 0x200000 + (uint64_t)i * PG);
    assert_landed(&dst, &src, 0x300000);
    assert_landed(&dst, &src, 0x301000);
    assert_landed(&dst, &src, 0x310000);
    assert_untouched(&dst, 0x204000);
    assert_stats_equal(&dst.rx.st, &tx.st);
    assert_int_equal(dst.rx.st.wire_bytes, n);
    free(all);
    free(w1);
    free(w2);
    free(w3);
    free(w4);
    pages_tx_free(&tx);
    side_free(&src);
    side_free(&dst);
}

static void test_pages_lz4(void **state)
{
    codec_round_trip(CODEC_LZ4);
}

static void test_pages_zstd(void **state)
{
    codec_round_trip(CODEC_ZSTD);
}

static void test_codec_names(void **state)
{
    assert_string_equal(page_codec_name(CODEC_NONE), "off");
    assert_string_equal(page_codec_name(CODEC_LZ4), "lz4");
    assert_string_equal(page_codec_name(CODEC_ZSTD), "zstd");
    assert_string_equal(page_codec_name((enum page_codec)(CODEC_MAX + 1)), "unknown");
    assert_int_equal(page_codec_parse("off"), CODEC_NONE);
    assert_int_equal(page_codec_parse("none"), CODEC_NONE);
    assert_int_equal(page_codec_parse("lz4"), CODEC_LZ4);
    assert_int_equal(page_codec_parse("zstd"), CODEC_ZSTD);
    assert_int_equal(page_codec_parse("gzip"), -1);
    assert_int_equal(page_codec_parse(""), -1);
}

/* ---- malformed MEM_PAGES, built by hand ---- */

struct frame {
    uint32_t n;                 /* the head's page count */
    uint8_t codec;
    uint8_t rsv[3];             /* must be 0 */
    const uint64_t *ent;
    uint32_t nent;              /* entries actually present */
    const void *body;
    size_t blen;
};

static void st32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> 8 * i);
}

/* The frame's bytes, the header checksum over head + entries as a correct
 * sender computes it (so only the receiver's own checks can catch it). */
static uint8_t *frame_bytes(const struct frame *f, size_t *len)
{
    size_t meta = PAGES_HEAD + (size_t)f->nent * 8, pay = meta + f->blen;
    uint8_t *b = calloc(1, MSG_HEADER_SIZE + pay);
    assert_non_null(b);
    uint8_t *h = b + MSG_HEADER_SIZE;
    st32(h, f->n);
    h[4] = f->codec;
    memcpy(h + 5, f->rsv, 3);
    for (uint32_t i = 0; i < f->nent; i++) {
        st32(h + PAGES_HEAD + 8 * i, (uint32_t)f->ent[i]);
        st32(h + PAGES_HEAD + 8 * i + 4, (uint32_t)(f->ent[i] >> 32));
    }
    if (f->blen)
        memcpy(h + meta, f->body, f->blen);
    st32(b, MSG_MAGIC);
    b[4] = MSG_MEM_PAGES;
    st32(b + 8, (uint32_t)pay);
    st32(b + 12, (uint32_t)XXH3_64bits(h, meta));
    *len = MSG_HEADER_SIZE + pay;
    return b;
}

/* The receiver must refuse these bytes with an error containing msg, having
 * written no page of guest RAM and recorded no hash. */
static void expect_reject_bytes(const uint8_t *b, size_t n, const char *msg)
{
    struct side dst;
    side_init(&dst, RAM, FILL);
    char err[256] = "";
    assert_int_equal(rx_wire(&dst.rx, b, n, err, sizeof(err)), -1);
    if (!strstr(err, msg))
        fail_msg("error \"%s\" does not contain \"%s\"", err, msg);
    assert_all_untouched(&dst);
    side_free(&dst);
}

/* The same for a frame, of which only the first len - cut bytes arrive. */
static void expect_reject(const struct frame *f, size_t cut, const char *msg)
{
    size_t n;
    uint8_t *b = frame_bytes(f, &n);
    assert_true(cut < n);
    expect_reject_bytes(b, n - cut, msg);
    free(b);
}

static uint8_t body_pages[4 * PG];

static void make_body(void)
{
    for (int i = 0; i < 4; i++)
        fill_text(body_pages + i * PG, (uint32_t)(100 + i));
}

/* The hand-made frames are what the sender produces for the same pages. */
static void test_frame_builder_matches_sender(void **state)
{
    make_body();
    struct side src;
    side_init(&src, RAM, 0);
    memcpy(pg_at(&src, 0x2000), body_pages, PG);
    memcpy(pg_at(&src, 0x5000), body_pages + PG, PG);
    struct pages_tx tx = { 0 };
    queue(&tx, &src, 0x2000);
    queue(&tx, &src, 0x7000);
    queue(&tx, &src, 0x5000);
    size_t n, fn;
    uint8_t *w = tx_wire(&tx, &n);
    const uint64_t ent[] = { 0x2000, 0x7000 | PAGE_F_ZERO, 0x5000 };
    uint8_t *fb = frame_bytes(&(struct frame){ .n = 3, .ent = ent, .nent = 3, .body = body_pages,
                                               .blen = 2 * PG }, &fn);
    assert_int_equal(fn, n);
    assert_memory_equal(fb, w, n);

    /* and a good hand-made frame is accepted */
    struct side dst;
    side_init(&dst, RAM, FILL);
    char err[256];
    assert_int_equal(rx_wire(&dst.rx, fb, fn, err, sizeof(err)), 0);
    assert_landed(&dst, &src, 0x2000);
    assert_landed(&dst, &src, 0x5000);
    assert_landed(&dst, &src, 0x7000);
    free(w);
    free(fb);
    pages_tx_free(&tx);
    side_free(&dst);
    side_free(&src);
}

static void test_pages_bad_entries(void **state)
{
    make_body();
    /* the bad entry comes after good ones: they must not be written either */
    uint64_t ent[3] = { 0x1000, 0x2000 | PAGE_F_ZERO, 0 };
    struct frame f = { .n = 3, .ent = ent, .nent = 3, .body = body_pages, .blen = 2 * PG };

    ent[2] = 0x3000 | 0x2;
    expect_reject(&f, 0, "MEM_PAGES: page 2 has unknown flags 0x002");
    ent[2] = 0x3000 | 0x800 | PAGE_F_ZERO;
    f.blen = PG;
    expect_reject(&f, 0, "MEM_PAGES: page 2 has unknown flags 0x801");
    /* an unaligned GPA: its low bits are flag bits, so it is refused as such */
    ent[2] = 0x3004;
    f.blen = 2 * PG;
    expect_reject(&f, 0, "MEM_PAGES: page 2 has unknown flags 0x004");
    ent[2] = 0x3ff800;
    expect_reject(&f, 0, "MEM_PAGES: page 2 has unknown flags 0x800");

    /* outside RAM: just past the end, far beyond, and a zero page there */
    ent[2] = RAM;
    expect_reject(&f, 0, "MEM_PAGES: page at GPA 0x400000 is outside guest RAM");
    ent[2] = 0xfffffffffffff000ull;
    expect_reject(&f, 0, "MEM_PAGES: page at GPA 0xfffffffffffff000 is outside guest RAM");
    ent[2] = GMEM_4G | PAGE_F_ZERO;
    f.blen = PG;
    expect_reject(&f, 0, "MEM_PAGES: page at GPA 0x100000000 is outside guest RAM");
}

static void test_pages_bad_head(void **state)
{
    make_body();
    static uint64_t many[PAGES_MAX + 1];
    for (int i = 0; i <= PAGES_MAX; i++)
        many[i] = (uint64_t)i * PG | PAGE_F_ZERO;
    const uint64_t ent[2] = { 0x1000, 0x2000 };

    expect_reject(&(struct frame){ .n = 0 }, 0, "MEM_PAGES: bad head (0 pages, codec 0) in 8 bytes");
    expect_reject(&(struct frame){ .n = 0, .ent = ent, .nent = 1, .body = body_pages, .blen = PG }, 0,
                  "MEM_PAGES: bad head (0 pages");
    expect_reject(&(struct frame){ .n = PAGES_MAX + 1, .ent = many, .nent = PAGES_MAX + 1 }, 0,
                  "MEM_PAGES: bad head (257 pages, codec 0)");
    expect_reject(&(struct frame){ .n = 0xffffffff, .ent = many, .nent = 1 }, 0,
                  "MEM_PAGES: bad head (4294967295 pages");
    for (int i = 0; i < 3; i++) {
        struct frame f = { .n = 2, .ent = ent, .nent = 2, .body = body_pages, .blen = 2 * PG };
        f.rsv[i] = 0x10;
        expect_reject(&f, 0, "MEM_PAGES: bad head (2 pages, codec 0)");
    }
    expect_reject(&(struct frame){ .n = 2, .codec = CODEC_MAX + 1, .ent = ent, .nent = 2,
                                   .body = body_pages, .blen = 2 * PG }, 0,
                  "MEM_PAGES: bad head (2 pages, codec 3)");
    expect_reject(&(struct frame){ .n = 2, .codec = 0xff, .ent = ent, .nent = 2 }, 0, "codec 255");
    /* more entries claimed than the payload holds */
    expect_reject(&(struct frame){ .n = 3, .ent = ent, .nent = 2 }, 0,
                  "MEM_PAGES: bad head (3 pages, codec 0) in 24 bytes");

    /* a payload too short for the head */
    uint8_t b[MSG_HEADER_SIZE + 4] = { 0 };
    st32(b, MSG_MAGIC);
    b[4] = MSG_MEM_PAGES;
    st32(b + 8, 4);
    st32(b + 16, 1);
    st32(b + 12, (uint32_t)XXH3_64bits(b + 16, 4));
    expect_reject_bytes(b, sizeof(b), "MEM_PAGES: payload of 4 bytes has no page count");
}

static void test_pages_bad_body(void **state)
{
    make_body();
    const uint64_t ent[3] = { 0x1000, 0x2000 | PAGE_F_ZERO, 0x3000 };
    const uint64_t zent[2] = { 0x1000 | PAGE_F_ZERO, 0x2000 | PAGE_F_ZERO };
    struct frame f = { .n = 3, .ent = ent, .nent = 3, .body = body_pages };

    /* raw: the body must be exactly the data pages */
    f.blen = PG;
    expect_reject(&f, 0, "MEM_PAGES: 2 data pages but a body of 4096 bytes");
    f.blen = 2 * PG - 1;
    expect_reject(&f, 0, "MEM_PAGES: 2 data pages but a body of 8191 bytes");
    f.blen = 2 * PG + 1;
    expect_reject(&f, 0, "MEM_PAGES: 2 data pages but a body of 8193 bytes");
    f.blen = 3 * PG;
    expect_reject(&f, 0, "MEM_PAGES: 2 data pages but a body of 12288 bytes");
    f.blen = 0;
    expect_reject(&f, 0, "MEM_PAGES: 2 data pages but a body of 0 bytes");
    expect_reject(&(struct frame){ .n = 2, .ent = zent, .nent = 2, .body = body_pages, .blen = 1 }, 0,
                  "MEM_PAGES: 0 data pages but a body of 1 bytes");

    /* a codec with no data pages, or no body */
    expect_reject(&(struct frame){ .n = 2, .codec = CODEC_LZ4, .ent = zent, .nent = 2,
                                   .body = body_pages, .blen = 16 }, 0, "MEM_PAGES: empty lz4 body");
    expect_reject(&(struct frame){ .n = 3, .codec = CODEC_ZSTD, .ent = ent, .nent = 3 }, 0,
                  "MEM_PAGES: empty zstd body");

    /* compressed bodies that do not decompress to exactly the 2 data pages */
    static char z[2 * LZ4_COMPRESSBOUND(4 * PG) + 4 * PG];
    for (int pages = 1; pages <= 3; pages += 2) {        /* one page short, one too many */
        int zl = LZ4_compress_default((const char *)body_pages, z, pages * PG, (int)sizeof(z));
        assert_true(zl > 0);
        f.codec = CODEC_LZ4;
        f.body = z;
        f.blen = (size_t)zl;
        expect_reject(&f, 0, "MEM_PAGES: lz4 body does not decompress to its 2 pages");
        size_t zs = ZSTD_compress(z, sizeof(z), body_pages, (size_t)pages * PG, 3);
        assert_false(ZSTD_isError(zs));
        f.codec = CODEC_ZSTD;
        f.blen = zs;
        expect_reject(&f, 0, "MEM_PAGES: zstd body does not decompress to its 2 pages");
    }
    /* garbage, and a codec byte that does not match the body */
    f.body = body_pages;
    f.blen = 100;
    f.codec = CODEC_ZSTD;
    expect_reject(&f, 0, "MEM_PAGES: zstd body does not decompress to its 2 pages");
    int zl = LZ4_compress_default((const char *)body_pages, z, 2 * PG, (int)sizeof(z));
    f.body = z;
    f.blen = (size_t)zl;
    expect_reject(&f, 0, "MEM_PAGES: zstd body does not decompress to its 2 pages");
    size_t zs = ZSTD_compress(z, sizeof(z), body_pages, 2 * PG, 3);
    f.blen = zs;
    f.codec = CODEC_LZ4;
    expect_reject(&f, 0, "MEM_PAGES: lz4 body does not decompress to its 2 pages");

    /* a "compressed" body larger than any compressor's output for 1 MiB */
    size_t huge = ZSTD_compressBound((size_t)PAGES_MAX * PG) + 1;
    uint8_t *hb = calloc(1, huge);
    assert_non_null(hb);
    f.body = hb;
    f.blen = huge;
    char msg[96];
    snprintf(msg, sizeof(msg), "MEM_PAGES: compressed body of %zu bytes is too large", huge);
    expect_reject(&f, 0, msg);
    free(hb);
}

static void test_pages_truncated(void **state)
{
    make_body();
    const uint64_t ent[3] = { 0x1000, 0x2000 | PAGE_F_ZERO, 0x3000 };
    struct frame f = { .n = 3, .ent = ent, .nent = 3, .body = body_pages, .blen = 2 * PG };

    /* the peer closes inside the head, the entries, or before the body */
    expect_reject(&f, 2 * PG + 24 + 5, "MEM_PAGES message ended early (5 bytes short)");
    expect_reject(&f, 2 * PG + 3, "MEM_PAGES message ended early (3 bytes short)");
    expect_reject(&f, 2 * PG, "MEM_PAGES message ended early (8192 bytes short)");

    /* inside a compressed body: nothing is decompressed, nothing written */
    static char z[LZ4_COMPRESSBOUND(2 * PG)];
    int zl = LZ4_compress_default((const char *)body_pages, z, 2 * PG, (int)sizeof(z));
    f.codec = CODEC_LZ4;
    f.body = z;
    f.blen = (size_t)zl;
    expect_reject(&f, 10, "MEM_PAGES message ended early (10 bytes short)");
    f.codec = CODEC_ZSTD;
    f.blen = ZSTD_compress(z, sizeof(z), body_pages, 2 * PG, 3);
    expect_reject(&f, 1, "MEM_PAGES message ended early (1 bytes short)");
}

/* Inside a raw body the pages are read straight into guest RAM, so the ones
 * before the cut have landed; but zero pages are not cleared, no hash is
 * recorded, the stats do not count the message, and the error tells the
 * caller to drop the stream (the migration fails). */
static void test_pages_truncated_raw_body(void **state)
{
    make_body();
    const uint64_t ent[3] = { 0x1000, 0x2000 | PAGE_F_ZERO, 0x3000 };
    size_t n;
    uint8_t *b = frame_bytes(&(struct frame){ .n = 3, .ent = ent, .nent = 3, .body = body_pages,
                                              .blen = 2 * PG }, &n);
    struct side dst;
    side_init(&dst, RAM, FILL);
    char err[256];
    /* the first data page and 100 bytes of the second arrive */
    assert_int_equal(rx_wire(&dst.rx, b, n - PG + 100, err, sizeof(err)), -1);
    assert_string_equal(err, "migration stream truncated: MEM_PAGES message ended early (3996 bytes short)");
    assert_memory_equal(pg_at(&dst, 0x1000), body_pages, PG);
    const uint8_t *p3 = pg_at(&dst, 0x3000);
    assert_memory_equal(p3, body_pages + PG, 100);
    for (size_t i = 100; i < PG; i++)
        assert_int_equal(p3[i], FILL);
    for (uint64_t gpa = 0x2000; gpa < RAM; gpa += PG)
        if (gpa != 0x3000)
            assert_untouched(&dst, gpa);
    for (size_t i = 0; i < digest_npages(&dst.m); i++)
        assert_int_equal(dst.rx.hash[i], digest_zero_page());
    assert_int_equal(dst.rx.st.pages, 0);
    side_free(&dst);
    free(b);
}

/* The frame checksum of MEM_PAGES covers the head and the entries: a flipped
 * entry bit is caught before any page is written. */
static void test_pages_entry_checksum(void **state)
{
    make_body();
    const uint64_t ent[3] = { 0x1000, 0x2000 | PAGE_F_ZERO, 0x3000 };
    size_t n;
    uint8_t *b = frame_bytes(&(struct frame){ .n = 3, .ent = ent, .nent = 3, .body = body_pages,
                                              .blen = 2 * PG }, &n);
    uint8_t *e = b + MSG_HEADER_SIZE + PAGES_HEAD;
    e[1] ^= 0x10;                       /* page 0 at 0x0000 instead of 0x1000: still valid */
    expect_reject_bytes(b, n, "migration stream: MEM_PAGES message checksum mismatch");
    e[1] ^= 0x10;
    e[16] ^= PAGE_F_ZERO;               /* page 2 turns zero */
    expect_reject_bytes(b, n, "MEM_PAGES message checksum mismatch");
    e[16] ^= PAGE_F_ZERO;
    b[MSG_HEADER_SIZE + 4] = CODEC_LZ4; /* the head is covered too */
    expect_reject_bytes(b, n, "MEM_PAGES message checksum mismatch");
    b[MSG_HEADER_SIZE + 4] = CODEC_NONE;
    b[13] ^= 0x01;                      /* and of course the checksum field */
    expect_reject_bytes(b, n, "MEM_PAGES message checksum mismatch");
    free(b);
}

/* By design the frame checksum does NOT cover a MEM_PAGES body (the pages
 * come from a running guest and may change on their way): a flipped body byte
 * on a plaintext stream lands in guest RAM undetected by the frame. The page
 * hash records what arrived, so the memory digest catches it. */
static void test_pages_body_not_in_frame_checksum_digest_catches(void **state)
{
    struct side src, dst;
    side_init(&src, RAM, 0);
    side_init(&dst, RAM, 0);
    fill_random(pg_at(&src, 0x1000), PG, 1);
    fill_random(pg_at(&src, 0x300000), PG, 2);              /* chunk 1 */
    struct pages_tx tx = { 0 };
    queue(&tx, &src, 0x1000);
    queue(&tx, &src, 0x300000);
    size_t n;
    uint8_t *w = tx_wire(&tx, &n);
    w[n - 7] ^= 0x01;                                       /* the last page's data */

    char err[256];
    assert_int_equal(rx_wire(&dst.rx, w, n, err, sizeof(err)), 0);   /* not detected here */
    assert_landed(&dst, &src, 0x1000);
    const uint8_t *got = pg_at(&dst, 0x300000);
    assert_int_equal(memcmp(got, pg_at(&src, 0x300000), PG - 7), 0);
    assert_int_equal(got[PG - 7], pg_at(&src, 0x300000)[PG - 7] ^ 0x01);
    size_t i = digest_page_index(&dst.m, 0x300000);
    assert_int_equal(dst.rx.hash[i], XXH3_64bits(got, PG));          /* what arrived */

    size_t nd = digest_count(&src.m, DIGEST_CHUNK);
    assert_int_equal(nd, 2);
    uint64_t want[2], have[2];
    assert_int_equal(digest_compute(&src.m, DIGEST_CHUNK, want), 0);
    digest_from_hashes(&dst.m, DIGEST_CHUNK, dst.rx.hash, have);
    assert_int_equal(have[0], want[0]);
    assert_true(have[1] != want[1]);                        /* the mismatch, in chunk 1 */
    assert_int_equal(digest_chunk_gpa(&dst.m, DIGEST_CHUNK, 1), 0x200000);
    free(w);
    pages_tx_free(&tx);
    side_free(&src);
    side_free(&dst);
}

/* ---- the memory digest ---- */

/* The source's digest of its RAM equals the destination's digest from the
 * hashes it recorded while receiving the same content. */
static void digest_case(uint64_t size, int nregions)
{
    struct side src, dst;
    side_init(&src, size, 0);
    side_init(&dst, size, 0);
    assert_int_equal(src.m.nregions, nregions);
    uint64_t top = gmem_top(&src.m);
    assert_int_equal(top, nregions == 2 ? GMEM_4G + (size - GMEM_PCI_HOLE_START) : size);

    /* mixed pages: data, zero pages sent over old destination data, and
     * pages never sent (zero on both sides); region edges included */
    uint64_t gpas[] = { 0, 0x1000, 0x2000, 0x1ff000, 0x200000, 0x201000, 0x3ff000,
                        nregions == 2 ? GMEM_PCI_HOLE_START - PG : size - PG,
                        GMEM_4G, GMEM_4G + 0x1000, GMEM_4G + 0x200000, top - PG };
    size_t ng = nregions == 2 ? sizeof(gpas) / sizeof(gpas[0]) : 8;
    struct pages_tx tx = { 0 };
    for (size_t i = 0; i < ng; i++) {
        if (i % 3 != 1)
            fill_random(pg_at(&src, gpas[i]), PG, gpas[i] + 3);
        else
            fill_random(pg_at(&dst, gpas[i]), PG, 99);      /* stale data, overwritten by zero */
        queue(&tx, &src, gpas[i]);
    }
    size_t n;
    uint8_t *w = tx_wire(&tx, &n);
    char err[256];
    assert_int_equal(rx_wire(&dst.rx, w, n, err, sizeof(err)), 0);
    for (size_t i = 0; i < ng; i++)
        assert_landed(&dst, &src, gpas[i]);

    size_t nd = digest_count(&src.m, DIGEST_CHUNK);
    size_t want_nd = 0;
    for (int r = 0; r < nregions; r++)
        want_nd += (src.m.regions[r].size + DIGEST_CHUNK - 1) / DIGEST_CHUNK;
    assert_int_equal(nd, want_nd);
    uint64_t *want = calloc(nd, 8), *have = calloc(nd, 8), *again = calloc(nd, 8);
    assert_non_null(want);
    assert_non_null(have);
    assert_non_null(again);
    assert_int_equal(digest_compute(&src.m, DIGEST_CHUNK, want), 0);
    digest_from_hashes(&dst.m, DIGEST_CHUNK, dst.rx.hash, have);
    assert_memory_equal(have, want, nd * 8);
    assert_int_equal(digest_compute(&dst.m, DIGEST_CHUNK, again), 0);   /* RAM agrees too */
    assert_memory_equal(again, want, nd * 8);
    if (nregions == 2) {
        /* the PCI hole and the GPA just past the top are not RAM: refused,
         * nothing written, no hash changed */
        const uint64_t hole[2] = { 0x1000, GMEM_PCI_HOLE_START | PAGE_F_ZERO };
        const uint64_t past[2] = { 0x1000, top | PAGE_F_ZERO };
        static const char *const want_err[2] = {
            "MEM_PAGES: page at GPA 0xc0000000 is outside guest RAM",
            "MEM_PAGES: page at GPA 0x100300000 is outside guest RAM",
        };
        static uint8_t junk[PG];
        memset(junk, 0x5a, PG);
        for (int k = 0; k < 2; k++) {
            size_t fl;
            uint8_t *fb = frame_bytes(&(struct frame){ .n = 2, .ent = k ? past : hole, .nent = 2,
                                                       .body = junk, .blen = PG }, &fl);
            assert_int_equal(rx_wire(&dst.rx, fb, fl, err, sizeof(err)), -1);
            assert_string_equal(err, want_err[k]);
            free(fb);
        }
        assert_landed(&dst, &src, 0x1000);
        digest_from_hashes(&dst.m, DIGEST_CHUNK, dst.rx.hash, have);
        assert_memory_equal(have, want, nd * 8);

        size_t first_hi = GMEM_PCI_HOLE_START / DIGEST_CHUNK;
        assert_int_equal(digest_chunk_gpa(&src.m, DIGEST_CHUNK, first_hi), GMEM_4G);
        assert_int_equal(digest_page_index(&src.m, GMEM_4G), GMEM_PCI_HOLE_START / PG);
        assert_int_equal(digest_page_index(&src.m, GMEM_PCI_HOLE_START), (size_t)-1);
        assert_int_equal(digest_npages(&src.m), size / PG);
    }

    /* one page different on the destination: exactly its chunk differs */
    uint64_t odd = nregions == 2 ? GMEM_4G + 0x200000 : 0x200000;
    size_t pi = digest_page_index(&dst.m, odd);
    dst.rx.hash[pi] ^= 1;
    digest_from_hashes(&dst.m, DIGEST_CHUNK, dst.rx.hash, have);
    for (size_t i = 0; i < nd; i++) {
        bool bad = digest_chunk_gpa(&dst.m, DIGEST_CHUNK, i) == odd;
        assert_int_equal(have[i] != want[i], bad);
    }
    free(want);
    free(have);
    free(again);
    free(w);
    pages_tx_free(&tx);
    side_free(&src);
    side_free(&dst);
}

static void test_digest_one_region(void **state)
{
    digest_case(RAM + 0x100000, 1);     /* 5 MiB: a short last chunk */
}

static void test_digest_two_regions(void **state)
{
    digest_case(BIG_RAM, 2);            /* 3 GiB + 3 MiB: 1 GiB hole, 3 MiB at 4 GiB */
}

/* ---- over TLS ---- */

struct handshake {
    SSL_CTX *ctx;
    int fd;
    bool server;
    SSL *ssl;
    char err[256];
};

static void *handshake_main(void *arg)
{
    struct handshake *h = arg;
    h->ssl = tls_handshake(h->ctx, h->fd, h->server, h->err, sizeof(h->err));
    return NULL;
}

struct tls_sender {
    struct chan c;
    const struct side *src;
    const uint64_t *gpa;
    size_t n;
    struct pages_tx tx;
    int rc;
    char err[256];
};

/* The source's stream: the pages (switching to zstd halfway), then FLUSH. */
static void *tls_sender_main(void *arg)
{
    struct tls_sender *s = arg;
    s->rc = -1;
    for (size_t i = 0; i < s->n; i++) {
        if (i == s->n / 2) {
            if (pages_tx_send(&s->tx, &s->c, s->err, sizeof(s->err)) < 0)
                return NULL;
            s->tx.codec = CODEC_ZSTD;
        }
        if (pages_tx_add(&s->tx, s->gpa[i], gmem_ptr(&s->src->m, s->gpa[i], PG)) &&
            pages_tx_send(&s->tx, &s->c, s->err, sizeof(s->err)) < 0)
            return NULL;
    }
    if (pages_tx_send(&s->tx, &s->c, s->err, sizeof(s->err)) < 0 ||
        msg_write(&s->c, MSG_FLUSH, NULL, 0) < 0 || chan_flush(&s->c) < 0) {
        snprintf(s->err, sizeof(s->err), "%s", s->c.err);
        return NULL;
    }
    s->rc = 0;
    return NULL;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
                unlink(path);
            }
        closedir(d);
    }
    rmdir(dir);
}

static void test_pages_over_tls(void **state)
{
    char dir[] = "/tmp/ferry-test-stream-XXXXXX", err[256];
    assert_non_null(mkdtemp(dir));
    if (tls_ca_init(dir, "unit-test", 2, err, sizeof(err)) < 0) {
        remove_dir(dir);
        fail_msg("tls_ca_init: %s", err);
    }
    SSL_CTX *sctx = tls_ctx_new(dir, true, err, sizeof(err));
    if (!sctx)
        fail_msg("server context: %s", err);
    SSL_CTX *cctx = tls_ctx_new(dir, false, err, sizeof(err));
    if (!cctx)
        fail_msg("client context: %s", err);

    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct handshake server = { .ctx = sctx, .fd = sv[1], .server = true };
    struct handshake client = { .ctx = cctx, .fd = sv[0], .server = false };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, handshake_main, &server), 0);
    handshake_main(&client);
    pthread_join(t, NULL);
    if (!server.ssl || !client.ssl)
        fail_msg("handshake: server \"%s\", client \"%s\"", server.err, client.err);
    assert_string_equal(tls_cipher(client.ssl), tls_cipher(server.ssl));

    /* the source is the client, the destination the server */
    struct side src, dst;
    side_init(&src, RAM, 0);
    side_init(&dst, RAM, FILL);
    static uint64_t gpa[300];
    size_t ng = sizeof(gpa) / sizeof(gpa[0]);
    for (size_t i = 0; i < ng; i++) {
        /* a run of 100 pages, then scattered ones */
        gpa[i] = (uint64_t)(i < 100 ? 256 + i : 400 + 2 * i) * PG;
        if (i % 7 == 3)
            continue;                                       /* zero */
        if (i % 2)
            fill_random(pg_at(&src, gpa[i]), PG, i);
        else
            fill_text(pg_at(&src, gpa[i]), (uint32_t)i);
    }
    struct tls_sender *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->c = (struct chan){ .fd = sv[0], .ssl = client.ssl };
    s->src = &src;
    s->gpa = gpa;
    s->n = ng;
    assert_int_equal(pthread_create(&t, NULL, tls_sender_main, s), 0);

    struct chan c = { .fd = sv[1], .ssl = server.ssl };
    int msgs = 0;
    for (;;) {
        struct msg m;
        if (msg_read_header(&c, &m, err, sizeof(err)) < 0)
            fail_msg("TLS receive: %s", err);
        if (m.type == MSG_FLUSH) {
            assert_int_equal(m.len, 0);
            assert_int_equal(m.sum, 0);                     /* TLS authenticates instead */
            break;
        }
        assert_int_equal(m.type, MSG_MEM_PAGES);
        assert_int_equal(m.sum, 0);
        if (pages_rx_recv(&dst.rx, &c, &m, err, sizeof(err)) < 0)
            fail_msg("TLS pages_rx_recv: %s", err);
        msgs++;
    }
    pthread_join(t, NULL);
    if (s->rc)
        fail_msg("TLS send: %s", s->err);
    assert_int_equal(msgs, 2);                              /* 150 pages raw, 150 zstd */
    for (size_t i = 0; i < ng; i++)
        assert_landed(&dst, &src, gpa[i]);
    assert_untouched(&dst, 0x1000);
    assert_stats_equal(&dst.rx.st, &s->tx.st);

    pages_tx_free(&s->tx);
    free(s);
    tls_free(client.ssl);
    tls_free(server.ssl);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    close(sv[0]);
    close(sv[1]);
    side_free(&src);
    side_free(&dst);
    remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_socketpair),
        cmocka_unit_test(test_large_message),
        cmocka_unit_test(test_write_to_closed_socket),
        cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_flipped_payload_byte),
        cmocka_unit_test(test_flipped_header_bytes),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_hello),
        cmocka_unit_test(test_ack_and_digest),
        cmocka_unit_test(test_join),
        cmocka_unit_test(test_zero_page_hash),
        cmocka_unit_test(test_pages_round_trip),
        cmocka_unit_test(test_pages_full_message),
        cmocka_unit_test(test_pages_lz4),
        cmocka_unit_test(test_pages_zstd),
        cmocka_unit_test(test_codec_names),
        cmocka_unit_test(test_frame_builder_matches_sender),
        cmocka_unit_test(test_pages_bad_entries),
        cmocka_unit_test(test_pages_bad_head),
        cmocka_unit_test(test_pages_bad_body),
        cmocka_unit_test(test_pages_truncated),
        cmocka_unit_test(test_pages_truncated_raw_body),
        cmocka_unit_test(test_pages_entry_checksum),
        cmocka_unit_test(test_pages_body_not_in_frame_checksum_digest_catches),
        cmocka_unit_test(test_digest_one_region),
        cmocka_unit_test(test_digest_two_regions),
        cmocka_unit_test(test_pages_over_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
