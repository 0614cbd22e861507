/* Migration legs (docs/ferryd.md, "Migration"): this host receives a VM
 * (an `--incoming` ferry-vmm on a migration interface, with the host's
 * credentials) or sends one (the source VMM's `migrate`, bound to this
 * host's migration interface), and ends each leg from what the VMMs say.
 *
 * Exactly once: the VMMs' protocol decides who runs the VM (the
 * destination only after COMMIT, the source only without it); ferryd only
 * follows. A destination forgets its VM only while that VM has not
 * resumed there (no control socket yet); a source forgets its VM only once
 * its VMM reports the migration completed (or said so as its last words).
 * The leg is kept in the VM's file "leg", so a restarted ferryd goes on. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/ferryd.h"

#define LISTEN_TIMEOUT_MS 10000   /* until the incoming VMM listens */
#define POLL_MS 250
#define DEPARTED 32   /* final statuses kept of VMs that left */

static const struct config *cfg;

/* The final migrate-status of the VMs that left this host, so the manager
 * can read the migration's numbers after the VM was forgotten here (kept
 * until ferryd exits or DEPARTED more VMs left). */
static struct departed {
    char name[64];
    json_object *status;
} departed[DEPARTED];
static int departed_next;

static void departed_add(const struct vmrec *v, json_object *status)
{
    struct departed *d = &departed[departed_next++ % DEPARTED];
    json_object_put(d->status);
    snprintf(d->name, sizeof(d->name), "%s", v->name);
    d->status = json_object_get(status);
    json_object *leg = json_object_new_object();
    json_object_object_add(leg, "leg", json_object_new_string("departed"));
    json_object_object_add(leg, "to", json_object_new_string(v->peer));
    json_object_object_add(status, "leg", leg);
}

static json_object *departed_find(const char *name)
{
    for (int i = 1; i <= DEPARTED; i++) {   /* the latest departure first */
        struct departed *d = &departed[(departed_next - i + DEPARTED) % DEPARTED];
        if (d->status && !strcmp(d->name, name))
            return json_object_get(d->status);
    }
    return NULL;
}

static const char *const leg_names[] = { "none", "incoming", "migrating" };

json_object *leg_json(const struct vmrec *v)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "leg", json_object_new_string(leg_names[v->leg]));
    json_object_object_add(o, v->leg == LEG_INCOMING ? "address" : "to",
                           json_object_new_string(v->peer));
    return o;
}

static int leg_set(struct vmrec *v, enum vm_leg leg, const char *peer, char *err, size_t errlen)
{
    char path[4200], text[160];
    vm_path(v, "leg", path, sizeof(path));
    if (leg == LEG_NONE) {
        unlink(path);
    } else {
        int n = snprintf(text, sizeof(text), "%s %s\n", leg_names[leg], peer);
        if (write_file_atomic(path, text, (size_t)n, err, errlen) < 0)
            return -EIO;
    }
    v->leg = leg;
    snprintf(v->peer, sizeof(v->peer), "%s", leg == LEG_NONE ? "" : peer);
    return 0;
}

void leg_load(struct vmrec *v)
{
    char path[4200], name[16], peer[128];
    vm_path(v, "leg", path, sizeof(path));
    char *text = read_file(path, 256, NULL);
    int fields = text ? sscanf(text, "%15s %127s", name, peer) : 0;
    free(text);
    for (int l = LEG_INCOMING; fields == 2 && l <= LEG_MIGRATING; l++)
        if (!strcmp(name, leg_names[l])) {
            v->leg = (enum vm_leg)l;
            snprintf(v->peer, sizeof(v->peer), "%s", peer);
        }
}

/* The VMM's "waiting for an incoming migration on ADDR (port N, ...)". */
static int listen_port(const struct vmrec *v)
{
    char path[4200];
    vm_path(v, "vmm.log", path, sizeof(path));
    char *text = read_file(path, 1 << 20, NULL);
    const char *p = text ? strstr(text, "waiting for an incoming migration on ") : NULL;
    int port = 0;
    if (p && (p = strstr(p, "(port ")))
        port = atoi(p + 6);
    free(text);
    return port;
}

