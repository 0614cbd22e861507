/* Pre-migration compatibility checks, as vSphere makes them before a
 * vMotion: each problem is an error (the migration is refused) or a
 * warning (allowed), with a stable check ID and one sentence saying why.
 * Everything is read from the inventory (the VM's spec, the hosts' facts,
 * datastores and port groups as their ferryd last reported them), so
 * asking changes nothing. A powered-off VM moves without a live migration:
 * it skips the CPU, memory and migration-link checks, and what only binds
 * a running VM (affinity, shared disks, a missing bridge) is a warning. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "center/center.h"
#include "center/checks.h"

#define MIN_LINK_MBPS 1000        /* a migration interface below this is refused */
#define MIN_SHARE_MBPS 250        /* each migration's part of a link */

struct chk {
    struct db *db;
    json_object *report;
    int errors;
    const char *vm, *src, *dst;   /* names */
    char src_id[24], dst_id[24], cluster[64];
    bool live;                    /* powered on: moves by live migration */
    json_object *spec, *src_facts, *dst_facts, *baseline;
};

__attribute__((format(printf, 4, 5)))
static void add(struct chk *c, const char *check, bool error, const char *fmt, ...)
{
    char reason[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "check", json_object_new_string(check));
    json_object_object_add(o, "level", json_object_new_string(error ? "error" : "warning"));
    json_object_object_add(o, "reason", json_object_new_string(reason));
    json_object_array_add(c->report, o);
    c->errors += error;
}

static void connected(struct chk *c, const char *role, const char *name, const char *state,
                      const char *why)
{
    if (strcmp(state, "connected"))
        add(c, "host.connected", true, "%s host %s is %s%s%s", role, name, state, why ? ": " : "",
            why ? why : "");
}

static void check_hosts(struct chk *c, const struct db_res *src, const struct db_res *dst)
{
    if (!strcmp(c->src, c->dst))
        add(c, "host.different", true, "VM %s is on host %s already", c->vm, c->dst);
    connected(c, "source", c->src, db_val(src, 0, 4), db_val(src, 0, 6));
    connected(c, "destination", c->dst, db_val(dst, 0, 1), db_val(dst, 0, 3));
}

/* One datastore-backed file of the VM (disk, shared disk, CD-ROM image):
 * the destination must mount the same datastore (same UUID). */
static int check_on_shared(struct chk *c, const char *what, json_object *ref, char *err, size_t errlen)
{
    const char *ds = jstr(ref, "datastore"), *path = jstr(ref, "path");
    struct db_res *r;
    if (DBQN(c->db, &r, err, errlen,
             "SELECT s.uuid, s.accessible, (SELECT MIN(d.name) FROM datastores d"
             " WHERE d.host_id = ? AND d.uuid = s.uuid AND d.accessible = 1)"
             " FROM datastores s WHERE s.host_id = ? AND s.name = ?", c->dst_id, c->src_id, ds) < 0)
        return -1;
    if (!r->nrows || !db_int(r, 0, 1) || !db_val(r, 0, 0)[0])
        add(c, "datastore.shared", true, "%s %s/%s is on datastore %s, which host %s does not report"
            " as accessible", what, ds, path, ds, c->src);
    else if (!db_val(r, 0, 2))
        add(c, "datastore.shared", true, "%s %s/%s is on datastore %s (UUID %s), which host %s does"
            " not mount", what, ds, path, ds, db_val(r, 0, 0), c->dst);
    db_res_free(r);
    return 0;
}

static int check_storage(struct chk *c, char *err, size_t errlen)
{
    json_object *disks = jarr(c->spec, "disks"), *shared = jarr(c->spec, "shared_disks"), *cd;
    char what[48];
    for (size_t i = 0; disks && i < json_object_array_length(disks); i++) {
        snprintf(what, sizeof(what), "disk %zu", i);
        if (check_on_shared(c, what, json_object_array_get_idx(disks, i), err, errlen) < 0)
            return -1;
    }
    for (size_t i = 0; shared && i < json_object_array_length(shared); i++) {
        json_object *d = json_object_array_get_idx(shared, i);
        add(c, "disk.shared", c->live, "the VM has a shared multi-writer disk (%s/%s): %s",
            jstr(d, "datastore"), jstr(d, "path"),
            c->live ? "a clustered VM cannot move live" : "its cluster peers keep writing it");
        snprintf(what, sizeof(what), "shared disk %zu", i);
        if (check_on_shared(c, what, d, err, errlen) < 0)
            return -1;
    }
    if (!json_object_object_get_ex(c->spec, "cdrom", &cd))
        return 0;
    if (jstr(cd, "host_path")[0])
        add(c, "cdrom.local", true, "the CD-ROM is backed by host-local media %s on host %s;"
            " disconnect it or use an image on a shared datastore", jstr(cd, "host_path"), c->src);
    else if (check_on_shared(c, "the CD-ROM image", cd, err, errlen) < 0)
        return -1;
    return 0;
}

/* Each NIC's port group on the destination, and no VM there with the same
 * MAC on the same port group. */
