/* Self-announcement after a migration: the destination makes the VM network's
 * switches and bridges learn that the VM's MAC now lives behind its port, by
 * broadcasting frames with that source MAC from the VM's NIC backend:
 *   - RARP (ethertype 0x8035, opcode 3 "reverse request", sender = target = MAC,
 *     IPs zero), byte for byte what QEMU's qemu_announce_self sends;
 *   - with an IPv4 address known, a gratuitous ARP (ethertype 0x0806, request,
 *     sender IP = target IP = the address, target MAC zero, RFC 5227
 *     announcement) so that hosts refresh their ARP caches too.
 * Frames are 60 bytes (the Ethernet minimum without FCS), padded with zeros.
 *
 * The announcer sends `rounds` rounds on a thread of its own: round 0 at once,
 * then after initial_ms, initial_ms + step_ms, ... (each at most max_ms) —
 * QEMU's announce-initial/-step/-max/-rounds, defaults 5 rounds, 50, 150, 250,
 * 350 ms apart. A round first calls cfg.round (virtio-net with
 * VIRTIO_NET_F_GUEST_ANNOUNCE sets VIRTIO_NET_S_ANNOUNCE there and raises a
 * config interrupt, so the guest announces all its addresses itself) and then
 * sends the frames through cfg.send (e.g. tap_send_cb). */
#ifndef FERRY_ANNOUNCE_H
#define FERRY_ANNOUNCE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ANNOUNCE_FRAME_LEN       60
#define ANNOUNCE_ETH_P_ARP       0x0806
#define ANNOUNCE_ETH_P_RARP      0x8035
#define ANNOUNCE_OP_ARP_REQUEST  1
#define ANNOUNCE_OP_RARP_REQUEST 3

/* RARP announcement for MAC; returns ANNOUNCE_FRAME_LEN. */
size_t announce_build_rarp(uint8_t frame[ANNOUNCE_FRAME_LEN], const uint8_t mac[6]);
/* Gratuitous ARP (request, sender IP = target IP = ip, in network byte order:
 * 10.88.0.5 is {10, 88, 0, 5}); returns ANNOUNCE_FRAME_LEN. */
size_t announce_build_garp(uint8_t frame[ANNOUNCE_FRAME_LEN], const uint8_t mac[6],
                           const uint8_t ip[4]);

/* "52:54:00:12:34:56" <-> bytes (hex digits either case; exactly 17 characters).
 * net_mac_parse: 0, or -1 when malformed. */
int net_mac_parse(const char *s, uint8_t mac[6]);
void net_mac_format(const uint8_t mac[6], char out[18]);

struct announce_params {
    int rounds;          /* rounds to send (>= 1) */
    int initial_ms;      /* delay after the first round */
    int step_ms;         /* added to the delay after each further round */
    int max_ms;          /* cap on any delay */
};
/* All fields zero means these defaults; otherwise the fields are taken as given. */
#define ANNOUNCE_PARAMS_DEFAULT { .rounds = 5, .initial_ms = 50, .step_ms = 100, .max_ms = 550 }

/* The delay in ms after round ROUND (0-based) before the next one; -1 after the
 * last round (or for a round out of range). */
int announce_delay_ms(const struct announce_params *p, int round);

/* Send a frame: 0 (or the byte count) when sent, -errno on failure. A failure
 * is counted and the announcer carries on. */
typedef int (*announce_send_fn)(void *opaque, const void *frame, size_t len);
typedef void (*announce_round_fn)(void *opaque, int round);

struct announce_cfg {
    uint8_t mac[6];
    bool has_ip;                 /* also send a gratuitous ARP for ip */
    uint8_t ip[4];
    struct announce_params params;
    announce_send_fn send;       /* may be NULL: then no frames */
    announce_round_fn round;     /* may be NULL; called first in each round */
    void *opaque;                /* for both callbacks */
};

/* One round, synchronously, on the caller's thread: cfg->round, then RARP
 * (+ GARP). Returns the frames sent; failures are added to *errors and the last
 * one stored in *last_error (either may be NULL). */
int announce_once(const struct announce_cfg *cfg, int round, int *errors, int *last_error);

struct announce_stats {
    int rounds;          /* rounds done */
    int frames;          /* frames sent */
    int errors;          /* frames that failed */
    int last_error;      /* -errno of the last failure */
    bool cancelled;      /* stopped by announcer_cancel before the last round */
};

struct announcer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool started, joined, cancel, done;
    struct announce_cfg cfg;
    struct announce_stats st;
};

/* Start announcing on a new thread (with every signal blocked). The callbacks
 * run on that thread and must not call announcer_cancel/wait. 0, or -1 with err
 * set. */
int announcer_start(struct announcer *a, const struct announce_cfg *cfg, char *err, size_t errlen);
/* Stop (a round under way finishes first) and join. Safe when already done,
 * joined, or never started. */
void announcer_cancel(struct announcer *a);
/* Join after the last round. */
void announcer_wait(struct announcer *a);
/* The last round has been sent (or the thread was joined). */
bool announcer_done(struct announcer *a);
void announcer_stats(struct announcer *a, struct announce_stats *s);

#endif
