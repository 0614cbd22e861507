/* Modern (virtio 1.x, non-transitional) virtio-pci transport.
 *
 * One 32 KiB memory BAR (BAR 0) holds every structure the vendor
 * capabilities point at:
 *   0x0000  common configuration (features, status, queue setup)
 *   0x1000  ISR status
 *   0x2000  device-specific configuration
 *   0x3000  queue notify: queue q at 0x3000 + 4 * q (an ioeventfd each)
 *   0x4000  MSI-X table (one vector per queue + one for config changes)
 *   0x5000  MSI-X PBA
 * Interrupts are MSI-X only, delivered with KVM_SIGNAL_MSI (a vector the
 * guest masked is left pending in the PBA and sent on unmask).
 *
 * The device behind the transport (virtio-blk, ...) processes its queues on
 * its own thread, woken through the queue's kick eventfd; it shares the
 * transport's lock for its bookkeeping and uses vm_gate (below) so that it
 * never touches guest RAM or raises interrupts while the VM is paused. */
#ifndef FERRY_VIRTIO_PCI_H
#define FERRY_VIRTIO_PCI_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/pci.h"
#include "devices/virtqueue.h"
#include "migration/vmstate.h"
#include "vmm/memory.h"

#define VIRTIO_PCI_VENDOR     0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040   /* + virtio device id */
#define VIRTIO_MAX_QUEUES     8
#define VIRTIO_MAX_VECTORS    (VIRTIO_MAX_QUEUES + 1)
#define VIRTIO_MSI_NO_VECTOR  0xffff
#define VIRTIO_CONFIG_MAX     256

#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER      0x02
#define VIRTIO_STATUS_DRIVER_OK   0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

#define VIRTIO_F_VERSION_1    32

/* BAR 0 layout */
#define VIRTIO_PCI_BAR_SIZE    0x8000
#define VIRTIO_PCI_COMMON_OFF  0x0000
#define VIRTIO_PCI_COMMON_LEN  0x40
#define VIRTIO_PCI_ISR_OFF     0x1000
#define VIRTIO_PCI_DEVCFG_OFF  0x2000
#define VIRTIO_PCI_NOTIFY_OFF  0x3000
#define VIRTIO_PCI_NOTIFY_MULT 4
#define VIRTIO_PCI_MSIX_OFF    0x4000
#define VIRTIO_PCI_PBA_OFF     0x5000

/* ---- staying out of guest RAM while the VM is paused --------------------- */

/* The VM's pause handshake (struct vm's lock, cond, pause_req, stopping). A
 * device thread writes guest RAM and raises interrupts only inside
 * vm_gate_enter/leave: vm_pause() then cannot complete in the middle of it,
 * so nothing lands after migration's last dirty-page pass. All NULL = no VM
 * (unit tests): the gate is always open. */
struct vm_gate {
    pthread_mutex_t *lock;
    pthread_cond_t *cond;
    bool *pause_req;
    atomic_bool *stopping;
    /* Whether the VM's vCPUs have been started (called with *lock held):
     * an incoming VM's devices must not act before the source handed the
     * VM over (requests handed back by the source run after the start). */
    bool (*started)(void *ctx);
    void *ctx;
};

/* Wait until the VM runs (started, not paused); true with the gate held,
 * false when the VM is stopping (gate not held). */
bool vm_gate_enter(const struct vm_gate *g);
void vm_gate_leave(const struct vm_gate *g);
/* Wake the threads waiting in the gate (a device stopping its thread: they
 * find their stop flag, or the VM stopping). */
void vm_gate_wake(const struct vm_gate *g);

/* ---- transport ----------------------------------------------------------- */

struct virtio_pci;

struct virtio_dev_ops {
    /* The driver reset the device: stop using the queues. Called with the
     * transport lock held (the device may wait on vp->cond for its thread). */
    void (*reset)(void *opaque);
    /* DRIVER_OK was set: queues are live (lock held; typically kick the thread). */
    void (*driver_ok)(void *opaque);
    /* The driver writes device config bytes [off, off+len): the device
     * applies what it allows (lock held; NULL = read-only config). */
    void (*config_write)(void *opaque, uint32_t off, const uint8_t *data, uint32_t len);
};

/* Migratable per-queue state. */
struct virtio_queue_state {
    uint16_t size, enabled, msix_vector;
    uint64_t desc, driver, device;
    uint16_t last_avail_idx, used_idx;
};

