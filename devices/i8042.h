/* i8042 keyboard controller at 0x60/0x64: only the CPU reset line (command
 * 0xfe), which is how Linux reboots without ACPI (reboot=k). */
#ifndef FERRY_I8042_H
#define FERRY_I8042_H

#include <stdbool.h>
#include <stdint.h>

struct i8042 {
    void (*reset)(void *opaque);
    void *opaque;
};

#define I8042_DATA_PORT 0x60
#define I8042_CMD_PORT  0x64

void i8042_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

#endif
