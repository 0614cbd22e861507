/* Migration wire protocol: message framing and payload codecs.
 * docs/migration-protocol.md describes the protocol as a whole.
 *
 * Every message is a 16-byte little-endian header and a payload:
 *     u32 magic 'FRRY' (0x59525246), u16 type, u16 flags (0),
 *     u32 payload length (<= MSG_MAX_PAYLOAD), u32 checksum
 * where checksum is XXH3_64bits(payload) truncated to its low 32 bits on a
 * plaintext stream, and 0 over TLS (whose records carry an AEAD tag). */
#ifndef FERRY_STREAM_H
#define FERRY_STREAM_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include <sys/uio.h>

#include "migration/chan.h"
#include "migration/vmstate.h"

#define MSG_MAGIC        0x59525246u          /* "FRRY" on the wire */
#define MSG_HEADER_SIZE  16
#define MSG_MAX_PAYLOAD  (16u << 20)
#define MSG_MAX_IOV      512              /* pieces of one gathered message */

/* Protocol version carried by HELLO: major << 16 | minor. Peers must agree on
 * the major; a minor bump only adds things an older peer may ignore. */
#define MIG_PROTO_MAJOR  3   /* 3.0: disks on the streams (DISK_BLOCKS, DISK_DIGEST); 2.0: several
                                streams (JOIN, FLUSH), MEM_PAGES v2, digest after hand-over */
#define MIG_PROTO_MINOR  0
#define MIG_PROTO_VERSION ((uint32_t)MIG_PROTO_MAJOR << 16 | MIG_PROTO_MINOR)

#define MIG_PAGE_SIZE    4096u

enum msg_type {
    MSG_HELLO = 1,      /* u32 protocol version, JSON VM configuration and session */
    MSG_MEM_PAGES,      /* pages.h */
    MSG_STATE,          /* one or more vmstate sections */
    MSG_DIGEST,         /* u64 chunk size, u64 XXH3 digest per chunk */
    MSG_COMPLETE,       /* empty: the source has sent everything */
    MSG_ABORT,          /* reason string (UTF-8, not NUL-terminated) */
    MSG_ACK,            /* u32 status (enum ack_status), reason string */
    MSG_COMMIT,         /* empty: the source hands the VM over; the destination runs it */
    MSG_JOIN,           /* 16-byte session id, u32 stream index: an extra stream of a migration */
    MSG_FLUSH,          /* empty: this stream carries no more pages (switchover) */
    MSG_SYNC,           /* empty: answer ACK(ready) once everything before it is taken in */
    MSG_DISK_BLOCKS,    /* disks.h: a piece of a disk image (shared-nothing migration) */
    MSG_DISK_DIGEST,    /* disks.h: a disk image's digest per 1 MiB chunk */
    MSG_TYPE_MAX = MSG_DISK_DIGEST,
};

enum ack_status {
    ACK_READY = 1,      /* after HELLO/JOIN: send; after COMPLETE: verified and loaded */
    ACK_RESUMED = 2,    /* destination runs the VM: the source may stop */
    ACK_REJECTED = 3,   /* destination refused (reason says why) */
    ACK_VERIFIED = 4,   /* after the hand-over: the digest matched */
    ACK_MISMATCH = 5,   /* after the hand-over: the digest did not match (reason: where) */
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
    uint32_t len, sum;
    uint8_t *payload;           /* len bytes, never NULL after a successful read */
    enum msg_error error;
};

const char *msg_type_name(uint16_t type);

/* Send one message, its payload gathered from n pieces (n <= MSG_MAX_IOV),
 * e.g. pages straight from guest RAM; the checksum covers the first nsum
 * pieces (MEM_PAGES: see pages.h). 0, or -1 with c->err. */
int msg_writev(struct chan *c, uint16_t type, const struct iovec *payload, int n, int nsum);
int msg_write(struct chan *c, uint16_t type, const void *payload, uint32_t len);

/* Receive and validate one message into m (payload allocated, msg_free it).
 * Returns 0, or -1 with m->error set and a one-line reason in err. After any
 * error other than MSG_E_EOF the stream is out of sync: drop the connection. */
int msg_read(struct chan *c, struct msg *m, char *err, size_t errlen);
/* The same in steps, for payloads read straight to their place (pages.c):
 * the header alone, then payload pieces, then the checksum over them. */
int msg_read_header(struct chan *c, struct msg *m, char *err, size_t errlen);
int msg_read_into(struct chan *c, struct msg *m, const struct iovec *iov, int n, size_t *got,
                  char *err, size_t errlen);
int msg_check_sum(const struct chan *c, struct msg *m, const struct iovec *iov, int n,
                  char *err, size_t errlen);
void msg_free(struct msg *m);

/* Copy payload bytes [off, len) into out as a printable C string (control
 * characters become '?'), e.g. an ABORT or ACK reason. */
void msg_text(const struct msg *m, size_t off, char *out, size_t outlen);

/* ---- HELLO, ACK, DIGEST ------------------------------------------------ */

int hello_encode(struct buf *b, const char *config_json);
/* Check the peer's protocol version and return its configuration as a
 * malloc'd NUL-terminated string in *json. Returns 0 or -1 with a reason
 * ("incompatible migration protocol version 2.0 (this side speaks 1.0)"). */
int hello_decode(const struct msg *m, uint32_t *version, char **json, char *err, size_t errlen);

int ack_encode(struct buf *b, uint32_t status, const char *reason);
int ack_decode(const struct msg *m, uint32_t *status, char *reason, size_t reasonlen,
               char *err, size_t errlen);

#define SESSION_ID_LEN 16
int join_encode(struct buf *b, const uint8_t session[SESSION_ID_LEN], uint32_t index);
int join_decode(const struct msg *m, uint8_t session[SESSION_ID_LEN], uint32_t *index,
                char *err, size_t errlen);

int digest_encode(struct buf *b, uint64_t chunk_size, const uint64_t *digests, size_t n);
/* chunk_size must be a non-zero multiple of MIG_PAGE_SIZE; *digests is malloc'd. */
int digest_decode(const struct msg *m, uint64_t *chunk_size, uint64_t **digests, size_t *n,
                  char *err, size_t errlen);

#endif
