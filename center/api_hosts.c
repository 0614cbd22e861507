/* Hosts, tasks, events and what hosts report (datastores, port groups,
 * VMs). Adding a host is a task: the reply is 202 with the task to watch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "center/center.h"

static void not_allowed(struct req *q, const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(q->r), "Allow", allow);
    reply_error(q, 405, "method not allowed (allowed: %s)", allow);
}

/* ?limit=N (1..1000, default 100) */
static bool limit_param(struct req *q, char out[16])
{
    char v[32];
    snprintf(out, 16, "100");
    if (!query_param(q, "limit", v, sizeof(v)))
        return true;
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || !v[0] || n < 1 || n > 1000) {
        reply_error(q, 400, "limit: '%.16s' is not a number from 1 to 1000", v);
        return false;
    }
    snprintf(out, 16, "%ld", n);
    return true;
}

#define HOST_SELECT "SELECT h.name, h.address, c.name, h.state, h.error, h.added, h.updated, h.facts" \
    " FROM hosts h JOIN clusters c ON c.id = h.cluster_id"

static json_object *host_json(const struct db_res *r, int i, bool facts)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_text_or_null(db_val(r, i, 0)));
    json_object_object_add(o, "address", json_text_or_null(db_val(r, i, 1)));
    json_object_object_add(o, "cluster", json_text_or_null(db_val(r, i, 2)));
    json_object_object_add(o, "state", json_text_or_null(db_val(r, i, 3)));
    json_object_object_add(o, "error", json_text_or_null(db_val(r, i, 4)));
    json_object_object_add(o, "added", json_text_or_null(db_val(r, i, 5)));
    json_object_object_add(o, "updated", json_text_or_null(db_val(r, i, 6)));
    if (facts)
        json_object_object_add(o, "facts", json_parsed_or_null(db_val(r, i, 7)));
    return o;
}

/* POST /v1/hosts {"address", "cluster", "enrolment_token"} */
static void host_add(struct req *q)
{
    char err[ERRLEN], hash[65], now[40];
    static const char *const fields[] = { "address", "cluster", "enrolment_token", NULL };
    const char *addr, *cluster, *tok;
    struct db_res *r = NULL;
    if (json_only(q->body, fields, err, sizeof(err)) < 0 ||
        json_str(q->body, "address", true, &addr, err, sizeof(err)) < 0 ||
        json_str(q->body, "cluster", true, &cluster, err, sizeof(err)) < 0 ||
        json_str(q->body, "enrolment_token", true, &tok, err, sizeof(err)) < 0)
        return reply_error(q, 400, "%s", err);
    if (!address_valid(addr))
        return reply_error(q, 400, "field 'address': '%.64s' is not HOST:PORT", addr);
    sha256_hex(tok, hash);
    now_iso(now);
    if (db_begin(q->db, err, sizeof(err)) < 0)
        return reply_error(q, 500, "%s", err);
    int code = 500;
    if (DBQ(q->db, &r, err, "SELECT id FROM clusters WHERE name = ?", cluster) < 0)
        goto fail;
    if (!r->nrows) {
        code = 404;
        snprintf(err, sizeof(err), "no cluster named '%.64s'", cluster);
        goto fail;
    }
    char cid[24];
    snprintf(cid, sizeof(cid), "%s", db_val(r, 0, 0));
    db_res_free(r);
    /* the token names the host: consume it, or say why it cannot be */
    if (DBQ(q->db, &r, err, "UPDATE enrolments SET used = ? WHERE token_hash = ? AND used IS NULL"
                            " AND redeemed IS NOT NULL RETURNING host_name", now, hash) < 0)
        goto fail;
    if (r->nrows != 1) {
        db_res_free(r);
        r = NULL;
        code = 400;
        if (DBQ(q->db, &r, err, "SELECT redeemed, used FROM enrolments WHERE token_hash = ?", hash) < 0)
            goto fail;
        snprintf(err, sizeof(err), "%s", !r->nrows ? "field 'enrolment_token': unknown token"
                 : !db_val(r, 0, 0) ? "field 'enrolment_token': the host has not fetched its"
                                      " certificate yet (POST /v1/enrol on the host, docs/center.md)"
                 : "field 'enrolment_token': already used to add a host");
        goto fail;
    }
    char name[64];
    snprintf(name, sizeof(name), "%s", db_val(r, 0, 0));
    db_res_free(r);
    r = NULL;
    int rc = DBQ(q->db, NULL, err, "INSERT INTO hosts (name, address, cluster_id, state, added, updated)"
                                   " VALUES (?, ?, ?, 'adding', ?, ?)", name, addr, cid, now, now);
    if (rc < 0) {
        code = rc == -2 ? 409 : 500;
        if (rc == -2)
            snprintf(err, sizeof(err), "a host named '%s' is in the inventory already", name);
        goto fail;
    }
    json_object *params = json_object_new_object();
    json_object_object_add(params, "host", json_object_new_string(name));
    json_object_object_add(params, "address", json_object_new_string(addr));
    long long id = task_create(q->db, "host.add", name, params, q->who, err, sizeof(err));
    json_object_put(params);
    if (id < 0 || db_commit(q->db, err, sizeof(err)) < 0)
        goto fail;
    return reply_task(q, id);
fail:
    db_res_free(r);
    db_rollback(q->db);
    reply_error(q, code, "%s", err);
}

