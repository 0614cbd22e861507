/* Hosts: enrolment (the manager is the CA of its hosts and issues their
 * identities) and the host.add task, which reads a host's facts from its
 * ferryd and records them: datastores, port groups and VMs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "center/center.h"
#include "common/tls.h"

int host_enrol_issue(const char *name, json_object **out, char *err, size_t errlen)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof(dir), "%s/hosts/%s", cfg.state_dir, name);
    if (tls_issue(cfg.tls_dir, dir, name, TLS_DEFAULT_DAYS, err, errlen) < 0)
        return -1;
    static const char *const files[][2] = { { "ca.pem", "ca_pem" }, { "cert.pem", "cert_pem" },
                                            { "key.pem", "key_pem" } };
    *out = json_object_new_object();
    json_object_object_add(*out, "host_name", json_object_new_string(name));
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i][0]);
        char *text = read_text(path, 1 << 16);
        if (!text) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            json_object_put(*out);
            return -1;
        }
        json_object_object_add(*out, files[i][1], json_object_new_string(text));
        free(text);
    }
    /* the host's private key leaves with the reply; the manager keeps only
     * the certificate it issued */
    snprintf(path, sizeof(path), "%s/key.pem", dir);
    unlink(path);
    return 0;
}

/* Record one VM the host reports, with its spec (what the pre-migration
 * checks read). A VM known on another host (same name or UUID) is not
 * moved here: that is for the migration reconciler to decide; the conflict
 * becomes a warning event. */
static int store_vm(struct db *db, const char *hid, const char *host, json_object *vm, const char *now,
                    char *err, size_t errlen)
{
    const char *name = jstr(vm, "name"), *uuid = jstr(vm, "uuid"), *state = jstr(vm, "state");
    json_object *spec = NULL;
    json_object_object_get_ex(vm, "spec", &spec);
    const char *stext = spec ? json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PLAIN) : NULL;
    struct db_res *r;
    if (DBQN(db, &r, err, errlen, "SELECT id, host_id, name, uuid FROM vms WHERE name = ? OR uuid = ?",
             name, uuid) < 0)
        return -1;
    int rc = 0;
    if (r->nrows == 0) {
        rc = DBQN(db, NULL, err, errlen, "INSERT INTO vms (name, uuid, host_id, power_state, spec, updated)"
                                        " VALUES (?, ?, ?, ?, ?, ?)", name, uuid, hid, state, stext, now);
    } else if (r->nrows == 1 && !strcmp(db_val(r, 0, 2), name) && !strcmp(db_val(r, 0, 3), uuid) &&
               (!db_val(r, 0, 1) || !strcmp(db_val(r, 0, 1), hid))) {
        rc = DBQN(db, NULL, err, errlen, "UPDATE vms SET host_id = ?, power_state = ?, spec = ?, updated = ?"
                                        " WHERE id = ?", hid, state, stext, now, db_val(r, 0, 0));
    } else {
        inv_event(db, "warning", "vm.conflict", host, 0,
                  "host %s reports VM %s (%s), which conflicts with a VM already in the inventory",
                  host, name, uuid);
    }
    db_res_free(r);
    return rc < 0 ? -1 : 0;
}

/* A host lacking a feature of its cluster's CPU baseline cannot join
 * (err names the features; also a database failure). */
static bool baseline_refuses(struct db *db, const char *host, const char *cid, json_object *facts,
                             char *err, size_t errlen)
{
    char cluster[64], missing[1024];
    json_object *baseline;
    if (baseline_lock(db, cid, cluster, sizeof(cluster), &baseline, err, errlen) < 0)
        return true;
    int n = baseline ? features_missing(baseline, facts, missing, sizeof(missing)) : 0;
    json_object_put(baseline);
    if (n)
        snprintf(err, errlen, "host %s lacks %d CPU feature%s of cluster %s's baseline: %.300s", host, n,
                 n == 1 ? "" : "s", cluster, missing);
    return n != 0;
}

/* The host's facts into the inventory, in one transaction: for an add
 * (the host is 'adding') or a refresh (it is in the inventory). */
