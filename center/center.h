/* ferry-center, the manager (docs/center.md): shared declarations. */
#ifndef FERRY_CENTER_CENTER_H
#define FERRY_CENTER_CENTER_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "center/db.h"

#define ERRLEN 512

struct center_cfg {
    const char *db_url;
    const char *tls_dir;     /* the cluster CA and the manager's own identity */
    const char *state_dir;   /* issued host certificates */
    const char *listen;
    int workers;             /* task worker threads */
};
extern struct center_cfg cfg;

/* util.c */
void center_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void now_iso(char out[40]);            /* 2026-12-04T06:12:10.123Z */
void iso_after(char out[40], long seconds);
void fmt_ll(char out[24], long long v);
/* The whole text must be one JSON object; else NULL and "malformed JSON ...". */
json_object *json_parse_object(const char *text, size_t len, char *err, size_t errlen);
/* Every key of o must be in allowed (NULL-terminated): else "unknown field 'k'". */
int json_only(json_object *o, const char *const *allowed, char *err, size_t errlen);
/* o[key] as a string: -1 with "field 'key' is required" / "must be a string". */
int json_str(json_object *o, const char *key, bool required, const char **out, char *err, size_t errlen);
bool name_valid(const char *s);          /* [A-Za-z0-9][A-Za-z0-9._-]{0,62} */
void sha256_hex(const char *text, char out[65]);
int random_token(const char *prefix, char *out, size_t outlen);
json_object *json_text_or_null(const char *s);     /* NULL -> JSON null */
json_object *json_parsed_or_null(const char *text); /* stored JSON text -> object */
char *read_text(const char *path, size_t max);   /* NUL-terminated, or NULL (errno) */
bool address_valid(const char *a);               /* HOST:PORT or [IPV6]:PORT */
/* Lenient reads of what hosts report: a missing or mistyped key is 0, ""
 * or NULL (o may be NULL). */
long long jint(json_object *o, const char *key);
const char *jstr(json_object *o, const char *key);
json_object *jarr(json_object *o, const char *key);

/* auth.c: bearer tokens, stored as SHA-256 hashes */
int token_create(struct db *db, const char *role, const char *desc, char *token, size_t toklen,
                 char *err, size_t errlen);
/* The role of token ("admin"/"readonly"), or NULL. */
const char *token_role(struct db *db, const char *token, long long *id);
/* First start (no tokens at all): make an admin token and print it once. */
int auth_bootstrap(struct db *db, char *err, size_t errlen);

