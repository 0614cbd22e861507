/* migtool: a fake migration source and a man-in-the-middle for the
 * migration tests (tests/migration/). Uses the project's own framing code
 * (migration/stream.h), so valid messages are byte-for-byte what a real
 * source sends and the corrupted ones differ only where the case says.
 *
 *   migtool send ADDR CASE
 *       Connect to a destination (`ferry-vmm --incoming ADDR`), play CASE,
 *       then print every reply until the destination closes:
 *           reply: ACK ready | ACK rejected: REASON | ABORT: REASON | EOF | ...
 *       Exit 0 when the case could be played (the destination's reaction is
 *       for the caller to judge), 2 on usage or setup errors.
 *   migtool proxy LISTEN DEST MUTATION
 *       Accept one source on LISTEN, connect to DEST, forward both ways.
 *       MUTATION: none; corrupt-final: among the latest MEM_PAGES before
 *       STATE, held back until then (SYNCs go ahead of them), flip one bit
 *       of the last copy sent of a dirtier working-set page of the pass
 *       under way (see corrupt_held;
 *       page data is outside the frame checksum), so only the memory
 *       digest (or the guest) can notice; corrupt-final-any: the same, falling back to any
 *       non-zero page. Prints what it did:
 *           proxy: corrupted working-set|other page 0xGPA (frame checksum unaffected)
 *       drop-ack: forward everything up to COMPLETE, keep the destination's
 *       answer from the source and cut the source's connection (a network
 *       failure at the worst moment). burst-tail: hold STATE and DIGEST
 *       and deliver them with COMPLETE in one write (a destination that
 *       lags behind the stream finds them all queued).
 *   migtool relay LISTEN DEST FLIP_AT
 *       Accept one connection, forward raw bytes both ways, and flip one
 *       bit of byte FLIP_AT of what the source sends (inside a TLS record,
 *       for the TLS tests). Prints "relay: flipped byte N".
 *   migtool cases
 *       List the send cases. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include "migration/net.h"
#include "migration/pages.h"
#include "migration/stream.h"
#include "vmm/vm.h"

#define VM_MEM (64ull << 20)

__attribute__((format(printf, 1, 2), noreturn))
static void die2(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "migtool: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* ---- raw frames -------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void hdr_fill(uint8_t *h, uint32_t magic, uint16_t type, uint16_t flags, uint32_t len, uint32_t sum)
{
    put32(h, magic);
    h[4] = (uint8_t)type;
    h[5] = (uint8_t)(type >> 8);
    h[6] = (uint8_t)flags;
    h[7] = (uint8_t)(flags >> 8);
    put32(h + 8, len);
    put32(h + 12, sum);
}

static uint32_t sum32(const void *p, size_t n)
{
    return (uint32_t)XXH3_64bits(n ? p : "", n);
}

/* Write everything; a peer that already hung up is not an error here (the
 * destination may reject early), it is reported. */
