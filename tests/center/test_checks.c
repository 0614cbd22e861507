/* The pre-migration checks (center/checks.c) over an inventory filled
 * here, on a fresh SQLite database per test: two connected hosts of one
 * cluster that can take each other's VMs, then one thing broken per test,
 * which must give exactly its own check with its own reason. Warnings do
 * not count as errors; a powered-off VM skips the CPU, memory and link
 * checks. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "center/center.h"
#include "center/checks.h"

struct center_cfg cfg;   /* the library's; unused here */

#define MIB_8192 8589934592
#define MIB_512 536870912
#define MIB_16 16777216
#define FACTS(vendor, features, avail_bytes, speed)                                          \
    "{\"cpu\": {\"vendor\": \"" vendor "\", \"kvm_features\": [" features "]},"              \
    " \"memory\": {\"available_bytes\": " STR(avail_bytes) "},"                               \
    " \"migration_interfaces\": [{\"address\": \"10.1.0.1\", \"speed_mbps\": " #speed "}]}"
#define STR(x) STR_(x)
#define STR_(x) #x
#define GOOD_FACTS FACTS("AuthenticAMD", "\"fpu\", \"sse2\", \"avx2\", \"lm\"", MIB_8192, 10000)
#define VM1_SPEC(extra) "{\"name\": \"vm1\", \"memory_mib\": 1024," \
    " \"disks\": [{\"datastore\": \"ds1\", \"path\": \"vm1.img\"}]," \
    " \"nics\": [{\"portgroup\": \"vm-net\", \"mac\": \"52:54:00:00:00:01\"}]" extra "}"

struct fx {
    char path[64];
    struct db *db;
    json_object *report;
    int errors;
};

static void sql(struct db *db, const char *q, int n, const char *const *p)
{
    char err[ERRLEN];
    if (db_exec(db, q, n, p, NULL, err, sizeof(err)) < 0)
        fail_msg("%s: %s", q, err);
}
#define SQL(db, q, ...) sql((db), (q), DB_NARGS(__VA_ARGS__), (const char *[]){ __VA_ARGS__ })

static void host(struct db *db, const char *name, const char *facts)
{
    SQL(db, "INSERT INTO hosts (name, address, cluster_id, state, facts, added, updated)"
            " SELECT ?, '127.0.0.1:1', id, 'connected', ?, 't', 't' FROM clusters WHERE name = 'c1'",
        name, facts);
}

static void datastore(struct db *db, const char *h, const char *name, const char *uuid)
{
    SQL(db, "INSERT INTO datastores (host_id, name, uuid, path, accessible) SELECT id, ?, ?, '/ds', 1"
            " FROM hosts WHERE name = ?", name, uuid, h);
}

static void network(struct db *db, const char *h, const char *name, const char *exists)
{
    SQL(db, "INSERT INTO networks (host_id, name, bridge, bridge_exists) SELECT id, ?, 'br0', ?"
            " FROM hosts WHERE name = ?", name, exists, h);
}

static void vm(struct db *db, const char *name, const char *h, const char *state, const char *spec)
{
    SQL(db, "INSERT INTO vms (name, uuid, host_id, power_state, spec, updated)"
            " SELECT ?, ?, id, ?, ?, 't' FROM hosts WHERE name = ?", name, name, state, spec, h);
}

static void set_spec(struct db *db, const char *name, const char *spec)
{
    SQL(db, "UPDATE vms SET spec = ? WHERE name = ?", spec, name);
}

static void set_facts(struct db *db, const char *h, const char *facts)
{
    SQL(db, "UPDATE hosts SET facts = ? WHERE name = ?", facts, h);
}

