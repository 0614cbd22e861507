/* The control socket: a Unix stream socket speaking line-delimited JSON
 * (docs/control-socket.md). One request per line, one reply per line. */
#ifndef FERRY_CONTROL_H
#define FERRY_CONTROL_H

#include <pthread.h>
#include <stddef.h>
#include <json-c/json.h>

#define CONTROL_MAX_LINE  65536
#define CONTROL_MAX_CLIENTS 8

/* A command fills `result` (a JSON object) and returns 0, or returns -1 with
 * a one-line message in err. */
struct control_cmd {
    const char *name;
    int (*fn)(void *ctx, json_object *args, json_object *result, char *err, size_t errlen);
};

/* Parse and run one request line; returns the reply line (malloc'd, no
 * newline). Never fails: every problem becomes {"ok":false,"error":...}. */
char *control_dispatch(const struct control_cmd *cmds, void *ctx, const char *line);

struct control_server {
    int listen_fd;
    int wake[2];              /* pipe to stop the server thread */
    char path[108];
    const struct control_cmd *cmds;
    void *ctx;
    pthread_t thread;
    int running;
};

int control_start(struct control_server *s, const char *path, const struct control_cmd *cmds,
                  void *ctx, char *err, size_t errlen);
void control_stop(struct control_server *s);

#endif