static int xwrite(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t r = send(fd, b, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            printf("write: %s\n", r < 0 ? strerror(errno) : "short write");
            return -1;
        }
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

static uint32_t pages_sum(const struct buf *b);

/* One frame with a valid header for the given payload. */
static int frame(int fd, uint16_t type, const void *p, uint32_t len)
{
    uint8_t h[MSG_HEADER_SIZE];
    struct buf pb = { .data = (uint8_t *)p, .len = len };
    hdr_fill(h, MSG_MAGIC, type, 0, len, type == MSG_MEM_PAGES ? pages_sum(&pb) : sum32(p, len));
    return xwrite(fd, h, sizeof(h)) < 0 || (len && xwrite(fd, p, len) < 0) ? -1 : 0;
}

/* ---- HELLO ------------------------------------------------------------- */

/* The configuration a real 64 MiB, 1-vCPU micro-guest source would send:
 * this host's supported CPUID, optionally with all of leaf 7.0 ebx set. */
#define SESSION "migtool session!"     /* 16 bytes: HELLO's session, in hex below */
static int hello_streams = 1;
static const char *dest_addr;           /* for the extra streams of stray-join */

static char *config_json(bool all_leaf7_ebx)
{
    char err[256];
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die2("cannot open /dev/kvm: %s", strerror(errno));
    struct kvm_cpuid2 *c = cpuid_supported(kvm, err, sizeof(err));
    close(kvm);
    if (!c)
        die2("%s", err);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "memory_size", json_object_new_int64((int64_t)VM_MEM));
    json_object_object_add(o, "vcpus", json_object_new_int(1));
    json_object_object_add(o, "boot", json_object_new_string("micro-guest"));
    json_object_object_add(o, "kernel", json_object_new_string("migtool"));
    json_object *arr = json_object_new_array();
    bool found7 = false;
    for (unsigned i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        if (all_leaf7_ebx && e->function == 7 && e->index == 0) {
            e->ebx = 0xffffffffu;
            found7 = true;
        }
        json_object *a = json_object_new_array();
        uint32_t v[] = { e->function, e->index, e->flags, e->eax, e->ebx, e->ecx, e->edx };
        for (size_t k = 0; k < 7; k++)
            json_object_array_add(a, json_object_new_int64(v[k]));
        json_object_array_add(arr, a);
    }
    if (all_leaf7_ebx && !found7)
        die2("%s", "this host reports no CPUID leaf 7.0");
    json_object_object_add(o, "cpuid", arr);
    json_object *mig = json_object_new_object();
    json_object_object_add(mig, "session", json_object_new_string("6d6967746f6f6c2073657373696f6e21"));
    json_object_object_add(mig, "streams", json_object_new_int(hello_streams));
    json_object_object_add(mig, "verify", json_object_new_string("after"));
    json_object_object_add(o, "migration", mig);
    char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    free(c);
    return s;
}

static int send_hello_raw(int fd, uint32_t version, const char *json)
{
    struct buf b = { 0 };
    buf_put_u32(&b, version);
    buf_put_bytes(&b, json, strlen(json));
    int r = frame(fd, MSG_HELLO, b.data, (uint32_t)b.len);
    buf_free(&b);
    return r;
}

/* Print one reply; returns its ACK status, 0 for other messages, -1 at the end. */
static int print_reply(int fd)
{
    struct msg m;
    struct chan c = CHAN_PLAIN(fd);
    char err[256], why[256];
    if (msg_read(&c, &m, err, sizeof(err)) < 0) {
        printf("reply: %s\n", m.error == MSG_E_EOF ? "EOF" : err);
        return -1;
    }
    int rc = 0;
    if (m.type == MSG_ACK && m.len >= 4) {
        uint32_t st = le32_load(m.payload);
        msg_text(&m, 4, why, sizeof(why));
        rc = (int)st;
        printf("reply: ACK %s%s%s\n", st == ACK_READY ? "ready" : st == ACK_RESUMED ? "resumed" :
               st == ACK_REJECTED ? "rejected" : "unknown", why[0] ? ": " : "", why);
    } else if (m.type == MSG_ABORT) {
        msg_text(&m, 0, why, sizeof(why));
        printf("reply: ABORT: %s\n", why);
    } else {
        printf("reply: %s message\n", msg_type_name(m.type));
    }
    fflush(stdout);
    msg_free(&m);
    return rc;
}

/* A valid HELLO, then the destination must answer ACK(ready). */
static void hello_ok(int fd)
{
    char *json = config_json(false);
    if (send_hello_raw(fd, MIG_PROTO_VERSION, json) < 0)
        exit(2);
    free(json);
    if (print_reply(fd) != ACK_READY) {
        printf("migtool: the destination did not accept a valid HELLO\n");
        exit(2);
    }
}

/* A MEM_PAGES payload holding one page at gpa (non-zero data; gpa's low
 * bits are the entry's flags). */
