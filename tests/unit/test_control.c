/* The control socket (vmm/control.c): control_dispatch() on every kind of
 * good and bad request line with a fake command table, and the real server
 * through control_start() on a temporary socket. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmm/control.h"

struct ctx {
    int calls;
    int args_was_object;
};

/* echo: result.args = a copy of args, result.calls = how many calls so far */
static int cmd_echo(void *opaque, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct ctx *c = opaque;
    c->calls++;
    c->args_was_object = args && json_object_is_type(args, json_type_object);
    json_object *copy = NULL;
    json_object_deep_copy(args, &copy, NULL);
    json_object_object_add(res, "args", copy);
    json_object_object_add(res, "calls", json_object_new_int(c->calls));
    return 0;
}

static int cmd_fail(void *opaque, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct ctx *c = opaque;
    c->calls++;
    json_object_object_add(res, "partial", json_object_new_int(1));  /* must not leak into the reply */
    snprintf(err, errlen, "disk on fire");
    return -1;
}

static int cmd_fail_silent(void *opaque, json_object *args, json_object *res, char *err, size_t errlen)
{
    return -1;
}

static const struct control_cmd cmds[] = {
    { "echo", cmd_echo },
    { "fail", cmd_fail },
    { "fail-silent", cmd_fail_silent },
    { NULL, NULL },
};

/* Dispatch line; return the parsed reply (checked to be an object with a boolean ok). */
static json_object *dispatch(struct ctx *c, const char *line)
{
    char *s = control_dispatch(cmds, c, line);
    assert_non_null(s);
    assert_null(strchr(s, '\n'));  /* one reply = one line */
    json_object *r = json_tokener_parse(s);
    if (!r || !json_object_is_type(r, json_type_object))
        fail_msg("reply is not a JSON object: %s", s);
    free(s);
    json_object *ok;
    assert_true(json_object_object_get_ex(r, "ok", &ok));
    assert_true(json_object_is_type(ok, json_type_boolean));
    return r;
}

static json_object *field(json_object *o, const char *key)
{
    json_object *v = NULL;
    json_object_object_get_ex(o, key, &v);
    return v;
}

static void expect_ok(json_object *r)
{
    assert_true(json_object_get_boolean(field(r, "ok")));
    assert_null(field(r, "error"));
    assert_true(json_object_is_type(field(r, "result"), json_type_object));
}

/* ok:false, an error containing msg, no result */
static void expect_error(json_object *r, const char *msg)
{
    assert_false(json_object_get_boolean(field(r, "ok")));
    assert_null(field(r, "result"));
    json_object *e = field(r, "error");
    assert_non_null(e);
    assert_true(json_object_is_type(e, json_type_string));
    if (!strstr(json_object_get_string(e), msg))
        fail_msg("error \"%s\" does not contain \"%s\"", json_object_get_string(e), msg);
}

static void test_ok_with_result(void **state)
{
    struct ctx c = { 0 };
    json_object *r = dispatch(&c, "{\"cmd\":\"echo\",\"args\":{\"x\":5,\"s\":\"y\"}}");
    expect_ok(r);
    json_object *res = field(r, "result");
    assert_int_equal(json_object_get_int(field(field(res, "args"), "x")), 5);
    assert_string_equal(json_object_get_string(field(field(res, "args"), "s")), "y");
    assert_int_equal(json_object_get_int(field(res, "calls")), 1);
    assert_null(field(r, "id"));  /* no id asked, none given */
    json_object_put(r);

    /* no args: the handler still gets an (empty) object */
    r = dispatch(&c, "{\"cmd\":\"echo\"}");
    expect_ok(r);
    assert_true(c.args_was_object);
    assert_int_equal(json_object_object_length(field(field(r, "result"), "args")), 0);
    json_object_put(r);
    assert_int_equal(c.calls, 2);
}

static void test_id_echoed(void **state)
{
    struct ctx c = { 0 };
    json_object *r = dispatch(&c, "{\"id\":42,\"cmd\":\"echo\"}");
    expect_ok(r);
    assert_int_equal(json_object_get_int(field(r, "id")), 42);
    json_object_put(r);

    r = dispatch(&c, "{\"cmd\":\"echo\",\"id\":{\"seq\":[1,\"two\"]}}");
    assert_string_equal(json_object_to_json_string_ext(field(r, "id"), JSON_C_TO_STRING_PLAIN),
                        "{\"seq\":[1,\"two\"]}");
    json_object_put(r);

    /* ... on errors too */
    r = dispatch(&c, "{\"cmd\":\"fail\",\"id\":\"abc\"}");
    expect_error(r, "disk on fire");
    assert_string_equal(json_object_get_string(field(r, "id")), "abc");
    json_object_put(r);
    r = dispatch(&c, "{\"cmd\":\"nope\",\"id\":null}");
    expect_error(r, "unknown command");
    json_object_put(r);
}

