/* Modern virtio-pci transport (see virtio_pci.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "devices/virtio_pci.h"
#include "vmm/log.h"

/* vendor capability cfg_type values */
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR    3
#define CAP_DEVICE 4

/* common configuration offsets */
enum {
    CC_DFSELECT = 0x00, CC_DF = 0x04, CC_GFSELECT = 0x08, CC_GF = 0x0c, CC_MSIX = 0x10,
    CC_NUMQ = 0x12, CC_STATUS = 0x14, CC_CFGGEN = 0x15, CC_Q_SELECT = 0x16, CC_Q_SIZE = 0x18,
    CC_Q_MSIX = 0x1a, CC_Q_ENABLE = 0x1c, CC_Q_NOFF = 0x1e, CC_Q_DESCLO = 0x20, CC_Q_DESCHI = 0x24,
    CC_Q_AVAILLO = 0x28, CC_Q_AVAILHI = 0x2c, CC_Q_USEDLO = 0x30, CC_Q_USEDHI = 0x34,
};

#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_MASK   0x4000

/* ---- VM gate -------------------------------------------------------------- */

bool vm_gate_enter(const struct vm_gate *g)
{
    if (!g->lock)
        return true;
    pthread_mutex_lock(g->lock);
    while (!atomic_load(g->stopping)) {
        if (__atomic_load_n(g->pause_req, __ATOMIC_ACQUIRE) || (g->started && !g->started(g->ctx)))
            pthread_cond_wait(g->cond, g->lock);   /* vm_resume / vm_start broadcast */
        else
            break;
    }
    if (atomic_load(g->stopping)) {
        pthread_mutex_unlock(g->lock);
        return false;
    }
    return true;
}

void vm_gate_leave(const struct vm_gate *g)
{
    if (g->lock)
        pthread_mutex_unlock(g->lock);
}

void vm_gate_wake(const struct vm_gate *g)
{
    if (!g->lock)
        return;
    pthread_mutex_lock(g->lock);
    pthread_cond_broadcast(g->cond);
    pthread_mutex_unlock(g->lock);
}

/* ---- interrupts ----------------------------------------------------------- */

static void msix_send(struct virtio_pci *vp, uint16_t v)
{
    const uint32_t *e = vp->msix_table[v];
    vp->msis_sent++;
    if (vp->vm_fd < 0)
        return;
    struct kvm_msi msi = { .address_lo = e[0], .address_hi = e[1], .data = e[2] };
    if (ioctl(vp->vm_fd, KVM_SIGNAL_MSI, &msi) < 0)
        log_warn("%s: KVM_SIGNAL_MSI vector %u: %s", vp->pci.name, v, strerror(errno));
}

/* Raise vector v, or leave it pending while masked (lock held). */
static void msix_fire(struct virtio_pci *vp, uint16_t v)
{
    if (v == VIRTIO_MSI_NO_VECTOR || v >= vp->nvectors || !vp->msix_enabled)
        return;  /* no INTx: a driver without MSI-X gets no interrupts */
    if (vp->msix_masked || (vp->msix_table[v][3] & 1)) {
        vp->msix_pba |= 1ull << v;
        return;
    }
    msix_send(vp, v);
}

/* Send what became deliverable after an unmask (lock held). */
static void msix_flush_pending(struct virtio_pci *vp)
{
    if (!vp->msix_enabled || vp->msix_masked)
        return;
    for (uint16_t v = 0; v < vp->nvectors; v++) {
        if ((vp->msix_pba & (1ull << v)) && !(vp->msix_table[v][3] & 1)) {
            vp->msix_pba &= ~(1ull << v);
            msix_send(vp, v);
        }
    }
}

void virtio_pci_notify_queue(struct virtio_pci *vp, uint16_t q)
{
    vp->isr |= 1;
    if (q < vp->nqueues)
        msix_fire(vp, vp->queue_vector[q]);
}