static const struct mig_iface *interface_find(const char *addr, char *err, size_t errlen)
{
    if (!cfg->nmigs) {
        snprintf(err, errlen, "host %s has no migration interface", cfg->host_name);
        return NULL;
    }
    for (int i = 0; addr && i < cfg->nmigs; i++)
        if (!strcmp(cfg->migs[i].address, addr))
            return &cfg->migs[i];
    if (addr)
        snprintf(err, errlen, "interface: '%.64s' is not a migration interface of host %s", addr,
                 cfg->host_name);
    return addr ? NULL : &cfg->migs[0];
}

/* Start the receiver and wait until it listens (or dies: its last words).
 * The leg is on disk first: a ferryd that dies meanwhile finds the
 * receiver again. */
static int incoming_spawn(struct vmrec *v, const struct mig_iface *mi, char *err, size_t errlen)
{
    char listen[160], *argv[64], bufs[16][4200];
    cpu_set_t aff;
    bool have_aff;
    snprintf(listen, sizeof(listen), strchr(mi->address, ':') ? "[%s]:0" : "%s:0", mi->address);
    int rc = vm_check_supported(v, &aff, &have_aff, err, errlen);
    if (rc < 0 || (rc = leg_set(v, LEG_INCOMING, listen, err, errlen)) < 0 ||
        (rc = vm_argv(v, listen, argv, bufs, err, errlen)) < 0 ||
        (rc = vm_spawn(v, argv, have_aff ? &aff : NULL, err, errlen)) < 0)
        return rc;
    uint64_t deadline = now_ms() + LISTEN_TIMEOUT_MS;
    int port;
    while (!(port = listen_port(v))) {
        if (!vm_alive(v)) {
            char why[ERRLEN];
            vm_last_words(v, why, sizeof(why));
            snprintf(err, errlen, "the incoming ferry-vmm exited: %s", why);
            return -EIO;
        }
        if (now_ms() > deadline) {
            snprintf(err, errlen, "the incoming ferry-vmm pid %d does not listen", (int)v->pid);
            return -EIO;
        }
        usleep(10000);
    }
    snprintf(listen, sizeof(listen), strchr(mi->address, ':') ? "[%s]:%d" : "%s:%d", mi->address,
             port);
    return leg_set(v, LEG_INCOMING, listen, err, errlen);
}

int migrate_incoming(const char *name, json_object *body, json_object **out, char *err,
                     size_t errlen)
{
    static const char *const keys[] = { "spec", "interface", NULL };
    json_object *in = NULL;
    const char *iface = NULL;
    struct vmrec *v;
    if (json_only_keys(body, "body", keys, err, errlen) < 0 ||
        json_get_typed(body, "spec", "body", json_type_object, &in, err, errlen) < 0 ||
        json_get_string(body, "interface", "body", false, &iface, err, errlen) < 0)
        return -EINVAL;
    if (!in) {
        snprintf(err, errlen, "body.spec: required");
        return -EINVAL;
    }
    json_object *spec = spec_validate(in, cfg, err, errlen);
    if (!spec)
        return -EINVAL;
    const struct mig_iface *mi = interface_find(iface, err, errlen);
    if (!mi || strcmp(spec_str(spec, "name"), name)) {
        if (mi)
            snprintf(err, errlen, "body.spec.name: '%.64s' is not the VM '%s' of the path",
                     spec_str(spec, "name"), name);
        json_object_put(spec);
        return !mi && !iface ? -ENXIO : -EINVAL;
    }
    int rc = vm_define(spec, false, &v, err, errlen);   /* owns spec */
    if (rc < 0)
        return rc;
    if ((rc = incoming_spawn(v, mi, err, errlen)) < 0) {
        if (vm_alive(v))
            vm_halt(v, true);
        vm_forget(v);
        return rc;
    }
    agent_log("VM %s: incoming on %s, ferry-vmm pid %d", name, v->peer, (int)v->pid);
    *out = json_object_new_object();
    json_object_object_add(*out, "address", json_object_new_string(v->peer));
    return 0;
}