static int setup(void **state)
{
    char err[ERRLEN], url[80];
    int v;
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->path, sizeof(f->path), "/tmp/test_checks.XXXXXX");
    int fd = mkstemp(f->path);
    if (fd < 0)
        return -1;
    close(fd);
    snprintf(url, sizeof(url), "sqlite:%s", f->path);
    if (!(f->db = db_open(url, err, sizeof(err))) || db_migrate(f->db, &v, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    struct db *db = f->db;
    SQL(db, "INSERT INTO clusters (name, description, created) VALUES ('c1', '', 't')");
    host(db, "h1", GOOD_FACTS);
    host(db, "h2", GOOD_FACTS);
    datastore(db, "h1", "ds1", "uuid-shared");
    datastore(db, "h2", "ds1", "uuid-shared");
    datastore(db, "h1", "local1", "uuid-local1");
    datastore(db, "h2", "local2", "uuid-local2");
    network(db, "h1", "vm-net", "1");
    network(db, "h2", "vm-net", "1");
    network(db, "h1", "dmz", "1");
    vm(db, "vm1", "h1", "running", VM1_SPEC(""));
    vm(db, "vm2", "h2", "running", "{\"name\": \"vm2\", \"memory_mib\": 64, \"nics\": "
                                   "[{\"portgroup\": \"vm-net\", \"mac\": \"52:54:00:00:00:02\"}]}");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    db_close(f->db);
    unlink(f->path);
    json_object_put(f->report);
    free(f);
    return 0;
}

static void check(struct fx *f, const char *vmname, const char *dst)
{
    char err[ERRLEN];
    json_object_put(f->report);
    f->report = json_object_new_array();
    f->errors = checks_migrate(f->db, vmname, dst, f->report, err, sizeof(err));
    if (f->errors < 0)
        fail_msg("checks_migrate: %s", err);
}

/* The report is exactly one entry: id, level, and a reason holding why. */
static void only(struct fx *f, const char *id, const char *level, const char *why)
{
    const char *text = json_object_to_json_string(f->report);
    if (json_object_array_length(f->report) != 1)
        fail_msg("want only %s, got %s", id, text);
    json_object *e = json_object_array_get_idx(f->report, 0);
    assert_string_equal(jstr(e, "check"), id);
    assert_string_equal(jstr(e, "level"), level);
    if (!strstr(jstr(e, "reason"), why))
        fail_msg("%s: reason \"%s\" lacks \"%s\"", id, jstr(e, "reason"), why);
    assert_int_equal(f->errors, !strcmp(level, "error"));
}

static void test_compatible_hosts_pass(void **state)
{
    struct fx *f = *state;
    check(f, "vm1", "h2");
    assert_int_equal(f->errors, 0);
    assert_int_equal(json_object_array_length(f->report), 0);
}

static void test_same_host(void **state)
{
    struct fx *f = *state;
    check(f, "vm1", "h1");
    only(f, "host.different", "error", "VM vm1 is on host h1 already");
}

static void test_disconnected_destination(void **state)
{
    struct fx *f = *state;
    SQL(f->db, "UPDATE hosts SET state = 'disconnected', error = 'connection refused' WHERE name = 'h2'");
    check(f, "vm1", "h2");
    only(f, "host.connected", "error", "destination host h2 is disconnected: connection refused");
}

static void test_unknown_vm(void **state)
{
    struct fx *f = *state;
    check(f, "nope", "h2");
    only(f, "inventory", "error", "no VM named 'nope'");
}

static void test_disk_on_local_datastore(void **state)
{
    struct fx *f = *state;
    set_spec(f->db, "vm1", "{\"name\": \"vm1\", \"memory_mib\": 64,"
                           " \"disks\": [{\"datastore\": \"local1\", \"path\": \"a.img\"}]}");
    check(f, "vm1", "h2");
    only(f, "datastore.shared", "error",
         "disk 0 local1/a.img is on datastore local1 (UUID uuid-local1), which host h2 does not mount");
}

static void test_portgroup_missing(void **state)
{
    struct fx *f = *state;
    set_spec(f->db, "vm1", "{\"name\": \"vm1\", \"memory_mib\": 64,"
                           " \"nics\": [{\"portgroup\": \"dmz\", \"mac\": \"52:54:00:00:00:07\"}]}");
    check(f, "vm1", "h2");
    only(f, "nic.portgroup", "error", "NIC 0 (52:54:00:00:00:07) is on port group dmz, which host h2"
                                      " does not have");
}

static void test_bridge_missing_blocks_only_live(void **state)
{
    struct fx *f = *state;
    SQL(f->db, "UPDATE networks SET bridge_exists = 0 WHERE name = 'vm-net' AND host_id ="
               " (SELECT id FROM hosts WHERE name = 'h2')");
    check(f, "vm1", "h2");
    only(f, "nic.portgroup", "error", "port group vm-net's bridge br0 does not exist on host h2");
    SQL(f->db, "UPDATE vms SET power_state = 'stopped' WHERE name = 'vm1'");
    check(f, "vm1", "h2");
    only(f, "nic.portgroup", "warning", "port group vm-net's bridge br0 does not exist on host h2");
}

static void test_cdrom_host_local(void **state)
{
    struct fx *f = *state;
    set_spec(f->db, "vm1", VM1_SPEC(", \"cdrom\": {\"host_path\": \"/srv/iso/debian.iso\"}"));
    check(f, "vm1", "h2");
    only(f, "cdrom.local", "error", "the CD-ROM is backed by host-local media /srv/iso/debian.iso on host h1");
}

static void test_cpu_affinity(void **state)
{
    struct fx *f = *state;
    set_spec(f->db, "vm1", VM1_SPEC(", \"cpu_affinity\": [0, 1]"));
    check(f, "vm1", "h2");
    only(f, "cpu.affinity", "error", "the VM is pinned to CPUs [0,1] of host h1");
}

static void test_shared_disk(void **state)
{
    struct fx *f = *state;
    set_spec(f->db, "vm1", VM1_SPEC(", \"shared_disks\": [{\"datastore\": \"ds1\", \"path\": \"q.img\"}]"));
    check(f, "vm1", "h2");
    only(f, "disk.shared", "error", "the VM has a shared multi-writer disk (ds1/q.img): a clustered VM"
                                    " cannot move live");
}

static void test_slow_migration_interface(void **state)
{
    struct fx *f = *state;
    set_facts(f->db, "h2", FACTS("AuthenticAMD", "\"fpu\", \"sse2\", \"avx2\", \"lm\"", MIB_8192, 100));
    check(f, "vm1", "h2");
    only(f, "migration.interface", "error", "host h2's fastest migration interface is 100 Mbit/s");
}

static void test_no_migration_interface(void **state)
{
    struct fx *f = *state;
    set_facts(f->db, "h1", "{\"cpu\": {\"vendor\": \"AuthenticAMD\", \"kvm_features\": [\"fpu\"]},"
                           " \"migration_interfaces\": []}");
    check(f, "vm1", "h2");
    only(f, "migration.interface", "error", "host h1 has no migration interface");
}

/* Four running migrations from h1 leave 1000 / 5 = 200 Mbit/s: a warning
 * (admission queues the migration), not an error. */
static void test_busy_link_is_a_warning(void **state)
{
    struct fx *f = *state;
    set_facts(f->db, "h1", FACTS("AuthenticAMD", "\"fpu\", \"sse2\", \"avx2\", \"lm\"", MIB_8192, 1000));
    for (int i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof(name), "busy%d", i);
        vm(f->db, name, "h1", "running", "{}");
        SQL(f->db, "INSERT INTO tasks (kind, target, state, percent, phase, params, cancel_requested,"
                   " created_by, created) VALUES ('vm.migrate', ?, 'running', 0, '', '{\"host\": \"h2\"}',"
                   " 0, 't', 't')", name);
    }
    check(f, "vm1", "h2");
    only(f, "migration.bandwidth", "warning", "host h1's 1000 Mbit/s migration link carries 4 running"
                                              " migrations: 200 Mbit/s would be left");
    assert_int_equal(f->errors, 0);
}