/* POST /v1/hosts/NAME/refresh: a host.refresh task */
static void host_refresh(struct req *q, const char *name)
{
    char err[ERRLEN];
    struct db_res *r;
    if (q->method != EVHTTP_REQ_POST)
        return not_allowed(q, "POST");
    if (json_object_object_length(q->body))
        return reply_error(q, 400, "refresh takes no parameters");
    if (DBQ(q->db, &r, err, "SELECT address, state FROM hosts WHERE name = ?", name) < 0)
        return reply_error(q, 500, "%s", err);
    if (!r->nrows || !strcmp(db_val(r, 0, 1), "adding")) {
        reply_error(q, !r->nrows ? 404 : 409, !r->nrows ? "no host named '%.64s'"
                                                        : "host %.64s is being added", name);
        db_res_free(r);
        return;
    }
    json_object *params = json_object_new_object();
    json_object_object_add(params, "host", json_object_new_string(name));
    json_object_object_add(params, "address", json_object_new_string(db_val(r, 0, 0)));
    db_res_free(r);
    long long id = task_create(q->db, "host.refresh", name, params, q->who, err, sizeof(err));
    json_object_put(params);
    if (id < 0)
        return reply_error(q, 500, "%s", err);
    reply_task(q, id);
}

void api_hosts(struct req *q, const char *rest)
{
    char err[ERRLEN];
    struct db_res *r;
    const char *slash = strchr(rest, '/');
    if (slash && !strcmp(slash, "/refresh")) {
        char name[64];
        if (slash - rest >= (long)sizeof(name))
            return reply_error(q, 404, "no host named '%.64s'", rest);
        snprintf(name, sizeof(name), "%.*s", (int)(slash - rest), rest);
        return host_refresh(q, name);
    }
    if (slash)
        return reply_error(q, 404, "no such endpoint");
    if (*rest) {
        if (q->method != EVHTTP_REQ_GET)
            return not_allowed(q, "GET");
        if (DBQ(q->db, &r, err, HOST_SELECT " WHERE h.name = ?", rest) < 0)
            return reply_error(q, 500, "%s", err);
        if (r->nrows)
            reply_json(q, 200, host_json(r, 0, true));
        else
            reply_error(q, 404, "no host named '%.64s'", rest);
        db_res_free(r);
        return;
    }
    if (q->method == EVHTTP_REQ_POST)
        return host_add(q);
    if (q->method != EVHTTP_REQ_GET)
        return not_allowed(q, "GET, POST");
    if (DBQ0(q->db, &r, err, HOST_SELECT " ORDER BY h.name") < 0)
        return reply_error(q, 500, "%s", err);
    json_object *a = json_object_new_array();
    for (int i = 0; i < r->nrows; i++)
        json_object_array_add(a, host_json(r, i, false));
    db_res_free(r);
    reply_json(q, 200, a);
}

