/* VM operations through the manager: create on a host, start, stop (hard),
 * delete (powered off only). Each is a task that asks the VM's ferryd and
 * records what the host answered: ferryd is the truth about a VM, the
 * inventory its last known copy. The request is checked against the
 * inventory first, so a refused one changes nothing. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>

#include "center/center.h"

static void not_allowed(struct req *q, const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(q->r), "Allow", allow);
    reply_error(q, 405, "method not allowed (allowed: %s)", allow);
}

/* POST /v1/vms waits for the host's verdict on the spec, but the API's
 * loop must not wait for a host (a hung one would stall every client): a
 * thread asks ferryd (a dry run: nothing is stored) and hands the answer
 * back through a pipe; the loop then replies 400/409 with ferryd's reason,
 * or queues the vm.create task. libevent keeps a request whose client went
 * away meanwhile until its reply, which then just frees it. */
struct spec_check {
    struct evhttp_request *r;
    struct db *db;
    char who[32], host[64], address[300];
    json_object *spec;
    json_object *reply;   /* ferryd's, on 200 */
    long status;          /* ferryd's HTTP status; 0: no answer */
    char err[ERRLEN];
};
static int check_pipe[2] = { -1, -1 };
static struct event *check_event;

static void *spec_check_run(void *arg)
{
    struct spec_check *k = arg;
    k->reply = ferryd_call(k->address, k->host, "POST", "/v1/vms?dry_run=1", k->spec, 0, &k->status,
                           k->err, sizeof(k->err));
    if (write(check_pipe[1], &k, sizeof(k)) != sizeof(k))
        center_log("VM spec check: cannot hand the answer back: %s", strerror(errno));
    return NULL;
}

/* ferryd's verdict: "https://.../v1/vms?dry_run=1: HTTP 400: reason" -> "reason" */
static const char *verdict(const char *err)
{
    const char *p = strstr(err, ": HTTP ");
    p = p ? strstr(p + 7, ": ") : NULL;
    return p ? p + 2 : err;
}

static void spec_checked(evutil_socket_t fd, short what, void *arg)
{
    struct spec_check *k;
    char err[ERRLEN];
    while (read(fd, &k, sizeof(k)) == sizeof(k)) {
        struct req q = { .r = k->r, .db = k->db, .method = EVHTTP_REQ_POST };
        snprintf(q.who, sizeof(q.who), "%s", k->who);
        const char *name = json_object_get_string(json_object_object_get(k->spec, "name"));
        if (!k->reply && (k->status == 400 || k->status == 409)) {
            reply_error(&q, (int)k->status, "host %s refuses the spec: %s", k->host, verdict(k->err));
        } else if (!k->reply) {
            reply_error(&q, 502, "host %s: %s", k->host, k->err);
        } else {
            json_object *params = json_object_new_object();
            json_object_object_add(params, "host", json_object_new_string(k->host));
            json_object_object_add(params, "address", json_object_new_string(k->address));
            json_object_object_add(params, "spec", json_object_get(k->spec));
            long long id = task_create(q.db, "vm.create", name, params, q.who, err, sizeof(err));
            json_object_put(params);
            if (id < 0)
                reply_error(&q, 500, "%s", err);
            else
                reply_task(&q, id);
        }
        json_object_put(k->reply);
        json_object_put(k->spec);
        free(k);
    }
}

static int spec_check_start(struct req *q, struct spec_check *k, char *err, size_t errlen)
{
    pthread_t t;
    if (!check_event) {
        struct event_base *base = evhttp_connection_get_base(evhttp_request_get_connection(q->r));
        if (pipe2(check_pipe, O_CLOEXEC) < 0 || fcntl(check_pipe[0], F_SETFL, O_NONBLOCK) < 0 ||
            !(check_event = event_new(base, check_pipe[0], EV_READ | EV_PERSIST, spec_checked, NULL)) ||
            event_add(check_event, NULL) < 0) {
            snprintf(err, errlen, "cannot set up the spec check: %s", strerror(errno));
            return -1;
        }
    }
    if (pthread_create(&t, NULL, spec_check_run, k)) {
        snprintf(err, errlen, "cannot start the spec check");
        return -1;
    }
    pthread_detach(t);
    return 0;
}

/* POST /v1/vms {"host", "spec"}: here what the inventory decides (the
 * host, a free name); then the host's own checks (its datastores and port
 * groups) through spec_check. */
