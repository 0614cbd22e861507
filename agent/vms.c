/* VMs of this host: specs under state_dir/vms/NAME/, their ferry-vmm
 * processes, and re-adoption of the ones still running when ferryd starts.
 *
 * A VM's directory holds spec.json, vmm.pid ("PID STARTTIME" while ferryd
 * believes it runs), control.sock, console.log and vmm.log (ferry-vmm's
 * stderr). The files are the truth: ferryd keeps no state a restart could
 * lose, and never stops a VM because it (re)started. Per-VM state lives in
 * struct vmrec (ferryd.h); migrate.c runs the migration legs on it. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent/ferryd.h"

#define START_TIMEOUT_MS 10000   /* until the new VMM's control socket answers */
#define STOP_TIMEOUT_MS 10000    /* after `quit`, before SIGKILL */

static const struct config *cfg;
static struct vmrec *vms;

struct vmrec *vms_first(void)
{
    return vms;
}

struct vmrec *vms_find(const char *name)
{
    for (struct vmrec *v = vms; v; v = v->next)
        if (!strcmp(v->name, name))
            return v;
    return NULL;
}

int vm_not_found(const char *name, char *err, size_t errlen)
{
    snprintf(err, errlen, "no VM named '%.64s'", name);
    return -ENOENT;
}

const char *spec_str(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

void vm_path(const struct vmrec *v, const char *file, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", v->dir, file);
}

static void forget_pid(struct vmrec *v)
{
    char path[4200];
    vm_path(v, "vmm.pid", path, sizeof(path));
    unlink(path);
    v->pid = 0;
}

/* Does the VM's ferry-vmm still run? Clears the pid of one that is gone. */
bool vm_alive(struct vmrec *v)
{
    if (v->pid && !proc_is_vmm(v->pid, v->starttime, v->control))
        forget_pid(v);
    return v->pid != 0;
}

uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Tap of the VM's NIC i: at most 15 characters (IFNAMSIZ), derived from
 * the whole UUID (a hash: given UUIDs may share a prefix), so it is the
 * same on every host (ferry-vmm's incoming side looks for the source's tap
 * name by default). */
static void tap_name(const struct vmrec *v, size_t i, char out[16])
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (const char *p = spec_str(v->spec, "uuid"); *p; p++)
        h = (h ^ (uint8_t)tolower((unsigned char)*p)) * 16777619u;
    snprintf(out, 16, "fy%08xn%u", h, (unsigned)(i % 10));
}

static void remove_taps(const struct vmrec *v)
{
    json_object *nics;
    if (!json_object_object_get_ex(v->spec, "nics", &nics))
        return;
    for (size_t i = 0; i < json_object_array_length(nics); i++) {
        char tap[16];
        tap_name(v, i, tap);
        tap_remove(tap);
    }
}

/* The VM as the API shows it: spec (in the list too: the manager's
 * pre-migration checks read it), power state, pid, and the VMM's own
 * status (state "unknown" with a reason when its socket does not answer). */
static json_object *vm_json(struct vmrec *v, bool full)
{
    json_object *o = json_object_new_object(), *st = NULL;
    char err[ERRLEN];
    const char *state = "stopped";
    json_object_object_add(o, "name", json_object_new_string(v->name));
    json_object_object_add(o, "uuid", json_object_new_string(spec_str(v->spec, "uuid")));
    if (vm_alive(v) && v->leg == LEG_INCOMING) {
        state = "incoming";   /* no control socket until the VM resumes here */
    } else if (vm_alive(v)) {
        state = "unknown";
        if (vmm_call(v->control, "status", NULL, &st, err, sizeof(err)) == 0)
            state = spec_str(st, "state") ? spec_str(st, "state") : "unknown";
        else
            json_object_object_add(o, "error", json_object_new_string(err));
    }
    json_object_object_add(o, "state", json_object_new_string(state));
    json_object_object_add(o, "pid", v->pid ? json_object_new_int(v->pid) : NULL);
    json_object_object_add(o, "spec", json_object_get(v->spec));
    if (v->leg != LEG_NONE)
        json_object_object_add(o, "migration_leg", leg_json(v));
    if (full && st)
        json_object_object_add(o, "vmm", json_object_get(st));
    json_object_put(st);
    return o;
}

