#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "devices/tap.h"

/* virtio-net feature bits (linux/virtio_net.h; USO is newer than some headers) */
#define VNET_F_GUEST_CSUM 1
#define VNET_F_GUEST_TSO4 7
#define VNET_F_GUEST_TSO6 8
#define VNET_F_GUEST_ECN  9
#define VNET_F_GUEST_UFO  10
#define VNET_F_GUEST_USO4 54
#define VNET_F_GUEST_USO6 55

_Static_assert(TAP_OFF_CSUM == TUN_F_CSUM && TAP_OFF_TSO4 == TUN_F_TSO4 &&
               TAP_OFF_TSO6 == TUN_F_TSO6 && TAP_OFF_TSO_ECN == TUN_F_TSO_ECN &&
               TAP_OFF_UFO == TUN_F_UFO, "TAP_OFF_* are the TUN_F_* values");

int tap_open(struct tap *t, const char *name, unsigned flags, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->fd = -1;
    if (!name || !*name)
        name = "tap%d";
    if (strlen(name) >= IFNAMSIZ) {
        snprintf(err, errlen, "tap %s: name too long (at most %d characters)", name, IFNAMSIZ - 1);
        return -1;
    }
    int fd = open(TAP_TUN_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "tap %s: cannot open %s: %s", name, TAP_TUN_PATH, strerror(errno));
        return -1;
    }
    bool vnet = !(flags & TAP_NO_VNET_HDR), mq = flags & TAP_MULTI_QUEUE;
    unsigned int features = 0;
    if (ioctl(fd, TUNGETFEATURES, &features) == 0) {
        if (vnet && !(features & IFF_VNET_HDR)) {
            snprintf(err, errlen, "tap %s: the kernel's tun driver lacks IFF_VNET_HDR", name);
            goto fail;
        }
        if (mq && !(features & IFF_MULTI_QUEUE)) {
            snprintf(err, errlen, "tap %s: the kernel's tun driver lacks IFF_MULTI_QUEUE", name);
            goto fail;
        }
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = (short)(IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0) |
                            (mq ? IFF_MULTI_QUEUE : 0));
    memcpy(ifr.ifr_name, name, strlen(name));
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        if (e == EBUSY || e == EPERM || e == EACCES)
            snprintf(err, errlen, "tap %s: device busy or not permitted: %s", name, strerror(e));
        else if (e == EINVAL)
            snprintf(err, errlen, "tap %s: cannot attach: not a tap device, or its multi_queue "
                     "setting differs (%s): %s", name, mq ? "multi_queue asked" : "single queue asked",
                     strerror(e));
        else
            snprintf(err, errlen, "tap %s: TUNSETIFF: %s", name, strerror(e));
        goto fail;
    }
    memcpy(t->name, ifr.ifr_name, IFNAMSIZ);
    t->name[IFNAMSIZ - 1] = '\0';
    if (vnet) {
        int sz = TAP_VNET_HDR_LEN;
        if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
            snprintf(err, errlen, "tap %s: cannot set the vnet header size to %d: %s", t->name, sz,
                     strerror(errno));
            goto fail;
        }
        t->vnet_hdr_len = sz;
    }
    t->fd = fd;
    t->flags = flags;
    if (tap_set_offload(t, 0, err, errlen) < 0) {
        t->fd = -1;
        goto fail;
    }
    return 0;
fail:
    close(fd);
    t->name[0] = '\0';
    return -1;
}

void tap_close(struct tap *t)
{
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

static int ifreq_ioctl(const struct tap *t, unsigned long req, struct ifreq *ifr, const char *what,
                       char *err, size_t errlen)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        snprintf(err, errlen, "tap %s: socket: %s", t->name, strerror(errno));
        return -1;
    }
    memcpy(ifr->ifr_name, t->name, IFNAMSIZ);
    int r = ioctl(s, req, ifr);
    int e = errno;
    close(s);
    if (r < 0) {
        snprintf(err, errlen, "tap %s: %s: %s", t->name, what, strerror(e));
        return -1;
    }
    return 0;
}

