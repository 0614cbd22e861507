/* virtio-net: tap backend and packet thread (see virtio_net.h). */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/virtio_net.h"
#include "vmm/log.h"

#define HDR_LEN TAP_VNET_HDR_LEN
#define BATCH 64                    /* frames per direction before looking at the other */
#define RX_MAX_BUFS 64              /* mergeable buffers one frame may take */

enum { CFG_MAC = 0, CFG_STATUS = 6, CFG_MAX_PAIRS = 8, CFG_LEN = 12 };

/* ---- guest addresses, for the announcement ---------------------------------- */

/* Remember the IPv4 address the guest sends from: its ARP sender address or
 * an IPv4 source, in frames carrying its own MAC (vp.lock held). */
static void learn_ip(struct virtio_net *n, const uint8_t *f, size_t len)
{
    if (len < 34 || memcmp(f + 6, n->mac, 6))
        return;
    uint16_t type = (uint16_t)(f[12] << 8 | f[13]);
    const uint8_t *ip = NULL;
    if (type == ANNOUNCE_ETH_P_ARP && len >= 42 && !memcmp(f + 22, n->mac, 6))
        ip = f + 28;                     /* sender protocol address */
    else if (type == 0x0800 && (f[14] >> 4) == 4)
        ip = f + 26;                     /* IPv4 source */
    uint32_t v;
    if (!ip || !(memcpy(&v, ip, 4), v) || ip[0] >= 224)   /* unset, multicast, broadcast */
        return;
    if (v != n->ip) {
        char mac[18];
        net_mac_format(n->mac, mac);
        log_debug("%s: guest %s uses %u.%u.%u.%u", n->name, mac, ip[0], ip[1], ip[2], ip[3]);
        n->ip = v;
    }
}

/* ---- transmit: guest -> tap ------------------------------------------------ */

/* Send what the guest queued (vp.lock held, inside the gate). *more: it
 * stopped at the batch limit with chains left. */
static void tx(struct virtio_net *n, bool *more)
{
    struct virtio_pci *vp = &n->vp;
    struct virtq *q = &vp->vq[VIRTIO_NET_TXQ];
    uint16_t old = q->used_idx;
    struct iovec iov[VIRTQ_MAX_SEGS];
    *more = true;
    for (int i = 0; i < BATCH; i++) {
        char err[160];
        struct virtq_elem *e = &n->elems[0];
        int got = virtq_pop(q, e, err, sizeof(err));
        if (got < 0) {
            log_warn("%s: transmit queue: %s; the device needs a reset", n->name, err);
            virtio_pci_set_needs_reset(vp);
            *more = false;
            break;
        }
        if (!got) {
            *more = false;
            break;
        }
        for (uint32_t k = 0; k < e->nout; k++)
            iov[k] = (struct iovec){ e->seg[k].hva, e->seg[k].len };
        uint8_t vh[2], head[42];
        size_t hl = virtq_read_out(e, HDR_LEN, head, sizeof(head));
        if (virtq_read_out(e, 0, vh, 2) == 2) {
            n->st.tx_csum += vh[0] & 1;    /* VIRTIO_NET_HDR_F_NEEDS_CSUM */
            n->st.tx_gso += vh[1] != 0;    /* gso_type */
        }
        ssize_t w = e->out_bytes > HDR_LEN && e->nin == 0 ? tap_writev(&n->tap, iov, (int)e->nout) : -EINVAL;
        if (w < 0) {
            if (!n->st.tx_dropped++)
                log_warn("%s: frame to tap %s dropped: %s", n->name, n->tap.name, strerror((int)-w));
        } else {
            n->st.tx_packets++;
            n->st.tx_bytes += e->out_bytes - HDR_LEN;
            learn_ip(n, head, hl);
        }
        virtq_push(q, e->head, 0);
    }
    if (virtq_need_interrupt(q, old)) {
        n->st.tx_irqs++;
        virtio_pci_notify_queue(vp, VIRTIO_NET_TXQ);
    }
}