static void vm_create(struct req *q)
{
    char err[ERRLEN];
    static const char *const fields[] = { "host", "spec", NULL };
    const char *host, *name;
    json_object *spec;
    struct db_res *r;
    if (json_only(q->body, fields, err, sizeof(err)) < 0 ||
        json_str(q->body, "host", true, &host, err, sizeof(err)) < 0)
        return reply_error(q, 400, "%s", err);
    if (!json_object_object_get_ex(q->body, "spec", &spec) || !json_object_is_type(spec, json_type_object))
        return reply_error(q, 400, "field 'spec' is required: the VM spec as ferryd takes it (an object)");
    if (json_str(spec, "name", true, &name, err, sizeof(err)) < 0)
        return reply_error(q, 400, "spec: %s", err);
    if (!name_valid(name))
        return reply_error(q, 400, "spec.name: '%.64s' is not a name (letters, digits, '.', '_', '-';"
                                   " at most 63)", name);
    if (DBQ(q->db, &r, err, "SELECT h.address, h.state, (SELECT COUNT(*) FROM vms WHERE name = ?), c.baseline"
                            " FROM hosts h JOIN clusters c ON c.id = h.cluster_id WHERE h.name = ?", name, host) < 0)
        return reply_error(q, 500, "%s", err);
    int code = 0;
    if (!r->nrows) {
        code = 404;
        snprintf(err, sizeof(err), "no host named '%.64s'", host);
    } else if (db_int(r, 0, 2)) {
        code = 409;
        snprintf(err, sizeof(err), "a VM named '%s' exists already", name);
    } else if (strcmp(db_val(r, 0, 1), "connected")) {
        code = 409;
        snprintf(err, sizeof(err), "host %s is %s", host, db_val(r, 0, 1));
    }
    if (code) {
        db_res_free(r);
        return reply_error(q, code, "%s", err);
    }
    struct spec_check *k = calloc(1, sizeof(*k));
    if (!k) {
        db_res_free(r);
        return reply_error(q, 500, "out of memory");
    }
    k->r = q->r;
    k->db = q->db;
    /* the thread's own copy: json-c objects are not shared across threads */
    json_object_deep_copy(spec, &k->spec, NULL);
    /* The cluster's CPU baseline (EVC) is what the VM sees, so that it can
     * move to any host of the cluster; a spec naming its own keeps them. */
    json_object *baseline = json_parsed_or_null(db_val(r, 0, 3));
    if (baseline && !json_object_object_get_ex(k->spec, "cpu_features", NULL))
        json_object_object_add(k->spec, "cpu_features", json_object_get(baseline));
    json_object_put(baseline);
    snprintf(k->who, sizeof(k->who), "%s", q->who);
    snprintf(k->host, sizeof(k->host), "%s", host);
    snprintf(k->address, sizeof(k->address), "%s", db_val(r, 0, 0));
    db_res_free(r);
    if (spec_check_start(q, k, err, sizeof(err)) < 0) {
        json_object_put(k->spec);
        free(k);
        reply_error(q, 500, "%s", err);
    }
}

/* start, stop, delete of VM name: a task on its host. */
static void vm_op(struct req *q, const char *name, const char *action)
{
    char err[ERRLEN], kind[16];
    struct db_res *r;
    if (q->body && json_object_object_length(q->body))
        return reply_error(q, 400, "%s takes no parameters", action);
    if (DBQ(q->db, &r, err, "SELECT v.power_state, h.name, h.address, h.state FROM vms v"
                            " LEFT JOIN hosts h ON h.id = v.host_id WHERE v.name = ?", name) < 0)
        return reply_error(q, 500, "%s", err);
    int code = 0;
    if (!r->nrows) {
        code = 404;
        snprintf(err, sizeof(err), "no VM named '%.64s'", name);
    } else if (!db_val(r, 0, 1) || strcmp(db_val(r, 0, 3), "connected")) {
        code = 409;
        snprintf(err, sizeof(err), "VM %s: its host %s is not connected", name,
                 db_val(r, 0, 1) ? db_val(r, 0, 1) : "(none)");
    } else if (!strcmp(action, "delete") && strcmp(db_val(r, 0, 0), "stopped")) {
        code = 409;
        snprintf(err, sizeof(err), "VM %s is %s: stop it first", name, db_val(r, 0, 0));
    }
    if (code) {
        db_res_free(r);
        return reply_error(q, code, "%s", err);
    }
    json_object *params = json_object_new_object();
    json_object_object_add(params, "vm", json_object_new_string(name));
    json_object_object_add(params, "host", json_object_new_string(db_val(r, 0, 1)));
    json_object_object_add(params, "address", json_object_new_string(db_val(r, 0, 2)));
    json_object_object_add(params, "action", json_object_new_string(action));
    db_res_free(r);
    snprintf(kind, sizeof(kind), "vm.%s", action);
    long long id = task_create(q->db, kind, name, params, q->who, err, sizeof(err));
    json_object_put(params);
    if (id < 0)
        return reply_error(q, 500, "%s", err);
    reply_task(q, id);
}

