#ifndef FERRY_COMMANDS_H
#define FERRY_COMMANDS_H

#include "vmm/control.h"
#include "vmm/vm.h"

/* Control-socket command table for one VM (ctx = struct vm *). */
extern const struct control_cmd vm_commands[];

#endif
