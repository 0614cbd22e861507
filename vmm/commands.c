/* VM commands on the control socket: status, pause, resume, quit, shutdown. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "devices/blk_move.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_net.h"
#include "migration/pages.h"
#include "vmm/commands.h"
#include "vmm/log.h"

/* "disks": [{"name", "path", "readonly"}], "nics": [{"name", "tap", "mac", "ipv4", counters}] */
static void devices_status(struct vm *vm, json_object *res)
{
    json_object *disks = json_object_new_array(), *nics = json_object_new_array();
    for (int i = 0; i < VM_MAX_DISKS; i++) {
        struct virtio_blk *b = vm->blk[i];
        if (!b)
            continue;
        json_object *d = json_object_new_object();
        json_object_object_add(d, "name", json_object_new_string(b->name));
        json_object_object_add(d, "path", json_object_new_string(b->path));
        json_object_object_add(d, "readonly", json_object_new_boolean(b->readonly));
        struct blk_move_info mi;
        if (blk_move_info(b, &mi))   /* the current or last move-disk */
            json_object_object_add(d, "move", json_object_new_string(blk_move_phase_name(mi.phase)));
        json_object_array_add(disks, d);
    }
    for (int i = 0; i < VM_MAX_NICS; i++) {
        struct virtio_net *n = vm->net[i];
        if (!n)
            continue;
        struct virtio_net_stats st;
        uint32_t ip;
        virtio_net_stats(n, &st, &ip);
        char mac[18], ipv4[16] = "";
        net_mac_format(n->mac, mac);
        const uint8_t *a = (const uint8_t *)&ip;
        if (ip)
            snprintf(ipv4, sizeof(ipv4), "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(n->name));
        json_object_object_add(o, "tap", json_object_new_string(n->tap.name));
        json_object_object_add(o, "mac", json_object_new_string(mac));
        json_object_object_add(o, "ipv4", json_object_new_string(ipv4));
        json_object_object_add(o, "rx_packets", json_object_new_int64((int64_t)st.rx_packets));
        json_object_object_add(o, "tx_packets", json_object_new_int64((int64_t)st.tx_packets));
        json_object_object_add(o, "rx_dropped", json_object_new_int64((int64_t)st.rx_dropped));
        json_object_object_add(o, "tx_dropped", json_object_new_int64((int64_t)st.tx_dropped));
        const struct { const char *k; uint64_t v; } more[] = {
            { "rx_bytes", st.rx_bytes }, { "tx_bytes", st.tx_bytes }, { "rx_kicks", st.rx_kicks },
            { "tx_kicks", st.tx_kicks }, { "rx_irqs", st.rx_irqs }, { "tx_irqs", st.tx_irqs },
            { "tx_csum", st.tx_csum }, { "tx_gso", st.tx_gso }, { "announce_acks", st.announce_acks },
        };
        for (size_t k = 0; k < sizeof(more) / sizeof(more[0]); k++)
            json_object_object_add(o, more[k].k, json_object_new_int64((int64_t)more[k].v));
        json_object_array_add(nics, o);
    }
    json_object_object_add(res, "disks", disks);
    json_object_object_add(res, "nics", nics);
}

static int cmd_status(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    pthread_mutex_lock(&vm->lock);
    const char *state = vm_state_name(vm->state);
    bool migrated = vm->state == VM_MIGRATED || (atomic_load(&vm->stopping) && vm->stop_reason == STOP_MIGRATED);
    if (migrated)
        state = "migrated";
    else if (atomic_load(&vm->stopping))
        state = "stopping";
    pthread_mutex_unlock(&vm->lock);
    json_object_object_add(res, "state", json_object_new_string(state));
    json_object_object_add(res, "vcpus", json_object_new_int(vm->ncpus));
    json_object_object_add(res, "memory_mib", json_object_new_int64((int64_t)(vm->mem.ram_size >> 20)));
    json_object_object_add(res, "kernel", json_object_new_string(vm->cfg.kernel ? vm->cfg.kernel : ""));
    json_object *mig = json_object_new_object();
    migration_status(vm, mig);
    json_object_object_add(res, "migration", mig);
    json_object_object_add(res, "boot", json_object_new_string(
        vm->boot.mode == BOOT_MICROGUEST ? "micro-guest" : "linux"));
    if (!migrated)   /* the VM's devices now live on the destination */
        devices_status(vm, res);
    return 0;
}

static int cmd_pause(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    if (vm->state != VM_RUNNING) {
        snprintf(err, errlen, "VM is %s, not running", vm_state_name(vm->state));
        return -1;
    }
    vm_pause(vm);
    log_info("VM paused");
    json_object_object_add(res, "state", json_object_new_string(vm_state_name(vm->state)));
    return 0;
}

static int cmd_resume(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    if (vm->state != VM_PAUSED) {
        snprintf(err, errlen, "VM is %s, not paused", vm_state_name(vm->state));
        return -1;
    }
    vm_resume(vm);
    log_info("VM resumed");
    json_object_object_add(res, "state", json_object_new_string(vm_state_name(vm->state)));
    return 0;
}

/* One vCPU's registers and interrupt state, read while it is parked. */
static json_object *vcpu_state(struct vcpu *v)
{
    static const char *mp_names[] = { "runnable", "uninitialized", "init-received", "halted",
                                      "sipi-received", "stopped", "check-stop", "operating", "load" };
    struct kvm_regs r;
    struct kvm_sregs s;
    struct kvm_mp_state mp;
    struct kvm_vcpu_events ev;
    struct kvm_lapic_state lapic;
    char hex[19];
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_int(v->id));
    if (ioctl(v->fd, KVM_GET_REGS, &r) == 0) {
        snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)r.rip);
        json_object_object_add(o, "rip", json_object_new_string(hex));
        snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)r.rsp);
        json_object_object_add(o, "rsp", json_object_new_string(hex));
        json_object_object_add(o, "if", json_object_new_boolean(r.rflags & 0x200));
    }
    if (ioctl(v->fd, KVM_GET_SREGS, &s) == 0) {
        snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)s.cr3);
        json_object_object_add(o, "cr3", json_object_new_string(hex));
    }
    if (ioctl(v->fd, KVM_GET_MP_STATE, &mp) == 0)
        json_object_object_add(o, "mp_state", json_object_new_string(
            mp.mp_state < sizeof(mp_names) / sizeof(mp_names[0]) ? mp_names[mp.mp_state] : "?"));
    if (ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) == 0) {
        /* -1: none; an injected event is delivered on the next entry */
        json_object_object_add(o, "irq_injected",
                               json_object_new_int(ev.interrupt.injected ? ev.interrupt.nr : -1));
        json_object_object_add(o, "exception", json_object_new_int(
            ev.exception.injected || ev.exception.pending ? ev.exception.nr : -1));
        json_object_object_add(o, "nmi_pending", json_object_new_boolean(ev.nmi.pending || ev.nmi.injected));
        json_object_object_add(o, "irq_shadow", json_object_new_boolean(ev.interrupt.shadow));
    }
    if (ioctl(v->fd, KVM_GET_LAPIC, &lapic) == 0) {
        /* highest vector requested (IRR) and in service (ISR): 8 x 32 bits at 0x200 / 0x100 */
        int irr = -1, isr = -1;
        for (int i = 255; i >= 0 && (irr < 0 || isr < 0); i--) {
            uint32_t bit = 1u << (i % 32), off = 0x10u * (unsigned)(i / 32);
            if (irr < 0 && (*(uint32_t *)(lapic.regs + 0x200 + off) & bit))
                irr = i;
            if (isr < 0 && (*(uint32_t *)(lapic.regs + 0x100 + off) & bit))
                isr = i;
        }
        json_object_object_add(o, "lapic_irr", json_object_new_int(irr));
        json_object_object_add(o, "lapic_isr", json_object_new_int(isr));
    }
    return o;
}