/* ---- receive: tap -> guest ------------------------------------------------- */

/* Copy the bounce buffer's frame into receive chains. false when the guest
 * has not posted enough buffers (nothing taken then: the frame waits). */
static bool rx_deliver(struct virtio_net *n)
{
    struct virtq *q = &n->vp.vq[VIRTIO_NET_RXQ];
    bool mrg = n->vp.driver_features & (1ull << VIRTIO_NET_F_MRG_RXBUF);
    uint16_t start = q->last_avail_idx;
    uint64_t room = 0;
    int nb = 0;
    while (room < n->frame_len) {
        char err[160];
        if (nb == (mrg ? RX_MAX_BUFS : 1))
            goto too_big;
        int got = virtq_pop(q, &n->elems[nb], err, sizeof(err));
        if (got < 0) {
            log_warn("%s: receive queue: %s; the device needs a reset", n->name, err);
            virtio_pci_set_needs_reset(&n->vp);
            return false;
        }
        if (!got) {
            q->last_avail_idx = start;   /* put back: taken chains were not used */
            return false;
        }
        room += n->elems[nb++].in_bytes;
        if (n->elems[nb - 1].in_bytes < (nb == 1 ? HDR_LEN : 1))
            goto too_big;
    }
    /* num_buffers, in the header's last two bytes */
    n->frame[HDR_LEN - 2] = (uint8_t)nb;
    n->frame[HDR_LEN - 1] = (uint8_t)(nb >> 8);
    size_t off = 0;
    for (int i = 0; i < nb; i++) {
        size_t len = virtq_write_in(q, &n->elems[i], 0, n->frame + off, n->frame_len - off);
        virtq_push(q, n->elems[i].head, (uint32_t)len);
        off += len;
    }
    n->st.rx_packets++;
    n->st.rx_bytes += n->frame_len - HDR_LEN;
    n->frame_len = 0;
    return true;
too_big:
    /* buffers too small for this frame (the driver's choice): drop it */
    q->last_avail_idx = start;
    if (!n->st.rx_dropped++)
        log_warn("%s: a %zu-byte frame does not fit the guest's receive buffers; dropped", n->name,
                 n->frame_len - HDR_LEN);
    n->frame_len = 0;
    return true;
}

/* Read the next frame from the tap straight into receive chains, when the
 * guest posted room for the largest one: saves a copy of every frame. 1: a
 * frame delivered (or an empty read skipped), 0: no room that big (nothing
 * taken: use the bounce buffer), negative errno from the tap (nothing taken). */
static int rx_direct(struct virtio_net *n)
{
    struct virtq *q = &n->vp.vq[VIRTIO_NET_RXQ];
    int max = n->vp.driver_features & (1ull << VIRTIO_NET_F_MRG_RXBUF) ? RX_MAX_BUFS : 1;
    uint16_t start = q->last_avail_idx;
    struct iovec iov[RX_MAX_BUFS];
    uint64_t room = 0;
    int nb = 0;
    char err[160];
    while (room < HDR_LEN + VIRTIO_NET_FRAME_MAX && nb < max) {
        struct virtq_elem *e = &n->elems[nb];
        int got = virtq_pop(q, e, err, sizeof(err));
        if (got < 0) {
            log_warn("%s: receive queue: %s; the device needs a reset", n->name, err);
            virtio_pci_set_needs_reset(&n->vp);
            return 1;   /* the queue is broken: rx stops */
        }
        if (!got || e->nin != 1 || e->in_bytes < (nb ? 1 : HDR_LEN))
            break;   /* also chains of several buffers: rare, the bounce path takes them */
        iov[nb++] = (struct iovec){ e->seg[e->nout].hva, e->in_bytes };
        room += e->in_bytes;
    }
    q->last_avail_idx = start;
    if (room < HDR_LEN + VIRTIO_NET_FRAME_MAX)
        return 0;
    ssize_t r = tap_readv(&n->tap, iov, nb);
    if (r < 0)
        return (int)r;
    if (r <= HDR_LEN)
        return 1;
    if ((uint64_t)r > room) {   /* tun reports a frame's whole length, also one cut short */
        if (!n->st.rx_dropped++)
            log_warn("%s: a %zd-byte frame from tap %s is larger than any; dropped", n->name, r, n->tap.name);
        return 1;
    }
    /* the buffers it filled: num_buffers in the header, then each to the used ring */
    uint16_t used = 0;
    for (uint64_t got = 0; got < (uint64_t)r; got += n->elems[used++].in_bytes)
        ;
    uint8_t nbuf[2] = { (uint8_t)used, (uint8_t)(used >> 8) };
    memcpy((uint8_t *)iov[0].iov_base + HDR_LEN - 2, nbuf, 2);
    q->last_avail_idx = (uint16_t)(start + used);
    size_t left = (size_t)r;
    for (uint16_t i = 0; i < used; i++) {
        size_t len = left < n->elems[i].in_bytes ? left : n->elems[i].in_bytes;
        virtq_mark_written(q, &n->elems[i], len);
        virtq_push(q, n->elems[i].head, (uint32_t)len);
        left -= len;
    }
    n->st.rx_packets++;
    n->st.rx_bytes += (size_t)r - HDR_LEN;
    return 1;
}

