/* ferry vm migrate / migrate-cancel: start, watch, cancel, conclude. */
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"

#define POLL_MS 100
#define RATE_SAMPLES 11   /* 1 s of 100 ms samples for the live rate */

static volatile sig_atomic_t interrupts;

static void on_sigint(int sig)
{
    interrupts++;
}

static int term_width(void)
{
    struct winsize ws;
    return ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20 ? ws.ws_col : 80;
}

/* A shared-nothing migration's disks in the bar: round 0 covers RAM and
 * the disks' data (disk bytes sent count as done); later rounds' remaining
 * bytes already include the dirty disk blocks (the server's). */
static void count_disks(json_object *status, struct mig_view *v)
{
    json_object *t, *s;
    if (!json_object_object_get_ex(status, "disk_total_bytes", &t) ||
        !json_object_object_get_ex(status, "disk_bytes_sent", &s))
        return;
    uint64_t total = (uint64_t)json_object_get_int64(t), sent = (uint64_t)json_object_get_int64(s);
    uint64_t pages = v->pages_sent * 4096;
    v->scanned_bytes = (v->scanned_bytes > pages ? v->scanned_bytes : pages) + (sent < total ? sent : total);
    v->ram_bytes += total;
}

/* migrate-status into v (and *raw, the result object, when asked). */
static int poll_status(struct cli_conn *c, struct mig_view *v, json_object **raw)
{
    json_object *reply;
    char err[512];
    if (cli_call(c, "migrate-status", NULL, &reply, err, sizeof(err)) != CLI_OK) {
        cli_err("%s", err);
        return -1;
    }
    mig_view_parse(cli_result(reply), v);
    count_disks(cli_result(reply), v);
    if (raw)
        *raw = json_object_get(cli_result(reply));
    json_object_put(reply);
    return 0;
}

/* Bytes/s over the last second, from the samples the loop records. */
struct rate { uint64_t t[RATE_SAMPLES], b[RATE_SAMPLES]; unsigned n; };

static double rate_add(struct rate *r, uint64_t t, uint64_t bytes)
{
    if (r->n && bytes < r->b[(r->n - 1) % RATE_SAMPLES])
        r->n = 0;  /* a new migration */
    r->t[r->n % RATE_SAMPLES] = t;
    r->b[r->n % RATE_SAMPLES] = bytes;
    r->n++;
    unsigned old = r->n > RATE_SAMPLES ? r->n % RATE_SAMPLES : 0;
    uint64_t dt = t - r->t[old];
    return dt ? (double)(bytes - r->b[old]) * 8 / 1e3 / (double)dt : -1;
}

static void send_cancel(struct cli_conn *c, bool *bar_drawn)
{
    json_object *reply;
    char err[512];
    if (*bar_drawn)
        fputs("\n", stdout);
    *bar_drawn = false;
    int rc = cli_call(c, "migrate-cancel", NULL, &reply, err, sizeof(err));
    if (rc == CLI_OK)
        fprintf(stderr, "ferry: cancelling the migration (Ctrl-C again to stop waiting)\n");
    else
        cli_err("%s; waiting for the outcome (Ctrl-C again to stop waiting)", err);
    json_object_put(reply);
}

/* Watch until the migration ends; returns the exit code. */
static int watch(struct cli_conn *c, const struct migrate_opts *o)
{
    bool tty = !o->json && isatty(STDOUT_FILENO), bar_drawn = false;
    struct rate rate = { 0 };
    struct mig_view v;
    char line[1024], last_phase[16] = "";
    int64_t last_round = -1;
    uint64_t last_print = 0;
    json_object *raw = NULL;
    int cancels_seen = 0;

    for (;;) {
        json_object_put(raw);
        raw = NULL;
        if (poll_status(c, &v, &raw) < 0) {
            if (bar_drawn)
                fputs("\n", stdout);
            return EXIT_FAILED;
        }
        uint64_t t = cli_now_ms();
        double mbps = rate_add(&rate, t, v.bytes_sent);
        bool final = mig_phase_final(v.phase);
        if (tty && !final) {
            progress_line(&v, mbps, term_width(), line, sizeof(line));
            printf("\r%s\033[K", line);
            fflush(stdout);
            bar_drawn = true;
        } else if (!o->json && !final && (strcmp(v.phase, last_phase) || v.round != last_round ||
                                           t - last_print >= 1000)) {
            progress_line(&v, mbps, 0, line, sizeof(line));
            printf("%s\n", line);
            fflush(stdout);
            last_print = t;
        }
        snprintf(last_phase, sizeof(last_phase), "%s", v.phase);
        last_round = v.round;
        if (final)
            break;
        if (interrupts > cancels_seen) {
            if (cancels_seen++ == 0) {
                send_cancel(c, &bar_drawn);
            } else {
                if (bar_drawn)
                    fputs("\n", stdout);
                cli_err("stopped watching; the migration may still be running "
                        "(see `ferry vm migrate-status`)");
                json_object_put(raw);
                return EXIT_FAILED;
            }
            continue;
        }
        nanosleep(&(struct timespec){ .tv_nsec = POLL_MS * 1000000L }, NULL);
    }
    if (bar_drawn)
        fputs("\n", stdout);
    if (o->json)
        printf("%s\n", json_object_to_json_string_ext(raw, JSON_C_TO_STRING_PLAIN));
    fflush(stdout);  /* before any message on stderr */
    json_object_put(raw);
    int rc = progress_outcome(&v, !o->no_verify, line, sizeof(line));
    if (rc == 0 && !o->json)
        printf("%s\n", line);
    else if (rc)
        cli_err("%s", line);
    fflush(stdout);
    return rc;
}

