/* VM specs: strict validation and normalisation. A spec that passes here
 * names only datastores and port groups this host has, so what is stored
 * can be started (or refused for a stated reason) later. */
#include <ctype.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "agent/ferryd.h"
#include "vmm/vm.h"

#define MAX_MEMORY_MIB (1 << 20)   /* 1 TiB */
#define MAX_SHARED_DISKS 4

bool spec_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63 || !isalnum((unsigned char)name[0]))
        return false;
    return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* A path inside a datastore: relative, no "..", no ',' (ferry-vmm's
 * --disk PATH,readonly syntax). */
static int check_ds_path(const char *path, const char *what, char *err, size_t errlen)
{
    const char *why = NULL;
    if (!*path || path[0] == '/')
        why = "must be a relative path inside the datastore";
    else if (strchr(path, ','))
        why = "must not contain ','";
    for (const char *p = path; !why && p; p = strchr(p, '/') ? strchr(p, '/') + 1 : NULL)
        if (!strncmp(p, "..", 2) && (p[2] == '/' || !p[2]))
            why = "must not contain '..'";
    if (why)
        snprintf(err, errlen, "%s: '%s' %s", what, path, why);
    return why ? -1 : 0;
}

/* {"datastore": NAME, "path": P} plus the extra keys allowed in keys. */
static int check_ds_ref(json_object *o, const char *what, const char *const *keys,
                        const struct config *c, char *err, size_t errlen)
{
    const char *ds = NULL, *path = NULL;
    if (!json_object_is_type(o, json_type_object)) {
        snprintf(err, errlen, "%s: expected an object", what);
        return -1;
    }
    if (json_only_keys(o, what, keys, err, errlen) < 0 ||
        json_get_string(o, "datastore", what, true, &ds, err, errlen) < 0 ||
        json_get_string(o, "path", what, true, &path, err, errlen) < 0)
        return -1;
    if (!config_datastore(c, ds)) {
        snprintf(err, errlen, "%s.datastore: unknown datastore '%s'", what, ds);
        return -1;
    }
    char pwhat[64];
    snprintf(pwhat, sizeof(pwhat), "%s.path", what);
    return check_ds_path(path, pwhat, err, errlen);
}

static int check_boot(json_object *boot, char *err, size_t errlen)
{
    static const char *const keys[] = { "kernel", "initrd", "cmdline", NULL };
    const char *kernel = NULL, *initrd = NULL, *cmdline = NULL;
    if (json_only_keys(boot, "spec.boot", keys, err, errlen) < 0 ||
        json_get_string(boot, "kernel", "spec.boot", true, &kernel, err, errlen) < 0 ||
        json_get_string(boot, "initrd", "spec.boot", false, &initrd, err, errlen) < 0 ||
        json_get_string(boot, "cmdline", "spec.boot", false, &cmdline, err, errlen) < 0)
        return -1;
    if (kernel[0] != '/' || (initrd && initrd[0] != '/')) {
        snprintf(err, errlen, "spec.boot: kernel and initrd must be absolute paths on the host");
        return -1;
    }
    return 0;
}

static bool parse_mac(const char *s, unsigned char mac[6])
{
    char tail;
    unsigned b[6];
    if (strlen(s) != 17 || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3],
                                  &b[4], &b[5], &tail) != 6)
        return false;
    for (int i = 0; i < 6; i++)
        mac[i] = (unsigned char)b[i];
    return !(mac[0] & 1);   /* a NIC's MAC is unicast */
}

/* Validate each NIC; give the ones without a MAC a locally administered
 * one (QEMU's 52:54:00 prefix, as ferry-vmm does) so it stays stable. */
