/* The VM configuration a source sends in HELLO, and the destination's checks
 * that it can host that VM (memory, vCPUs, CPU features). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/announce.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_net.h"
#include "migration/migrate.h"
#include "vmm/log.h"
#include "vmm/vm.h"

/* ---- "disks": [{"path", "readonly", "size", "fingerprint"[, "copy_to"]}] ----
 * The destination opens the same paths (shared storage) and refuses a file
 * whose size or content fingerprint (hex XXH3 of the first and last MiB and
 * the size) differs. With "copy_to" (shared-nothing, added by the source
 * engine) it creates that image instead and receives it on the stream. */
static void disks_to_json(struct vm *vm, json_object *o)
{
    json_object *arr = json_object_new_array();
    for (int i = 0; i < vm->cfg.ndisks && vm->blk[i]; i++) {
        struct disk_id id;
        char err[256], fp[24];
        if (virtio_blk_identify(vm->blk[i], &id, err, sizeof(err)) < 0) {
            log_warn("%s", err);   /* the destination's check will tell */
            id = vm->blk[i]->id;
        }
        snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)id.fingerprint);
        json_object *d = json_object_new_object();
        json_object_object_add(d, "path", json_object_new_string(vm->blk[i]->path));
        json_object_object_add(d, "readonly", json_object_new_boolean(vm->cfg.disks[i].readonly));
        json_object_object_add(d, "size", json_object_new_int64((int64_t)id.size));
        json_object_object_add(d, "fingerprint", json_object_new_string(fp));
        json_object_array_add(arr, d);
    }
    json_object_object_add(o, "disks", arr);
}

static int disks_from_json(json_object *o, struct vm_config *cfg, char *err, size_t errlen)
{
    json_object *arr, *v;
    cfg->ndisks = 0;
    if (!json_object_object_get_ex(o, "disks", &arr))
        return 0;  /* a source without disks support */
    if (!json_object_is_type(arr, json_type_array) || json_object_array_length(arr) > VM_MAX_DISKS) {
        snprintf(err, errlen, "VM configuration: bad \"disks\" (at most %d)", VM_MAX_DISKS);
        return -1;
    }
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        json_object *d = json_object_array_get_idx(arr, i);
        struct vm_disk *vd = &cfg->disks[i];
        const char *fp;
        char *end;
        if (!json_object_is_type(d, json_type_object) || !json_object_object_get_ex(d, "path", &v) ||
            !json_object_is_type(v, json_type_string) || !*json_object_get_string(v))
            goto bad;
        vd->path = strdup(json_object_get_string(v));
        vd->readonly = json_object_object_get_ex(d, "readonly", &v) && json_object_get_boolean(v);
        if (!json_object_object_get_ex(d, "size", &v) || !json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) <= 0 || !json_object_object_get_ex(d, "fingerprint", &v) ||
            !json_object_is_type(v, json_type_string))
            goto bad;
        json_object_object_get_ex(d, "size", &v);
        vd->size = (uint64_t)json_object_get_int64(v);
        json_object_object_get_ex(d, "fingerprint", &v);
        fp = json_object_get_string(v);
        vd->fingerprint = strtoull(fp, &end, 16);
        if (!vd->path || strlen(fp) != 16 || *end)
            goto bad;
        vd->have_id = true;
        if (json_object_object_get_ex(d, "copy_to", &v) &&
            (!json_object_is_type(v, json_type_string) || !(vd->copy_to = strdup(json_object_get_string(v)))))
            goto bad;
        cfg->ndisks = (int)i + 1;
        continue;
    bad:
        snprintf(err, errlen, "VM configuration: bad disk %zu", i);
        return -1;
    }
    return 0;
}

/* ---- "nics": [{"mac", "tap"}] ----
 * The MAC is the VM's; the tap is the source host's device name, used on the
 * destination unless it was started with --net tap=NAME for that NIC. */
static void nics_to_json(struct vm *vm, json_object *o)
{
    json_object *arr = json_object_new_array();
    for (int i = 0; i < vm->cfg.nnics && vm->net[i]; i++) {
        char mac[18];
        net_mac_format(vm->net[i]->mac, mac);
        json_object *d = json_object_new_object();
        json_object_object_add(d, "mac", json_object_new_string(mac));
        json_object_object_add(d, "tap", json_object_new_string(vm->net[i]->tap.name));
        json_object_array_add(arr, d);
    }
    json_object_object_add(o, "nics", arr);
}