static int check_networks(struct chk *c, char *err, size_t errlen)
{
    json_object *nics = jarr(c->spec, "nics");
    struct db_res *r, *vms;
    if (!nics || !json_object_array_length(nics))
        return 0;
    if (DBQN(c->db, &vms, err, errlen, "SELECT name, spec FROM vms WHERE host_id = ? AND name <> ?",
             c->dst_id, c->vm) < 0)
        return -1;
    for (size_t i = 0; i < json_object_array_length(nics); i++) {
        json_object *nic = json_object_array_get_idx(nics, i);
        const char *pg = jstr(nic, "portgroup"), *mac = jstr(nic, "mac");
        if (DBQN(c->db, &r, err, errlen, "SELECT bridge, bridge_exists FROM networks"
                                         " WHERE host_id = ? AND name = ?", c->dst_id, pg) < 0) {
            db_res_free(vms);
            return -1;
        }
        if (!r->nrows)
            add(c, "nic.portgroup", true, "NIC %zu (%s) is on port group %s, which host %s does not have",
                i, mac, pg, c->dst);
        else if (!db_int(r, 0, 1))
            add(c, "nic.portgroup", c->live, "port group %s's bridge %s does not exist on host %s,"
                " so NIC %zu would have no network there", pg, db_val(r, 0, 0), c->dst, i);
        db_res_free(r);
        for (int v = 0; v < vms->nrows; v++) {
            json_object *spec = json_parsed_or_null(db_val(vms, v, 1)), *theirs = jarr(spec, "nics");
            for (size_t j = 0; theirs && j < json_object_array_length(theirs); j++) {
                json_object *t = json_object_array_get_idx(theirs, j);
                if (!strcasecmp(jstr(t, "mac"), mac) && !strcmp(jstr(t, "portgroup"), pg))
                    add(c, "mac.conflict", true, "NIC %zu's MAC %s is used by VM %s on host %s's"
                        " port group %s", i, mac, db_val(vms, v, 0), c->dst, pg);
            }
            json_object_put(spec);
        }
    }
    db_res_free(vms);
    return 0;
}

static void check_affinity(struct chk *c)
{
    json_object *aff = jarr(c->spec, "cpu_affinity");
    if (!aff)
        return;
    add(c, "cpu.affinity", c->live, "the VM is pinned to CPUs %s of host %s (cpu_affinity)%s",
        json_object_to_json_string_ext(aff, JSON_C_TO_STRING_PLAIN), c->src,
        c->live ? ": remove the affinity to move it live" : ", which may not suit the destination");
}

/* The features the VM runs with: its own list (it was started with a
 * baseline), else its cluster's baseline, else all its host's. */
static void check_cpu(struct chk *c)
{
    json_object *cpu_s = NULL, *cpu_d = NULL, *want = jarr(c->spec, "cpu_features");
    char source[120], missing[1024];
    json_object_object_get_ex(c->src_facts, "cpu", &cpu_s);
    json_object_object_get_ex(c->dst_facts, "cpu", &cpu_d);
    if (strcmp(jstr(cpu_s, "vendor"), jstr(cpu_d, "vendor")))
        add(c, "cpu.vendor", true, "host %s's CPU is %s and host %s's is %s: a running VM cannot"
            " change CPU vendor", c->src, jstr(cpu_s, "vendor")[0] ? jstr(cpu_s, "vendor") : "unknown",
            c->dst, jstr(cpu_d, "vendor")[0] ? jstr(cpu_d, "vendor") : "unknown");
    if (want)
        snprintf(source, sizeof(source), "the VM's own list");
    else if ((want = c->baseline))
        snprintf(source, sizeof(source), "cluster %s's baseline", c->cluster);
    else if ((want = jarr(cpu_s, "kvm_features")))
        snprintf(source, sizeof(source), "all of host %s's", c->src);
    int n = want ? features_missing(want, c->dst_facts, missing, sizeof(missing)) : 0;
    if (n)
        add(c, "cpu.features", true, "host %s lacks %d CPU feature%s the VM runs with (%s): %s",
            c->dst, n, n == 1 ? "" : "s", source, missing);
}

static void check_memory(struct chk *c)
{
    json_object *mem = NULL;
    json_object_object_get_ex(c->dst_facts, "memory", &mem);
    long long avail = jint(mem, "available_bytes") >> 20, need = jint(c->spec, "memory_mib");
    long long resv = jint(c->spec, "memory_reservation_mib");
    char rtext[64] = "";
    if (resv)
        snprintf(rtext, sizeof(rtext), " (%lld MiB of it reserved)", resv);
    /* every page of the VM arrives on the destination */
    if (avail < need)
        add(c, "memory.free", true, "host %s has %lld MiB of memory available; the VM needs %lld MiB%s",
            c->dst, avail, need, rtext);
}

/* Running vm.migrate tasks that use host h's link: their VM is on h (the
 * source keeps the VM until the migration completed), or h is the task's
 * destination (params "host"). */
