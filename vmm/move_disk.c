/* Control-socket commands of the live disk move (devices/blk_move.h):
 * move-disk, move-disk-status, move-disk-cancel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/blk_move.h"
#include "devices/virtio_blk.h"
#include "vmm/commands.h"

/* "vda".."vdd", "virtio-blkN" or N (number or string) -> index, or -1. */
static int disk_index(struct vm *vm, json_object *v)
{
    int i = -1;
    if (json_object_is_type(v, json_type_int)) {
        i = json_object_get_int(v);
    } else if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        char *end;
        if (strlen(s) == 3 && s[0] == 'v' && s[1] == 'd' && s[2] >= 'a' && s[2] < 'a' + VM_MAX_DISKS)
            i = s[2] - 'a';
        else if (!strncmp(s, "virtio-blk", 10) && s[10] && (i = (int)strtol(s + 10, &end, 10), *end))
            i = -1;
        else if (s[0] >= '0' && s[0] <= '9' && (i = (int)strtol(s, &end, 10), *end))
            i = -1;
    }
    return i >= 0 && i < VM_MAX_DISKS && vm->blk[i] ? i : -1;
}

/* The disk named by args "disk"; without one (when allowed) the disk with a
 * move in progress, else the last disk moved. -1 with err. */
static int pick_disk(struct vm *vm, json_object *args, bool required, char *err, size_t errlen)
{
    json_object *v;
    if (json_object_object_get_ex(args, "disk", &v)) {
        int i = disk_index(vm, v);
        if (i < 0)
            snprintf(err, errlen, "no disk %s: name one of this VM's disks (vda, vdb, ... or its index)",
                     json_object_get_string(v));
        return i;
    }
    if (required) {
        snprintf(err, errlen, "move-disk needs \"disk\": vda, vdb, ... or an index");
        return -1;
    }
    int last = -1;
    for (int i = 0; i < VM_MAX_DISKS; i++) {
        if (vm->blk[i] && blk_move_active(vm->blk[i]))
            return i;
        if (vm->blk[i] && vm->blk[i]->move)
            last = i;
    }
    return last;
}

static void move_status(struct vm *vm, int i, json_object *res)
{
    struct blk_move_info in;
    if (i < 0 || !blk_move_info(vm->blk[i], &in)) {
        json_object_object_add(res, "phase", json_object_new_string("none"));
        return;
    }
    char name[4] = { 'v', 'd', (char)('a' + i), 0 };
    bool active = in.phase == MOVE_COPY || in.phase == MOVE_MIRROR;
    uint64_t left = in.dirty_blocks * MOVE_BLOCK;
    if (in.phase == MOVE_COPY && in.total_bytes > in.pass0_bytes)
        left += in.total_bytes - in.pass0_bytes;
    json_object_object_add(res, "phase", json_object_new_string(blk_move_phase_name(in.phase)));
    json_object_object_add(res, "disk", json_object_new_string(name));
    json_object_object_add(res, "device", json_object_new_string(vm->blk[i]->name));
    json_object_object_add(res, "source", json_object_new_string(in.source));
    json_object_object_add(res, "target", json_object_new_string(in.target));
    json_object_object_add(res, "io", json_object_new_string(in.io));
    const struct { const char *k; uint64_t v; } n[] = {
        { "size", in.size }, { "total_bytes", in.total_bytes }, { "pass0_bytes", in.pass0_bytes },
        { "bytes_copied", in.bytes_copied }, { "zero_bytes", in.zero_bytes },
        { "remaining_bytes", active ? left : 0 }, { "dirty_blocks", in.dirty_blocks },
        { "block_size", MOVE_BLOCK }, { "pass", in.pass }, { "mirrored_writes", in.mirrored_writes },
        { "elapsed_ms", in.elapsed_ms }, { "switch_us", in.switch_us },
        { "bandwidth_mbps", in.bandwidth * 8 / 1000000 },
    };
    for (size_t k = 0; k < sizeof(n) / sizeof(n[0]); k++)
        json_object_object_add(res, n[k].k, json_object_new_int64((int64_t)n[k].v));
    json_object_object_add(res, "rate_mbps", json_object_new_double(in.rate * 8 / 1e6));
    json_object_object_add(res, "delete_source", json_object_new_boolean(in.delete_source));
    if (in.error[0])
        json_object_object_add(res, "error", json_object_new_string(in.error));
}