static void one_page(struct buf *b, uint64_t gpa)
{
    static uint8_t page[MIG_PAGE_SIZE];
    for (size_t i = 0; i < sizeof(page); i++)
        page[i] = (uint8_t)(i * 7 + 1);
    b->len = 0;
    buf_put_u32(b, 1);
    buf_put_u32(b, 0);                  /* codec none, reserved */
    buf_put_u64(b, gpa);
    buf_put_bytes(b, page, sizeof(page));
}

/* The frame checksum of a MEM_PAGES payload: its head and entries only. */
static uint32_t pages_sum(const struct buf *b)
{
    return sum32(b->data, PAGES_HEAD + 8ull * le32_load(b->data));
}

static const char *const cases[] = {
    "flip", "truncated", "truncated-header", "version", "oversized", "oversized-max", "garbage",
    "outside-ram", "outside-ram-wrap", "unaligned", "complete-nostate", "cpuid", "bad-type",
    "bad-flags", "bad-json", "state-garbage", "second-hello", "ack-from-source",
    "eof-after-hello", "batch-count", "stray-join", NULL,
};

static int play(int fd, const char *c)
{
    struct buf b = { 0 };
    uint8_t h[MSG_HEADER_SIZE];
    int r = 0;
    if (!strcmp(c, "flip")) {
        /* MEM_PAGES sealed, then one byte of its entry (the GPA) flipped in flight */
        hello_ok(fd);
        one_page(&b, 0x200000);
        hdr_fill(h, MSG_MAGIC, MSG_MEM_PAGES, 0, (uint32_t)b.len, pages_sum(&b));
        b.data[PAGES_HEAD + 2] ^= 0x10;
        r = xwrite(fd, h, sizeof(h)) < 0 || xwrite(fd, b.data, b.len) < 0 ? -1 : 0;
    } else if (!strcmp(c, "truncated")) {
        hello_ok(fd);
        one_page(&b, 0x200000);
        hdr_fill(h, MSG_MAGIC, MSG_MEM_PAGES, 0, (uint32_t)b.len, pages_sum(&b));
        r = xwrite(fd, h, sizeof(h)) < 0 || xwrite(fd, b.data, 2000) < 0 ? -1 : 0;
        shutdown(fd, SHUT_WR);
    } else if (!strcmp(c, "truncated-header")) {
        hello_ok(fd);
        hdr_fill(h, MSG_MAGIC, MSG_COMPLETE, 0, 0, sum32("", 0));
        r = xwrite(fd, h, 7);
        shutdown(fd, SHUT_WR);
    } else if (!strcmp(c, "version")) {
        char *json = config_json(false);
        r = send_hello_raw(fd, (MIG_PROTO_MAJOR + 1u) << 16, json);
        free(json);
    } else if (!strcmp(c, "oversized") || !strcmp(c, "oversized-max")) {
        /* a length just over the limit / the largest u32 (no payload: bytes
         * the destination never reads would turn its close into a reset
         * that can overtake its ACK) */
        hello_ok(fd);
        uint32_t len = !strcmp(c, "oversized") ? MSG_MAX_PAYLOAD + 1 : 0xffffffffu;
        hdr_fill(h, MSG_MAGIC, MSG_MEM_PAGES, 0, len, 0);
        r = xwrite(fd, h, sizeof(h));
    } else if (!strcmp(c, "garbage")) {
        /* one header's worth of noise (see oversized about unread bytes) */
        uint8_t junk[MSG_HEADER_SIZE];
        uint64_t x = 0x9e3779b97f4a7c15ull;
        for (size_t i = 0; i < sizeof(junk); i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            junk[i] = (uint8_t)x;
        }
        r = xwrite(fd, junk, sizeof(junk));
    } else if (!strcmp(c, "outside-ram") || !strcmp(c, "outside-ram-wrap")) {
        hello_ok(fd);
        one_page(&b, !strcmp(c, "outside-ram") ? 0x40000000ull : 0xfffffffffffff000ull);
        r = frame(fd, MSG_MEM_PAGES, b.data, (uint32_t)b.len);
    } else if (!strcmp(c, "unaligned")) {
        hello_ok(fd);
        one_page(&b, 0x200800);
        r = frame(fd, MSG_MEM_PAGES, b.data, (uint32_t)b.len);
    } else if (!strcmp(c, "batch-count")) {
        /* claims 3 pages, carries 1: page data read as entries */
        hello_ok(fd);
        one_page(&b, 0x200000);
        buf_patch_u32(&b, 0, 3);
        hdr_fill(h, MSG_MAGIC, MSG_MEM_PAGES, 0, (uint32_t)b.len, pages_sum(&b));
        r = xwrite(fd, h, sizeof(h)) < 0 || xwrite(fd, b.data, b.len) < 0 ? -1 : 0;
    } else if (!strcmp(c, "complete-nostate")) {
        hello_ok(fd);
        one_page(&b, 0x200000);
        r = frame(fd, MSG_MEM_PAGES, b.data, (uint32_t)b.len);
        if (!r)
            r = frame(fd, MSG_COMPLETE, NULL, 0);
    } else if (!strcmp(c, "cpuid")) {
        char *json = config_json(true);
        r = send_hello_raw(fd, MIG_PROTO_VERSION, json);
        free(json);
    } else if (!strcmp(c, "bad-type")) {
        hello_ok(fd);
        hdr_fill(h, MSG_MAGIC, 42, 0, 0, sum32("", 0));
        r = xwrite(fd, h, sizeof(h));
    } else if (!strcmp(c, "bad-flags")) {
        hello_ok(fd);
        hdr_fill(h, MSG_MAGIC, MSG_COMPLETE, 0x8000, 0, sum32("", 0));
        r = xwrite(fd, h, sizeof(h));
    } else if (!strcmp(c, "bad-json")) {
        r = send_hello_raw(fd, MIG_PROTO_VERSION, "{\"memory_size\": 67108864, \"vcpus\": ");
    } else if (!strcmp(c, "state-garbage")) {
        hello_ok(fd);
        static const char s[] = "\x03" "cpuXXXXXXXXXXXXXXXXXXXXXXXX-not-a-section";
        r = frame(fd, MSG_STATE, s, sizeof(s) - 1);
    } else if (!strcmp(c, "second-hello")) {
        hello_ok(fd);
        char *json = config_json(false);
        r = send_hello_raw(fd, MIG_PROTO_VERSION, json);
        free(json);
    } else if (!strcmp(c, "ack-from-source")) {
        hello_ok(fd);
        ack_encode(&b, ACK_RESUMED, "");
        r = frame(fd, MSG_ACK, b.data, (uint32_t)b.len);
    } else if (!strcmp(c, "stray-join")) {
        /* a HELLO for 2 streams; a JOIN from another session is refused, the
         * right one accepted; then stream 0 ends */
        hello_streams = 2;
        hello_ok(fd);
        char err[256];
        for (int k = 0; k < 2; k++) {
            int sfd = net_connect(dest_addr, NULL, 5000, err, sizeof(err));
            if (sfd < 0)
                die2("%s", err);
            b.len = 0;
            join_encode(&b, (const uint8_t *)(k == 0 ? "another session!" : SESSION), 1);
            if (frame(sfd, MSG_JOIN, b.data, (uint32_t)b.len) == 0)
                print_reply(sfd);
            if (k == 0)
                close(sfd);   /* the accepted one stays open until the end */
        }
        shutdown(fd, SHUT_WR);
    } else if (!strcmp(c, "eof-after-hello")) {
        hello_ok(fd);
        shutdown(fd, SHUT_WR);
    } else {
        die2("unknown case '%s' (migtool cases lists them)", c);
    }
    buf_free(&b);
    return r;
}