static int store_facts(struct db *db, const char *host, json_object *facts, json_object *vms,
                       bool add, char *err, size_t errlen)
{
    char now[40], hid[24], cid[24], a[24], b[24];
    struct db_res *r;
    now_iso(now);
    if (db_begin(db, err, errlen) < 0)
        return -1;
    const char *ftext = json_object_to_json_string_ext(facts, JSON_C_TO_STRING_PLAIN);
    if ((add ? DBQN(db, &r, err, errlen, "UPDATE hosts SET state = 'connected', facts = ?, error = NULL,"
                                        " updated = ? WHERE name = ? AND state = 'adding'"
                                        " RETURNING id, cluster_id", ftext, now, host)
             : DBQN(db, &r, err, errlen, "UPDATE hosts SET state = 'connected', facts = ?, error = NULL,"
                                        " updated = ? WHERE name = ? AND state <> 'adding'"
                                        " RETURNING id, cluster_id", ftext, now, host)) < 0)
        goto fail;
    if (r->nrows != 1) {
        db_res_free(r);
        snprintf(err, errlen, "host %s was removed meanwhile", host);
        goto fail;
    }
    snprintf(hid, sizeof(hid), "%s", db_val(r, 0, 0));
    snprintf(cid, sizeof(cid), "%s", db_val(r, 0, 1));
    db_res_free(r);
    if (add && baseline_refuses(db, host, cid, facts, err, errlen))
        goto fail;
    if (DBQN(db, NULL, err, errlen, "DELETE FROM datastores WHERE host_id = ?", hid) < 0 ||
        DBQN(db, NULL, err, errlen, "DELETE FROM networks WHERE host_id = ?", hid) < 0)
        goto fail;
    json_object *ds = jarr(facts, "datastores"), *nets = jarr(facts, "networks");
    for (size_t i = 0; ds && i < json_object_array_length(ds); i++) {
        json_object *d = json_object_array_get_idx(ds, i), *acc;
        json_object_object_get_ex(d, "accessible", &acc);
        fmt_ll(a, jint(d, "capacity_bytes"));
        fmt_ll(b, jint(d, "free_bytes"));
        if (DBQN(db, NULL, err, errlen, "INSERT INTO datastores (host_id, name, uuid, path, accessible,"
                                       " capacity_bytes, free_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                hid, jstr(d, "name"), jstr(d, "uuid"), jstr(d, "path"),
                json_object_get_boolean(acc) ? "1" : "0", a, b) < 0)
            goto fail;
    }
    for (size_t i = 0; nets && i < json_object_array_length(nets); i++) {
        json_object *n = json_object_array_get_idx(nets, i), *ex;
        json_object_object_get_ex(n, "bridge_exists", &ex);
        if (DBQN(db, NULL, err, errlen, "INSERT INTO networks (host_id, name, bridge, bridge_exists)"
                                       " VALUES (?, ?, ?, ?)",
                hid, jstr(n, "name"), jstr(n, "bridge"), json_object_get_boolean(ex) ? "1" : "0") < 0)
            goto fail;
    }
    for (size_t i = 0; vms && i < json_object_array_length(vms); i++)
        if (store_vm(db, hid, host, json_object_array_get_idx(vms, i), now, err, errlen) < 0)
            goto fail;
    return db_commit(db, err, errlen);
fail:
    db_rollback(db);
    return -1;
}

/* A failed or cancelled add leaves no host behind, and the enrolment token
 * can be used again (the host keeps the certificate it was issued). */
static void add_failed(struct db *db, long long id, const char *host, const char *state, const char *why)
{
    char err[ERRLEN];
    if (DBQ(db, NULL, err, "DELETE FROM hosts WHERE name = ? AND state = 'adding'", host) < 0 ||
        DBQ(db, NULL, err, "UPDATE enrolments SET used = NULL WHERE host_name = ?", host) < 0)
        center_log("host add %s: cleanup: %s", host, err);
    task_finish(db, id, state, NULL, why);
    inv_event(db, !strcmp(state, "cancelled") ? "info" : "error", "host.add", host, id,
              "adding host %s %s: %s", host, state, why);
}

/* GET /v1/host and /v1/vms from the host; NULL facts with err on failure
 * (or a cancel). */