/* What every vCPU is doing, for a guest that seems stuck: the VM is paused
 * just long enough to read a consistent snapshot, then resumed. Refused
 * during a migration, whose switchover must not be resumed behind its back. */
static int cmd_vcpus(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    pthread_mutex_lock(&vm->mig.lock);
    enum mig_phase ph = vm->mig.s.phase;
    pthread_mutex_unlock(&vm->mig.lock);
    if (ph == MIG_SETUP || ph == MIG_PRECOPY || ph == MIG_SWITCHOVER || ph == MIG_IN_DOUBT) {
        snprintf(err, errlen, "a migration is %s", mig_phase_name(ph));
        return -1;
    }
    pthread_mutex_lock(&vm->lock);
    enum vm_state st = vm->state;
    pthread_mutex_unlock(&vm->lock);
    if ((st != VM_RUNNING && st != VM_PAUSED) || atomic_load(&vm->stopping)) {
        snprintf(err, errlen, "VM is %s: no vCPUs to read", vm_state_name(st));
        return -1;
    }
    if (st == VM_RUNNING)
        vm_pause(vm);
    json_object *arr = json_object_new_array();
    for (int i = 0; i < vm->ncpus; i++)
        json_object_array_add(arr, vcpu_state(&vm->vcpus[i]));
    if (st == VM_RUNNING)
        vm_resume(vm);
    json_object_object_add(res, "vcpus", arr);
    return 0;
}

