#include <math.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/progress.h"

#define MIB (1024.0 * 1024.0)

static json_object *get(json_object *o, const char *key)
{
    json_object *v;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static int64_t get_i64(json_object *o, const char *key, int64_t dflt)
{
    json_object *v = get(o, key);
    return v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))
        ? json_object_get_int64(v) : dflt;
}

static double get_dbl(json_object *o, const char *key)
{
    json_object *v = get(o, key);
    return v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))
        ? json_object_get_double(v) : 0;
}

static void get_str(json_object *o, const char *key, char *out, size_t len)
{
    json_object *v = get(o, key);
    snprintf(out, len, "%s", v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "");
}

static uint64_t get_u64(json_object *o, const char *key)
{
    int64_t v = get_i64(o, key, 0);
    return v > 0 ? (uint64_t)v : 0;
}

void mig_view_parse(json_object *o, struct mig_view *v)
{
    memset(v, 0, sizeof(*v));
    get_str(o, "phase", v->phase, sizeof(v->phase));
    if (!v->phase[0])
        snprintf(v->phase, sizeof(v->phase), "none");
    get_str(o, "destination", v->destination, sizeof(v->destination));
    get_str(o, "error", v->error, sizeof(v->error));
    v->round = get_i64(o, "round", 0);
    v->elapsed_ms = get_i64(o, "elapsed_ms", 0);
    v->downtime_target_ms = get_i64(o, "downtime_target_ms", 0);
    v->bytes_sent = get_u64(o, "bytes_sent");
    v->pages_sent = get_u64(o, "pages_sent");
    v->zero_pages = get_u64(o, "zero_pages");
    v->ram_bytes = get_u64(o, "ram_bytes");
    v->scanned_bytes = get_u64(o, "scanned_bytes");
    v->remaining_bytes = get_u64(o, "remaining_bytes");
    v->throughput_mbps = get_dbl(o, "throughput_mbps");
    v->dirty_rate_mbps = get_dbl(o, "dirty_rate_mbps");
    v->predicted_downtime_ms = get_dbl(o, "predicted_downtime_ms");
    v->throttle_pct = get_i64(o, "throttle_pct", 0);
    v->downtime_ms = get_i64(o, "downtime_ms", -1);
    v->verify_ms = get_i64(o, "verify_ms", -1);
    v->total_ms = get_i64(o, "total_ms", -1);
    v->final_pages = get_i64(o, "final_pages", -1);
    v->streams = get_i64(o, "streams", 0);
    get_str(o, "cipher", v->cipher, sizeof(v->cipher));
    get_str(o, "compression", v->compression, sizeof(v->compression));
    get_str(o, "verify", v->verify, sizeof(v->verify));
    get_str(o, "verify_result", v->verify_result, sizeof(v->verify_result));
}

bool mig_phase_final(const char *ph)
{
    return !strcmp(ph, "completed") || !strcmp(ph, "failed") || !strcmp(ph, "cancelled") ||
           !strcmp(ph, "in-doubt") || !strcmp(ph, "none");
}