void api_vm_ops(struct req *q, const char *rest)
{
    char name[64];
    const char *slash = strchr(rest, '/');
    if (!*rest)
        return q->method == EVHTTP_REQ_POST ? vm_create(q) : not_allowed(q, "GET, POST");
    if ((slash ? slash - rest : (long)strlen(rest)) >= (long)sizeof(name))
        return reply_error(q, 404, "no VM named '%.64s'", rest);
    snprintf(name, sizeof(name), "%.*s", (int)(slash ? slash - rest : (long)strlen(rest)), rest);
    if (!slash)
        return q->method == EVHTTP_REQ_DELETE ? vm_op(q, name, "delete") : not_allowed(q, "GET, DELETE");
    if (strcmp(slash, "/start") && strcmp(slash, "/stop"))
        return reply_error(q, 404, "no such endpoint");
    if (q->method != EVHTTP_REQ_POST)
        return not_allowed(q, "POST");
    vm_op(q, name, slash + 1);
}

/* ferryd's refusal in err as "host h1: reason (HTTP 409)"; a failure to
 * reach it stays as it is. */
static void host_said(char *err, size_t errlen, const char *host, long status)
{
    char why[ERRLEN];
    if (status < 400)
        return;
    snprintf(why, sizeof(why), "%s", verdict(err));
    snprintf(err, errlen, "host %s: %.400s (HTTP %ld)", host, why, status);
}

/* The task's end when ferryd did not do it: cancelled or error. */
static void op_failed(struct db *db, long long id, const char *vm, const char *what, const char *why)
{
    bool cancelled = task_should_cancel(db, id);
    task_finish(db, id, cancelled ? "cancelled" : "error", NULL, cancelled ? "cancelled by a user" : why);
    inv_event(db, cancelled ? "info" : "error", what, vm, id, "%s of VM %s %s: %s", what, vm,
              cancelled ? "cancelled" : "failed", why);
}

/* The VM as ferryd reports it, into the inventory: power state (and the
 * spec it stored, once created). */
static int vm_record(struct db *db, const char *vm, json_object *st, char *err, size_t errlen)
{
    char now[40];
    now_iso(now);
    return db_exec(db, "UPDATE vms SET power_state = ?, updated = ? WHERE name = ?", 3,
                   (const char *[]){ jstr(st, "state"), now, vm }, NULL, err, errlen) < 0 ? -1 : 0;
}

static json_object *vm_result(const char *vm, const char *host, json_object *st)
{
    json_object *res = json_object_new_object(), *pid;
    json_object_object_add(res, "vm", json_object_new_string(vm));
    json_object_object_add(res, "host", json_object_new_string(host));
    json_object_object_add(res, "uuid", json_object_new_string(jstr(st, "uuid")));
    json_object_object_add(res, "power_state", json_object_new_string(jstr(st, "state")));
    if (json_object_object_get_ex(st, "pid", &pid))
        json_object_object_add(res, "pid", json_object_get(pid));
    return res;
}

static void op_done(struct db *db, long long id, const char *what, const char *vm, const char *host,
                    json_object *st)
{
    json_object *res = vm_result(vm, host, st);
    task_finish(db, id, "success", res, NULL);
    json_object_put(res);
    inv_event(db, "info", what, vm, id, "VM %s on %s: %s", vm, host, jstr(st, "state"));
}

