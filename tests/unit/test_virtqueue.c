/* Split virtqueues (devices/virtqueue.c) over a fake guest RAM: ring mapping
 * checks, chain walking (direct, indirect, readable/writable order), every
 * bounds check a hostile driver can hit, used-ring updates and the
 * interrupt / notification suppression rules (with and without EVENT_IDX). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "devices/virtqueue.h"

#define RAM   (1u << 20)
#define QSZ   8
#define DESC  0x1000
#define AVAIL 0x2000
#define USED  0x3000
#define BUF   0x10000

static uint8_t ram[RAM] __attribute__((aligned(4096)));
static struct guest_mem mem;
static struct virtq q;
static struct virtq_elem e;
static char err[200];

static void put16(uint64_t gpa, uint16_t v) { memcpy(ram + gpa, &v, 2); }
static uint16_t get16(uint64_t gpa) { uint16_t v; memcpy(&v, ram + gpa, 2); return v; }
static uint32_t get32(uint64_t gpa) { uint32_t v; memcpy(&v, ram + gpa, 4); return v; }

static void desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    struct virtq_desc d = { addr, len, flags, next };
    memcpy(ram + table + 16 * i, &d, 16);
}

/* Offer chain `head` in the next avail slot. */
static void offer(uint16_t head)
{
    uint16_t idx = get16(AVAIL + 2);
    put16(AVAIL + 4 + 2 * (idx % QSZ), head);
    put16(AVAIL + 2, (uint16_t)(idx + 1));
}

static int setup(void **state)
{
    memset(ram, 0, sizeof(ram));
    gmem_init_fake(&mem, RAM, ram);
    memset(&q, 0, sizeof(q));
    q.size = QSZ;
    q.desc_gpa = DESC;
    q.avail_gpa = AVAIL;
    q.used_gpa = USED;
    q.indirect = true;
    assert_int_equal(virtq_map(&q, &mem, err, sizeof(err)), 0);
    return 0;
}

static void test_map_checks(void **state)
{
    struct virtq b = q;
    b.size = 6;
    assert_int_equal(virtq_map(&b, &mem, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "power of two"));
    b = q;
    b.desc_gpa = DESC + 8;
    assert_int_equal(virtq_map(&b, &mem, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "misaligned"));
    b = q;
    b.used_gpa = RAM - 8;   /* used ring runs past RAM */
    assert_int_equal(virtq_map(&b, &mem, err, sizeof(err)), -1);
    assert_null(b.desc);
    b = q;
    b.size = 0;
    assert_int_equal(virtq_map(&b, &mem, err, sizeof(err)), -1);
}

static void test_empty(void **state)
{
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 0);
    assert_int_equal(virtq_pending(&q), 0);
}

static void test_direct_chain(void **state)
{
    /* header (readable) -> data (writable) -> status (writable) */
    desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 3);
    desc(DESC, 3, BUF + 0x1000, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 5);
    desc(DESC, 5, BUF + 0x3000, 1, VIRTQ_DESC_F_WRITE, 0);
    memcpy(ram + BUF, "0123456789abcdef", 16);
    offer(0);
    assert_int_equal(virtq_pending(&q), 1);
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 1);
    assert_int_equal(e.head, 0);
    assert_int_equal(e.nout, 1);
    assert_int_equal(e.nin, 2);
    assert_int_equal(e.out_bytes, 16);
    assert_int_equal(e.in_bytes, 4097);
    assert_ptr_equal(e.seg[1].hva, ram + BUF + 0x1000);
    char hdr[8];
    assert_int_equal(virtq_read_out(&e, 4, hdr, 8), 8);
    assert_memory_equal(hdr, "456789ab", 8);
    assert_int_equal(q.last_avail_idx, 1);
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 0);

    /* used ring: id and length, then the index */
    virtq_push(&q, e.head, 4097);
    assert_int_equal(get16(USED + 2), 1);
    assert_int_equal(get32(USED + 4), 0);
    assert_int_equal(get32(USED + 8), 4097);
    assert_true(virtq_need_interrupt(&q, 0));
    assert_false(virtq_need_interrupt(&q, 1));   /* nothing new */
}

static void test_header_split_across_buffers(void **state)
{
    desc(DESC, 0, BUF, 6, VIRTQ_DESC_F_NEXT, 1);
    desc(DESC, 1, BUF + 100, 10, VIRTQ_DESC_F_NEXT, 2);
    desc(DESC, 2, BUF + 200, 1, VIRTQ_DESC_F_WRITE, 0);
    memcpy(ram + BUF, "abcdef", 6);
    memcpy(ram + BUF + 100, "ghijklmnop", 10);
    offer(0);
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 1);
    char h[16];
    assert_int_equal(virtq_read_out(&e, 0, h, 16), 16);
    assert_memory_equal(h, "abcdefghijklmnop", 16);
    assert_int_equal(virtq_read_out(&e, 10, h, 16), 6);  /* only 6 left */
}