/* A running VM of this host with no leg under way. */
static int leg_free(const char *name, struct vmrec **out, char *err, size_t errlen)
{
    struct vmrec *v = vms_find(name);
    if (!v)
        return vm_not_found(name, err, errlen);
    if (v->leg != LEG_NONE) {
        snprintf(err, errlen, "VM '%s' is %s already", name,
                 v->leg == LEG_INCOMING ? "arriving by migration" : "migrating");
        return -EBUSY;
    }
    if (!vm_alive(v)) {
        snprintf(err, errlen, "VM '%s' is not running", name);
        return -EBUSY;
    }
    *out = v;
    return 0;
}

/* The VMM's migrate arguments from the request; NULL with err. */
static json_object *migrate_args(json_object *body, const char **to, char *err, size_t errlen)
{
    static const char *const keys[] = { "to", "downtime_ms", "bandwidth_mbps", "streams",
                                        "priority", NULL };
    static const struct { const char *key; int64_t min, max; } nums[] = {
        { "downtime_ms", 1, 60000 }, { "bandwidth_mbps", 0, 10000000 }, { "streams", 0, 8 } };
    const char *prio = "normal";
    if (json_only_keys(body, "body", keys, err, errlen) < 0 ||
        json_get_string(body, "to", "body", true, to, err, errlen) < 0 ||
        json_get_string(body, "priority", "body", false, &prio, err, errlen) < 0)
        return NULL;
    if (strcmp(prio, "high") && strcmp(prio, "normal")) {
        snprintf(err, errlen, "body.priority: '%.16s' is neither high nor normal", prio);
        return NULL;
    }
    json_object *args = json_object_new_object();
    json_object_object_add(args, "uri", json_object_new_string(*to));
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        int64_t n = -1;
        if (json_get_int(body, nums[i].key, "body", false, nums[i].min, nums[i].max, &n, err,
                         errlen) < 0) {
            json_object_put(args);
            return NULL;
        }
        if (n >= 0)
            json_object_object_add(args, nums[i].key, json_object_new_int64(n));
    }
    return args;
}

int migrate_start(const char *name, json_object *body, json_object **out, char *err, size_t errlen)
{
    const char *to = NULL;
    struct vmrec *v = NULL;
    json_object *args = migrate_args(body, &to, err, errlen);
    if (!args)
        return -EINVAL;
    int rc = leg_free(name, &v, err, errlen);
    const struct mig_iface *mi = rc < 0 ? NULL : interface_find(NULL, err, errlen);
    if (rc == 0 && !mi)
        rc = -ENXIO;
    /* The streams leave from this host's migration interface. The leg is
     * on disk before the VMM starts, so a ferryd that dies now still
     * finds the VM leaving when it comes back. */
    if (rc == 0) {
        json_object_object_add(args, "via", json_object_new_string(mi->address));
        rc = leg_set(v, LEG_MIGRATING, to, err, errlen);
    }
    if (rc == 0 && vmm_call(v->control, "migrate", args, out, err, errlen) < 0) {
        char e2[ERRLEN];
        leg_set(v, LEG_NONE, "", e2, sizeof(e2));
        rc = -EBUSY;   /* the VMM's reason: its state, or the destination */
    }
    json_object_put(args);
    if (rc == 0)
        agent_log("VM %s: migrating to %s via %s", name, to, mi->address);
    return rc;
}

int migrate_status(const char *name, json_object **out, char *err, size_t errlen)
{
    struct vmrec *v = vms_find(name);
    if (!v && (*out = departed_find(name)))
        return 0;
    if (!v)
        return vm_not_found(name, err, errlen);
    if (v->leg == LEG_INCOMING && vm_alive(v)) {
        *out = json_object_new_object();   /* the VMM has no control socket yet */
        json_object_object_add(*out, "phase", json_object_new_string("incoming"));
    } else if (!vm_alive(v)) {
        snprintf(err, errlen, "VM '%s' is not running", name);
        return -EBUSY;
    } else if (vmm_call(v->control, "migrate-status", NULL, out, err, errlen) < 0) {
        return -EIO;
    }
    json_object_object_add(*out, "leg", leg_json(v));
    return 0;
}