static void test_unknown_command(void **state)
{
    struct ctx c = { 0 };
    json_object *r = dispatch(&c, "{\"cmd\":\"x\",\"id\":7}");
    expect_error(r, "unknown command 'x'");
    assert_int_equal(json_object_get_int(field(r, "id")), 7);
    json_object_put(r);
    /* a prefix of a real name is not that name */
    r = dispatch(&c, "{\"cmd\":\"ech\"}");
    expect_error(r, "unknown command 'ech'");
    json_object_put(r);
    r = dispatch(&c, "{\"cmd\":\"\"}");
    expect_error(r, "unknown command ''");
    json_object_put(r);
    assert_int_equal(c.calls, 0);
}

static void test_malformed_json(void **state)
{
    struct ctx c = { 0 };
    static const char *bad[] = { "{", "{\"cmd\":", "not json", "{\"cmd\" \"echo\"}", "{\"cmd\":\"echo\"",
                                 "\"unterminated" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_object *r = dispatch(&c, bad[i]);
        expect_error(r, "malformed JSON");
        assert_null(field(r, "id"));
        json_object_put(r);
    }
    assert_int_equal(c.calls, 0);
}

static void test_not_an_object(void **state)
{
    struct ctx c = { 0 };
    static const char *bad[] = { "[1,2]", "\"status\"", "42", "true", "[{\"cmd\":\"echo\"}]" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_object *r = dispatch(&c, bad[i]);
        expect_error(r, "request must be a JSON object");
        json_object_put(r);
    }
    assert_int_equal(c.calls, 0);
}

/* One line is one request: what follows the object is an error, not ignored
 * (else `{"cmd":"pause"} {"cmd":"quit"}` silently runs only the pause), and a
 * JSON null is a request that is not an object, not "malformed JSON: success". */
static void test_strict_json(void **state)
{
    struct ctx c = { 0 };
    json_object *r = dispatch(&c, "null");
    expect_error(r, "request must be a JSON object");
    json_object_put(r);
    static const char *bad[] = { "{\"cmd\":\"echo\"} trailing", "{\"cmd\":\"echo\"}{\"cmd\":\"echo\"}",
                                 "{\"cmd\":\"echo\"} {\"cmd\":\"fail\"}" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = dispatch(&c, bad[i]);
        expect_error(r, "malformed JSON");
        json_object_put(r);
    }
    assert_int_equal(c.calls, 0);
    /* whitespace around the object is fine */
    r = dispatch(&c, "  {\"cmd\":\"echo\"} \t ");
    expect_ok(r);
    json_object_put(r);
}

static void test_bad_cmd(void **state)
{
    struct ctx c = { 0 };
    static const char *bad[] = { "{}", "{\"args\":{}}", "{\"cmd\":5}", "{\"cmd\":null}",
                                 "{\"cmd\":[\"echo\"]}", "{\"cmd\":{\"name\":\"echo\"}}" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_object *r = dispatch(&c, bad[i]);
        expect_error(r, "missing \"cmd\" (a string)");
        json_object_put(r);
    }
    json_object *r = dispatch(&c, "{\"cmd\":5,\"id\":1}");
    assert_int_equal(json_object_get_int(field(r, "id")), 1);
    json_object_put(r);
    assert_int_equal(c.calls, 0);
}

static void test_bad_args(void **state)
{
    struct ctx c = { 0 };
    static const char *bad[] = { "{\"cmd\":\"echo\",\"args\":[1]}", "{\"cmd\":\"echo\",\"args\":\"x\"}",
                                 "{\"cmd\":\"echo\",\"args\":3}", "{\"cmd\":\"echo\",\"args\":null}" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_object *r = dispatch(&c, bad[i]);
        expect_error(r, "\"args\" must be an object");
        json_object_put(r);
    }
    assert_int_equal(c.calls, 0);  /* the handler never saw them */
}

static void test_handler_error(void **state)
{
    struct ctx c = { 0 };
    json_object *r = dispatch(&c, "{\"cmd\":\"fail\",\"args\":{}}");
    expect_error(r, "disk on fire");
    assert_string_equal(json_object_get_string(field(r, "error")), "disk on fire");
    json_object_put(r);
    assert_int_equal(c.calls, 1);
    /* an error without a message still says something */
    r = dispatch(&c, "{\"cmd\":\"fail-silent\"}");
    expect_error(r, "command failed");
    json_object_put(r);
}

/* --- the real server --- */

struct srv {
    char dir[64], path[128];
    struct control_server s;
    struct ctx c;
};

