/* ferry CLI: turning migrate-status / status results and the manager's
 * tasks into text: pure functions, so they can be tested without a socket;
 * and the live display the commands that watch something share. */
#ifndef FERRY_CLI_PROGRESS_H
#define FERRY_CLI_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

/* A migrate-status result (migration_status() in migration/source.c). Fields
 * missing from the JSON are 0 / "" (-1 for the completion-only numbers). */
struct mig_view {
    char phase[16];
    char destination[256];
    char error[512];
    int64_t round, elapsed_ms, downtime_target_ms;
    uint64_t bytes_sent, pages_sent, zero_pages, ram_bytes, remaining_bytes;
    uint64_t scanned_bytes;   /* round 0: RAM looked at (all-zero pages are not sent) */
    double throughput_mbps, dirty_rate_mbps, predicted_downtime_ms;
    int64_t downtime_ms, verify_ms, total_ms, final_pages;
    int64_t streams;
    int64_t throttle_pct;     /* auto-converge: share of time the vCPUs are held (highest, at the end) */
    char cipher[64], compression[8], verify[8];
    char verify_result[200];  /* "match", "MISMATCH: ...", ... ("": not reported) */
};

void mig_view_parse(json_object *status, struct mig_view *v);

/* completed, failed, cancelled, in-doubt or none: nothing more will happen */
bool mig_phase_final(const char *phase);

/* One progress line. width > 0: a terminal line with a bar, cut to width - 1
 * columns; width == 0: a plain log line. rate_mbps is the client's measured
 * rate (< 0: use the server's last-round throughput). Returns the length. */
size_t progress_line(const struct mig_view *v, double rate_mbps, int width, char *buf, size_t len);

/* The final message for a finished migration, and the exit code that goes
 * with it: 0 completed ("migrated to ..."), 1 failed / cancelled / none,
 * 3 in doubt. verified: the digest check was on. */
int progress_outcome(const struct mig_view *v, bool verified, char *buf, size_t len);

/* A readable multi-line summary of a `status` result. */
size_t status_summary(json_object *status, char *buf, size_t len);

/* One line for a manager task (GET /v1/tasks/ID): id, kind, target, then a
 * bar of its percent when width > 0 (a terminal), and its phase. */
size_t task_line(json_object *task, int width, char *buf, size_t len);

/* A refused migration's pre-migration checks ([{"check", "level",
 * "reason"}]): each one that did not pass (level other than ok, pass,
 * info) as "PREFIXcheck (level): reason\n". */
size_t report_text(json_object *report, const char *prefix, char *buf, size_t len);

/* The terminal's width (80 when stdout is not one). */
int progress_term_width(void);

/* A live progress display: on a terminal one line redrawn in place;
 * otherwise a plain line when key changes (a phase) and at most each
 * second; nothing when quiet (--json). draw makes the line (width 0:
 * plain). */
struct live {
    bool tty, quiet, drawn;
    char key[256];
    uint64_t last_ms;
};
void live_init(struct live *l, bool quiet);
void live_show(struct live *l, const char *key, uint64_t now_ms,
               size_t (*draw)(void *arg, int width, char *buf, size_t len), void *arg);
/* Ends a redrawn line, before anything else is printed. */
void live_end(struct live *l);

#endif
