#include <string.h>
#include <time.h>

#include "devices/testdev.h"
#include "include/ferry-guest-abi.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void testdev_init(struct testdev *t, struct guest_mem *mem, FILE *out,
                  void (*exit_fn)(void *, int), void *opaque)
{
    memset(t, 0, sizeof(*t));
    t->mem = mem;
    t->out = out;
    t->exit = exit_fn;
    t->opaque = opaque;
    pthread_mutex_init(&t->lock, NULL);
}

/* Print the guest's NUL-terminated string at gpa, bounded and sanitised. */
static void print_string(struct testdev *t, uint64_t gpa)
{
    char line[1024];
    size_t n = 0;
    for (; n < sizeof(line) - 1; n++) {
        const char *c = gmem_ptr(t->mem, gpa + n, 1);
        if (!c || !*c)
            break;
        line[n] = (*c == '\n' || (*c >= 0x20 && *c < 0x7f)) ? *c : '?';
    }
    while (n && line[n - 1] == '\n')
        n--;
    line[n] = '\0';
    fprintf(t->out, "%s\n", line);
    fflush(t->out);
}

void testdev_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct testdev *t = opaque;
    uint64_t v = 0;
    if (len > sizeof(v))
        len = sizeof(v);
    if (is_write)
        memcpy(&v, data, len);

    pthread_mutex_lock(&t->lock);
    if (is_write) {
        switch (offset) {
        case FERRY_TESTDEV_PRINT:
            print_string(t, v);
            break;
        case FERRY_TESTDEV_RESULT:
            t->result = v;
            fprintf(t->out, "testdev: result %llu\n", (unsigned long long)v);
            fflush(t->out);
            break;
        case FERRY_TESTDEV_STAMP:
            t->stamp_tsc = v;
            t->stamp_ns = now_ns();
            break;
        }
    } else if (offset == FERRY_TESTDEV_TIME_NS) {
        v = now_ns();
    }
    pthread_mutex_unlock(&t->lock);

    if (is_write && offset == FERRY_TESTDEV_SLEEP) {
        /* outside the lock; a signal (a pause, a kick) ends it early */
        uint64_t ns = v < FERRY_TESTDEV_SLEEP_MAX_NS ? v : FERRY_TESTDEV_SLEEP_MAX_NS;
        nanosleep(&(struct timespec){ .tv_nsec = (long)ns }, NULL);
    }
    if (is_write && offset == FERRY_TESTDEV_EXIT)
        t->exit(t->opaque, (int)(v & 0xff));
    if (!is_write)
        memcpy(data, &v, len);
}