/* Pass frames from the tap to the guest (vp.lock held, inside the gate).
 * Returns true when it stopped for want of receive buffers. */
static bool rx(struct virtio_net *n)
{
    struct virtio_pci *vp = &n->vp;
    struct virtq *q = &vp->vq[VIRTIO_NET_RXQ];
    uint16_t old = q->used_idx;
    bool starved = false;
    for (int i = 0; i < BATCH && !q->broken; i++) {
        if (!n->frame_len) {
            ssize_t r = rx_direct(n);
            if (r == 1)
                continue;
            if (!r)
                r = tap_read(&n->tap, n->frame, HDR_LEN + VIRTIO_NET_FRAME_MAX);
            if (r == -EAGAIN)
                break;
            if (r < 0) {
                if (!n->st.rx_dropped++)
                    log_warn("%s: reading tap %s: %s", n->name, n->tap.name, strerror((int)-r));
                break;
            }
            if (r <= HDR_LEN)
                continue;
            n->frame_len = (size_t)r;
        }
        if (!rx_deliver(n)) {
            /* ask for a kick when buffers come; they may have come already */
            starved = !virtq_arm_notify(q);
            if (!starved)
                continue;
            break;
        }
    }
    if (virtq_need_interrupt(q, old)) {
        n->st.rx_irqs++;
        virtio_pci_notify_queue(vp, VIRTIO_NET_RXQ);
    }
    return starved;
}

/* ---- control: guest -> device commands ------------------------------------ */

/* Answer the control queue's commands (vp.lock held, inside the gate). */
static void ctrl(struct virtio_net *n)
{
    struct virtio_pci *vp = &n->vp;
    struct virtq *q = &vp->vq[VIRTIO_NET_CTRLQ];
    uint16_t old = q->used_idx;
    do {
        char err[160];
        struct virtq_elem *e = &n->elems[0];
        int got;
        while ((got = virtq_pop(q, e, err, sizeof(err))) > 0) {
            uint8_t cmd[2], ack = VIRTIO_NET_ERR;
            if (virtq_read_out(e, 0, cmd, 2) == 2 && cmd[0] == VIRTIO_NET_CTRL_ANNOUNCE &&
                cmd[1] == VIRTIO_NET_CTRL_ANNOUNCE_ACK &&
                (vp->driver_features & (1ull << VIRTIO_NET_F_GUEST_ANNOUNCE))) {
                pci_set16(n->config, CFG_STATUS, pci_get16(n->config, CFG_STATUS) & ~VIRTIO_NET_S_ANNOUNCE);
                n->st.announce_acks++;
                ack = VIRTIO_NET_OK;
            }
            /* the ack: the first byte the device may write (results would follow) */
            uint32_t w = (uint32_t)virtq_write_in(q, e, 0, &ack, 1);
            virtq_push(q, e->head, w);
        }
        if (got < 0) {
            log_warn("%s: control queue: %s; the device needs a reset", n->name, err);
            virtio_pci_set_needs_reset(vp);
            return;
        }
    } while (virtq_arm_notify(q));   /* the driver kicks only past avail_event */
    if (virtq_need_interrupt(q, old))
        virtio_pci_notify_queue(vp, VIRTIO_NET_CTRLQ);
}

