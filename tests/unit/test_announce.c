/* Self-announcement (devices/announce.c): the RARP and gratuitous ARP frames
 * byte for byte, the back-off schedule, and the announcer thread (rounds,
 * timing, the round callback, send failures, cancellation). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "devices/announce.h"

static const uint8_t MAC[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
static const uint8_t IP[4] = { 10, 88, 0, 5 };

/* QEMU's announce_self_create() for 52:54:00:12:34:56, written out */
static const uint8_t RARP[60] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff,             /* destination: broadcast */
    0x52, 0x54, 0x00, 0x12, 0x34, 0x56,             /* source: the VM */
    0x80, 0x35,                                     /* ethertype RARP */
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04,             /* Ethernet, IPv4, 6, 4 */
    0x00, 0x03,                                     /* reverse request */
    0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0, 0, 0, /* sender MAC, IP 0 */
    0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0, 0, 0, /* target MAC, IP 0 */
    /* 18 bytes of padding */
};

static const uint8_t GARP[60] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
    0x08, 0x06,                                     /* ethertype ARP */
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04,
    0x00, 0x01,                                     /* request */
    0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 10, 88, 0, 5, /* sender: MAC, the IP */
    0, 0, 0, 0, 0, 0, 10, 88, 0, 5,                 /* target: zero MAC, the same IP */
};

static void rarp_bytes(void **state)
{
    uint8_t f[ANNOUNCE_FRAME_LEN];
    memset(f, 0xaa, sizeof(f));                     /* padding must be written */
    assert_int_equal(announce_build_rarp(f, MAC), 60);
    assert_memory_equal(f, RARP, 60);
    /* field by field, as a switch parses it */
    static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    assert_memory_equal(f, bcast, 6);
    assert_memory_equal(f + 6, MAC, 6);
    assert_int_equal(f[12] << 8 | f[13], ANNOUNCE_ETH_P_RARP);
    assert_int_equal(f[20] << 8 | f[21], ANNOUNCE_OP_RARP_REQUEST);
    assert_memory_equal(f + 22, MAC, 6);
    assert_memory_equal(f + 32, MAC, 6);
}

static void garp_bytes(void **state)
{
    uint8_t f[ANNOUNCE_FRAME_LEN];
    memset(f, 0xaa, sizeof(f));
    assert_int_equal(announce_build_garp(f, MAC, IP), 60);
    assert_memory_equal(f, GARP, 60);
    assert_int_equal(f[12] << 8 | f[13], ANNOUNCE_ETH_P_ARP);
    assert_int_equal(f[20] << 8 | f[21], ANNOUNCE_OP_ARP_REQUEST);
    assert_memory_equal(f + 28, IP, 4);             /* sender IP ... */
    assert_memory_equal(f + 38, IP, 4);             /* ... = target IP */
    for (int i = 42; i < 60; i++)
        assert_int_equal(f[i], 0);
}

static void other_mac(void **state)
{
    /* a locally administered MAC with every byte distinct lands where it should */
    const uint8_t m[6] = { 0x02, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5 };
    const uint8_t ip[4] = { 192, 168, 200, 1 };
    uint8_t f[ANNOUNCE_FRAME_LEN];
    announce_build_rarp(f, m);
    assert_memory_equal(f + 6, m, 6);
    assert_memory_equal(f + 22, m, 6);
    assert_memory_equal(f + 32, m, 6);
    announce_build_garp(f, m, ip);
    assert_memory_equal(f + 6, m, 6);
    assert_memory_equal(f + 22, m, 6);
    assert_int_equal(f[28], 192);
    assert_int_equal(f[31], 1);
    assert_int_equal(f[38], 192);
    assert_int_equal(f[41], 1);
}

static void mac_text(void **state)
{
    uint8_t m[6];
    char s[18];
    assert_int_equal(net_mac_parse("52:54:00:12:34:56", m), 0);
    assert_memory_equal(m, MAC, 6);
    assert_int_equal(net_mac_parse("02:A1:b2:C3:d4:E5", m), 0);
    net_mac_format(m, s);
    assert_string_equal(s, "02:a1:b2:c3:d4:e5");
    assert_int_equal(net_mac_parse("52:54:00:12:34", m), -1);
    assert_int_equal(net_mac_parse("52:54:00:12:34:56:", m), -1);
    assert_int_equal(net_mac_parse("52:54:00:12:34:5", m), -1);
    assert_int_equal(net_mac_parse("52-54-00-12-34-56", m), -1);
    assert_int_equal(net_mac_parse("5g:54:00:12:34:56", m), -1);
    assert_int_equal(net_mac_parse("", m), -1);
}

