/* The thread a device does its I/O on (virtio-blk requests, virtio-net
 * packets): started with the device, woken through an eventfd of its own
 * (besides the queues' kick eventfds it polls), stopped and joined when the
 * device goes. The thread function loops while !io_thread_stopping(). */
#ifndef FERRY_IO_THREAD_H
#define FERRY_IO_THREAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "devices/virtio_pci.h"

struct io_thread {
    pthread_t thread;
    bool live;
    int wake_fd;            /* eventfd: poll it with the device's other fds */
    atomic_bool stop;
    const char *name;       /* the device's, for messages */
};

/* Before anything else: the thread is not running, wake_fd is -1. */
void io_thread_init(struct io_thread *t, const char *name);
/* Create the eventfd and start fn(arg). 0, or -1 with a reason. */
int io_thread_start(struct io_thread *t, void *(*fn)(void *), void *arg, char *err, size_t errlen);
/* Make the thread's poll return (after a state load, a driver's DRIVER_OK). */
void io_thread_wake(struct io_thread *t);
static inline bool io_thread_stopping(struct io_thread *t) { return atomic_load(&t->stop); }
/* Stop and join it (waking it in the VM gate too), close the eventfd. Safe
 * when it never started. */
void io_thread_stop(struct io_thread *t, const struct vm_gate *gate);
/* Empty an eventfd (kick or wake) after poll said it is readable. */
void io_drain(int fd);

#endif
