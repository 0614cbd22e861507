/* Tap backend (devices/tap.c) against the kernel's tun driver, inside a private
 * network namespace of this process (unshare CLONE_NEWNET, or CLONE_NEWUSER |
 * CLONE_NEWNET without privileges): open/create, flags and the 12-byte vnet
 * header, busy and multi-queue errors, offloads, and frames both ways checked
 * with an AF_PACKET socket on the tap. Skipped when no namespace or no
 * /dev/net/tun is available. The offload mapping is checked everywhere. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "devices/tap.h"

#define ETH_P_TEST 0x88b5          /* IEEE local experimental ethertype */

static bool have_ns;               /* in a private netns with /dev/net/tun */
static char why[200];

static void need_ns(void)
{
    if (!have_ns) {
        print_message("skipped: %s\n", why);
        skip();
    }
}

static void enter_private_netns(void)
{
    if (access(TAP_TUN_PATH, R_OK | W_OK) != 0) {
        snprintf(why, sizeof(why), "%s: %s", TAP_TUN_PATH, strerror(errno));
        return;
    }
    if (unshare(CLONE_NEWNET) != 0 && unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
        snprintf(why, sizeof(why), "cannot create a network namespace: %s", strerror(errno));
        return;
    }
    have_ns = true;
}

/* a test frame: broadcast, ethertype ETH_P_TEST, a numbered payload */
static size_t test_frame(uint8_t *f, const uint8_t src[6], uint8_t seed, size_t len)
{
    memset(f, 0xff, 6);
    memcpy(f + 6, src, 6);
    f[12] = ETH_P_TEST >> 8;
    f[13] = ETH_P_TEST & 0xff;
    for (size_t i = 14; i < len; i++)
        f[i] = (uint8_t)(seed + i);
    return len;
}

/* an AF_PACKET socket on ifindex for ETH_P_TEST only */
static int packet_socket(int ifindex)
{
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_TEST));
    assert_true(s >= 0);
    struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_TEST),
                               .sll_ifindex = ifindex };
    assert_int_equal(bind(s, (struct sockaddr *)&sll, sizeof(sll)), 0);
    return s;
}

static bool wait_readable(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, ms) == 1;
}