static void schedule_default(void **state)
{
    /* QEMU's defaults: 5 rounds, 50 ms then +100 ms each, at most 550 ms */
    struct announce_params p = ANNOUNCE_PARAMS_DEFAULT;
    assert_int_equal(p.rounds, 5);
    const int want[] = { 50, 150, 250, 350, -1 };
    for (int i = 0; i < 5; i++)
        assert_int_equal(announce_delay_ms(&p, i), want[i]);
    assert_int_equal(announce_delay_ms(&p, 5), -1);
    assert_int_equal(announce_delay_ms(&p, -1), -1);
    /* all zero and NULL mean the defaults */
    struct announce_params z = { 0 };
    for (int i = 0; i < 5; i++) {
        assert_int_equal(announce_delay_ms(&z, i), want[i]);
        assert_int_equal(announce_delay_ms(NULL, i), want[i]);
    }
}

static void schedule_custom(void **state)
{
    struct announce_params p = { .rounds = 8, .initial_ms = 100, .step_ms = 200, .max_ms = 550 };
    const int want[] = { 100, 300, 500, 550, 550, 550, 550, -1 };
    for (int i = 0; i < 8; i++)
        assert_int_equal(announce_delay_ms(&p, i), want[i]);
    struct announce_params one = { .rounds = 1, .initial_ms = 50 };
    assert_int_equal(announce_delay_ms(&one, 0), -1);
    struct announce_params flat = { .rounds = 3, .initial_ms = 20, .step_ms = 0, .max_ms = 1000 };
    assert_int_equal(announce_delay_ms(&flat, 0), 20);
    assert_int_equal(announce_delay_ms(&flat, 1), 20);
    assert_int_equal(announce_delay_ms(&flat, 2), -1);
}

/* ------------------------------------------------------------ the announcer */

#define MAX_EV 64
struct rec {
    pthread_mutex_t lock;
    int n;
    struct { char kind; int round; long long t_us; uint8_t f[ANNOUNCE_FRAME_LEN]; size_t len; } ev[MAX_EV];
    int fail;              /* send returns -EAGAIN while > 0 */
    int cur_round;
};

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static int rec_send(void *opaque, const void *frame, size_t len)
{
    struct rec *r = opaque;
    pthread_mutex_lock(&r->lock);
    int ret = 0;
    if (r->fail > 0) {
        r->fail--;
        ret = -EAGAIN;
    } else if (r->n < MAX_EV) {
        r->ev[r->n].kind = 'f';
        r->ev[r->n].round = r->cur_round;
        r->ev[r->n].t_us = now_us();
        memcpy(r->ev[r->n].f, frame, len < ANNOUNCE_FRAME_LEN ? len : ANNOUNCE_FRAME_LEN);
        r->ev[r->n].len = len;
        r->n++;
    }
    pthread_mutex_unlock(&r->lock);
    return ret;
}

static void rec_round(void *opaque, int round)
{
    struct rec *r = opaque;
    pthread_mutex_lock(&r->lock);
    r->cur_round = round;
    if (r->n < MAX_EV) {
        r->ev[r->n].kind = 'r';
        r->ev[r->n].round = round;
        r->ev[r->n].t_us = now_us();
        r->n++;
    }
    pthread_mutex_unlock(&r->lock);
}

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
}

static struct announce_cfg cfg_for(struct rec *r, bool ip, struct announce_params p)
{
    struct announce_cfg c = { .has_ip = ip, .params = p, .send = rec_send, .round = rec_round, .opaque = r };
    memcpy(c.mac, MAC, 6);
    memcpy(c.ip, IP, 4);
    return c;
}

static void announcer_rounds_and_timing(void **state)
{
    struct rec r;
    rec_init(&r);
    struct announce_params p = { .rounds = 4, .initial_ms = 30, .step_ms = 30, .max_ms = 70 };
    struct announce_cfg c = cfg_for(&r, true, p);
    struct announcer a;
    char err[200];
    long long t0 = now_us();
    assert_int_equal(announcer_start(&a, &c, err, sizeof(err)), 0);
    announcer_wait(&a);
    long long took = now_us() - t0;
    assert_true(announcer_done(&a));
    struct announce_stats s;
    announcer_stats(&a, &s);
    assert_int_equal(s.rounds, 4);
    assert_int_equal(s.frames, 8);
    assert_int_equal(s.errors, 0);
    assert_false(s.cancelled);
    /* each round: the round callback, then RARP, then GARP */
    assert_int_equal(r.n, 12);
    long long start[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r.ev[3 * i].kind, 'r');
        assert_int_equal(r.ev[3 * i].round, i);
        start[i] = r.ev[3 * i].t_us;
        assert_int_equal(r.ev[3 * i + 1].kind, 'f');
        assert_int_equal(r.ev[3 * i + 1].len, 60);
        assert_memory_equal(r.ev[3 * i + 1].f, RARP, 60);
        assert_int_equal(r.ev[3 * i + 2].kind, 'f');
        assert_memory_equal(r.ev[3 * i + 2].f, GARP, 60);
    }
    /* round 0 at once; then 30, 60, 70 (capped) ms apart: never early, and
     * late by less than a generous scheduling slack */
    assert_true(start[0] - t0 < 200000);
    const int gap_ms[] = { 30, 60, 70 };
    for (int i = 1; i < 4; i++) {
        long long gap = start[i] - start[i - 1];
        assert_true(gap >= gap_ms[i - 1] * 1000LL);
        assert_true(gap < gap_ms[i - 1] * 1000LL + 250000);
    }
    assert_true(took >= 160000);
    /* idempotent after the end */
    announcer_cancel(&a);
    announcer_wait(&a);
    assert_true(announcer_done(&a));
}