static int cmd_send(const char *addr, const char *c)
{
    char err[256];
    dest_addr = addr;
    int fd = net_connect(addr, NULL, 5000, err, sizeof(err));
    if (fd < 0)
        die2("%s", err);
    play(fd, c);
    fflush(stdout);
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (print_reply(fd) >= 0)
        ;
    close(fd);
    return 0;
}

/* ---- proxy ------------------------------------------------------------- */

/* destination -> source, raw; with swallow set, bytes are kept (the first
 * 20: an ACK's header and status) instead of forwarded */
struct pump {
    int from, to;
    atomic_bool swallow;
    atomic_size_t swallowed;
    uint8_t first[20];
};

static void *pump_raw(void *arg)
{
    struct pump *p = arg;
    uint8_t b[65536];
    for (;;) {
        ssize_t n = read(p->from, b, sizeof(b));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (atomic_load(&p->swallow)) {
            size_t had = atomic_load(&p->swallowed);
            for (size_t i = 0; i < (size_t)n && had + i < sizeof(p->first); i++)
                p->first[had + i] = b[i];
            atomic_fetch_add(&p->swallowed, (size_t)n);
            continue;
        }
        if (xwrite(p->to, b, (size_t)n) < 0)
            break;
    }
    if (!atomic_load(&p->swallow))
        shutdown(p->to, SHUT_WR);
    return NULL;
}

