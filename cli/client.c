#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/client.h"

int cli_connect(struct cli_conn *c, const char *path, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(a.sun_path)) {
        snprintf(err, errlen, "cannot connect to %s: socket path too long", path);
        return -1;
    }
    strcpy(a.sun_path, path);
    snprintf(c->path, sizeof(c->path), "%s", path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", path, strerror(errno));
        cli_close(c);
        return -1;
    }
    return 0;
}

void cli_close(struct cli_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
    c->len = c->cap = 0;
}

/* The next line from the server (malloc'd), or NULL with err set. */
static char *read_line(struct cli_conn *c, char *err, size_t errlen)
{
    for (;;) {
        char *nl = c->buf ? memchr(c->buf, '\n', c->len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            char *line = malloc(n + 1);
            if (!line) {
                snprintf(err, errlen, "out of memory");
                return NULL;
            }
            memcpy(line, c->buf, n);
            line[n] = '\0';
            if (n && line[n - 1] == '\r')
                line[n - 1] = '\0';
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            return line;
        }
        if (c->len >= CLI_REPLY_MAX) {
            snprintf(err, errlen, "reply from %s longer than %u bytes", c->path, CLI_REPLY_MAX);
            return NULL;
        }
        if (c->cap - c->len < 4096) {
            size_t cap = c->cap ? c->cap * 2 : 8192;
            char *b = realloc(c->buf, cap);
            if (!b) {
                snprintf(err, errlen, "out of memory");
                return NULL;
            }
            c->buf = b;
            c->cap = cap;
        }
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int tmo = c->timeout_ms ? c->timeout_ms : CLI_TIMEOUT_MS;
        int r = poll(&p, 1, tmo);
        if (r < 0 && errno == EINTR)
            continue;  /* a signal: the caller looks at its flags after the reply */
        if (r == 0) {
            if (tmo % 1000)
                snprintf(err, errlen, "no reply from %s after %d ms", c->path, tmo);
            else
                snprintf(err, errlen, "no reply from %s after %d s", c->path, tmo / 1000);
            return NULL;
        }
        ssize_t n = r < 0 ? -1 : recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "lost the connection to %s: %s", c->path,
                     n == 0 ? "closed by ferry-vmm" : strerror(errno));
            return NULL;
        }
        c->len += (size_t)n;
    }
}

char *cli_roundtrip(struct cli_conn *c, const char *line, char *err, size_t errlen)
{
    size_t n = strlen(line);
    char *msg = malloc(n + 1);
    if (!msg) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(msg, line, n);
    msg[n] = '\n';
    int send_errno = 0;
    for (size_t off = 0; off <= n;) {
        ssize_t w = send(c->fd, msg + off, n + 1 - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            send_errno = w < 0 ? errno : EPIPE;
            break;
        }
        off += (size_t)w;
    }
    free(msg);
    /* even after a failed send the server may have said why (e.g. too many clients) */
    char *reply = read_line(c, err, errlen);
    if (!reply && send_errno)
        snprintf(err, errlen, "lost the connection to %s: %s", c->path, strerror(send_errno));
    return reply;
}

int cli_call(struct cli_conn *c, const char *cmd, json_object *args, json_object **reply,
             char *err, size_t errlen)
{
    *reply = NULL;
    json_object *req = json_object_new_object();
    json_object_object_add(req, "cmd", json_object_new_string(cmd));
    if (args)
        json_object_object_add(req, "args", json_object_get(args));
    char *line = cli_roundtrip(c, json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN),
                               err, errlen);
    json_object_put(req);
    if (!line)
        return CLI_EIO;
    json_object *r = json_tokener_parse(line), *ok, *msg;
    int rc = CLI_EIO;
    if (!r || !json_object_is_type(r, json_type_object) ||
        !json_object_object_get_ex(r, "ok", &ok) || !json_object_is_type(ok, json_type_boolean)) {
        snprintf(err, errlen, "unexpected reply from %s: %.100s", c->path, line);
    } else if (json_object_get_boolean(ok)) {
        *reply = json_object_get(r);
        rc = CLI_OK;
    } else {
        snprintf(err, errlen, "%s",
                 json_object_object_get_ex(r, "error", &msg) && json_object_is_type(msg, json_type_string)
                     ? json_object_get_string(msg) : "request failed (no reason given)");
        rc = CLI_ESERVER;
    }
    json_object_put(r);
    free(line);
    return rc;
}

json_object *cli_result(json_object *reply)
{
    json_object *res;
    if (json_object_object_get_ex(reply, "result", &res) && json_object_is_type(res, json_type_object))
        return res;
    res = json_object_new_object();
    json_object_object_add(reply, "result", res);
    return res;
}
