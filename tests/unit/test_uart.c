/* The 16550A model (devices/uart.c) through its port interface, as Linux's
 * 8250 driver drives it: transmit, line status, divisor latch, THRE and RX
 * interrupts and their priority, the RX FIFO, loopback and the probe's MSR
 * check, FIFO control and the scratch register. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "devices/uart.h"

enum { RBR_THR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR };

struct fake {
    struct uart u;
    int level, irq_calls;
    uint8_t tx[256];
    size_t ntx;
};

static void fake_irq(void *opaque, int level)
{
    struct fake *f = opaque;
    f->level = level;
    f->irq_calls++;
}

static void fake_tx(void *opaque, uint8_t byte)
{
    struct fake *f = opaque;
    if (f->ntx < sizeof(f->tx))
        f->tx[f->ntx++] = byte;
}

static void out(struct fake *f, unsigned reg, uint8_t v)
{
    uart_io(&f->u, reg, &v, 1, true);
}

static uint8_t in(struct fake *f, unsigned reg)
{
    uint8_t v = 0x5a;
    uart_io(&f->u, reg, &v, 1, false);
    return v;
}

static int setup(void **state)
{
    static struct fake f;
    memset(&f, 0, sizeof(f));
    uart_init(&f.u, fake_irq, fake_tx, &f);
    *state = &f;
    return 0;
}

static void test_thr_write_calls_tx(void **state)
{
    struct fake *f = *state;
    const char *msg = "hi\n";
    for (const char *p = msg; *p; p++)
        out(f, RBR_THR, (uint8_t)*p);
    assert_int_equal(f->ntx, 3);
    assert_memory_equal(f->tx, msg, 3);
    assert_int_equal(f->level, 0);  /* no interrupt without IER */
}

static void test_lsr_thre_temt(void **state)
{
    struct fake *f = *state;
    assert_int_equal(in(f, LSR), 0x60);     /* THRE | TEMT: transmitter idle */
    out(f, RBR_THR, 'x');
    assert_int_equal(in(f, LSR), 0x60);     /* transmit is immediate */
    uart_receive(&f->u, (const uint8_t *)"a", 1);
    assert_int_equal(in(f, LSR), 0x61);     /* + DR */
    out(f, LSR, 0x00);                      /* read-only */
    assert_int_equal(in(f, LSR), 0x61);
}

static void test_dlab_divisor_latch(void **state)
{
    struct fake *f = *state;
    out(f, IER, 0x05);
    out(f, LCR, 0x83);                      /* DLAB + 8N1 */
    out(f, RBR_THR, 0x0c);                  /* 9600 baud: divisor 12 */
    out(f, IER, 0x00);
    assert_int_equal(in(f, RBR_THR), 0x0c);
    assert_int_equal(in(f, IER), 0x00);
    assert_int_equal(f->ntx, 0);            /* DLL write is not a byte sent */
    assert_int_equal(in(f, LCR), 0x83);
    out(f, LCR, 0x03);
    assert_int_equal(in(f, IER), 0x05);     /* IER kept, DLM separate */
    out(f, LCR, 0x83);
    assert_int_equal(in(f, RBR_THR), 0x0c);
    out(f, LCR, 0x03);
    out(f, RBR_THR, 'z');
    assert_int_equal(f->ntx, 1);
    assert_int_equal(f->tx[0], 'z');
}

static void test_thri_raise_and_iir_ack(void **state)
{
    struct fake *f = *state;
    assert_int_equal(in(f, IIR_FCR) & 0x0f, 0x01);      /* nothing pending */
    out(f, IER, 0x02);                                  /* THRI while THR empty: at once */
    assert_int_equal(f->level, 1);
    assert_int_equal(in(f, IIR_FCR) & 0x0f, 0x02);      /* THRE; reading acknowledges */
    assert_int_equal(f->level, 0);
    assert_int_equal(in(f, IIR_FCR) & 0x0f, 0x01);
    out(f, RBR_THR, 'a');                               /* sent: THR empty again */
    assert_int_equal(f->level, 1);
    assert_int_equal(in(f, IIR_FCR) & 0x0f, 0x02);
    assert_int_equal(f->level, 0);
    out(f, RBR_THR, 'b');
    assert_int_equal(f->level, 1);
    out(f, IER, 0x00);                                  /* masking drops the line */
    assert_int_equal(f->level, 0);
    int calls = f->irq_calls;
    out(f, SCR, 1);                                     /* the line is only driven on change */
    assert_int_equal(f->irq_calls, calls);
}

static void test_rx_fifo_dr_and_priority(void **state)
{
    struct fake *f = *state;
    out(f, IER, 0x03);                                  /* RDI + THRI */
    assert_int_equal(f->level, 1);                      /* THRE pending */
    assert_int_equal(uart_receive(&f->u, (const uint8_t *)"abc", 3), 3);
    assert_int_equal(in(f, LSR) & 0x01, 0x01);
    assert_int_equal(in(f, IIR_FCR) & 0x0f, 0x04);      /* RX data first */
    assert_int_equal(in(f, IIR_FCR) & 0x0f, 0x04);      /* and reading IIR keeps THRE pending */
    assert_int_equal(in(f, RBR_THR), 'a');
    assert_int_equal(in(f, RBR_THR), 'b');
    assert_int_equal(in(f, LSR) & 0x01, 0x01);
    assert_int_equal(in(f, RBR_THR), 'c');
    assert_int_equal(in(f, LSR) & 0x01, 0x00);
    assert_int_equal(f->level, 1);
    assert_int_equal(in(f, IIR_FCR) & 0x0f, 0x02);      /* now THRE */
    assert_int_equal(f->level, 0);
    assert_int_equal(in(f, RBR_THR), 0);                /* empty FIFO reads 0 */

    out(f, IER, 0x01);                                  /* RDI only */
    uart_receive(&f->u, (const uint8_t *)"z", 1);
    assert_int_equal(f->level, 1);
    assert_int_equal(in(f, RBR_THR), 'z');
    assert_int_equal(f->level, 0);
}

