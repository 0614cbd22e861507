/* nettool: drives the NIC backend pieces (devices/tap.h, devices/announce.h)
 * from the network tests (tests/func/tap.sh, tests/func/net-topology.sh) and
 * the lab, in whatever network namespace it is started in.
 *
 *   nettool announce [OPTIONS] TAP MAC [IPV4]
 *       Open TAP (creating it when missing), wait until its bridge port (if it
 *       is one) forwards, run the announcer (RARP, plus a gratuitous ARP for
 *       IPV4) with the given schedule, wait for its end.
 *       Prints "announce TAP: R rounds, F frames, E errors". Exit 0 when every
 *       frame went out.
 *         --rounds N --initial MS --step MS --max MS   (defaults 5, 50, 100, 550)
 *         --up       bring TAP up first (a tap nettool created)
 *         --mq       open with IFF_MULTI_QUEUE
 *         --hold MS  keep TAP open MS after the summary: a bridge forgets the
 *                    MACs it learned on a tap's port when the tap is closed
 *   nettool recv [--mq] TAP COUNT TIMEOUT_MS
 *       Read COUNT frames (vnet header + frame) within TIMEOUT_MS; print each
 *       as "frame LEN HDR-HEX FRAME-HEX". Exit 0 when COUNT arrived, 3 on time-out.
 *   nettool open [--mq] [--hold MS] TAP
 *       Open TAP, print "open NAME", keep it open MS (default 0), close.
 *   Errors: one line on stderr, exit 1 (usage: 2). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "devices/announce.h"
#include "devices/tap.h"

__attribute__((noreturn)) static void usage(void)
{
    fprintf(stderr, "usage: nettool announce [--rounds N] [--initial MS] [--step MS] [--max MS] "
                    "[--up] [--mq] [--hold MS] TAP MAC [IPV4]\n"
                    "       nettool recv [--mq] TAP COUNT TIMEOUT_MS\n"
                    "       nettool open [--mq] [--hold MS] TAP\n");
    exit(2);
}

static int num(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 1000000) {
        fprintf(stderr, "nettool: bad number '%s'\n", s);
        exit(2);
    }
    return (int)v;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* A tap that just got its first reader has carrier from then on, but a bridge
 * enables its port a moment later (and drops what arrives before): when NAME is
 * a bridge port, wait up to 5 s for it to forward. A VMM's tap has long been
 * attached when the VM is announced after a migration. */
static void wait_port_forwarding(const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "/sys/class/net/%s/brport/state", name);
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(path, "r");
        if (!f)
            return;                 /* not a bridge port */
        int state = -1;
        int n = fscanf(f, "%d", &state);
        fclose(f);
        if (n == 1 && state == 3)   /* BR_STATE_FORWARDING */
            return;
        usleep(10000);
    }
}

static void hex(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    const char *cmd = argv[1];
    struct announce_params p = ANNOUNCE_PARAMS_DEFAULT;
    unsigned flags = 0;
    bool up = false;
    int hold = 0, i = 2;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        const char *o = argv[i];
        bool has_arg = i + 1 < argc;
        if (!strcmp(o, "--mq"))
            flags |= TAP_MULTI_QUEUE;
        else if (!strcmp(o, "--up"))
            up = true;
        else if (!strcmp(o, "--rounds") && has_arg)
            p.rounds = num(argv[++i]);
        else if (!strcmp(o, "--initial") && has_arg)
            p.initial_ms = num(argv[++i]);
        else if (!strcmp(o, "--step") && has_arg)
            p.step_ms = num(argv[++i]);
        else if (!strcmp(o, "--max") && has_arg)
            p.max_ms = num(argv[++i]);
        else if (!strcmp(o, "--hold") && has_arg)
            hold = num(argv[++i]);
        else
            usage();
    }
    argc -= i;
    argv += i;
    if (argc < 1)
        usage();
    char err[256];
    struct tap t;
    if (tap_open(&t, argv[0], flags, err, sizeof(err)) < 0) {
        fprintf(stderr, "nettool: %s\n", err);
        return 1;
    }
    if (up && tap_set_up(&t, true, err, sizeof(err)) < 0) {
        fprintf(stderr, "nettool: %s\n", err);
        return 1;
    }

    if (!strcmp(cmd, "open")) {
        if (argc != 1)
            usage();
        printf("open %s\n", t.name);
        fflush(stdout);
        if (hold)
            usleep((useconds_t)hold * 1000);
        tap_close(&t);
        return 0;
    }

    if (!strcmp(cmd, "announce")) {
        if (argc < 2 || argc > 3)
            usage();
        struct announce_cfg c = { .params = p, .send = tap_send_cb, .opaque = &t };
        if (net_mac_parse(argv[1], c.mac) < 0) {
            fprintf(stderr, "nettool: bad MAC address '%s'\n", argv[1]);
            return 2;
        }
        if (argc == 3) {
            if (inet_pton(AF_INET, argv[2], c.ip) != 1) {
                fprintf(stderr, "nettool: bad IPv4 address '%s'\n", argv[2]);
                return 2;
            }
            c.has_ip = true;
        }
        wait_port_forwarding(t.name);
        struct announcer a;
        if (announcer_start(&a, &c, err, sizeof(err)) < 0) {
            fprintf(stderr, "nettool: %s\n", err);
            return 1;
        }
        announcer_wait(&a);
        struct announce_stats s;
        announcer_stats(&a, &s);
        printf("announce %s: %d rounds, %d frames, %d errors\n", t.name, s.rounds, s.frames, s.errors);
        fflush(stdout);
        if (s.errors)
            fprintf(stderr, "nettool: announce %s: last error: %s\n", t.name, strerror(-s.last_error));
        if (hold)      /* the bridge forgets what it learned on a port when the tap closes */
            usleep((useconds_t)hold * 1000);
        tap_close(&t);
        return s.errors ? 1 : 0;
    }

    if (!strcmp(cmd, "recv")) {
        if (argc != 3)
            usage();
        int want = num(argv[1]), got = 0;
        long long end = now_ms() + num(argv[2]);
        printf("ready %s\n", t.name);
        fflush(stdout);
        uint8_t buf[65536 + TAP_VNET_HDR_LEN];
        while (got < want) {
            long long left = end - now_ms();
            struct pollfd pfd = { .fd = t.fd, .events = POLLIN };
            if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
                fprintf(stderr, "nettool: recv %s: %d of %d frames before the time-out\n", t.name, got, want);
                return 3;
            }
            ssize_t r = tap_read(&t, buf, sizeof(buf));
            if (r == -EAGAIN || r == -EINTR)
                continue;
            if (r < t.vnet_hdr_len) {
                fprintf(stderr, "nettool: recv %s: %s\n", t.name, r < 0 ? strerror((int)-r) : "short frame");
                return 1;
            }
            printf("frame %zd ", r - t.vnet_hdr_len);
            hex(buf, (size_t)t.vnet_hdr_len);
            printf(" ");
            hex(buf + t.vnet_hdr_len, (size_t)r - (size_t)t.vnet_hdr_len);
            printf("\n");
            fflush(stdout);
            got++;
        }
        tap_close(&t);
        return 0;
    }
    usage();
}