static void announcer_cancel_early(void **state)
{
    struct rec r;
    rec_init(&r);
    struct announce_params p = { .rounds = 5, .initial_ms = 10000, .step_ms = 0, .max_ms = 10000 };
    struct announce_cfg c = cfg_for(&r, false, p);
    struct announcer a;
    char err[200];
    assert_int_equal(announcer_start(&a, &c, err, sizeof(err)), 0);
    /* wait for round 0 */
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&r.lock);
        int n = r.n;
        pthread_mutex_unlock(&r.lock);
        if (n >= 2)
            break;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    assert_false(announcer_done(&a));
    long long t0 = now_us();
    announcer_cancel(&a);
    assert_true(now_us() - t0 < 1000000);   /* not the 10 s back-off */
    struct announce_stats s;
    announcer_stats(&a, &s);
    assert_int_equal(s.rounds, 1);
    assert_int_equal(s.frames, 1);          /* RARP only: no IP */
    assert_true(s.cancelled);
    assert_int_equal(r.n, 2);
    announcer_cancel(&a);                   /* twice is fine */
}

static void announcer_send_failures(void **state)
{
    struct rec r;
    rec_init(&r);
    r.fail = 3;
    struct announce_params p = { .rounds = 3, .initial_ms = 1, .step_ms = 1, .max_ms = 5 };
    struct announce_cfg c = cfg_for(&r, true, p);
    struct announcer a;
    char err[200];
    assert_int_equal(announcer_start(&a, &c, err, sizeof(err)), 0);
    announcer_wait(&a);
    struct announce_stats s;
    announcer_stats(&a, &s);
    assert_int_equal(s.rounds, 3);          /* failures do not stop it */
    assert_int_equal(s.errors, 3);
    assert_int_equal(s.frames, 3);
    assert_int_equal(s.last_error, -EAGAIN);
}

static void announcer_no_send(void **state)
{
    /* round callback only (the guest announces itself) */
    struct rec r;
    rec_init(&r);
    struct announce_params p = { .rounds = 2, .initial_ms = 1, .step_ms = 0, .max_ms = 1 };
    struct announce_cfg c = cfg_for(&r, true, p);
    c.send = NULL;
    struct announcer a;
    char err[200];
    assert_int_equal(announcer_start(&a, &c, err, sizeof(err)), 0);
    announcer_wait(&a);
    struct announce_stats s;
    announcer_stats(&a, &s);
    assert_int_equal(s.rounds, 2);
    assert_int_equal(s.frames, 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.ev[1].kind, 'r');
    assert_int_equal(r.ev[1].round, 1);
}

static void announcer_bad_params(void **state)
{
    struct rec r;
    rec_init(&r);
    struct announce_params p = { .rounds = 0, .initial_ms = 50 };
    struct announce_cfg c = cfg_for(&r, false, p);
    struct announcer a;
    char err[200] = "";
    assert_int_equal(announcer_start(&a, &c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "bad parameters"));
    assert_null(strchr(err, '\n'));
    announcer_cancel(&a);                   /* never started: harmless */
    struct announce_params neg = { .rounds = 2, .initial_ms = -1 };
    c.params = neg;
    assert_int_equal(announcer_start(&a, &c, err, sizeof(err)), -1);
}

static void once_sync(void **state)
{
    struct rec r;
    rec_init(&r);
    struct announce_cfg c = cfg_for(&r, true, (struct announce_params){ 0 });
    int errors = 0, last = 0;
    assert_int_equal(announce_once(&c, 7, &errors, &last), 2);
    assert_int_equal(errors, 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.ev[0].round, 7);
    assert_memory_equal(r.ev[1].f, RARP, 60);
    assert_memory_equal(r.ev[2].f, GARP, 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rarp_bytes),
        cmocka_unit_test(garp_bytes),
        cmocka_unit_test(other_mac),
        cmocka_unit_test(mac_text),
        cmocka_unit_test(schedule_default),
        cmocka_unit_test(schedule_custom),
        cmocka_unit_test(announcer_rounds_and_timing),
        cmocka_unit_test(announcer_cancel_early),
        cmocka_unit_test(announcer_send_failures),
        cmocka_unit_test(announcer_no_send),
        cmocka_unit_test(announcer_bad_params),
        cmocka_unit_test(once_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