int cmd_move_disk(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    int i = pick_disk(vm, args, true, err, errlen);
    if (i < 0)
        return -1;
    json_object *to, *v;
    if (!json_object_object_get_ex(args, "to", &to) || !json_object_is_type(to, json_type_string) ||
        !json_object_get_string(to)[0]) {
        snprintf(err, errlen, "move-disk needs \"to\": the new image's path");
        return -1;
    }
    struct blk_move_params p = { .target = json_object_get_string(to) };
    const struct { const char *k; bool *b; } flags[] = {
        { "delete_source", &p.delete_source }, { "force", &p.force }, { "no_uring", &p.no_uring },
    };
    for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++) {
        if (!json_object_object_get_ex(args, flags[k].k, &v))
            continue;
        if (!json_object_is_type(v, json_type_boolean)) {
            snprintf(err, errlen, "\"%s\" must be true or false", flags[k].k);
            return -1;
        }
        *flags[k].b = json_object_get_boolean(v);
    }
    const struct { const char *k; uint64_t *u; uint64_t max; } nums[] = {
        { "bandwidth_mbps", &p.bandwidth, 10000000 }, { "test_hold_ms", &p.test_hold_ms, 600000 },
        { "test_switch_ms", &p.test_switch_ms, 60000 },
    };
    for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]); k++) {
        if (!json_object_object_get_ex(args, nums[k].k, &v))
            continue;
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
            (uint64_t)json_object_get_int64(v) > nums[k].max) {
            snprintf(err, errlen, "\"%s\" must be an integer from 0 to %llu", nums[k].k,
                     (unsigned long long)nums[k].max);
            return -1;
        }
        *nums[k].u = (uint64_t)json_object_get_int64(v);
    }
    p.bandwidth = p.bandwidth * 1000000 / 8;
    pthread_mutex_lock(&vm->lock);
    enum vm_state st = vm->state;
    pthread_mutex_unlock(&vm->lock);
    if (atomic_load(&vm->stopping) || (st != VM_RUNNING && st != VM_PAUSED)) {
        snprintf(err, errlen, "the VM is %s: only a running or paused VM's disk can be moved",
                 atomic_load(&vm->stopping) ? "stopping" : vm_state_name(st));
        return -1;
    }
    json_object *mig = json_object_new_object(), *ph;
    migration_status(vm, mig);
    const char *phase = json_object_object_get_ex(mig, "phase", &ph) ? json_object_get_string(ph) : "none";
    bool migrating = !strcmp(phase, "setup") || !strcmp(phase, "precopy") || !strcmp(phase, "switchover") ||
                     !strcmp(phase, "in-doubt");
    if (migrating)
        snprintf(err, errlen, "a migration is in progress (%s): move the disk before or after it", phase);
    json_object_put(mig);
    if (migrating)
        return -1;
    if (blk_move_start(vm->blk[i], &p, err, errlen) < 0)
        return -1;
    move_status(vm, i, res);
    return 0;
}

int cmd_move_disk_status(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    json_object *v;
    int i = pick_disk(vm, args, false, err, errlen);
    if (i < 0 && json_object_object_get_ex(args, "disk", &v))
        return -1;
    move_status(vm, i, res);
    return 0;
}

int cmd_move_disk_cancel(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    json_object *v;
    int i = pick_disk(vm, args, false, err, errlen);
    if (i < 0) {
        if (!json_object_object_get_ex(args, "disk", &v))
            snprintf(err, errlen, "no disk move in progress");
        return -1;
    }
    if (blk_move_cancel(vm->blk[i], err, errlen) < 0)
        return -1;
    json_object_object_add(res, "phase", json_object_new_string("cancelling"));
    return 0;
}

/* For migrate: the first disk being moved, or NULL. */
const char *vm_disk_moving(struct vm *vm)
{
    static const char *const names[] = { "vda", "vdb", "vdc", "vdd" };
    for (int i = 0; i < VM_MAX_DISKS && i < 4; i++)
        if (vm->blk[i] && blk_move_active(vm->blk[i]))
            return names[i];
    return NULL;
}
