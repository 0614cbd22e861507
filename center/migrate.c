/* The vm.migrate task (compute migration, vMotion): ask the destination's
 * ferryd for an incoming VM, tell the source's ferryd to migrate it there,
 * follow the progress, and record the VM's new host only once the
 * destination runs it. On a failure or a cancel the destination's leg is
 * aborted and the VM stays on the source.
 *
 * The VMMs decide who runs the VM (the destination only after COMMIT, the
 * source only without it); the task only reads the outcome. That is also
 * what a restarted manager does: tasks_reconcile queues an interrupted
 * migration again with "resume", and the task then skips the start and
 * asks both hosts where the VM is. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "center/center.h"

#define POLL_US 200000
#define NO_ANSWER_S 300   /* neither host answers this long: give up, in doubt */

struct mig {
    struct db *db;
    long long id;
    const char *vm, *src, *dst, *prio;
    char src_addr[256], dst_addr[256];
    json_object *last;   /* the source's last migrate-status */
    int pct;             /* the task's percent so far: it never goes back */
};

static long long jll(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static int host_address(struct db *db, const char *host, char *out, size_t outlen, char *err,
                        size_t errlen)
{
    struct db_res *r;
    if (db_exec(db, "SELECT address FROM hosts WHERE name = ?", 1, (const char *[]){ host }, &r,
                err, errlen) < 0)
        return -1;
    int found = r->nrows;
    if (found)
        snprintf(out, outlen, "%s", db_val(r, 0, 0));
    else
        snprintf(err, errlen, "host %s is no longer in the inventory", host);
    db_res_free(r);
    return found ? 0 : -1;
}

/* METHOD /v1/vms/VM[SUFFIX] on host (0: src, 1: dst). Not aborted by a
 * user's cancel (task id 0): undoing a leg must reach the host. */
static json_object *call(struct mig *m, int host, const char *method, const char *suffix,
                         json_object *body, long *status, char *err, size_t errlen)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/vms/%s%s", m->vm, suffix);
    return ferryd_call(host ? m->dst_addr : m->src_addr, host ? m->dst : m->src, method, path, body,
                       0, status, err, errlen);
}

/* The link's share for this migration: the slower end's label divided
 * among its admission slots, twice that for high priority. */
static int bandwidth_mbps(struct mig *m)
{
    int a = host_migration_mbps(m->db, m->src), b = host_migration_mbps(m->db, m->dst);
    int link = a < b ? a : b;
    if (link <= 0)
        return 0;   /* no label: no cap */
    return link / admission_host_limit(link) * (strcmp(m->prio, "high") ? 1 : 2);
}

/* Incoming on the destination, then migrate on the source. */
static int start(struct mig *m, char *err, size_t errlen)
{
    long st;
    task_progress(m->db, m->id, 2, "reading the VM on the source");
    json_object *vm = call(m, 0, "GET", "", NULL, &st, err, errlen), *spec;
    if (!vm)
        return -1;
    const char *state = jstr(vm, "state");
    if (strcmp(state, "running") || !json_object_object_get_ex(vm, "spec", &spec)) {
        snprintf(err, errlen, "VM %s is %s on %s: only a running VM migrates live", m->vm,
                 *state ? state : "unknown", m->src);
        json_object_put(vm);
        return -1;
    }
    json_object *body = json_object_new_object();
    json_object_object_add(body, "spec", json_object_get(spec));
    json_object_put(vm);
    task_progress(m->db, m->id, 5, "preparing the destination");
    json_object *inc = call(m, 1, "POST", "/incoming", body, &st, err, errlen);
    json_object_put(body);
    if (!inc)
        return -1;
    if (task_should_cancel(m->db, m->id)) {
        json_object_put(inc);
        snprintf(err, errlen, "cancelled by a user");
        return -1;
    }
    body = json_object_new_object();
    json_object_object_add(body, "to", json_object_new_string(jstr(inc, "address")));
    json_object_object_add(body, "priority", json_object_new_string(m->prio));
    int bw = bandwidth_mbps(m);
    if (bw)
        json_object_object_add(body, "bandwidth_mbps", json_object_new_int(bw));
    json_object_put(inc);
    task_progress(m->db, m->id, 8, "starting the migration");
    json_object *res = call(m, 0, "POST", "/migrate", body, &st, err, errlen);
    int rc = res ? 0 : -1;
    json_object_put(body);
    json_object_put(res);
    return rc;
}

/* Where does the VM run now? 1: on the destination (resumed there), 0:
 * not there (never arrived, or aborted), -1: not known yet. */
static int on_destination(struct mig *m)
{
    char err[ERRLEN];
    long st;
    json_object *vm = call(m, 1, "GET", "", NULL, &st, err, sizeof(err));
    const char *state = jstr(vm, "state");
    int where = st == 404 ? 0 : *state && strcmp(state, "incoming") && strcmp(state, "unknown") ? 1 : -1;
    json_object_put(vm);
    return where;
}

