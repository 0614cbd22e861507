/* ferryd's HTTP API (docs/ferryd-openapi.yaml): routes requests to the
 * host and VM modules and turns their results into JSON replies. Every
 * error is {"error": "one line"} with a 4xx/5xx status. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "agent/ferryd.h"

#define CONSOLE_MAX (1 << 20)    /* GET .../console returns the log's last MiB */

static struct config *cfg;   /* host_facts may open a datastore that appeared */

/* The client's certificate CN: who asked, for the log of changes. */
static void peer_cn(struct evhttp_request *req, char *out, size_t outlen)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    X509 *cert = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
    snprintf(out, outlen, "?");
    if (cert)
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, out, (int)outlen);
    X509_free(cert);
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_HEAD: return "HEAD";
    default: return "other";
    }
}

static void reply_json(struct evhttp_request *req, int code, json_object *o)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        char cn[128];
        peer_cn(req, cn, sizeof(cn));
        json_object *e = NULL;
        json_object_object_get_ex(o, "error", &e);
        agent_log("%s %s by %s: %d%s%s", method_name(m), evhttp_request_get_uri(req), cn, code,
                  e ? " " : "", e ? json_object_get_string(e) : "");
    }

    struct evbuffer *buf = evbuffer_new();
    const char *text =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    evbuffer_add(buf, text, strlen(text));
    evbuffer_add(buf, "\n", 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, NULL, buf);
    evbuffer_free(buf);
    json_object_put(o);
}

static void reply_error(struct evhttp_request *req, int code, const char *msg)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    reply_json(req, code, o);
}

/* A vms_* result: 0 with *out, or a negative errno with the reason. */
static void reply_result(struct evhttp_request *req, int rc, int ok_code, json_object *out,
                         const char *err)
{
    if (rc == 0) {
        reply_json(req, ok_code, out ? out : json_object_new_object());
        return;
    }
    int code;
    switch (-rc) {
    case EINVAL: code = 400; break;
    case ENOENT: code = 404; break;
    /* a duplicate, the VM's power state, or what this host cannot run (now) */
    case EEXIST: case EBUSY: case ENOTSUP: case ENXIO: case ENOMEM: code = 409; break;
    default: code = 500; break;
    }
    reply_error(req, code, err);
}

static void method_not_allowed(struct evhttp_request *req, const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    reply_error(req, 405, "method not allowed");
}

static json_object *request_json(struct evhttp_request *req, char *err, size_t errlen)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = (const char *)evbuffer_pullup(in, -1);
    if (!len) {
        snprintf(err, errlen, "request body: a JSON object is required");
        return NULL;
    }
    return json_parse_strict(body, len, err, errlen);
}

static void console(struct evhttp_request *req, const char *name)
{
    const char *path;
    char err[ERRLEN];
    int rc = vms_console_path(name, &path, err, sizeof(err));
    if (rc < 0) {
        reply_result(req, rc, 0, NULL, err);
        return;
    }
    struct evbuffer *buf = evbuffer_new();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    /* no log yet (never started): an empty console */
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0) {
        off_t off = st.st_size > CONSOLE_MAX ? st.st_size - CONSOLE_MAX : 0;
        if (evbuffer_add_file(buf, fd, off, st.st_size - off) < 0) {
            evbuffer_free(buf);
            reply_error(req, 500, "cannot read the console log");
            return;
        }
    } else if (fd >= 0) {
        close(fd);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, 200, NULL, buf);
    evbuffer_free(buf);
}

/* /v1/vms/{name}/{incoming,incoming/abort,migrate,migration,migration/cancel} */
static bool leg_routes(struct evhttp_request *req, enum evhttp_cmd_type m, const char *name,
                       const char *action)
{
    char err[ERRLEN];
    json_object *out = NULL, *body = NULL;
    int rc, ok = 200;
    bool get = !strcmp(action, "migration");
    bool del = !strcmp(action, "incoming") && m == EVHTTP_REQ_DELETE;
    if (strcmp(action, "incoming") && strcmp(action, "incoming/abort") &&
        strcmp(action, "migrate") && !get && strcmp(action, "migration/cancel"))
        return false;
    if (get ? m != EVHTTP_REQ_GET : m != EVHTTP_REQ_POST && !del) {
        method_not_allowed(req, get ? "GET" : !strcmp(action, "incoming") ? "POST, DELETE" : "POST");
        return true;
    }
    if (get) {
        rc = migrate_status(name, &out, err, sizeof(err));
    } else if (!strcmp(action, "migration/cancel")) {
        rc = migrate_cancel(name, &out, err, sizeof(err));
    } else if (del || !strcmp(action, "incoming/abort")) {
        rc = migrate_abort(name, err, sizeof(err));
    } else if (!(body = request_json(req, err, sizeof(err)))) {
        rc = -EINVAL;
    } else if (!json_object_is_type(body, json_type_object)) {
        snprintf(err, sizeof(err), "request body: a JSON object is required");
        rc = -EINVAL;
    } else if (!strcmp(action, "incoming")) {
        rc = migrate_incoming(name, body, &out, err, sizeof(err));
        ok = 201;
    } else {
        rc = migrate_start(name, body, &out, err, sizeof(err));
        ok = 202;
    }
    json_object_put(body);
    reply_result(req, rc, ok, out, err);
    return true;
}

