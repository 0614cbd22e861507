#include <string.h>

#include "devices/i8042.h"

#define I8042_CMD_RESET 0xfe

/* Registered over 0x60..0x64; offset 4 is the command/status port. */
void i8042_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct i8042 *k = opaque;
    if (!is_write) {
        memset(data, 0, len);  /* status: both buffers empty, no data */
        return;
    }
    if (offset == I8042_CMD_PORT - I8042_DATA_PORT && data[0] == I8042_CMD_RESET)
        k->reset(k->opaque);
}