int migrate_cancel(const char *name, json_object **out, char *err, size_t errlen)
{
    struct vmrec *v = vms_find(name);
    if (!v)
        return vm_not_found(name, err, errlen);
    if (v->leg != LEG_MIGRATING || !vm_alive(v)) {
        snprintf(err, errlen, "VM '%s' is not migrating from here", name);
        return -EBUSY;
    }
    if (vmm_call(v->control, "migrate-cancel", NULL, out, err, errlen) < 0)
        return -EBUSY;   /* e.g. past the switchover: too late */
    agent_log("VM %s: migration cancel requested", name);
    return 0;
}

/* Has the incoming VM resumed here? Its VMM opens the control socket only
 * after it took the VM over (COMMIT read, vCPUs started). */
static bool resumed(struct vmrec *v)
{
    char err[ERRLEN];
    return vmm_call(v->control, "status", NULL, NULL, err, sizeof(err)) == 0;
}

int migrate_abort(const char *name, char *err, size_t errlen)
{
    struct vmrec *v = vms_find(name);
    if (!v)
        return vm_not_found(name, err, errlen);
    if (v->leg != LEG_INCOMING) {
        snprintf(err, errlen, "VM '%s' is not arriving by migration here", name);
        return -EBUSY;
    }
    if (vm_alive(v) && resumed(v)) {
        snprintf(err, errlen, "VM '%s' has resumed here: it is no longer an incoming VM", name);
        return -EBUSY;
    }
    if (vm_alive(v))
        vm_halt(v, true);
    vm_forget(v);
    agent_log("VM %s: incoming migration aborted", name);
    return 0;
}

static void poll_incoming(struct vmrec *v)
{
    char err[ERRLEN];
    if (!vm_alive(v)) {
        vm_last_words(v, err, sizeof(err));
        agent_log("VM %s: incoming migration ended without the VM (%s): forgotten", v->name, err);
        vm_forget(v);
    } else if (resumed(v) && leg_set(v, LEG_NONE, "", err, sizeof(err)) == 0) {
        agent_log("VM %s: arrived by migration, running (ferry-vmm pid %d)", v->name, (int)v->pid);
    }
}

static void poll_migrating(struct vmrec *v)
{
    char err[ERRLEN];
    json_object *st = NULL;
    const char *phase = NULL;
    if (!vm_alive(v)) {
        /* Gone meanwhile (ferryd was down): its last words say whether
         * the VM left or the VMM died here. */
        vm_last_words(v, err, sizeof(err));
        if (strstr(err, "migrated away")) {
            agent_log("VM %s: migrated to %s: forgotten", v->name, v->peer);
            vm_forget(v);
        } else {
            agent_log("VM %s: ferry-vmm died while migrating (%s): VM is stopped", v->name, err);
            leg_set(v, LEG_NONE, "", err, sizeof(err));
        }
        return;
    }
    if (vmm_call(v->control, "migrate-status", NULL, &st, err, sizeof(err)) == 0)
        phase = spec_str(st, "phase");
    if (phase && !strcmp(phase, "completed")) {
        departed_add(v, st);
        vm_halt(v, false);
        agent_log("VM %s: migrated to %s: ferry-vmm quit, VM forgotten", v->name, v->peer);
        vm_forget(v);
    } else if (phase && (!strcmp(phase, "failed") || !strcmp(phase, "cancelled") ||
                         !strcmp(phase, "none"))) {
        agent_log("VM %s: migration to %s %s: the VM runs here", v->name, v->peer, phase);
        leg_set(v, LEG_NONE, "", err, sizeof(err));
    }
    json_object_put(st);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct vmrec *v = vms_first(), *next;
    for (; v; v = next) {
        next = v->next;   /* a leg's end may forget v */
        if (v->leg == LEG_INCOMING)
            poll_incoming(v);
        else if (v->leg == LEG_MIGRATING)
            poll_migrating(v);
    }
}

static struct event *poll_ev;

int migrate_init(struct event_base *base, const struct config *c)
{
    static const struct timeval every = { 0, POLL_MS * 1000 };
    cfg = c;
    poll_ev = event_new(base, -1, EV_PERSIST, on_poll, NULL);
    return poll_ev && event_add(poll_ev, &every) == 0 ? 0 : -1;
}

void migrate_fini(void)
{
    if (poll_ev)
        event_free(poll_ev);
    poll_ev = NULL;
}
