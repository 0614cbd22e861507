/* Migration wire protocol framing and payload codecs (see stream.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>

#include "migration/stream.h"

static const char *const type_names[] = {
    [MSG_HELLO] = "HELLO", [MSG_MEM_PAGES] = "MEM_PAGES", [MSG_STATE] = "STATE",
    [MSG_DIGEST] = "DIGEST", [MSG_COMPLETE] = "COMPLETE", [MSG_ABORT] = "ABORT",
    [MSG_ACK] = "ACK", [MSG_COMMIT] = "COMMIT",
};

const char *msg_type_name(uint16_t type)
{
    return type >= MSG_HELLO && type <= MSG_TYPE_MAX ? type_names[type] : "unknown";
}

static void le16_store(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void le32_store(uint8_t *p, uint32_t v)
{
    le16_store(p, (uint16_t)v);
    le16_store(p + 2, (uint16_t)(v >> 16));
}

static uint32_t checksum(const void *p, size_t n)
{
    return (uint32_t)XXH3_64bits(p, n);
}

/* ---- framing ----------------------------------------------------------- */

/* Like writev, but without SIGPIPE when fd is a socket. */
static ssize_t send_iov(int fd, struct iovec *iov, int n)
{
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
    ssize_t r = sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (r < 0 && errno == ENOTSOCK)
        r = writev(fd, iov, n);
    return r;
}

