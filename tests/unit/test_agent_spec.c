/* ferryd's input checks (agent/spec.c, agent/util.c, agent/config.c): VM
 * specs are validated strictly and normalised (uuid, MACs, vcpus); every
 * refusal names the field; strict JSON parsing; the configuration file. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/ferryd.h"

static struct datastore dss[] = { { "ds1", "/srv/ds1", "" } };
static struct network nets[] = { { "vm-net", "br0" } };
static const struct config cfg = { .dss = dss, .ndss = 1, .nets = nets, .nnets = 1 };

#define BOOT "\"boot\":{\"kernel\":\"/k.elf\"}"

static json_object *validate(const char *json, char *err, size_t errlen)
{
    json_object *in = json_tokener_parse(json);
    if (!in)
        fail_msg("test JSON does not parse: %s", json);
    err[0] = '\0';
    json_object *out = spec_validate(in, &cfg, err, errlen);
    json_object_put(in);
    return out;
}

static const char *get(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static void test_minimal_spec_is_normalised(void **state)
{
    char err[ERRLEN];
    json_object *s = validate("{\"name\":\"vm1\",\"memory_mib\":64," BOOT "}", err, sizeof(err));
    assert_non_null(s);
    assert_true(uuid_valid(get(s, "uuid")));
    assert_string_equal(get(s, "vcpus"), "1");
    json_object *again = spec_validate(s, &cfg, err, sizeof(err));   /* stored specs pass again */
    assert_non_null(again);
    assert_string_equal(get(again, "uuid"), get(s, "uuid"));
    json_object_put(again);
    json_object_put(s);
}

static void test_nics_get_stable_macs(void **state)
{
    char err[ERRLEN];
    json_object *s = validate("{\"name\":\"vm1\",\"memory_mib\":64," BOOT ",\"nics\":["
                              "{\"portgroup\":\"vm-net\",\"mac\":\"52:54:00:AB:CD:EF\"},"
                              "{\"portgroup\":\"vm-net\"}]}", err, sizeof(err));
    assert_non_null(s);
    json_object *nics;
    assert_true(json_object_object_get_ex(s, "nics", &nics));
    assert_string_equal(get(json_object_array_get_idx(nics, 0), "mac"), "52:54:00:ab:cd:ef");
    const char *gen = get(json_object_array_get_idx(nics, 1), "mac");
    assert_non_null(gen);
    assert_int_equal(strlen(gen), 17);
    assert_memory_equal(gen, "52:54:00:", 9);
    json_object_put(s);
}

static void test_full_spec_is_accepted(void **state)
{
    char err[ERRLEN];
    json_object *s = validate(
        "{\"name\":\"db-1.prod_a\",\"uuid\":\"6f1c1a4e-0a3b-4c2d-9e8f-0123456789ab\",\"vcpus\":4,"
        "\"memory_mib\":4096,\"boot\":{\"kernel\":\"/b/vmlinuz\",\"initrd\":\"/b/initrd\","
        "\"cmdline\":\"console=ttyS0\"},\"disks\":[{\"datastore\":\"ds1\",\"path\":\"db/root.img\","
        "\"readonly\":false}],\"cdrom\":{\"datastore\":\"ds1\",\"path\":\"iso/debian.iso\"},"
        "\"cpu_affinity\":[0],\"shared_disks\":[{\"datastore\":\"ds1\",\"path\":\"quorum.img\"}],"
        "\"memory_reservation_mib\":4096,\"cpu_features\":[\"sse2\",\"avx2\",\"lm\"]}", err, sizeof(err));
    if (!s)
        fail_msg("refused: %s", err);
    json_object_put(s);
}

