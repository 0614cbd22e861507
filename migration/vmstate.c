/* Versioned state tables: save and load driven by one description.
 * Layout and rules are documented in vmstate.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration/vmstate.h"

/* ---- byte buffers ------------------------------------------------------ */

int buf_reserve(struct buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len)
        return -ENOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_put_bytes(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -ENOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int buf_put_le(struct buf *b, uint64_t v, unsigned bytes)
{
    uint8_t tmp[8];
    for (unsigned i = 0; i < bytes; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    return buf_put_bytes(b, tmp, bytes);
}

int buf_put_u8(struct buf *b, uint8_t v) { return buf_put_le(b, v, 1); }
int buf_put_u16(struct buf *b, uint16_t v) { return buf_put_le(b, v, 2); }
int buf_put_u32(struct buf *b, uint32_t v) { return buf_put_le(b, v, 4); }
int buf_put_u64(struct buf *b, uint64_t v) { return buf_put_le(b, v, 8); }

void buf_patch_u32(struct buf *b, size_t off, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++)
        b->data[off + i] = (uint8_t)(v >> (8 * i));
}

void buf_free(struct buf *b)
{
    free(b->data);
    *b = (struct buf){ 0 };
}

const uint8_t *rbuf_take(struct rbuf *r, size_t n)
{
    if (n > rbuf_left(r))
        return NULL;
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

int rbuf_get_bytes(struct rbuf *r, void *dst, size_t n)
{
    const uint8_t *p = rbuf_take(r, n);
    if (!p)
        return -1;
    if (n)
        memcpy(dst, p, n);
    return 0;
}

int rbuf_get_u8(struct rbuf *r, uint8_t *v)
{
    const uint8_t *p = rbuf_take(r, 1);
    if (!p)
        return -1;
    *v = *p;
    return 0;
}

int rbuf_get_u16(struct rbuf *r, uint16_t *v)
{
    const uint8_t *p = rbuf_take(r, 2);
    if (!p)
        return -1;
    *v = le16_load(p);
    return 0;
}

int rbuf_get_u32(struct rbuf *r, uint32_t *v)
{
    const uint8_t *p = rbuf_take(r, 4);
    if (!p)
        return -1;
    *v = le32_load(p);
    return 0;
}

int rbuf_get_u64(struct rbuf *r, uint64_t *v)
{
    const uint8_t *p = rbuf_take(r, 8);
    if (!p)
        return -1;
    *v = le64_load(p);
    return 0;
}

/* ---- table checks ------------------------------------------------------ */

/* Bytes of the struct a field covers (0 with *ok = false on overflow). */
static size_t field_extent(const struct vmstate_field *f, bool *ok)
{
    size_t n = f->type == VMS_ARRAY ? f->count : f->type == VMS_VARRAY_U32 ? f->max_count : 1;
    if (f->size && n > SIZE_MAX / f->size) {
        *ok = false;
        return 0;
    }
    return f->size * n;
}

static size_t desc_extent(const struct vmstate_desc *d);

/* Why a field description is unusable, or NULL. */
static const char *field_bad(const struct vmstate_desc *d, const struct vmstate_field *f)
{
    bool ok = true;
    size_t ext = field_extent(f, &ok);
    if (!ok || f->offset > SIZE_MAX - ext)
        return "size overflows";
    if (d->size && f->offset + ext > d->size)
        return "lies outside the struct";
    if (f->version_added > d->version)
        return "added in a version newer than the table";
    if (f->sub && desc_extent(f->sub) > f->size)
        return "sub-table larger than the member";
    switch (f->type) {
    case VMS_U8: case VMS_U16: case VMS_U32: case VMS_U64:
        return f->size == (size_t)1 << (f->type - VMS_U8) ? NULL : "integer of the wrong size";
    case VMS_BYTES:
        return NULL;
    case VMS_STRUCT:
        return f->sub ? NULL : "struct without a table";
    case VMS_VARRAY_U32:
        if (f->max_count > UINT32_MAX)
            return "max count above 2^32";
        if (f->count_offset > SIZE_MAX - 4 || (d->size && f->count_offset + 4 > d->size))
            return "count lies outside the struct";
        /* fall through */
    case VMS_ARRAY:
        return f->size ? NULL : "zero-sized elements";
    case VMS_END:
        break;
    }
    return "unknown type";
}

/* Bytes of obj the table may touch: memory a load must snapshot. */
static size_t desc_extent(const struct vmstate_desc *d)
{
    if (d->size)
        return d->size;
    size_t end = 0;
    for (const struct vmstate_field *f = d->fields; f->name; f++) {
        bool ok = true;
        size_t e = f->offset + field_extent(f, &ok);
        if (f->type == VMS_VARRAY_U32 && f->count_offset + 4 > e)
            e = f->count_offset + 4;
        if (ok && e > end)
            end = e;
    }
    return end;
}

/* ---- save -------------------------------------------------------------- */

static int save_fields(const struct vmstate_desc *d, const uint8_t *base, struct buf *out);

static int save_struct(const struct vmstate_desc *d, const uint8_t *base, struct buf *out)
{
    if (buf_put_u32(out, d->version) < 0 || buf_put_u32(out, 0) < 0)
        return -ENOMEM;
    size_t at = out->len;
    int ret = save_fields(d, base, out);
    if (ret < 0)
        return ret;
    if (out->len - at > UINT32_MAX)
        return -EINVAL;
    buf_patch_u32(out, at - 4, (uint32_t)(out->len - at));
    return 0;
}

static int save_elem(const struct vmstate_field *f, const uint8_t *p, struct buf *out)
{
    if (f->sub)
        return save_struct(f->sub, p, out);
    uint64_t v = 0;
    switch (f->size) {
    case 1: v = *p; break;
    case 2: { uint16_t x; memcpy(&x, p, 2); v = x; break; }
    case 4: { uint32_t x; memcpy(&x, p, 4); v = x; break; }
    case 8: memcpy(&v, p, 8); break;
    default: return buf_put_bytes(out, p, f->size);
    }
    return buf_put_le(out, v, (unsigned)f->size);
}

static int save_fields(const struct vmstate_desc *d, const uint8_t *base, struct buf *out)
{
    for (const struct vmstate_field *f = d->fields; f->name; f++) {
        if (field_bad(d, f))
            return -EINVAL;
        const uint8_t *p = base + f->offset;
        int ret = 0;
        switch (f->type) {
        case VMS_U8: case VMS_U16: case VMS_U32: case VMS_U64:
            ret = save_elem(f, p, out);
            break;
        case VMS_BYTES:
            ret = buf_put_bytes(out, p, f->size);
            break;
        case VMS_STRUCT:
            ret = save_struct(f->sub, p, out);
            break;
        case VMS_ARRAY:
        case VMS_VARRAY_U32: {
            size_t n = f->count;
            if (f->type == VMS_VARRAY_U32) {
                uint32_t c;
                memcpy(&c, base + f->count_offset, 4);
                if (c > f->max_count)
                    return -EINVAL;
                n = c;
                ret = buf_put_u32(out, c);
            }
            for (size_t i = 0; i < n && ret == 0; i++)
                ret = save_elem(f, p + i * f->size, out);
            break;
        }
        case VMS_END:
            break;
        }
        if (ret < 0)
            return ret;
    }
    return 0;
}

int vmstate_save(const struct vmstate_desc *d, const void *obj, struct buf *out)
{
    size_t start = out->len;
    size_t nlen = d->name ? strlen(d->name) : 0;
    if (nlen == 0 || nlen > 255)
        return -EINVAL;
    int ret = -ENOMEM;
    if (buf_put_u8(out, (uint8_t)nlen) < 0 || buf_put_bytes(out, d->name, nlen) < 0)
        goto fail;
    ret = save_struct(d, obj, out);
    if (ret == 0)
        return 0;
fail:
    out->len = start;
    return ret;
}

/* ---- load -------------------------------------------------------------- */

struct lctx {
    const char *section;
    char path[128];      /* dotted field path, for messages */
    char *err;
    size_t errlen;
};

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int lfail(struct lctx *c, const char *fmt, ...)
{
    char msg[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->path[0])
        snprintf(c->err, c->errlen, "state section '%s': field '%s': %s", c->section, c->path, msg);
    else
        snprintf(c->err, c->errlen, "state section '%s': %s", c->section, msg);
    return -1;
}

static int load_fields(struct lctx *c, const struct vmstate_desc *d, uint8_t *base,
                       struct rbuf *in, unsigned version);

/* Check a stream version against what table d accepts. */
static int check_version(struct lctx *c, const struct vmstate_desc *d, uint32_t v, bool nested)
{
    const char *what = nested ? "struct '" : "";
    const char *end = nested ? "' " : "";
    if (v > d->version)
        return lfail(c, "%s%s%sversion %u newer than supported %u", what, nested ? d->name : "",
                     end, v, d->version);
    if (v < d->min_version)
        return lfail(c, "%s%s%sversion %u older than oldest supported %u", what,
                     nested ? d->name : "", end, v, d->min_version);
    return 0;
}

/* u32 version, u32 len, then exactly len bytes of d's fields. */
static int load_struct(struct lctx *c, const struct vmstate_desc *d, uint8_t *base,
                       struct rbuf *in, bool nested)
{
    uint32_t version, len;
    if (rbuf_get_u32(in, &version) < 0 || rbuf_get_u32(in, &len) < 0)
        return lfail(c, "truncated (%zu bytes left, header needs 8)", rbuf_left(in));
    if (check_version(c, d, version, nested) < 0)
        return -1;
    const uint8_t *p = rbuf_take(in, len);
    if (!p)
        return lfail(c, "truncated (payload of %u bytes, %zu left)", len, rbuf_left(in));
    struct rbuf body = RBUF(p, len);
    if (load_fields(c, d, base, &body, version) < 0)
        return -1;
    if (rbuf_left(&body))
        return lfail(c, "%zu unexpected bytes after the last field", rbuf_left(&body));
    return 0;
}

static int load_elem(struct lctx *c, const struct vmstate_field *f, uint8_t *p, struct rbuf *in)
{
    if (f->sub)
        return load_struct(c, f->sub, p, in, true);
    const uint8_t *s = rbuf_take(in, f->size);
    if (!s)
        return lfail(c, "truncated");
    switch (f->size) {
    case 1: *p = *s; break;
    case 2: { uint16_t x = le16_load(s); memcpy(p, &x, 2); break; }
    case 4: { uint32_t x = le32_load(s); memcpy(p, &x, 4); break; }
    case 8: { uint64_t x = le64_load(s); memcpy(p, &x, 8); break; }
    default: memcpy(p, s, f->size); break;
    }
    return 0;
}

static int load_field(struct lctx *c, const struct vmstate_field *f, uint8_t *base, struct rbuf *in)
{
    uint8_t *p = base + f->offset;
    switch (f->type) {
    case VMS_U8: case VMS_U16: case VMS_U32: case VMS_U64:
        return load_elem(c, f, p, in);
    case VMS_BYTES:
        return rbuf_get_bytes(in, p, f->size) < 0 ? lfail(c, "truncated") : 0;
    case VMS_STRUCT:
        return load_struct(c, f->sub, p, in, true);
    case VMS_ARRAY:
    case VMS_VARRAY_U32: {
        size_t n = f->count;
        if (f->type == VMS_VARRAY_U32) {
            uint32_t cnt;
            if (rbuf_get_u32(in, &cnt) < 0)
                return lfail(c, "truncated");
            if (cnt > f->max_count)
                return lfail(c, "count %u exceeds maximum %zu", cnt, f->max_count);
            memcpy(base + f->count_offset, &cnt, 4);
            n = cnt;
        }
        size_t plen = strlen(c->path);
        for (size_t i = 0; i < n; i++) {
            if (f->sub)     /* name the element in messages: "recs[1].c" */
                snprintf(c->path + plen, sizeof(c->path) - plen, "[%zu]", i);
            if (load_elem(c, f, p + i * f->size, in) < 0)
                return -1;
        }
        c->path[plen] = '\0';
        return 0;
    }
    case VMS_END:
        break;
    }
    return lfail(c, "unknown field type");
}

static int load_fields(struct lctx *c, const struct vmstate_desc *d, uint8_t *base,
                       struct rbuf *in, unsigned version)
{
    size_t plen = strlen(c->path);
    for (const struct vmstate_field *f = d->fields; f->name; f++) {
        snprintf(c->path + plen, sizeof(c->path) - plen, "%s%s", plen ? "." : "", f->name);
        const char *bad = field_bad(d, f);
        if (bad)
            return lfail(c, "bad table: %s", bad);
        if (f->version_added > version)
            continue;               /* not in this stream: leave the member as it is */
        if (load_field(c, f, base, in) < 0)
            return -1;
    }
    c->path[plen] = '\0';
    return 0;
}

/* Copy a name from the stream for printing: non-printables become '?'. */
static void printable(char *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? (char)src[i] : '?';
    dst[n] = '\0';
}

int vmstate_load(const struct vmstate_desc *d, void *obj, struct rbuf *in, char *err, size_t errlen)
{
    struct lctx c = { .section = d->name, .err = err, .errlen = errlen };
    struct rbuf r = *in;
    uint8_t nlen;
    const uint8_t *name;
    if (rbuf_get_u8(&r, &nlen) < 0 || !(name = rbuf_take(&r, nlen)))
        return lfail(&c, "truncated section name");
    if (nlen != strlen(d->name) || memcmp(name, d->name, nlen) != 0) {
        char shown[256];
        printable(shown, name, nlen);
        snprintf(err, errlen, "state section '%s': expected '%s'", shown, d->name);
        return -1;
    }

    size_t ext = desc_extent(d);
    uint8_t *scratch = malloc(ext ? ext : 1);
    if (!scratch)
        return lfail(&c, "out of memory");
    memcpy(scratch, obj, ext);
    int ret = load_struct(&c, d, scratch, &r, false);
    if (ret == 0) {
        memcpy(obj, scratch, ext);
        in->off = r.off;
    }
    free(scratch);
    return ret;
}

int vmstate_peek_name(const struct rbuf *in, char name[256])
{
    struct rbuf r = *in;
    uint8_t n;
    if (rbuf_get_u8(&r, &n) < 0 || rbuf_get_bytes(&r, name, n) < 0)
        return -1;
    name[n] = '\0';
    return 0;
}

int vmstate_skip(struct rbuf *in)
{
    struct rbuf r = *in;
    uint8_t n;
    uint32_t version, len;
    if (rbuf_get_u8(&r, &n) < 0 || !rbuf_take(&r, n) || rbuf_get_u32(&r, &version) < 0 ||
        rbuf_get_u32(&r, &len) < 0 || !rbuf_take(&r, len))
        return -1;
    in->off = r.off;
    return 0;
}