static void test_cpu_feature_missing(void **state)
{
    struct fx *f = *state;
    set_facts(f->db, "h2", FACTS("AuthenticAMD", "\"fpu\", \"sse2\", \"lm\"", MIB_8192, 10000));
    check(f, "vm1", "h2");
    only(f, "cpu.features", "error", "host h2 lacks 1 CPU feature the VM runs with (all of host h1's): avx2");
}

/* With a baseline the VM needs only its features: the same host passes,
 * and one lacking a baseline feature is told which. */
static void test_cpu_baseline(void **state)
{
    struct fx *f = *state;
    set_facts(f->db, "h2", FACTS("AuthenticAMD", "\"fpu\", \"sse2\", \"lm\"", MIB_8192, 10000));
    SQL(f->db, "UPDATE clusters SET baseline = '[\"fpu\", \"sse2\", \"lm\"]'");
    check(f, "vm1", "h2");
    assert_int_equal(json_object_array_length(f->report), 0);
    set_facts(f->db, "h2", FACTS("AuthenticAMD", "\"fpu\", \"avx2\"", MIB_8192, 10000));
    check(f, "vm1", "h2");
    only(f, "cpu.features", "error", "host h2 lacks 2 CPU features the VM runs with (cluster c1's"
                                     " baseline): sse2, lm");
}

