/* Admission of migrations (docs/center.md, "Admission"): at most 4 at once
 * per host whose migration link is labelled under 10 Gbit/s, 8 from 10
 * Gbit/s, 128 per datastore. A task over a limit stays queued; the claim
 * (tasks.c) takes the next one that fits. */
#include <string.h>

#include "center/center.h"

#define DATASTORE_LIMIT 128

int admission_host_limit(int speed_mbps)
{
    return speed_mbps >= 10000 ? 8 : 4;
}

int host_migration_mbps(struct db *db, const char *host)
{
    char err[ERRLEN];
    struct db_res *r;
    json_object *facts = NULL, *migs, *speed;
    if (DBQ(db, &r, err, "SELECT facts FROM hosts WHERE name = ?", host) < 0)
        return 0;
    if (r->nrows && db_val(r, 0, 0))
        facts = json_tokener_parse(db_val(r, 0, 0));
    db_res_free(r);
    int mbps = 0;
    if (json_object_object_get_ex(facts, "migration_interfaces", &migs) &&
        json_object_array_length(migs) > 0 &&
        json_object_object_get_ex(json_object_array_get_idx(migs, 0), "speed_mbps", &speed))
        mbps = json_object_get_int(speed);
    json_object_put(facts);
    return mbps;
}

json_object *admission_running(struct db *db, char *err, size_t errlen)
{
    struct db_res *r;
    if (db_exec(db, "SELECT params FROM tasks WHERE state = 'running' AND kind = 'vm.migrate'", 0,
                NULL, &r, err, errlen) < 0)
        return NULL;
    json_object *a = json_object_new_array();
    for (int i = 0; i < r->nrows; i++) {
        json_object *p = json_tokener_parse(db_val(r, i, 0));
        if (p)
            json_object_array_add(a, p);
    }
    db_res_free(r);
    return a;
}

static bool str_is(json_object *o, const char *key, const char *want)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && !strcmp(json_object_get_string(v), want);
}

static bool has_datastore(json_object *params, const char *uuid)
{
    json_object *a;
    if (!json_object_object_get_ex(params, "datastores", &a) || !json_object_is_type(a, json_type_array))
        return false;
    for (size_t i = 0; i < json_object_array_length(a); i++)
        if (!strcmp(json_object_get_string(json_object_array_get_idx(a, i)), uuid))
            return true;
    return false;
}

bool admission_admit(struct db *db, json_object *running, json_object *params)
{
    static const char *const ends[] = { "source", "host" };
    size_t n = json_object_array_length(running);
    json_object *v, *dss;
    for (int e = 0; e < 2; e++) {
        if (!json_object_object_get_ex(params, ends[e], &v))
            continue;
        const char *host = json_object_get_string(v);
        int busy = 0;
        for (size_t i = 0; i < n; i++) {
            json_object *p = json_object_array_get_idx(running, i);
            busy += str_is(p, "source", host) || str_is(p, "host", host);
        }
        if (busy >= admission_host_limit(host_migration_mbps(db, host)))
            return false;
    }
    if (!json_object_object_get_ex(params, "datastores", &dss) || !json_object_is_type(dss, json_type_array))
        return true;
    for (size_t d = 0; d < json_object_array_length(dss); d++) {
        const char *uuid = json_object_get_string(json_object_array_get_idx(dss, d));
        int busy = 0;
        for (size_t i = 0; i < n; i++)
            busy += has_datastore(json_object_array_get_idx(running, i), uuid);
        if (busy >= DATASTORE_LIMIT)
            return false;
    }
    return true;
}
