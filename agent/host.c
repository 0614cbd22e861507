/* Host facts for GET /v1/host: what the manager needs to place and move
 * VMs (CPU features KVM can give a guest, memory, NICs, migration
 * interfaces, port groups, datastores). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/ferryd.h"
#include "vmm/vm.h"

static json_object *cpu_json;   /* probed once by host_init */

/* "vendor_id : GenuineIntel" -> the value of the first line with key. */
static void cpuinfo_field(const char *text, const char *key, char *out, size_t outlen)
{
    out[0] = '\0';
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        size_t kl = strlen(key);
        if (strncmp(l, key, kl) || (l[kl] != ' ' && l[kl] != '\t' && l[kl] != ':'))
            continue;
        const char *v = strchr(l, ':');
        if (!v)
            return;
        v += 1 + strspn(v + 1, " \t");
        size_t n = strcspn(v, "\n");
        snprintf(out, outlen, "%.*s", (int)(n < outlen ? n : outlen - 1), v);
        return;
    }
}

int host_init(char *err, size_t errlen)
{
    char *info = read_file("/proc/cpuinfo", 1 << 24, NULL);
    char vendor[64] = "", model[256] = "", family[16] = "", modelno[16] = "", stepping[16] = "";
    if (info) {
        cpuinfo_field(info, "vendor_id", vendor, sizeof(vendor));
        cpuinfo_field(info, "model name", model, sizeof(model));
        cpuinfo_field(info, "cpu family", family, sizeof(family));
        cpuinfo_field(info, "model", modelno, sizeof(modelno));
        cpuinfo_field(info, "stepping", stepping, sizeof(stepping));
        free(info);
    }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        snprintf(err, errlen, "cannot open /dev/kvm: %s", strerror(errno));
        return -1;
    }
    struct kvm_cpuid2 *c = cpuid_supported(kvm, err, errlen);
    close(kvm);
    if (!c)
        return -1;
    json_object *features = json_object_new_array(), *raw = json_object_new_object();
    /* the named features, and the raw words so a manager can intersect
     * hosts bit by bit */
    for (size_t i = 0; i < cpuid_nwords; i++) {
        const struct cpuid_word *w = &cpuid_words[i];
        uint32_t v = cpuid_word_value(c, w);
        for (int b = 0; b < 32; b++)
            if ((v >> b & 1) && w->bits[b])
                json_object_array_add(features, json_object_new_string(w->bits[b]));
        char key[32], hex[16];
        snprintf(key, sizeof(key), "0x%x.%u.e%cx", w->fn, w->idx, "abcd"[w->reg]);
        snprintf(hex, sizeof(hex), "0x%08x", v);
        json_object_object_add(raw, key, json_object_new_string(hex));
    }
    free(c);
    cpu_json = json_object_new_object();
    json_object_object_add(cpu_json, "vendor", json_object_new_string(vendor));
    json_object_object_add(cpu_json, "model_name", json_object_new_string(model));
    json_object_object_add(cpu_json, "family", json_object_new_int(atoi(family)));
    json_object_object_add(cpu_json, "model", json_object_new_int(atoi(modelno)));
    json_object_object_add(cpu_json, "stepping", json_object_new_int(atoi(stepping)));
    json_object_object_add(cpu_json, "count", json_object_new_int((int)sysconf(_SC_NPROCESSORS_ONLN)));
    json_object_object_add(cpu_json, "kvm_features", features);
    json_object_object_add(cpu_json, "kvm_cpuid", raw);
    return 0;
}

static json_object *memory_json(void)
{
    json_object *o = json_object_new_object();
    char *text = read_file("/proc/meminfo", 1 << 20, NULL);
    static const char *const keys[][2] = { { "MemTotal:", "total_bytes" },
                                           { "MemFree:", "free_bytes" },
                                           { "MemAvailable:", "available_bytes" } };
    for (size_t i = 0; i < 3; i++) {
        const char *p = text ? strstr(text, keys[i][0]) : NULL;
        json_object_object_add(o, keys[i][1],
                               p ? json_object_new_int64(atoll(p + strlen(keys[i][0])) * 1024) : NULL);
    }
    free(text);
    return o;
}