void virtio_pci_notify_config(struct virtio_pci *vp)
{
    vp->config_generation++;
    vp->isr |= 2;
    if (vp->status & VIRTIO_STATUS_DRIVER_OK)
        msix_fire(vp, vp->config_vector);
}

void virtio_pci_set_needs_reset(struct virtio_pci *vp)
{
    if (vp->status & VIRTIO_STATUS_NEEDS_RESET)
        return;
    vp->status |= VIRTIO_STATUS_NEEDS_RESET;
    vp->isr |= 2;
    if (vp->status & VIRTIO_STATUS_DRIVER_OK)
        msix_fire(vp, vp->config_vector);
}

/* ---- ioeventfds ------------------------------------------------------------ */

static int ioeventfd(struct virtio_pci *vp, uint64_t addr, int fd, bool assign)
{
    struct kvm_ioeventfd io = { .addr = addr, .len = 2, .fd = fd,
                                .flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN };
    return ioctl(vp->vm_fd, KVM_IOEVENTFD, &io);
}

/* Move the notify ioeventfds to the BAR's new address (pci host lock held). */
static void bar_remap(struct pci_dev *d, int bar, uint64_t addr)
{
    struct virtio_pci *vp = d->opaque;
    if (bar != 0 || vp->vm_fd < 0)
        return;
    pthread_mutex_lock(&vp->lock);
    if (vp->ioeventfd_base) {
        for (uint16_t q = 0; q < vp->nqueues; q++)
            ioeventfd(vp, vp->ioeventfd_base + VIRTIO_PCI_NOTIFY_MULT * q, vp->kick_fd[q], false);
        vp->ioeventfd_base = 0;
    }
    if (addr) {
        uint64_t base = addr + VIRTIO_PCI_NOTIFY_OFF;
        uint16_t q = 0;
        for (; q < vp->nqueues; q++)
            if (ioeventfd(vp, base + VIRTIO_PCI_NOTIFY_MULT * q, vp->kick_fd[q], true) < 0)
                break;
        if (q == vp->nqueues) {
            vp->ioeventfd_base = base;
        } else {
            /* notify writes then exit to us and are forwarded (slower) */
            log_warn("%s: KVM_IOEVENTFD at 0x%llx: %s", vp->pci.name, (unsigned long long)base,
                     strerror(errno));
            while (q-- > 0)
                ioeventfd(vp, base + VIRTIO_PCI_NOTIFY_MULT * q, vp->kick_fd[q], false);
        }
    }
    pthread_mutex_unlock(&vp->lock);
}

static void kick(struct virtio_pci *vp, uint16_t q)
{
    uint64_t one = 1;
    if (q < vp->nqueues && write(vp->kick_fd[q], &one, sizeof(one)) < 0)
        log_warn("%s: kick queue %u: %s", vp->pci.name, q, strerror(errno));
}

/* ---- common configuration ----------------------------------------------- */

static void reset_locked(struct virtio_pci *vp)
{
    if (vp->ops->reset)
        vp->ops->reset(vp->opaque);
    vp->reset_gen++;
    vp->driver_features = 0;
    vp->dev_feature_sel = vp->drv_feature_sel = 0;
    vp->status = 0;
    vp->isr = 0;
    vp->queue_sel = 0;
    vp->config_vector = VIRTIO_MSI_NO_VECTOR;
    for (uint16_t q = 0; q < vp->nqueues; q++) {
        struct virtq *vq = &vp->vq[q];
        virtq_unmap(vq);
        vq->size = vp->queue_max;
        vq->desc_gpa = vq->avail_gpa = vq->used_gpa = 0;
        vq->last_avail_idx = vq->used_idx = 0;
        vq->broken = false;
        vp->queue_vector[q] = VIRTIO_MSI_NO_VECTOR;
        vp->queue_enabled[q] = false;
    }
}