/* Each bad spec is refused with a reason containing `why`. */
static void test_bad_specs_are_refused(void **state)
{
    static const char *const cases[][2] = {
        { "[]", "spec: expected a JSON object" },
        { "{\"memory_mib\":64," BOOT "}", "spec.name: required" },
        { "{\"name\":\"a\"," BOOT "}", "spec.memory_mib: required" },
        { "{\"name\":\"a\",\"memory_mib\":64}", "spec.boot: required" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"colour\":1}", "spec: unknown field 'colour'" },
        { "{\"name\":\"a\",\"memory_mib\":\"64\"," BOOT "}", "spec.memory_mib: expected int, got string" },
        { "{\"name\":\"a\",\"memory_mib\":64.5," BOOT "}", "spec.memory_mib: expected int, got double" },
        { "{\"name\":\"a\",\"memory_mib\":8," BOOT "}", "spec.memory_mib: must be between 16" },
        { "{\"name\":\"a\",\"memory_mib\":64,\"vcpus\":0," BOOT "}", "spec.vcpus: must be between 1 and 64" },
        { "{\"name\":\"a/b\",\"memory_mib\":64," BOOT "}", "spec.name: 'a/b' must be" },
        { "{\"name\":\"-a\",\"memory_mib\":64," BOOT "}", "spec.name: '-a' must be" },
        { "{\"name\":\"a\",\"uuid\":\"xyz\",\"memory_mib\":64," BOOT "}", "spec.uuid: 'xyz' is not a UUID" },
        { "{\"name\":\"a\",\"memory_mib\":64,\"boot\":{\"kernel\":\"k.elf\"}}", "must be absolute paths" },
        { "{\"name\":\"a\",\"memory_mib\":64,\"boot\":{\"kernel\":\"/k\",\"args\":\"\"}}", "spec.boot: unknown field 'args'" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"disks\":[{\"datastore\":\"nope\",\"path\":\"x\"}]}",
          "spec.disks[0].datastore: unknown datastore 'nope'" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"disks\":[{\"datastore\":\"ds1\",\"path\":\"a/../../x\"}]}",
          "spec.disks[0].path: 'a/../../x' must not contain '..'" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"disks\":[{\"datastore\":\"ds1\",\"path\":\"/etc/x\"}]}",
          "must be a relative path" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"disks\":[{\"datastore\":\"ds1\",\"path\":\"x,readonly\"}]}",
          "must not contain ','" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"disks\":[{\"datastore\":\"ds1\",\"path\":\"x\",\"readonly\":1}]}",
          "spec.disks[0].readonly: expected boolean" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"disks\":[{\"datastore\":\"ds1\",\"path\":\"1\"},"
          "{\"datastore\":\"ds1\",\"path\":\"2\"},{\"datastore\":\"ds1\",\"path\":\"3\"},"
          "{\"datastore\":\"ds1\",\"path\":\"4\"},{\"datastore\":\"ds1\",\"path\":\"5\"}]}", "at most 4 disks" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"nics\":[{\"portgroup\":\"dmz\"}]}",
          "spec.nics[0].portgroup: unknown port group 'dmz'" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"nics\":[{\"portgroup\":\"vm-net\",\"mac\":\"01:00:5e:00:00:01\"}]}",
          "is not a unicast MAC" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"nics\":[{\"portgroup\":\"vm-net\",\"mac\":\"52:54:00:00:00:1\"}]}",
          "is not a unicast MAC" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"nics\":[{\"portgroup\":\"vm-net\",\"mac\":\"52:54:00:00:00:01\"},"
          "{\"portgroup\":\"vm-net\",\"mac\":\"52:54:00:00:00:01\"}]}", "spec.nics[1].mac: same MAC as spec.nics[0]" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"cdrom\":{\"host_path\":\"/x.iso\",\"path\":\"y\"}}",
          "spec.cdrom: unknown field 'path'" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"cdrom\":{\"host_path\":\"x.iso\"}}", "must be an absolute path" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"cpu_affinity\":[]}", "spec.cpu_affinity: empty" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"cpu_affinity\":[0,0]}", "CPU 0 listed twice" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"cpu_affinity\":[-1]}", "not a CPU of this host" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"cpu_affinity\":[\"0\"]}", "not a CPU of this host" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"memory_reservation_mib\":65}",
          "spec.memory_reservation_mib: must be between 0 and 64" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"shared_disks\":[{\"datastore\":\"ds1\",\"path\":\"q\",\"readonly\":true}]}",
          "spec.shared_disks[0]: unknown field 'readonly'" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"cpu_features\":[]}", "spec.cpu_features: empty" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"cpu_features\":[\"sse2\",\"avx9000\"]}",
          "spec.cpu_features[1]: 'avx9000' is not a CPU feature name" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"cpu_features\":[\"sse2\",\"sse2\"]}",
          "spec.cpu_features[1]: 'sse2' listed twice" },
        { "{\"name\":\"a\",\"memory_mib\":64," BOOT ",\"cpu_features\":[5]}",
          "spec.cpu_features[0]: '5' is not a CPU feature name" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[ERRLEN];
        json_object *s = validate(cases[i][0], err, sizeof(err));
        if (s)
            fail_msg("accepted: %s", cases[i][0]);
        if (!strstr(err, cases[i][1]) || strchr(err, '\n'))
            fail_msg("%s: reason \"%s\", expected \"%s\"", cases[i][0], err, cases[i][1]);
    }
}

static void test_strict_json(void **state)
{
    char err[ERRLEN];
    static const char *const bad[][2] = {
        { "", "unexpected end of input" }, { "{\"a\":1", "unexpected end of input" },
        { "{\"a\":1} x", "malformed JSON" }, { "{} {}", "malformed JSON" }, { "{\"a\":tru}", "malformed JSON" },
        { "{\"a\":1,}", "malformed JSON" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_object *o = json_parse_strict(bad[i][0], strlen(bad[i][0]), err, sizeof(err));
        if (o || !strstr(err, bad[i][1]))
            fail_msg("'%s': %s", bad[i][0], o ? "accepted" : err);
    }
    json_object *o = json_parse_strict("a\0b", 3, err, sizeof(err));
    assert_null(o);
    o = json_parse_strict(" {\"a\":[1]}\r\n", 12, err, sizeof(err));
    assert_non_null(o);
    json_object_put(o);
}

static int load(const char *text, struct config *c, char *err, size_t errlen)
{
    char path[] = "/tmp/ferryd-cfg-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    int rc = config_load(path, c, err, errlen);
    unlink(path);
    return rc;
}

static void test_config(void **state)
{
    char err[ERRLEN];
    struct config c = { 0 };
    assert_int_equal(load("{\"host_name\":\"h\",\"listen\":\"127.0.0.1:1\",\"state_dir\":\"/s\","
                          "\"tls_dir\":\"/t\",\"networks\":[{\"name\":\"n\",\"bridge\":\"br0\"}],"
                          "\"datastores\":[{\"name\":\"d\",\"path\":\"/d\"}],"
                          "\"migration_interfaces\":[{\"address\":\"10.0.0.1\",\"nic\":\"eth1\","
                          "\"speed_mbps\":1000}]}", &c, err, sizeof(err)), 0);
    assert_string_equal(c.host_name, "h");
    assert_non_null(config_datastore(&c, "d"));
    assert_null(config_datastore(&c, "n"));
    assert_string_equal(config_network(&c, "n")->bridge, "br0");
    assert_int_equal(c.migs[0].speed_mbps, 1000);
    config_free(&c);
    static const char *const bad[][2] = {
        { "{\"listen\":\"x\",\"state_dir\":\"/s\"}", "config.tls_dir: required" },
        { "{\"listen\":\"x\",\"state_dir\":\"s\",\"tls_dir\":\"/t\"}", "config.state_dir: 's' must be an absolute path" },
        { "{\"listen\":\"x\",\"state_dir\":\"/s\",\"tls_dir\":\"/t\",\"port\":1}", "config: unknown field 'port'" },
        { "{\"listen\":\"x\",\"state_dir\":\"/s\",\"tls_dir\":\"/t\",\"networks\":[{\"name\":\"n\",\"bridge\":\"b\"},"
          "{\"name\":\"n\",\"bridge\":\"c\"}]}", "config.networks[1]: empty or duplicate name" },
        { "{\"listen\":\"x\",\"state_dir\":\"/s\",\"tls_dir\":\"/t\",\"migration_interfaces\":[{\"address\":\"a\","
          "\"nic\":\"n\",\"speed_mbps\":0}]}", "config.migration_interfaces[0].speed_mbps: must be between 1" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (load(bad[i][0], &c, err, sizeof(err)) == 0 || !strstr(err, bad[i][1]))
            fail_msg("%s: %s", bad[i][0], err);
        config_free(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_spec_is_normalised),
        cmocka_unit_test(test_nics_get_stable_macs),
        cmocka_unit_test(test_full_spec_is_accepted),
        cmocka_unit_test(test_bad_specs_are_refused),
        cmocka_unit_test(test_strict_json),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
