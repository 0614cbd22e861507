/* ferryd, the host agent: declarations shared by its modules.
 * main.c (options, event loop, TLS), config.c, api.c (HTTP routes), vms.c
 * (VM lifecycle), migrate.c (migration legs), proc.c (ferry-vmm processes, taps), spec.c (VM spec
 * validation), host.c (host facts), datastore.c (datastore markers),
 * util.c (JSON, files, logging). */
#ifndef FERRY_AGENT_FERRYD_H
#define FERRY_AGENT_FERRYD_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#define ERRLEN 256

/* ---- configuration (config.c) ---- */

struct mig_iface {            /* the vMotion vmknic analogue */
    char *address, *nic;
    int speed_mbps;
};

struct network {              /* a port group on a local bridge */
    char *name, *bridge;
};

struct datastore {
    char *name, *path;
    char uuid[37];            /* from the marker file, see datastore.c */
};

struct config {
    char *host_name, *listen, *state_dir, *tls_dir, *ferry_vmm;
    struct mig_iface *migs;
    int nmigs;
    struct network *nets;
    int nnets;
    struct datastore *dss;
    int ndss;
};

/* Load and check FILE (datastores are not opened yet); err has no file name.
 * c starts zeroed; config_free it also after a failure. */
int config_load(const char *path, struct config *c, char *err, size_t errlen);
void config_free(struct config *c);
const struct datastore *config_datastore(const struct config *c, const char *name);
const struct network *config_network(const struct config *c, const char *name);

/* ---- util.c ---- */

void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Strict JSON access: each returns 0, or -1 with a one-line reason naming
 * `what` (e.g. "spec.disks[1].path") in err. A missing optional key leaves
 * *out untouched and returns 0; `required` makes it an error. */
int json_only_keys(json_object *o, const char *what, const char *const *keys, char *err,
                   size_t errlen);
int json_get_string(json_object *o, const char *key, const char *what, bool required,
                    const char **out, char *err, size_t errlen);
int json_get_int(json_object *o, const char *key, const char *what, bool required, int64_t min,
                 int64_t max, int64_t *out, char *err, size_t errlen);
int json_get_bool(json_object *o, const char *key, const char *what, bool *out, char *err,
                  size_t errlen);
/* The object or array at key (NULL when absent), -1 on a wrong type. */
int json_get_typed(json_object *o, const char *key, const char *what, json_type type,
                   json_object **out, char *err, size_t errlen);
/* Parse exactly one JSON value from buf (trailing whitespace only). */
json_object *json_parse_strict(const char *buf, size_t len, char *err, size_t errlen);

/* Write data to path atomically (temporary file, fsync, rename, fsync dir). */
int write_file_atomic(const char *path, const char *data, size_t len, char *err, size_t errlen);
/* The whole file (malloc'd, NUL-terminated), or NULL with errno set. */
char *read_file(const char *path, size_t max, size_t *len);
/* A random RFC 4122 version 4 UUID, lower case. */
void uuid_generate(char out[37]);
bool uuid_valid(const char *s);

/* ---- datastore.c ---- */

/* Check the directory and read its UUID, creating the marker when missing. */
int datastore_open(struct datastore *d, char *err, size_t errlen);
/* Its facts; a datastore that was inaccessible is opened again first (it
 * may have been mounted since). */
json_object *datastore_json(struct datastore *d);

/* ---- host.c ---- */

/* Probe what does not change while ferryd runs (CPU, KVM's CPUID). */
int host_init(char *err, size_t errlen);
json_object *host_facts(struct config *c);
bool bridge_exists(const char *name);

/* ---- proc.c ---- */

/* Start argv[0] fully detached from ferryd (own session, re-parented to
 * init), stdout to out, stderr to log (both truncated), pinned to affinity
 * when given; the pid file ("PID STARTTIME") is written before the exec. */
struct spawn_files {
    const char *out, *log, *pid;
};
int proc_spawn(char *const argv[], const struct spawn_files *files, const cpu_set_t *affinity,
               pid_t *pid, unsigned long long *starttime, char *err, size_t errlen);
unsigned long long proc_starttime(pid_t pid);
bool proc_is_vmm(pid_t pid, unsigned long long starttime, const char *control);
/* One control-socket command (args borrowed, may be NULL); *result (when
 * asked) is the reply's result. */
int vmm_call(const char *control, const char *cmd, json_object *args, json_object **result,
             char *err, size_t errlen);
int tap_setup(const char *tap, const char *bridge, char *err, size_t errlen);
void tap_remove(const char *tap);