/* ---- the thread ------------------------------------------------------------ */

/* The driver accepted its features: let the tap hand it what it can take. */
static void apply_offload(struct virtio_net *n)
{
    char err[200];
    unsigned want = tap_offload_for_guest(n->vp.driver_features) & n->tap_offload;
    if (tap_set_offload(&n->tap, want, err, sizeof(err)) < 0)
        log_warn("%s: %s", n->name, err);
    n->offload_set = true;
}

/* One pass over both queues; false when the VM is stopping. *starved: the
 * receive queue has no buffers (do not poll the tap until a kick); *tx_more:
 * transmit chains are left (come back at once: with EVENT_IDX the driver
 * kicks only once past avail_event, which is asked for when the ring is
 * found empty). */
static bool process(struct virtio_net *n, bool *starved, bool *tx_more)
{
    struct virtio_pci *vp = &n->vp;
    if (!vm_gate_enter(&n->gate))
        return false;
    pthread_mutex_lock(&vp->lock);
    *starved = true;
    *tx_more = false;
    if (virtio_pci_driver_ok(vp)) {
        if (!n->offload_set)
            apply_offload(n);
        if (vp->queue_enabled[VIRTIO_NET_TXQ]) {
            struct virtq *q = &vp->vq[VIRTIO_NET_TXQ];
            tx(n, tx_more);
            if (!*tx_more && virtq_arm_notify(q) && !q->broken)
                *tx_more = true;    /* arrived while asking for a kick */
        }
        if (vp->queue_enabled[VIRTIO_NET_RXQ])
            *starved = rx(n);
        if (vp->queue_enabled[VIRTIO_NET_CTRLQ])
            ctrl(n);
        if (n->announce_asked && (vp->driver_features & (1ull << VIRTIO_NET_F_GUEST_ANNOUNCE))) {
            pci_set16(n->config, CFG_STATUS, pci_get16(n->config, CFG_STATUS) | VIRTIO_NET_S_ANNOUNCE);
            virtio_pci_notify_config(vp);
        }
        n->announce_asked = false;
    }
    pthread_mutex_unlock(&vp->lock);
    vm_gate_leave(&n->gate);
    return true;
}

static void *worker(void *arg)
{
    struct virtio_net *n = arg;
    /* No wakeup preemption: a kick or a tap frame must not take the CPU from
     * a vCPU sharing it. Otherwise each transmitted frame costs a kick, a
     * context switch and a TX interrupt before the guest queues the next
     * (with TCP small queues, a frame at a time): on the lab's one-CPU host
     * that was 1 frame per kick and 3x less throughput; batched, ~10. */
    int e = pthread_setschedparam(pthread_self(), SCHED_BATCH, &(struct sched_param){ 0 });
    if (e)
        log_warn("%s: SCHED_BATCH: %s", n->name, strerror(e));
    struct pollfd p[5] = { { .fd = n->vp.kick_fd[VIRTIO_NET_RXQ], .events = POLLIN },
                           { .fd = n->vp.kick_fd[VIRTIO_NET_TXQ], .events = POLLIN },
                           { .fd = n->vp.kick_fd[VIRTIO_NET_CTRLQ], .events = POLLIN },
                           { .fd = n->io.wake_fd, .events = POLLIN },
                           { .fd = n->tap.fd, .events = POLLIN } };
    bool starved = true;
    bool tx_more = false;
    while (!io_thread_stopping(&n->io)) {
        if (!process(n, &starved, &tx_more))
            break;
        /* the tap only when the guest has buffers for what it brings */
        if (poll(p, starved ? 4 : 5, tx_more ? 0 : -1) < 0 && errno != EINTR)
            break;
        bool kicked[2] = { p[0].revents != 0, p[1].revents != 0 };
        for (int i = 0; i < 4; i++)
            if (p[i].revents)
                io_drain(p[i].fd);
        if (kicked[0] || kicked[1]) {
            pthread_mutex_lock(&n->vp.lock);
            n->st.rx_kicks += kicked[0];
            n->st.tx_kicks += kicked[1];
            pthread_mutex_unlock(&n->vp.lock);
        }
    }
    return NULL;
}