static void queue_enable(struct virtio_pci *vp, uint16_t q)
{
    struct virtq *vq = &vp->vq[q];
    char err[160];
    vq->indirect = vp->driver_features & (1ull << VIRTIO_F_INDIRECT_DESC);
    vq->event_idx = vp->driver_features & (1ull << VIRTIO_F_EVENT_IDX);
    vq->last_avail_idx = vq->used_idx = 0;
    if (virtq_map(vq, vp->mem, err, sizeof(err)) < 0) {
        log_warn("%s: queue %u: %s", vp->pci.name, q, err);
        virtio_pci_set_needs_reset(vp);
        return;
    }
    vp->queue_enabled[q] = true;
}

static void status_write(struct virtio_pci *vp, uint8_t v)
{
    if (!v) {
        reset_locked(vp);
        return;
    }
    if ((v & VIRTIO_STATUS_FEATURES_OK) && !(vp->status & VIRTIO_STATUS_FEATURES_OK)) {
        /* accept only a subset of ours that includes VERSION_1 */
        if ((vp->driver_features & ~vp->device_features) ||
            !(vp->driver_features & (1ull << VIRTIO_F_VERSION_1)))
            v &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
    }
    bool was_ok = vp->status & VIRTIO_STATUS_DRIVER_OK;
    vp->status = (uint8_t)(v | (vp->status & VIRTIO_STATUS_NEEDS_RESET));
    if (!was_ok && (v & VIRTIO_STATUS_DRIVER_OK) && vp->ops->driver_ok)
        vp->ops->driver_ok(vp->opaque);
}

static uint64_t common_read(struct virtio_pci *vp, uint32_t off)
{
    uint16_t qs = vp->queue_sel;
    bool qok = qs < vp->nqueues;
    const struct virtq *vq = qok ? &vp->vq[qs] : NULL;
    switch (off) {
    case CC_DFSELECT: return vp->dev_feature_sel;
    case CC_DF: return vp->dev_feature_sel < 2 ? (uint32_t)(vp->device_features >> (32 * vp->dev_feature_sel)) : 0;
    case CC_GFSELECT: return vp->drv_feature_sel;
    case CC_GF: return vp->drv_feature_sel < 2 ? (uint32_t)(vp->driver_features >> (32 * vp->drv_feature_sel)) : 0;
    case CC_MSIX: return vp->config_vector;
    case CC_NUMQ: return vp->nqueues;
    case CC_STATUS: return vp->status;
    case CC_CFGGEN: return vp->config_generation;
    case CC_Q_SELECT: return qs;
    case CC_Q_SIZE: return qok ? vq->size : 0;
    case CC_Q_MSIX: return qok ? vp->queue_vector[qs] : VIRTIO_MSI_NO_VECTOR;
    case CC_Q_ENABLE: return qok ? vp->queue_enabled[qs] : 0;
    case CC_Q_NOFF: return qok ? qs : 0;
    case CC_Q_DESCLO: return qok ? (uint32_t)vq->desc_gpa : 0;
    case CC_Q_DESCHI: return qok ? (uint32_t)(vq->desc_gpa >> 32) : 0;
    case CC_Q_AVAILLO: return qok ? (uint32_t)vq->avail_gpa : 0;
    case CC_Q_AVAILHI: return qok ? (uint32_t)(vq->avail_gpa >> 32) : 0;
    case CC_Q_USEDLO: return qok ? (uint32_t)vq->used_gpa : 0;
    case CC_Q_USEDHI: return qok ? (uint32_t)(vq->used_gpa >> 32) : 0;
    }
    return 0;  /* queue_notify_data, queue_reset: not offered */
}

/* Width of the field at off (reads of other sizes are assembled bytewise). */
static unsigned common_width(uint32_t off)
{
    if (off < CC_MSIX || (off >= CC_Q_DESCLO && off < 0x38))
        return 4;
    if (off == CC_STATUS || off == CC_CFGGEN)
        return 1;
    return 2;
}

static void set_addr(uint64_t *a, bool hi, uint32_t v)
{
    *a = hi ? (*a & 0xffffffffull) | (uint64_t)v << 32 : (*a & ~0xffffffffull) | v;
}