static int nics_from_json(json_object *o, struct vm_config *cfg, char *err, size_t errlen)
{
    json_object *arr, *v;
    int given = cfg->nnics;      /* --net tap=NAME on this side */
    if (!json_object_object_get_ex(o, "nics", &arr)) {
        cfg->nnics = 0;
        return 0;
    }
    if (!json_object_is_type(arr, json_type_array) || json_object_array_length(arr) > VM_MAX_NICS) {
        snprintf(err, errlen, "VM configuration: bad \"nics\" (at most %d)", VM_MAX_NICS);
        return -1;
    }
    size_t n = json_object_array_length(arr);
    if ((size_t)given > n) {
        snprintf(err, errlen, "this destination was given %d --net option(s), the VM has %zu NIC(s)", given, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *d = json_object_array_get_idx(arr, i);
        struct vm_nic *nic = &cfg->nics[i];
        if (!json_object_is_type(d, json_type_object) || !json_object_object_get_ex(d, "mac", &v) ||
            !json_object_is_type(v, json_type_string) || net_mac_parse(json_object_get_string(v), nic->mac) < 0 ||
            !json_object_object_get_ex(d, "tap", &v) || !json_object_is_type(v, json_type_string) ||
            !*json_object_get_string(v) || strlen(json_object_get_string(v)) >= IFNAMSIZ) {
            snprintf(err, errlen, "VM configuration: bad NIC %zu", i);
            return -1;
        }
        if ((int)i >= given && !(nic->tap = strdup(json_object_get_string(v)))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    cfg->nnics = (int)n;
    return 0;
}

char *vm_config_json(struct vm *vm)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "memory_size", json_object_new_int64((int64_t)vm->mem.ram_size));
    json_object_object_add(o, "vcpus", json_object_new_int(vm->ncpus));
    json_object_object_add(o, "boot", json_object_new_string(
        vm->boot.mode == BOOT_MICROGUEST ? "micro-guest" : "linux"));
    json_object_object_add(o, "kernel", json_object_new_string(vm->cfg.kernel ? vm->cfg.kernel : ""));
    json_object *cpuid = json_object_new_array();
    for (unsigned i = 0; i < vm->cpuid->nent; i++) {
        const struct kvm_cpuid_entry2 *e = &vm->cpuid->entries[i];
        json_object *a = json_object_new_array();
        uint32_t v[] = { e->function, e->index, e->flags, e->eax, e->ebx, e->ecx, e->edx };
        for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++)
            json_object_array_add(a, json_object_new_int64(v[k]));
        json_object_array_add(cpuid, a);
    }
    json_object_object_add(o, "cpuid", cpuid);
    disks_to_json(vm, o);
    nics_to_json(vm, o);
    char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return s;
}

static int get_u64(json_object *o, const char *key, uint64_t max, uint64_t *out, char *err, size_t errlen)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int) ||
        json_object_get_int64(v) < 0 || (uint64_t)json_object_get_int64(v) > max) {
        snprintf(err, errlen, "VM configuration: missing or bad \"%s\"", key);
        return -1;
    }
    *out = (uint64_t)json_object_get_int64(v);
    return 0;
}

int vm_config_from_json(const char *json, struct vm_config *cfg, struct kvm_cpuid2 **cpuid_out,
                        char *err, size_t errlen)
{
    json_object *o = json_tokener_parse(json), *v, *arr;
    struct kvm_cpuid2 *c = NULL;
    uint64_t mem, ncpus;
    int rc = -1;
    if (!o || !json_object_is_type(o, json_type_object)) {
        snprintf(err, errlen, "VM configuration is not a JSON object");
        goto out;
    }
    if (get_u64(o, "memory_size", 1ull << 40, &mem, err, errlen) < 0 ||
        get_u64(o, "vcpus", VM_MAX_VCPUS, &ncpus, err, errlen) < 0)
        goto out;
    if (!json_object_object_get_ex(o, "boot", &v) || !json_object_is_type(v, json_type_string)) {
        snprintf(err, errlen, "VM configuration: missing \"boot\"");
        goto out;
    }
    const char *boot = json_object_get_string(v);
    if (strcmp(boot, "linux") && strcmp(boot, "micro-guest")) {
        snprintf(err, errlen, "VM configuration: unknown boot mode '%.32s'", boot);
        goto out;
    }
    cfg->boot_mode = !strcmp(boot, "linux") ? BOOT_LINUX64 : BOOT_MICROGUEST;
    if (json_object_object_get_ex(o, "kernel", &v) && json_object_is_type(v, json_type_string))
        cfg->kernel = strdup(json_object_get_string(v));
    if (!json_object_object_get_ex(o, "cpuid", &arr) || !json_object_is_type(arr, json_type_array) ||
        json_object_array_length(arr) > 4096) {
        snprintf(err, errlen, "VM configuration: missing or bad \"cpuid\"");
        goto out;
    }
    size_t n = json_object_array_length(arr);
    c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    c->nent = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(arr, i);
        uint32_t f[7];
        if (!json_object_is_type(e, json_type_array) || json_object_array_length(e) != 7) {
            snprintf(err, errlen, "VM configuration: bad cpuid entry %zu", i);
            goto out;
        }
        for (size_t k = 0; k < 7; k++) {
            int64_t x = json_object_get_int64(json_object_array_get_idx(e, k));
            if (x < 0 || x > 0xffffffffll) {
                snprintf(err, errlen, "VM configuration: bad cpuid entry %zu", i);
                goto out;
            }
            f[k] = (uint32_t)x;
        }
        c->entries[i] = (struct kvm_cpuid_entry2){ .function = f[0], .index = f[1], .flags = f[2],
                                                   .eax = f[3], .ebx = f[4], .ecx = f[5], .edx = f[6] };
    }
    if (cfg->mem_size && cfg->mem_size != mem) {
        snprintf(err, errlen, "memory size mismatch: the VM has %llu MiB, this destination was started with --mem %llu MiB",
                 (unsigned long long)(mem >> 20), (unsigned long long)(cfg->mem_size >> 20));
        goto out;
    }
    if (cfg->ncpus && (uint64_t)cfg->ncpus != ncpus) {
        snprintf(err, errlen, "vCPU count mismatch: the VM has %llu, this destination was started with --cpus %d",
                 (unsigned long long)ncpus, cfg->ncpus);
        goto out;
    }
    if (disks_from_json(o, cfg, err, errlen) < 0 || nics_from_json(o, cfg, err, errlen) < 0)
        goto out;
    cfg->mem_size = mem;
    cfg->ncpus = (int)ncpus;
    *cpuid_out = c;
    c = NULL;
    rc = 0;
out:
    free(c);
    json_object_put(o);
    return rc;
}
