/* POST /v1/vms/NAME/migrate {"host", "priority"}: compute migration
 * (vMotion), or a cold move of a powered-off VM. The pre-migration checks
 * run first (center/checks.c): an
 * error refuses the request with the whole report (409), warnings go with
 * the 202 and its vm.migrate task (center/migrate.c runs it). */
#include <stdio.h>
#include <string.h>

#include <event2/http.h>

#include "center/center.h"
#include "center/checks.h"

/* The findings of one level. */
static json_object *level_of(json_object *report, const char *level)
{
    json_object *a = json_object_new_array(), *l;
    for (size_t i = 0; i < json_object_array_length(report); i++) {
        json_object *c = json_object_array_get_idx(report, i);
        if (json_object_object_get_ex(c, "level", &l) && !strcmp(json_object_get_string(l), level))
            json_object_array_add(a, json_object_get(c));
    }
    return a;
}

/* The VM's datastores (UUIDs, as on its source host) for the admission
 * limit per datastore; none when the manager holds no spec for it. */
static int vm_datastores(struct db *db, const char *vm, json_object *out, char *err, size_t errlen)
{
    struct db_res *r, *d;
    json_object *spec = NULL, *disks = NULL, *ds;
    if (DBQ(db, &r, err, "SELECT v.spec, v.host_id FROM vms v WHERE v.name = ?", vm) < 0)
        return -1;
    if (r->nrows && db_val(r, 0, 0))
        spec = json_tokener_parse(db_val(r, 0, 0));
    json_object_object_get_ex(spec, "disks", &disks);
    for (size_t i = 0; json_object_is_type(disks, json_type_array) && i < json_object_array_length(disks); i++) {
        if (!json_object_object_get_ex(json_object_array_get_idx(disks, i), "datastore", &ds) ||
            DBQ(db, &d, err, "SELECT uuid FROM datastores WHERE host_id = ? AND name = ?",
                db_val(r, 0, 1), json_object_get_string(ds)) < 0)
            continue;
        if (d->nrows && db_val(d, 0, 0)[0])
            json_object_array_add(out, json_object_new_string(db_val(d, 0, 0)));
        db_res_free(d);
    }
    json_object_put(spec);
    db_res_free(r);
    return 0;
}

void api_vm_migrate(struct req *q, const char *rest)
{
    char err[ERRLEN], ids[24], vm[64];
    size_t len = strcspn(rest, "/");
    if (len >= sizeof(vm))
        return reply_error(q, 404, "no VM named '%.64s...'", rest);
    snprintf(vm, sizeof(vm), "%.*s", (int)len, rest);
    static const char *const fields[] = { "host", "priority", NULL };
    const char *dst, *prio = NULL;
    struct db_res *r;
    if (q->method != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(q->r), "Allow", "POST");
        return reply_error(q, 405, "method not allowed (allowed: POST)");
    }
    if (json_only(q->body, fields, err, sizeof(err)) < 0 ||
        json_str(q->body, "host", true, &dst, err, sizeof(err)) < 0 ||
        json_str(q->body, "priority", false, &prio, err, sizeof(err)) < 0)
        return reply_error(q, 400, "%s", err);
    if (prio && strcmp(prio, "high") && strcmp(prio, "normal"))
        return reply_error(q, 400, "field 'priority': '%.16s' is neither high nor normal", prio);
    if (DBQ(q->db, &r, err, "SELECT h.name, v.power_state FROM vms v LEFT JOIN hosts h ON h.id = v.host_id"
                            " WHERE v.name = ?", vm) < 0)
        return reply_error(q, 500, "%s", err);
    char src[64] = "";
    int found = r->nrows;
    bool cold = found && db_val(r, 0, 1) && !strcmp(db_val(r, 0, 1), "stopped");
    if (found && db_val(r, 0, 0))
        snprintf(src, sizeof(src), "%s", db_val(r, 0, 0));
    db_res_free(r);
    if (!found)
        return reply_error(q, 404, "no VM named '%.64s'", vm);
    if (DBQ(q->db, &r, err, "SELECT 1 FROM hosts WHERE name = ?", dst) < 0)
        return reply_error(q, 500, "%s", err);
    found = r->nrows;
    db_res_free(r);
    if (!found)
        return reply_error(q, 404, "no host named '%.64s'", dst);
    if (DBQ(q->db, &r, err, "SELECT id FROM tasks WHERE kind = 'vm.migrate' AND target = ?"
                            " AND state IN ('queued', 'running')", vm) < 0)
        return reply_error(q, 500, "%s", err);
    long long busy = r->nrows ? db_int(r, 0, 0) : 0;
    db_res_free(r);
    if (busy)
        return reply_error(q, 409, "VM %s is being migrated already (task %lld)", vm, busy);

    json_object *report = json_object_new_array();
    int errors = checks_migrate(q->db, vm, dst, report, err, sizeof(err));
    if (errors != 0) {
        if (errors < 0) {
            json_object_put(report);
            return reply_error(q, 500, "%s", err);
        }
        json_object *o = json_object_new_object(), *errs = level_of(report, "error"), *why;
        json_object_object_get_ex(json_object_array_get_idx(errs, 0), "reason", &why);
        char msg[600];
        snprintf(msg, sizeof(msg), "pre-migration checks failed: %s%s", json_object_get_string(why),
                 errors > 1 ? " (and more: see checks)" : "");
        json_object_object_add(o, "error", json_object_new_string(msg));
        json_object_object_add(o, "checks", report);
        json_object_put(errs);
        return reply_json(q, 409, o);
    }
    json_object *params = json_object_new_object(), *dss = json_object_new_array();
    json_object_object_add(params, "host", json_object_new_string(dst));
    json_object_object_add(params, "priority", json_object_new_string(prio ? prio : "normal"));
    json_object_object_add(params, "source", json_object_new_string(src));
    json_object_object_add(params, "datastores", dss);
    if (cold)   /* powered off: no live migration (center/migrate.c, cold_move) */
        json_object_object_add(params, "cold", json_object_new_boolean(1));
    long long id = vm_datastores(q->db, vm, dss, err, sizeof(err)) < 0 ? -1
                   : task_create(q->db, "vm.migrate", vm, params, q->who, err, sizeof(err));
    json_object_put(params);
    if (id < 0) {
        json_object_put(report);
        return reply_error(q, 500, "%s", err);
    }
    tasks_kick();
    fmt_ll(ids, id);
    if (DBQ(q->db, &r, err, "SELECT " TASK_COLS " FROM tasks WHERE id = ?", ids) < 0) {
        json_object_put(report);
        return reply_error(q, 500, "%s", err);
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "task", task_row_json(r, 0));
    json_object_object_add(o, "warnings", level_of(report, "warning"));
    db_res_free(r);
    json_object_put(report);
    evhttp_add_header(evhttp_request_get_output_headers(q->r), "Location", "/v1/tasks");
    reply_json(q, 202, o);
}