/* ---- spec.c ---- */

/* Validate a VM spec against the host's configuration and return the
 * normalised spec (uuid, MACs and defaults filled in), or NULL with err. */
json_object *spec_validate(json_object *in, const struct config *c, char *err, size_t errlen);
bool spec_name_valid(const char *name);

/* ---- vms.c ---- */

/* A migration leg under way, kept in the VM's file "leg" so that a
 * restarted ferryd goes on with it. */
enum vm_leg {
    LEG_NONE,
    LEG_INCOMING,     /* an --incoming ferry-vmm waits for the VM (peer: its address) */
    LEG_MIGRATING,    /* the VMM sends the VM away (peer: the destination) */
};

struct vmrec {
    char name[64];
    json_object *spec;
    char dir[4096], control[108];
    pid_t pid;                   /* 0: no ferry-vmm */
    unsigned long long starttime;
    enum vm_leg leg;
    char peer[128];
    struct vmrec *next;
};

/* Load the VMs under state_dir/vms and re-adopt those whose ferry-vmm runs. */
int vms_init(const struct config *c, char *err, size_t errlen);
/* The operations return 0, or a negative errno with a one-line reason:
 * -EINVAL bad input, -ENOENT no such VM, -EEXIST duplicate, -EBUSY wrong
 * power state, anything else a failure on this host. */
json_object *vms_list(void);
/* dry_run: every check, nothing stored; *out is {"spec": the spec as it
 * would be stored} (the manager asks before it queues a create). */
int vms_create(json_object *spec, bool dry_run, json_object **out, char *err, size_t errlen);
int vms_get(const char *name, json_object **out, char *err, size_t errlen);
int vms_start(const char *name, json_object **out, char *err, size_t errlen);
int vms_stop(const char *name, json_object **out, char *err, size_t errlen);
int vms_delete(const char *name, char *err, size_t errlen);
/* Path of the VM's console log (static buffer). */
int vms_console_path(const char *name, const char **path, char *err, size_t errlen);

/* The pieces of the VM table that migrate.c builds its legs from. */
struct vmrec *vms_find(const char *name);
struct vmrec *vms_first(void);
int vm_not_found(const char *name, char *err, size_t errlen);
const char *spec_str(json_object *o, const char *key);
void vm_path(const struct vmrec *v, const char *file, char *out, size_t outlen);
bool vm_alive(struct vmrec *v);                /* clears the pid of a VMM that is gone */
void vm_last_words(const struct vmrec *v, char *out, size_t outlen);   /* vmm.log's last line */
uint64_t now_ms(void);
/* Store a validated spec as a new VM; dry_run: only check that it could be
 * (*out NULL). The spec is the call's, also on failure; but a dry run that
 * passes leaves it to the caller. */
int vm_define(json_object *spec, bool dry_run, struct vmrec **out, char *err, size_t errlen);
int vm_check_supported(struct vmrec *v, cpu_set_t *aff, bool *have_aff, char *err, size_t errlen);
/* ferry-vmm's argv: the spec's VM, or (incoming = HOST:PORT) a receiver for it. */
int vm_argv(struct vmrec *v, const char *incoming, char **argv, char bufs[][4200], char *err,
            size_t errlen);
int vm_spawn(struct vmrec *v, char *const argv[], const cpu_set_t *aff, char *err, size_t errlen);
void vm_halt(struct vmrec *v, bool kill_now);  /* quit (or SIGKILL) and wait */
void vm_forget(struct vmrec *v);               /* files and record; the VMM is gone */

/* ---- migrate.c: the migration legs (docs/ferryd.md, "Migration") ---- */

int migrate_incoming(const char *name, json_object *body, json_object **out, char *err,
                     size_t errlen);
int migrate_start(const char *name, json_object *body, json_object **out, char *err, size_t errlen);
int migrate_status(const char *name, json_object **out, char *err, size_t errlen);
int migrate_cancel(const char *name, json_object **out, char *err, size_t errlen);
int migrate_abort(const char *name, char *err, size_t errlen);
/* A timer ends each leg: a VM that arrived runs as any other; one that
 * left is quit and forgotten; one whose leg failed stays as it was. */
struct event_base;
int migrate_init(struct event_base *base, const struct config *c);
void migrate_fini(void);   /* before the event base goes */
void leg_load(struct vmrec *v);
json_object *leg_json(const struct vmrec *v);

/* ---- api.c ---- */

struct evhttp;
void api_register(struct evhttp *http, struct config *c);

#endif
