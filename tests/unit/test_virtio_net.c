/* virtio-net (devices/virtio_net.c) driven like the Linux driver over a fake
 * guest RAM, with a real tap device in a private network namespace and an
 * AF_PACKET socket on it as "the network": frames the guest transmits arrive
 * there byte for byte, frames sent there land in the guest's receive buffers
 * (merged across small buffers, or waiting until buffers are posted, or read
 * straight into them when there is room for the largest frame), the
 * guest's IPv4 address is learned from its ARP, state survives save/load into
 * a second device, a different MAC is refused, and the announcement after a
 * migration puts a RARP with the VM's MAC on the wire and asks the guest to
 * announce itself, whose control-queue ack clears the request; other control
 * commands are refused. Skipped without a
 * private namespace or /dev/net/tun. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "devices/pci.h"
#include "devices/virtio_net.h"
#include "tests/unit/virtio_bar.h"

#define RAM   (1u << 22)
#define QSZ   16
#define RXQ_DESC 0x10000
#define TXQ_DESC 0x20000
#define CTRLQ_DESC 0x30000
#define CTRLBUF 0x40000
#define RXBUF 0x100000          /* receive buffers: 64 KiB each */
#define TXBUF 0x300000

static uint8_t ram[RAM] __attribute__((aligned(4096)));
static struct guest_mem mem;
static struct pci_host host;
static struct virtio_net net;
static struct vm_gate no_gate;  /* all NULL: always open */
static const uint8_t MAC[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
static bool have_ns;
static char why[200];
static uint64_t bar0;
static uint16_t rx_avail, tx_avail, tx_free, ctrl_avail;

static void need_ns(void)
{
    if (!have_ns) {
        print_message("skipped: %s\n", why);
        skip();
    }
}

/* ---- the driver side ---------------------------------------------------- */

static void bw(uint32_t off, uint32_t len, uint64_t v) { bar_write(&host, bar0, off, len, v); }
static uint64_t br(uint32_t off, uint32_t len) { return bar_read(&host, bar0, off, len); }

static void put16(uint64_t gpa, uint16_t v) { memcpy(ram + gpa, &v, 2); }
static uint16_t get16(uint64_t gpa) { uint16_t v; memcpy(&v, ram + gpa, 2); return v; }
static uint32_t get32(uint64_t gpa) { uint32_t v; memcpy(&v, ram + gpa, 4); return v; }

static uint64_t avail_of(uint64_t d) { return d + 16 * QSZ; }
static uint64_t used_of(uint64_t d) { return d + 0x1000; }

static void queue_setup(uint16_t q, uint64_t d)
{
    bw(0x16, 2, q);
    bw(0x18, 2, QSZ);
    bw(0x20, 8, d);
    bw(0x28, 8, avail_of(d));
    bw(0x30, 8, used_of(d));
    bw(0x1c, 2, 1);
}

/* Negotiate `features` (what the Linux driver would take of the offer). */
static void driver_init(uint64_t features)
{
    bw(0x14, 1, 0);
    bw(0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    bw(0x08, 4, 0);
    bw(0x0c, 4, (uint32_t)features);
    bw(0x08, 4, 1);
    bw(0x0c, 4, (uint32_t)(features >> 32) | 1);    /* VERSION_1 */
    bw(0x14, 1, 0x0b);
    assert_int_equal(br(0x14, 1), 0x0b);
    queue_setup(VIRTIO_NET_RXQ, RXQ_DESC);
    queue_setup(VIRTIO_NET_TXQ, TXQ_DESC);
    if (features & (1ull << VIRTIO_NET_F_CTRL_VQ))
        queue_setup(VIRTIO_NET_CTRLQ, CTRLQ_DESC);
    bw(0x14, 1, 0x0f);
    rx_avail = tx_avail = tx_free = ctrl_avail = 0;
}

static void desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags)
{
    struct virtq_desc dd = { addr, len, flags, 0 };
    memcpy(ram + table + 16 * i, &dd, 16);
}

static void notify(uint16_t q) { bw(VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * q, 2, q); }

/* Post one receive buffer of len bytes (descriptor i). */
static void post_rx(unsigned i, uint32_t len)
{
    desc(RXQ_DESC, i, RXBUF + 0x10000 * i, len, VIRTQ_DESC_F_WRITE);
    put16(avail_of(RXQ_DESC) + 4 + 2 * (rx_avail % QSZ), (uint16_t)i);
    put16(avail_of(RXQ_DESC) + 2, ++rx_avail);
}

/* Transmit hdr + frame as one descriptor. */
static void send_tx(const void *frame, size_t len)
{
    unsigned i = tx_free++ % QSZ;
    uint64_t buf = TXBUF + 0x10000 * i;
    memset(ram + buf, 0, TAP_VNET_HDR_LEN);
    memcpy(ram + buf + TAP_VNET_HDR_LEN, frame, len);
    desc(TXQ_DESC, i, buf, (uint32_t)(TAP_VNET_HDR_LEN + len), 0);
    put16(avail_of(TXQ_DESC) + 4 + 2 * (tx_avail % QSZ), (uint16_t)i);
    put16(avail_of(TXQ_DESC) + 2, ++tx_avail);
    notify(VIRTIO_NET_TXQ);
}

/* Wait (up to 2 s) until the used index of the queue at d reaches idx. */
static bool used_reaches(uint64_t d, uint16_t idx)
{
    for (int i = 0; i < 2000; i++) {
        if ((uint16_t)(get16(used_of(d) + 2) - idx) < 0x8000)
            return true;
        usleep(1000);
    }
    return false;
}

/* Send control command (class, cmd) as the Linux driver does (header, then a
 * writable ack byte); returns the device's ack. */
static uint8_t ctrl_cmd(uint8_t class, uint8_t cmd)
{
    struct virtq_desc d[2] = { { CTRLBUF, 2, VIRTQ_DESC_F_NEXT, 1 }, { CTRLBUF + 16, 1, VIRTQ_DESC_F_WRITE, 0 } };
    memcpy(ram + CTRLQ_DESC, d, sizeof(d));
    ram[CTRLBUF] = class, ram[CTRLBUF + 1] = cmd, ram[CTRLBUF + 16] = 0xee;
    put16(avail_of(CTRLQ_DESC) + 4 + 2 * (ctrl_avail % QSZ), 0);
    put16(avail_of(CTRLQ_DESC) + 2, ++ctrl_avail);
    notify(VIRTIO_NET_CTRLQ);
    assert_true(used_reaches(CTRLQ_DESC, ctrl_avail));
    return ram[CTRLBUF + 16];
}

/* ---- the network side --------------------------------------------------- */

#define ETH_P_TEST 0x88b5

static int wire(uint16_t proto)
{
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(proto));
    assert_true(s >= 0);
    struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(proto),
                               .sll_ifindex = (int)if_nametoindex(net.tap.name) };
    assert_int_equal(bind(s, (struct sockaddr *)&sll, sizeof(sll)), 0);
    return s;
}

