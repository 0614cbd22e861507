/* virtio-net over modern virtio-pci, backed by a tap device (devices/tap.h).
 *
 * Three queues, receive (0), transmit (1) and control (2), served by one
 * thread of the device's own that polls the queues' kick eventfds and the
 * tap: a vCPU never copies a packet. The thread runs SCHED_BATCH: a kick never
 * preempts the vCPU that made it, so that the guest queues frames in batches.
 * The virtio 1.x net header is the tap's vnet header, so frames pass through
 * unchanged: the guest's checksum and segmentation offloads (HOST_*) go to
 * the tap as they are, and GUEST_* are offered only when this tap can
 * produce them (tap_probe_offload), then switched on with TUNSETOFFLOAD once
 * the driver accepted its features. Receive buffers may be mergeable
 * (VIRTIO_NET_F_MRG_RXBUF): a 64 KiB GSO frame then spans several. Frames are
 * read from the tap straight into them when the guest posted room for the
 * largest frame, else through a bounce buffer.
 *
 * Migration: the section "virtio-netN" carries the transport (queues with
 * their indices, MSI-X), the MAC and the IPv4 address the guest was seen
 * using, and the config status. Frames still in the tap's queue or the
 * device's one-frame bounce buffer are dropped (TCP retransmits them); every
 * chain is either completed before the pause or left in the ring for the
 * destination. After the VM runs on the destination, a guest that negotiated
 * GUEST_ANNOUNCE is asked to announce itself (S_ANNOUNCE + config interrupt;
 * it sends its own gratuitous ARPs and acks on the control queue, which
 * clears the bit), and the device announces the MAC there itself too (RARP,
 * plus a gratuitous ARP for the learned address; devices/announce.h), for
 * guests that do not, so that the VM network's switches learn its new port.
 * The control queue answers VIRTIO_NET_ERR to every other command: no
 * feature that needs one is offered. */
#ifndef FERRY_VIRTIO_NET_H
#define FERRY_VIRTIO_NET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/announce.h"
#include "devices/io_thread.h"
#include "devices/tap.h"
#include "devices/virtio_pci.h"
#include "migration/vmstate.h"

#define VIRTIO_ID_NET          1
#define VIRTIO_NET_QUEUE_SIZE  256
#define VIRTIO_NET_RXQ         0
#define VIRTIO_NET_TXQ         1
#define VIRTIO_NET_CTRLQ       2
#define VIRTIO_NET_NQUEUES     3

/* feature bits */
#define VIRTIO_NET_F_CSUM       0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN  9
#define VIRTIO_NET_F_HOST_TSO4  11
#define VIRTIO_NET_F_HOST_TSO6  12
#define VIRTIO_NET_F_HOST_ECN   13
#define VIRTIO_NET_F_MRG_RXBUF  15
#define VIRTIO_NET_F_STATUS     16
#define VIRTIO_NET_F_CTRL_VQ    17
#define VIRTIO_NET_F_GUEST_ANNOUNCE 21
#define VIRTIO_NET_S_LINK_UP    1
#define VIRTIO_NET_S_ANNOUNCE   2

/* control queue: class, command, data, then the device's one-byte ack */
#define VIRTIO_NET_OK           0
#define VIRTIO_NET_ERR          1
#define VIRTIO_NET_CTRL_ANNOUNCE     3
#define VIRTIO_NET_CTRL_ANNOUNCE_ACK 0

#define VIRTIO_NET_FRAME_MAX   (65536 + 14 + 4)   /* a GSO frame: 64 KiB IP + Ethernet + VLAN */

struct virtio_net_stats {
    uint64_t rx_packets, rx_bytes, rx_dropped;   /* tap -> guest */
    uint64_t tx_packets, tx_bytes, tx_dropped;   /* guest -> tap */
    /* what the driver asked for and got: kicks, interrupts, and the guest's
     * transmit offloads in use (frames with NEEDS_CSUM / a GSO type) */
    uint64_t rx_kicks, tx_kicks, rx_irqs, tx_irqs, tx_csum, tx_gso;
    uint64_t announce_acks;        /* the guest announced itself (GUEST_ANNOUNCE) */
};

struct virtio_net {
    struct virtio_pci vp;
    char name[24];                 /* "virtio-net0": PCI name and state section */
    struct tap tap;
    uint8_t mac[6];
    uint8_t config[12];            /* struct virtio_net_config: mac, status, max pairs */
    struct vm_gate gate;

    struct io_thread io;           /* moves the packets */
    /* under vp.lock */
    unsigned tap_offload;          /* TAP_OFF_* the tap can do (offered as GUEST_*) */
    bool offload_set;              /* TUNSETOFFLOAD done for the current features */
    uint32_t ip;                   /* IPv4 the guest sends from (network order), 0 = none seen */
    bool announce_asked;           /* incoming VM runs: set S_ANNOUNCE (on the thread, in the gate) */
    uint8_t *frame;                /* bounce buffer: vnet header + frame */
    size_t frame_len;              /* a frame read from the tap, not yet delivered */
    struct virtq_elem *elems;      /* receive chains of one frame */
    struct virtio_net_stats st;

    struct announcer announcer;
    struct vmstate_desc section;   /* vmstate_virtio_net, named after the device */
};

/* Attach to (or create) the tap device tap_name and build the NIC with MAC
 * mac, starting its thread. index names it ("virtio-netN"). 0 or -1 with a
 * one-line reason (e.g. "tap tap-vm: device busy or not permitted: ..."). */
int virtio_net_create(struct virtio_net *n, int index, const char *tap_name, const uint8_t mac[6],
                      int vm_fd, struct guest_mem *mem, const struct vm_gate *gate, char *err,
                      size_t errlen);
void virtio_net_destroy(struct virtio_net *n);
void virtio_net_stats(struct virtio_net *n, struct virtio_net_stats *st, uint32_t *ip);

/* Announce the MAC (and learned IPv4) on the tap: after the VM resumed on a
 * migration's destination. Returns at once; the rounds run on their own thread. */
void virtio_net_announce(struct virtio_net *n);

/* Migration (struct mig_device hooks, opaque = struct virtio_net *). */
struct virtio_net_state {
    struct virtio_pci_state vp;
    uint8_t mac[6];                /* must match */
    uint32_t ip;
    uint16_t status;               /* config status (v2): S_ANNOUNCE not yet acked */
};
extern const struct vmstate_desc vmstate_virtio_net;   /* template: each device renames a copy */
int virtio_net_state_save(void *opaque, void *state, char *err, size_t errlen);
int virtio_net_state_load(void *opaque, const void *state, char *err, size_t errlen);
void virtio_net_incoming_started(void *opaque);
#define virtio_net_mig_device(n) ((struct mig_device){ &(n)->section, sizeof(struct virtio_net_state), \
                                                       (n), virtio_net_state_save, virtio_net_state_load, \
                                                       virtio_net_incoming_started })

#endif
