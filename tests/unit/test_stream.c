/* Migration wire protocol: framing round trips and every way a message can
 * be damaged, plus the MEM_PAGES / HELLO / ACK / DIGEST codecs. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "migration/stream.h"

/* The bytes msg_write produces for one message. */
static size_t capture(uint16_t type, const void *payload, uint32_t len, uint8_t *out, size_t cap)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(msg_write(p[1], type, payload, len), 0);
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(p[0], out + n, cap - n)) > 0)
        n += (size_t)r;
    close(p[0]);
    return n;
}

/* A read end that yields exactly these bytes, then EOF. */
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
    int fd = feed(bytes, n);
    struct msg m;
    char err[256] = "";
    assert_int_equal(msg_read(fd, &m, err, sizeof(err)), -1);
    if (!strstr(err, msg))
        fail_msg("error \"%s\" does not contain \"%s\"", err, msg);
    assert_int_equal(m.error, e);
    assert_null(m.payload);
    close(fd);
}

static void test_round_trip_socketpair(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    const char *reason = "disk full";
    assert_int_equal(msg_write(sv[0], MSG_ABORT, reason, (uint32_t)strlen(reason)), 0);
    assert_int_equal(msg_write(sv[0], MSG_COMPLETE, NULL, 0), 0);
    close(sv[0]);

    struct msg m;
    char err[256], text[64];
    assert_int_equal(msg_read(sv[1], &m, err, sizeof(err)), 0);
    assert_int_equal(m.type, MSG_ABORT);
    assert_int_equal(m.len, 9);
    msg_text(&m, 0, text, sizeof(text));
    assert_string_equal(text, "disk full");
    msg_free(&m);

    assert_int_equal(msg_read(sv[1], &m, err, sizeof(err)), 0);
    assert_int_equal(m.type, MSG_COMPLETE);
    assert_int_equal(m.len, 0);
    assert_non_null(m.payload);
    msg_free(&m);

    assert_int_equal(msg_read(sv[1], &m, err, sizeof(err)), -1);
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
    w->ret = msg_write(w->fd, MSG_STATE, w->p, w->len);
    return NULL;
}

static void test_large_message(void **state)
{
    /* bigger than the socket buffer: exercises short writes and reads */
    uint32_t len = 3u << 20;
    uint8_t *p = malloc(len);
    for (uint32_t i = 0; i < len; i++)
        p[i] = (uint8_t)(i * 2654435761u >> 24);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct writer w = { .fd = sv[0], .p = p, .len = len };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
    struct msg m;
    char err[256];
    assert_int_equal(msg_read(sv[1], &m, err, sizeof(err)), 0);
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

static void test_write_to_closed_socket(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[1]);
    assert_int_equal(msg_write(sv[0], MSG_COMPLETE, NULL, 0), -EPIPE);   /* no SIGPIPE */
    close(sv[0]);
}

static void test_header_layout(void **state)
{
    uint8_t b[64];
    size_t n = capture(MSG_ACK, "\x01\0\0\0ok", 6, b, sizeof(b));
    assert_int_equal(n, MSG_HEADER_SIZE + 6);
    assert_memory_equal(b, "FRRY", 4);
    assert_int_equal(le16_load(b + 4), MSG_ACK);
    assert_int_equal(le16_load(b + 6), 0);
    assert_int_equal(le32_load(b + 8), 6);
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
    c[7] ^= 0x80;
    expect_read_error(c, n, MSG_E_FLAGS, "ABORT message has unknown flags 0x8000");
    memcpy(c, b, n);
    c[13] ^= 0x01;
    expect_read_error(c, n, MSG_E_CHECKSUM, "checksum mismatch");
    memcpy(c, b, n);
    c[8] ^= 0x02;           /* length 1 -> 3: the payload runs out */
    expect_read_error(c, n, MSG_E_TRUNCATED, "ended after 1 of 3 payload bytes");
}