static int write_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t r = send_iov(fd, iov, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        size_t done = (size_t)r;
        while (n > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            if (r == 0)
                return -EIO;
            iov->iov_base = (uint8_t *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

int msg_write(int fd, uint16_t type, const void *payload, uint32_t len)
{
    if (type < MSG_HELLO || type > MSG_TYPE_MAX)
        return -EINVAL;
    if (len > MSG_MAX_PAYLOAD)
        return -EMSGSIZE;
    uint8_t hdr[MSG_HEADER_SIZE];
    le32_store(hdr, MSG_MAGIC);
    le16_store(hdr + 4, type);
    le16_store(hdr + 6, 0);                     /* flags: none defined yet */
    le32_store(hdr + 8, len);
    le32_store(hdr + 12, checksum(len ? payload : "", len));
    struct iovec iov[2] = {
        { .iov_base = hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)payload, .iov_len = len },
    };
    return write_all(fd, iov, len ? 2 : 1);
}

/* Read up to n bytes, stopping early only at EOF. Returns bytes read or -errno. */
static ssize_t read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (uint8_t *)p + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

#if defined(__GNUC__)
__attribute__((format(printf, 5, 6)))
#endif
static int rfail(struct msg *m, enum msg_error e, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    free(m->payload);
    m->payload = NULL;
    m->error = e;
    return -1;
}

int msg_read(int fd, struct msg *m, char *err, size_t errlen)
{
    *m = (struct msg){ 0 };
    uint8_t hdr[MSG_HEADER_SIZE];
    ssize_t r = read_full(fd, hdr, sizeof(hdr));
    if (r < 0)
        return rfail(m, MSG_E_IO, err, errlen, "migration stream read: %s", strerror((int)-r));
    if (r == 0)
        return rfail(m, MSG_E_EOF, err, errlen, "migration connection closed by peer");
    if (r < MSG_HEADER_SIZE)
        return rfail(m, MSG_E_TRUNCATED, err, errlen,
                     "migration stream truncated: connection closed after %zd of %d header bytes",
                     r, MSG_HEADER_SIZE);

    uint32_t magic = le32_load(hdr), sum = le32_load(hdr + 12);
    m->type = le16_load(hdr + 4);
    m->flags = le16_load(hdr + 6);
    m->len = le32_load(hdr + 8);
    const char *name = msg_type_name(m->type);
    if (magic != MSG_MAGIC)
        return rfail(m, MSG_E_MAGIC, err, errlen,
                     "migration stream: bad magic 0x%08x (not a Ferry stream, or out of sync)", magic);
    if (m->type < MSG_HELLO || m->type > MSG_TYPE_MAX)
        return rfail(m, MSG_E_TYPE, err, errlen, "migration stream: unknown message type %u",
                     m->type);
    if (m->flags)
        return rfail(m, MSG_E_FLAGS, err, errlen, "migration stream: %s message has unknown flags 0x%04x",
                     name, m->flags);
    if (m->len > MSG_MAX_PAYLOAD)
        return rfail(m, MSG_E_OVERSIZED, err, errlen,
                     "migration stream: %s message of %u bytes exceeds the %u-byte limit", name,
                     m->len, MSG_MAX_PAYLOAD);

    m->payload = malloc(m->len ? m->len : 1);
    if (!m->payload)
        return rfail(m, MSG_E_NOMEM, err, errlen, "migration stream: out of memory for a %u-byte %s message",
                     m->len, name);
    r = read_full(fd, m->payload, m->len);
    if (r < 0)
        return rfail(m, MSG_E_IO, err, errlen, "migration stream read: %s", strerror((int)-r));
    if ((size_t)r < m->len)
        return rfail(m, MSG_E_TRUNCATED, err, errlen,
                     "migration stream truncated: %s message ended after %zd of %u payload bytes",
                     name, r, m->len);
    uint32_t got = checksum(m->payload, m->len);
    if (got != sum)
        return rfail(m, MSG_E_CHECKSUM, err, errlen,
                     "migration stream: %s message checksum mismatch (payload 0x%08x, header 0x%08x)",
                     name, got, sum);
    return 0;
}

void msg_free(struct msg *m)
{
    free(m->payload);
    m->payload = NULL;
    m->len = 0;
}

void msg_text(const struct msg *m, size_t off, char *out, size_t outlen)
{
    if (!outlen)
        return;
    size_t n = 0;
    for (size_t i = off; i < m->len && n + 1 < outlen; i++)
        out[n++] = m->payload[i] >= 0x20 && m->payload[i] != 0x7f ? (char)m->payload[i] : '?';
    out[n] = '\0';
}

/* ---- MEM_PAGES --------------------------------------------------------- */

#define PAGE_REC_HDR 9      /* u64 gpa, u8 flags */

bool page_is_zero(const void *page)
{
    const uint8_t *p = page;
    for (size_t i = 0; i < MIG_PAGE_SIZE; i += 64) {
        uint64_t w[8];
        memcpy(w, p + i, sizeof(w));
        if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
            return false;
    }
    return true;
}

int pages_batch_add(struct buf *b, uint64_t gpa, const void *page4k, struct stream_stats *st)
{
    if (gpa % MIG_PAGE_SIZE)
        return -EINVAL;
    bool zero = page_is_zero(page4k);
    size_t need = (b->len ? 0 : 4) + PAGE_REC_HDR + (zero ? 0 : MIG_PAGE_SIZE);
    if (b->len + need > MSG_MAX_PAYLOAD)
        return -E2BIG;
    if (buf_reserve(b, need) < 0)
        return -ENOMEM;
    size_t before = b->len;
    if (!b->len)
        buf_put_u32(b, 0);                      /* page count, patched below */
    buf_patch_u32(b, 0, le32_load(b->data) + 1);
    buf_put_u64(b, gpa);                        /* cannot fail: reserved above */
    buf_put_u8(b, zero ? PAGE_F_ZERO : 0);
    if (!zero)
        buf_put_bytes(b, page4k, MIG_PAGE_SIZE);
    if (st) {
        st->bytes += b->len - before;
        st->pages++;
        st->zero_pages += zero;
    }
    return 0;
}

int pages_batch_parse(const struct msg *m, page_fn fn, void *ctx, struct stream_stats *st,
                      char *err, size_t errlen)
{
    if (m->type != MSG_MEM_PAGES) {
        snprintf(err, errlen, "expected a MEM_PAGES message, got %s", msg_type_name(m->type));
        return -1;
    }
    struct rbuf r = RBUF(m->payload, m->len);
    uint32_t n;
    if (rbuf_get_u32(&r, &n) < 0) {
        snprintf(err, errlen, "MEM_PAGES: payload of %u bytes has no page count", m->len);
        return -1;
    }
    /* Pass 1: validate the whole batch before applying any of it. */
    for (uint32_t i = 0; i < n; i++) {
        uint64_t gpa;
        uint8_t flags;
        if (rbuf_get_u64(&r, &gpa) < 0 || rbuf_get_u8(&r, &flags) < 0 ||
            (!(flags & PAGE_F_ZERO) && !rbuf_take(&r, MIG_PAGE_SIZE))) {
            snprintf(err, errlen, "MEM_PAGES: batch claims %u pages but its %u bytes end in page %u",
                     n, m->len, i);
            return -1;
        }
        if (gpa % MIG_PAGE_SIZE) {
            snprintf(err, errlen, "MEM_PAGES: page %u at gpa 0x%llx is not 4 KiB aligned", i,
                     (unsigned long long)gpa);
            return -1;
        }
        if (flags & ~PAGE_F_ZERO) {
            snprintf(err, errlen, "MEM_PAGES: page %u has unknown flags 0x%02x", i, flags);
            return -1;
        }
    }
    if (rbuf_left(&r)) {
        snprintf(err, errlen, "MEM_PAGES: %zu bytes after the last of %u pages", rbuf_left(&r), n);
        return -1;
    }
    /* Pass 2: apply. */
    r.off = 4;
    for (uint32_t i = 0; i < n; i++) {
        size_t start = r.off;
        uint64_t gpa = le64_load(rbuf_take(&r, 8));
        bool zero = *rbuf_take(&r, 1) & PAGE_F_ZERO;
        const void *data = zero ? NULL : rbuf_take(&r, MIG_PAGE_SIZE);
        if (err && errlen)
            err[0] = '\0';
        if (fn && fn(gpa, data, ctx, err, errlen) < 0) {
            if (err && errlen && !err[0])
                snprintf(err, errlen, "MEM_PAGES: page at gpa 0x%llx rejected",
                         (unsigned long long)gpa);
            return -1;
        }
        if (st) {
            st->bytes += r.off - start + (i == 0 ? 4 : 0);
            st->pages++;
            st->zero_pages += zero;
        }
    }
    return 0;
}

/* ---- HELLO, ACK, DIGEST ------------------------------------------------ */

static int wrong_type(const struct msg *m, uint16_t want, char *err, size_t errlen)
{
    if (m->type == want)
        return 0;
    snprintf(err, errlen, "expected a %s message, got %s", msg_type_name(want), msg_type_name(m->type));
    return -1;
}

int hello_encode(struct buf *b, const char *config_json)
{
    size_t start = b->len, n = strlen(config_json);
    if (4 + n > MSG_MAX_PAYLOAD)
        return -E2BIG;
    if (buf_put_u32(b, MIG_PROTO_VERSION) < 0 || buf_put_bytes(b, config_json, n) < 0) {
        b->len = start;
        return -ENOMEM;
    }
    return 0;
}

int hello_decode(const struct msg *m, uint32_t *version, char **json, char *err, size_t errlen)
{
    *json = NULL;
    if (wrong_type(m, MSG_HELLO, err, errlen) < 0)
        return -1;
    if (m->len < 4) {
        snprintf(err, errlen, "HELLO: payload of %u bytes has no protocol version", m->len);
        return -1;
    }
    uint32_t v = le32_load(m->payload);
    *version = v;
    if (v >> 16 != MIG_PROTO_MAJOR) {
        snprintf(err, errlen, "incompatible migration protocol version %u.%u (this side speaks %u.%u)",
                 v >> 16, v & 0xffff, MIG_PROTO_MAJOR, MIG_PROTO_MINOR);
        return -1;
    }
    size_t n = m->len - 4;
    if (memchr(m->payload + 4, '\0', n)) {
        snprintf(err, errlen, "HELLO: configuration contains a NUL byte");
        return -1;
    }
    char *s = malloc(n + 1);
    if (!s) {
        snprintf(err, errlen, "HELLO: out of memory");
        return -1;
    }
    memcpy(s, m->payload + 4, n);
    s[n] = '\0';
    *json = s;
    return 0;
}

int ack_encode(struct buf *b, uint32_t status, const char *reason)
{
    size_t start = b->len, n = reason ? strlen(reason) : 0;
    if (4 + n > MSG_MAX_PAYLOAD)
        return -E2BIG;
    if (buf_put_u32(b, status) < 0 || buf_put_bytes(b, reason, n) < 0) {
        b->len = start;
        return -ENOMEM;
    }
    return 0;
}

int ack_decode(const struct msg *m, uint32_t *status, char *reason, size_t reasonlen,
               char *err, size_t errlen)
{
    if (wrong_type(m, MSG_ACK, err, errlen) < 0)
        return -1;
    if (m->len < 4) {
        snprintf(err, errlen, "ACK: payload of %u bytes has no status", m->len);
        return -1;
    }
    *status = le32_load(m->payload);
    if (*status < ACK_READY || *status > ACK_REJECTED) {
        snprintf(err, errlen, "ACK: unknown status %u", *status);
        return -1;
    }
    msg_text(m, 4, reason, reasonlen);
    return 0;
}

int digest_encode(struct buf *b, uint64_t chunk_size, const uint64_t *digests, size_t n)
{
    if (n > (MSG_MAX_PAYLOAD - 8) / 8)
        return -E2BIG;
    if (buf_reserve(b, 8 + 8 * n) < 0)
        return -ENOMEM;
    buf_put_u64(b, chunk_size);                 /* cannot fail: reserved above */
    for (size_t i = 0; i < n; i++)
        buf_put_u64(b, digests[i]);
    return 0;
}

int digest_decode(const struct msg *m, uint64_t *chunk_size, uint64_t **digests, size_t *n,
                  char *err, size_t errlen)
{
    *digests = NULL;
    *n = 0;
    if (wrong_type(m, MSG_DIGEST, err, errlen) < 0)
        return -1;
    if (m->len < 8 || (m->len - 8) % 8) {
        snprintf(err, errlen, "DIGEST: payload of %u bytes is not a chunk size and u64 digests", m->len);
        return -1;
    }
    *chunk_size = le64_load(m->payload);
    if (!*chunk_size || *chunk_size % MIG_PAGE_SIZE) {
        snprintf(err, errlen, "DIGEST: chunk size %llu is not a non-zero multiple of 4096",
                 (unsigned long long)*chunk_size);
        return -1;
    }
    size_t cnt = (m->len - 8) / 8;
    uint64_t *d = malloc(cnt ? cnt * 8 : 1);
    if (!d) {
        snprintf(err, errlen, "DIGEST: out of memory");
        return -1;
    }
    for (size_t i = 0; i < cnt; i++)
        d[i] = le64_load(m->payload + 8 + 8 * i);
    *digests = d;
    *n = cnt;
    return 0;
}
