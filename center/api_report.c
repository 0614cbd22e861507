/* What hosts report, across the inventory: datastores (one entry per
 * UUID, shared when several hosts mount it), port groups (by name) and
 * VMs with their host and power state. */
#include <stdio.h>
#include <string.h>

#include <event2/http.h>

#include "center/center.h"

static bool get_only(struct req *q, const char *rest)
{
    if (*rest) {
        reply_error(q, 404, "no such endpoint");
        return false;
    }
    if (q->method != EVHTTP_REQ_GET) {
        evhttp_add_header(evhttp_request_get_output_headers(q->r), "Allow", "GET");
        reply_error(q, 405, "method not allowed (allowed: GET)");
        return false;
    }
    return true;
}

/* Rows sorted by a key in column 0: one object per key with its rows in
 * "hosts" (each made by `member`), "shared" when more than one. */
static json_object *grouped(const struct db_res *r, const char *key,
                            json_object *(*member)(const struct db_res *, int))
{
    json_object *a = json_object_new_array(), *g = NULL, *hosts = NULL;
    for (int i = 0; i < r->nrows; i++) {
        const char *k = db_val(r, i, 0);
        /* an unreadable datastore has no UUID: it matches nothing */
        bool same = g && i > 0 && k[0] && !strcmp(k, db_val(r, i - 1, 0));
        if (!same) {
            g = json_object_new_object();
            hosts = json_object_new_array();
            json_object_object_add(g, key, json_object_new_string(k));
            json_object_object_add(g, "name", json_object_new_string(db_val(r, i, 1)));
            json_object_object_add(g, "hosts", hosts);
            json_object_array_add(a, g);
        }
        json_object_array_add(hosts, member(r, i));
        json_object_object_add(g, "shared", json_object_new_boolean(json_object_array_length(hosts) > 1));
    }
    return a;
}

static json_object *ds_member(const struct db_res *r, int i)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "host", json_object_new_string(db_val(r, i, 2)));
    json_object_object_add(o, "name", json_object_new_string(db_val(r, i, 1)));
    json_object_object_add(o, "path", json_object_new_string(db_val(r, i, 3)));
    json_object_object_add(o, "accessible", json_object_new_boolean(db_int(r, i, 4) != 0));
    json_object_object_add(o, "capacity_bytes", json_object_new_int64(db_int(r, i, 5)));
    json_object_object_add(o, "free_bytes", json_object_new_int64(db_int(r, i, 6)));
    return o;
}

void api_datastores(struct req *q, const char *rest)
{
    char err[ERRLEN];
    struct db_res *r;
    if (!get_only(q, rest))
        return;
    if (DBQ0(q->db, &r, err, "SELECT d.uuid, d.name, h.name, d.path, d.accessible, d.capacity_bytes,"
                             " d.free_bytes FROM datastores d JOIN hosts h ON h.id = d.host_id"
                             " ORDER BY d.uuid, h.name, d.name") < 0)
        return reply_error(q, 500, "%s", err);
    reply_json(q, 200, grouped(r, "uuid", ds_member));
    db_res_free(r);
}

static json_object *net_member(const struct db_res *r, int i)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "host", json_object_new_string(db_val(r, i, 2)));
    json_object_object_add(o, "bridge", json_object_new_string(db_val(r, i, 3)));
    json_object_object_add(o, "bridge_exists", json_object_new_boolean(db_int(r, i, 4) != 0));
    return o;
}

void api_networks(struct req *q, const char *rest)
{
    char err[ERRLEN];
    struct db_res *r;
    if (!get_only(q, rest))
        return;
    /* column 0 is the group key, column 1 the shown name: both the port group */
    if (DBQ0(q->db, &r, err, "SELECT n.name, n.name, h.name, n.bridge, n.bridge_exists FROM networks n"
                             " JOIN hosts h ON h.id = n.host_id ORDER BY n.name, h.name") < 0)
        return reply_error(q, 500, "%s", err);
    json_object *a = grouped(r, "portgroup", net_member);
    reply_json(q, 200, a);
    db_res_free(r);
}

static json_object *vm_json(const struct db_res *r, int i)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_text_or_null(db_val(r, i, 0)));
    json_object_object_add(o, "uuid", json_text_or_null(db_val(r, i, 1)));
    json_object_object_add(o, "host", json_text_or_null(db_val(r, i, 2)));
    json_object_object_add(o, "power_state", json_text_or_null(db_val(r, i, 3)));
    json_object_object_add(o, "updated", json_text_or_null(db_val(r, i, 4)));
    return o;
}

#define VM_SELECT "SELECT v.name, v.uuid, h.name, v.power_state, v.updated FROM vms v" \
    " LEFT JOIN hosts h ON h.id = v.host_id"

void api_vms(struct req *q, const char *rest)
{
    char err[ERRLEN], name[64];
    struct db_res *r;
    const char *slash = strchr(rest, '/');
    if (slash && !strcmp(slash, "/checks") && slash - rest < (long)sizeof(name)) {
        snprintf(name, sizeof(name), "%.*s", (int)(slash - rest), rest);
        return api_vm_checks(q, name);
    }
    if (slash && !strcmp(slash, "/migrate"))
        return api_vm_migrate(q, rest);
    if (q->method != EVHTTP_REQ_GET || slash)   /* create, power, delete */
        return api_vm_ops(q, rest);
    if (*rest) {
        if (DBQ(q->db, &r, err, VM_SELECT " WHERE v.name = ?", rest) < 0)
            return reply_error(q, 500, "%s", err);
        if (r->nrows)
            reply_json(q, 200, vm_json(r, 0));
        else
            reply_error(q, 404, "no VM named '%.64s'", rest);
        db_res_free(r);
        return;
    }
    if (DBQ0(q->db, &r, err, VM_SELECT " ORDER BY v.name") < 0)
        return reply_error(q, 500, "%s", err);
    json_object *a = json_object_new_array();
    for (int i = 0; i < r->nrows; i++)
        json_object_array_add(a, vm_json(r, i));
    db_res_free(r);
    reply_json(q, 200, a);
}
