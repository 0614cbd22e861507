/* The disk move engine (devices/blk_move.c) in-process, on a virtio_blk
 * with no VM: a writer thread plays the device's request thread (the same
 * hold protocol and hooks as virtio_blk.c's execute) and rewrites random
 * blocks through every phase; the new image must end up equal to what the
 * writer wrote, holes beyond the data must stay holes, and a cancel must
 * leave everything on the old image. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <cmocka.h>

#include "devices/blk_move.h"
#include "devices/virtio_blk.h"

#define SIZE   (8u << 20)
#define DATA   (4u << 20)    /* written at the start; the rest is a hole */
#define WRANGE (6u << 20)    /* the writer's range: into the hole too */
#define WBS    4096u

static char dir[64], src[96], dst[96], partial[128];
static struct virtio_blk b;
static uint8_t *shadow;          /* what the disk holds, as the writer wrote it */
static atomic_bool stop_writer;
static atomic_ulong nwrites;

static void setup_disk(void)
{
    snprintf(dir, sizeof(dir), "/tmp/ferry-blkmove.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(src, sizeof(src), "%s/a.img", dir);
    snprintf(dst, sizeof(dst), "%s/b.img", dir);
    snprintf(partial, sizeof(partial), "%s%s", dst, MOVE_PARTIAL_SUFFIX);
    shadow = calloc(1, SIZE);
    assert_non_null(shadow);
    for (uint32_t i = 0; i < DATA; i++)
        shadow[i] = (uint8_t)(i * 7 + 1);
    int fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, SIZE), 0);
    assert_int_equal(pwrite(fd, shadow, DATA, 0), (ssize_t)DATA);
    memset(&b, 0, sizeof(b));
    snprintf(b.name, sizeof(b.name), "virtio-blk0");
    pthread_mutex_init(&b.vp.lock, NULL);
    pthread_cond_init(&b.vp.cond, NULL);
    io_thread_init(&b.io, b.name);
    b.io.wake_fd = eventfd(0, EFD_NONBLOCK);
    b.fd = fd;
    b.path = strdup(src);
    b.id.size = SIZE;
    atomic_store(&stop_writer, false);
    atomic_store(&nwrites, 0);
}

static void teardown_disk(void)
{
    blk_move_destroy(&b);
    close(b.fd);
    close(b.io.wake_fd);
    free(b.path);
    free(shadow);
    unlink(src);
    unlink(dst);
    unlink(partial);
    rmdir(dir);
}

/* One "batch" of one write, as the request thread runs it. */
static void guest_write(uint64_t off, uint8_t val)
{
    pthread_mutex_lock(&b.vp.lock);
    while (b.held) {
        pthread_mutex_unlock(&b.vp.lock);
        usleep(50);
        pthread_mutex_lock(&b.vp.lock);
    }
    b.busy = true;
    pthread_mutex_unlock(&b.vp.lock);

    uint8_t buf[WBS];
    memset(buf, val, sizeof(buf));
    struct blk_move *mv = b.move;
    int mfd = blk_move_write_begin(mv, off, WBS, true);
    int rr = pwrite(b.fd, buf, WBS, (off_t)off) == WBS ? 0 : -1;
    int merr = 0;
    if (mfd >= 0 && rr == 0 && pwrite(mfd, buf, WBS, (off_t)off) != WBS)
        merr = errno;
    blk_move_write_end(mv, off, WBS, mfd, merr, rr == 0);
    memcpy(shadow + off, buf, WBS);

    pthread_mutex_lock(&b.vp.lock);
    b.busy = false;
    pthread_cond_broadcast(&b.vp.cond);
    pthread_mutex_unlock(&b.vp.lock);
    atomic_fetch_add(&nwrites, 1);
}

static void *writer(void *arg)
{
    unsigned seed = 1;
    while (!atomic_load(&stop_writer)) {
        uint64_t off = (uint64_t)(rand_r(&seed) % (WRANGE / WBS)) * WBS;
        guest_write(off, (uint8_t)(rand_r(&seed) | 1));
    }
    return NULL;
}

static enum blk_move_phase wait_final(void)
{
    struct blk_move_info in;
    for (int i = 0; i < 20000; i++) {
        blk_move_info(&b, &in);
        if (in.phase != MOVE_COPY && in.phase != MOVE_MIRROR)
            return in.phase;
        usleep(1000);
    }
    fail_msg("the move did not finish");
    return MOVE_NONE;
}

static void file_equals_shadow(const char *path)
{
    uint8_t *buf = malloc(SIZE);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, SIZE, 0), (ssize_t)SIZE);
    for (uint32_t off = 0; off < SIZE; off += WBS)
        if (memcmp(buf + off, shadow + off, WBS))
            fail_msg("%s: block at %u differs from what was written", path, off);
    /* the hole beyond the writer's range stays a hole */
    off_t d = lseek(fd, WRANGE, SEEK_DATA);
    assert_true(d < 0 && errno == ENXIO);
    close(fd);
    free(buf);
}

static void test_move_under_writes(void **state)
{
    setup_disk();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer, NULL), 0);
    while (atomic_load(&nwrites) < 100)
        usleep(100);
    char err[256];
    /* a capped copy (so that plenty of writes land in every phase), then
     * 200 ms of mirroring */
    struct blk_move_params p = { .target = dst, .bandwidth = 40u << 20, .test_hold_ms = 200 };
    assert_int_equal(blk_move_start(&b, &p, err, sizeof(err)), 0);
    assert_int_equal(wait_final(), MOVE_SWITCHED);
    unsigned long at_switch = atomic_load(&nwrites);
    while (atomic_load(&nwrites) < at_switch + 100)
        usleep(100);
    atomic_store(&stop_writer, true);
    pthread_join(t, NULL);
    struct blk_move_info in;
    blk_move_info(&b, &in);
    assert_true(in.mirrored_writes > 0);
    assert_string_equal(b.path, dst);
    assert_int_equal(access(partial, F_OK), -1);
    file_equals_shadow(dst);
    teardown_disk();
}

static void test_cancel(void **state)
{
    setup_disk();
    int old_fd = b.fd;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer, NULL), 0);
    char err[256];
    struct blk_move_params p = { .target = dst, .test_hold_ms = 10000 };
    assert_int_equal(blk_move_start(&b, &p, err, sizeof(err)), 0);
    /* a second move of the same disk is refused */
    assert_int_equal(blk_move_start(&b, &p, err, sizeof(err)), -1);
    struct blk_move_info in;
    do {
        usleep(1000);
        blk_move_info(&b, &in);
    } while (in.phase == MOVE_COPY);
    assert_int_equal(in.phase, MOVE_MIRROR);
    assert_int_equal(blk_move_cancel(&b, err, sizeof(err)), 0);
    assert_int_equal(wait_final(), MOVE_CANCELLED);
    assert_int_equal(blk_move_cancel(&b, err, sizeof(err)), -1);
    atomic_store(&stop_writer, true);
    pthread_join(t, NULL);
    assert_int_equal(b.fd, old_fd);
    assert_string_equal(b.path, src);
    assert_int_equal(access(dst, F_OK), -1);
    assert_int_equal(access(partial, F_OK), -1);
    file_equals_shadow(src);
    teardown_disk();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_move_under_writes),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