int tap_set_up(struct tap *t, bool up, char *err, size_t errlen)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    if (ifreq_ioctl(t, SIOCGIFFLAGS, &ifr, "cannot read the interface flags", err, errlen) < 0)
        return -1;
    short want = up ? (short)(ifr.ifr_flags | IFF_UP) : (short)(ifr.ifr_flags & ~IFF_UP);
    if (want == ifr.ifr_flags)
        return 0;
    ifr.ifr_flags = want;
    return ifreq_ioctl(t, SIOCSIFFLAGS, &ifr, up ? "cannot bring the interface up"
                                                 : "cannot bring the interface down", err, errlen);
}

int tap_ifindex(const struct tap *t, char *err, size_t errlen)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    if (ifreq_ioctl(t, SIOCGIFINDEX, &ifr, "cannot get the interface index", err, errlen) < 0)
        return -1;
    return ifr.ifr_ifindex;
}

int tap_set_offload(struct tap *t, unsigned offload, char *err, size_t errlen)
{
    if (ioctl(t->fd, TUNSETOFFLOAD, (unsigned long)offload) < 0) {
        snprintf(err, errlen, "tap %s: TUNSETOFFLOAD 0x%x: %s", t->name, offload, strerror(errno));
        return -1;
    }
    t->offload = offload;
    return 0;
}

unsigned tap_probe_offload(struct tap *t)
{
    /* each group with what it needs on top of CSUM */
    static const struct { unsigned group, needs; } groups[] = {
        { TAP_OFF_CSUM, 0 },
        { TAP_OFF_TSO4 | TAP_OFF_TSO6, 0 },
        { TAP_OFF_TSO_ECN, TAP_OFF_TSO4 | TAP_OFF_TSO6 },
        { TAP_OFF_UFO, 0 },
        { TAP_OFF_USO4 | TAP_OFF_USO6, 0 },
    };
    unsigned ok = 0;
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
        unsigned try = TAP_OFF_CSUM | groups[i].group | groups[i].needs;
        if (ioctl(t->fd, TUNSETOFFLOAD, (unsigned long)try) == 0)
            ok |= groups[i].group;
        if (!(ok & TAP_OFF_CSUM))
            break;        /* nothing goes without partial checksums */
    }
    ioctl(t->fd, TUNSETOFFLOAD, (unsigned long)t->offload);
    return ok;
}

unsigned tap_offload_for_guest(uint64_t f)
{
#define HAS(bit) ((f >> (bit)) & 1)
    if (!HAS(VNET_F_GUEST_CSUM))
        return 0;
    return TAP_OFF_CSUM |
           (HAS(VNET_F_GUEST_TSO4) ? TAP_OFF_TSO4 : 0u) |
           (HAS(VNET_F_GUEST_TSO6) ? TAP_OFF_TSO6 : 0u) |
           (HAS(VNET_F_GUEST_ECN) ? TAP_OFF_TSO_ECN : 0u) |
           (HAS(VNET_F_GUEST_UFO) ? TAP_OFF_UFO : 0u) |
           (HAS(VNET_F_GUEST_USO4) ? TAP_OFF_USO4 : 0u) |
           (HAS(VNET_F_GUEST_USO6) ? TAP_OFF_USO6 : 0u);
#undef HAS
}

ssize_t tap_readv(struct tap *t, const struct iovec *iov, int iovcnt)
{
    ssize_t r;
    do
        r = readv(t->fd, iov, iovcnt);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

ssize_t tap_read(struct tap *t, void *buf, size_t len)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    return tap_readv(t, &iov, 1);
}

ssize_t tap_writev(struct tap *t, const struct iovec *iov, int iovcnt)
{
    ssize_t r;
    do
        r = writev(t->fd, iov, iovcnt);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

ssize_t tap_write(struct tap *t, const void *buf, size_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return tap_writev(t, &iov, 1);
}

int tap_send_frame(struct tap *t, const void *frame, size_t len)
{
    static const uint8_t zero_hdr[TAP_VNET_HDR_LEN];
    struct iovec iov[2] = {
        { .iov_base = (void *)zero_hdr, .iov_len = (size_t)t->vnet_hdr_len },
        { .iov_base = (void *)frame, .iov_len = len },
    };
    ssize_t r = t->vnet_hdr_len ? tap_writev(t, iov, 2) : tap_writev(t, iov + 1, 1);
    if (r < 0)
        return (int)r;
    return (size_t)r == len + (size_t)t->vnet_hdr_len ? 0 : -EIO;
}

int tap_send_cb(void *tap, const void *frame, size_t len)
{
    return tap_send_frame(tap, frame, len);
}
