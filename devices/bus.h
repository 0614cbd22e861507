/* Port-I/O and MMIO dispatch. Devices register address ranges before the
 * vCPUs start; lookups afterwards are lock-free (the table never changes). */
#ifndef FERRY_BUS_H
#define FERRY_BUS_H

#include <stdbool.h>
#include <stdint.h>

typedef void (*bus_io_fn)(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

struct bus_range {
    uint64_t base, len;
    bus_io_fn fn;
    void *opaque;
    const char *name;
};

#define BUS_MAX_RANGES 32

struct bus {
    const char *name;   /* "pio" or "mmio", for messages */
    int n;
    struct bus_range r[BUS_MAX_RANGES];
};

/* 0, or -1 when the range overlaps another or the table is full. */
int bus_register(struct bus *b, uint64_t base, uint64_t len, bus_io_fn fn, void *opaque,
                 const char *name);
/* Dispatch an access; false when no device claims it (reads then see all ones). */
bool bus_access(struct bus *b, uint64_t addr, uint8_t *data, uint32_t len, bool is_write);

#endif