static ssize_t wire_recv(int s, uint8_t *buf, size_t len)
{
    struct pollfd p = { .fd = s, .events = POLLIN };
    if (poll(&p, 1, 2000) != 1)
        return -1;
    return recv(s, buf, len, 0);
}

static size_t test_frame(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], size_t len, uint8_t seed)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = ETH_P_TEST >> 8;
    f[13] = ETH_P_TEST & 0xff;
    for (size_t i = 14; i < len; i++)
        f[i] = (uint8_t)(seed + i * 7);
    return len;
}

/* ---- fixtures ----------------------------------------------------------- */

static int make(struct virtio_net *n, const char *tap, const uint8_t mac[6])
{
    char err[256];
    int r = virtio_net_create(n, 0, tap, mac, -1, &mem, &no_gate, err, sizeof(err));
    if (r < 0)
        print_error("%s\n", err);
    return r;
}

static int setup(void **state)
{
    if (!have_ns)
        return 0;
    memset(ram, 0, sizeof(ram));
    gmem_init_fake(&mem, RAM, ram);
    pci_host_init(&host);
    assert_int_equal(make(&net, "fnet0", MAC), 0);
    char err[160];
    assert_int_equal(pci_register(&host, &net.vp.pci, err, sizeof(err)), 0);
    bar0 = pci_cfg_read(&host, net.vp.pci.slot, PCI_BAR0, 4) & ~0xfull;
    return 0;
}

static int teardown(void **state)
{
    if (have_ns)
        virtio_net_destroy(&net);
    return 0;
}

#define F(b) (1ull << (b))