static void test_truncated(void **state)
{
    uint8_t b[64];
    size_t n = capture(MSG_ABORT, "truncate me", 11, b, sizeof(b));
    expect_read_error(b, n - 4, MSG_E_TRUNCATED,
                      "migration stream truncated: ABORT message ended after 7 of 11 payload bytes");
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

    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(msg_write(p[1], MSG_STATE, b, MSG_MAX_PAYLOAD + 1), -EMSGSIZE);
    assert_int_equal(msg_write(p[1], 99, NULL, 0), -EINVAL);
    close(p[0]);
    close(p[1]);
}

/* Write what b holds as one message and read it back. */
static void loop_back(uint16_t type, const struct buf *b, struct msg *m)
{
    int p[2];
    char err[256];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(msg_write(p[1], type, b->data, (uint32_t)b->len), 0);
    assert_int_equal(msg_read(p[0], m, err, sizeof(err)), 0);
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
    uint32_t v;
    char *json, err[256];
    assert_int_equal(hello_decode(&m, &v, &json, err, sizeof(err)), 0);
    assert_int_equal(v, MIG_PROTO_VERSION);
    assert_string_equal(json, cfg);
    free(json);

    /* a newer minor is fine, another major is not */
    buf_patch_u32(&b, 0, MIG_PROTO_MAJOR << 16 | 5);
    memcpy(m.payload, b.data, 4);
    assert_int_equal(hello_decode(&m, &v, &json, err, sizeof(err)), 0);
    free(json);
    buf_patch_u32(&b, 0, 2u << 16);
    memcpy(m.payload, b.data, 4);
    assert_int_equal(hello_decode(&m, &v, &json, err, sizeof(err)), -1);
    assert_string_equal(err, "incompatible migration protocol version 2.0 (this side speaks 1.1)");
    assert_null(json);
    msg_free(&m);
    buf_free(&b);
}

struct seen {
    int n;
    uint64_t gpa[8];
    const uint8_t *data[8];
};

static int collect(uint64_t gpa, const void *data, void *ctx, char *err, size_t errlen)
{
    struct seen *s = ctx;
    s->gpa[s->n] = gpa;
    s->data[s->n++] = data;
    return 0;
}

static void test_mem_pages(void **state)
{
    static uint8_t zero[MIG_PAGE_SIZE], data[MIG_PAGE_SIZE], tail[MIG_PAGE_SIZE];
    for (size_t i = 0; i < MIG_PAGE_SIZE; i++)
        data[i] = (uint8_t)(i ^ 0x5a);
    tail[MIG_PAGE_SIZE - 1] = 1;        /* non-zero only in its very last byte */

    struct buf b = { 0 };
    struct stream_stats tx = { 0 }, rx = { 0 };
    assert_int_equal(pages_batch_add(&b, 0x0, zero, &tx), 0);
    assert_int_equal(pages_batch_add(&b, 0x1000, data, &tx), 0);
    assert_int_equal(pages_batch_add(&b, 0x7fff000, zero, &tx), 0);
    assert_int_equal(pages_batch_add(&b, 0x100000000ull, tail, &tx), 0);
    assert_int_equal(pages_batch_add(&b, 0x1800, data, &tx), -EINVAL);
    /* zero pages cost a 9-byte marker, not 4 KiB */
    assert_int_equal(b.len, 4 + 4 * 9 + 2 * MIG_PAGE_SIZE);
    assert_int_equal(tx.pages, 4);
    assert_int_equal(tx.zero_pages, 2);
    assert_int_equal(tx.bytes, b.len);

    struct msg m;
    loop_back(MSG_MEM_PAGES, &b, &m);
    struct seen s = { 0 };
    char err[256];
    assert_int_equal(pages_batch_parse(&m, collect, &s, &rx, err, sizeof(err)), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.gpa[0], 0);
    assert_null(s.data[0]);
    assert_int_equal(s.gpa[1], 0x1000);
    assert_memory_equal(s.data[1], data, MIG_PAGE_SIZE);
    assert_int_equal(s.gpa[2], 0x7fff000);
    assert_null(s.data[2]);
    assert_int_equal(s.gpa[3], 0x100000000ull);
    assert_memory_equal(s.data[3], tail, MIG_PAGE_SIZE);
    assert_memory_equal(&rx, &tx, sizeof(rx));
    msg_free(&m);
    buf_free(&b);
}