static void common_write(struct virtio_pci *vp, uint32_t off, uint32_t v)
{
    uint16_t qs = vp->queue_sel;
    bool qok = qs < vp->nqueues;
    struct virtq *vq = qok ? &vp->vq[qs] : NULL;
    bool qlive = qok && vp->queue_enabled[qs];
    switch (off) {
    case CC_DFSELECT: vp->dev_feature_sel = v; break;
    case CC_GFSELECT: vp->drv_feature_sel = v; break;
    case CC_GF:
        if (vp->drv_feature_sel < 2 && !(vp->status & VIRTIO_STATUS_FEATURES_OK)) {
            unsigned sh = 32 * vp->drv_feature_sel;
            vp->driver_features = (vp->driver_features & ~(0xffffffffull << sh)) | (uint64_t)v << sh;
        }
        break;
    case CC_MSIX:
        vp->config_vector = (uint16_t)v < vp->nvectors ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
        break;
    case CC_STATUS: status_write(vp, (uint8_t)v); break;
    case CC_Q_SELECT: vp->queue_sel = (uint16_t)v; break;
    case CC_Q_SIZE:
        if (qok && !qlive && v && (uint16_t)v <= vp->queue_max && !(v & (v - 1)))
            vq->size = (uint16_t)v;
        break;
    case CC_Q_MSIX:
        if (qok)
            vp->queue_vector[qs] = (uint16_t)v < vp->nvectors ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
        break;
    case CC_Q_ENABLE:
        if (qok && !qlive && (v & 1))
            queue_enable(vp, qs);
        break;
    case CC_Q_DESCLO: case CC_Q_DESCHI:
        if (qok && !qlive)
            set_addr(&vq->desc_gpa, off == CC_Q_DESCHI, v);
        break;
    case CC_Q_AVAILLO: case CC_Q_AVAILHI:
        if (qok && !qlive)
            set_addr(&vq->avail_gpa, off == CC_Q_AVAILHI, v);
        break;
    case CC_Q_USEDLO: case CC_Q_USEDHI:
        if (qok && !qlive)
            set_addr(&vq->used_gpa, off == CC_Q_USEDHI, v);
        break;
    default:
        break;  /* read-only fields */
    }
}

static void common_access(struct virtio_pci *vp, uint32_t off, uint8_t *data, uint32_t len, bool is_write)
{
    if (off >= VIRTIO_PCI_COMMON_LEN)
        goto ignore;
    unsigned w = common_width(off & ~1u);
    if (len == 8 && (off == CC_Q_DESCLO || off == CC_Q_AVAILLO || off == CC_Q_USEDLO)) {
        if (is_write) {
            common_write(vp, off, le_get(data, 4));
            common_write(vp, off + 4, le_get(data + 4, 4));
        } else {
            le_put(data, 8, common_read(vp, off) | common_read(vp, off + 4) << 32);
        }
        return;
    }
    if (len == w && off % w == 0) {
        if (is_write)
            common_write(vp, off, le_get(data, len));
        else
            le_put(data, len, common_read(vp, off));
        return;
    }
    if (!is_write) {
        /* odd-sized read: assemble from the fields it covers */
        for (uint32_t i = 0; i < len; i++) {
            uint32_t o = off + i, fw = common_width(o & ~1u), base = o - o % fw;
            data[i] = o < VIRTIO_PCI_COMMON_LEN ? (uint8_t)(common_read(vp, base) >> (8 * (o - base))) : 0;
        }
        return;
    }
ignore:
    if (!is_write)
        memset(data, 0, len);
}

/* ---- BAR 0 ----------------------------------------------------------------- */