void task_vm_create(struct db *db, long long id, json_object *params)
{
    char err[ERRLEN] = "cancelled", now[40], phase[400];
    const char *host = jstr(params, "host"), *addr = jstr(params, "address");
    json_object *spec;
    json_object_object_get_ex(params, "spec", &spec);
    const char *vm = jstr(spec, "name");
    long status = 0;
    snprintf(phase, sizeof(phase), "defining the VM on %s", host);
    task_progress(db, id, 20, phase);
    json_object *st = task_should_cancel(db, id) ? NULL
                    : ferryd_call(addr, host, "POST", "/v1/vms", spec, id, &status, err, sizeof(err));
    if (tasks_stopping()) {   /* left running: the next start reconciles it */
        json_object_put(st);
        return;
    }
    if (!st) {
        host_said(err, sizeof(err), host, status);
        return op_failed(db, id, vm, "vm.create", err);
    }
    task_progress(db, id, 80, "recording the VM");
    json_object *stored = NULL;
    json_object_object_get_ex(st, "spec", &stored);
    now_iso(now);
    const char *spec_text = json_object_to_json_string_ext(stored, JSON_C_TO_STRING_PLAIN);
    int rc = task_should_cancel(db, id) ? -1
           : DBQ(db, NULL, err, "INSERT INTO vms (name, uuid, host_id, power_state, spec, updated)"
                                " SELECT ?, ?, id, ?, ?, ? FROM hosts WHERE name = ?",
                 vm, jstr(st, "uuid"), jstr(st, "state"), spec_text, now, host);
    if (rc != 1) {
        /* undo: the VM must not stay on the host behind the inventory's back */
        char path[128], e2[ERRLEN];
        snprintf(path, sizeof(path), "/v1/vms/%s", vm);
        json_object_put(ferryd_call(addr, host, "DELETE", path, NULL, 0, &status, e2, sizeof(e2)));
        if (rc == -2)
            snprintf(err, sizeof(err), "the inventory holds VM %s or its uuid already", vm);
        else if (rc == 0)
            snprintf(err, sizeof(err), "host %s was removed meanwhile", host);
        json_object_put(st);
        return op_failed(db, id, vm, "vm.create", err);
    }
    op_done(db, id, "vm.create", vm, host, st);
    json_object_put(st);
}

/* vm.start, vm.stop */
void task_vm_power(struct db *db, long long id, json_object *params)
{
    char err[ERRLEN] = "cancelled", e2[ERRLEN], path[128], phase[400];
    const char *vm = jstr(params, "vm"), *host = jstr(params, "host"), *addr = jstr(params, "address");
    const char *action = jstr(params, "action");
    char what[16];
    long status = 0;
    snprintf(what, sizeof(what), "vm.%s", action);
    snprintf(phase, sizeof(phase), "%s VM on %s", !strcmp(action, "start") ? "starting" : "stopping", host);
    task_progress(db, id, 20, phase);
    snprintf(path, sizeof(path), "/v1/vms/%s/%s", vm, action);
    json_object *st = task_should_cancel(db, id) ? NULL
                    : ferryd_call(addr, host, "POST", path, NULL, id, &status, err, sizeof(err));
    if (tasks_stopping()) {
        json_object_put(st);
        return;
    }
    if (!st) {
        /* the power state may still have changed (a VM that ran already,
         * or stopped meanwhile): record what the host says now */
        long st2;
        host_said(err, sizeof(err), host, status);
        snprintf(path, sizeof(path), "/v1/vms/%s", vm);
        json_object *now = ferryd_call(addr, host, "GET", path, NULL, 0, &st2, e2, sizeof(e2));
        if (now && vm_record(db, vm, now, e2, sizeof(e2)) < 0)
            center_log("VM %s: %s", vm, e2);
        json_object_put(now);
        return op_failed(db, id, vm, what, err);
    }
    if (vm_record(db, vm, st, err, sizeof(err)) < 0)
        op_failed(db, id, vm, what, err);
    else
        op_done(db, id, what, vm, host, st);
    json_object_put(st);
}

void task_vm_delete(struct db *db, long long id, json_object *params)
{
    char err[ERRLEN] = "cancelled", path[128];
    const char *vm = jstr(params, "vm"), *host = jstr(params, "host"), *addr = jstr(params, "address");
    long status = 0;
    snprintf(path, sizeof(path), "/v1/vms/%s", vm);
    task_progress(db, id, 20, "deleting the VM on its host");
    json_object *st = task_should_cancel(db, id) ? NULL
                    : ferryd_call(addr, host, "DELETE", path, NULL, id, &status, err, sizeof(err));
    if (tasks_stopping()) {
        json_object_put(st);
        return;
    }
    /* 404: the host has no such VM any more, so the inventory's is stale */
    if (!st && status != 404) {
        host_said(err, sizeof(err), host, status);
        return op_failed(db, id, vm, "vm.delete", err);
    }
    json_object_put(st);
    if (DBQ(db, NULL, err, "DELETE FROM vms WHERE name = ?", vm) < 0)
        return op_failed(db, id, vm, "vm.delete", err);
    json_object *res = json_object_new_object();
    json_object_object_add(res, "vm", json_object_new_string(vm));
    json_object_object_add(res, "host", json_object_new_string(host));
    task_finish(db, id, "success", res, NULL);
    json_object_put(res);
    inv_event(db, "info", "vm.delete", vm, id, "VM %s deleted from %s", vm, host);
}