/* Parse hand-made MEM_PAGES payload bytes; expect failure before any callback. */
static void expect_pages_error(const struct buf *b, const char *msg)
{
    struct msg m = { .type = MSG_MEM_PAGES, .len = (uint32_t)b->len, .payload = b->data };
    struct seen s = { 0 };
    char err[256] = "";
    assert_int_equal(pages_batch_parse(&m, collect, &s, NULL, err, sizeof(err)), -1);
    assert_string_equal(err, msg);
    assert_int_equal(s.n, 0);
}

static void test_mem_pages_malformed(void **state)
{
    static uint8_t page[MIG_PAGE_SIZE];
    struct buf b = { 0 };

    /* good page, then a zero marker at a misaligned gpa */
    page[0] = 1;
    assert_int_equal(pages_batch_add(&b, 0x2000, page, NULL), 0);
    buf_patch_u32(&b, 0, 2);
    buf_put_u64(&b, 0x3004);
    buf_put_u8(&b, PAGE_F_ZERO);
    expect_pages_error(&b, "MEM_PAGES: page 1 at gpa 0x3004 is not 4 KiB aligned");

    /* count larger than the records present */
    b.len -= 9;
    buf_patch_u32(&b, 0, 3);
    expect_pages_error(&b, "MEM_PAGES: batch claims 3 pages but its 4109 bytes end in page 1");

    /* bytes after the last record */
    buf_patch_u32(&b, 0, 1);
    buf_put_u8(&b, 0);
    expect_pages_error(&b, "MEM_PAGES: 1 bytes after the last of 1 pages");

    /* unknown flag bits */
    b.len -= 1;
    b.data[4 + 8] = 0x80;
    expect_pages_error(&b, "MEM_PAGES: page 0 has unknown flags 0x80");

    /* no count at all */
    b.len = 2;
    expect_pages_error(&b, "MEM_PAGES: payload of 2 bytes has no page count");
    buf_free(&b);
}

static int refuse(uint64_t gpa, const void *data, void *ctx, char *err, size_t errlen)
{
    return -1;
}

static void test_mem_pages_callback_error(void **state)
{
    static uint8_t zero[MIG_PAGE_SIZE];
    struct buf b = { 0 };
    assert_int_equal(pages_batch_add(&b, 0xfee00000, zero, NULL), 0);
    struct msg m = { .type = MSG_MEM_PAGES, .len = (uint32_t)b.len, .payload = b.data };
    char err[256];
    assert_int_equal(pages_batch_parse(&m, refuse, NULL, NULL, err, sizeof(err)), -1);
    assert_string_equal(err, "MEM_PAGES: page at gpa 0xfee00000 rejected");
    m.type = MSG_STATE;
    assert_int_equal(pages_batch_parse(&m, refuse, NULL, NULL, err, sizeof(err)), -1);
    assert_string_equal(err, "expected a MEM_PAGES message, got STATE");
    buf_free(&b);
}

static void test_batch_limit(void **state)
{
    static uint8_t page[MIG_PAGE_SIZE];
    page[100] = 7;
    struct buf b = { 0 };
    int ret;
    uint64_t gpa = 0;
    while ((ret = pages_batch_add(&b, gpa, page, NULL)) == 0)
        gpa += MIG_PAGE_SIZE;
    assert_int_equal(ret, -E2BIG);
    assert_true(b.len <= MSG_MAX_PAYLOAD);
    assert_true(b.len + 9 + MIG_PAGE_SIZE > MSG_MAX_PAYLOAD);
    assert_int_equal(le32_load(b.data), gpa / MIG_PAGE_SIZE);
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
    msg_free(&m);
    buf_free(&b);
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
        cmocka_unit_test(test_mem_pages),
        cmocka_unit_test(test_mem_pages_malformed),
        cmocka_unit_test(test_mem_pages_callback_error),
        cmocka_unit_test(test_batch_limit),
        cmocka_unit_test(test_ack_and_digest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