static int check_nics(json_object *nics, const struct config *c, char *err, size_t errlen)
{
    static const char *const keys[] = { "portgroup", "mac", NULL };
    size_t n = json_object_array_length(nics);
    unsigned char macs[VM_MAX_NICS][6];
    if (n > VM_MAX_NICS) {
        snprintf(err, errlen, "spec.nics: at most %d NICs", VM_MAX_NICS);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *nic = json_object_array_get_idx(nics, i);
        char what[32];
        const char *pg = NULL, *mac = NULL;
        snprintf(what, sizeof(what), "spec.nics[%zu]", i);
        if (!json_object_is_type(nic, json_type_object)) {
            snprintf(err, errlen, "%s: expected an object", what);
            return -1;
        }
        if (json_only_keys(nic, what, keys, err, errlen) < 0 ||
            json_get_string(nic, "portgroup", what, true, &pg, err, errlen) < 0 ||
            json_get_string(nic, "mac", what, false, &mac, err, errlen) < 0)
            return -1;
        if (!config_network(c, pg)) {
            snprintf(err, errlen, "%s.portgroup: unknown port group '%s'", what, pg);
            return -1;
        }
        if (mac && !parse_mac(mac, macs[i])) {
            snprintf(err, errlen, "%s.mac: '%s' is not a unicast MAC address", what, mac);
            return -1;
        }
        if (!mac) {
            macs[i][0] = 0x52, macs[i][1] = 0x54, macs[i][2] = 0x00;
            if (getrandom(macs[i] + 3, 3, 0) != 3)
                macs[i][3] = (unsigned char)i;
        }
        for (size_t j = 0; j < i; j++)
            if (!memcmp(macs[i], macs[j], 6)) {
                snprintf(err, errlen, "%s.mac: same MAC as spec.nics[%zu]", what, j);
                return -1;
            }
        char norm[18];
        snprintf(norm, sizeof(norm), "%02x:%02x:%02x:%02x:%02x:%02x", macs[i][0], macs[i][1],
                 macs[i][2], macs[i][3], macs[i][4], macs[i][5]);
        json_object_object_add(nic, "mac", json_object_new_string(norm));
    }
    return 0;
}

static int check_disks(json_object *a, const char *what, int max, const char *const *keys,
                       const struct config *c, char *err, size_t errlen)
{
    size_t n = json_object_array_length(a);
    if (n > (size_t)max) {
        snprintf(err, errlen, "%s: at most %d disks", what, max);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *d = json_object_array_get_idx(a, i);
        char w[48];
        bool ro = false;
        snprintf(w, sizeof(w), "%s[%zu]", what, i);
        if (check_ds_ref(d, w, keys, c, err, errlen) < 0 ||
            json_get_bool(d, "readonly", w, &ro, err, errlen) < 0)
            return -1;
    }
    return 0;
}

static int check_cdrom(json_object *cd, const struct config *c, char *err, size_t errlen)
{
    static const char *const ds_keys[] = { "datastore", "path", NULL };
    static const char *const host_keys[] = { "host_path", NULL };
    const char *hp = NULL;
    if (!json_object_object_get_ex(cd, "host_path", NULL))
        return check_ds_ref(cd, "spec.cdrom", ds_keys, c, err, errlen);
    if (json_only_keys(cd, "spec.cdrom", host_keys, err, errlen) < 0 ||
        json_get_string(cd, "host_path", "spec.cdrom", true, &hp, err, errlen) < 0)
        return -1;
    if (hp[0] != '/') {
        snprintf(err, errlen, "spec.cdrom.host_path: must be an absolute path");
        return -1;
    }
    return 0;
}

static int check_affinity(json_object *a, char *err, size_t errlen)
{
    size_t n = json_object_array_length(a);
    long ncpus = sysconf(_SC_NPROCESSORS_CONF);
    cpu_set_t seen;
    CPU_ZERO(&seen);
    if (n == 0) {
        snprintf(err, errlen, "spec.cpu_affinity: empty (leave it out for no affinity)");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *v = json_object_array_get_idx(a, i);
        int64_t cpu = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
        if (cpu < 0 || cpu >= ncpus || cpu >= CPU_SETSIZE) {
            snprintf(err, errlen, "spec.cpu_affinity[%zu]: not a CPU of this host (0-%ld)", i,
                     ncpus - 1);
            return -1;
        }
        if (CPU_ISSET((int)cpu, &seen)) {
            snprintf(err, errlen, "spec.cpu_affinity[%zu]: CPU %d listed twice", i, (int)cpu);
            return -1;
        }
        CPU_SET((int)cpu, &seen);
    }
    return 0;
}

static bool cpu_feature_known(const char *name)
{
    for (size_t i = 0; i < cpuid_nwords; i++)
        for (int b = 0; b < 32; b++)
            if (cpuid_words[i].bits[b] && !strcmp(cpuid_words[i].bits[b], name))
                return true;
    return false;
}

/* The CPUID features the guest may see (a cluster's baseline): names as
 * GET /v1/host reports them, passed to ferry-vmm --cpu-features. Known and
 * distinct, so the joined list fits ferryd's argument buffer. */