static void bar_io(struct pci_dev *d, int bar, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
    struct virtio_pci *vp = d->opaque;
    if (bar != 0 || len > 8) {
        if (!is_write)
            memset(data, 0xff, len);
        return;
    }
    pthread_mutex_lock(&vp->lock);
    if (off < VIRTIO_PCI_ISR_OFF) {
        common_access(vp, (uint32_t)off, data, len, is_write);
    } else if (off < VIRTIO_PCI_DEVCFG_OFF) {
        if (!is_write) {
            memset(data, 0, len);
            if (off == VIRTIO_PCI_ISR_OFF) {
                data[0] = vp->isr;   /* reading acknowledges */
                vp->isr = 0;
            }
        }
    } else if (off < VIRTIO_PCI_NOTIFY_OFF) {
        uint64_t o = off - VIRTIO_PCI_DEVCFG_OFF;
        if (o + len <= vp->config_len) {
            if (is_write) {
                if (vp->ops->config_write)  /* the device decides what is writable */
                    vp->ops->config_write(vp->opaque, (uint32_t)o, data, len);
            } else {
                memcpy(data, vp->config + o, len);
            }
        } else if (!is_write) {
            memset(data, 0, len);
        }
    } else if (off < VIRTIO_PCI_MSIX_OFF) {
        uint64_t o = off - VIRTIO_PCI_NOTIFY_OFF;
        if (is_write) {
            /* reached only without ioeventfds: wake the device's thread */
            if (o % VIRTIO_PCI_NOTIFY_MULT == 0)
                kick(vp, (uint16_t)(o / VIRTIO_PCI_NOTIFY_MULT));
        } else {
            memset(data, 0, len);
        }
    } else if (off < VIRTIO_PCI_PBA_OFF) {
        uint64_t o = off - VIRTIO_PCI_MSIX_OFF;
        uint32_t v = (uint32_t)(o / 16), w = (uint32_t)(o % 16) / 4;
        if (v >= vp->nvectors || (len != 4 && len != 8) || o % 4) {
            if (!is_write)
                memset(data, 0, len);
        } else {
            for (uint32_t k = 0; k < len / 4 && w + k < 4; k++) {
                uint32_t *e = &vp->msix_table[v][w + k];
                if (!is_write) {
                    le_put(data + 4 * k, 4, *e);
                } else if (w + k == 3) {
                    *e = le_get(data + 4 * k, 4) & 1;  /* only the mask bit */
                    msix_flush_pending(vp);
                } else {
                    *e = le_get(data + 4 * k, 4);
                }
            }
        }
    } else if (off < VIRTIO_PCI_PBA_OFF + 8) {
        if (!is_write)
            le_put(data, len, vp->msix_pba >> (8 * (off - VIRTIO_PCI_PBA_OFF)));
    } else if (!is_write) {
        memset(data, 0, len);
    }
    pthread_mutex_unlock(&vp->lock);
}

/* MSI-X message control written (pci host lock held). */
static void cfg_written(struct pci_dev *d, uint32_t off, uint32_t len)
{
    struct virtio_pci *vp = d->opaque;
    uint32_t ctrl = vp->msix_cap + 2u;
    if (off + len <= ctrl || off >= ctrl + 2)
        return;
    uint16_t v = pci_get16(d->cfg, ctrl);
    pthread_mutex_lock(&vp->lock);
    vp->msix_enabled = v & MSIX_CTRL_ENABLE;
    vp->msix_masked = v & MSIX_CTRL_MASK;
    msix_flush_pending(vp);
    pthread_mutex_unlock(&vp->lock);
}

/* ---- construction -------------------------------------------------------- */

static void add_vendor_cap(struct pci_dev *d, uint8_t type, uint32_t off, uint32_t len, bool notify)
{
    uint8_t at = pci_dev_add_cap(d, PCI_CAP_ID_VNDR, notify ? 20 : 16);
    d->cfg[at + 2] = notify ? 20 : 16;  /* cap_len */
    d->cfg[at + 3] = type;
    d->cfg[at + 4] = 0;                 /* bar */
    d->cfg[at + 5] = 0;                 /* id */
    pci_set32(d->cfg, at + 8, off);
    pci_set32(d->cfg, at + 12, len);
    if (notify)
        pci_set32(d->cfg, at + 16, VIRTIO_PCI_NOTIFY_MULT);
}

