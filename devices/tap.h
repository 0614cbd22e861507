/* Tap backend for a virtual NIC: a Linux tap device opened through /dev/net/tun
 * with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, so every frame read or written starts
 * with a 12-byte virtio 1.x net header (struct virtio_net_hdr_v1: flags, gso_type,
 * hdr_len, gso_size, csum_start, csum_offset, num_buffers; little-endian, which is
 * the host's order on x86). The fd is non-blocking: poll it for POLLIN.
 *
 * Offloads: the tap always accepts GSO/partial-checksum frames from us (what the
 * guest sends with VIRTIO_NET_F_HOST_*), as the header describes them. What the
 * kernel may hand *to* us (the guest's VIRTIO_NET_F_GUEST_* features) is chosen
 * with TUNSETOFFLOAD: tap_set_offload(tap_offload_for_guest(features)) once the
 * guest has acknowledged its features; tap_probe_offload tells which exist.
 *
 * Errors are one line in err, naming the device ("tap ferry0: ..."). */
#ifndef FERRY_TAP_H
#define FERRY_TAP_H

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define TAP_VNET_HDR_LEN 12          /* virtio 1.x: virtio_net_hdr_v1 (with num_buffers) */
#define TAP_TUN_PATH "/dev/net/tun"

/* TUNSETOFFLOAD flags (linux/if_tun.h; the USO ones are newer than some headers). */
#define TAP_OFF_CSUM    0x01         /* TUN_F_CSUM: partial checksums */
#define TAP_OFF_TSO4    0x02
#define TAP_OFF_TSO6    0x04
#define TAP_OFF_TSO_ECN 0x08
#define TAP_OFF_UFO     0x10
#define TAP_OFF_USO4    0x20
#define TAP_OFF_USO6    0x40

/* tap_open flags */
#define TAP_MULTI_QUEUE 0x1          /* IFF_MULTI_QUEUE: open once per queue, same name */
#define TAP_NO_VNET_HDR 0x2          /* plain frames, no header (tests, tools) */

struct tap {
    int fd;                          /* -1 when closed */
    char name[IFNAMSIZ];             /* the device's name (the kernel's, if it chose) */
    int vnet_hdr_len;                /* TAP_VNET_HDR_LEN, or 0 with TAP_NO_VNET_HDR */
    unsigned flags;                  /* TAP_* as opened */
    unsigned offload;                /* TAP_OFF_* last set */
};

/* Attach to the tap device NAME in this process's network namespace, creating
 * it (non-persistent: it goes away on close) when it does not exist and we may
 * (CAP_NET_ADMIN). NAME may be a pattern such as "tap%d"; NULL or "" means
 * "tap%d". Sets the vnet header size, offloads off. 0, or -1 with err set:
 *   "tap ferry0: cannot open /dev/net/tun: No such file or directory"
 *   "tap ferry0: device busy or not permitted: Device or resource busy" */
int tap_open(struct tap *t, const char *name, unsigned flags, char *err, size_t errlen);
void tap_close(struct tap *t);

/* Bring the interface up or down (SIOCSIFFLAGS; needs CAP_NET_ADMIN). */
int tap_set_up(struct tap *t, bool up, char *err, size_t errlen);
/* The interface's index, or -1 with err set. */
int tap_ifindex(const struct tap *t, char *err, size_t errlen);

/* TUNSETOFFLOAD with TAP_OFF_* (TSO/UFO/USO need CSUM). */
int tap_set_offload(struct tap *t, unsigned offload, char *err, size_t errlen);
/* The TAP_OFF_* the kernel accepts on this device (tried one group at a time:
 * CSUM, TSO4|TSO6|TSO_ECN, UFO, USO4|USO6); leaves the offloads as they were. */
unsigned tap_probe_offload(struct tap *t);
/* TAP_OFF_* matching a guest's negotiated virtio-net features (VIRTIO_NET_F_GUEST_
 * CSUM, TSO4, TSO6, ECN, UFO, USO4, USO6), as QEMU's virtio_net_apply_guest_offloads. */
unsigned tap_offload_for_guest(uint64_t features);

/* One frame, vnet header first (when enabled). Non-blocking: the byte count, or
 * -errno (-EAGAIN: nothing to read / no room; -EINVAL from a read: the buffer
 * is shorter than the frame's header, or the header is malformed on write). A
 * read shorter than the frame truncates it (the rest is lost, as with tun).
 * On reads the kernel fills the first 10 header bytes; num_buffers (bytes 10-11)
 * is the device's to set (1 without VIRTIO_NET_F_MRG_RXBUF): older kernels
 * (6.1) leave whatever the buffer held there. */
ssize_t tap_read(struct tap *t, void *buf, size_t len);
ssize_t tap_readv(struct tap *t, const struct iovec *iov, int iovcnt);
ssize_t tap_write(struct tap *t, const void *buf, size_t len);
ssize_t tap_writev(struct tap *t, const struct iovec *iov, int iovcnt);

/* Send a bare Ethernet frame (no offloads): a zeroed vnet header is prepended
 * when the tap has one. 0 or -errno. */
int tap_send_frame(struct tap *t, const void *frame, size_t len);
/* The same with the signature of an announce send callback (opaque = struct tap *). */
int tap_send_cb(void *tap, const void *frame, size_t len);

#endif
