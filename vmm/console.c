#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <pthread.h>
#include <stdbool.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "vmm/console.h"
#include "vmm/log.h"

#define CTRL_A 0x01

static struct termios saved_tio;
static bool tio_saved;
static pthread_t input_thread;
static bool input_started;

static void console_restore(void)
{
    if (tio_saved)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
    tio_saved = false;
}

static void *console_input(void *arg)
{
    struct vm *vm = arg;
    bool escape = false;
    while (!atomic_load(&vm->stopping)) {
        struct pollfd p = { .fd = vm->console_in, .events = POLLIN };
        int r = poll(&p, 1, 200);
        if (r <= 0)
            continue;
        uint8_t buf[64];
        ssize_t n = read(vm->console_in, buf, sizeof(buf));
        if (n <= 0)
            break;  /* EOF: no more input, the guest keeps running */
        for (ssize_t i = 0; i < n; i++) {
            if (tio_saved && escape) {
                escape = false;
                if (buf[i] == 'x') {
                    log_info("Ctrl-A x: stopping the VM");
                    vm_request_stop(vm, STOP_QUIT, 0);
                    return NULL;
                }
            } else if (tio_saved && buf[i] == CTRL_A) {
                escape = true;
                continue;
            }
            /* the FIFO drains as the guest reads; wait rather than drop */
            while (uart_receive(&vm->uart, &buf[i], 1) == 0 && !atomic_load(&vm->stopping))
                nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
        }
    }
    return NULL;
}

int console_start(struct vm *vm)
{
    if (vm->console_in < 0)
        return 0;
    if (isatty(vm->console_in) && tcgetattr(vm->console_in, &saved_tio) == 0) {
        struct termios raw = saved_tio;
        cfmakeraw(&raw);
        raw.c_oflag |= OPOST | ONLCR;  /* keep output newlines readable */
        tcsetattr(vm->console_in, TCSANOW, &raw);
        tio_saved = true;
        atexit(console_restore);
    }
    if (pthread_create(&input_thread, NULL, console_input, vm) != 0)
        return -1;
    input_started = true;
    return 0;
}

void console_stop(void)
{
    if (input_started)
        pthread_join(input_thread, NULL);
    input_started = false;
    console_restore();
}