/* ---- transport callbacks (vp.lock held) ------------------------------------ */

static void net_reset(void *opaque)
{
    struct virtio_net *n = opaque;
    n->frame_len = 0;
    n->offload_set = false;   /* features are renegotiated */
    pci_set16(n->config, CFG_STATUS, VIRTIO_NET_S_LINK_UP);
}

static void net_driver_ok(void *opaque)
{
    io_thread_wake(&((struct virtio_net *)opaque)->io);
}

static const struct virtio_dev_ops net_ops = { .reset = net_reset, .driver_ok = net_driver_ok };

/* ---- construction ---------------------------------------------------------- */

int virtio_net_create(struct virtio_net *n, int index, const char *tap_name, const uint8_t mac[6],
                      int vm_fd, struct guest_mem *mem, const struct vm_gate *gate, char *err,
                      size_t errlen)
{
    memset(n, 0, sizeof(*n));
    n->tap.fd = -1;
    snprintf(n->name, sizeof(n->name), "virtio-net%d", index);
    io_thread_init(&n->io, n->name);
    memcpy(n->mac, mac, 6);
    n->gate = *gate;
    if (tap_open(&n->tap, tap_name, 0, err, errlen) < 0)
        return -1;
    if (tap_set_up(&n->tap, true, err, errlen) < 0)
        goto fail;
    n->tap_offload = tap_probe_offload(&n->tap);
    if (!(n->frame = malloc(HDR_LEN + VIRTIO_NET_FRAME_MAX)) ||
        !(n->elems = calloc(RX_MAX_BUFS, sizeof(*n->elems)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    memcpy(n->config + CFG_MAC, mac, 6);
    pci_set16(n->config, CFG_STATUS, VIRTIO_NET_S_LINK_UP);
    pci_set16(n->config, CFG_MAX_PAIRS, 1);
    uint64_t features = (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_STATUS) |
                        (1ull << VIRTIO_NET_F_MRG_RXBUF) | (1ull << VIRTIO_NET_F_CSUM) |
                        (1ull << VIRTIO_NET_F_HOST_TSO4) | (1ull << VIRTIO_NET_F_HOST_TSO6) |
                        (1ull << VIRTIO_NET_F_HOST_ECN) | (1ull << VIRTIO_F_INDIRECT_DESC) |
                        (1ull << VIRTIO_F_EVENT_IDX) | (1ull << VIRTIO_NET_F_CTRL_VQ) |
                        (1ull << VIRTIO_NET_F_GUEST_ANNOUNCE);
    if (n->tap_offload & TAP_OFF_CSUM) {
        features |= 1ull << VIRTIO_NET_F_GUEST_CSUM;
        if (n->tap_offload & TAP_OFF_TSO4)
            features |= 1ull << VIRTIO_NET_F_GUEST_TSO4;
        if (n->tap_offload & TAP_OFF_TSO6)
            features |= 1ull << VIRTIO_NET_F_GUEST_TSO6;
        if (n->tap_offload & TAP_OFF_TSO_ECN)
            features |= 1ull << VIRTIO_NET_F_GUEST_ECN;
    }
    if (virtio_pci_init(&n->vp, n->name, VIRTIO_ID_NET, 0x0200, features, VIRTIO_NET_NQUEUES, VIRTIO_NET_QUEUE_SIZE,
                        n->config, CFG_LEN, &net_ops, n, vm_fd, mem, err, errlen) < 0)
        goto fail;
    n->section = vmstate_virtio_net;
    n->section.name = n->name;
    if (io_thread_start(&n->io, worker, n, err, errlen) < 0)
        goto fail;
    return 0;
fail:
    virtio_net_destroy(n);
    return -1;
}

void virtio_net_destroy(struct virtio_net *n)
{
    announcer_cancel(&n->announcer);
    io_thread_stop(&n->io, &n->gate);
    virtio_pci_destroy(&n->vp);
    tap_close(&n->tap);
    free(n->frame);
    free(n->elems);
    n->frame = NULL;
    n->elems = NULL;
}

void virtio_net_stats(struct virtio_net *n, struct virtio_net_stats *st, uint32_t *ip)
{
    pthread_mutex_lock(&n->vp.lock);
    *st = n->st;
    *ip = n->ip;
    pthread_mutex_unlock(&n->vp.lock);
}

void virtio_net_announce(struct virtio_net *n)
{
    struct announce_cfg cfg = { .send = tap_send_cb, .opaque = &n->tap };
    memcpy(cfg.mac, n->mac, 6);
    pthread_mutex_lock(&n->vp.lock);
    cfg.has_ip = n->ip != 0;
    memcpy(cfg.ip, &n->ip, 4);
    pthread_mutex_unlock(&n->vp.lock);
    char err[160];
    announcer_cancel(&n->announcer);
    if (announcer_start(&n->announcer, &cfg, err, sizeof(err)) < 0)
        log_warn("%s: cannot announce the VM's address: %s", n->name, err);
}

/* ---- migration ------------------------------------------------------------- */

static const struct vmstate_field net_fields[] = {
    VMSTATE_STRUCT(struct virtio_net_state, vp, vmstate_virtio_pci),
    VMSTATE_BYTES(struct virtio_net_state, mac),
    VMSTATE_U32(struct virtio_net_state, ip),
    VMSTATE_U16_V(struct virtio_net_state, status, 2),
    VMSTATE_END,
};
/* v2: the control queue (3 queues, which a v1 stream's 2 cannot fill) and the status */
const struct vmstate_desc vmstate_virtio_net = { "virtio-net", 2, 2, net_fields, sizeof(struct virtio_net_state) };

int virtio_net_state_save(void *opaque, void *state, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    struct virtio_net *n = opaque;
    struct virtio_net_state *s = state;
    /* The vCPUs are paused, so the thread is outside the gate: every chain it
     * took is back in the used ring. */
    virtio_pci_save(&n->vp, &s->vp);
    memcpy(s->mac, n->mac, 6);
    pthread_mutex_lock(&n->vp.lock);
    s->ip = n->ip;
    s->status = pci_get16(n->config, CFG_STATUS);
    pthread_mutex_unlock(&n->vp.lock);
    return 0;
}

int virtio_net_state_load(void *opaque, const void *state, char *err, size_t errlen)
{
    struct virtio_net *n = opaque;
    const struct virtio_net_state *s = state;
    if (memcmp(s->mac, n->mac, 6)) {
        char a[18], b[18];
        net_mac_format(s->mac, a);
        net_mac_format(n->mac, b);
        snprintf(err, errlen, "%s: MAC %s in the stream, %s here", n->name, a, b);
        return -1;
    }
    if (virtio_pci_load(&n->vp, &s->vp, err, errlen) < 0)
        return -1;
    pthread_mutex_lock(&n->vp.lock);
    n->ip = s->ip;
    pci_set16(n->config, CFG_STATUS, s->status);
    n->frame_len = 0;
    n->offload_set = false;   /* this tap gets the guest's offloads at the first pass */
    pthread_mutex_unlock(&n->vp.lock);
    io_thread_wake(&n->io);
    return 0;
}

void virtio_net_incoming_started(void *opaque)
{
    struct virtio_net *n = opaque;
    pthread_mutex_lock(&n->vp.lock);
    n->announce_asked = true;
    pthread_mutex_unlock(&n->vp.lock);
    io_thread_wake(&n->io);
    virtio_net_announce(n);
}
