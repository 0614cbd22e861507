/* VM commands on the control socket: status, pause, resume, quit. */
#include <stdio.h>

#include "vmm/commands.h"
#include "vmm/log.h"

static int cmd_status(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    pthread_mutex_lock(&vm->lock);
    const char *state = vm_state_name(vm->state);
    if (atomic_load(&vm->stopping))
        state = "stopping";
    pthread_mutex_unlock(&vm->lock);
    json_object_object_add(res, "state", json_object_new_string(state));
    json_object_object_add(res, "vcpus", json_object_new_int(vm->ncpus));
    json_object_object_add(res, "memory_mib", json_object_new_int64((int64_t)(vm->mem.ram_size >> 20)));
    json_object_object_add(res, "kernel", json_object_new_string(vm->cfg.kernel));
    json_object_object_add(res, "boot", json_object_new_string(
        vm->boot.mode == BOOT_MICROGUEST ? "micro-guest" : "linux"));
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

static int cmd_quit(void *ctx, json_object *args, json_object *res, char *err, size_t errlen)
{
    struct vm *vm = ctx;
    log_info("quit requested on the control socket");
    vm_request_stop(vm, STOP_QUIT, 0);
    json_object_object_add(res, "state", json_object_new_string("stopping"));
    return 0;
}

const struct control_cmd vm_commands[] = {
    { "status", cmd_status },
    { "pause", cmd_pause },
    { "resume", cmd_resume },
    { "quit", cmd_quit },
    { NULL, NULL },
};