static void test_cpu_vendor(void **state)
{
    struct fx *f = *state;
    set_facts(f->db, "h2", FACTS("GenuineIntel", "\"fpu\", \"sse2\", \"avx2\", \"lm\"", MIB_8192, 10000));
    check(f, "vm1", "h2");
    only(f, "cpu.vendor", "error", "host h1's CPU is AuthenticAMD and host h2's is GenuineIntel");
}

static void test_memory(void **state)
{
    struct fx *f = *state;
    set_facts(f->db, "h2", FACTS("AuthenticAMD", "\"fpu\", \"sse2\", \"avx2\", \"lm\"", MIB_512, 10000));
    check(f, "vm1", "h2");
    only(f, "memory.free", "error", "host h2 has 512 MiB of memory available; the VM needs 1024 MiB");
}

static void test_mac_conflict(void **state)
{
    struct fx *f = *state;
    set_spec(f->db, "vm2", "{\"name\": \"vm2\", \"memory_mib\": 64, \"nics\": "
                           "[{\"portgroup\": \"vm-net\", \"mac\": \"52:54:00:00:00:01\"}]}");
    check(f, "vm1", "h2");
    only(f, "mac.conflict", "error", "NIC 0's MAC 52:54:00:00:00:01 is used by VM vm2 on host h2's"
                                     " port group vm-net");
}

/* Powered off: no CPU, memory or link check, and affinity only warns. */
static void test_powered_off_skips_live_checks(void **state)
{
    struct fx *f = *state;
    SQL(f->db, "UPDATE vms SET power_state = 'stopped' WHERE name = 'vm1'");
    set_facts(f->db, "h2", FACTS("GenuineIntel", "\"fpu\"", MIB_16, 100));
    check(f, "vm1", "h2");
    assert_int_equal(json_object_array_length(f->report), 0);
    set_spec(f->db, "vm1", VM1_SPEC(", \"cpu_affinity\": [0]"));
    check(f, "vm1", "h2");
    only(f, "cpu.affinity", "warning", "the VM is pinned to CPUs [0] of host h1");
}

static void test_database_failure(void **state)
{
    struct fx *f = *state;
    char err[ERRLEN];
    SQL(f->db, "DROP TABLE networks");
    json_object *report = json_object_new_array();
    assert_int_equal(checks_migrate(f->db, "vm1", "h2", report, err, sizeof(err)), -1);
    if (!strstr(err, "database: "))
        fail_msg("reason: %s", err);
    json_object_put(report);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_compatible_hosts_pass), T(test_same_host), T(test_disconnected_destination),
        T(test_unknown_vm), T(test_disk_on_local_datastore), T(test_portgroup_missing),
        T(test_bridge_missing_blocks_only_live), T(test_cdrom_host_local), T(test_cpu_affinity),
        T(test_shared_disk), T(test_slow_migration_interface), T(test_no_migration_interface),
        T(test_busy_link_is_a_warning), T(test_cpu_feature_missing), T(test_cpu_baseline),
        T(test_cpu_vendor), T(test_memory), T(test_mac_conflict),
        T(test_powered_off_skips_live_checks), T(test_database_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
