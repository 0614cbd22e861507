/* Versioned state tables: round trips, version rules, and loads that must
 * fail without touching the target object. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "migration/vmstate.h"

struct inner {
    uint32_t a;
    uint16_t b;
    uint64_t c;
};

struct dev {
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    uint8_t blob[13];
    uint64_t regs[4];
    struct inner in;
    struct inner ins[2];
    uint32_t nq;
    uint16_t q[8];
    uint32_t nrec;
    struct inner recs[4];
    uint64_t added_v2;
};

static const struct vmstate_field inner_fields[] = {
    VMSTATE_U32(struct inner, a),
    VMSTATE_U16(struct inner, b),
    VMSTATE_U64(struct inner, c),
    VMSTATE_END,
};
static const struct vmstate_desc inner_desc = {
    .name = "inner", .version = 1, .min_version = 1, .fields = inner_fields,
    .size = sizeof(struct inner),
};

/* "inner" as a later release might write it: c arrived in version 2. */
static const struct vmstate_field inner2_fields[] = {
    VMSTATE_U32(struct inner, a),
    VMSTATE_U16(struct inner, b),
    VMSTATE_U64_V(struct inner, c, 2),
    VMSTATE_END,
};
static const struct vmstate_desc inner2_desc = {
    .name = "inner", .version = 2, .min_version = 1, .fields = inner2_fields,
};

#define DEV_V1_FIELDS(max_q, indesc)                              \
    VMSTATE_U8(struct dev, u8),                                   \
    VMSTATE_U16(struct dev, u16),                                 \
    VMSTATE_U32(struct dev, u32),                                 \
    VMSTATE_U64(struct dev, u64),                                 \
    VMSTATE_BYTES(struct dev, blob),                              \
    VMSTATE_ARRAY_U64(struct dev, regs),                          \
    VMSTATE_STRUCT(struct dev, in, indesc),                       \
    VMSTATE_ARRAY_STRUCT(struct dev, ins, indesc),                \
    VMSTATE_VARRAY_U32(struct dev, q, nq, max_q),                 \
    VMSTATE_VARRAY_U32_STRUCT(struct dev, recs, nrec, 4, indesc)

static const struct vmstate_field dev_v1_fields[] = { DEV_V1_FIELDS(8, inner_desc), VMSTATE_END };
static const struct vmstate_desc dev_v1 = {
    .name = "dev", .version = 1, .min_version = 1, .fields = dev_v1_fields, .size = sizeof(struct dev),
};

static const struct vmstate_field dev_v2_fields[] = {
    DEV_V1_FIELDS(8, inner_desc),
    VMSTATE_U64_V(struct dev, added_v2, 2),
    VMSTATE_END,
};
static const struct vmstate_desc dev_v2 = {
    .name = "dev", .version = 2, .min_version = 1, .fields = dev_v2_fields, .size = sizeof(struct dev),
};

/* Same section, but a reader that only has room for 4 queue entries. */
static const struct vmstate_field dev_smallq_fields[] = { DEV_V1_FIELDS(4, inner_desc), VMSTATE_END };
static const struct vmstate_desc dev_smallq = {
    .name = "dev", .version = 1, .min_version = 1, .fields = dev_smallq_fields,
};

/* A writer whose nested "inner" is at version 2. */
static const struct vmstate_field dev_inner2_fields[] = { DEV_V1_FIELDS(8, inner2_desc), VMSTATE_END };
static const struct vmstate_desc dev_inner2 = {
    .name = "dev", .version = 1, .min_version = 1, .fields = dev_inner2_fields,
};

static const struct vmstate_desc dev_other_name = {
    .name = "other", .version = 1, .min_version = 1, .fields = dev_v1_fields,
};

static void fill(struct dev *d)
{
    memset(d, 0, sizeof(*d));
    d->u8 = 0xa5;
    d->u16 = 0xbeef;
    d->u32 = 0xdeadbeef;
    d->u64 = 0x0123456789abcdefull;
    for (int i = 0; i < 13; i++)
        d->blob[i] = (uint8_t)(i * 7 + 1);
    for (int i = 0; i < 4; i++)
        d->regs[i] = 0x1111111111111111ull * (uint64_t)(i + 1);
    d->in = (struct inner){ 1, 2, 3 };
    d->ins[0] = (struct inner){ 4, 5, 6 };
    d->ins[1] = (struct inner){ 7, 8, 0xffffffffffffffffull };
    d->nq = 3;
    d->q[0] = 10, d->q[1] = 11, d->q[2] = 12;
    d->nrec = 2;
    d->recs[0] = (struct inner){ 100, 101, 102 };
    d->recs[1] = (struct inner){ 200, 201, 202 };
    d->added_v2 = 0x4242;
}