static struct vmrec *vmrec_new(const char *name, json_object *spec)
{
    struct vmrec *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    snprintf(v->name, sizeof(v->name), "%s", name);
    snprintf(v->dir, sizeof(v->dir), "%s/vms/%s", cfg->state_dir, name);
    /* vms_create checked that the path fits a socket address */
    if ((size_t)snprintf(v->control, sizeof(v->control), "%s/control.sock", v->dir) >= sizeof(v->control))
        agent_log("VM %s: control socket path too long", name);
    v->spec = spec;
    struct vmrec **pp = &vms;   /* sorted by name: a stable listing */
    while (*pp && strcmp((*pp)->name, name) < 0)
        pp = &(*pp)->next;
    v->next = *pp;
    *pp = v;
    return v;
}

/* Adopt the VMM a previous ferryd started, if its pid file names a live
 * one; a VMM whose socket does not answer is left alone (reported as
 * "unknown"): ferryd never stops a VM it is unsure about. */
static void adopt(struct vmrec *v)
{
    char path[4200], err[ERRLEN];
    vm_path(v, "vmm.pid", path, sizeof(path));
    char *text = read_file(path, 256, NULL);
    int pid = 0;
    if (!text)
        return;
    if (sscanf(text, "%d %llu", &pid, &v->starttime) == 2 && pid > 0)
        v->pid = pid;
    free(text);
    leg_load(v);
    if (!vm_alive(v)) {
        agent_log("VM %s: its ferry-vmm is gone, VM is stopped", v->name);
        return;
    }
    if (v->leg == LEG_INCOMING)   /* migrate.c's poll sees it resume or fail */
        agent_log("VM %s: adopted incoming ferry-vmm pid %d", v->name, v->pid);
    else if (vmm_call(v->control, "status", NULL, NULL, err, sizeof(err)) < 0)
        agent_log("VM %s: adopted ferry-vmm pid %d, but its control socket fails: %s", v->name,
                  v->pid, err);
    else
        agent_log("VM %s: adopted running ferry-vmm pid %d", v->name, v->pid);
}

static void load_vm(const char *name)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof(dir), "%s/vms/%s", cfg->state_dir, name);
    snprintf(path, sizeof(path), "%s/spec.json", dir);
    size_t len;
    char *text = read_file(path, 1 << 20, &len), err[ERRLEN];
    if (!text) {
        /* a create that died before its spec was in place */
        snprintf(path, sizeof(path), "%s/spec.json.tmp", dir);
        unlink(path);
        if (rmdir(dir) < 0)
            agent_log("VM directory %s has no spec.json: ignored", dir);
        return;
    }
    json_object *spec = json_parse_strict(text, len, err, sizeof(err));
    free(text);
    struct vmrec *v = NULL;
    if (!spec || !spec_str(spec, "uuid") || !spec_name_valid(name))
        agent_log("%s: not a VM spec%s%s: ignored", path, spec ? "" : ": ", spec ? "" : err);
    else
        v = vmrec_new(name, spec);
    if (v)
        adopt(v);
    else
        json_object_put(spec);
}

int vms_init(const struct config *c, char *err, size_t errlen)
{
    cfg = c;
    char path[4096];
    snprintf(path, sizeof(path), "%s/vms", c->state_dir);
    if ((mkdir(c->state_dir, 0700) < 0 && errno != EEXIST) || (mkdir(path, 0700) < 0 && errno != EEXIST)) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    DIR *d = opendir(path);
    if (!d) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            load_vm(de->d_name);
    closedir(d);
    return 0;
}

json_object *vms_list(void)
{
    json_object *a = json_object_new_array();
    for (struct vmrec *v = vms; v; v = v->next)
        json_object_array_add(a, vm_json(v, false));
    return a;
}

int vms_get(const char *name, json_object **out, char *err, size_t errlen)
{
    struct vmrec *v = vms_find(name);
    if (!v)
        return vm_not_found(name, err, errlen);
    *out = vm_json(v, true);
    return 0;
}