/* Migratable transport state (plain data, a state table describes it). */
struct virtio_pci_state {
    uint8_t pci_cfg[PCI_CFG_SIZE];          /* BARs, command, MSI-X control */
    uint64_t driver_features;
    uint32_t dev_feature_sel, drv_feature_sel;
    uint8_t status, config_generation, isr;
    uint16_t queue_sel, config_vector;
    uint32_t msix_table[VIRTIO_MAX_VECTORS * 4]; /* addr lo, addr hi, data, vector control */
    uint64_t msix_pba;
    uint32_t nqueues;                         /* must match the device */
    struct virtio_queue_state q[VIRTIO_MAX_QUEUES];
};
extern const struct vmstate_desc vmstate_virtio_pci;

struct virtio_pci {
    struct pci_dev pci;
    pthread_mutex_t lock;     /* everything below, and the device's bookkeeping */
    pthread_cond_t cond;      /* for the device's thread handshakes */
    int vm_fd;                /* KVM_SIGNAL_MSI / KVM_IOEVENTFD; -1 in tests */
    struct guest_mem *mem;
    const struct virtio_dev_ops *ops;
    void *opaque;

    uint64_t device_features;     /* VERSION_1 included */
    uint64_t driver_features;
    uint32_t dev_feature_sel, drv_feature_sel;
    uint8_t status, config_generation, isr;
    uint16_t queue_sel, config_vector;
    uint16_t nqueues, queue_max;
    struct virtq vq[VIRTIO_MAX_QUEUES];
    uint16_t queue_vector[VIRTIO_MAX_QUEUES];
    bool queue_enabled[VIRTIO_MAX_QUEUES];
    uint32_t reset_gen;           /* bumped at each reset: stale completions are dropped */

    uint8_t *config;              /* device config bytes (the device's) */
    uint32_t config_len;

    uint8_t msix_cap;             /* config-space offset of the MSI-X capability */
    uint16_t nvectors;
    uint32_t msix_table[VIRTIO_MAX_VECTORS][4];
    uint64_t msix_pba;
    bool msix_enabled, msix_masked;

    int kick_fd[VIRTIO_MAX_QUEUES];   /* eventfds: the device's thread waits on them */
    uint64_t ioeventfd_base;          /* notify area the ioeventfds are registered at, 0 = none */
    uint64_t msis_sent;               /* statistics / tests */
};

/* Build the PCI function and the queues' kick eventfds. device_id is the
 * virtio device type (2 = block), pci_class_hi the class and subclass
 * (0x0100 = SCSI storage). name must outlive vp. 0 or -1 with a reason. */
int virtio_pci_init(struct virtio_pci *vp, const char *name, uint16_t device_id, uint16_t pci_class_hi,
                    uint64_t features, uint16_t nqueues, uint16_t queue_max,
                    uint8_t *config, uint32_t config_len, const struct virtio_dev_ops *ops,
                    void *opaque, int vm_fd, struct guest_mem *mem, char *err, size_t errlen);
void virtio_pci_destroy(struct virtio_pci *vp);

/* Signal queue q's used-buffer interrupt (lock held; the device calls it
 * inside the VM gate). */
void virtio_pci_notify_queue(struct virtio_pci *vp, uint16_t q);
/* The device changed its config: new generation + config interrupt (lock held,
 * inside the VM gate). */
void virtio_pci_notify_config(struct virtio_pci *vp);
/* The device found a malformed ring: DEVICE_NEEDS_RESET + config interrupt (lock held). */
void virtio_pci_set_needs_reset(struct virtio_pci *vp);
static inline bool virtio_pci_driver_ok(const struct virtio_pci *vp)
{
    return (vp->status & VIRTIO_STATUS_DRIVER_OK) && !(vp->status & VIRTIO_STATUS_NEEDS_RESET);
}

/* Migration (the device's save/load call these with the lock NOT held;
 * the device's thread must be quiet). load validates everything first and
 * remaps the queues; 0 or -1 with a reason (nothing changed then). */
void virtio_pci_save(struct virtio_pci *vp, struct virtio_pci_state *s);
int virtio_pci_load(struct virtio_pci *vp, const struct virtio_pci_state *s, char *err, size_t errlen);

#endif