static int read_all(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (uint8_t *)p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* MEM_PAGES messages held back (a window of the latest ones, about 64 MiB)
 * until STATE shows which were the last. They stay held across the SYNCs of
 * pre-copy, which go ahead (the destination answers them at once, and page
 * order is kept): a throttled guest may dirty nothing in the pause, and the
 * pages of the last rounds are then the only ones never re-sent. */
#define HOLD_MAX 64
struct held {
    uint8_t h[MSG_HEADER_SIZE];
    uint8_t *p;
    uint32_t len;
};

/* Choose a non-zero page among the held batches and flip one bit in it.
 * Preferred: a page of the dirtier's working set (GPA 16 MiB up, its header
 * page excepted) holding the newest generation seen (qword 0 = gen << 32 |
 * page index), i.e. written in the pass under way, which the dirtier
 * verifies at the end of that pass; the last copy of it sent (everything
 * sent after it is held too, and a newer copy would be chosen), so nothing
 * overwrites the flip; the bit is bit 6 of the stamp's page index. With
 * any_page and no such page, the last non-zero page sent (bit 6 of byte 8).
 * Returns the GPA, or UINT64_MAX. */
#define WS_BASE 0x1000000ull
static uint64_t corrupt_held(struct held *q, int n, bool any_page, bool *in_ws)
{
    uint8_t *ws_p = NULL, *any_p = NULL;
    uint64_t ws = UINT64_MAX, any = UINT64_MAX, best_gen = 0;
    for (int k = 0; k < n; k++) {
        uint8_t *p = q[k].p;
        uint32_t len = q[k].len, cnt = le32_load(p);
        if (p[4] != CODEC_NONE || PAGES_HEAD + 8ull * cnt > len)
            continue;
        uint64_t off = PAGES_HEAD + 8ull * cnt;     /* the data pages follow the entries */
        for (uint32_t i = 0; i < cnt && off + MIG_PAGE_SIZE <= len; i++) {
            uint64_t e = le64_load(p + PAGES_HEAD + 8ull * i), gpa = e & ~(uint64_t)(MIG_PAGE_SIZE - 1);
            if (e & PAGE_F_ZERO)
                continue;
            uint8_t *page = p + off;
            off += MIG_PAGE_SIZE;
            uint64_t stamp = le64_load(page);
            if (gpa > WS_BASE && (uint32_t)stamp == (gpa - WS_BASE) / MIG_PAGE_SIZE &&
                (ws == UINT64_MAX || stamp >> 32 >= best_gen)) {
                ws = gpa;
                ws_p = page;
                best_gen = stamp >> 32;
            }
            any = gpa;
            any_p = page;
        }
    }
    *in_ws = ws_p != NULL;
    /* page data is outside the frame checksum (pages.h): nothing to re-seal */
    if (ws_p) {
        ws_p[0] ^= 0x40;
        return ws;
    }
    if (any_page && any_p) {
        any_p[8] ^= 0x40;
        return any;
    }
    return UINT64_MAX;
}

/* Forward the oldest held message; false once the destination is gone. */
static bool release_one(int dst, struct held *q, int *n)
{
    bool ok = xwrite(dst, q[0].h, sizeof(q[0].h)) == 0 && xwrite(dst, q[0].p, q[0].len) == 0;
    free(q[0].p);
    memmove(q, q + 1, (size_t)(*n - 1) * sizeof(*q));
    (*n)--;
    return ok;
}

static int cmd_proxy(const char *listen_addr, const char *dest, const char *mutation)
{
    char err[256];
    bool any_page = !strcmp(mutation, "corrupt-final-any");
    bool corrupt = any_page || !strcmp(mutation, "corrupt-final");
    bool drop_ack = !strcmp(mutation, "drop-ack");
    bool burst = !strcmp(mutation, "burst-tail");
    if (!corrupt && !drop_ack && !burst && strcmp(mutation, "none"))
        die2("unknown mutation '%s' (none, corrupt-final, corrupt-final-any, drop-ack, burst-tail)", mutation);
    int lfd = net_listen(listen_addr, err, sizeof(err));
    if (lfd < 0)
        die2("%s", err);
    printf("proxy: listening\n");
    fflush(stdout);
    int src = net_accept(lfd, 60000, err, sizeof(err));
    close(lfd);
    if (src < 0)
        die2("%s", err);
    int dst = net_connect(dest, NULL, 5000, err, sizeof(err));
    if (dst < 0)
        die2("%s", err);
    static struct pump back;
    back.from = dst;
    back.to = src;
    pthread_t t;
    pthread_create(&t, NULL, pump_raw, &back);

    /* Forward source -> destination message by message; when corrupting,
     * MEM_PAGES go through the held window. */
    static struct held q[HOLD_MAX];
    int nq = 0, nt = 0;
    uint8_t tail_h[2][MSG_HEADER_SIZE], *tail[2];
    uint32_t tail_len[2];
    uint8_t h[MSG_HEADER_SIZE];
    bool done = false;
    unsigned long msgs = 0;
    while (!done && read_all(src, h, sizeof(h)) == 0) {
        uint32_t len = le32_load(h + 8);
        uint16_t type = le16_load(h + 4);
        if (le32_load(h) != MSG_MAGIC || len > MSG_MAX_PAYLOAD) {
            printf("proxy: unexpected frame from the source\n");
            break;
        }
        uint8_t *p = malloc(len ? len : 1);
        if (!p || read_all(src, p, len) < 0) {
            free(p);
            break;
        }
        msgs++;
        if (corrupt && type == MSG_MEM_PAGES && len >= 4) {
            if (nq == HOLD_MAX && !release_one(dst, q, &nq))
                done = true;
            memcpy(q[nq].h, h, sizeof(h));
            q[nq].p = p;
            q[nq].len = len;
            nq++;
            continue;
        }
        if (corrupt && type == MSG_STATE) {
            bool in_ws;
            uint64_t gpa = corrupt_held(q, nq, any_page, &in_ws);
            if (gpa != UINT64_MAX)
                printf("proxy: corrupted %s page 0x%llx (frame checksum unaffected)\n",
                       in_ws ? "working-set" : "other", (unsigned long long)gpa);
            else
                printf("proxy: no page to corrupt before STATE\n");
            corrupt = false;
        }
        /* the held pages go before anything but a SYNC (see struct held) */
        while (nq && !done && type != MSG_SYNC)
            if (!release_one(dst, q, &nq))
                done = true;
        if (burst && (type == MSG_STATE || type == MSG_DIGEST)) {
            /* held until COMPLETE, then all three in one write */
            if (nt == 2) {
                printf("proxy: more than STATE and DIGEST before COMPLETE\n");
                break;
            }
            memcpy(tail_h[nt], h, sizeof(h));
            tail[nt] = p;
            tail_len[nt++] = len;
            continue;
        }
        if (burst && type == MSG_COMPLETE) {
            struct buf b = { 0 };
            for (int i = 0; i < nt; i++) {
                buf_put_bytes(&b, tail_h[i], MSG_HEADER_SIZE);
                buf_put_bytes(&b, tail[i], tail_len[i]);
                free(tail[i]);
            }
            buf_put_bytes(&b, h, sizeof(h));
            printf("proxy: sent %d message(s) and COMPLETE in one write of %zu bytes\n", nt, b.len);
            if (xwrite(dst, b.data, b.len) < 0)
                done = true;
            buf_free(&b);
            nt = 0;
            free(p);
            continue;
        }
        if (type == MSG_COMPLETE && drop_ack)
            atomic_store(&back.swallow, true);
        if (!done && (xwrite(dst, h, sizeof(h)) < 0 || (len && xwrite(dst, p, len) < 0)))
            done = true;
        free(p);
        if (type == MSG_COMPLETE && drop_ack) {
            /* the destination answers; the source never hears it */
            for (int i = 0; i < 1000 && atomic_load(&back.swallowed) < sizeof(back.first); i++)
                usleep(10000);
            size_t got = atomic_load(&back.swallowed);
            uint32_t st = got >= 20 && le16_load(back.first + 4) == MSG_ACK ? le32_load(back.first + 16) : 0;
            printf("proxy: dropped %zu bytes of the destination's answer (ACK status %u), cut the source off\n",
                   got, st);
            shutdown(src, SHUT_RDWR);
            done = true;
        }
    }
    while (nq)
        release_one(dst, q, &nq);
    shutdown(dst, SHUT_WR);
    pthread_join(t, NULL);
    printf("proxy: done after %lu messages\n", msgs);
    close(src);
    close(dst);
    return 0;
}

/* ---- relay --------------------------------------------------------------- */

static int cmd_relay(const char *listen_addr, const char *dest, const char *flip_at)
{
    char err[256];
    unsigned long long at = strtoull(flip_at, NULL, 10), seen = 0;
    int lfd = net_listen(listen_addr, err, sizeof(err));
    if (lfd < 0)
        die2("%s", err);
    printf("relay: listening\n");
    int src = net_accept(lfd, 60000, err, sizeof(err));
    close(lfd);
    int dst = src < 0 ? -1 : net_connect(dest, NULL, 5000, err, sizeof(err));
    if (dst < 0)
        die2("%s", err);
    static struct pump back;
    back.from = dst;
    back.to = src;
    pthread_t t;
    pthread_create(&t, NULL, pump_raw, &back);
    uint8_t b[65536];
    ssize_t n;
    while ((n = read(src, b, sizeof(b))) > 0) {
        if (seen <= at && at < seen + (unsigned long long)n) {
            b[at - seen] ^= 0x04;
            printf("relay: flipped byte %llu\n", at);
        }
        seen += (unsigned long long)n;
        if (xwrite(dst, b, (size_t)n) < 0)
            break;
    }
    shutdown(dst, SHUT_WR);
    pthread_join(t, NULL);
    printf("relay: done after %llu bytes\n", seen);
    close(src);
    close(dst);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && !strcmp(argv[1], "cases")) {
        for (int i = 0; cases[i]; i++)
            puts(cases[i]);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "send"))
        return cmd_send(argv[2], argv[3]);
    if (argc == 5 && !strcmp(argv[1], "proxy"))
        return cmd_proxy(argv[2], argv[3], argv[4]);
    if (argc == 5 && !strcmp(argv[1], "relay"))
        return cmd_relay(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: migtool send ADDR CASE | proxy LISTEN DEST none|corrupt-final|corrupt-final-any|drop-ack|burst-tail | relay LISTEN DEST FLIP_AT | cases\n");
    return 2;
}
