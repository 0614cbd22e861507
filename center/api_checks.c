/* POST /v1/vms/NAME/checks {"host": DST}: the pre-migration checks
 * (center/checks.c) without migrating, so an operator can ask before
 * moving a VM. 200 {"errors": N, "report": [...]}; nothing changes. */
#include <stdio.h>
#include <string.h>

#include <event2/http.h>

#include "center/center.h"
#include "center/checks.h"

void api_vm_checks(struct req *q, const char *vm)
{
    static const char *const fields[] = { "host", NULL };
    char err[ERRLEN];
    const char *dst;
    struct db_res *r;
    if (q->method != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(q->r), "Allow", "POST");
        return reply_error(q, 405, "method not allowed (allowed: POST)");
    }
    if (json_only(q->body, fields, err, sizeof(err)) < 0 ||
        json_str(q->body, "host", true, &dst, err, sizeof(err)) < 0)
        return reply_error(q, 400, "%s", err);
    if (DBQ(q->db, &r, err, "SELECT (SELECT COUNT(*) FROM vms WHERE name = ?),"
                            " (SELECT COUNT(*) FROM hosts WHERE name = ?)", vm, dst) < 0)
        return reply_error(q, 500, "%s", err);
    bool vm_known = db_int(r, 0, 0), host_known = db_int(r, 0, 1);
    db_res_free(r);
    if (!vm_known || !host_known)
        return reply_error(q, 404, !vm_known ? "no VM named '%.64s'" : "no host named '%.64s'",
                           !vm_known ? vm : dst);
    json_object *report = json_object_new_array();
    int n = checks_migrate(q->db, vm, dst, report, err, sizeof(err));
    if (n < 0) {
        json_object_put(report);
        return reply_error(q, 500, "%s", err);
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "errors", json_object_new_int(n));
    json_object_object_add(o, "report", report);
    reply_json(q, 200, o);
}