static void open_creates(void **state)
{
    need_ns();
    struct tap t;
    char err[256] = "";
    assert_int_equal(tap_open(&t, "ftap0", 0, err, sizeof(err)), 0);
    assert_string_equal(t.name, "ftap0");
    assert_int_equal(t.vnet_hdr_len, TAP_VNET_HDR_LEN);
    assert_true(if_nametoindex("ftap0") > 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    assert_int_equal(ioctl(t.fd, TUNGETIFF, &ifr), 0);
    assert_int_equal(ifr.ifr_flags & (IFF_TAP | IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE),
                     IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    int sz = 0;
    assert_int_equal(ioctl(t.fd, TUNGETVNETHDRSZ, &sz), 0);
    assert_int_equal(sz, 12);
    assert_true(fcntl(t.fd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(t.fd, F_GETFD) & FD_CLOEXEC);
    uint8_t buf[2048];
    assert_int_equal(tap_read(&t, buf, sizeof(buf)), -EAGAIN);
    tap_close(&t);
    assert_int_equal(t.fd, -1);
    assert_int_equal(if_nametoindex("ftap0"), 0);   /* not persistent: gone */
    tap_close(&t);                                  /* twice is harmless */
}

static void open_pattern(void **state)
{
    need_ns();
    struct tap t;
    char err[256] = "";
    assert_int_equal(tap_open(&t, NULL, TAP_NO_VNET_HDR, err, sizeof(err)), 0);
    assert_int_equal(strncmp(t.name, "tap", 3), 0);
    assert_true(if_nametoindex(t.name) > 0);
    assert_int_equal(t.vnet_hdr_len, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    assert_int_equal(ioctl(t.fd, TUNGETIFF, &ifr), 0);
    assert_false(ifr.ifr_flags & IFF_VNET_HDR);
    tap_close(&t);
}

static void open_errors(void **state)
{
    struct tap t;
    char err[256] = "";
    /* needs no namespace: refused before any system call */
    assert_int_equal(tap_open(&t, "a-name-far-too-long", 0, err, sizeof(err)), -1);
    assert_string_equal(err, "tap a-name-far-too-long: name too long (at most 15 characters)");
    assert_int_equal(t.fd, -1);
    need_ns();
    struct tap a, b;
    assert_int_equal(tap_open(&a, "fbusy0", 0, err, sizeof(err)), 0);
    assert_int_equal(tap_open(&b, "fbusy0", 0, err, sizeof(err)), -1);
    assert_string_equal(err, "tap fbusy0: device busy or not permitted: Device or resource busy");
    assert_int_equal(b.fd, -1);
    /* a single-queue device cannot be attached as multi-queue */
    assert_int_equal(tap_open(&b, "fbusy0", TAP_MULTI_QUEUE, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "tap fbusy0: cannot attach: not a tap device, or its multi_queue setting differs"));
    assert_null(strchr(err, '\n'));
    tap_close(&a);
}

static void multi_queue(void **state)
{
    need_ns();
    struct tap q[3];
    char err[256] = "";
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tap_open(&q[i], "fmq0", TAP_MULTI_QUEUE, err, sizeof(err)), 0);
        assert_string_equal(q[i].name, "fmq0");
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    assert_int_equal(ioctl(q[2].fd, TUNGETIFF, &ifr), 0);
    assert_true(ifr.ifr_flags & IFF_MULTI_QUEUE);
    struct tap sq;
    assert_int_equal(tap_open(&sq, "fmq0", 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "multi_queue setting differs"));
    for (int i = 0; i < 3; i++)
        tap_close(&q[i]);
}

static void offloads(void **state)
{
    need_ns();
    struct tap t;
    char err[256] = "";
    assert_int_equal(tap_open(&t, "foff0", 0, err, sizeof(err)), 0);
    unsigned ok = tap_probe_offload(&t);
    assert_true(ok & TAP_OFF_CSUM);
    assert_true((ok & (TAP_OFF_TSO4 | TAP_OFF_TSO6)) == (TAP_OFF_TSO4 | TAP_OFF_TSO6));
    assert_int_equal(t.offload, 0);
    assert_int_equal(tap_set_offload(&t, TAP_OFF_CSUM | TAP_OFF_TSO4 | TAP_OFF_TSO6, err, sizeof(err)), 0);
    assert_int_equal(t.offload, TAP_OFF_CSUM | TAP_OFF_TSO4 | TAP_OFF_TSO6);
    assert_int_equal(tap_probe_offload(&t), ok);      /* probing leaves them as set */
    assert_int_equal(t.offload, TAP_OFF_CSUM | TAP_OFF_TSO4 | TAP_OFF_TSO6);
    assert_int_equal(tap_set_offload(&t, 0x8000, err, sizeof(err)), -1);
    assert_string_equal(err, "tap foff0: TUNSETOFFLOAD 0x8000: Invalid argument");
    tap_close(&t);
}

static void offload_mapping(void **state)
{
    /* virtio-net feature bits: GUEST_CSUM 1, TSO4 7, TSO6 8, ECN 9, UFO 10, USO4 54, USO6 55 */
    assert_int_equal(tap_offload_for_guest(0), 0);
    assert_int_equal(tap_offload_for_guest(1ull << 7 | 1ull << 8), 0);   /* nothing without CSUM */
    assert_int_equal(tap_offload_for_guest(1ull << 1), TAP_OFF_CSUM);
    assert_int_equal(tap_offload_for_guest(1ull << 1 | 1ull << 7 | 1ull << 8 | 1ull << 9),
                     TAP_OFF_CSUM | TAP_OFF_TSO4 | TAP_OFF_TSO6 | TAP_OFF_TSO_ECN);
    assert_int_equal(tap_offload_for_guest(1ull << 1 | 1ull << 10 | 1ull << 54 | 1ull << 55),
                     TAP_OFF_CSUM | TAP_OFF_UFO | TAP_OFF_USO4 | TAP_OFF_USO6);
    /* host-side and unrelated bits do not matter */
    assert_int_equal(tap_offload_for_guest(1ull << 1 | 1ull << 0 | 1ull << 11 | 1ull << 32), TAP_OFF_CSUM);
}

static void frames_both_ways(void **state)
{
    need_ns();
    struct tap t;
    char err[256] = "";
    assert_int_equal(tap_open(&t, "fio0", 0, err, sizeof(err)), 0);
    assert_int_equal(tap_set_up(&t, true, err, sizeof(err)), 0);
    assert_int_equal(tap_set_up(&t, true, err, sizeof(err)), 0);    /* already up */
    int ifindex = tap_ifindex(&t, err, sizeof(err));
    assert_int_equal(ifindex, (int)if_nametoindex("fio0"));
    int ps = packet_socket(ifindex);
    const uint8_t host_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 }, vm_mac[6] = { 0x52, 0x54, 0, 0, 0, 0x02 };

    /* the host sends: we read the frame behind a zeroed 12-byte header */
    uint8_t f[200], buf[2048];
    size_t n = test_frame(f, host_mac, 7, 100);
    assert_int_equal(send(ps, f, n, 0), (ssize_t)n);
    ssize_t r = 0;
    for (int tries = 0; tries < 50; tries++) {     /* skip the kernel's own frames (IPv6 etc.) */
        assert_true(wait_readable(t.fd, 2000));
        r = tap_read(&t, buf, sizeof(buf));
        assert_true(r > TAP_VNET_HDR_LEN + 14);
        if (buf[TAP_VNET_HDR_LEN + 12] == (ETH_P_TEST >> 8) && buf[TAP_VNET_HDR_LEN + 13] == (ETH_P_TEST & 0xff))
            break;
    }
    assert_int_equal(r, TAP_VNET_HDR_LEN + 100);
    static const uint8_t zero[TAP_VNET_HDR_LEN];
    assert_memory_equal(buf, zero, 10);            /* flags, gso_type NONE, ...; num_buffers is ours */
    assert_memory_equal(buf + TAP_VNET_HDR_LEN, f, n);

    /* a buffer too small for the header: refused, the frame stays queued */
    assert_int_equal(send(ps, f, n, 0), (ssize_t)n);
    assert_true(wait_readable(t.fd, 2000));
    r = tap_read(&t, buf, 8);
    assert_int_equal(r, -EINVAL);

    /* the VM sends: tap_send_frame prepends the header, the host gets the frame */
    size_t m = test_frame(f, vm_mac, 42, 60);
    assert_int_equal(tap_send_frame(&t, f, m), 0);
    assert_true(wait_readable(ps, 2000));
    r = recv(ps, buf, sizeof(buf), 0);
    assert_int_equal(r, (ssize_t)m);
    assert_memory_equal(buf, f, m);

    /* header + frame in pieces (as from a descriptor chain) */
    uint8_t hdr[TAP_VNET_HDR_LEN] = { 0 };
    m = test_frame(f, vm_mac, 99, 150);
    struct iovec iov[3] = { { hdr, sizeof(hdr) }, { f, 20 }, { f + 20, m - 20 } };
    assert_int_equal(tap_writev(&t, iov, 3), (ssize_t)(sizeof(hdr) + m));
    assert_true(wait_readable(ps, 2000));
    assert_int_equal(recv(ps, buf, sizeof(buf), 0), (ssize_t)m);
    assert_memory_equal(buf, f, m);

    /* the header is parsed: hdr_len beyond the frame is rejected */
    hdr[2] = 0xff;
    hdr[3] = 0xff;
    assert_int_equal(tap_writev(&t, iov, 3), -EINVAL);

    close(ps);
    tap_close(&t);
}

static void frames_no_vnet_hdr(void **state)
{
    need_ns();
    struct tap t;
    char err[256] = "";
    assert_int_equal(tap_open(&t, "fplain0", TAP_NO_VNET_HDR, err, sizeof(err)), 0);
    assert_int_equal(tap_set_up(&t, true, err, sizeof(err)), 0);
    int ps = packet_socket(tap_ifindex(&t, err, sizeof(err)));
    const uint8_t vm_mac[6] = { 0x52, 0x54, 0, 0, 0, 0x03 };
    uint8_t f[64], buf[256];
    size_t m = test_frame(f, vm_mac, 1, 60);
    assert_int_equal(tap_send_frame(&t, f, m), 0);
    assert_true(wait_readable(ps, 2000));
    assert_int_equal(recv(ps, buf, sizeof(buf), 0), (ssize_t)m);
    assert_memory_equal(buf, f, m);
    assert_int_equal(tap_set_up(&t, false, err, sizeof(err)), 0);
    close(ps);
    tap_close(&t);
}

int main(void)
{
    enter_private_netns();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(offload_mapping),
        cmocka_unit_test(open_errors),
        cmocka_unit_test(open_creates),
        cmocka_unit_test(open_pattern),
        cmocka_unit_test(multi_queue),
        cmocka_unit_test(offloads),
        cmocka_unit_test(frames_both_ways),
        cmocka_unit_test(frames_no_vnet_hdr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
