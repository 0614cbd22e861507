/* MEM_PAGES v2: gathered send from guest RAM, direct receive (see pages.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lz4.h>
#include <zstd.h>

#include "migration/digest.h"
#include "migration/pages.h"
#include "vmm/xxh.h"

#define BODY_MAX  ((size_t)PAGES_MAX * MIG_PAGE_SIZE)
#define ZSTD_LEVEL 3               /* zstd is for slow links: ratio over speed */

static const char *const codec_names[] = { "off", "lz4", "zstd" };

const char *page_codec_name(enum page_codec c)
{
    return c <= CODEC_MAX ? codec_names[c] : "unknown";
}

int page_codec_parse(const char *s)
{
    if (!strcmp(s, "none"))
        return CODEC_NONE;
    for (int i = 0; i <= CODEC_MAX; i++)
        if (!strcmp(s, codec_names[i]))
            return i;
    return -1;
}

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

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> 8 * i);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- sender ---------------------------------------------------------- */

bool pages_tx_add(struct pages_tx *tx, uint64_t gpa, const void *hva)
{
    bool zero = page_is_zero(hva);
    tx->ent[tx->n++] = gpa | (zero ? PAGE_F_ZERO : 0);   /* host order; converted at send */
    tx->st.pages++;
    tx->st.zero_pages += zero;
    if (!zero) {
        if (tx->ndata && tx->run_end == hva) {
            tx->iov[tx->niov - 1].iov_len += MIG_PAGE_SIZE;    /* contiguous: one piece */
        } else {
            if (!tx->niov)
                tx->niov = 2;
            tx->iov[tx->niov++] = (struct iovec){ (void *)hva, MIG_PAGE_SIZE };
        }
        tx->run_end = (const uint8_t *)hva + MIG_PAGE_SIZE;
        tx->ndata++;
    }
    return tx->n == PAGES_MAX;
}

/* Compress the gathered data pages into tx->zout; returns the compressed
 * size, or 0 when compression does not pay (send them raw). */
static size_t compress_body(struct pages_tx *tx, int first, int n)
{
    if (!tx->zin)
        tx->zin = malloc(BODY_MAX);
    if (!tx->zout)
        tx->zout = malloc(ZSTD_compressBound(BODY_MAX) + LZ4_COMPRESSBOUND(BODY_MAX));
    if (!tx->zin || !tx->zout)
        return 0;
    size_t len = 0;
    for (int i = first; i < first + n; i++) {
        memcpy(tx->zin + len, tx->iov[i].iov_base, tx->iov[i].iov_len);
        len += tx->iov[i].iov_len;
    }
    size_t out = 0;
    if (tx->codec == CODEC_LZ4) {
        int r = LZ4_compress_default((const char *)tx->zin, (char *)tx->zout, (int)len,
                                     LZ4_COMPRESSBOUND(BODY_MAX));
        out = r > 0 ? (size_t)r : 0;
    } else {
        if (!tx->zctx && !(tx->zctx = ZSTD_createCCtx()))
            return 0;
        size_t r = ZSTD_compressCCtx(tx->zctx, tx->zout, ZSTD_compressBound(BODY_MAX), tx->zin, len,
                                     ZSTD_LEVEL);
        out = ZSTD_isError(r) ? 0 : r;
    }
    return out && out < len ? out : 0;
}

int pages_tx_send(struct pages_tx *tx, struct chan *c, char *err, size_t errlen)
{
    if (!tx->n)
        return 0;
    if (!tx->niov)
        tx->niov = 2;
    for (uint32_t i = 0; i < tx->n; i++)
        tx->ent[i] = htole64(tx->ent[i]);
    enum page_codec codec = CODEC_NONE;
    size_t zlen = tx->codec != CODEC_NONE && tx->ndata ? compress_body(tx, 2, tx->niov - 2) : 0;
    int niov = tx->niov;
    if (zlen) {
        codec = tx->codec;
        tx->iov[2] = (struct iovec){ tx->zout, zlen };
        niov = 3;
    }
    put32(tx->head, tx->n);
    memset(tx->head + 4, 0, 4);
    tx->head[4] = (uint8_t)codec;
    tx->iov[0] = (struct iovec){ tx->head, PAGES_HEAD };
    tx->iov[1] = (struct iovec){ tx->ent, tx->n * sizeof(uint64_t) };
    size_t len = 0;
    for (int i = 0; i < niov; i++)
        len += tx->iov[i].iov_len;
    tx->st.data_bytes += (uint64_t)tx->ndata * MIG_PAGE_SIZE;
    tx->st.wire_bytes += MSG_HEADER_SIZE + len;
    tx->n = tx->ndata = 0;
    tx->niov = 0;
    if (msg_writev(c, MSG_MEM_PAGES, tx->iov, niov, 2) < 0) {
        snprintf(err, errlen, "connection to destination lost while sending MEM_PAGES: %s", c->err);
        return -1;
    }
    return 0;
}

void pages_tx_free(struct pages_tx *tx)
{
    free(tx->zin);
    free(tx->zout);
    ZSTD_freeCCtx(tx->zctx);
    tx->zin = tx->zout = NULL;
    tx->zctx = NULL;
}

/* ---- receiver -------------------------------------------------------- */