static int migrations_on(struct chk *c, const char *hid, const char *h, int *n, char *err, size_t errlen)
{
    struct db_res *r;
    if (DBQN(c->db, &r, err, errlen,
             "SELECT t.params, v.host_id FROM tasks t LEFT JOIN vms v ON v.name = t.target"
             " WHERE t.kind = 'vm.migrate' AND t.state = 'running' AND t.target <> ?", c->vm) < 0)
        return -1;
    *n = 0;
    for (int i = 0; i < r->nrows; i++) {
        json_object *p = json_parsed_or_null(db_val(r, i, 0));
        *n += (db_val(r, i, 1) && !strcmp(db_val(r, i, 1), hid)) || !strcmp(jstr(p, "host"), h);
        json_object_put(p);
    }
    db_res_free(r);
    return 0;
}

static int check_link(struct chk *c, const char *hid, const char *h, json_object *facts, char *err,
                      size_t errlen)
{
    json_object *migs = jarr(facts, "migration_interfaces");
    long long best = 0;
    int running;
    for (size_t i = 0; migs && i < json_object_array_length(migs); i++) {
        long long s = jint(json_object_array_get_idx(migs, i), "speed_mbps");
        best = s > best ? s : best;
    }
    if (!best) {
        add(c, "migration.interface", true, "host %s has no migration interface", h);
        return 0;
    }
    if (best < MIN_LINK_MBPS) {
        add(c, "migration.interface", true, "host %s's fastest migration interface is %lld Mbit/s;"
            " live migration needs %d Mbit/s", h, best, MIN_LINK_MBPS);
        return 0;
    }
    if (migrations_on(c, hid, h, &running, err, errlen) < 0)
        return -1;
    /* admission queues what does not fit: a warning, not a refusal */
    long long share = best / (running + 1);
    if (share < MIN_SHARE_MBPS)
        add(c, "migration.bandwidth", false, "host %s's %lld Mbit/s migration link carries %d running"
            " migration%s: %lld Mbit/s would be left for this one, under %d; it waits for a slot",
            h, best, running, running == 1 ? "" : "s", share, MIN_SHARE_MBPS);
    return 0;
}

static int load(struct chk *c, struct db_res **src, struct db_res **dst, char *err, size_t errlen)
{
    if (DBQN(c->db, src, err, errlen,
             "SELECT v.power_state, v.spec, h.id, h.name, h.state, h.facts, h.error, cl.name, cl.baseline"
             " FROM vms v LEFT JOIN hosts h ON h.id = v.host_id LEFT JOIN clusters cl ON cl.id = h.cluster_id"
             " WHERE v.name = ?", c->vm) < 0 ||
        DBQN(c->db, dst, err, errlen, "SELECT id, state, facts, error FROM hosts WHERE name = ?", c->dst) < 0)
        return -1;
    return 0;
}

static int run(struct chk *c, const struct db_res *src, const struct db_res *dst, char *err, size_t errlen)
{
    if (!src->nrows || !dst->nrows) {
        add(c, "inventory", true, "no %s named '%.64s'", !src->nrows ? "VM" : "host",
            !src->nrows ? c->vm : c->dst);
        return 0;
    }
    if (!db_val(src, 0, 2)) {
        add(c, "host.connected", true, "VM %s is on no host", c->vm);
        return 0;
    }
    c->src = db_val(src, 0, 3);
    snprintf(c->src_id, sizeof(c->src_id), "%s", db_val(src, 0, 2));
    snprintf(c->dst_id, sizeof(c->dst_id), "%s", db_val(dst, 0, 0));
    snprintf(c->cluster, sizeof(c->cluster), "%s", db_val(src, 0, 7));
    c->live = strcmp(db_val(src, 0, 0), "stopped") != 0;
    c->spec = json_parsed_or_null(db_val(src, 0, 1));
    c->src_facts = json_parsed_or_null(db_val(src, 0, 5));
    c->dst_facts = json_parsed_or_null(db_val(dst, 0, 2));
    c->baseline = json_parsed_or_null(db_val(src, 0, 8));
    check_hosts(c, src, dst);
    if (!c->spec) {
        add(c, "inventory", true, "the inventory holds no spec of VM %s: refresh host %s", c->vm, c->src);
        return 0;
    }
    if (check_storage(c, err, errlen) < 0 || check_networks(c, err, errlen) < 0)
        return -1;
    check_affinity(c);
    if (!c->live)
        return 0;
    check_cpu(c);
    check_memory(c);
    if (check_link(c, c->src_id, c->src, c->src_facts, err, errlen) < 0 ||
        check_link(c, c->dst_id, c->dst, c->dst_facts, err, errlen) < 0)
        return -1;
    return 0;
}

int checks_migrate(struct db *db, const char *vm, const char *dst, json_object *report, char *err,
                   size_t errlen)
{
    struct chk c = { .db = db, .report = report, .vm = vm, .dst = dst };
    struct db_res *rs = NULL, *rd = NULL;
    int rc = load(&c, &rs, &rd, err, errlen);
    if (rc == 0)
        rc = run(&c, rs, rd, err, errlen);
    json_object_put(c.spec);
    json_object_put(c.src_facts);
    json_object_put(c.dst_facts);
    json_object_put(c.baseline);
    db_res_free(rs);
    db_res_free(rd);
    return rc < 0 ? -1 : c.errors;
}