/* ---- tests -------------------------------------------------------------- */

static void test_identity_and_config(void **state)
{
    need_ns();
    assert_int_equal(pci_cfg_read(&host, net.vp.pci.slot, PCI_DEVICE_ID, 2), 0x1041);
    bw(0x00, 4, 0);
    uint32_t f = (uint32_t)br(0x04, 4);
    uint64_t want = F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_STATUS) | F(VIRTIO_NET_F_MRG_RXBUF) |
                    F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_HOST_TSO4) | F(VIRTIO_NET_F_HOST_TSO6);
    assert_int_equal(f & want, want);
    for (int i = 0; i < 6; i++)
        assert_int_equal(br(VIRTIO_PCI_DEVCFG_OFF + i, 1), MAC[i]);
    assert_int_equal(br(VIRTIO_PCI_DEVCFG_OFF + 6, 2), VIRTIO_NET_S_LINK_UP);
}

static void test_transmit(void **state)
{
    need_ns();
    driver_init(F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_MRG_RXBUF));
    int s = wire(ETH_P_TEST);
    static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    uint8_t f[1514], got[2048];
    for (int k = 0; k < 3; k++) {
        size_t len = test_frame(f, bcast, MAC, 60 + 700 * (size_t)k, (uint8_t)k);
        send_tx(f, len);
        assert_int_equal(wire_recv(s, got, sizeof(got)), (ssize_t)len);
        assert_memory_equal(got, f, len);
    }
    assert_true(used_reaches(TXQ_DESC, 3));
    struct virtio_net_stats st;
    uint32_t ip;
    virtio_net_stats(&net, &st, &ip);
    assert_int_equal(st.tx_packets, 3);
    assert_int_equal(ip, 0);
    close(s);
}

static void test_receive_and_merge(void **state)
{
    need_ns();
    driver_init(F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_MRG_RXBUF));
    int s = wire(ETH_P_TEST);
    uint8_t f[1400];
    size_t len = test_frame(f, MAC, (const uint8_t[6]){ 2, 0, 0, 0, 0, 9 }, sizeof(f), 5);
    /* no buffers yet: the frame waits in the tap */
    assert_int_equal(send(s, f, len, 0), (ssize_t)len);
    usleep(50000);
    assert_int_equal(get16(used_of(RXQ_DESC) + 2), 0);
    /* three 600-byte buffers: the frame (with its 12-byte header) takes all three */
    for (unsigned i = 0; i < 3; i++)
        post_rx(i, 600);
    notify(VIRTIO_NET_RXQ);
    assert_true(used_reaches(RXQ_DESC, 3));
    uint64_t used = used_of(RXQ_DESC);
    uint32_t total = 0;
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(get32(used + 4 + 8 * i), i);                  /* id */
        total += get32(used + 8 + 8 * i);                              /* len */
    }
    assert_int_equal(total, TAP_VNET_HDR_LEN + len);
    assert_int_equal(get16(RXBUF + 10), 3);                            /* num_buffers */
    uint8_t joined[3 * 600];
    for (unsigned i = 0; i < 3; i++)
        memcpy(joined + 600 * i, ram + RXBUF + 0x10000 * i, 600);
    assert_memory_equal(joined + TAP_VNET_HDR_LEN, f, len);
    /* a small frame in one big buffer */
    post_rx(3, 2048);
    notify(VIRTIO_NET_RXQ);
    len = test_frame(f, MAC, (const uint8_t[6]){ 2, 0, 0, 0, 0, 9 }, 64, 9);
    assert_int_equal(send(s, f, len, 0), (ssize_t)len);
    assert_true(used_reaches(RXQ_DESC, 4));
    assert_int_equal(get32(used + 8 + 8 * 3), TAP_VNET_HDR_LEN + len);
    assert_int_equal(get16(RXBUF + 0x30000 + 10), 1);
    assert_memory_equal(ram + RXBUF + 0x30000 + TAP_VNET_HDR_LEN, f, len);
    struct virtio_net_stats st;
    uint32_t ip;
    virtio_net_stats(&net, &st, &ip);
    assert_int_equal(st.rx_packets, 2);
    assert_int_equal(st.rx_dropped, 0);
    close(s);
}

/* With room for the largest frame posted, frames go from the tap straight into
 * the guest's buffers, one each; the buffers not used stay posted. */
