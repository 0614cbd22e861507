#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "devices/announce.h"

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Ethernet header to broadcast + an ARP-format body for Ethernet/IPv4 */
static void arp_frame(uint8_t *f, const uint8_t mac[6], uint16_t ethertype, uint16_t op,
                      const uint8_t spa[4], const uint8_t tha[6], const uint8_t tpa[4])
{
    memset(f, 0, ANNOUNCE_FRAME_LEN);            /* includes the padding to 60 bytes */
    memset(f, 0xff, 6);                          /* destination: broadcast */
    memcpy(f + 6, mac, 6);                       /* source */
    put16(f + 12, ethertype);
    put16(f + 14, 1);                            /* hardware type: Ethernet */
    put16(f + 16, 0x0800);                       /* protocol type: IPv4 */
    f[18] = 6;                                   /* hardware address length */
    f[19] = 4;                                   /* protocol address length */
    put16(f + 20, op);
    memcpy(f + 22, mac, 6);                      /* sender hardware address */
    memcpy(f + 28, spa, 4);                      /* sender protocol address */
    memcpy(f + 32, tha, 6);                      /* target hardware address */
    memcpy(f + 38, tpa, 4);                      /* target protocol address */
}

size_t announce_build_rarp(uint8_t frame[ANNOUNCE_FRAME_LEN], const uint8_t mac[6])
{
    static const uint8_t zero_ip[4];
    arp_frame(frame, mac, ANNOUNCE_ETH_P_RARP, ANNOUNCE_OP_RARP_REQUEST, zero_ip, mac, zero_ip);
    return ANNOUNCE_FRAME_LEN;
}

size_t announce_build_garp(uint8_t frame[ANNOUNCE_FRAME_LEN], const uint8_t mac[6],
                           const uint8_t ip[4])
{
    static const uint8_t zero_mac[6];
    arp_frame(frame, mac, ANNOUNCE_ETH_P_ARP, ANNOUNCE_OP_ARP_REQUEST, ip, zero_mac, ip);
    return ANNOUNCE_FRAME_LEN;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int net_mac_parse(const char *s, uint8_t mac[6])
{
    uint8_t m[6];
    if (strlen(s) != 17)
        return -1;
    for (int i = 0; i < 6; i++) {
        int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
            return -1;
        m[i] = (uint8_t)(hi << 4 | lo);
    }
    memcpy(mac, m, 6);
    return 0;
}

void net_mac_format(const uint8_t mac[6], char out[18])
{
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
             mac[5]);
}

static struct announce_params effective(const struct announce_params *p)
{
    struct announce_params d = ANNOUNCE_PARAMS_DEFAULT;
    if (!p || (!p->rounds && !p->initial_ms && !p->step_ms && !p->max_ms))
        return d;
    return *p;
}

int announce_delay_ms(const struct announce_params *params, int round)
{
    struct announce_params p = effective(params);
    if (round < 0 || round >= p.rounds - 1)
        return -1;
    long long d = (long long)p.initial_ms + (long long)round * p.step_ms;
    if (d > p.max_ms)
        d = p.max_ms;
    return d < 0 ? 0 : (int)d;
}

int announce_once(const struct announce_cfg *cfg, int round, int *errors, int *last_error)
{
    uint8_t f[ANNOUNCE_FRAME_LEN];
    int sent = 0;
    if (cfg->round)
        cfg->round(cfg->opaque, round);
    if (!cfg->send)
        return 0;
    for (int k = 0; k < (cfg->has_ip ? 2 : 1); k++) {
        size_t n = k == 0 ? announce_build_rarp(f, cfg->mac) : announce_build_garp(f, cfg->mac, cfg->ip);
        int r = cfg->send(cfg->opaque, f, n);
        if (r < 0) {
            if (errors)
                (*errors)++;
            if (last_error)
                *last_error = r;
        } else {
            sent++;
        }
    }
    return sent;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *announce_thread(void *arg)
{
    struct announcer *a = arg;
    for (int round = 0;; round++) {
        int errors = 0, last = 0;
        int sent = announce_once(&a->cfg, round, &errors, &last);
        pthread_mutex_lock(&a->lock);
        a->st.rounds++;
        a->st.frames += sent;
        a->st.errors += errors;
        if (errors)
            a->st.last_error = last;
        int delay = announce_delay_ms(&a->cfg.params, round);
        if (delay >= 0) {
            struct timespec ts;
            deadline_after(&ts, delay);
            while (!a->cancel && pthread_cond_timedwait(&a->cond, &a->lock, &ts) != ETIMEDOUT)
                ;
        }
        bool stop = delay < 0 || a->cancel;
        if (stop) {
            a->st.cancelled = a->cancel && delay >= 0;
            a->done = true;
            pthread_cond_broadcast(&a->cond);
        }
        pthread_mutex_unlock(&a->lock);
        if (stop)
            return NULL;
    }
}

int announcer_start(struct announcer *a, const struct announce_cfg *cfg, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    a->cfg = *cfg;
    a->cfg.params = effective(&cfg->params);
    if (a->cfg.params.rounds < 1 || a->cfg.params.initial_ms < 0 || a->cfg.params.step_ms < 0 ||
        a->cfg.params.max_ms < 0) {
        snprintf(err, errlen, "announce: bad parameters (rounds %d, initial %d ms, step %d ms, max %d ms)",
                 a->cfg.params.rounds, a->cfg.params.initial_ms, a->cfg.params.step_ms,
                 a->cfg.params.max_ms);
        return -1;
    }
    pthread_mutex_init(&a->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cond, &ca);
    pthread_condattr_destroy(&ca);
    /* the thread takes no signals: they belong to the vCPU and main threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&a->thread, NULL, announce_thread, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        snprintf(err, errlen, "announce: cannot start a thread: %s", strerror(r));
        pthread_cond_destroy(&a->cond);
        pthread_mutex_destroy(&a->lock);
        return -1;
    }
    a->started = true;
    return 0;
}

static void finish(struct announcer *a)
{
    if (!a->started)
        return;
    pthread_join(a->thread, NULL);
    a->started = false;
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
    a->joined = true;
}

void announcer_cancel(struct announcer *a)
{
    if (!a->started)
        return;
    pthread_mutex_lock(&a->lock);
    a->cancel = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    finish(a);
}

void announcer_wait(struct announcer *a)
{
    finish(a);
}

bool announcer_done(struct announcer *a)
{
    if (!a->started)
        return a->joined;
    pthread_mutex_lock(&a->lock);
    bool d = a->done;
    pthread_mutex_unlock(&a->lock);
    return d;
}

void announcer_stats(struct announcer *a, struct announce_stats *s)
{
    if (!a->started) {
        *s = a->st;
        return;
    }
    pthread_mutex_lock(&a->lock);
    *s = a->st;
    pthread_mutex_unlock(&a->lock);
}