int virtio_pci_init(struct virtio_pci *vp, const char *name, uint16_t device_id, uint16_t pci_class_hi,
                    uint64_t features, uint16_t nqueues, uint16_t queue_max,
                    uint8_t *config, uint32_t config_len, const struct virtio_dev_ops *ops,
                    void *opaque, int vm_fd, struct guest_mem *mem, char *err, size_t errlen)
{
    memset(vp, 0, sizeof(*vp));
    pthread_mutex_init(&vp->lock, NULL);
    pthread_cond_init(&vp->cond, NULL);
    for (int q = 0; q < VIRTIO_MAX_QUEUES; q++)
        vp->kick_fd[q] = -1;
    if (!nqueues || nqueues > VIRTIO_MAX_QUEUES || config_len > VIRTIO_CONFIG_MAX) {
        snprintf(err, errlen, "virtio: bad queue count %u or config size %u", nqueues, config_len);
        return -1;
    }
    vp->vm_fd = vm_fd;
    vp->mem = mem;
    vp->ops = ops;
    vp->opaque = opaque;
    vp->device_features = features | (1ull << VIRTIO_F_VERSION_1);
    vp->nqueues = nqueues;
    vp->queue_max = queue_max;
    vp->config = config;
    vp->config_len = config_len;
    vp->nvectors = (uint16_t)(nqueues + 1);
    for (uint16_t v = 0; v < vp->nvectors; v++)
        vp->msix_table[v][3] = 1;  /* masked at reset */
    for (uint16_t q = 0; q < nqueues; q++) {
        vp->kick_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (vp->kick_fd[q] < 0) {
            snprintf(err, errlen, "eventfd: %s", strerror(errno));
            virtio_pci_destroy(vp);
            return -1;
        }
    }
    reset_locked(vp);
    vp->reset_gen = 0;

    struct pci_dev *d = &vp->pci;
    /* non-transitional: device 0x1040 + type, revision 1, subsystem id >= 0x40 */
    pci_dev_init(d, VIRTIO_PCI_VENDOR, (uint16_t)(VIRTIO_PCI_DEVICE_BASE + device_id),
                 (uint32_t)pci_class_hi << 16 | 0x01, VIRTIO_PCI_VENDOR, 0x40);
    d->name = name;
    d->opaque = vp;
    d->bar_io = bar_io;
    d->cfg_written = cfg_written;
    d->bar_remap = bar_remap;
    pci_dev_add_bar(d, 0, VIRTIO_PCI_BAR_SIZE);
    uint8_t msix = pci_dev_add_cap(d, PCI_CAP_ID_MSIX, 12);
    pci_set16(d->cfg, msix + 2, (uint16_t)(vp->nvectors - 1));
    pci_set32(d->cfg, msix + 4, VIRTIO_PCI_MSIX_OFF);   /* BIR 0 */
    pci_set32(d->cfg, msix + 8, VIRTIO_PCI_PBA_OFF);
    pci_set16(d->wmask, msix + 2, MSIX_CTRL_ENABLE | MSIX_CTRL_MASK);
    vp->msix_cap = msix;
    add_vendor_cap(d, CAP_COMMON, VIRTIO_PCI_COMMON_OFF, VIRTIO_PCI_COMMON_LEN, false);
    add_vendor_cap(d, CAP_ISR, VIRTIO_PCI_ISR_OFF, 4, false);
    add_vendor_cap(d, CAP_DEVICE, VIRTIO_PCI_DEVCFG_OFF, config_len ? config_len : 4, false);
    add_vendor_cap(d, CAP_NOTIFY, VIRTIO_PCI_NOTIFY_OFF, VIRTIO_PCI_NOTIFY_MULT * nqueues, true);
    return 0;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
    if (vp->ioeventfd_base && vp->vm_fd >= 0)
        for (uint16_t q = 0; q < vp->nqueues; q++)
            ioeventfd(vp, vp->ioeventfd_base + VIRTIO_PCI_NOTIFY_MULT * q, vp->kick_fd[q], false);
    vp->ioeventfd_base = 0;
    for (int q = 0; q < VIRTIO_MAX_QUEUES; q++) {
        if (vp->kick_fd[q] >= 0)
            close(vp->kick_fd[q]);
        vp->kick_fd[q] = -1;
    }
}