static void test_receive_direct(void **state)
{
    need_ns();
    driver_init(F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_MRG_RXBUF));
    for (unsigned i = 0; i < 3; i++)
        post_rx(i, 0x10000);
    notify(VIRTIO_NET_RXQ);
    int s = wire(ETH_P_TEST);
    uint8_t f[2][1000];
    for (unsigned k = 0; k < 2; k++) {
        size_t len = test_frame(f[k], MAC, (const uint8_t[6]){ 2, 0, 0, 0, 0, 9 }, 600 + 400 * k, (uint8_t)k);
        assert_int_equal(send(s, f[k], len, 0), (ssize_t)len);
        assert_true(used_reaches(RXQ_DESC, (uint16_t)(k + 1)));
        uint64_t el = used_of(RXQ_DESC) + 4 + 8 * k;
        assert_int_equal(get32(el), k);
        assert_int_equal(get32(el + 4), TAP_VNET_HDR_LEN + len);
        assert_int_equal(get16(RXBUF + 0x10000 * k + 10), 1);        /* num_buffers */
        assert_memory_equal(ram + RXBUF + 0x10000 * k + TAP_VNET_HDR_LEN, f[k], len);
    }
    assert_int_equal(net.vp.vq[VIRTIO_NET_RXQ].last_avail_idx, 2);
    close(s);
}

static void test_learns_ip_from_arp(void **state)
{
    need_ns();
    driver_init(F(VIRTIO_NET_F_MAC));
    uint8_t arp[60] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    memcpy(arp + 6, MAC, 6);
    arp[12] = 0x08, arp[13] = 0x06;
    arp[14] = 0, arp[15] = 1, arp[16] = 8, arp[17] = 0, arp[18] = 6, arp[19] = 4, arp[21] = 1;
    memcpy(arp + 22, MAC, 6);
    memcpy(arp + 28, (const uint8_t[4]){ 10, 88, 0, 5 }, 4);
    memcpy(arp + 38, (const uint8_t[4]){ 10, 88, 0, 1 }, 4);
    send_tx(arp, sizeof(arp));
    assert_true(used_reaches(TXQ_DESC, 1));
    struct virtio_net_stats st;
    uint32_t ip;
    virtio_net_stats(&net, &st, &ip);
    assert_int_equal(ip, htonl(0x0a580005));
}

static void test_migrate_state(void **state)
{
    need_ns();
    driver_init(F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_MRG_RXBUF));
    static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    uint8_t f[100];
    int s = wire(ETH_P_TEST);
    for (int k = 0; k < 2; k++) {
        send_tx(f, test_frame(f, bcast, MAC, sizeof(f), (uint8_t)k));
        assert_true(wire_recv(s, f, sizeof(f)) > 0);
    }
    assert_true(used_reaches(TXQ_DESC, 2));
    close(s);
    static struct virtio_net_state st;
    char err[256];
    assert_int_equal(virtio_net_state_save(&net, &st, err, sizeof(err)), 0);
    assert_int_equal(st.vp.q[VIRTIO_NET_TXQ].last_avail_idx, 2);
    assert_int_equal(st.vp.q[VIRTIO_NET_TXQ].used_idx, 2);
    /* a destination with another MAC is refused, and keeps its state */
    static struct virtio_net other;
    assert_int_equal(make(&other, "fnet1", (const uint8_t[6]){ 0x52, 0x54, 0, 0, 0, 1 }), 0);
    assert_int_equal(virtio_net_state_load(&other, &st, err, sizeof(err)), -1);
    assert_string_equal(err, "virtio-net0: MAC 52:54:00:12:34:56 in the stream, 52:54:00:00:00:01 here");
    assert_int_equal(other.vp.status, 0);
    virtio_net_destroy(&other);
    /* the right one takes it all: the queues carry on where they were */
    assert_int_equal(make(&other, "fnet1", MAC), 0);
    assert_int_equal(virtio_net_state_load(&other, &st, err, sizeof(err)), 0);
    assert_int_equal(other.vp.status, 0x0f);
    assert_int_equal(other.vp.vq[VIRTIO_NET_TXQ].last_avail_idx, 2);
    assert_true(virtq_ready(&other.vp.vq[VIRTIO_NET_RXQ]));
    static struct virtio_net_state again;
    assert_int_equal(virtio_net_state_save(&other, &again, err, sizeof(err)), 0);
    assert_memory_equal(&again, &st, sizeof(st));
    virtio_net_destroy(&other);
}

