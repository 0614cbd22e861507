/* ferry vm move-disk / move-disk-status / move-disk-cancel: start a live
 * disk move, draw its progress, cancel it (docs/cli.md). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

#define POLL_MS 100
#define MIB (1024.0 * 1024.0)

static volatile sig_atomic_t interrupts;

static void on_sigint(int sig)
{
    interrupts++;
}

static const char *jstr(json_object *o, const char *k)
{
    json_object *v;
    return o && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
        ? json_object_get_string(v) : "";
}

static double jnum(json_object *o, const char *k)
{
    json_object *v;
    return o && json_object_object_get_ex(o, k, &v) ? json_object_get_double(v) : 0;
}

static bool final_phase(const char *ph)
{
    return strcmp(ph, "copy") && strcmp(ph, "mirror");
}

/* One progress line; width > 0: a terminal line with a bar, cut to width - 1. */
static void move_line(json_object *s, int width, char *buf, size_t len)
{
    const char *ph = jstr(s, "phase");
    double total = jnum(s, "total_bytes"), pass0 = jnum(s, "pass0_bytes");
    double pct = total > 0 ? 100.0 * (pass0 < total ? pass0 : total) / total : 100;
    char bar[48] = "";
    if (width >= 100 && !strcmp(ph, "copy") && jnum(s, "pass") == 0) {
        int n = 30, fill = (int)(pct * n / 100);
        bar[0] = '[';
        for (int i = 0; i < n; i++)
            bar[1 + i] = i < fill ? '#' : '.';
        bar[n + 1] = ']';
        bar[n + 2] = 0;
    }
    /* the bulk pass against the data; what dirty passes copied again after it */
    double again = jnum(s, "bytes_copied") - pass0;
    char recopy[48] = "";
    if (again >= MIB)
        snprintf(recopy, sizeof(recopy), " +%.0f MiB again", again / MIB);
    snprintf(buf, len, "%s %s pass %.0f %s %3.0f%%  %.0f/%.0f MiB%s  %.0f MiB/s  dirty %.0f  mirrored %.0f  %.1f s",
             jstr(s, "disk"), ph, jnum(s, "pass"), bar, pct, pass0 / MIB, total / MIB, recopy,
             jnum(s, "rate_mbps") / 8 * 1e6 / MIB, jnum(s, "dirty_blocks"), jnum(s, "mirrored_writes"),
             jnum(s, "elapsed_ms") / 1000);
    if (width > 0 && strlen(buf) >= (size_t)width)
        buf[width - 1] = 0;
}

/* The outcome line and exit code: 0 switched, 1 otherwise. */
static int move_outcome(json_object *s, char *buf, size_t len)
{
    const char *ph = jstr(s, "phase");
    if (!strcmp(ph, "switched")) {
        snprintf(buf, len, "%s moved to %s: %.0f MiB copied in %.2f s (%.0f MiB/s, %s), %.0f mirrored writes, "
                 "switch %.0f us%s", jstr(s, "disk"), jstr(s, "target"), jnum(s, "bytes_copied") / MIB,
                 jnum(s, "elapsed_ms") / 1000, jnum(s, "rate_mbps") / 8 * 1e6 / MIB, jstr(s, "io"),
                 jnum(s, "mirrored_writes"), jnum(s, "switch_us"),
                 json_object_get_boolean(json_object_object_get(s, "delete_source")) ? "; source deleted" : "");
        return EXIT_OK;
    }
    if (!strcmp(ph, "none"))
        snprintf(buf, len, "no disk move");
    else if (!strcmp(ph, "failed"))
        snprintf(buf, len, "move of %s to %s failed: %s; the VM stays on %s", jstr(s, "disk"), jstr(s, "target"),
                 jstr(s, "error"), jstr(s, "source"));
    else if (!strcmp(ph, "cancelled"))
        snprintf(buf, len, "move of %s to %s cancelled; the VM stays on %s", jstr(s, "disk"), jstr(s, "target"),
                 jstr(s, "source"));
    else
        move_line(s, 0, buf, len);
    return EXIT_FAILED;
}

static json_object *get_status(struct cli_conn *c, const char *disk)
{
    json_object *args = json_object_new_object(), *reply;
    if (disk)
        json_object_object_add(args, "disk", json_object_new_string(disk));
    char err[512];
    int rc = cli_call(c, "move-disk-status", args, &reply, err, sizeof(err));
    json_object_put(args);
    if (rc != CLI_OK) {
        cli_err("%s", err);
        return NULL;
    }
    json_object *res = json_object_get(cli_result(reply));
    json_object_put(reply);
    return res;
}

static int send_cancel(struct cli_conn *c, const char *disk, bool quiet)
{
    json_object *args = json_object_new_object(), *reply;
    if (disk)
        json_object_object_add(args, "disk", json_object_new_string(disk));
    char err[512];
    int rc = cli_call(c, "move-disk-cancel", args, &reply, err, sizeof(err));
    json_object_put(args);
    json_object_put(reply);
    if (rc != CLI_OK && !quiet)
        cli_err("%s", err);
    return rc == CLI_OK ? 0 : -1;
}

