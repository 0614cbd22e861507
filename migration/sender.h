/* The source's streams: N connections (TCP, TLS unless --insecure), each
 * with a thread that sends its share of the dirty pages. A page always goes
 * on the same stream (by its 2 MiB unit of guest RAM), so TCP's order on that
 * stream keeps a resent page behind its older copy and the destination never
 * needs a barrier between rounds. Stream 0 also carries the control messages,
 * written by the engine only between rounds. */
#ifndef FERRY_SENDER_H
#define FERRY_SENDER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration/chan.h"
#include "migration/dirty.h"
#include "migration/migrate.h"
#include "migration/pages.h"
#include "migration/stream.h"

#define UNIT_SHIFT 21                 /* pages are dealt to streams in 2 MiB units */

struct sender;

struct stream {
    struct sender *s;
    int index;
    struct chan ch;
    struct pages_tx tx;
    pthread_t thread;
    bool live;
    char err[256];
    uint64_t bw_t0, bw_bytes;         /* bandwidth-cap window */
    uint8_t *dbuf;                    /* a disk piece (shared-nothing) */
    unsigned gen;                     /* last round done */
};

struct sender {
    struct vm *vm;
    struct migration *mg;
    struct dirty_log d;
    int n;
    struct stream st[MIG_MAX_STREAMS];
    pthread_mutex_t lock;             /* guards the round hand-out below */
    pthread_cond_t go, done_cv;
    unsigned gen;                     /* the round handed out */
    int done;                         /* streams finished with it */
    bool round0, final, sync, quit;
    bool disks;                       /* shared-nothing: the disks travel too (disks.h) */
    atomic_bool failed;               /* a stream failed: all stop at once */
    bool peer_spoke;                  /* the destination wrote or closed stream 0 mid-round */
    atomic_int codec;                 /* enum page_codec for the next messages */
    atomic_uint_fast64_t scanned;     /* round 0 progress, pages */
    uint8_t session[SESSION_ID_LEN];
    int rtt_us;                       /* stream 0's TCP handshake round trip */
};

/* Open the streams: stream 0 sends HELLO (hello_json), the others JOIN; each
 * waits for the destination's ACK. 0, or -1 with a reason. */
int sender_open(struct sender *s, const char *hello_json, char *err, size_t errlen);
/* Read the destination's ACK on c: its status, or -1 with a reason (an
 * ABORT is reported as "destination aborted: ..."). */
int sender_read_ack(struct chan *c, char *reason, size_t rlen, char *err, size_t errlen);
/* Start the stream threads. */
int sender_start(struct sender *s, char *err, size_t errlen);
/* Send the pages in the dirty log over all streams, and with disks the
 * disks' data extents (round0) or dirty blocks; with final, each stream
 * but 0 ends with FLUSH. tick(s) runs every 200 ms meanwhile. 0, or -1 with
 * the first failure (a stream's, or "cancelled by the operator"). */
int sender_round(struct sender *s, bool round0, bool final, void (*tick)(struct sender *),
                 char *err, size_t errlen);
/* Drain: every stream sends SYNC and waits until the destination has taken
 * in everything before it (its ACK), so what the socket buffers held is
 * not left for the pause (a compressed backlog can be seconds of work). */
int sender_sync(struct sender *s, char *err, size_t errlen);
/* Page totals over all streams. */
void sender_totals(struct sender *s, struct page_stats *out);
/* Stop and join the threads, close the connections. */
void sender_close(struct sender *s);

#endif
