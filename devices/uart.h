/* 16550A UART at 0x3f8 (ttyS0), IRQ 4. Transmit is immediate; receive is fed
 * by the console input thread. */
#ifndef FERRY_UART_H
#define FERRY_UART_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration/vmstate.h"

#define UART_COM1_BASE 0x3f8
#define UART_COM1_IRQ  4
#define UART_RX_FIFO   64

/* Everything a migration must carry: plain data, described by a state table. */
struct uart_regs {
    uint8_t ier, iir_thri, lcr, mcr, lsr_extra, msr, scr, fcr;
    uint8_t dll, dlm;
    uint8_t irq_level;
    uint8_t rx_head, rx_count;
    uint8_t rx[UART_RX_FIFO];
};

struct uart {
    pthread_mutex_t lock;
    struct uart_regs r;
    void (*irq)(void *opaque, int level);   /* drive the interrupt line */
    void (*tx)(void *opaque, uint8_t byte); /* a byte the guest sent */
    void *opaque;
};

void uart_init(struct uart *u, void (*irq)(void *, int), void (*tx)(void *, uint8_t), void *opaque);
/* Port access at offset 0..7 (bus_io_fn). */
void uart_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
/* Queue received bytes; returns how many fitted in the FIFO. */
size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len);

/* Migration: struct uart_regs as a state table, and save/load hooks
 * (opaque = struct uart *) for struct mig_device. */
extern const struct vmstate_desc vmstate_uart;
int uart_state_save(void *opaque, void *state, char *err, size_t errlen);
int uart_state_load(void *opaque, const void *state, char *err, size_t errlen);
#define uart_mig_device(u) ((struct mig_device){ &vmstate_uart, sizeof(struct uart_regs), (u), \
                                                 uart_state_save, uart_state_load, NULL })

#endif
