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

#include "migration/chan.h"
#include "migration/stream.h"
#include "vmm/xxh.h"

static const char *const type_names[] = {
    [MSG_HELLO] = "HELLO", [MSG_MEM_PAGES] = "MEM_PAGES", [MSG_STATE] = "STATE",
    [MSG_DIGEST] = "DIGEST", [MSG_COMPLETE] = "COMPLETE", [MSG_ABORT] = "ABORT",
    [MSG_ACK] = "ACK", [MSG_COMMIT] = "COMMIT", [MSG_JOIN] = "JOIN", [MSG_FLUSH] = "FLUSH",
    [MSG_SYNC] = "SYNC", [MSG_DISK_BLOCKS] = "DISK_BLOCKS", [MSG_DISK_DIGEST] = "DISK_DIGEST",
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

/* ---- framing ----------------------------------------------------------- */

/* The frame checksum guards plaintext streams against corruption and
 * desynchronisation. Over TLS every record is authenticated by its AEAD tag
 * already, so the field is 0 and not checked: one pass less over the data. */
static uint32_t checksum_iov(const struct chan *c, const struct iovec *iov, int n)
{
    if (c->ssl)
        return 0;
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (int i = 0; i < n; i++)
        XXH3_64bits_update(&st, iov[i].iov_base, iov[i].iov_len);
    return (uint32_t)XXH3_64bits_digest(&st);
}

int msg_writev(struct chan *c, uint16_t type, const struct iovec *payload, int n, int nsum)
{
    if (type < MSG_HELLO || type > MSG_TYPE_MAX || n > MSG_MAX_IOV) {
        snprintf(c->err, sizeof(c->err), "bad message type %u or %d pieces", type, n);
        return -1;
    }
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += payload[i].iov_len;
    if (len > MSG_MAX_PAYLOAD) {
        snprintf(c->err, sizeof(c->err), "%s message of %zu bytes exceeds the %u-byte limit",
                 msg_type_name(type), len, MSG_MAX_PAYLOAD);
        return -1;
    }
    uint8_t hdr[MSG_HEADER_SIZE];
    le32_store(hdr, MSG_MAGIC);
    le16_store(hdr + 4, type);
    le16_store(hdr + 6, 0);                     /* flags: none defined */
    le32_store(hdr + 8, (uint32_t)len);
    le32_store(hdr + 12, checksum_iov(c, payload, nsum < n ? nsum : n));
    struct iovec iov[MSG_MAX_IOV + 1];
    iov[0] = (struct iovec){ hdr, sizeof(hdr) };
    memcpy(iov + 1, payload, (size_t)n * sizeof(*iov));
    return chan_writev(c, iov, n + 1);
}

int msg_write(struct chan *c, uint16_t type, const void *payload, uint32_t len)
{
    struct iovec v = { (void *)payload, len };
    return msg_writev(c, type, &v, len ? 1 : 0, 1);
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

int msg_read_header(struct chan *c, struct msg *m, char *err, size_t errlen)
{
    *m = (struct msg){ 0 };
    uint8_t hdr[MSG_HEADER_SIZE];
    ssize_t r = chan_read(c, hdr, sizeof(hdr));
    if (r < 0)
        return rfail(m, MSG_E_IO, err, errlen, "migration stream read: %s", c->err);
    if (r == 0)
        return rfail(m, MSG_E_EOF, err, errlen, "migration connection closed by peer");
    if (r < MSG_HEADER_SIZE)
        return rfail(m, MSG_E_TRUNCATED, err, errlen,
                     "migration stream truncated: connection closed after %zd of %d header bytes",
                     r, MSG_HEADER_SIZE);

    uint32_t magic = le32_load(hdr);
    m->sum = le32_load(hdr + 12);
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
    return 0;
}

int msg_read_into(struct chan *c, struct msg *m, const struct iovec *iov, int n, size_t *got,
                  char *err, size_t errlen)
{
    ssize_t r = chan_readv(c, iov, n);
    *got = r > 0 ? (size_t)r : 0;
    if (r < 0)
        return rfail(m, MSG_E_IO, err, errlen, "migration stream read: %s", c->err);
    size_t want = 0;
    for (int i = 0; i < n; i++)
        want += iov[i].iov_len;
    if ((size_t)r < want)
        return rfail(m, MSG_E_TRUNCATED, err, errlen,
                     "migration stream truncated: %s message ended early (%zd bytes short)",
                     msg_type_name(m->type), (ssize_t)(want - (size_t)r));
    return 0;
}

int msg_check_sum(const struct chan *c, struct msg *m, const struct iovec *iov, int n,
                  char *err, size_t errlen)
{
    if (c->ssl)
        return 0;
    uint32_t got = checksum_iov(c, iov, n);
    if (got != m->sum)
        return rfail(m, MSG_E_CHECKSUM, err, errlen,
                     "migration stream: %s message checksum mismatch (payload 0x%08x, header 0x%08x)",
                     msg_type_name(m->type), got, m->sum);
    return 0;
}

int msg_read(struct chan *c, struct msg *m, char *err, size_t errlen)
{
    if (msg_read_header(c, m, err, errlen) < 0)
        return -1;
    m->payload = malloc(m->len ? m->len : 1);
    if (!m->payload)
        return rfail(m, MSG_E_NOMEM, err, errlen, "migration stream: out of memory for a %u-byte %s message",
                     m->len, msg_type_name(m->type));
    struct iovec v = { m->payload, m->len };
    size_t got;
    if (msg_read_into(c, m, &v, 1, &got, err, errlen) < 0)
        return -1;
    return msg_check_sum(c, m, &v, 1, err, errlen);
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
    if (*status < ACK_READY || *status > ACK_MISMATCH) {
        snprintf(err, errlen, "ACK: unknown status %u", *status);
        return -1;
    }
    msg_text(m, 4, reason, reasonlen);
    return 0;
}

int join_encode(struct buf *b, const uint8_t session[SESSION_ID_LEN], uint32_t index)
{
    return buf_put_bytes(b, session, SESSION_ID_LEN) < 0 || buf_put_u32(b, index) < 0 ? -ENOMEM : 0;
}

int join_decode(const struct msg *m, uint8_t session[SESSION_ID_LEN], uint32_t *index,
                char *err, size_t errlen)
{
    if (wrong_type(m, MSG_JOIN, err, errlen) < 0)
        return -1;
    if (m->len != SESSION_ID_LEN + 4) {
        snprintf(err, errlen, "JOIN: payload of %u bytes, expected %d", m->len, SESSION_ID_LEN + 4);
        return -1;
    }
    memcpy(session, m->payload, SESSION_ID_LEN);
    *index = le32_load(m->payload + SESSION_ID_LEN);
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
