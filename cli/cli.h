/* ferry CLI: what main.c and the subcommand files share. */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cli/client.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_IN_DOUBT = 3 };

struct migrate_opts {
    const char *to;
    long long downtime_ms, bandwidth_mbps, max_time_s, max_rounds;  /* -1: server default */
    bool force, no_verify, json, keep_source, no_auto_converge;
    long long streams;                /* -1: server default */
    const char *via, *compress, *verify;
    const char *storage_to;           /* shared-nothing: PATH[,PATH...], one per disk */
};

void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* main.c: does this control-socket option take a value (-S, --to, ...)? */
bool cli_socket_opt_takes_value(const char *arg);
/* A usage error: one line on stderr pointing at --help; returns EXIT_USAGE. */
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* CLOCK_MONOTONIC in milliseconds, for the commands that poll. */
uint64_t cli_now_ms(void);

/* Connect to the control socket or print why not (and return -1). */
int cli_open(struct cli_conn *c, const char *sock);

/* migrate.c */
int cmd_migrate(struct cli_conn *c, const struct migrate_opts *o);
int cmd_migrate_cancel(struct cli_conn *c);

/* movedisk.c: vm move-disk DISK --to PATH, move-disk-status, move-disk-cancel */
struct move_opts {
    const char *to;
    long long bandwidth_mbps;         /* -1: no cap */
    bool force, delete_source, json;
};
int cmd_move_disk(struct cli_conn *c, const char *disk, const struct move_opts *o);
int cmd_move_disk_status(struct cli_conn *c, const char *disk, bool json);
int cmd_move_disk_cancel(struct cli_conn *c, const char *disk);

/* shutdown.c: power button, then `quit` after timeout_s */
int cmd_shutdown(struct cli_conn *c, long long timeout_s);

/* tls.c: `ferry tls init|issue` (argv[0] is "tls") */
int cmd_tls(int argc, char **argv);

#endif
