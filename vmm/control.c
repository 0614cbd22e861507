#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmm/control.h"
#include "vmm/log.h"

static char *reply_error(json_object *id, const char *msg)
{
    json_object *r = json_object_new_object();
    json_object_object_add(r, "ok", json_object_new_boolean(0));
    json_object_object_add(r, "error", json_object_new_string(msg));
    if (id)
        json_object_object_add(r, "id", json_object_get(id));
    char *s = strdup(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
    json_object_put(r);
    return s;
}

char *control_dispatch(const struct control_cmd *cmds, void *ctx, const char *line)
{
    char err[512] = "";
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return reply_error(NULL, "out of memory");
    json_object *req = json_tokener_parse_ex(tok, line, -1);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok), n = strlen(line);
    const char *rest = line + (end < n ? end : n);
    json_tokener_free(tok);
    rest += strspn(rest, " \t");
    if (jerr != json_tokener_success || *rest) {
        /* one line is one request: bytes after it are an error, not ignored */
        snprintf(err, sizeof(err), "malformed JSON: %s", jerr != json_tokener_success
                 ? json_tokener_error_desc(jerr) : "unexpected data after the request");
        json_object_put(req);
        return reply_error(NULL, err);
    }
    if (!req)  /* a JSON null */
        return reply_error(NULL, "request must be a JSON object");
    json_object *id = NULL, *cmd = NULL, *args = NULL;
    char *out;
    if (!json_object_is_type(req, json_type_object)) {
        out = reply_error(NULL, "request must be a JSON object");
        goto done;
    }
    json_object_object_get_ex(req, "id", &id);
    if (!json_object_object_get_ex(req, "cmd", &cmd) || !json_object_is_type(cmd, json_type_string)) {
        out = reply_error(id, "missing \"cmd\" (a string)");
        goto done;
    }
    if (json_object_object_get_ex(req, "args", &args) && !json_object_is_type(args, json_type_object)) {
        out = reply_error(id, "\"args\" must be an object");
        goto done;
    }
    const char *name = json_object_get_string(cmd);
    const struct control_cmd *c = cmds;
    while (c->name && strcmp(c->name, name))
        c++;
    if (!c->name) {
        snprintf(err, sizeof(err), "unknown command '%.64s'", name);
        out = reply_error(id, err);
        goto done;
    }
    json_object *empty = args ? NULL : json_object_new_object();
    json_object *result = json_object_new_object();
    if (c->fn(ctx, args ? args : empty, result, err, sizeof(err)) < 0) {
        out = reply_error(id, err[0] ? err : "command failed");
        json_object_put(result);
    } else {
        json_object *r = json_object_new_object();
        json_object_object_add(r, "ok", json_object_new_boolean(1));
        json_object_object_add(r, "result", result);
        if (id)
            json_object_object_add(r, "id", json_object_get(id));
        out = strdup(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
        json_object_put(r);
    }
    json_object_put(empty);
done:
    json_object_put(req);
    return out;
}

struct client {
    int fd;
    size_t len;
    char *buf;
};

static void send_line(int fd, const char *s)
{
    size_t n = strlen(s);
    char *line = malloc(n + 1);
    if (!line)
        return;
    memcpy(line, s, n);
    line[n] = '\n';
    for (size_t off = 0; off <= n;) {
        ssize_t w = send(fd, line + off, n + 1 - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(line);
}

static void client_close(struct client *c)
{
    close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
    c->len = 0;
}

/* Read what is available; run every complete line. */
static void client_input(struct control_server *s, struct client *c)
{
    if (!c->buf && !(c->buf = malloc(CONTROL_MAX_LINE)))
        return client_close(c);
    ssize_t r = recv(c->fd, c->buf + c->len, CONTROL_MAX_LINE - c->len, 0);
    if (r <= 0) {
        if (r < 0 && errno == EINTR)
            return;
        return client_close(c);
    }
    c->len += (size_t)r;
    char *nl;
    while (c->fd >= 0 && (nl = memchr(c->buf, '\n', c->len))) {
        *nl = '\0';
        size_t used = (size_t)(nl - c->buf) + 1;
        if (nl > c->buf && nl[-1] == '\r')
            nl[-1] = '\0';
        if (c->buf[0]) {
            char *reply = control_dispatch(s->cmds, s->ctx, c->buf);
            send_line(c->fd, reply);
            free(reply);
        }
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
    }
    if (c->fd >= 0 && c->len == CONTROL_MAX_LINE) {
        send_line(c->fd, "{\"ok\":false,\"error\":\"request line too long\"}");
        client_close(c);
    }
}

static void *control_thread(void *arg)
{
    struct control_server *s = arg;
    struct client clients[CONTROL_MAX_CLIENTS];
    for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
        clients[i] = (struct client){ .fd = -1 };

    for (;;) {
        struct pollfd p[CONTROL_MAX_CLIENTS + 2] = {
            { .fd = s->wake[0], .events = POLLIN }, { .fd = s->listen_fd, .events = POLLIN },
        };
        for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
            p[i + 2] = (struct pollfd){ .fd = clients[i].fd, .events = POLLIN };
        if (poll(p, CONTROL_MAX_CLIENTS + 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[0].revents)
            break;
        if (p[1].revents & POLLIN) {
            int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            int slot = -1;
            for (int i = 0; fd >= 0 && i < CONTROL_MAX_CLIENTS && slot < 0; i++)
                if (clients[i].fd < 0)
                    slot = i;
            if (fd >= 0 && slot < 0) {
                send_line(fd, "{\"ok\":false,\"error\":\"too many control clients\"}");
                close(fd);
            } else if (fd >= 0) {
                clients[slot].fd = fd;
            }
        }
        for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
            if (clients[i].fd >= 0 && (p[i + 2].revents & (POLLIN | POLLHUP | POLLERR)))
                client_input(s, &clients[i]);
    }
    for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
        if (clients[i].fd >= 0)
            client_close(&clients[i]);
    return NULL;
}

int control_start(struct control_server *s, const char *path, const struct control_cmd *cmds,
                  void *ctx, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->listen_fd = -1;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(addr.sun_path)) {
        snprintf(err, errlen, "control socket path too long: %s", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    memcpy(s->path, addr.sun_path, sizeof(s->path));
    s->cmds = cmds;
    s->ctx = ctx;
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0) {
        snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
        return -1;
    }
    /* Replace only a stale socket: never a file, never a live VM's socket. */
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            snprintf(err, errlen, "control socket %s: exists and is not a socket", path);
            close(s->listen_fd);
            return -1;
        }
        if (connect(s->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 || errno != ECONNREFUSED) {
            snprintf(err, errlen, "control socket %s: in use by another process", path);
            close(s->listen_fd);
            return -1;
        }
        close(s->listen_fd);
        s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        unlink(path);
    }
    if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(s->listen_fd, 8) < 0 || pipe2(s->wake, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
        if (s->listen_fd >= 0)
            close(s->listen_fd);
        return -1;
    }
    if (pthread_create(&s->thread, NULL, control_thread, s) != 0) {
        snprintf(err, errlen, "cannot start control thread");
        return -1;
    }
    s->running = 1;
    return 0;
}

void control_stop(struct control_server *s)
{
    if (!s->running)
        return;
    if (write(s->wake[1], "x", 1) < 0)
        log_warn("control: cannot wake server thread");
    pthread_join(s->thread, NULL);
    close(s->wake[0]);
    close(s->wake[1]);
    close(s->listen_fd);
    unlink(s->path);
    s->running = 0;
}