/* /v1/vms/{name}[/{action}[/{sub}]] */
static void vm_routes(struct evhttp_request *req, enum evhttp_cmd_type m, const char *rest)
{
    char name[128], action[32] = "", err[ERRLEN];
    json_object *out = NULL;
    int n = 0;
    if (sscanf(rest, "%127[^/]%n", name, &n) != 1 ||
        (rest[n] && (rest[n] != '/' || sscanf(rest + n + 1, "%31s", action) != 1 ||
                     strlen(rest + n + 1) != strlen(action)))) {
        reply_error(req, 404, "no such endpoint");
        return;
    }
    if (!action[0]) {
        if (m == EVHTTP_REQ_GET) {
            int rc = vms_get(name, &out, err, sizeof(err));
            reply_result(req, rc, 200, out, err);
        } else if (m == EVHTTP_REQ_DELETE) {
            int rc = vms_delete(name, err, sizeof(err));
            reply_result(req, rc, 200, NULL, err);
        } else {
            method_not_allowed(req, "GET, DELETE");
        }
    } else if (!strcmp(action, "start") || !strcmp(action, "stop")) {
        if (m != EVHTTP_REQ_POST) {
            method_not_allowed(req, "POST");
            return;
        }
        int rc = action[2] == 'a' ? vms_start(name, &out, err, sizeof(err))
                                  : vms_stop(name, &out, err, sizeof(err));
        reply_result(req, rc, 200, out, err);
    } else if (!strcmp(action, "console")) {
        if (m != EVHTTP_REQ_GET)
            method_not_allowed(req, "GET");
        else
            console(req, name);
    } else if (!leg_routes(req, m, name, action)) {
        reply_error(req, 404, "no such endpoint");
    }
}

/* ?dry_run=1 (or true): check, change nothing */
static bool dry_run(struct evhttp_request *req)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq kv;
    if (!query || evhttp_parse_query_str(query, &kv) < 0)
        return false;
    const char *v = evhttp_find_header(&kv, "dry_run");
    bool on = v && (!strcmp(v, "1") || !strcmp(v, "true"));
    evhttp_clear_headers(&kv);
    return on;
}

static void route(struct evhttp_request *req, void *arg)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    char err[ERRLEN];
    if (!path) {
        reply_error(req, 404, "no such endpoint");
    } else if (!strcmp(path, "/v1/host")) {
        if (m != EVHTTP_REQ_GET)
            method_not_allowed(req, "GET");
        else
            reply_json(req, 200, host_facts(cfg));
    } else if (!strcmp(path, "/v1/vms")) {
        if (m == EVHTTP_REQ_GET) {
            reply_json(req, 200, vms_list());
        } else if (m == EVHTTP_REQ_POST) {
            json_object *spec = request_json(req, err, sizeof(err)), *out = NULL;
            bool dry = dry_run(req);
            int rc = spec ? vms_create(spec, dry, &out, err, sizeof(err)) : -EINVAL;
            json_object_put(spec);
            reply_result(req, rc, dry ? 200 : 201, out, err);
        } else {
            method_not_allowed(req, "GET, POST");
        }
    } else if (!strncmp(path, "/v1/vms/", 8)) {
        vm_routes(req, m, path + 8);
    } else {
        reply_error(req, 404, "no such endpoint");
    }
}

void api_register(struct evhttp *http, struct config *c)
{
    cfg = c;
    evhttp_set_max_body_size(http, 1 << 20);
    evhttp_set_gencb(http, route, NULL);
}