/* ---- migration ----------------------------------------------------------- */

static const struct vmstate_field vq_fields[] = {
    VMSTATE_U16(struct virtio_queue_state, size), VMSTATE_U16(struct virtio_queue_state, enabled),
    VMSTATE_U16(struct virtio_queue_state, msix_vector), VMSTATE_U64(struct virtio_queue_state, desc),
    VMSTATE_U64(struct virtio_queue_state, driver), VMSTATE_U64(struct virtio_queue_state, device),
    VMSTATE_U16(struct virtio_queue_state, last_avail_idx), VMSTATE_U16(struct virtio_queue_state, used_idx),
    VMSTATE_END,
};
static const struct vmstate_desc vmstate_virtio_queue = {
    "virtio-queue", 1, 1, vq_fields, sizeof(struct virtio_queue_state) };

static const struct vmstate_field vp_fields[] = {
    VMSTATE_BYTES(struct virtio_pci_state, pci_cfg),
    VMSTATE_U64(struct virtio_pci_state, driver_features),
    VMSTATE_U32(struct virtio_pci_state, dev_feature_sel),
    VMSTATE_U32(struct virtio_pci_state, drv_feature_sel),
    VMSTATE_U8(struct virtio_pci_state, status),
    VMSTATE_U8(struct virtio_pci_state, config_generation),
    VMSTATE_U8(struct virtio_pci_state, isr),
    VMSTATE_U16(struct virtio_pci_state, queue_sel),
    VMSTATE_U16(struct virtio_pci_state, config_vector),
    VMSTATE_ARRAY_U32(struct virtio_pci_state, msix_table),
    VMSTATE_U64(struct virtio_pci_state, msix_pba),
    VMSTATE_VARRAY_U32_STRUCT(struct virtio_pci_state, q, nqueues, VIRTIO_MAX_QUEUES, vmstate_virtio_queue),
    VMSTATE_END,
};
const struct vmstate_desc vmstate_virtio_pci = { "virtio-pci", 1, 1, vp_fields, sizeof(struct virtio_pci_state) };

void virtio_pci_save(struct virtio_pci *vp, struct virtio_pci_state *s)
{
    memset(s, 0, sizeof(*s));
    if (vp->pci.host)
        pthread_mutex_lock(&vp->pci.host->lock);
    memcpy(s->pci_cfg, vp->pci.cfg, PCI_CFG_SIZE);
    if (vp->pci.host)
        pthread_mutex_unlock(&vp->pci.host->lock);
    pthread_mutex_lock(&vp->lock);
    s->driver_features = vp->driver_features;
    s->dev_feature_sel = vp->dev_feature_sel;
    s->drv_feature_sel = vp->drv_feature_sel;
    s->status = vp->status;
    s->config_generation = vp->config_generation;
    s->isr = vp->isr;
    s->queue_sel = vp->queue_sel;
    s->config_vector = vp->config_vector;
    for (uint16_t v = 0; v < vp->nvectors; v++)
        memcpy(&s->msix_table[4 * v], vp->msix_table[v], 16);
    s->msix_pba = vp->msix_pba;
    s->nqueues = vp->nqueues;
    for (uint16_t q = 0; q < vp->nqueues; q++) {
        const struct virtq *vq = &vp->vq[q];
        s->q[q] = (struct virtio_queue_state){
            .size = vq->size, .enabled = vp->queue_enabled[q], .msix_vector = vp->queue_vector[q],
            .desc = vq->desc_gpa, .driver = vq->avail_gpa, .device = vq->used_gpa,
            .last_avail_idx = vq->last_avail_idx, .used_idx = vq->used_idx,
        };
    }
    pthread_mutex_unlock(&vp->lock);
}