/* Optional non-negative integer argument. */
static int arg_u64(json_object *args, const char *key, uint64_t *out, char *err, size_t errlen)
{
    json_object *v;
    if (!json_object_object_get_ex(args, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0) {
        snprintf(err, errlen, "\"%s\" must be a non-negative integer", key);
        return -1;
    }
    *out = (uint64_t)json_object_get_int64(v);
    return 0;
}

static int arg_bool(json_object *args, const char *key, bool *out, char *err, size_t errlen)
{
    json_object *v;
    if (!json_object_object_get_ex(args, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_boolean)) {
        snprintf(err, errlen, "\"%s\" must be true or false", key);
        return -1;
    }
    *out = json_object_get_boolean(v);
    return 0;
}

/* "verify": true/false or "after" | "strict" | "off". */
static int arg_verify(json_object *args, enum mig_verify *out, char *err, size_t errlen)
{
    json_object *v;
    if (!json_object_object_get_ex(args, "verify", &v))
        return 0;
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
    if (json_object_is_type(v, json_type_boolean))
        *out = json_object_get_boolean(v) ? VERIFY_AFTER : VERIFY_OFF;
    else if (!strcmp(s, "after"))
        *out = VERIFY_AFTER;
    else if (!strcmp(s, "strict"))
        *out = VERIFY_STRICT;
    else if (!strcmp(s, "off"))
        *out = VERIFY_OFF;
    else {
        snprintf(err, errlen, "\"verify\" must be \"after\", \"strict\" or \"off\"");
        return -1;
    }
    return 0;
}

static int arg_compress(json_object *args, int *out, char *err, size_t errlen)
{
    json_object *v;
    if (!json_object_object_get_ex(args, "compress", &v))
        return 0;
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
    *out = !strcmp(s, "auto") ? COMPRESS_AUTO : page_codec_parse(s);
    if (*out == -1 && strcmp(s, "auto")) {
        snprintf(err, errlen, "\"compress\" must be \"auto\", \"off\", \"lz4\" or \"zstd\"");
        return -1;
    }
    return 0;
}

/* "via": ["ADDR", ...] or "ADDR,ADDR": the local addresses of the streams. */
static int arg_via(json_object *args, struct mig_params *p, char *err, size_t errlen)
{
    json_object *v;
    if (!json_object_object_get_ex(args, "via", &v))
        return 0;
    char list[MIG_MAX_VIA * 64 + 8] = "";
    if (json_object_is_type(v, json_type_string)) {
        snprintf(list, sizeof(list), "%s", json_object_get_string(v));
    } else if (json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *a = json_object_array_get_idx(v, i);
            size_t l = strlen(list);
            snprintf(list + l, sizeof(list) - l, "%s%s", i ? "," : "", json_object_get_string(a));
        }
    }
    p->nvia = 0;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (p->nvia == MIG_MAX_VIA || strlen(t) >= sizeof(p->via[0])) {
            snprintf(err, errlen, "\"via\": at most %d addresses", MIG_MAX_VIA);
            return -1;
        }
        snprintf(p->via[p->nvia++], sizeof(p->via[0]), "%s", t);
    }
    if (!p->nvia) {
        snprintf(err, errlen, "\"via\" must list local addresses, e.g. \"10.0.0.1,10.0.1.1\"");
        return -1;
    }
    return 0;
}