static int check_cpu_features(json_object *a, char *err, size_t errlen)
{
    size_t n = json_object_array_length(a);
    if (n == 0) {
        snprintf(err, errlen, "spec.cpu_features: empty (leave it out for every feature)");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *v = json_object_array_get_idx(a, i);
        if (!json_object_is_type(v, json_type_string) || !cpu_feature_known(json_object_get_string(v))) {
            snprintf(err, errlen, "spec.cpu_features[%zu]: '%.32s' is not a CPU feature name (see"
                     " GET /v1/host cpu.kvm_features)", i, json_object_get_string(v));
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(json_object_get_string(v), json_object_get_string(json_object_array_get_idx(a, j)))) {
                snprintf(err, errlen, "spec.cpu_features[%zu]: '%s' listed twice", i,
                         json_object_get_string(v));
                return -1;
            }
    }
    return 0;
}

json_object *spec_validate(json_object *in, const struct config *c, char *err, size_t errlen)
{
    static const char *const keys[] = { "name", "uuid", "vcpus", "memory_mib", "boot", "disks",
                                        "nics", "cdrom", "cpu_affinity", "shared_disks",
                                        "memory_reservation_mib", "cpu_features", NULL };
    static const char *const disk_keys[] = { "datastore", "path", "readonly", NULL };
    static const char *const shared_keys[] = { "datastore", "path", NULL };
    if (!json_object_is_type(in, json_type_object)) {
        snprintf(err, errlen, "spec: expected a JSON object");
        return NULL;
    }
    json_object *s = NULL;
    if (json_object_deep_copy(in, &s, NULL) < 0) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *name = NULL, *uuid = NULL;
    int64_t vcpus = 1, mem = 0, resv = 0;
    json_object *boot, *disks, *nics, *cdrom, *aff, *shared, *feats;
    if (json_only_keys(s, "spec", keys, err, errlen) < 0 ||
        json_get_string(s, "name", "spec", true, &name, err, errlen) < 0 ||
        json_get_string(s, "uuid", "spec", false, &uuid, err, errlen) < 0 ||
        json_get_int(s, "vcpus", "spec", false, 1, VM_MAX_VCPUS, &vcpus, err, errlen) < 0 ||
        json_get_int(s, "memory_mib", "spec", true, 16, MAX_MEMORY_MIB, &mem, err, errlen) < 0 ||
        json_get_int(s, "memory_reservation_mib", "spec", false, 0, mem, &resv, err, errlen) < 0 ||
        json_get_typed(s, "boot", "spec", json_type_object, &boot, err, errlen) < 0 ||
        json_get_typed(s, "disks", "spec", json_type_array, &disks, err, errlen) < 0 ||
        json_get_typed(s, "nics", "spec", json_type_array, &nics, err, errlen) < 0 ||
        json_get_typed(s, "cdrom", "spec", json_type_object, &cdrom, err, errlen) < 0 ||
        json_get_typed(s, "cpu_affinity", "spec", json_type_array, &aff, err, errlen) < 0 ||
        json_get_typed(s, "shared_disks", "spec", json_type_array, &shared, err, errlen) < 0 ||
        json_get_typed(s, "cpu_features", "spec", json_type_array, &feats, err, errlen) < 0)
        goto bad;
    if (!spec_name_valid(name)) {
        snprintf(err, errlen, "spec.name: '%.64s' must be 1-63 letters, digits, '.', '_' or '-', "
                 "starting with a letter or digit", name);
        goto bad;
    }
    if (uuid && !uuid_valid(uuid)) {
        snprintf(err, errlen, "spec.uuid: '%.40s' is not a UUID", uuid);
        goto bad;
    }
    if (!boot) {
        snprintf(err, errlen, "spec.boot: required");
        goto bad;
    }
    if (check_boot(boot, err, errlen) < 0 ||
        (disks && check_disks(disks, "spec.disks", VM_MAX_DISKS, disk_keys, c, err, errlen) < 0) ||
        (nics && check_nics(nics, c, err, errlen) < 0) ||
        (cdrom && check_cdrom(cdrom, c, err, errlen) < 0) ||
        (aff && check_affinity(aff, err, errlen) < 0) ||
        (feats && check_cpu_features(feats, err, errlen) < 0) ||
        (shared && check_disks(shared, "spec.shared_disks", MAX_SHARED_DISKS, shared_keys, c,
                               err, errlen) < 0))
        goto bad;
    if (!uuid) {
        char u[37];
        uuid_generate(u);
        json_object_object_add(s, "uuid", json_object_new_string(u));
    }
    json_object_object_add(s, "vcpus", json_object_new_int((int)vcpus));
    return s;
bad:
    json_object_put(s);
    return NULL;
}
