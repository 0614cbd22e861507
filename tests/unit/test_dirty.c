/* The pre-copy dirty log (migration/dirty.c) on a real KVM VM with one
 * memslot and no vCPU: pages a device marks (gmem_mark_dirty) are to be sent
 * until they are sent, however many fetches come first (a round that ends
 * in the switchover fetches again before sending: the regression this
 * guards), and sending clears exactly the chunk sent. Skipped without
 * /dev/kvm. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <cmocka.h>

#include "migration/dirty.h"

#define RAM (8u << 20)

static uint8_t ram[RAM] __attribute__((aligned(2 << 20)));
static struct guest_mem mem;
static int kvm_fd = -1, vm_fd = -1;
static char err[200];

static int setup(void **state)
{
    if ((kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0)
        return 0;
    vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    gmem_init_fake(&mem, RAM, ram);
    struct kvm_userspace_memory_region r = { .slot = 0, .memory_size = RAM, .userspace_addr = (uintptr_t)ram };
    if (vm_fd < 0 || mem.nregions != 1 || ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
        close(kvm_fd);
        kvm_fd = -1;
    }
    return 0;
}

static bool bit(const struct dirty_log *d, uint64_t page) { return dirty_test(d, 0, page); }

static void test_device_pages_kept_until_sent(void **state)
{
    if (kvm_fd < 0)
        skip();
    struct dirty_log d;
    assert_int_equal(dirty_log_start(&d, kvm_fd, vm_fd, &mem, err, sizeof(err)), 0);
    /* round 0: everything (INITIALLY_SET, or set by hand without it) */
    assert_int_equal(dirty_log_fetch(&d, err, sizeof(err)), RAM / 4096);
    dirty_log_clear(&d, 0, 0, RAM / 4096, err, sizeof(err));
    dirty_log_sent(&d, 0, 0, RAM / 4096);
    assert_int_equal(dirty_log_fetch(&d, err, sizeof(err)), 0);

    /* a device writes page 700; a fetch sees it, and so must the next one
     * when nothing was sent in between */
    gmem_mark_dirty(&mem, 700 * 4096 + 100, 8);
    assert_int_equal(dirty_log_fetch(&d, err, sizeof(err)), 1);
    assert_true(bit(&d, 700));
    gmem_mark_dirty(&mem, 1500 * 4096, 4096 + 1);   /* two pages */
    assert_int_equal(dirty_log_fetch(&d, err, sizeof(err)), 3);
    assert_true(bit(&d, 700) && bit(&d, 1500) && bit(&d, 1501));

    /* sending the first 1024 pages clears those only */
    dirty_log_clear(&d, 0, 0, 1024, err, sizeof(err));
    dirty_log_sent(&d, 0, 0, 1024);
    assert_false(bit(&d, 700));
    assert_int_equal(dirty_log_fetch(&d, err, sizeof(err)), 2);
    assert_true(bit(&d, 1500) && bit(&d, 1501));
    dirty_log_sent(&d, 0, 1024, RAM / 4096 - 1024);
    assert_int_equal(dirty_log_fetch(&d, err, sizeof(err)), 0);

    dirty_log_stop(&d);
    gmem_mark_dirty(&mem, 0, 4096);                /* not tracking: ignored */
    assert_int_equal(mem.dev_dirty[0][0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_pages_kept_until_sent),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
