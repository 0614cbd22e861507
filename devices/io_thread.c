/* Device I/O threads (see io_thread.h). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/io_thread.h"
#include "vmm/log.h"

void io_thread_init(struct io_thread *t, const char *name)
{
    memset(t, 0, sizeof(*t));
    t->wake_fd = -1;
    t->name = name;
}

int io_thread_start(struct io_thread *t, void *(*fn)(void *), void *arg, char *err, size_t errlen)
{
    if ((t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        snprintf(err, errlen, "%s: eventfd: %s", t->name, strerror(errno));
        return -1;
    }
    if (pthread_create(&t->thread, NULL, fn, arg) != 0) {
        snprintf(err, errlen, "%s: cannot start its I/O thread", t->name);
        return -1;
    }
    t->live = true;
    pthread_setname_np(t->thread, t->name);   /* top -H, /proc/PID/task/TID/comm: whose CPU time */
    return 0;
}

void io_thread_wake(struct io_thread *t)
{
    uint64_t one = 1;
    if (write(t->wake_fd, &one, sizeof(one)) < 0)
        log_warn("%s: cannot wake the I/O thread: %s", t->name, strerror(errno));
}

void io_thread_stop(struct io_thread *t, const struct vm_gate *gate)
{
    if (t->live) {
        atomic_store(&t->stop, true);
        vm_gate_wake(gate);   /* a thread waiting in the gate leaves once the VM is stopping */
        io_thread_wake(t);
        pthread_join(t->thread, NULL);
        t->live = false;
    }
    if (t->wake_fd >= 0)
        close(t->wake_fd);
    t->wake_fd = -1;
}

void io_drain(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof(v)) > 0)
        ;
}