static void test_fifo_overflow_drops(void **state)
{
    struct fake *f = *state;
    uint8_t buf[UART_RX_FIFO + 36];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)i;
    assert_int_equal(uart_receive(&f->u, buf, sizeof(buf)), UART_RX_FIFO);
    assert_int_equal(uart_receive(&f->u, buf, 1), 0);
    out(f, MCR, 0x10);                                  /* loopback into a full FIFO: dropped */
    out(f, RBR_THR, 0xee);
    out(f, MCR, 0x00);
    for (size_t i = 0; i < UART_RX_FIFO; i++)
        assert_int_equal(in(f, RBR_THR), (uint8_t)i);
    assert_int_equal(in(f, LSR) & 0x01, 0);
    /* the ring wraps cleanly after being full */
    assert_int_equal(uart_receive(&f->u, (const uint8_t *)"xy", 2), 2);
    assert_int_equal(in(f, RBR_THR), 'x');
    assert_int_equal(in(f, RBR_THR), 'y');
}

static void test_loopback(void **state)
{
    struct fake *f = *state;
    assert_int_equal(in(f, MSR), 0xb0);                 /* DCD, DSR, CTS: cable in */
    out(f, MCR, 0x10);
    assert_int_equal(in(f, MSR) & 0xf0, 0x00);          /* Linux: loopback with outputs low */
    out(f, MCR, 0x1a);                                  /* LOOP | OUT2 | RTS */
    assert_int_equal(in(f, MSR) & 0xf0, 0x90);          /* DCD | CTS: what the 8250 probe wants */
    out(f, MCR, 0x11);
    assert_int_equal(in(f, MSR) & 0xf0, 0x20);          /* DTR -> DSR */
    out(f, MCR, 0x14);
    assert_int_equal(in(f, MSR) & 0xf0, 0x40);          /* OUT1 -> RI */
    out(f, MCR, 0x1f);
    assert_int_equal(in(f, MSR) & 0xf0, 0xf0);
    assert_int_equal(in(f, MCR), 0x1f);

    out(f, IER, 0x01);
    out(f, RBR_THR, 0x42);                              /* looped back, not transmitted */
    assert_int_equal(f->ntx, 0);
    assert_int_equal(in(f, LSR) & 0x01, 0x01);
    assert_int_equal(f->level, 1);
    assert_int_equal(in(f, RBR_THR), 0x42);
    assert_int_equal(f->level, 0);

    out(f, MCR, 0x0b);                                  /* loopback off */
    assert_int_equal(in(f, MSR), 0xb0);
    out(f, RBR_THR, 0x43);
    assert_int_equal(f->ntx, 1);
    assert_int_equal(f->tx[0], 0x43);
}

static void test_fcr(void **state)
{
    struct fake *f = *state;
    assert_int_equal(in(f, IIR_FCR) & 0xc0, 0x00);      /* FIFO off: a 16450 to the probe */
    out(f, IIR_FCR, 0x01);
    assert_int_equal(in(f, IIR_FCR) & 0xc0, 0xc0);      /* FIFO on: 16550A */
    out(f, IER, 0x01);
    uart_receive(&f->u, (const uint8_t *)"abcd", 4);
    assert_int_equal(f->level, 1);
    out(f, IIR_FCR, 0x03);                              /* clear RX */
    assert_int_equal(in(f, LSR) & 0x01, 0);
    assert_int_equal(f->level, 0);
    assert_int_equal(in(f, IIR_FCR), 0xc1);
    uart_receive(&f->u, (const uint8_t *)"e", 1);
    assert_int_equal(in(f, RBR_THR), 'e');              /* usable after the clear */
    out(f, IIR_FCR, 0x00);
    assert_int_equal(in(f, IIR_FCR) & 0xc0, 0x00);
}

static void test_scratch(void **state)
{
    struct fake *f = *state;
    out(f, SCR, 0x55);
    assert_int_equal(in(f, SCR), 0x55);
    out(f, SCR, 0xaa);
    assert_int_equal(in(f, SCR), 0xaa);
    assert_int_equal(f->ntx, 0);
    /* wide reads: the extra bytes read as zero */
    uint8_t wide[4] = { 0xff, 0xff, 0xff, 0xff };
    uart_io(&f->u, SCR, wide, 4, false);
    assert_int_equal(wide[0], 0xaa);
    assert_int_equal(wide[1] | wide[2] | wide[3], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_thr_write_calls_tx, setup),
        cmocka_unit_test_setup(test_lsr_thre_temt, setup),
        cmocka_unit_test_setup(test_dlab_divisor_latch, setup),
        cmocka_unit_test_setup(test_thri_raise_and_iir_ack, setup),
        cmocka_unit_test_setup(test_rx_fifo_dr_and_priority, setup),
        cmocka_unit_test_setup(test_fifo_overflow_drops, setup),
        cmocka_unit_test_setup(test_loopback, setup),
        cmocka_unit_test_setup(test_fcr, setup),
        cmocka_unit_test_setup(test_scratch, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