/* "storage_to": ["PATH", ...] or "PATH,PATH": shared-nothing, the image
 * path of each disk on the destination, one per disk in disk order. */
static int arg_storage(json_object *args, const struct vm *vm, struct mig_params *p, char *err, size_t errlen)
{
    json_object *v;
    if (!json_object_object_get_ex(args, "storage_to", &v))
        return 0;
    json_object *list = json_object_is_type(v, json_type_array) ? json_object_get(v) : json_object_new_array();
    if (json_object_is_type(v, json_type_string)) {
        char *copy = strdup(json_object_get_string(v));
        for (char *save = NULL, *t = copy ? strtok_r(copy, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
            json_object_array_add(list, json_object_new_string(t));
        free(copy);
    }
    int rc = 0;
    size_t n = json_object_array_length(list);
    if (n != (size_t)vm->cfg.ndisks || n == 0) {
        snprintf(err, errlen, "\"storage_to\" needs one destination path per disk, in disk order: this VM has %d "
                 "disk(s), %zu path(s) given", vm->cfg.ndisks, n);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_object *a = json_object_array_get_idx(list, i);
        const char *path = json_object_is_type(a, json_type_string) ? json_object_get_string(a) : "";
        bool dup = false;
        for (size_t k = 0; k < i; k++)
            dup |= !strcmp(p->storage_to[k], path);
        if (path[0] != '/' || strlen(path) >= sizeof(p->storage_to[0]) - sizeof(".ferry-partial") || dup) {
            snprintf(err, errlen, "\"storage_to\": disk %zu's path must be absolute and unique (%s)", i,
                     dup ? "given twice" : "a path on the destination host");
            rc = -1;
        } else {
            snprintf(p->storage_to[i], sizeof(p->storage_to[0]), "%s", path);
        }
    }
    p->nstorage = rc == 0 ? (int)n : 0;
    json_object_put(list);
    return rc;
}

static int cmd_migrate(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    struct mig_params p;
    mig_params_default(&p);
    const char *moving = vm_disk_moving(vm);
    if (moving) {
        snprintf(err, errlen, "disk %s is being moved (move-disk): wait for the move or cancel it first", moving);
        return -1;
    }
    json_object *uri;
    if (!json_object_object_get_ex(args, "uri", &uri) || !json_object_is_type(uri, json_type_string) ||
        strlen(json_object_get_string(uri)) >= sizeof(p.uri) || !json_object_get_string(uri)[0]) {
        snprintf(err, errlen, "migrate needs \"uri\": the destination, HOST:PORT");
        return -1;
    }
    snprintf(p.uri, sizeof(p.uri), "%s", json_object_get_string(uri));
    uint64_t mbps = 0, max_s = p.max_time_ms / 1000, rounds = p.max_rounds, streams = 0;
    if (arg_u64(args, "downtime_ms", &p.downtime_ms, err, errlen) < 0 ||
        arg_u64(args, "bandwidth_mbps", &mbps, err, errlen) < 0 ||
        arg_u64(args, "max_time_s", &max_s, err, errlen) < 0 ||
        arg_u64(args, "max_rounds", &rounds, err, errlen) < 0 ||
        arg_bool(args, "force", &p.force, err, errlen) < 0 ||
        arg_bool(args, "auto_converge", &p.auto_converge, err, errlen) < 0 ||
        arg_u64(args, "streams", &streams, err, errlen) < 0 ||
        arg_u64(args, "test_skip_gpa", &p.test_skip_gpa, err, errlen) < 0 ||
        arg_u64(args, "test_skip_disk_block", &p.test_skip_disk_block, err, errlen) < 0 ||
        arg_verify(args, &p.verify, err, errlen) < 0 || arg_compress(args, &p.compress, err, errlen) < 0 ||
        arg_via(args, &p, err, errlen) < 0 || arg_storage(args, vm, &p, err, errlen) < 0)
        return -1;
    if (p.downtime_ms == 0 || rounds > 100000 || max_s > 86400 * 7 || mbps > 10000000 ||
        streams > MIG_MAX_STREAMS) {
        snprintf(err, errlen, "out-of-range migrate option (downtime_ms >= 1, max_rounds <= 100000, "
                 "max_time_s <= 604800, bandwidth_mbps <= 10000000, streams <= %d)", MIG_MAX_STREAMS);
        return -1;
    }
    if (!vm->mig.tls && !vm->mig.insecure) {
        snprintf(err, errlen, "no migration credentials: start ferry-vmm with --tls-dir DIR "
                 "(or --insecure for a plaintext migration)");
        return -1;
    }
    p.streams = (int)streams;
    p.bandwidth = mbps * 1000000 / 8;
    p.max_time_ms = max_s * 1000;
    p.max_rounds = (uint32_t)rounds;
    if (migration_start(vm, &p, err, errlen) < 0)
        return -1;
    migration_status(vm, res);
    return 0;
}

static int cmd_migrate_status(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    migration_status(ctx, res);
    return 0;
}

static int cmd_migrate_cancel(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    if (migration_cancel(ctx, err, errlen) < 0)
        return -1;
    json_object_object_add(res, "phase", json_object_new_string("cancelling"));
    return 0;
}

static int cmd_quit(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    log_info("quit requested on the control socket");
    pthread_mutex_lock(&vm->lock);
    vm->quit_req = true;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    vm_request_stop(vm, STOP_QUIT, 0);
    json_object_object_add(res, "state", json_object_new_string("stopping"));
    return 0;
}

/* The ACPI power button: the guest decides (`ferry vm shutdown` waits for
 * it and falls back to `quit`). */
static int cmd_shutdown(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    pthread_mutex_lock(&vm->lock);
    enum vm_state st = vm->state;
    pthread_mutex_unlock(&vm->lock);
    if (st != VM_RUNNING || atomic_load(&vm->stopping)) {
        snprintf(err, errlen, "the VM is %s: only a running VM can be asked to shut down",
                 atomic_load(&vm->stopping) ? "stopping" : vm_state_name(st));
        return -1;
    }
    log_info("power button pressed on the control socket");
    acpi_pm_power_button(&vm->acpi_pm);
    json_object_object_add(res, "state", json_object_new_string("shutting-down"));
    return 0;
}

const struct control_cmd vm_commands[] = {
    { "status", cmd_status },
    { "pause", cmd_pause },
    { "resume", cmd_resume },
    { "quit", cmd_quit },
    { "shutdown", cmd_shutdown },
    { "migrate", cmd_migrate },
    { "migrate-status", cmd_migrate_status },
    { "migrate-cancel", cmd_migrate_cancel },
    { "move-disk", cmd_move_disk },
    { "move-disk-status", cmd_move_disk_status },
    { "move-disk-cancel", cmd_move_disk_cancel },
    { "vcpus", cmd_vcpus },
    { NULL, NULL },
};