static void abort_destination(struct mig *m)
{
    char err[ERRLEN];
    long st;
    json_object *o = call(m, 1, "POST", "/incoming/abort", NULL, &st, err, sizeof(err));
    if (!o && st != 404)
        center_log("task %lld: aborting %s's incoming leg of %s: %s", m->id, m->dst, m->vm, err);
    json_object_put(o);
}

/* The VM is the destination's now, in power state `power`. */
static void record(struct mig *m, const char *power)
{
    char err[ERRLEN], now[40];
    now_iso(now);
    if (DBQ(m->db, NULL, err, "UPDATE vms SET host_id = (SELECT id FROM hosts WHERE name = ?),"
                              " power_state = ?, updated = ? WHERE name = ?",
            m->dst, power, now, m->vm) < 0)
        center_log("task %lld: cannot record VM %s on %s: %s", m->id, m->vm, m->dst, err);
    json_object *res = json_object_new_object();
    json_object_object_add(res, "vm", json_object_new_string(m->vm));
    json_object_object_add(res, "source", json_object_new_string(m->src));
    json_object_object_add(res, "host", json_object_new_string(m->dst));
    static const char *const keys[] = { "downtime_ms", "total_ms", "verify_result", "bytes_sent" };
    json_object *v;
    for (size_t i = 0; m->last && i < sizeof(keys) / sizeof(keys[0]); i++)
        if (json_object_object_get_ex(m->last, keys[i], &v))
            json_object_object_add(res, keys[i], json_object_get(v));
    task_finish(m->db, m->id, "success", res, NULL);
    json_object_put(res);
    inv_event(m->db, "info", "vm.migrate", m->vm, m->id, "VM %s migrated from %s to %s", m->vm,
              m->src, m->dst);
}

static void failed(struct mig *m, bool cancelled, const char *why)
{
    abort_destination(m);
    task_finish(m->db, m->id, cancelled ? "cancelled" : "error", NULL, why);
    inv_event(m->db, cancelled ? "info" : "error", "vm.migrate", m->vm, m->id,
              "VM %s stays on %s: migration to %s %s: %s", m->vm, m->src, m->dst,
              cancelled ? "cancelled" : "failed", why);
}

static void show_progress(struct mig *m, const char *phase)
{
    /* round 0 copies RAM (10-85%); later rounds shrink what is left (85-95%) */
    long long ram = jll(m->last, "ram_bytes"), left = jll(m->last, "remaining_bytes");
    long long round = jll(m->last, "round"), scanned = jll(m->last, "scanned_bytes");
    int pct = ram <= 0 ? 10
              : round == 0 ? 10 + (int)(75 * (scanned < ram ? scanned : ram) / ram)
                           : 85 + (int)(10 * (ram - (left < ram ? left : ram)) / ram);
    pct = pct < m->pct ? m->pct : pct;
    m->pct = pct;
    char text[160];
    snprintf(text, sizeof(text), "%s: round %lld, %lld MiB left, %lld Mbit/s", phase,
             jll(m->last, "round"), left >> 20, jll(m->last, "throughput_mbps"));
    task_progress(m->db, m->id, pct, text);
}

/* Follow the migration to its end, from the source's status and, when the
 * source cannot say (it forgot the VM after success, its ferryd is down,
 * or the hand-over is in doubt), from the destination. */
static void follow(struct mig *m)
{
    bool cancel_sent = false;
    time_t heard = time(NULL);
    char err[ERRLEN];
    for (;; usleep(POLL_US)) {
        if (tasks_stopping())
            return;   /* left running: the next start resumes it */
        if (!cancel_sent && task_should_cancel(m->db, m->id)) {
            long st;
            json_object_put(call(m, 0, "POST", "/migration/cancel", NULL, &st, err, sizeof(err)));
            cancel_sent = true;
        }
        long st;
        json_object *s = call(m, 0, "GET", "/migration", NULL, &st, err, sizeof(err));
        const char *phase = jstr(s, "phase");
        if (s) {
            heard = time(NULL);
            json_object_put(m->last);
            m->last = s;
        }
        if ((!strcmp(phase, "setup") || !strcmp(phase, "precopy") ||
                      !strcmp(phase, "switchover"))) {
            show_progress(m, phase);
            continue;
        }
        if ((!strcmp(phase, "failed") || !strcmp(phase, "cancelled") || !strcmp(phase, "none"))) {
            const char *why = jstr(s, "error");
            snprintf(err, sizeof(err), "%s", !strcmp(phase, "none") ? "the source is not migrating the VM"
                                             : *why ? why : phase);
            return failed(m, !strcmp(phase, "cancelled") && cancel_sent, err);
        }
        /* completed, in doubt, forgotten by the source, or no answer */
        int where = on_destination(m);
        if (where == 1)
            return record(m, "running");
        if (where == 0 && !s)   /* the receiver gave up: no COMMIT reached it */
            return failed(m, false, "the source does not answer and the destination's incoming VM is gone");
        if (where == 0) {
            snprintf(err, sizeof(err), "in doubt: %s says '%s', %s does not have the VM: ask the hosts",
                     m->src, phase ? phase : "no such VM", m->dst);
            task_finish(m->db, m->id, "error", NULL, err);
            return;
        }
        if (time(NULL) - heard > NO_ANSWER_S) {
            task_finish(m->db, m->id, "error", NULL, "in doubt: no answer from the hosts; ask them");
            return;
        }
    }
}

