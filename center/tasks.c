/* Tasks: every long operation is a row in `tasks`, run by a pool of worker
 * threads, each with its own database connection. A worker claims the
 * oldest queued task with a conditional UPDATE (state queued -> running),
 * so two workers, or two managers on one PostgreSQL, never run one task
 * twice. Because the queue is the table, queued tasks survive a restart. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "center/center.h"

#define MAX_WORKERS 16
#define MAX_CANCEL 64

static pthread_t workers[MAX_WORKERS];
static int nworkers;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t claim_lock = PTHREAD_MUTEX_INITIALIZER;   /* admission counts, then claims */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static bool stopping;
static long long cancels[MAX_CANCEL];   /* running tasks asked to cancel */

static const struct task_kind {
    const char *kind;
    void (*run)(struct db *db, long long id, json_object *params);
} kinds[] = {
    { "host.add", task_host_add },
    { "host.refresh", task_host_refresh },
    { "vm.migrate", task_vm_migrate },
    { "vm.create", task_vm_create },
    { "vm.start", task_vm_power },
    { "vm.stop", task_vm_power },
    { "vm.delete", task_vm_delete },
};

json_object *task_row_json(const struct db_res *r, int i)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_int64(db_int(r, i, 0)));
    json_object_object_add(o, "kind", json_text_or_null(db_val(r, i, 1)));
    json_object_object_add(o, "target", json_text_or_null(db_val(r, i, 2)));
    json_object_object_add(o, "state", json_text_or_null(db_val(r, i, 3)));
    json_object_object_add(o, "percent", json_object_new_int((int)db_int(r, i, 4)));
    json_object_object_add(o, "phase", json_text_or_null(db_val(r, i, 5)));
    json_object_object_add(o, "result", json_parsed_or_null(db_val(r, i, 6)));
    json_object_object_add(o, "error", json_text_or_null(db_val(r, i, 7)));
    json_object_object_add(o, "cancel_requested", json_object_new_boolean(db_int(r, i, 8) != 0));
    json_object_object_add(o, "created_by", json_text_or_null(db_val(r, i, 9)));
    json_object_object_add(o, "created", json_text_or_null(db_val(r, i, 10)));
    json_object_object_add(o, "started", json_text_or_null(db_val(r, i, 11)));
    json_object_object_add(o, "finished", json_text_or_null(db_val(r, i, 12)));
    return o;
}

long long task_create(struct db *db, const char *kind, const char *target, json_object *params,
                      const char *by, char *err, size_t errlen)
{
    char now[40];
    struct db_res *r;
    now_iso(now);
    const char *p = json_object_to_json_string_ext(params, JSON_C_TO_STRING_PLAIN);
    if (db_exec(db, "INSERT INTO tasks (kind, target, state, percent, phase, params,"
                    " cancel_requested, created_by, created)"
                    " VALUES (?, ?, 'queued', 0, 'queued', ?, 0, ?, ?) RETURNING id",
                5, (const char *[]){ kind, target, p, by, now }, &r, err, errlen) < 0)
        return -1;
    long long id = db_int(r, 0, 0);
    db_res_free(r);
    return id;
}

void tasks_kick(void)
{
    pthread_mutex_lock(&lock);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
}

bool task_cancel_flag(long long id)
{
    bool found = false;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_CANCEL && !found; i++)
        found = cancels[i] == id;
    pthread_mutex_unlock(&lock);
    return found;
}

bool tasks_stopping(void)
{
    pthread_mutex_lock(&lock);
    bool s = stopping;
    pthread_mutex_unlock(&lock);
    return s;
}

static void cancel_flag_set(long long id, bool on)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_CANCEL; i++)
        if (on ? cancels[i] == 0 : cancels[i] == id) {
            cancels[i] = on ? id : 0;
            break;
        }
    pthread_mutex_unlock(&lock);
}

void task_progress(struct db *db, long long id, int percent, const char *phase)
{
    char ids[24], pct[16], err[ERRLEN];
    fmt_ll(ids, id);
    snprintf(pct, sizeof(pct), "%d", percent);
    if (DBQ(db, NULL, err, "UPDATE tasks SET percent = ?, phase = ? WHERE id = ? AND state = 'running'",
            pct, phase, ids) < 0)
        center_log("task %lld: %s", id, err);
}

