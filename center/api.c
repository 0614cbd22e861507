/* The manager's HTTP front (docs/center-openapi.yaml): HTTPS through
 * evhttp, bearer-token authentication, role check, body parsing, routing.
 * Every error is {"error": "one line"}; a refused request changes nothing
 * because the check happens before any handler runs. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "center/center.h"

static struct db *api_db;

static const char *method_name(int m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "other";
    }
}

void reply_json(struct req *q, int code, json_object *o)
{
    /* changes and refusals are logged with who asked */
    if (q->method != EVHTTP_REQ_GET || code >= 400) {
        json_object *e = NULL;
        json_object_object_get_ex(o, "error", &e);
        center_log("%s %s by %s: %d%s%s", method_name(q->method), evhttp_request_get_uri(q->r),
                   q->who[0] ? q->who : "?", code, e ? " " : "", e ? json_object_get_string(e) : "");
    }
    struct evbuffer *buf = evbuffer_new();
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    evbuffer_add(buf, text, strlen(text));
    evbuffer_add(buf, "\n", 1);
    evhttp_add_header(evhttp_request_get_output_headers(q->r), "Content-Type", "application/json");
    evhttp_send_reply(q->r, code, NULL, buf);
    evbuffer_free(buf);
    json_object_put(o);
}

void reply_error(struct req *q, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    if (code == 401)
        evhttp_add_header(evhttp_request_get_output_headers(q->r), "WWW-Authenticate", "Bearer");
    reply_json(q, code, o);
}

void reply_task(struct req *q, long long id)
{
    char err[ERRLEN], ids[24];
    struct db_res *r;
    tasks_kick();
    fmt_ll(ids, id);
    if (DBQ(q->db, &r, err, "SELECT " TASK_COLS " FROM tasks WHERE id = ?", ids) < 0)
        return reply_error(q, 500, "%s", err);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "task", task_row_json(r, 0));
    db_res_free(r);
    evhttp_add_header(evhttp_request_get_output_headers(q->r), "Location", "/v1/tasks");
    reply_json(q, 202, o);
}

const char *query_param(struct req *q, const char *key, char *out, size_t outlen)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(q->r));
    struct evkeyvalq kv;
    if (!query || evhttp_parse_query_str(query, &kv) < 0)
        return NULL;
    const char *v = evhttp_find_header(&kv, key);
    if (v)
        snprintf(out, outlen, "%s", v);
    evhttp_clear_headers(&kv);
    return v ? out : NULL;
}

/* "Authorization: Bearer TOKEN" -> q->role; else a 401 was sent. */
static bool authenticate(struct req *q)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(q->r), "Authorization");
    if (!h) {
        reply_error(q, 401, "authentication required: send Authorization: Bearer TOKEN");
        return false;
    }
    if (strncasecmp(h, "Bearer ", 7) || !h[7]) {
        reply_error(q, 401, "the Authorization header is not 'Bearer TOKEN'");
        return false;
    }
    long long id = 0;
    q->role = token_role(q->db, h + 7, &id);
    if (!q->role) {
        reply_error(q, 401, "invalid token");
        return false;
    }
    snprintf(q->who, sizeof(q->who), "token:%lld", id);
    return true;
}

static bool parse_body(struct req *q)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(q->r);
    size_t len = evbuffer_get_length(in);
    char err[ERRLEN];
    if (!len) {   /* an action without parameters (POST .../cancel) */
        q->body = json_object_new_object();
        return true;
    }
    const char *text = (const char *)evbuffer_pullup(in, -1);
    char *copy = strndup(text, len);   /* the tokenizer wants no NULs inside */
    if (!copy || strlen(copy) != len) {
        free(copy);
        reply_error(q, 400, "malformed JSON: the body holds a NUL byte");
        return false;
    }
    q->body = json_parse_object(copy, len, err, sizeof(err));
    free(copy);
    if (!q->body) {
        reply_error(q, 400, "%s", err);
        return false;
    }
    return true;
}

static const struct route {
    const char *prefix;
    void (*fn)(struct req *q, const char *rest);
    bool open;   /* no bearer token: the enrolment token in the body is the credential */
} routes[] = {
    { "/v1/enrol", api_enrol, true },
    { "/v1/clusters", api_clusters, false },
    { "/v1/hosts", api_hosts, false },
    { "/v1/enrolments", api_enrolments, false },
    { "/v1/tasks", api_tasks, false },
    { "/v1/events", api_events, false },
    { "/v1/datastores", api_datastores, false },
    { "/v1/networks", api_networks, false },
    { "/v1/vms", api_vms, false },
    { "/v1/tokens", api_tokens, false },
};

static void route(struct evhttp_request *r, void *arg)
{
    struct req q = { .r = r, .db = api_db, .method = (int)evhttp_request_get_command(r) };
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(r));
    const struct route *rt = NULL;
    size_t pl = 0;
    for (size_t i = 0; path && i < sizeof(routes) / sizeof(routes[0]); i++) {
        pl = strlen(routes[i].prefix);
        if (!strncmp(path, routes[i].prefix, pl) && (path[pl] == '\0' || path[pl] == '/')) {
            rt = &routes[i];
            break;
        }
    }
    /* authentication first: without a token even a wrong path is a 401 */
    if (!(rt && rt->open) && !authenticate(&q))
        return;
    if (!rt) {
        reply_error(&q, 404, "no such endpoint: %s", path ? path : "?");
        return;
    }
    bool change = q.method != EVHTTP_REQ_GET && q.method != EVHTTP_REQ_HEAD;
    if (change && !rt->open && strcmp(q.role, "admin")) {
        reply_error(&q, 403, "this token is %s: changes need an admin token", q.role);
        return;
    }
    if ((q.method == EVHTTP_REQ_POST || q.method == EVHTTP_REQ_PUT) && !parse_body(&q))
        return;
    const char *rest = path + pl + (path[pl] == '/');
    rt->fn(&q, rest);
    json_object_put(q.body);
}

void api_register(struct evhttp *http, struct db *db)
{
    api_db = db;
    evhttp_set_max_body_size(http, 1 << 20);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE |
                                     EVHTTP_REQ_PUT | EVHTTP_REQ_PATCH | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(http, route, NULL);
}