/* Poll until the move ends; print the outcome. */
static int watch(struct cli_conn *c, const char *disk, bool json)
{
    bool tty = !json && isatty(STDOUT_FILENO), drawn = false;
    char line[1024], last_phase[16] = "";
    uint64_t last_print = 0;
    int cancels = 0;
    json_object *s = NULL;
    for (;;) {
        json_object_put(s);
        if (!(s = get_status(c, disk))) {
            if (drawn)
                fputs("\n", stdout);
            return EXIT_FAILED;
        }
        const char *ph = jstr(s, "phase");
        bool fin = final_phase(ph);
        uint64_t t = cli_now_ms();
        if (tty && !fin) {
            struct winsize ws;
            int w = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20 ? ws.ws_col : 80;
            move_line(s, w, line, sizeof(line));
            printf("\r%s\033[K", line);
            fflush(stdout);
            drawn = true;
        } else if (!json && !fin && (strcmp(ph, last_phase) || t - last_print >= 1000)) {
            move_line(s, 0, line, sizeof(line));
            printf("%s\n", line);
            fflush(stdout);
            last_print = t;
        }
        snprintf(last_phase, sizeof(last_phase), "%s", ph);
        if (fin)
            break;
        if (interrupts > cancels) {
            if (drawn)
                fputs("\n", stdout);
            drawn = false;
            if (cancels++ == 0) {
                if (send_cancel(c, disk, false) == 0)
                    fprintf(stderr, "ferry: cancelling the disk move (Ctrl-C again to stop waiting)\n");
            } else {
                cli_err("stopped watching; the move may still be running (see `ferry vm move-disk-status`)");
                json_object_put(s);
                return EXIT_FAILED;
            }
            continue;
        }
        nanosleep(&(struct timespec){ .tv_nsec = POLL_MS * 1000000L }, NULL);
    }
    if (drawn)
        fputs("\n", stdout);
    if (json)
        printf("%s\n", json_object_to_json_string_ext(s, JSON_C_TO_STRING_PLAIN));
    fflush(stdout);
    int rc = move_outcome(s, line, sizeof(line));
    if (rc == EXIT_OK && !json)
        printf("%s\n", line);
    else if (rc != EXIT_OK)
        cli_err("%s", line);
    json_object_put(s);
    return rc;
}

int cmd_move_disk(struct cli_conn *c, const char *disk, const struct move_opts *o)
{
    json_object *args = json_object_new_object(), *reply;
    json_object_object_add(args, "disk", json_object_new_string(disk));
    json_object_object_add(args, "to", json_object_new_string(o->to));
    if (o->bandwidth_mbps >= 0)
        json_object_object_add(args, "bandwidth_mbps", json_object_new_int64(o->bandwidth_mbps));
    if (o->delete_source)
        json_object_object_add(args, "delete_source", json_object_new_boolean(1));
    if (o->force)
        json_object_object_add(args, "force", json_object_new_boolean(1));
    char err[512];
    int rc = cli_call(c, "move-disk", args, &reply, err, sizeof(err));
    json_object_put(args);
    if (rc != CLI_OK) {
        cli_err(rc == CLI_ESERVER ? "move-disk: %s" : "%s", err);
        return EXIT_FAILED;
    }
    json_object_put(reply);
    struct sigaction sa = { .sa_handler = on_sigint };   /* no SA_RESTART: wake the sleep */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = watch(c, disk, o->json);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    return rc;
}

int cmd_move_disk_status(struct cli_conn *c, const char *disk, bool json)
{
    json_object *s = get_status(c, disk);
    if (!s)
        return EXIT_FAILED;
    char line[1024];
    if (json)
        printf("%s\n", json_object_to_json_string_ext(s, JSON_C_TO_STRING_PLAIN));
    else if (final_phase(jstr(s, "phase")))
        move_outcome(s, line, sizeof(line)), printf("%s\n", line);
    else
        move_line(s, 0, line, sizeof(line)), printf("%s\n", line);
    json_object_put(s);
    return EXIT_OK;
}

int cmd_move_disk_cancel(struct cli_conn *c, const char *disk)
{
    if (send_cancel(c, disk, false) < 0)
        return EXIT_FAILED;
    uint64_t t0 = cli_now_ms();
    json_object *s = NULL;
    do {
        nanosleep(&(struct timespec){ .tv_nsec = POLL_MS * 1000000L }, NULL);
        json_object_put(s);
        if (!(s = get_status(c, disk)))
            return EXIT_FAILED;
    } while (!final_phase(jstr(s, "phase")) && cli_now_ms() - t0 < 60000);
    char line[1024];
    int rc = move_outcome(s, line, sizeof(line));
    const char *ph = jstr(s, "phase");
    if (!strcmp(ph, "cancelled") || !strcmp(ph, "failed")) {
        printf("%s\n", line);    /* the VM stays on the old image: what was asked */
        rc = EXIT_OK;
    } else {
        cli_err("too late to cancel: %s", line);
        rc = EXIT_FAILED;
    }
    json_object_put(s);
    return rc;
}