int task_cancel(struct db *db, long long id, json_object **out, char *err, size_t errlen)
{
    char ids[24], now[40];
    struct db_res *r = NULL;
    fmt_ll(ids, id);
    now_iso(now);
    /* a queued task is cancelled at once; the conditional UPDATE loses
     * cleanly against a worker claiming it at the same moment */
    int n = db_exec(db, "UPDATE tasks SET state = 'cancelled', phase = 'cancelled', finished = ?,"
                        " error = 'cancelled by a user' WHERE id = ? AND state = 'queued'",
                    2, (const char *[]){ now, ids }, NULL, err, errlen);
    if (n < 0)
        return 500;
    if (n == 0) {
        n = db_exec(db, "UPDATE tasks SET cancel_requested = 1 WHERE id = ? AND state = 'running'",
                    1, (const char *[]){ ids }, NULL, err, errlen);
        if (n < 0)
            return 500;
        if (n == 1)
            cancel_flag_set(id, true);   /* the worker's I/O checks it */
    }
    if (db_exec(db, "SELECT " TASK_COLS " FROM tasks WHERE id = ?", 1, (const char *[]){ ids }, &r,
                err, errlen) < 0)
        return 500;
    int code = 200;
    if (r->nrows == 0) {
        snprintf(err, errlen, "no task %lld", id);
        code = 404;
    } else if (n == 0 && strcmp(db_val(r, 0, 3), "cancelled")) {
        snprintf(err, errlen, "task %lld is %s already: nothing to cancel", id, db_val(r, 0, 3));
        code = 409;
    } else {
        *out = task_row_json(r, 0);
        if (n == 1)
            inv_event(db, "info", "task.cancel", db_val(r, 0, 2), id, "cancel requested for task %lld (%s)",
                      id, db_val(r, 0, 1));
    }
    db_res_free(r);
    return code;
}

/* A task that was running when the manager died has no worker any more.
 * Its kind's own cleanup ran nowhere, so record it as failed; host.add
 * also drops the half-added host (the admin adds it again). A migration
 * goes on between the VMMs without the manager: it is queued again to
 * resume, and asks the hosts where the VM runs (center/migrate.c). */
static int requeue_migration(struct db *db, const char *id, const char *params, char *err,
                             size_t errlen)
{
    json_object *p = json_tokener_parse(params);
    if (!p)
        p = json_object_new_object();
    json_object_object_add(p, "resume", json_object_new_boolean(1));
    int rc = db_exec(db, "UPDATE tasks SET state = 'queued', phase = 'resuming after a manager restart',"
                         " params = ? WHERE id = ?",
                     2, (const char *[]){ json_object_to_json_string_ext(p, JSON_C_TO_STRING_PLAIN), id },
                     NULL, err, errlen);
    json_object_put(p);
    center_log("task %s (vm.migrate): queued again to resume", id);
    return rc < 0 ? -1 : 0;
}

int tasks_reconcile(struct db *db, char *err, size_t errlen)
{
    char now[40];
    struct db_res *r;
    now_iso(now);
    if (db_begin(db, err, errlen) < 0)
        return -1;
    if (db_exec(db, "SELECT id, kind, target, params FROM tasks WHERE state = 'running'", 0, NULL,
                &r, err, errlen) < 0)
        goto fail;
    for (int i = 0; i < r->nrows; i++) {
        const char *id = db_val(r, i, 0), *kind = db_val(r, i, 1), *target = db_val(r, i, 2);
        if (!strcmp(kind, "vm.migrate")) {
            if (requeue_migration(db, id, db_val(r, i, 3), err, errlen) < 0) {
                db_res_free(r);
                goto fail;
            }
            inv_event(db, "warning", "task.resumed", target, atoll(id),
                      "task %s (%s %s) was running when the manager stopped: resumed", id, kind, target);
            continue;
        }
        if (!strcmp(kind, "host.add") &&
            (DBQ(db, NULL, err, "UPDATE enrolments SET used = NULL WHERE host_name = ? AND used IS NOT NULL"
                                " AND NOT EXISTS (SELECT 1 FROM hosts WHERE name = ? AND state <> 'adding')",
                 target, target) < 0 ||
             DBQ(db, NULL, err, "DELETE FROM hosts WHERE name = ? AND state = 'adding'", target) < 0)) {
            db_res_free(r);
            goto fail;
        }
        if (DBQ(db, NULL, err, "UPDATE tasks SET state = 'error', error = 'manager restarted',"
                               " phase = 'interrupted', finished = ? WHERE id = ?", now, id) < 0) {
            db_res_free(r);
            goto fail;
        }
        inv_event(db, "error", "task.interrupted", target, atoll(id),
                  "task %s (%s %s) was running when the manager stopped: marked failed", id, kind, target);
        center_log("task %s (%s %s): marked error, manager restarted", id, kind, target);
    }
    db_res_free(r);
    return db_commit(db, err, errlen);
fail:
    db_rollback(db);
    return -1;
}

/* May this queued task start now? High priority first (pass 0), then the
 * rest in order; a migration only within the admission limits. */