static void test_announce(void **state)
{
    need_ns();
    int s = wire(ANNOUNCE_ETH_P_RARP);
    virtio_net_announce(&net);
    uint8_t f[128];
    ssize_t n = wire_recv(s, f, sizeof(f));
    assert_int_equal(n, ANNOUNCE_FRAME_LEN);
    assert_memory_equal(f + 6, MAC, 6);      /* source: the VM's MAC */
    assert_int_equal(f[12] << 8 | f[13], ANNOUNCE_ETH_P_RARP);
    announcer_wait(&net.announcer);
    struct announce_stats as;
    announcer_stats(&net.announcer, &as);
    assert_int_equal(as.rounds, 5);
    assert_int_equal(as.errors, 0);
    close(s);
}

/* After an incoming migration the guest is asked to announce itself; its ack
 * clears the request. */
static void test_guest_announce_ack(void **state)
{
    need_ns();
    driver_init(F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_STATUS) | F(VIRTIO_NET_F_CTRL_VQ) |
                F(VIRTIO_NET_F_GUEST_ANNOUNCE));
    uint8_t gen = (uint8_t)br(0x15, 1);
    virtio_net_incoming_started(&net);
    for (int i = 0; i < 2000 && br(VIRTIO_PCI_DEVCFG_OFF + 6, 2) != 3; i++)
        usleep(1000);
    assert_int_equal(br(VIRTIO_PCI_DEVCFG_OFF + 6, 2), VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE);
    assert_int_not_equal(br(0x15, 1), gen);                      /* config generation */
    assert_int_equal(ctrl_cmd(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK), VIRTIO_NET_OK);
    assert_int_equal(br(VIRTIO_PCI_DEVCFG_OFF + 6, 2), VIRTIO_NET_S_LINK_UP);
    assert_int_equal(get32(used_of(CTRLQ_DESC) + 8), 1);         /* one byte written */
    struct virtio_net_stats st;
    uint32_t ip;
    virtio_net_stats(&net, &st, &ip);
    assert_int_equal(st.announce_acks, 1);
    /* the request travels with the state: a migration before the ack asks again */
    static struct virtio_net_state s;
    char err[160];
    assert_int_equal(virtio_net_state_save(&net, &s, err, sizeof(err)), 0);
    assert_int_equal(s.status, VIRTIO_NET_S_LINK_UP);
    announcer_wait(&net.announcer);
}

/* Commands of features not offered (here: rx mode, MAC, an unknown class) are refused. */
static void test_ctrl_unknown_is_error(void **state)
{
    need_ns();
    driver_init(F(VIRTIO_NET_F_MAC) | F(VIRTIO_NET_F_CTRL_VQ));
    assert_int_equal(ctrl_cmd(0, 0), VIRTIO_NET_ERR);                 /* VIRTIO_NET_CTRL_RX_PROMISC */
    assert_int_equal(ctrl_cmd(1, 1), VIRTIO_NET_ERR);                 /* VIRTIO_NET_CTRL_MAC_ADDR_SET */
    assert_int_equal(ctrl_cmd(0x7f, 0), VIRTIO_NET_ERR);
    /* the announce ack without GUEST_ANNOUNCE negotiated */
    assert_int_equal(ctrl_cmd(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK), VIRTIO_NET_ERR);
    assert_int_equal(get16(used_of(CTRLQ_DESC) + 2), 4);
}

int main(void)
{
    if (access(TAP_TUN_PATH, R_OK | W_OK) != 0)
        snprintf(why, sizeof(why), "%s: %s", TAP_TUN_PATH, strerror(errno));
    else if (unshare(CLONE_NEWNET) != 0)
        snprintf(why, sizeof(why), "cannot create a network namespace: %s", strerror(errno));
    else
        have_ns = true;
    /* no IPv6 router/multicast chatter from the kernel into "the guest" */
    FILE *f = have_ns ? fopen("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") : NULL;
    if (f) {
        fputs("1\n", f);
        fclose(f);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_identity_and_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transmit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receive_and_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receive_direct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_learns_ip_from_arp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_announce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guest_announce_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ctrl_unknown_is_error, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