static void save(const struct vmstate_desc *desc, const struct dev *d, struct buf *b)
{
    assert_int_equal(vmstate_save(desc, d, b), 0);
}

/* Load must fail with the given message and leave the target untouched. */
static void expect_fail(const struct vmstate_desc *desc, const uint8_t *p, size_t n, const char *msg)
{
    struct dev target, before;
    memset(&target, 0x5a, sizeof(target));
    before = target;
    char err[256] = "";
    struct rbuf r = RBUF(p, n);
    assert_int_equal(vmstate_load(desc, &target, &r, err, sizeof(err)), -1);
    assert_string_equal(err, msg);
    assert_memory_equal(&target, &before, sizeof(target));
    assert_int_equal(r.off, 0);
}

static void test_round_trip(void **state)
{
    struct dev a, b;
    fill(&a);
    struct buf out = { 0 };
    save(&dev_v2, &a, &out);
    /* header: name "dev", version 2, payload length */
    assert_int_equal(out.data[0], 3);
    assert_memory_equal(out.data + 1, "dev", 3);
    assert_int_equal(le32_load(out.data + 4), 2);
    assert_int_equal(le32_load(out.data + 8), out.len - 12);
    /* fields are little-endian in table order */
    assert_int_equal(out.data[12], 0xa5);
    assert_int_equal(le16_load(out.data + 13), 0xbeef);
    assert_int_equal(le32_load(out.data + 15), 0xdeadbeef);

    memset(&b, 0, sizeof(b));
    char err[256] = "";
    struct rbuf r = RBUF(out.data, out.len);
    assert_int_equal(vmstate_load(&dev_v2, &b, &r, err, sizeof(err)), 0);
    assert_int_equal(r.off, out.len);
    assert_memory_equal(&a, &b, sizeof(a));
    buf_free(&out);
}

static void test_varray_writes_only_count(void **state)
{
    struct dev a, b;
    fill(&a);
    a.q[5] = 99;                    /* beyond nq: not part of the state */
    struct buf out = { 0 };
    save(&dev_v1, &a, &out);
    memset(&b, 0, sizeof(b));
    b.q[5] = 7;
    char err[256];
    struct rbuf r = RBUF(out.data, out.len);
    assert_int_equal(vmstate_load(&dev_v1, &b, &r, err, sizeof(err)), 0);
    assert_int_equal(b.nq, 3);
    assert_int_equal(b.q[2], 12);
    assert_int_equal(b.q[5], 7);
    assert_int_equal(b.nrec, 2);
    assert_int_equal(b.recs[1].c, 202);
    buf_free(&out);
}

static void test_old_stream_new_desc(void **state)
{
    struct dev a, b;
    fill(&a);
    struct buf out = { 0 };
    save(&dev_v1, &a, &out);
    memset(&b, 0, sizeof(b));
    b.added_v2 = 0x77;              /* the default the destination chose */
    char err[256] = "";
    struct rbuf r = RBUF(out.data, out.len);
    assert_int_equal(vmstate_load(&dev_v2, &b, &r, err, sizeof(err)), 0);
    assert_int_equal(b.added_v2, 0x77);
    a.added_v2 = 0x77;
    assert_memory_equal(&a, &b, sizeof(a));
    buf_free(&out);
}

static void test_newer_version_rejected(void **state)
{
    struct dev a;
    fill(&a);
    struct buf out = { 0 };
    save(&dev_v2, &a, &out);
    expect_fail(&dev_v1, out.data, out.len, "state section 'dev': version 2 newer than supported 1");
    buf_free(&out);
}

static void test_older_than_min_rejected(void **state)
{
    struct dev a;
    fill(&a);
    struct buf out = { 0 };
    save(&dev_v1, &a, &out);
    struct vmstate_desc v2only = dev_v2;
    v2only.min_version = 2;
    expect_fail(&v2only, out.data, out.len,
                "state section 'dev': version 1 older than oldest supported 2");
    buf_free(&out);
}

static void test_nested_newer_rejected(void **state)
{
    struct dev a;
    fill(&a);
    struct buf out = { 0 };
    save(&dev_inner2, &a, &out);
    expect_fail(&dev_v1, out.data, out.len,
                "state section 'dev': field 'in': struct 'inner' version 2 newer than supported 1");
    buf_free(&out);
}

