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

/* The CPUID feature words a guest relies on keeping across a migration (the
 * words vmm/cpuid.c compares), with the Linux names of their bits. The raw
 * words are reported too, so a manager can intersect hosts bit by bit. */
static const struct cpuid_word {
    uint32_t fn, idx;
    char reg;                 /* 'a' eax, 'b' ebx, 'c' ecx, 'd' edx */
    const char *bits[32];
} words[] = {
    { 1, 0, 'd', { "fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", NULL,
                   "sep", "mtrr", "pge", "mca", "cmov", "pat", "pse36", "pn", "clflush", NULL,
                   "dts", "acpi", "mmx", "fxsr", "sse", "sse2", "ss", "ht", "tm", "ia64", "pbe" } },
    { 1, 0, 'c', { "pni", "pclmulqdq", "dtes64", "monitor", "ds_cpl", "vmx", "smx", "est", "tm2",
                   "ssse3", "cid", "sdbg", "fma", "cx16", "xtpr", "pdcm", NULL, "pcid", "dca",
                   "sse4_1", "sse4_2", "x2apic", "movbe", "popcnt", "tsc_deadline_timer", "aes",
                   "xsave", "osxsave", "avx", "f16c", "rdrand", "hypervisor" } },
    { 7, 0, 'b', { "fsgsbase", "tsc_adjust", "sgx", "bmi1", "hle", "avx2", "fdp_excptn_only",
                   "smep", "bmi2", "erms", "invpcid", "rtm", "cqm", "zero_fcs_fds", "mpx", "rdt_a",
                   "avx512f", "avx512dq", "rdseed", "adx", "smap", "avx512ifma", "pcommit",
                   "clflushopt", "clwb", "intel_pt", "avx512pf", "avx512er", "avx512cd", "sha_ni",
                   "avx512bw", "avx512vl" } },
    { 7, 0, 'c', { "prefetchwt1", "avx512vbmi", "umip", "pku", "ospke", "waitpkg", "avx512_vbmi2",
                   "cet_ss", "gfni", "vaes", "vpclmulqdq", "avx512_vnni", "avx512_bitalg", "tme",
                   "avx512_vpopcntdq", NULL, "la57", NULL, NULL, NULL, NULL, NULL, "rdpid",
                   "key_locker", "bus_lock_detect", "cldemote", NULL, "movdiri", "movdir64b",
                   "enqcmd", "sgx_lc", "pks" } },
    { 7, 0, 'd', { NULL, NULL, "avx512_4vnniw", "avx512_4fmaps", "fsrm", "uintr", NULL, NULL,
                   "avx512_vp2intersect", NULL, "md_clear", NULL, NULL, NULL, "serialize",
                   "hybrid_cpu", "tsxldtrk", NULL, "pconfig", NULL, "ibt", NULL, "amx_bf16",
                   "avx512_fp16", "amx_tile", "amx_int8", "spec_ctrl", "intel_stibp", "flush_l1d",
                   "arch_capabilities", "core_capabilities", "spec_ctrl_ssbd" } },
    { 0xd, 1, 'a', { "xsaveopt", "xsavec", "xgetbv1", "xsaves" } },
    { 0x80000001, 0, 'c', { "lahf_lm", "cmp_legacy", "svm", "extapic", "cr8_legacy", "abm",
                            "sse4a", "misalignsse", "3dnowprefetch", "osvw", "ibs", "xop",
                            "skinit", "wdt", NULL, "lwp", "fma4", "tce", NULL, "nodeid_msr", NULL,
                            "tbm", "topoext", "perfctr_core", "perfctr_nb", NULL, "bpext", "ptsc",
                            "perfctr_llc", "mwaitx" } },
    /* AMD mirrors leaf 1's EDX bits here; only the extended ones are named */
    { 0x80000001, 0, 'd', { [11] = "syscall", [20] = "nx", [22] = "mmxext", [25] = "fxsr_opt",
                            [26] = "pdpe1gb", [27] = "rdtscp", [29] = "lm", [30] = "3dnowext",
                            [31] = "3dnow" } },
};

static json_object *cpu_json;   /* probed once by host_init */

static uint32_t reg_value(const struct kvm_cpuid2 *c, const struct cpuid_word *w)
{
    for (unsigned i = 0; i < c->nent; i++) {
        const struct kvm_cpuid_entry2 *e = &c->entries[i];
        if (e->function == w->fn && e->index == w->idx)
            return w->reg == 'a' ? e->eax : w->reg == 'b' ? e->ebx : w->reg == 'c' ? e->ecx : e->edx;
    }
    return 0;
}

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
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        uint32_t v = reg_value(c, &words[i]);
        for (int b = 0; b < 32; b++)
            if ((v >> b & 1) && words[i].bits[b])
                json_object_array_add(features, json_object_new_string(words[i].bits[b]));
        char key[32], hex[16];
        snprintf(key, sizeof(key), "0x%x.%u.e%cx", words[i].fn, words[i].idx, words[i].reg);
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