/* events.c */
void inv_event(struct db *db, const char *severity, const char *kind, const char *target,
               long long task_id, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
json_object *event_row_json(const struct db_res *r, int row);
#define EVENT_COLS "id, time, severity, kind, target, message, task_id"

/* tasks.c: persisted tasks run by worker threads, each with its own DB connection */
long long task_create(struct db *db, const char *kind, const char *target, json_object *params,
                      const char *by, char *err, size_t errlen);
json_object *task_row_json(const struct db_res *r, int row);
#define TASK_COLS "id, kind, target, state, percent, phase, result, error, cancel_requested," \
    " created_by, created, started, finished"
int tasks_reconcile(struct db *db, char *err, size_t errlen);
int tasks_start(int n, char *err, size_t errlen);
void tasks_stop(void);
void tasks_kick(void);
/* 200 cancelled or cancel requested (*out: the task), 404, 409; reason in err. */
int task_cancel(struct db *db, long long id, json_object **out, char *err, size_t errlen);
bool task_cancel_flag(long long id);
/* The manager is shutting down: running tasks stop where they are and are
 * reconciled at the next start, as after a crash. */
bool tasks_stopping(void);
void task_progress(struct db *db, long long id, int percent, const char *phase);
/* End a running task: success (result), error (error) or cancelled. */
void task_finish(struct db *db, long long id, const char *state, json_object *result, const char *error);
/* A user asked to cancel task id (this manager's flag, or the database's). */
bool task_should_cancel(struct db *db, long long id);

/* migrate.c: the vm.migrate task; after a restart it resumes from what
 * the hosts say (params "resume") */
void task_vm_migrate(struct db *db, long long id, json_object *params);
/* admission.c: migrations per host (by its migration link's speed label)
 * and per datastore. running: the params of the running vm.migrate tasks. */
int admission_host_limit(int speed_mbps);
int host_migration_mbps(struct db *db, const char *host);   /* 0: none or unknown */
json_object *admission_running(struct db *db, char *err, size_t errlen);
bool admission_admit(struct db *db, json_object *running, json_object *params);

/* hosts.c: enrolment and host add, against ferryd */
int host_enrol_issue(const char *name, json_object **out, char *err, size_t errlen);
void task_host_add(struct db *db, long long id, json_object *params);
void task_host_refresh(struct db *db, long long id, json_object *params);
/* ferry.c: GET https://address/path from a ferryd with the manager's
 * certificate; the peer must present a certificate for cn. */
json_object *ferryd_get(const char *address, const char *cn, const char *path, long long task_id,
                        char *err, size_t errlen);
/* Any method, with an optional JSON body; *status is the HTTP status, 0
 * when the host did not answer (or presented the wrong certificate). */
json_object *ferryd_call(const char *address, const char *cn, const char *method, const char *path,
                         json_object *body, long long task_id, long *status, char *err, size_t errlen);

/* baseline.c: CPU baselines (EVC). The names of want (a JSON array) that
 * a host's facts lack, ", "-separated in out; their number. */
int features_missing(json_object *want, json_object *facts, char *out, size_t outlen);
/* Lock the cluster's row for this transaction; its name, and its baseline
 * (NULL for none). */
int baseline_lock(struct db *db, const char *cluster_id, char *name, size_t namelen,
                  json_object **baseline, char *err, size_t errlen);

/* api_vmops.c: VM create, start, stop, delete through the VM's host (the
 * tasks that do it; api_vm_ops, the endpoints, is with the API below) */
void task_vm_create(struct db *db, long long id, json_object *params);
void task_vm_power(struct db *db, long long id, json_object *params);
void task_vm_delete(struct db *db, long long id, json_object *params);

/* api.c: the HTTP front (auth, routing, replies); api_inv.c: the handlers */
struct evhttp;
struct evhttp_request;
struct req {
    struct evhttp_request *r;
    struct db *db;
    int method;               /* enum evhttp_cmd_type */
    const char *role;         /* admin, readonly; NULL for /v1/enrol */
    char who[32];             /* "token:ID", recorded as a task's creator */
    json_object *body;        /* a POST's parsed object */
};
void api_register(struct evhttp *http, struct db *db);
void reply_json(struct req *q, int code, json_object *o);
void reply_error(struct req *q, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* 202 {"task": the task}, after waking the workers for it */
void reply_task(struct req *q, long long id);
/* query parameter key, or NULL */
const char *query_param(struct req *q, const char *key, char *out, size_t outlen);
void api_clusters(struct req *q, const char *rest);
void api_hosts(struct req *q, const char *rest);
void api_enrolments(struct req *q, const char *rest);
void api_enrol(struct req *q, const char *rest);
void api_tasks(struct req *q, const char *rest);
void api_events(struct req *q, const char *rest);
void api_datastores(struct req *q, const char *rest);
void api_networks(struct req *q, const char *rest);
void api_vms(struct req *q, const char *rest);
void api_vm_migrate(struct req *q, const char *rest);   /* api_migrate.c: rest "NAME/migrate" */
void api_vm_ops(struct req *q, const char *rest);
void api_tokens(struct req *q, const char *rest);
void api_cluster_baseline(struct req *q, const char *cluster);   /* baseline.c */
void api_vm_checks(struct req *q, const char *vm);               /* api_checks.c */

#endif
