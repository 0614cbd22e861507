/* Migration wire protocol: message framing and payload codecs.
 * docs/migration-protocol.md describes the protocol as a whole.
 *
 * Every message is a 16-byte little-endian header and a payload:
 *     u32 magic 'FRRY' (0x59525246), u16 type, u16 flags (0),
 *     u32 payload length (<= MSG_MAX_PAYLOAD), u32 checksum
 * where checksum is XXH3_64bits(payload) truncated to its low 32 bits. */
#ifndef FERRY_STREAM_H
#define FERRY_STREAM_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration/vmstate.h"

#define MSG_MAGIC        0x59525246u          /* "FRRY" on the wire */
#define MSG_HEADER_SIZE  16
#define MSG_MAX_PAYLOAD  (16u << 20)

/* Protocol version carried by HELLO: major << 16 | minor. Peers must agree on
 * the major; a minor bump only adds things an older peer may ignore. */
#define MIG_PROTO_MAJOR  1
#define MIG_PROTO_MINOR  1   /* 1.1: vm section v3 (TSC rate), RESUMED once the vCPUs run */
#define MIG_PROTO_VERSION ((uint32_t)MIG_PROTO_MAJOR << 16 | MIG_PROTO_MINOR)

#define MIG_PAGE_SIZE    4096u

enum msg_type {
    MSG_HELLO = 1,      /* u32 protocol version, JSON VM configuration */
    MSG_MEM_PAGES,      /* u32 n, n x {u64 gpa, u8 flags, [4096 bytes unless zero]} */
    MSG_STATE,          /* one or more vmstate sections */
    MSG_DIGEST,         /* u64 chunk size, u64 XXH3 digest per chunk */
    MSG_COMPLETE,       /* empty: the source has sent everything */
    MSG_ABORT,          /* reason string (UTF-8, not NUL-terminated) */
    MSG_ACK,            /* u32 status (enum ack_status), reason string */
    MSG_COMMIT,         /* empty: the source hands the VM over; the destination runs it */
    MSG_TYPE_MAX = MSG_COMMIT,
};

enum ack_status {
    ACK_READY = 1,      /* after HELLO: send memory; after COMPLETE: verified and loaded */
    ACK_RESUMED = 2,    /* destination runs the VM: the source may stop */
    ACK_REJECTED = 3,   /* destination refused (reason says why) */
};

/* Why msg_read failed (m->error). */
enum msg_error {
    MSG_OK = 0,
    MSG_E_EOF,          /* peer closed cleanly between messages */
    MSG_E_IO,           /* read error (errno in the message) */
    MSG_E_TRUNCATED,    /* peer closed inside a message */
    MSG_E_MAGIC,
    MSG_E_TYPE,         /* unknown message type */
    MSG_E_FLAGS,        /* flag bits this side does not understand */
    MSG_E_OVERSIZED,    /* length above MSG_MAX_PAYLOAD (rejected before allocating) */
    MSG_E_CHECKSUM,
    MSG_E_NOMEM,
};

struct msg {
    uint16_t type, flags;
    uint32_t len;
    uint8_t *payload;           /* len bytes, never NULL after a successful read */
    enum msg_error error;
};

const char *msg_type_name(uint16_t type);

/* Send one message: header then payload, retrying short writes and EINTR
 * (no SIGPIPE on sockets). Returns 0 or -errno (-EMSGSIZE above the max). */
int msg_write(int fd, uint16_t type, const void *payload, uint32_t len);

/* Receive and validate one message into m (payload allocated, msg_free it).
 * Returns 0, or -1 with m->error set and a one-line reason in err. After any
 * error other than MSG_E_EOF the stream is out of sync: drop the connection. */
int msg_read(int fd, struct msg *m, char *err, size_t errlen);
void msg_free(struct msg *m);

/* Copy payload bytes [off, len) into out as a printable C string (control
 * characters become '?'), e.g. an ABORT or ACK reason. */
void msg_text(const struct msg *m, size_t off, char *out, size_t outlen);

/* ---- counters ---------------------------------------------------------- */

struct stream_stats {
    uint64_t bytes;             /* MEM_PAGES payload bytes produced or consumed */
    uint64_t pages;             /* pages, zero pages included */
    uint64_t zero_pages;        /* pages sent as markers, without data */
};

/* ---- MEM_PAGES --------------------------------------------------------- */

#define PAGE_F_ZERO 0x01        /* all-zero page: no data follows */

/* True when the 4 KiB page holds only zero bytes. */
bool page_is_zero(const void *page);

/* Append one 4 KiB page to a batch (an empty buf starts one); an all-zero
 * page becomes a 9-byte marker. Send with msg_write(fd, MSG_MEM_PAGES, b->data,
 * b->len) and reset b->len = 0. Returns 0, -EINVAL (misaligned gpa), -E2BIG
 * (batch would exceed MSG_MAX_PAYLOAD) or -ENOMEM. st may be NULL. */
int pages_batch_add(struct buf *b, uint64_t gpa, const void *page4k, struct stream_stats *st);

/* Called per page in order; data is NULL for a zero page, else 4096 bytes
 * (not necessarily aligned). Return 0, or -1 with a reason in err to stop. */
typedef int (*page_fn)(uint64_t gpa, const void *data, void *ctx, char *err, size_t errlen);

/* Validate the whole batch (aligned gpas, known flags, count matching the
 * length), then call fn for each page. Returns 0 or -1 with a reason. */
int pages_batch_parse(const struct msg *m, page_fn fn, void *ctx, struct stream_stats *st,
                      char *err, size_t errlen);

/* ---- HELLO, ACK, DIGEST ------------------------------------------------ */

int hello_encode(struct buf *b, const char *config_json);
/* Check the peer's protocol version and return its configuration as a
 * malloc'd NUL-terminated string in *json. Returns 0 or -1 with a reason
 * ("incompatible migration protocol version 2.0 (this side speaks 1.0)"). */
int hello_decode(const struct msg *m, uint32_t *version, char **json, char *err, size_t errlen);

int ack_encode(struct buf *b, uint32_t status, const char *reason);
int ack_decode(const struct msg *m, uint32_t *status, char *reason, size_t reasonlen,
               char *err, size_t errlen);

int digest_encode(struct buf *b, uint64_t chunk_size, const uint64_t *digests, size_t n);
/* chunk_size must be a non-zero multiple of MIG_PAGE_SIZE; *digests is malloc'd. */
int digest_decode(const struct msg *m, uint64_t *chunk_size, uint64_t **digests, size_t *n,
                  char *err, size_t errlen);

#endif
