#include <string.h>

#include "devices/i8042.h"

#define I8042_CMD_RESET 0xfe

/* Registered over 0x60..0x64; offset 4 is the command/status port. */
void i8042_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct i8042 *k = opaque;
    if (!is_write) {
        /* No keyboard: an all-ones status makes Linux's probe give up at once
         * ("No controller found") instead of timing out on commands. */
        memset(data, 0xff, len);
        return;
    }
    if (offset == I8042_CMD_PORT - I8042_DATA_PORT && data[0] == I8042_CMD_RESET)
        k->reset(k->opaque);
}