static int srv_setup(void **state)
{
    struct srv *v = calloc(1, sizeof(*v));
    snprintf(v->dir, sizeof(v->dir), "/tmp/ferry-test-control.XXXXXX");
    if (!v || !mkdtemp(v->dir))
        return -1;
    snprintf(v->path, sizeof(v->path), "%s/ctl.sock", v->dir);
    char err[256] = "";
    if (control_start(&v->s, v->path, cmds, &v->c, err, sizeof(err)) < 0) {
        fprintf(stderr, "control_start: %s\n", err);
        return -1;
    }
    *state = v;
    return 0;
}

static int srv_teardown(void **state)
{
    struct srv *v = *state;
    control_stop(&v->s);
    struct stat st;
    int gone = stat(v->path, &st) < 0 && errno == ENOENT;  /* control_stop removes the socket */
    rmdir(v->dir);
    free(v);
    return gone ? 0 : -1;
}

static int conn(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static void send_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;  /* the server may hang up first */
        s += w;
        n -= (size_t)w;
    }
}

/* Read one line (5 s timeout); returns it (static buffer) or NULL on EOF. */
static char *read_line(int fd)
{
    static char buf[4096];
    size_t n = 0;
    while (n < sizeof(buf) - 1) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 5000) != 1)
            fail_msg("no reply within 5 s");
        ssize_t r = recv(fd, buf + n, 1, 0);
        if (r <= 0)
            return n ? buf : NULL;
        if (buf[n] == '\n') {
            buf[n] = '\0';
            return buf;
        }
        n++;
    }
    fail_msg("reply line too long");
    return NULL;
}

static void expect_reply_id(int fd, int id)
{
    char *line = read_line(fd);
    assert_non_null(line);
    json_object *r = json_tokener_parse(line);
    assert_non_null(r);
    expect_ok(r);
    assert_int_equal(json_object_get_int(field(r, "id")), id);
    json_object_put(r);
}

static void test_server_round_trip(void **state)
{
    struct srv *v = *state;
    int fd = conn(v->path);
    /* two requests in one write, plus blank and CRLF lines: two replies, in order */
    const char *two = "{\"cmd\":\"echo\",\"id\":1}\n\n{\"cmd\":\"echo\",\"id\":2}\r\n";
    send_all(fd, two, strlen(two));
    expect_reply_id(fd, 1);
    expect_reply_id(fd, 2);
    /* a request split across writes */
    send_all(fd, "{\"cmd\":\"ec", 10);
    usleep(20000);
    send_all(fd, "ho\",\"id\":3}\n", 12);
    expect_reply_id(fd, 3);
    /* a bad request does not close the connection */
    send_all(fd, "garbage\n", 8);
    char *line = read_line(fd);
    assert_non_null(line);
    assert_non_null(strstr(line, "malformed JSON"));
    send_all(fd, "{\"cmd\":\"echo\",\"id\":4}\n", 22);
    expect_reply_id(fd, 4);
    close(fd);
    assert_int_equal(v->c.calls, 4);
}

static void test_server_line_too_long(void **state)
{
    struct srv *v = *state;
    int fd = conn(v->path);
    size_t n = CONTROL_MAX_LINE + 4096;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    send_all(fd, big, n);
    free(big);
    char *line = read_line(fd);
    assert_non_null(line);
    json_object *r = json_tokener_parse(line);
    assert_non_null(r);
    expect_error(r, "request line too long");
    json_object_put(r);
    assert_null(read_line(fd));  /* and the server hung up */
    close(fd);
    /* the server is still fine for others */
    fd = conn(v->path);
    send_all(fd, "{\"cmd\":\"echo\",\"id\":9}\n", 22);
    expect_reply_id(fd, 9);
    close(fd);
}

static void test_server_too_many_clients(void **state)
{
    struct srv *v = *state;
    int fds[CONTROL_MAX_CLIENTS];
    for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
        fds[i] = conn(v->path);
        send_all(fds[i], "{\"cmd\":\"echo\",\"id\":0}\n", 22);
        expect_reply_id(fds[i], 0);  /* accepted and served */
    }
    int extra = conn(v->path);
    char *line = read_line(extra);
    assert_non_null(line);
    assert_non_null(strstr(line, "too many control clients"));
    close(extra);
    close(fds[0]);
    usleep(50000);  /* let the server notice the free slot */
    extra = conn(v->path);
    send_all(extra, "{\"cmd\":\"echo\",\"id\":5}\n", 22);
    expect_reply_id(extra, 5);
    close(extra);
    for (int i = 1; i < CONTROL_MAX_CLIENTS; i++)
        close(fds[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_with_result),
        cmocka_unit_test(test_id_echoed),
        cmocka_unit_test(test_unknown_command),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_strict_json),
        cmocka_unit_test(test_bad_cmd),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_handler_error),
        cmocka_unit_test_setup_teardown(test_server_round_trip, srv_setup, srv_teardown),
        cmocka_unit_test_setup_teardown(test_server_line_too_long, srv_setup, srv_teardown),
        cmocka_unit_test_setup_teardown(test_server_too_many_clients, srv_setup, srv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
