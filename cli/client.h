/* ferry CLI: one connection to a ferry-vmm control socket, one request line
 * and one reply line at a time (docs/control-socket.md). */
#ifndef FERRY_CLI_CLIENT_H
#define FERRY_CLI_CLIENT_H

#include <stddef.h>
#include <json-c/json.h>

#define CLI_REPLY_MAX   (1u << 20)   /* longest reply line accepted */
#define CLI_TIMEOUT_MS  30000        /* for one reply */

enum { CLI_OK = 0, CLI_ESERVER = -1, CLI_EIO = -2 };

struct cli_conn {
    int fd;
    char path[108];
    char *buf;                       /* bytes read past the last reply */
    size_t len, cap;
    int timeout_ms;                  /* for one reply; 0 = CLI_TIMEOUT_MS (set after cli_connect) */
};

/* 0, or -1 with "cannot connect to PATH: reason" in err. */
int cli_connect(struct cli_conn *c, const char *path, char *err, size_t errlen);
void cli_close(struct cli_conn *c);

/* Send one line (no newline) and return the reply line (malloc'd, no
 * newline), or NULL with err set. */
char *cli_roundtrip(struct cli_conn *c, const char *line, char *err, size_t errlen);

/* Send {"cmd": cmd, "args": args} (args borrowed, may be NULL). CLI_OK: *reply
 * is the parsed reply (ok:true; put it when done). CLI_ESERVER: the server's
 * error text is in err. CLI_EIO: a transport or protocol problem is in err. */
int cli_call(struct cli_conn *c, const char *cmd, json_object *args, json_object **reply,
             char *err, size_t errlen);

/* The "result" object of an ok reply (never NULL: an empty object is added). */
json_object *cli_result(json_object *reply);

#endif
