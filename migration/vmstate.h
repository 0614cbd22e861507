/* Versioned state tables: a device's or vCPU's migratable state is described
 * ONCE as a table of fields, and the same table drives both save and load.
 *
 * A saved section is
 *     u8 name_len, name bytes, u32 version, u32 payload_len, payload
 * and the payload is the fields in table order, little-endian:
 *     VMS_U8/U16/U32/U64  the integer
 *     VMS_BYTES           `size` opaque bytes
 *     VMS_ARRAY           `count` elements
 *     VMS_VARRAY_U32      u32 n (<= max_count), then n elements
 *     VMS_STRUCT          u32 version, u32 len, the sub-table's fields
 * An array element is a nested struct (as VMS_STRUCT) when `sub` is set, a
 * little-endian integer when `size` is 1, 2, 4 or 8, opaque bytes otherwise.
 *
 * Versioning: a table has `version` (what we write) and `min_version` (the
 * oldest we still read). A field added in version N carries version_added N;
 * it is neither written to nor read from streams older than N, and loading
 * such a stream leaves that member as it was in obj (set defaults first).
 * Nested structs carry their own version, so they evolve independently.
 *
 * Loading is all-or-nothing: it works on a scratch copy and only touches obj
 * when the whole section validated. */
#ifndef FERRY_VMSTATE_H
#define FERRY_VMSTATE_H

#include <stddef.h>
#include <stdint.h>

/* ---- byte buffers ------------------------------------------------------ */

/* Growable output buffer; zero-initialise, buf_free when done. The put
 * functions return 0 or -ENOMEM (the buffer is then unchanged). */
struct buf {
    uint8_t *data;
    size_t len, cap;
};

int buf_reserve(struct buf *b, size_t extra);
int buf_put_u8(struct buf *b, uint8_t v);
int buf_put_u16(struct buf *b, uint16_t v);
int buf_put_u32(struct buf *b, uint32_t v);
int buf_put_u64(struct buf *b, uint64_t v);
int buf_put_bytes(struct buf *b, const void *p, size_t n);
/* Overwrite a u32 written earlier at byte offset off (length back-patching). */
void buf_patch_u32(struct buf *b, size_t off, uint32_t v);
void buf_free(struct buf *b);

/* Bounds-checked reader over bytes it does not own. The getters return 0, or
 * -1 without consuming anything when fewer bytes remain than asked for. */
struct rbuf {
    const uint8_t *p;
    size_t len, off;
};

#define RBUF(ptr, n) ((struct rbuf){ .p = (const uint8_t *)(ptr), .len = (n), .off = 0 })

static inline size_t rbuf_left(const struct rbuf *r) { return r->len - r->off; }
int rbuf_get_u8(struct rbuf *r, uint8_t *v);
int rbuf_get_u16(struct rbuf *r, uint16_t *v);
int rbuf_get_u32(struct rbuf *r, uint32_t *v);
int rbuf_get_u64(struct rbuf *r, uint64_t *v);
int rbuf_get_bytes(struct rbuf *r, void *dst, size_t n);
/* Consume n bytes and return a pointer to them (no copy), or NULL. */
const uint8_t *rbuf_take(struct rbuf *r, size_t n);

