/* 16550A model: enough for Linux's 8250 driver (probe, FIFO detection,
 * loopback test, THRE and RX interrupts) and for interactive use. */
#include <string.h>

#include <stdio.h>

#include "devices/uart.h"

enum {
    REG_RBR_THR = 0, REG_IER = 1, REG_IIR_FCR = 2, REG_LCR = 3,
    REG_MCR = 4, REG_LSR = 5, REG_MSR = 6, REG_SCR = 7,
};
#define IER_RDI   0x01
#define IER_THRI  0x02
#define IIR_NONE  0x01
#define IIR_THRI  0x02
#define IIR_RDI   0x04
#define IIR_FIFO  0xc0
#define FCR_FIFO  0x01
#define FCR_CLEAR_RX 0x02
#define LCR_DLAB  0x80
#define MCR_LOOP  0x10
#define LSR_DR    0x01
#define LSR_THRE  0x20
#define LSR_TEMT  0x40

static uint8_t iir(const struct uart_regs *r)
{
    uint8_t fifo = (r->fcr & FCR_FIFO) ? IIR_FIFO : 0;
    if ((r->ier & IER_RDI) && r->rx_count)
        return IIR_RDI | fifo;
    if ((r->ier & IER_THRI) && r->iir_thri)
        return IIR_THRI | fifo;
    return IIR_NONE | fifo;
}

static void update_irq(struct uart *u)
{
    uint8_t level = !(iir(&u->r) & IIR_NONE);
    if (level != u->r.irq_level) {
        u->r.irq_level = level;
        u->irq(u->opaque, level);
    }
}

static void rx_push(struct uart_regs *r, uint8_t c)
{
    if (r->rx_count == UART_RX_FIFO)
        return;  /* overrun: drop, as hardware would */
    r->rx[(r->rx_head + r->rx_count) % UART_RX_FIFO] = c;
    r->rx_count++;
}

static uint8_t rx_pop(struct uart_regs *r)
{
    if (!r->rx_count)
        return 0;
    uint8_t c = r->rx[r->rx_head];
    r->rx_head = (uint8_t)((r->rx_head + 1) % UART_RX_FIFO);
    r->rx_count--;
    return c;
}

void uart_init(struct uart *u, void (*irq)(void *, int), void (*tx)(void *, uint8_t), void *opaque)
{
    memset(u, 0, sizeof(*u));
    pthread_mutex_init(&u->lock, NULL);
    u->irq = irq;
    u->tx = tx;
    u->opaque = opaque;
    u->r.iir_thri = 0;
    u->r.msr = 0xb0;  /* DCD, DSR, CTS: a cable is plugged in */
}

static void write_reg(struct uart *u, unsigned reg, uint8_t v)
{
    struct uart_regs *r = &u->r;
    bool dlab = r->lcr & LCR_DLAB;
    switch (reg) {
    case REG_RBR_THR:
        if (dlab) {
            r->dll = v;
            break;
        }
        if (r->mcr & MCR_LOOP)
            rx_push(r, v);
        else
            u->tx(u->opaque, v);
        r->iir_thri = 1;  /* sent at once: THR is empty again */
        break;
    case REG_IER:
        if (dlab) {
            r->dlm = v;
            break;
        }
        /* enabling THRI while the THR is empty raises the interrupt at once */
        if (!(r->ier & IER_THRI) && (v & IER_THRI))
            r->iir_thri = 1;
        r->ier = v & 0x0f;
        break;
    case REG_IIR_FCR:
        r->fcr = v & 0xc9;
        if (v & FCR_CLEAR_RX)
            r->rx_head = r->rx_count = 0;
        break;
    case REG_LCR:
        r->lcr = v;
        break;
    case REG_MCR:
        r->mcr = v & 0x1f;
        break;
    case REG_SCR:
        r->scr = v;
        break;
    default:  /* LSR, MSR: read-only */
        break;
    }
}

static uint8_t read_reg(struct uart *u, unsigned reg)
{
    struct uart_regs *r = &u->r;
    bool dlab = r->lcr & LCR_DLAB;
    switch (reg) {
    case REG_RBR_THR:
        return dlab ? r->dll : rx_pop(r);
    case REG_IER:
        return dlab ? r->dlm : r->ier;
    case REG_IIR_FCR: {
        uint8_t v = iir(r);
        if ((v & 0x0f) == IIR_THRI)
            r->iir_thri = 0;  /* reading IIR acknowledges THRE */
        return v;
    }
    case REG_LCR:
        return r->lcr;
    case REG_MCR:
        return r->mcr;
    case REG_LSR:
        return LSR_THRE | LSR_TEMT | (r->rx_count ? LSR_DR : 0);
    case REG_MSR:
        if (r->mcr & MCR_LOOP) {
            /* loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD */
            uint8_t m = r->mcr;
            return (uint8_t)(((m & 1) << 5) | ((m & 2) << 3) | ((m & 4) << 4) | ((m & 8) << 4));
        }
        return r->msr;
    case REG_SCR:
        return r->scr;
    }
    return 0xff;
}

void uart_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct uart *u = opaque;
    pthread_mutex_lock(&u->lock);
    if (is_write)
        write_reg(u, (unsigned)offset & 7, data[0]);
    else
        data[0] = read_reg(u, (unsigned)offset & 7);
    for (uint32_t i = 1; !is_write && i < len; i++)
        data[i] = 0;
    update_irq(u);
    pthread_mutex_unlock(&u->lock);
}

size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len)
{
    size_t n = 0;
    pthread_mutex_lock(&u->lock);
    while (n < len && u->r.rx_count < UART_RX_FIFO)
        rx_push(&u->r, buf[n++]);
    update_irq(u);
    pthread_mutex_unlock(&u->lock);
    return n;
}

static const struct vmstate_field uart_fields[] = {
    VMSTATE_U8(struct uart_regs, ier), VMSTATE_U8(struct uart_regs, iir_thri),
    VMSTATE_U8(struct uart_regs, lcr), VMSTATE_U8(struct uart_regs, mcr),
    VMSTATE_U8(struct uart_regs, lsr_extra), VMSTATE_U8(struct uart_regs, msr),
    VMSTATE_U8(struct uart_regs, scr), VMSTATE_U8(struct uart_regs, fcr),
    VMSTATE_U8(struct uart_regs, dll), VMSTATE_U8(struct uart_regs, dlm),
    VMSTATE_U8(struct uart_regs, irq_level), VMSTATE_U8(struct uart_regs, rx_head),
    VMSTATE_U8(struct uart_regs, rx_count), VMSTATE_ARRAY_U8(struct uart_regs, rx),
    VMSTATE_END,
};
const struct vmstate_desc vmstate_uart = { "uart", 1, 1, uart_fields, sizeof(struct uart_regs) };

int uart_state_save(void *opaque, void *state, char *err, size_t errlen)
{
    struct uart *u = opaque;
    pthread_mutex_lock(&u->lock);
    memcpy(state, &u->r, sizeof(u->r));
    pthread_mutex_unlock(&u->lock);
    return 0;
}

int uart_state_load(void *opaque, const void *state, char *err, size_t errlen)
{
    struct uart *u = opaque;
    const struct uart_regs *r = state;
    if (r->rx_head >= UART_RX_FIFO || r->rx_count > UART_RX_FIFO) {
        snprintf(err, errlen, "uart state: receive FIFO index out of range");
        return -1;
    }
    pthread_mutex_lock(&u->lock);
    u->r = *r;
    pthread_mutex_unlock(&u->lock);
    return 0;
}