static void test_indirect(void **state)
{
    uint64_t table = 0x5000;
    desc(table, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
    desc(table, 1, BUF + 0x1000, 512, VIRTQ_DESC_F_NEXT, 2);
    desc(table, 2, BUF + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
    desc(DESC, 4, table, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
    offer(4);
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 1);
    assert_int_equal(e.head, 4);
    assert_int_equal(e.nout, 2);
    assert_int_equal(e.nin, 1);
    assert_int_equal(e.out_bytes, 528);
}

/* A malformed ring marks the queue broken and says why. */
static void expect_broken(const char *why)
{
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), -1);
    assert_true(q.broken);
    assert_non_null(strstr(err, why));
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 0);   /* stays quiet afterwards */
}

static void test_head_out_of_range(void **state)
{
    offer(QSZ);
    expect_broken("names descriptor");
}

static void test_avail_idx_jump(void **state)
{
    put16(AVAIL + 2, QSZ + 1);
    expect_broken("ahead");
}

static void test_next_out_of_range(void **state)
{
    desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT, QSZ);
    offer(0);
    expect_broken("out of range");
}

static void test_loop(void **state)
{
    desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
    desc(DESC, 1, BUF, 16, VIRTQ_DESC_F_NEXT, 0);
    offer(0);
    expect_broken("loops");
}

static void test_buffer_outside_ram(void **state)
{
    desc(DESC, 0, RAM - 8, 16, 0, 0);
    offer(0);
    expect_broken("outside RAM");
}

static void test_buffer_wraps(void **state)
{
    desc(DESC, 0, UINT64_MAX - 4, 16, 0, 0);
    offer(0);
    expect_broken("outside RAM");
}

