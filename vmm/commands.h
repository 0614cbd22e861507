#ifndef FERRY_COMMANDS_H
#define FERRY_COMMANDS_H

#include "vmm/control.h"
#include "vmm/vm.h"

/* Control-socket command table for one VM (ctx = struct vm *). */
extern const struct control_cmd vm_commands[];

/* move_disk.c: move-disk, move-disk-status, move-disk-cancel */
int cmd_move_disk(void *ctx, json_object *args, json_object *res, char *err, size_t errlen);
int cmd_move_disk_status(void *ctx, json_object *args, json_object *res, char *err, size_t errlen);
int cmd_move_disk_cancel(void *ctx, json_object *args, json_object *res, char *err, size_t errlen);
/* The name (vda...) of a disk being moved, or NULL. */
const char *vm_disk_moving(struct vm *vm);

#endif