int virtio_pci_load(struct virtio_pci *vp, const struct virtio_pci_state *s, char *err, size_t errlen)
{
    const char *name = vp->pci.name;
    if (pci_cfg_check(&vp->pci, s->pci_cfg, err, errlen) < 0)
        return -1;
    if (s->nqueues != vp->nqueues) {
        snprintf(err, errlen, "%s: %u queues in the stream, %u here", name, s->nqueues, vp->nqueues);
        return -1;
    }
    if (s->driver_features & ~vp->device_features) {
        snprintf(err, errlen, "%s: driver features 0x%llx not offered here (0x%llx)", name,
                 (unsigned long long)s->driver_features, (unsigned long long)vp->device_features);
        return -1;
    }
    if (s->msix_pba >> vp->nvectors) {
        snprintf(err, errlen, "%s: MSI-X pending bits beyond vector %u", name, vp->nvectors);
        return -1;
    }
    /* map the queues into scratch copies first: all or nothing */
    struct virtq vq[VIRTIO_MAX_QUEUES];
    for (uint16_t q = 0; q < vp->nqueues; q++) {
        const struct virtio_queue_state *qs = &s->q[q];
        if (qs->msix_vector != VIRTIO_MSI_NO_VECTOR && qs->msix_vector >= vp->nvectors) {
            snprintf(err, errlen, "%s: queue %u: MSI-X vector %u out of range", name, q, qs->msix_vector);
            return -1;
        }
        vq[q] = (struct virtq){
            .size = qs->size, .desc_gpa = qs->desc, .avail_gpa = qs->driver, .used_gpa = qs->device,
            .last_avail_idx = qs->last_avail_idx, .used_idx = qs->used_idx,
            .indirect = s->driver_features & (1ull << VIRTIO_F_INDIRECT_DESC),
            .event_idx = s->driver_features & (1ull << VIRTIO_F_EVENT_IDX),
        };
        if (qs->enabled) {
            char why[160];
            if (virtq_map(&vq[q], vp->mem, why, sizeof(why)) < 0) {
                snprintf(err, errlen, "%s: queue %u: %s", name, q, why);
                return -1;
            }
        } else if (qs->size > vp->queue_max || (qs->size & (qs->size - 1))) {
            snprintf(err, errlen, "%s: queue %u: size %u", name, q, qs->size);
            return -1;
        } else {
            vq[q].mem = vp->mem;
        }
    }
    pthread_mutex_lock(&vp->lock);
    vp->driver_features = s->driver_features;
    vp->dev_feature_sel = s->dev_feature_sel;
    vp->drv_feature_sel = s->drv_feature_sel;
    vp->status = s->status;
    vp->config_generation = s->config_generation;
    vp->isr = s->isr;
    vp->queue_sel = s->queue_sel;
    vp->config_vector = s->config_vector < vp->nvectors ? s->config_vector : VIRTIO_MSI_NO_VECTOR;
    for (uint16_t v = 0; v < vp->nvectors; v++) {
        memcpy(vp->msix_table[v], &s->msix_table[4 * v], 16);
        vp->msix_table[v][3] &= 1;
    }
    vp->msix_pba = s->msix_pba;
    for (uint16_t q = 0; q < vp->nqueues; q++) {
        vp->vq[q] = vq[q];
        vp->queue_vector[q] = s->q[q].msix_vector;
        vp->queue_enabled[q] = s->q[q].enabled;
    }
    uint16_t ctrl = pci_get16(s->pci_cfg, vp->msix_cap + 2u);
    vp->msix_enabled = ctrl & MSIX_CTRL_ENABLE;
    vp->msix_masked = ctrl & MSIX_CTRL_MASK;
    pthread_mutex_unlock(&vp->lock);
    pci_cfg_install(&vp->pci, s->pci_cfg);   /* moves the ioeventfds if the BAR moved */
    return 0;
}