/* snprintf that appends at *pos and never runs past len. */
static void add(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    if (*pos >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos = *pos + (size_t)n < len ? *pos + (size_t)n : len - 1;
}

/* "  [#####.....]": frac of bar columns filled */
static void add_bar(char *buf, size_t len, size_t *pos, double frac, int bar)
{
    int fill = (int)(frac * bar + 0.5);
    add(buf, len, pos, "  [");
    for (int k = 0; k < bar; k++)
        add(buf, len, pos, "%c", k < fill ? '#' : '.');
    add(buf, len, pos, "]");
}

/* "13 ms", "1.2 s", "?" for the engine's "no estimate yet" (1e9). */
static void fmt_pause(char *out, size_t len, double ms)
{
    if (!(ms >= 0) || ms >= 1e8)
        snprintf(out, len, "?");
    else if (ms < 10000)
        snprintf(out, len, "%.0f ms", ms);
    else
        snprintf(out, len, "%.1f s", ms / 1000);
}

/* Line segments: shown in order; on a narrow terminal the ones with the
 * lowest priority (> 0) go first. */
#define MAX_SEGS 8
struct segs {
    int n;
    char text[MAX_SEGS][128];
    int prio[MAX_SEGS];   /* 0: always shown */
};

static void seg(struct segs *g, int prio, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seg(struct segs *g, int prio, const char *fmt, ...)
{
    if (g->n == MAX_SEGS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->text[g->n], sizeof(g->text[0]), fmt, ap);
    va_end(ap);
    g->prio[g->n++] = prio;
}

static size_t segs_len(const struct segs *g, size_t sep)
{
    size_t n = 0;
    for (int i = 0; i < g->n; i++)
        n += strlen(g->text[i]) + (i ? sep : 0);
    return n;
}

static void seg_drop(struct segs *g, int i)
{
    memmove(g->text[i], g->text[i + 1], sizeof(g->text[0]) * (size_t)(g->n - i - 1));
    memmove(&g->prio[i], &g->prio[i + 1], sizeof(g->prio[0]) * (size_t)(g->n - i - 1));
    g->n--;
}

size_t progress_line(const struct mig_view *v, double rate_mbps, int width, char *buf, size_t len)
{
    bool tty = width > 0;
    double rate = rate_mbps >= 0 ? rate_mbps : v->throughput_mbps;
    if (rate_mbps < 0 && v->round == 0 && v->elapsed_ms > 0)  /* no round measured yet: the average */
        rate = (double)v->bytes_sent * 8 / 1e3 / (double)v->elapsed_ms;
    struct segs g = { 0 };
    int bar_at = -1;
    char pause[32];

    if (!len)
        return 0;
    seg(&g, 0, "%s", v->phase);
    if (!strcmp(v->phase, "setup")) {
        seg(&g, 0, "connecting to %s", v->destination);
    } else if (!strcmp(v->phase, "precopy") && v->round == 0) {
        double sent = (double)v->pages_sent * 4096;
        double done = v->scanned_bytes > sent ? (double)v->scanned_bytes : sent;
        double pct = v->ram_bytes ? 100.0 * done / (double)v->ram_bytes : 0;
        pct = pct > 100 ? 100 : pct;
        /* fixed-width numbers on a terminal: the bar must not jitter */
        int digits = snprintf(NULL, 0, "%.0f", (double)v->ram_bytes / MIB);
        seg(&g, 0, "round 0");
        if (tty)
            bar_at = g.n;
        seg(&g, 0, tty ? "%3.0f%%" : "%.0f%% of RAM copied", pct);
        seg(&g, 0, "%*.0f/%.0f MiB", tty ? digits : 0, done / MIB, (double)v->ram_bytes / MIB);
        seg(&g, 0, tty ? "%5.0f Mbit/s" : "%.0f Mbit/s", rate);
    } else if (!strcmp(v->phase, "precopy")) {
        fmt_pause(pause, sizeof(pause), v->predicted_downtime_ms);
        seg(&g, 0, "round %lld", (long long)v->round);
        seg(&g, 0, "%.1f MiB left", (double)v->remaining_bytes / MIB);
        seg(&g, 0, "%.0f Mbit/s", rate);
        seg(&g, 3, "dirty %.0f Mbit/s", v->dirty_rate_mbps);
        if (v->throttle_pct)
            seg(&g, 2, "vCPUs slowed %lld%%", (long long)v->throttle_pct);
        seg(&g, 0, "downtime ~%s", pause);
        seg(&g, 1, "target %lld ms", (long long)v->downtime_target_ms);
    } else if (!strcmp(v->phase, "switchover")) {
        seg(&g, 0, "after round %lld", (long long)v->round);
        seg(&g, 0, "VM paused: sending the last pages and the state");
    } else if (strcmp(v->phase, "none")) {
        seg(&g, 0, "%s", v->destination);
    }
    if (strcmp(v->phase, "none"))
        seg(&g, 2, tty ? "%5.1f s" : "%.1f s", (double)v->elapsed_ms / 1000);

    const char *sep = tty ? "  " : ", ";
    if (tty) {
        /* drop optional segments, lowest priority first, until the line fits */
        for (int p = 1; p <= 3; p++)
            for (int i = g.n - 1; i >= 0 && segs_len(&g, 2) - 1 > (size_t)width - 1; i--)
                if (g.prio[i] == p) {
                    if (bar_at > i)
                        bar_at--;
                    seg_drop(&g, i);
                }
    }
    size_t used = segs_len(&g, 2) - (g.n > 1 ? 1 : 0) + (bar_at >= 0 ? 2 : 0), pos = 0;
    int bar = bar_at < 0 || used + 2 + 8 > (size_t)width - 1 ? 0 : (int)((size_t)width - 1 - used - 2);
    bar = bar > 30 ? 30 : bar;
    buf[0] = '\0';
    for (int i = 0; i < g.n; i++) {
        if (i == bar_at && bar) {
            double done = (double)v->pages_sent * 4096;
            if ((double)v->scanned_bytes > done)
                done = (double)v->scanned_bytes;
            add_bar(buf, len, &pos, v->ram_bytes ? done / (double)v->ram_bytes : 0, bar);
        }
        /* the phase and what follows it read as one: "precopy round 3" */
        add(buf, len, &pos, "%s%s", i == 0 ? "" : i == 1 ? " " : sep, g.text[i]);
    }
    if (tty && pos > (size_t)width - 1) {
        pos = (size_t)width - 1;
        buf[pos] = '\0';
    }
    return pos;
}

int progress_outcome(const struct mig_view *v, bool verified, char *buf, size_t len)
{
    const char *dst = v->destination[0] ? v->destination : "?";
    if (!strcmp(v->phase, "completed")) {
        char verify[32] = "not verified";
        if (!strcmp(v->verify, "after"))
            snprintf(verify, sizeof(verify), "verified after the hand-over");
        else if (verified)
            snprintf(verify, sizeof(verify), "verify %lld ms", (long long)(v->verify_ms < 0 ? 0 : v->verify_ms));
        double s = v->total_ms > 0 ? (double)v->total_ms / 1000 : 0;
        int n = snprintf(buf, len, "migrated to %s: downtime %lld ms (%s), total %lld ms, %.0f MiB sent at "
                         "%.0f Mbit/s, %lld rounds", dst, (long long)v->downtime_ms, verify,
                         (long long)v->total_ms, (double)v->bytes_sent / MIB,
                         s > 0 ? (double)v->bytes_sent * 8 / 1e6 / s : 0, (long long)v->round);
        if (v->cipher[0] && n >= 0 && (size_t)n < len)
            n += snprintf(buf + n, len - (size_t)n, ", %lld stream(s), %s%s%s", (long long)v->streams,
                          v->cipher, strcmp(v->compression, "off") ? ", " : "",
                          strcmp(v->compression, "off") ? v->compression : "");
        if (v->verify_result[0] && n >= 0 && (size_t)n < len)
            snprintf(buf + n, len - (size_t)n, "; memory digest: %s", v->verify_result);
        /* a mismatch after the hand-over: the VM runs there, but the operator must know */
        return strncmp(v->verify_result, "MISMATCH", 8) ? 0 : 1;
    }
    if (!strcmp(v->phase, "in-doubt")) {
        snprintf(buf, len, "migration to %s is IN DOUBT: %s. Do not resume or quit the source "
                 "until you know whether the destination runs the VM",
                 dst, v->error[0] ? v->error : "no answer from the destination");
        return 3;
    }
    if (!strcmp(v->phase, "failed") || !strcmp(v->phase, "cancelled")) {
        snprintf(buf, len, "migration to %s %s: %s; the VM keeps running here", dst, v->phase,
                 v->error[0] ? v->error : "no reason given");
        return 1;
    }
    snprintf(buf, len, "no migration (phase %s)", v->phase);
    return 1;
}

size_t status_summary(json_object *st, char *buf, size_t len)
{
    size_t pos = 0;
    char state[32], kernel[256], boot[32];
    if (!len)
        return 0;
    buf[0] = '\0';
    get_str(st, "state", state, sizeof(state));
    get_str(st, "kernel", kernel, sizeof(kernel));
    get_str(st, "boot", boot, sizeof(boot));
    add(buf, len, &pos, "state:     %s\n", state[0] ? state : "?");
    add(buf, len, &pos, "vcpus:     %lld\n", (long long)get_i64(st, "vcpus", 0));
    add(buf, len, &pos, "memory:    %lld MiB\n", (long long)get_i64(st, "memory_mib", 0));
    add(buf, len, &pos, "boot:      %s%s%s%s\n", boot[0] ? boot : "?", kernel[0] ? " (" : "", kernel,
        kernel[0] ? ")" : "");
    struct mig_view v;
    mig_view_parse(get(st, "migration"), &v);
    char line[512];
    if (!strcmp(v.phase, "none"))
        snprintf(line, sizeof(line), "none");
    else if (mig_phase_final(v.phase))
        progress_outcome(&v, v.verify_ms > 0, line, sizeof(line));
    else
        progress_line(&v, -1, 0, line, sizeof(line));
    add(buf, len, &pos, "migration: %s\n", line);
    json_object *arr = get(st, "disks");
    for (size_t i = 0; arr && json_object_is_type(arr, json_type_array) && i < json_object_array_length(arr); i++) {
        json_object *d = json_object_array_get_idx(arr, i);
        char name[32], path[256];
        get_str(d, "name", name, sizeof(name));
        get_str(d, "path", path, sizeof(path));
        json_object *ro = get(d, "readonly");
        char move[24] = "", mv[32];
        get_str(d, "move", move, sizeof(move));
        snprintf(mv, sizeof(mv), move[0] && strcmp(move, "switched") ? " (move: %s)" : "", move);
        add(buf, len, &pos, "disk:      %s %s%s%s\n", name, path, ro && json_object_get_boolean(ro) ? " (read-only)" : "",
            mv);
    }
    arr = get(st, "nics");
    for (size_t i = 0; arr && json_object_is_type(arr, json_type_array) && i < json_object_array_length(arr); i++) {
        json_object *n = json_object_array_get_idx(arr, i);
        char name[32], tap[32], mac[32], ip[32];
        get_str(n, "name", name, sizeof(name));
        get_str(n, "tap", tap, sizeof(tap));
        get_str(n, "mac", mac, sizeof(mac));
        get_str(n, "ipv4", ip, sizeof(ip));
        add(buf, len, &pos, "nic:       %s %s on tap %s%s%s, rx %lld tx %lld packets, %lld dropped\n", name, mac,
            tap, ip[0] ? ", guest " : "", ip, (long long)get_i64(n, "rx_packets", 0),
            (long long)get_i64(n, "tx_packets", 0),
            (long long)(get_i64(n, "rx_dropped", 0) + get_i64(n, "tx_dropped", 0)));
    }
    return pos;
}

size_t task_line(json_object *task, int width, char *buf, size_t len)
{
    char kind[32], target[64], phase[256];
    size_t pos = 0;
    int pct = (int)get_i64(task, "percent", 0);
    if (!len)
        return 0;
    buf[0] = '\0';
    get_str(task, "kind", kind, sizeof(kind));
    get_str(task, "target", target, sizeof(target));
    get_str(task, "phase", phase, sizeof(phase));
    add(buf, len, &pos, "task %lld %s %s", (long long)get_i64(task, "id", 0), kind, target);
    if (width > 0) {
        /* the bar takes what the phase leaves, up to 30 columns: "  [" "]"
         * and "  100%  " are 13 more */
        int bar = width - 1 - (int)pos - 13 - (int)strlen(phase);
        bar = bar > 30 ? 30 : bar;
        if (bar >= 8)
            add_bar(buf, len, &pos, pct / 100.0, bar);
        add(buf, len, &pos, "  %3d%%  %s", pct, phase);
        if (pos > (size_t)width - 1) {
            pos = (size_t)width - 1;
            buf[pos] = '\0';
        }
    } else {
        add(buf, len, &pos, ": %d%%, %s", pct, phase);
    }
    return pos;
}

size_t report_text(json_object *report, const char *prefix, char *buf, size_t len)
{
    size_t pos = 0;
    char check[64], level[16], reason[512];
    if (!len)
        return 0;
    buf[0] = '\0';
    for (size_t i = 0; report && json_object_is_type(report, json_type_array) &&
                       i < json_object_array_length(report); i++) {
        json_object *c = json_object_array_get_idx(report, i);
        get_str(c, "check", check, sizeof(check));
        get_str(c, "level", level, sizeof(level));
        get_str(c, "reason", reason, sizeof(reason));
        if (strcmp(level, "ok") && strcmp(level, "pass") && strcmp(level, "info"))
            add(buf, len, &pos, "%s%s (%s): %s\n", prefix, check[0] ? check : "?", level[0] ? level : "?",
                reason[0] ? reason : "no reason given");
    }
    return pos;
}

int progress_term_width(void)
{
    struct winsize ws;
    return ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20 ? ws.ws_col : 80;
}

void live_init(struct live *l, bool quiet)
{
    memset(l, 0, sizeof(*l));
    l->quiet = quiet;
    l->tty = !quiet && isatty(STDOUT_FILENO);
}

void live_show(struct live *l, const char *key, uint64_t now_ms,
               size_t (*draw)(void *arg, int width, char *buf, size_t len), void *arg)
{
    char line[1024];
    if (l->tty) {
        draw(arg, progress_term_width(), line, sizeof(line));
        printf("\r%s\033[K", line);
        l->drawn = true;
    } else if (!l->quiet && (strcmp(key, l->key) || now_ms - l->last_ms >= 1000)) {
        draw(arg, 0, line, sizeof(line));
        printf("%s\n", line);
        l->last_ms = now_ms;
    }
    snprintf(l->key, sizeof(l->key), "%s", key);
    fflush(stdout);
}

void live_end(struct live *l)
{
    if (l->drawn)
        fputs("\n", stdout);
    l->drawn = false;
    fflush(stdout);
}