/* Link speed in Mbit/s, or -1 when the driver does not know (down links,
 * virtual NICs report -1 or fail the read). */
static int nic_speed(const char *nic)
{
    char path[512], buf[32] = "";
    snprintf(path, sizeof(path), "/sys/class/net/%s/speed", nic);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int speed = fgets(buf, sizeof(buf), f) ? atoi(buf) : -1;
    fclose(f);
    return speed > 0 ? speed : -1;
}

static json_object *sysfs_string(const char *nic, const char *attr)
{
    char path[512], buf[64];
    snprintf(path, sizeof(path), "/sys/class/net/%s/%s", nic, attr);
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    json_object *v = NULL;
    if (fgets(buf, sizeof(buf), f)) {
        buf[strcspn(buf, "\n")] = '\0';
        v = json_object_new_string(buf);
    }
    fclose(f);
    return v;
}

static json_object *speed_json(int speed)
{
    return speed > 0 ? json_object_new_int(speed) : NULL;   /* null: unknown */
}

bool bridge_exists(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "/sys/class/net/%s/bridge", name);
    return access(path, F_OK) == 0;
}

static json_object *nics_json(void)
{
    json_object *a = json_object_new_array();
    DIR *d = opendir("/sys/class/net");
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.' || !strcmp(de->d_name, "lo"))
            continue;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(de->d_name));
        json_object_object_add(o, "mac", sysfs_string(de->d_name, "address"));
        json_object_object_add(o, "operstate", sysfs_string(de->d_name, "operstate"));
        json_object_object_add(o, "speed_mbps", speed_json(nic_speed(de->d_name)));
        json_object_object_add(o, "bridge", json_object_new_boolean(bridge_exists(de->d_name)));
        json_object_array_add(a, o);
    }
    if (d)
        closedir(d);
    return a;
}

json_object *host_facts(struct config *c)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(c->host_name));
    json_object_object_add(o, "cpu", json_object_get(cpu_json));
    json_object_object_add(o, "memory", memory_json());
    json_object_object_add(o, "nics", nics_json());

    json_object *a = json_object_new_array();
    for (int i = 0; i < c->nmigs; i++) {
        json_object *m = json_object_new_object();
        char path[512];
        snprintf(path, sizeof(path), "/sys/class/net/%s", c->migs[i].nic);
        json_object_object_add(m, "address", json_object_new_string(c->migs[i].address));
        json_object_object_add(m, "nic", json_object_new_string(c->migs[i].nic));
        json_object_object_add(m, "speed_mbps", json_object_new_int(c->migs[i].speed_mbps));
        json_object_object_add(m, "nic_present", json_object_new_boolean(access(path, F_OK) == 0));
        json_object_object_add(m, "link_speed_mbps", speed_json(nic_speed(c->migs[i].nic)));
        json_object_array_add(a, m);
    }
    json_object_object_add(o, "migration_interfaces", a);

    a = json_object_new_array();
    for (int i = 0; i < c->nnets; i++) {
        json_object *n = json_object_new_object();
        json_object_object_add(n, "name", json_object_new_string(c->nets[i].name));
        json_object_object_add(n, "bridge", json_object_new_string(c->nets[i].bridge));
        json_object_object_add(n, "bridge_exists",
                               json_object_new_boolean(bridge_exists(c->nets[i].bridge)));
        json_object_array_add(a, n);
    }
    json_object_object_add(o, "networks", a);

    a = json_object_new_array();
    for (int i = 0; i < c->ndss; i++)
        json_object_array_add(a, datastore_json(&c->dss[i]));
    json_object_object_add(o, "datastores", a);
    return o;
}