static json_object *fetch(struct db *db, long long id, const char *host, const char *addr,
                          json_object **vms, char *err, size_t errlen)
{
    char phase[400];
    snprintf(phase, sizeof(phase), "connecting to ferryd at %s", addr);
    task_progress(db, id, 10, phase);
    *vms = NULL;
    json_object *facts = ferryd_get(addr, host, "/v1/host", id, err, errlen);
    if (facts && !task_should_cancel(db, id)) {
        task_progress(db, id, 50, "reading the host's VMs");
        *vms = ferryd_get(addr, host, "/v1/vms", id, err, errlen);
    }
    if (*vms && !json_object_is_type(*vms, json_type_array)) {
        snprintf(err, errlen, "%s: GET /v1/vms did not return a list", addr);
        json_object_put(*vms);
        *vms = NULL;
    }
    if (!*vms) {
        json_object_put(facts);
        return NULL;
    }
    return facts;
}

static json_object *summary(const char *host, json_object *facts, json_object *vms)
{
    json_object *res = json_object_new_object();
    json_object *ds = jarr(facts, "datastores"), *nets = jarr(facts, "networks");
    json_object_object_add(res, "host", json_object_new_string(host));
    json_object_object_add(res, "datastores", json_object_new_int(ds ? (int)json_object_array_length(ds) : 0));
    json_object_object_add(res, "networks", json_object_new_int(nets ? (int)json_object_array_length(nets) : 0));
    json_object_object_add(res, "vms", json_object_new_int((int)json_object_array_length(vms)));
    return res;
}

void task_host_add(struct db *db, long long id, json_object *params)
{
    char err[ERRLEN];
    const char *host = jstr(params, "host"), *addr = jstr(params, "address");
    json_object *vms, *facts = fetch(db, id, host, addr, &vms, err, sizeof(err));
    if (tasks_stopping()) {   /* left running: the next start reconciles it */
    } else if (task_should_cancel(db, id)) {
        add_failed(db, id, host, "cancelled", "cancelled by a user");
    } else if (!facts) {
        add_failed(db, id, host, "error", err);
    } else if (task_progress(db, id, 80, "recording the host's inventory"),
               store_facts(db, host, facts, vms, true, err, sizeof(err)) < 0) {
        add_failed(db, id, host, "error", err);
    } else {
        json_object *res = summary(host, facts, vms);
        task_finish(db, id, "success", res, NULL);
        json_object_put(res);
        inv_event(db, "info", "host.add", host, id, "host %s at %s added", host, addr);
    }
    json_object_put(facts);
    json_object_put(vms);
}

/* Read the host again: facts, datastores, port groups, VM power states.
 * A host that does not answer is marked disconnected (its inventory is
 * kept: the VMs still run there as far as anyone knows). */
void task_host_refresh(struct db *db, long long id, json_object *params)
{
    char err[ERRLEN], now[40];
    const char *host = jstr(params, "host"), *addr = jstr(params, "address");
    json_object *vms, *facts = fetch(db, id, host, addr, &vms, err, sizeof(err));
    if (tasks_stopping()) {
    } else if (task_should_cancel(db, id)) {
        task_finish(db, id, "cancelled", NULL, "cancelled by a user");
    } else if (!facts) {
        char e2[ERRLEN];
        now_iso(now);
        if (DBQ(db, NULL, e2, "UPDATE hosts SET state = 'disconnected', error = ?, updated = ?"
                              " WHERE name = ? AND state <> 'adding'", err, now, host) < 0)
            center_log("host %s: %s", host, e2);
        task_finish(db, id, "error", NULL, err);
        inv_event(db, "warning", "host.disconnected", host, id, "host %s: %s", host, err);
    } else if (task_progress(db, id, 80, "recording the host's inventory"),
               store_facts(db, host, facts, vms, false, err, sizeof(err)) < 0) {
        task_finish(db, id, "error", NULL, err);
    } else {
        json_object *res = summary(host, facts, vms);
        task_finish(db, id, "success", res, NULL);
        json_object_put(res);
    }
    json_object_put(facts);
    json_object_put(vms);
}