static void test_truncated(void **state)
{
    struct dev a;
    fill(&a);
    struct buf out = { 0 };
    save(&dev_v1, &a, &out);
    /* every proper prefix fails cleanly */
    for (size_t n = 0; n < out.len; n++) {
        struct dev target, before;
        memset(&target, 0x33, sizeof(target));
        before = target;
        char err[256] = "";
        struct rbuf r = RBUF(out.data, n);
        assert_int_equal(vmstate_load(&dev_v1, &target, &r, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "truncated"));
        assert_memory_equal(&target, &before, sizeof(target));
    }
    expect_fail(&dev_v1, out.data, 20, "state section 'dev': truncated (payload of 184 bytes, 8 left)");
    buf_free(&out);
}

static void test_payload_length_exact(void **state)
{
    struct dev a;
    fill(&a);
    struct buf out = { 0 };
    save(&dev_v1, &a, &out);
    /* claim one more payload byte than the fields use */
    buf_put_u8(&out, 0);
    buf_patch_u32(&out, 8, le32_load(out.data + 8) + 1);
    expect_fail(&dev_v1, out.data, out.len,
                "state section 'dev': 1 unexpected bytes after the last field");
    /* claim one less: the last field runs past the payload */
    buf_patch_u32(&out, 8, le32_load(out.data + 8) - 2);
    expect_fail(&dev_v1, out.data, out.len, "state section 'dev': field 'recs[1]': truncated (payload of 14 bytes, 13 left)");
    buf_free(&out);
}

static void test_varray_over_max(void **state)
{
    struct dev a;
    fill(&a);
    a.nq = 6;
    struct buf out = { 0 };
    save(&dev_v1, &a, &out);
    expect_fail(&dev_smallq, out.data, out.len, "state section 'dev': field 'q': count 6 exceeds maximum 4");

    /* and save refuses a count above the table's max */
    a.nq = 9;
    size_t len = out.len;
    assert_int_equal(vmstate_save(&dev_v1, &a, &out), -22);
    assert_int_equal(out.len, len);
    buf_free(&out);
}

static void test_name_mismatch(void **state)
{
    struct dev a;
    fill(&a);
    struct buf out = { 0 };
    save(&dev_v1, &a, &out);
    expect_fail(&dev_other_name, out.data, out.len, "state section 'dev': expected 'other'");
    out.data[2] = 0x01;     /* a non-printable name is shown safely */
    expect_fail(&dev_v1, out.data, out.len, "state section 'd?v': expected 'dev'");
    buf_free(&out);
}

static void test_sections_in_sequence(void **state)
{
    struct dev a, b;
    struct inner i1 = { 9, 8, 7 }, i2 = { 0 };
    fill(&a);
    struct buf out = { 0 };
    save(&dev_v1, &a, &out);
    assert_int_equal(vmstate_save(&inner_desc, &i1, &out), 0);

    struct rbuf r = RBUF(out.data, out.len);
    char name[256], err[256];
    assert_int_equal(vmstate_peek_name(&r, name), 0);
    assert_string_equal(name, "dev");
    assert_int_equal(vmstate_skip(&r), 0);
    assert_int_equal(vmstate_peek_name(&r, name), 0);
    assert_string_equal(name, "inner");
    assert_int_equal(vmstate_load(&inner_desc, &i2, &r, err, sizeof(err)), 0);
    assert_int_equal(rbuf_left(&r), 0);
    assert_memory_equal(&i1, &i2, sizeof(i1));

    r.off = 0;
    memset(&b, 0, sizeof(b));
    assert_int_equal(vmstate_load(&dev_v1, &b, &r, err, sizeof(err)), 0);
    assert_int_equal(b.recs[0].a, 100);
    buf_free(&out);
}

static void test_rbuf_underrun(void **state)
{
    uint8_t bytes[3] = { 1, 2, 3 };
    struct rbuf r = RBUF(bytes, sizeof(bytes));
    uint32_t v32;
    uint16_t v16;
    assert_int_equal(rbuf_get_u32(&r, &v32), -1);
    assert_int_equal(r.off, 0);
    assert_int_equal(rbuf_get_u16(&r, &v16), 0);
    assert_int_equal(v16, 0x0201);
    assert_null(rbuf_take(&r, 2));
    assert_non_null(rbuf_take(&r, 1));
    assert_int_equal(rbuf_left(&r), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_varray_writes_only_count),
        cmocka_unit_test(test_old_stream_new_desc),
        cmocka_unit_test(test_newer_version_rejected),
        cmocka_unit_test(test_older_than_min_rejected),
        cmocka_unit_test(test_nested_newer_rejected),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_payload_length_exact),
        cmocka_unit_test(test_varray_over_max),
        cmocka_unit_test(test_name_mismatch),
        cmocka_unit_test(test_sections_in_sequence),
        cmocka_unit_test(test_rbuf_underrun),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
