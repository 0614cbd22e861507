/* DISK_BLOCKS and DISK_DIGEST (migration/disks.h): pieces written where they
 * say, holes punched, the digest matching a copy and naming where it does
 * not, and every malformed piece refused before anything is written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "migration/disks.h"

#define SIZE ((3u << 20) + 8192u)   /* 4 chunks, the last one short, its last block short */

static int tmp_file(uint64_t size)
{
    char path[] = "/tmp/ferry-test-disks.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    return fd;
}

static void fill(int fd, uint64_t off, size_t len, uint8_t v)
{
    uint8_t *b = malloc(len);
    memset(b, v, len);
    assert_int_equal(pwrite(fd, b, len, (off_t)off), (ssize_t)len);
    free(b);
}

/* Send [off, off + len) of src (as data, or ZERO) into the channel file ch. */
static void send_piece(int ch, int src, uint64_t off, size_t len, bool zero)
{
    uint8_t *b = malloc(len);
    assert_int_equal(pread(src, b, len, (off_t)off), (ssize_t)len);
    struct chan c = CHAN_PLAIN(ch);
    uint64_t wire;
    char err[256];
    assert_int_equal(disk_blocks_send(&c, 0, off, b, len, zero, &wire, err, sizeof(err)), 0);
    assert_int_equal(wire, MSG_HEADER_SIZE + DISK_HEAD + (zero ? 0 : len));
    free(b);
}

/* Receive every message in the channel file into sink; returns how many failed. */
static int receive_all(int ch, struct disk_sink *sink, char *err, size_t errlen)
{
    struct chan c = CHAN_PLAIN(ch);
    struct disks_rx rx = { 0 };
    struct msg m;
    int bad = 0;
    lseek(ch, 0, SEEK_SET);
    while (msg_read_header(&c, &m, err, errlen) == 0) {
        assert_int_equal(m.type, MSG_DISK_BLOCKS);
        if (disks_rx_recv(&rx, sink, &c, &m, err, errlen) < 0) {
            bad++;
            break;   /* out of sync after a refusal, as on a real stream */
        }
    }
    disks_rx_free(&rx);
    return bad;
}

static void same_content(int a, int b)
{
    uint8_t *x = malloc(SIZE), *y = malloc(SIZE);
    assert_int_equal(pread(a, x, SIZE, 0), SIZE);
    assert_int_equal(pread(b, y, SIZE, 0), SIZE);
    assert_memory_equal(x, y, SIZE);
    free(x);
    free(y);
}

static void test_roundtrip_and_digest(void **state)
{
    (void)state;
    int src = tmp_file(SIZE), dst = tmp_file(SIZE), ch = tmp_file(0);
    fill(src, 0, 65536, 0x11);                       /* chunk 0, block 0 */
    fill(src, (1u << 20) + 65536, 131072, 0x22);     /* chunk 1, blocks 1-2 */
    fill(src, SIZE - 8192, 8192, 0x33);              /* the last, short, block */
    fill(dst, 2u << 20, 65536, 0x44);                /* stale data the source has as a hole */
    send_piece(ch, src, 0, 65536, false);
    send_piece(ch, src, (1u << 20) + 65536, 131072, false);
    send_piece(ch, src, 2u << 20, 65536, true);
    send_piece(ch, src, 3u << 20, 8192, false);
    struct disk_sink sink = { 0 };
    char err[256] = "";
    assert_int_equal(disk_sink_add(&sink, dst, "/ds2/vm.img", SIZE), 0);
    assert_int_equal(receive_all(ch, &sink, err, sizeof(err)), 0);
    same_content(src, dst);

    struct buf b = { 0 };
    assert_int_equal(disk_digest_encode(&b, 0, src, SIZE, err, sizeof(err)), 0);
    assert_int_equal(b.len, 16 + 4 * 8);
    struct msg m = { .type = MSG_DISK_DIGEST, .len = (uint32_t)b.len, .payload = b.data };
    assert_int_equal(disk_digest_check(&sink, &m, err, sizeof(err)), 0);
    buf_free(&b);

    /* a block the copy missed is found, and where */
    fill(src, (1u << 20) + 4096, 1, 0x55);
    assert_int_equal(disk_digest_encode(&b, 0, src, SIZE, err, sizeof(err)), 0);
    m.payload = b.data;
    assert_int_equal(disk_digest_check(&sink, &m, err, sizeof(err)), -1);
    assert_string_equal(err, "disk digest mismatch: disk 0 (/ds2/vm.img) at offset 1048576 (chunk 1 of 4)");
    buf_free(&b);
    disk_sink_free(&sink);
    close(src);
    close(dst);
    close(ch);
}

/* A crafted DISK_BLOCKS head (and body bytes) into the channel file. */
static void send_raw(int ch, uint32_t disk, uint32_t flags, uint64_t off, uint64_t len, uint32_t body)
{
    uint8_t h[DISK_HEAD];
    memcpy(h, &disk, 4);
    memcpy(h + 4, &flags, 4);
    memcpy(h + 8, &off, 8);
    memcpy(h + 16, &len, 8);
    uint8_t *p = calloc(1, DISK_HEAD + body);
    memcpy(p, h, DISK_HEAD);
    memset(p + DISK_HEAD, 0x77, body);
    struct chan c = CHAN_PLAIN(ch);
    assert_int_equal(msg_write(&c, MSG_DISK_BLOCKS, p, DISK_HEAD + body), 0);
    free(p);
}

static void test_bad_pieces(void **state)
{
    (void)state;
    static const struct { uint32_t disk, flags; uint64_t off, len; uint32_t body; } bad[] = {
        { 1, 0, 0, 65536, 65536 },                        /* no such disk */
        { 0, 2, 0, 65536, 65536 },                        /* unknown flag */
        { 0, 0, 4096, 65536, 65536 },                     /* not on a block boundary */
        { 0, 0, 0, 65536 + 4096, 65536 + 4096 },          /* does not end on one */
        { 0, 0, (1u << 20) - 65536, 131072, 131072 },     /* crosses a chunk */
        { 0, 0, 3u << 20, 65536, 65536 },                 /* past the end */
        { 0, 0, 0, 0, 0 },                                /* empty */
        { 0, 0, 0, 65536, 4096 },                         /* body shorter than the length */
        { 0, DISK_F_ZERO, 0, 65536, 4096 },               /* a ZERO piece with data */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int dst = tmp_file(SIZE), ch = tmp_file(0);
        fill(dst, 0, 65536, 0x11);
        send_raw(ch, bad[i].disk, bad[i].flags, bad[i].off, bad[i].len, bad[i].body);
        struct disk_sink sink = { 0 };
        char err[256] = "";
        assert_int_equal(disk_sink_add(&sink, dst, "/ds2/vm.img", SIZE), 0);
        assert_int_equal(receive_all(ch, &sink, err, sizeof(err)), 1);
        assert_non_null(strstr(err, "DISK_BLOCKS: bad piece"));
        uint8_t b[65536], want[65536];
        memset(want, 0x11, sizeof(want));
        assert_int_equal(pread(dst, b, sizeof(b), 0), (ssize_t)sizeof(b));
        assert_memory_equal(b, want, sizeof(b));   /* nothing written */
        disk_sink_free(&sink);
        close(dst);
        close(ch);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_digest),
        cmocka_unit_test(test_bad_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