/* A powered-off VM moves without a live migration (its disks stay on the
 * datastores the checks found shared): defined on the destination, then
 * removed from the source, recorded last. Each step looks first, so a
 * manager restarted midway finishes the move. Both hosts may define the VM
 * for a moment; neither runs it. */
static void cold_move(struct mig *m)
{
    char err[ERRLEN];
    long st;
    json_object *spec;
    task_progress(m->db, m->id, 10, "reading the VM on the source");
    json_object *vm = call(m, 0, "GET", "", NULL, &st, err, sizeof(err));
    if (!vm && st != 404)
        goto fail;
    if (vm && (strcmp(jstr(vm, "state"), "stopped") || !json_object_object_get_ex(vm, "spec", &spec))) {
        snprintf(err, sizeof(err), "VM %s is %s on %s now: migrate it live", m->vm, jstr(vm, "state"), m->src);
        json_object_put(vm);
        goto fail;
    }
    json_object *there = call(m, 1, "GET", "", NULL, &st, err, sizeof(err));
    if (!there && st != 404) {
        json_object_put(vm);
        goto fail;
    }
    if (!vm && !there) {
        snprintf(err, sizeof(err), "VM %s is on neither %s nor %s: refresh the hosts", m->vm, m->src, m->dst);
        goto fail;
    }
    if (vm && !there) {
        task_progress(m->db, m->id, 40, "defining the VM on the destination");
        there = ferryd_call(m->dst_addr, m->dst, "POST", "/v1/vms", spec, m->id, &st, err, sizeof(err));
        if (!there) {
            json_object_put(vm);
            goto fail;
        }
    }
    json_object_put(there);
    if (vm) {
        task_progress(m->db, m->id, 70, "removing the VM from the source");
        json_object *gone = call(m, 0, "DELETE", "", NULL, &st, err, sizeof(err));
        json_object_put(vm);
        if (!gone && st != 404) {   /* undo: the VM stays the source's alone */
            char why[ERRLEN];
            json_object_put(call(m, 1, "DELETE", "", NULL, &st, why, sizeof(why)));
            goto fail;
        }
        json_object_put(gone);
    }
    record(m, "stopped");
    return;
fail:
    task_finish(m->db, m->id, "error", NULL, err);
}

void task_vm_migrate(struct db *db, long long id, json_object *params)
{
    char err[ERRLEN];
    json_object *v;
    struct mig m = { .db = db, .id = id, .src = jstr(params, "source"), .dst = jstr(params, "host"),
                     .prio = *jstr(params, "priority") ? jstr(params, "priority") : "normal" };
    struct db_res *r;
    char ids[24];
    fmt_ll(ids, id);
    if (DBQ(db, &r, err, "SELECT target FROM tasks WHERE id = ?", ids) < 0 || !r->nrows) {
        center_log("task %lld: %s", id, err);
        return;
    }
    char vm[64];
    snprintf(vm, sizeof(vm), "%s", db_val(r, 0, 0));
    db_res_free(r);
    m.vm = vm;
    bool resume = json_object_object_get_ex(params, "resume", &v) && json_object_get_boolean(v);
    if (!*m.src || !*m.dst || host_address(db, m.src, m.src_addr, sizeof(m.src_addr), err, sizeof(err)) < 0 ||
        host_address(db, m.dst, m.dst_addr, sizeof(m.dst_addr), err, sizeof(err)) < 0) {
        task_finish(db, id, "error", NULL, *m.src && *m.dst ? err : "bad task parameters");
        return;
    }
    if (!resume && task_should_cancel(db, id)) {
        task_finish(db, id, "cancelled", NULL, "cancelled by a user");
    } else if (json_object_object_get_ex(params, "cold", &v) && json_object_get_boolean(v)) {
        cold_move(&m);
    } else if (!resume && start(&m, err, sizeof(err)) < 0) {
        if (!tasks_stopping())
            failed(&m, task_should_cancel(db, id), err);
    } else {
        if (resume)
            task_progress(db, id, 10, "asking the hosts after a manager restart");
        follow(&m);
    }
    json_object_put(m.last);
}