int vms_create(json_object *in, bool dry_run, json_object **out, char *err, size_t errlen)
{
    json_object *spec = spec_validate(in, cfg, err, errlen);
    struct vmrec *v;
    if (!spec)
        return -EINVAL;
    int rc = vm_define(spec, dry_run, &v, err, errlen);
    if (rc < 0)
        return rc;
    if (dry_run) {   /* every check made, nothing stored */
        *out = json_object_new_object();
        json_object_object_add(*out, "spec", spec);
        return 0;
    }
    agent_log("VM %s: created", v->name);
    *out = vm_json(v, true);
    return 0;
}

int vm_define(json_object *spec, bool dry_run, struct vmrec **out, char *err, size_t errlen)
{
    const char *name = spec_str(spec, "name"), *uuid = spec_str(spec, "uuid");
    int rc = -EEXIST;
    struct vmrec *v;
    if (vms_find(name)) {
        snprintf(err, errlen, "a VM named '%s' exists already", name);
        goto fail;
    }
    for (v = vms; v; v = v->next)
        if (!strcasecmp(spec_str(v->spec, "uuid"), uuid)) {
            snprintf(err, errlen, "VM '%s' has uuid %s already", v->name, uuid);
            goto fail;
        }
    rc = -EINVAL;
    if (strlen(cfg->state_dir) + strlen(name) + sizeof("/vms//control.sock") >
        sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(err, errlen, "spec.name: too long for a control socket path under %s",
                 cfg->state_dir);
        goto fail;
    }
    if (dry_run) {
        *out = NULL;
        return 0;
    }
    char dir[4096], path[4200];
    snprintf(dir, sizeof(dir), "%s/vms/%s", cfg->state_dir, name);
    if (mkdir(dir, 0700) < 0) {
        rc = errno == EEXIST ? -EEXIST : -errno;
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/spec.json", dir);
    const char *text = json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (write_file_atomic(path, text, strlen(text), err, errlen) < 0) {
        rc = -EIO;
        rmdir(dir);
        goto fail;
    }
    v = vmrec_new(name, spec);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    *out = v;
    return 0;
fail:
    json_object_put(spec);
    return rc;
}

/* The last non-empty line of the VMM's stderr: why it exited. */
void vm_last_words(const struct vmrec *v, char *out, size_t outlen)
{
    char path[4200];
    vm_path(v, "vmm.log", path, sizeof(path));
    char *text = read_file(path, 1 << 20, NULL);
    char *end = text ? text + strlen(text) : NULL;
    while (end && end > text && (end[-1] == '\n' || end[-1] == ' '))
        *--end = '\0';
    const char *line = end ? strrchr(text, '\n') : NULL;
    line = line ? line + 1 : text;
    snprintf(out, outlen, "%s", line && *line ? line : "(no message)");
    free(text);
}

static int kernel_args(json_object *boot, char **argv, int n)
{
    argv[n++] = "--kernel";
    argv[n++] = (char *)spec_str(boot, "kernel");
    if (spec_str(boot, "initrd")) {
        argv[n++] = "--initrd";
        argv[n++] = (char *)spec_str(boot, "initrd");
    }
    if (spec_str(boot, "cmdline")) {
        argv[n++] = "--append";
        argv[n++] = (char *)spec_str(boot, "cmdline");
    }
    return n;
}

/* ferry-vmm's command line for the spec, or for receiving the VM on
 * `incoming` (HOST:PORT): the kernel, disks and MACs then come from the
 * stream. Strings point into the spec or into bufs. NICs' taps are created
 * on their port group's bridge. The host's credentials go to every VMM:
 * they authenticate the migration streams, out and in. */
int vm_argv(struct vmrec *v, const char *incoming, char **argv, char bufs[][4200], char *err,
            size_t errlen)
{
    json_object *boot, *a;
    int n = 0, b = 0;
    json_object_object_get_ex(v->spec, "boot", &boot);
    argv[n++] = cfg->ferry_vmm;
    argv[n++] = "--tls-dir";
    argv[n++] = cfg->tls_dir;
    if (incoming) {
        argv[n++] = "--incoming";
        argv[n++] = (char *)incoming;
    } else {
        n = kernel_args(boot, argv, n);
    }
    json_object_object_get_ex(v->spec, "vcpus", &a);
    snprintf(bufs[b], sizeof(bufs[b]), "%d", json_object_get_int(a));
    argv[n++] = "--cpus";
    argv[n++] = bufs[b++];
    json_object_object_get_ex(v->spec, "memory_mib", &a);
    snprintf(bufs[b], sizeof(bufs[b]), "%dM", json_object_get_int(a));
    argv[n++] = "--mem";
    argv[n++] = bufs[b++];
    /* A VM reserving all its memory gets it faulted in before it starts,
     * or before an incoming VMM listens (a prepared destination: pages then
     * land in memory that is already there). Partial reservations stay an
     * admission check: faulting in all of a mostly idle guest's RAM would
     * commit what it does not use. */
    json_object *resv;
    if (json_object_object_get_ex(v->spec, "memory_reservation_mib", &resv) &&
        json_object_get_int(resv) == json_object_get_int(a))
        argv[n++] = "--prealloc";
    if (json_object_object_get_ex(v->spec, "cpu_features", &a)) {
        size_t len = 0;   /* the names are short: 4200 bytes hold every one of them */
        for (size_t i = 0; i < json_object_array_length(a); i++)
            len += (size_t)snprintf(bufs[b] + len, sizeof(bufs[b]) - len, "%s%s", i ? "," : "",
                                    json_object_get_string(json_object_array_get_idx(a, i)));
        argv[n++] = "--cpu-features";
        argv[n++] = bufs[b++];
    }
    /* stdio, not file:PATH: micro-guests print through the test device to
     * stdout, so the VMM's stdout (console.log, O_APPEND) carries both that
     * and the UART; stdin is /dev/null. */
    argv[n++] = "--console";
    argv[n++] = "stdio";
    argv[n++] = "--control";
    argv[n++] = v->control;
    if (!incoming && json_object_object_get_ex(v->spec, "disks", &a))
        for (size_t i = 0; i < json_object_array_length(a); i++) {
            json_object *d = json_object_array_get_idx(a, i), *ro;
            const struct datastore *ds = config_datastore(cfg, spec_str(d, "datastore"));
            if (!ds) {
                snprintf(err, errlen, "spec.disks[%zu]: datastore '%s' is no longer configured",
                         i, spec_str(d, "datastore"));
                return -ENXIO;
            }
            bool readonly = json_object_object_get_ex(d, "readonly", &ro) && json_object_get_boolean(ro);
            snprintf(bufs[b], sizeof(bufs[b]), "%s/%s%s", ds->path, spec_str(d, "path"),
                     readonly ? ",readonly" : "");
            argv[n++] = "--disk";
            argv[n++] = bufs[b++];
        }
    if (json_object_object_get_ex(v->spec, "nics", &a))
        for (size_t i = 0; i < json_object_array_length(a); i++) {
            json_object *nic = json_object_array_get_idx(a, i);
            const struct network *net = config_network(cfg, spec_str(nic, "portgroup"));
            char tap[16];
            tap_name(v, i, tap);
            if (!net || !bridge_exists(net->bridge)) {
                snprintf(err, errlen, "spec.nics[%zu]: port group '%s' has no bridge on this host",
                         i, spec_str(nic, "portgroup"));
                return -ENXIO;
            }
            if (tap_setup(tap, net->bridge, err, errlen) < 0)
                return -EIO;
            snprintf(bufs[b], sizeof(bufs[b]), incoming ? "tap=%s" : "tap=%s,mac=%s", tap,
                     spec_str(nic, "mac"));
            argv[n++] = "--net";
            argv[n++] = bufs[b++];
        }
    argv[n] = NULL;
    return 0;
}

/* What ferry-vmm cannot do yet is refused here, not started half-done. */
int vm_check_supported(struct vmrec *v, cpu_set_t *aff, bool *have_aff, char *err, size_t errlen)
{
    json_object *a;
    if (json_object_object_get_ex(v->spec, "cdrom", NULL)) {
        snprintf(err, errlen, "cdrom is not supported by ferry-vmm yet");
        return -ENOTSUP;
    }
    if (json_object_object_get_ex(v->spec, "shared_disks", &a) && json_object_array_length(a)) {
        snprintf(err, errlen, "shared multi-writer disks are not supported by ferry-vmm yet");
        return -ENOTSUP;
    }
    /* A reservation is an admission check: the memory must be available
     * now (ferry-vmm does not pin guest RAM). */
    if (json_object_object_get_ex(v->spec, "memory_reservation_mib", &a) && json_object_get_int(a)) {
        char *mi = read_file("/proc/meminfo", 1 << 20, NULL);
        const char *p = mi ? strstr(mi, "MemAvailable:") : NULL;
        long long avail_mib = p ? atoll(p + 13) / 1024 : 0;
        free(mi);
        if (avail_mib < json_object_get_int(a)) {
            snprintf(err, errlen, "memory reservation of %d MiB exceeds the host's %lld MiB available",
                     json_object_get_int(a), avail_mib);
            return -ENOMEM;
        }
    }
    *have_aff = json_object_object_get_ex(v->spec, "cpu_affinity", &a);
    if (*have_aff) {
        cpu_set_t allowed;
        CPU_ZERO(aff);
        sched_getaffinity(0, sizeof(allowed), &allowed);
        for (size_t i = 0; i < json_object_array_length(a); i++) {
            int cpu = json_object_get_int(json_object_array_get_idx(a, i));
            if (!CPU_ISSET(cpu, &allowed)) {
                snprintf(err, errlen, "cpu_affinity: CPU %d is not available to ferryd", cpu);
                return -ENXIO;
            }
            CPU_SET(cpu, aff);
        }
    }
    return 0;
}

/* Spawn the VM's ferry-vmm with argv (taps made already). */
int vm_spawn(struct vmrec *v, char *const argv[], const cpu_set_t *aff, char *err, size_t errlen)
{
    char console[4200], log[4200], pidfile[4200];
    vm_path(v, "console.log", console, sizeof(console));
    vm_path(v, "vmm.log", log, sizeof(log));
    vm_path(v, "vmm.pid", pidfile, sizeof(pidfile));
    struct spawn_files files = { console, log, pidfile };
    pid_t pid;
    if (proc_spawn(argv, &files, aff, &pid, &v->starttime, err, errlen) < 0) {
        remove_taps(v);
        return -EIO;
    }
    v->pid = pid;
    return 0;
}

int vms_start(const char *name, json_object **out, char *err, size_t errlen)
{
    struct vmrec *v = vms_find(name);
    if (!v)
        return vm_not_found(name, err, errlen);
    if (vm_alive(v)) {
        snprintf(err, errlen, "VM '%s' is running already (pid %d)", name, v->pid);
        return -EBUSY;
    }
    /* The stored spec again, against today's configuration: a datastore
     * or port group may have gone, or spec.json been edited by hand. */
    json_object *valid = spec_validate(v->spec, cfg, err, errlen);
    if (!valid)
        return -ENXIO;
    json_object_put(valid);
    cpu_set_t aff;
    bool have_aff;
    char *argv[64], bufs[16][4200];
    int rc = vm_check_supported(v, &aff, &have_aff, err, errlen);
    if (rc < 0 || (rc = vm_argv(v, NULL, argv, bufs, err, errlen)) < 0 ||
        (rc = vm_spawn(v, argv, have_aff ? &aff : NULL, err, errlen)) < 0)
        return rc;
    /* Wait (blocking the loop, briefly) until the VM answers or its VMM
     * exits, so the reply says which. */
    uint64_t deadline = now_ms() + START_TIMEOUT_MS;
    char cerr[ERRLEN];
    while (vmm_call(v->control, "status", NULL, NULL, cerr, sizeof(cerr)) < 0) {
        if (!vm_alive(v)) {
            char why[ERRLEN];
            vm_last_words(v, why, sizeof(why));
            snprintf(err, errlen, "ferry-vmm exited at start: %s", why);
            remove_taps(v);
            return -EIO;
        }
        if (now_ms() > deadline) {
            snprintf(err, errlen, "ferry-vmm pid %d started but its control socket fails: %s",
                     (int)v->pid, cerr);
            return -EIO;
        }
        usleep(10000);
    }
    agent_log("VM %s: started, ferry-vmm pid %d", name, (int)v->pid);
    *out = vm_json(v, true);
    return 0;
}

/* Hard stop: `quit` ends the VMM at once; SIGKILL if it does not (or at
 * once with `kill`, for a VMM that has no control socket yet). */
void vm_halt(struct vmrec *v, bool kill_now)
{
    char qerr[ERRLEN];
    pid_t pid = v->pid;
    uint64_t deadline = now_ms() + STOP_TIMEOUT_MS;
    if (kill_now) {
        kill(pid, SIGKILL);
    } else if (vmm_call(v->control, "quit", NULL, NULL, qerr, sizeof(qerr)) < 0) {
        agent_log("VM %s: quit failed (%s): killing pid %d", v->name, qerr, (int)pid);
        kill(pid, SIGKILL);
    }
    while (vm_alive(v)) {
        if (now_ms() > deadline) {
            agent_log("VM %s: still running %d s after quit: killing pid %d", v->name,
                      STOP_TIMEOUT_MS / 1000, (int)pid);
            kill(pid, SIGKILL);
            deadline = UINT64_MAX;
        }
        usleep(10000);
    }
    remove_taps(v);
}

/* A VM with a migration leg under way is stopped or deleted only through
 * the leg's own endpoints (cancel, abort). */
static int check_no_leg(const struct vmrec *v, char *err, size_t errlen)
{
    if (v->leg == LEG_NONE)
        return 0;
    snprintf(err, errlen, "VM '%s' is %s: %s first", v->name,
             v->leg == LEG_INCOMING ? "arriving by migration" : "migrating",
             v->leg == LEG_INCOMING ? "abort the incoming migration" : "cancel the migration");
    return -EBUSY;
}

int vms_stop(const char *name, json_object **out, char *err, size_t errlen)
{
    struct vmrec *v = vms_find(name);
    if (!v)
        return vm_not_found(name, err, errlen);
    if (!vm_alive(v)) {
        snprintf(err, errlen, "VM '%s' is not running", name);
        return -EBUSY;
    }
    int rc = check_no_leg(v, err, errlen);
    if (rc < 0)
        return rc;
    pid_t pid = v->pid;
    vm_halt(v, false);
    agent_log("VM %s: stopped (was pid %d)", name, (int)pid);
    *out = vm_json(v, true);
    return 0;
}

/* Remove the VM's files and record (its VMM is gone). */
void vm_forget(struct vmrec *v)
{
    struct vmrec **pp;
    remove_taps(v);
    static const char *const files[] = { "control.sock", "console.log", "vmm.log", "vmm.pid",
                                         "leg", "leg.tmp", "spec.json.tmp", "spec.json" };
    char path[4200];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        vm_path(v, files[i], path, sizeof(path));
        unlink(path);
    }
    if (rmdir(v->dir) < 0) {
        /* the spec is gone already: the VM is deleted, a stray file stays */
        agent_log("VM %s: cannot remove %s: %s", v->name, v->dir, strerror(errno));
    }
    for (pp = &vms; *pp != v; pp = &(*pp)->next)
        ;
    *pp = v->next;
    json_object_put(v->spec);
    free(v);
}

int vms_delete(const char *name, char *err, size_t errlen)
{
    struct vmrec *v = vms_find(name);
    if (!v)
        return vm_not_found(name, err, errlen);
    if (vm_alive(v)) {
        snprintf(err, errlen, "VM '%s' is running: stop it first", name);
        return -EBUSY;
    }
    vm_forget(v);
    agent_log("VM %s: deleted", name);
    return 0;
}

int vms_console_path(const char *name, const char **path, char *err, size_t errlen)
{
    static char buf[4200];
    struct vmrec *v = vms_find(name);
    if (!v)
        return vm_not_found(name, err, errlen);
    vm_path(v, "console.log", buf, sizeof(buf));
    *path = buf;
    return 0;
}