static void add_int(json_object *args, const char *key, long long v)
{
    if (v >= 0)
        json_object_object_add(args, key, json_object_new_int64(v));
}

int cmd_migrate(struct cli_conn *c, const struct migrate_opts *o)
{
    json_object *args = json_object_new_object(), *reply;
    json_object_object_add(args, "uri", json_object_new_string(o->to));
    add_int(args, "downtime_ms", o->downtime_ms);
    add_int(args, "bandwidth_mbps", o->bandwidth_mbps);
    add_int(args, "max_time_s", o->max_time_s);
    add_int(args, "max_rounds", o->max_rounds);
    if (o->force)
        json_object_object_add(args, "force", json_object_new_boolean(1));
    if (o->no_auto_converge)
        json_object_object_add(args, "auto_converge", json_object_new_boolean(0));
    add_int(args, "streams", o->streams);
    if (o->via)
        json_object_object_add(args, "via", json_object_new_string(o->via));
    if (o->compress)
        json_object_object_add(args, "compress", json_object_new_string(o->compress));
    if (o->storage_to)
        json_object_object_add(args, "storage_to", json_object_new_string(o->storage_to));
    if (o->verify)
        json_object_object_add(args, "verify", json_object_new_string(o->verify));
    else if (o->no_verify)
        json_object_object_add(args, "verify", json_object_new_boolean(0));
    char err[512];
    int rc = cli_call(c, "migrate", args, &reply, err, sizeof(err));
    json_object_put(args);
    if (rc != CLI_OK) {
        cli_err(rc == CLI_ESERVER ? "migrate: %s" : "%s", err);
        return EXIT_FAILED;
    }
    json_object_put(reply);

    struct sigaction sa = { .sa_handler = on_sigint };  /* no SA_RESTART: wake the sleep */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = watch(c, o);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);

    if (rc == EXIT_OK && !o->keep_source) {
        if (cli_call(c, "quit", NULL, &reply, err, sizeof(err)) != CLI_OK)
            cli_err("warning: the source did not quit: %s", err);
        json_object_put(reply);
    }
    return rc;
}

int cmd_migrate_cancel(struct cli_conn *c)
{
    json_object *reply;
    char err[512], line[1024];
    if (cli_call(c, "migrate-cancel", NULL, &reply, err, sizeof(err)) != CLI_OK) {
        cli_err("%s", err);
        return EXIT_FAILED;
    }
    json_object_put(reply);
    struct mig_view v;
    uint64_t t0 = cli_now_ms();
    do {
        nanosleep(&(struct timespec){ .tv_nsec = POLL_MS * 1000000L }, NULL);
        if (poll_status(c, &v, NULL) < 0)
            return EXIT_FAILED;
    } while (!mig_phase_final(v.phase) && cli_now_ms() - t0 < 60000);
    if (!mig_phase_final(v.phase)) {
        cli_err("cancel requested, but the migration is still %s after 60 s", v.phase);
        return EXIT_FAILED;
    }
    int rc = progress_outcome(&v, true, line, sizeof(line));
    if (rc == 1) {  /* cancelled (or failed): the VM stays here, which is what we wanted */
        printf("%s\n", line);
        return EXIT_OK;
    }
    cli_err("too late to cancel: %s", line);
    return rc ? rc : EXIT_FAILED;
}