static void test_readable_after_writable(void **state)
{
    desc(DESC, 0, BUF, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    desc(DESC, 1, BUF + 16, 16, 0, 0);
    offer(0);
    expect_broken("readable buffer after a writable");
}

static void test_indirect_without_feature(void **state)
{
    q.indirect = false;
    desc(DESC, 0, 0x5000, 32, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    expect_broken("without the feature");
}

static void test_nested_indirect(void **state)
{
    desc(0x5000, 0, 0x6000, 16, VIRTQ_DESC_F_INDIRECT, 0);
    desc(DESC, 0, 0x5000, 16, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    expect_broken("nested");
}

static void test_indirect_with_next(void **state)
{
    desc(DESC, 0, 0x5000, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
    offer(0);
    expect_broken("also has NEXT");
}

static void test_indirect_bad_len(void **state)
{
    desc(DESC, 0, 0x5000, 24, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    expect_broken("indirect table");
}

static void test_indirect_loop(void **state)
{
    desc(0x5000, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
    desc(0x5000, 1, BUF, 16, VIRTQ_DESC_F_NEXT, 0);
    desc(DESC, 0, 0x5000, 32, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    expect_broken("loops");
}

static void test_too_many_segments(void **state)
{
    /* an indirect table longer than VIRTQ_MAX_SEGS buffers */
    uint64_t table = 0x20000;
    unsigned n = VIRTQ_MAX_SEGS + 1;
    for (unsigned i = 0; i < n; i++)
        desc(table, i, BUF, 1, i + 1 < n ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
    desc(DESC, 0, table, 16 * n, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    expect_broken("more than");
}

static void test_zero_length_skipped(void **state)
{
    desc(DESC, 0, BUF, 0, VIRTQ_DESC_F_NEXT, 1);
    desc(DESC, 1, BUF, 4, VIRTQ_DESC_F_WRITE, 0);
    offer(0);
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 1);
    assert_int_equal(e.nout, 0);
    assert_int_equal(e.nin, 1);
}

static void test_ring_wraps(void **state)
{
    desc(DESC, 0, BUF, 1, VIRTQ_DESC_F_WRITE, 0);
    for (unsigned i = 0; i < 3 * QSZ + 3; i++) {
        offer(0);
        assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 1);
        virtq_push(&q, 0, 1);
    }
    assert_int_equal(q.last_avail_idx, 3 * QSZ + 3);
    assert_int_equal(get16(USED + 2), 3 * QSZ + 3);
    /* 16-bit index wrap */
    q.last_avail_idx = q.used_idx = 0xffff;
    put16(AVAIL + 2, 0xffff);
    offer(0);
    assert_int_equal(get16(AVAIL + 2), 0);
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 1);
    assert_int_equal(q.last_avail_idx, 0);
    virtq_push(&q, 0, 1);
    assert_int_equal(get16(USED + 2), 0);
}

static void test_no_interrupt_flag(void **state)
{
    put16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
    virtq_push(&q, 0, 0);
    assert_false(virtq_need_interrupt(&q, 0));
}

static void test_event_idx(void **state)
{
    q.event_idx = true;
    /* used_event (after the avail ring) = 2: interrupt when used idx passes 2 */
    put16(AVAIL + 4 + 2 * QSZ, 2);
    virtq_push(&q, 0, 0);          /* 0 -> 1 */
    assert_false(virtq_need_interrupt(&q, 0));
    virtq_push(&q, 0, 0);          /* 1 -> 2 */
    assert_false(virtq_need_interrupt(&q, 1));
    virtq_push(&q, 0, 0);          /* 2 -> 3: crosses the event */
    assert_true(virtq_need_interrupt(&q, 2));
    /* a batch that crosses it */
    put16(AVAIL + 4 + 2 * QSZ, 4);
    virtq_push(&q, 0, 0);
    virtq_push(&q, 0, 0);          /* 3 -> 5 */
    assert_true(virtq_need_interrupt(&q, 3));
    /* the flag is ignored with EVENT_IDX */
    put16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
    put16(AVAIL + 4 + 2 * QSZ, 5);
    virtq_push(&q, 0, 0);
    assert_true(virtq_need_interrupt(&q, 5));
}

static void test_arm_notify(void **state)
{
    q.event_idx = true;
    q.last_avail_idx = 0;
    assert_false(virtq_arm_notify(&q));
    assert_int_equal(get16(USED + 4 + 8 * QSZ), 0);   /* avail_event */
    desc(DESC, 0, BUF, 1, VIRTQ_DESC_F_WRITE, 0);
    offer(0);
    assert_true(virtq_arm_notify(&q));
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 1);
    assert_false(virtq_arm_notify(&q));
    assert_int_equal(get16(USED + 4 + 8 * QSZ), 1);
}

static void test_dirty_marking(void **state)
{
    /* with tracking on, pushes and written buffers land in the device dirty map */
    uint64_t bits[RAM / 4096 / 64] = { 0 };
    mem.dev_dirty[0] = bits;
    atomic_store(&mem.dev_tracking, true);
    desc(DESC, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
    desc(DESC, 1, BUF + 0x4000, 0x2000, VIRTQ_DESC_F_WRITE, 0);
    offer(0);
    assert_int_equal(virtq_pop(&q, &e, err, sizeof(err)), 1);
    virtq_mark_written(&q, &e, 0x1001);
    virtq_push(&q, e.head, 0x1001);
    unsigned pg_buf = (BUF + 0x4000) / 4096, pg_used = USED / 4096;
    assert_true(bits[pg_buf / 64] & (1ull << (pg_buf % 64)));
    assert_true(bits[(pg_buf + 1) / 64] & (1ull << ((pg_buf + 1) % 64)));
    assert_true(bits[pg_used / 64] & (1ull << (pg_used % 64)));
    assert_false(bits[BUF / 4096 / 64] & (1ull << (BUF / 4096 % 64)));   /* only read */
    atomic_store(&mem.dev_tracking, false);
    mem.dev_dirty[0] = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_map_checks, setup),
        cmocka_unit_test_setup(test_empty, setup),
        cmocka_unit_test_setup(test_direct_chain, setup),
        cmocka_unit_test_setup(test_header_split_across_buffers, setup),
        cmocka_unit_test_setup(test_indirect, setup),
        cmocka_unit_test_setup(test_head_out_of_range, setup),
        cmocka_unit_test_setup(test_avail_idx_jump, setup),
        cmocka_unit_test_setup(test_next_out_of_range, setup),
        cmocka_unit_test_setup(test_loop, setup),
        cmocka_unit_test_setup(test_buffer_outside_ram, setup),
        cmocka_unit_test_setup(test_buffer_wraps, setup),
        cmocka_unit_test_setup(test_readable_after_writable, setup),
        cmocka_unit_test_setup(test_indirect_without_feature, setup),
        cmocka_unit_test_setup(test_nested_indirect, setup),
        cmocka_unit_test_setup(test_indirect_with_next, setup),
        cmocka_unit_test_setup(test_indirect_bad_len, setup),
        cmocka_unit_test_setup(test_indirect_loop, setup),
        cmocka_unit_test_setup(test_too_many_segments, setup),
        cmocka_unit_test_setup(test_zero_length_skipped, setup),
        cmocka_unit_test_setup(test_ring_wraps, setup),
        cmocka_unit_test_setup(test_no_interrupt_flag, setup),
        cmocka_unit_test_setup(test_event_idx, setup),
        cmocka_unit_test_setup(test_arm_notify, setup),
        cmocka_unit_test_setup(test_dirty_marking, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