static bool claimable(struct db *db, json_object *running, const char *kind, json_object *params,
                      int pass)
{
    json_object *v;
    bool high = json_object_object_get_ex(params, "priority", &v) &&
                !strcmp(json_object_get_string(v), "high");
    if (pass == 0 && !high)
        return false;
    return strcmp(kind, "vm.migrate") || admission_admit(db, running, params);
}

/* Claim the next queued task that may start: its id, 0 when none, -1 when
 * another worker won it (look again at once). */
static long long claim(struct db *db, char **kind, json_object **params)
{
    char err[ERRLEN], now[40];
    struct db_res *r;
    long long id = 0;
    pthread_mutex_lock(&claim_lock);
    json_object *running = admission_running(db, err, sizeof(err));
    if (!running ||
        DBQ0(db, &r, err, "SELECT id, kind, params FROM tasks WHERE state = 'queued' ORDER BY id LIMIT 1000") < 0) {
        center_log("task queue: %s", err);
        json_object_put(running);
        pthread_mutex_unlock(&claim_lock);
        return 0;
    }
    int row = -1;
    json_object *p = NULL;
    for (int pass = 0; pass < 2 && row < 0; pass++)
        for (int i = 0; i < r->nrows && row < 0; i++) {
            p = json_tokener_parse(db_val(r, i, 2));
            if (claimable(db, running, db_val(r, i, 1), p, pass))
                row = i;
            else
                json_object_put(p);
        }
    if (row >= 0) {
        now_iso(now);
        int n = DBQ(db, NULL, err, "UPDATE tasks SET state = 'running', started = ?, phase = 'starting'"
                                   " WHERE id = ? AND state = 'queued'", now, db_val(r, row, 0));
        if (n == 1) {
            id = db_int(r, row, 0);
            *kind = strdup(db_val(r, row, 1));
            *params = p;
        } else {
            id = -1;
            json_object_put(p);
        }
    }
    db_res_free(r);
    json_object_put(running);
    pthread_mutex_unlock(&claim_lock);
    return id;
}

static void *worker(void *arg)
{
    char err[ERRLEN];
    struct db *db = db_open(cfg.db_url, err, sizeof(err));
    if (!db) {
        center_log("task worker: %s", err);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&lock);
        bool stop = stopping;
        pthread_mutex_unlock(&lock);
        if (stop)
            break;
        char *kind = NULL;
        json_object *params = NULL;
        long long id = claim(db, &kind, &params);
        if (id > 0) {
            const struct task_kind *k = NULL;
            for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
                if (!strcmp(kinds[i].kind, kind))
                    k = &kinds[i];
            if (k)
                k->run(db, id, params);
            else
                center_log("task %lld: unknown kind '%s'", id, kind);
            cancel_flag_set(id, false);
            free(kind);
            json_object_put(params);
            tasks_kick();   /* a slot may have freed for a task admission held back */
            continue;
        }
        if (id < 0)
            continue;
        /* nothing queued: sleep until kicked, or poll (another manager may
         * share a PostgreSQL database) */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_mutex_lock(&lock);
        if (!stopping)
            pthread_cond_timedwait(&wake, &lock, &ts);
        pthread_mutex_unlock(&lock);
    }
    db_close(db);
    return NULL;
}

int tasks_start(int n, char *err, size_t errlen)
{
    for (nworkers = 0; nworkers < n && nworkers < MAX_WORKERS; nworkers++)
        if (pthread_create(&workers[nworkers], NULL, worker, NULL)) {
            snprintf(err, errlen, "cannot start task workers");
            return -1;
        }
    return 0;
}

void tasks_stop(void)
{
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < nworkers; i++)
        pthread_join(workers[i], NULL);
}

void task_finish(struct db *db, long long id, const char *state, json_object *result, const char *error)
{
    char ids[24], now[40], err[ERRLEN];
    fmt_ll(ids, id);
    now_iso(now);
    const char *res = result ? json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN) : NULL;
    if (DBQ(db, NULL, err, "UPDATE tasks SET state = ?, percent = 100, phase = ?, result = ?, error = ?,"
                           " finished = ? WHERE id = ? AND state = 'running'",
            state, state, res, error, now, ids) < 0)
        center_log("task %lld: cannot record its end: %s", id, err);
}

bool task_should_cancel(struct db *db, long long id)
{
    if (task_cancel_flag(id))
        return true;
    char ids[24], err[ERRLEN];
    struct db_res *r;
    fmt_ll(ids, id);
    if (DBQ(db, &r, err, "SELECT cancel_requested FROM tasks WHERE id = ?", ids) < 0)
        return false;
    bool c = db_int(r, 0, 0) != 0;
    db_res_free(r);
    return c;
}
