#include <string.h>

#include "devices/bus.h"

int bus_register(struct bus *b, uint64_t base, uint64_t len, bus_io_fn fn, void *opaque,
                 const char *name)
{
    if (b->n == BUS_MAX_RANGES || len == 0)
        return -1;
    for (int i = 0; i < b->n; i++)
        if (base < b->r[i].base + b->r[i].len && b->r[i].base < base + len)
            return -1;
    b->r[b->n++] = (struct bus_range){ base, len, fn, opaque, name };
    return 0;
}

bool bus_access(struct bus *b, uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
    for (int i = 0; i < b->n; i++) {
        struct bus_range *r = &b->r[i];
        if (addr >= r->base && addr - r->base < r->len) {
            r->fn(r->opaque, addr - r->base, data, len, is_write);
            return true;
        }
    }
    if (!is_write)
        memset(data, 0xff, len);
    return false;
}