/* Decompress the body into rx->zout and copy each data page to its place. */
static int recv_compressed(struct pages_rx *rx, struct chan *c, struct msg *m, enum page_codec codec,
                           size_t zlen, uint32_t ndata, char *err, size_t errlen)
{
    if (!rx->zin)
        rx->zin = malloc(ZSTD_compressBound(BODY_MAX) + LZ4_COMPRESSBOUND(BODY_MAX));
    if (!rx->zout)
        rx->zout = malloc(BODY_MAX);
    if (!rx->zin || !rx->zout) {
        snprintf(err, errlen, "MEM_PAGES: out of memory for decompression");
        return -1;
    }
    size_t got, want = (size_t)ndata * MIG_PAGE_SIZE, out = 0;
    if (zlen > (size_t)ZSTD_compressBound(BODY_MAX)) {
        snprintf(err, errlen, "MEM_PAGES: compressed body of %zu bytes is too large", zlen);
        return -1;
    }
    struct iovec v = { rx->zin, zlen };
    if (msg_read_into(c, m, &v, 1, &got, err, errlen) < 0)
        return -1;
    if (codec == CODEC_LZ4) {
        int r = LZ4_decompress_safe((const char *)rx->zin, (char *)rx->zout, (int)zlen, BODY_MAX);
        out = r > 0 ? (size_t)r : 0;
    } else {
        if (!rx->zctx && !(rx->zctx = ZSTD_createDCtx())) {
            snprintf(err, errlen, "MEM_PAGES: out of memory for decompression");
            return -1;
        }
        size_t r = ZSTD_decompressDCtx(rx->zctx, rx->zout, BODY_MAX, rx->zin, zlen);
        out = ZSTD_isError(r) ? 0 : r;
    }
    if (out != want) {
        snprintf(err, errlen, "MEM_PAGES: %s body does not decompress to its %u pages",
                 page_codec_name(codec), ndata);
        return -1;
    }
    for (uint32_t i = 0; i < ndata; i++)
        memcpy(rx->iov[i].iov_base, rx->zout + (size_t)i * MIG_PAGE_SIZE, MIG_PAGE_SIZE);
    return 0;
}

int pages_rx_recv(struct pages_rx *rx, struct chan *c, struct msg *m, char *err, size_t errlen)
{
    uint8_t head[PAGES_HEAD];
    struct iovec meta[2] = { { head, PAGES_HEAD }, { rx->ent, 0 } };
    size_t got;
    if (m->len < PAGES_HEAD) {
        snprintf(err, errlen, "MEM_PAGES: payload of %u bytes has no page count", m->len);
        return -1;
    }
    if (msg_read_into(c, m, meta, 1, &got, err, errlen) < 0)
        return -1;
    uint32_t n = get32(head);
    enum page_codec codec = head[4];
    if (!n || n > PAGES_MAX || head[5] | head[6] | head[7] || codec > CODEC_MAX ||
        m->len < PAGES_HEAD + n * 8ull) {
        snprintf(err, errlen, "MEM_PAGES: bad head (%u pages, codec %u) in %u bytes", n, head[4], m->len);
        return -1;
    }
    meta[1].iov_len = n * sizeof(uint64_t);
    if (msg_read_into(c, m, &meta[1], 1, &got, err, errlen) < 0 ||
        msg_check_sum(c, m, meta, 2, err, errlen) < 0)
        return -1;

    /* Validate every entry before any page is written. */
    uint32_t ndata = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t e = le64toh(rx->ent[i]), gpa = e & ~(uint64_t)(MIG_PAGE_SIZE - 1);
        if (e & (MIG_PAGE_SIZE - 1) & ~PAGE_F_ZERO) {
            snprintf(err, errlen, "MEM_PAGES: page %u has unknown flags 0x%03llx", i,
                     (unsigned long long)(e & (MIG_PAGE_SIZE - 1)));
            return -1;
        }
        uint8_t *dst = gmem_ptr(rx->mem, gpa, MIG_PAGE_SIZE);
        if (!dst) {
            snprintf(err, errlen, "MEM_PAGES: page at GPA 0x%llx is outside guest RAM", (unsigned long long)gpa);
            return -1;
        }
        rx->ent[i] = e;
        if (!(e & PAGE_F_ZERO))
            rx->iov[ndata++] = (struct iovec){ dst, MIG_PAGE_SIZE };
    }
    size_t body = m->len - PAGES_HEAD - n * 8ull;
    if (codec == CODEC_NONE && body != (size_t)ndata * MIG_PAGE_SIZE) {
        snprintf(err, errlen, "MEM_PAGES: %u data pages but a body of %zu bytes", ndata, body);
        return -1;
    }
    if (codec != CODEC_NONE && (!ndata || !body)) {
        snprintf(err, errlen, "MEM_PAGES: empty %s body", page_codec_name(codec));
        return -1;
    }
    if (codec == CODEC_NONE ? msg_read_into(c, m, rx->iov, (int)ndata, &got, err, errlen)
                            : recv_compressed(rx, c, m, codec, body, ndata, err, errlen))
        return -1;

    /* Zero pages, and each page's hash for the memory digest. */
    for (uint32_t i = 0; i < n; i++) {
        uint64_t gpa = rx->ent[i] & ~(uint64_t)(MIG_PAGE_SIZE - 1);
        uint8_t *p = gmem_ptr(rx->mem, gpa, MIG_PAGE_SIZE);
        size_t idx = digest_page_index(rx->mem, gpa);
        if (rx->ent[i] & PAGE_F_ZERO) {
            memset(p, 0, MIG_PAGE_SIZE);
            rx->hash[idx] = digest_zero_page();
        } else {
            rx->hash[idx] = XXH3_64bits(p, MIG_PAGE_SIZE);
        }
    }
    rx->st.pages += n;
    rx->st.zero_pages += n - ndata;
    rx->st.data_bytes += (uint64_t)ndata * MIG_PAGE_SIZE;
    rx->st.wire_bytes += MSG_HEADER_SIZE + m->len;
    return 0;
}

void pages_rx_free(struct pages_rx *rx)
{
    free(rx->zin);
    free(rx->zout);
    ZSTD_freeDCtx(rx->zctx);
    rx->zin = rx->zout = NULL;
    rx->zctx = NULL;
}