static inline uint16_t le16_load(const void *p)
{
    const uint8_t *b = p;
    return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint32_t le32_load(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t le64_load(const void *p)
{
    return le32_load(p) | (uint64_t)le32_load((const uint8_t *)p + 4) << 32;
}

/* ---- state tables ------------------------------------------------------ */

enum vms_type {
    VMS_END = 0,     /* table terminator (VMSTATE_END) */
    VMS_U8,
    VMS_U16,
    VMS_U32,
    VMS_U64,
    VMS_BYTES,       /* fixed-size opaque buffer of `size` bytes */
    VMS_ARRAY,       /* `count` elements of `size` bytes (or of `sub`) */
    VMS_STRUCT,      /* nested table `sub`, embedded at offset */
    VMS_VARRAY_U32,  /* elements counted by the u32 member at count_offset, <= max_count */
};

struct vmstate_desc;

struct vmstate_field {
    const char *name;
    enum vms_type type;
    size_t offset;                   /* of the member in the struct */
    size_t size;                     /* element size (whole size for U*, BYTES, STRUCT) */
    size_t count;                    /* VMS_ARRAY: number of elements */
    size_t count_offset;             /* VMS_VARRAY_U32: offset of the uint32_t count */
    size_t max_count;                /* VMS_VARRAY_U32: capacity of the array */
    const struct vmstate_desc *sub;  /* VMS_STRUCT, or arrays of structs */
    unsigned version_added;          /* 0 = present since the first version */
};

struct vmstate_desc {
    const char *name;                /* section name, at most 255 bytes */
    unsigned version;                /* version written by save */
    unsigned min_version;            /* oldest version load accepts */
    const struct vmstate_field *fields;  /* terminated by VMSTATE_END */
    size_t size;                     /* optional sizeof(struct): fields are checked against it */
};

/* ---- table macros (offsets/sizes from the struct; checked at compile time) */

/* 0, or a compile error when cond is false (usable in constant expressions). */
#define VMS_CHECK(cond) (0 * sizeof(char[(cond) ? 1 : -1]))
#define VMS_MEMBER(st, m) (((st *)0)->m)
#define VMS_IS_ARRAY(st, m) \
    (!__builtin_types_compatible_p(__typeof__(VMS_MEMBER(st, m)), __typeof__(&VMS_MEMBER(st, m)[0])))
#define VMS_NELEM(st, m) (sizeof(VMS_MEMBER(st, m)) / sizeof(VMS_MEMBER(st, m)[0]))

#define VMSTATE_INT_V(st, m, t, bytes, v)                                              \
    { .name = #m, .type = (t), .size = (bytes), .version_added = (v),                  \
      .offset = offsetof(st, m) + VMS_CHECK(sizeof(VMS_MEMBER(st, m)) == (bytes)) }

#define VMSTATE_U8_V(st, m, v)  VMSTATE_INT_V(st, m, VMS_U8, 1, v)
#define VMSTATE_U16_V(st, m, v) VMSTATE_INT_V(st, m, VMS_U16, 2, v)
#define VMSTATE_U32_V(st, m, v) VMSTATE_INT_V(st, m, VMS_U32, 4, v)
#define VMSTATE_U64_V(st, m, v) VMSTATE_INT_V(st, m, VMS_U64, 8, v)
#define VMSTATE_U8(st, m)  VMSTATE_U8_V(st, m, 0)
#define VMSTATE_U16(st, m) VMSTATE_U16_V(st, m, 0)
#define VMSTATE_U32(st, m) VMSTATE_U32_V(st, m, 0)
#define VMSTATE_U64(st, m) VMSTATE_U64_V(st, m, 0)

/* Any member (array or struct) saved as its raw bytes. */
#define VMSTATE_BYTES_V(st, m, v)                                                      \
    { .name = #m, .type = VMS_BYTES, .offset = offsetof(st, m),                        \
      .size = sizeof(VMS_MEMBER(st, m)), .version_added = (v) }
#define VMSTATE_BYTES(st, m) VMSTATE_BYTES_V(st, m, 0)

/* A fixed array of integers of `bytes` each (1, 2, 4 or 8). */
#define VMSTATE_ARRAY_INT_V(st, m, bytes, v)                                           \
    { .name = #m, .type = VMS_ARRAY, .size = (bytes), .version_added = (v),            \
      .count = VMS_NELEM(st, m),                                                       \
      .offset = offsetof(st, m) + VMS_CHECK(VMS_IS_ARRAY(st, m))                       \
                + VMS_CHECK(sizeof(VMS_MEMBER(st, m)[0]) == (bytes)) }
#define VMSTATE_ARRAY_U8(st, m)  VMSTATE_ARRAY_INT_V(st, m, 1, 0)
#define VMSTATE_ARRAY_U16(st, m) VMSTATE_ARRAY_INT_V(st, m, 2, 0)
#define VMSTATE_ARRAY_U32(st, m) VMSTATE_ARRAY_INT_V(st, m, 4, 0)
#define VMSTATE_ARRAY_U64(st, m) VMSTATE_ARRAY_INT_V(st, m, 8, 0)
#define VMSTATE_ARRAY_U64_V(st, m, v) VMSTATE_ARRAY_INT_V(st, m, 8, v)

/* A fixed array of structs, each described by desc. */
#define VMSTATE_ARRAY_STRUCT_V(st, m, desc, v)                                         \
    { .name = #m, .type = VMS_ARRAY, .size = sizeof(VMS_MEMBER(st, m)[0]),             \
      .count = VMS_NELEM(st, m), .sub = &(desc), .version_added = (v),                 \
      .offset = offsetof(st, m) + VMS_CHECK(VMS_IS_ARRAY(st, m)) }
#define VMSTATE_ARRAY_STRUCT(st, m, desc) VMSTATE_ARRAY_STRUCT_V(st, m, desc, 0)

/* A nested struct member described by its own table. */
#define VMSTATE_STRUCT_V(st, m, desc, v)                                               \
    { .name = #m, .type = VMS_STRUCT, .offset = offsetof(st, m),                       \
      .size = sizeof(VMS_MEMBER(st, m)), .sub = &(desc), .version_added = (v) }
#define VMSTATE_STRUCT(st, m, desc) VMSTATE_STRUCT_V(st, m, desc, 0)

/* The first `count_member` (uint32_t) elements of array, at most max. The
 * count travels with the array and is set on load: do not list it separately.
 * Elements are integers when 1/2/4/8 bytes wide, opaque bytes otherwise. */
#define VMSTATE_VARRAY_U32_FULL(st, arr, cnt, max, desc, v)                            \
    { .name = #arr, .type = VMS_VARRAY_U32, .size = sizeof(VMS_MEMBER(st, arr)[0]),    \
      .max_count = (max), .sub = (desc), .version_added = (v),                         \
      .count_offset = offsetof(st, cnt)                                                \
                      + VMS_CHECK(__builtin_types_compatible_p(                        \
                            __typeof__(VMS_MEMBER(st, cnt)), uint32_t)),               \
      .offset = offsetof(st, arr) + VMS_CHECK(VMS_IS_ARRAY(st, arr))                   \
                + VMS_CHECK((max) <= VMS_NELEM(st, arr)) }
#define VMSTATE_VARRAY_U32(st, arr, cnt, max) VMSTATE_VARRAY_U32_FULL(st, arr, cnt, max, NULL, 0)
#define VMSTATE_VARRAY_U32_V(st, arr, cnt, max, v) VMSTATE_VARRAY_U32_FULL(st, arr, cnt, max, NULL, v)
#define VMSTATE_VARRAY_U32_STRUCT(st, arr, cnt, max, desc) \
    VMSTATE_VARRAY_U32_FULL(st, arr, cnt, max, &(desc), 0)

#define VMSTATE_END { .name = NULL, .type = VMS_END }

/* ---- save / load ------------------------------------------------------- */

/* Append one section for obj to out. Returns 0, -EINVAL (bad table, or a
 * variable-array count above its max) or -ENOMEM; out is unchanged on error. */
int vmstate_save(const struct vmstate_desc *d, const void *obj, struct buf *out);

/* Consume one section from in and load it into obj. Returns 0, or -1 with a
 * one-line reason ("state section 'uart': version 3 newer than supported 2");
 * on error obj and in->off are unchanged. */
int vmstate_load(const struct vmstate_desc *d, void *obj, struct rbuf *in, char *err, size_t errlen);

/* Name of the next section in `in` without consuming it, NUL-terminated in
 * name[256], for dispatching a STATE message. Returns 0 or -1 (truncated). */
int vmstate_peek_name(const struct rbuf *in, char name[256]);

/* Skip the next section (e.g. one this side does not know). Returns 0 or -1. */
int vmstate_skip(struct rbuf *in);

#endif