static const char *const task_states[] = { "queued", "running", "success", "error", "cancelled", NULL };

void api_tasks(struct req *q, const char *rest)
{
    char err[ERRLEN], lim[16], state[32], ids[24];
    struct db_res *r;
    if (!*rest) {
        if (q->method != EVHTTP_REQ_GET)
            return not_allowed(q, "GET");
        if (!limit_param(q, lim))
            return;
        int rc;
        if (query_param(q, "state", state, sizeof(state))) {
            bool ok = false;
            for (const char *const *s = task_states; *s; s++)
                ok |= !strcmp(*s, state);
            if (!ok)
                return reply_error(q, 400, "state: '%.16s' is not queued, running, success, error"
                                           " or cancelled", state);
            rc = DBQ(q->db, &r, err, "SELECT " TASK_COLS " FROM tasks WHERE state = ?"
                                     " ORDER BY id DESC LIMIT ?", state, lim);
        } else {
            rc = DBQ(q->db, &r, err, "SELECT " TASK_COLS " FROM tasks ORDER BY id DESC LIMIT ?", lim);
        }
        if (rc < 0)
            return reply_error(q, 500, "%s", err);
        json_object *a = json_object_new_array();
        for (int i = 0; i < r->nrows; i++)
            json_object_array_add(a, task_row_json(r, i));
        db_res_free(r);
        return reply_json(q, 200, a);
    }
    char *end;
    long long id = strtoll(rest, &end, 10);
    if (id <= 0 || (*end && strcmp(end, "/cancel")))
        return reply_error(q, 404, "no such endpoint (tasks are /v1/tasks/ID[/cancel])");
    if (*end) {
        if (q->method != EVHTTP_REQ_POST)
            return not_allowed(q, "POST");
        json_object *out = NULL;
        if (json_object_object_length(q->body))
            return reply_error(q, 400, "cancel takes no parameters");
        int code = task_cancel(q->db, id, &out, err, sizeof(err));
        return code == 200 ? reply_json(q, 200, out) : reply_error(q, code, "%s", err);
    }
    if (q->method != EVHTTP_REQ_GET)
        return not_allowed(q, "GET");
    fmt_ll(ids, id);
    if (DBQ(q->db, &r, err, "SELECT " TASK_COLS " FROM tasks WHERE id = ?", ids) < 0)
        return reply_error(q, 500, "%s", err);
    if (r->nrows)
        reply_json(q, 200, task_row_json(r, 0));
    else
        reply_error(q, 404, "no task %lld", id);
    db_res_free(r);
}

/* GET /v1/events?since=ID&limit=N: oldest first, after event ID. */
void api_events(struct req *q, const char *rest)
{
    char err[ERRLEN], lim[16], since[32] = "0";
    struct db_res *r;
    if (*rest)
        return reply_error(q, 404, "no such endpoint");
    if (q->method != EVHTTP_REQ_GET)
        return not_allowed(q, "GET");
    if (!limit_param(q, lim))
        return;
    if (query_param(q, "since", since, sizeof(since)) &&
        (strspn(since, "0123456789") != strlen(since) || !since[0] || strlen(since) > 18))
        return reply_error(q, 400, "since: '%.16s' is not an event id", since);
    if (DBQ(q->db, &r, err, "SELECT " EVENT_COLS " FROM events WHERE id > ? ORDER BY id LIMIT ?",
            since, lim) < 0)
        return reply_error(q, 500, "%s", err);
    json_object *a = json_object_new_array();
    for (int i = 0; i < r->nrows; i++)
        json_object_array_add(a, event_row_json(r, i));
    db_res_free(r);
    reply_json(q, 200, a);
}
