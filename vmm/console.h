#ifndef FERRY_CONSOLE_H
#define FERRY_CONSOLE_H

#include "vmm/vm.h"

/* Feed the VM's console input (stdin) to its UART from a thread of its own.
 * On a terminal: raw mode, and Ctrl-A x stops the VM. */
int console_start(struct vm *vm);
void console_stop(void);

#endif
