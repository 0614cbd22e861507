/* VM lifecycle: create (KVM, RAM, irqchip, devices, image, vCPUs), run,
 * pause/resume, stop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "boot/x86.h"
#include "devices/pci.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_net.h"
#include "include/ferry-guest-abi.h"
#include "vmm/log.h"
#include "boot/acpi.h"
#include "vmm/vm.h"

#define KVM_TSS_ADDR          0xfffbd000ull
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000ull

const char *vm_state_name(enum vm_state s)
{
    static const char *names[] = { "created", "running", "paused", "stopped", "migrated" };
    return names[s];
}

static void irq_line(void *opaque, int irq, int level)
{
    struct vm *vm = opaque;
    struct kvm_irq_level l = { .irq = (uint32_t)irq, .level = (uint32_t)level };
    if (ioctl(vm->fd, KVM_IRQ_LINE, &l) < 0)
        log_warn("KVM_IRQ_LINE %d: %s", irq, strerror(errno));
}

static void uart_irq(void *opaque, int level)
{
    irq_line(opaque, UART_COM1_IRQ, level);
}

static void uart_tx(void *opaque, uint8_t byte)
{
    struct vm *vm = opaque;
    if (vm->console_out)
        fputc(byte, vm->console_out);
    /* line-buffered: flush on newline (interactive prompts flush via fflush below) */
    if (vm->console_out && (byte == '\n' || vm->console_out == stdout))
        fflush(vm->console_out);
}

static void testdev_exit(void *opaque, int status)
{
    vm_request_stop(opaque, STOP_GUEST_EXIT, status);
}

static void i8042_reset(void *opaque)
{
    log_info("guest reset (keyboard controller)");
    vm_request_stop(opaque, STOP_RESET, 0);
}

static void acpi_sci(void *opaque, int level)
{
    irq_line(opaque, ACPI_SCI_IRQ, level);
}

static void acpi_poweroff(void *opaque)
{
    vm_request_stop(opaque, STOP_POWEROFF, 0);
}

static int open_console(struct vm *vm, const char *spec, char *err, size_t errlen)
{
    vm->console_in = -1;
    if (!spec || !strcmp(spec, "stdio")) {
        vm->console_out = stdout;
        vm->console_in = STDIN_FILENO;
    } else if (!strncmp(spec, "file:", 5) && spec[5]) {
        vm->console_out = fopen(spec + 5, "w");
        if (!vm->console_out) {
            snprintf(err, errlen, "console file %s: %s", spec + 5, strerror(errno));
            return -1;
        }
    } else if (!strcmp(spec, "none")) {
        vm->console_out = NULL;
    } else {
        snprintf(err, errlen, "bad --console '%s' (expected stdio, file:PATH or none)", spec);
        return -1;
    }
    return 0;
}

static int kvm_open(struct vm *vm, char *err, size_t errlen)
{
    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        snprintf(err, errlen, "cannot open /dev/kvm: %s", strerror(errno));
        return -1;
    }
    if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        snprintf(err, errlen, "/dev/kvm: unsupported KVM API version");
        return -1;
    }
    vm->fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->fd < 0) {
        snprintf(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
        return -1;
    }
    /* Intel needs these pages reserved below 4 GiB; harmless elsewhere. */
    if (ioctl(vm->fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0)
        log_debug("KVM_SET_TSS_ADDR: %s", strerror(errno));
    uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
    if (ioctl(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
        log_debug("KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
    if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0) {
        snprintf(err, errlen, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
        return -1;
    }
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    if (ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0) {
        snprintf(err, errlen, "KVM_CREATE_PIT2: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static int memory_setup(struct vm *vm, char *err, size_t errlen)
{
    if (vm->cfg.mem_ready) {
        vm->mem = *vm->cfg.mem_ready;   /* its size was checked against the VM's */
        *vm->cfg.mem_ready = (struct guest_mem){ .fd = -1 };
        vm->cfg.mem_ready = NULL;
    } else if (gmem_init(&vm->mem, vm->cfg.mem_size, vm->cfg.mem_path, err, errlen) < 0 ||
               (vm->cfg.mem_prealloc && gmem_prealloc(&vm->mem, err, errlen) < 0)) {
        return -1;
    }
    for (int i = 0; i < vm->mem.nregions; i++) {
        struct gmem_region *r = &vm->mem.regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = (uint32_t)i, .guest_phys_addr = r->gpa, .memory_size = r->size,
            .userspace_addr = (uintptr_t)r->hva,
        };
        if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0) {
            snprintf(err, errlen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

int vm_add_mig_device(struct vm *vm, const struct mig_device *d)
{
    if (vm->nmig_devs == VM_MAX_MIG_DEVICES)
        return -1;
    vm->mig_devs[vm->nmig_devs++] = *d;
    return 0;
}

static int devices_setup(struct vm *vm, char *err, size_t errlen)
{
    vm->pio.name = "pio";
    vm->mmio.name = "mmio";
    uart_init(&vm->uart, uart_irq, uart_tx, vm);
    testdev_init(&vm->testdev, &vm->mem, stdout, testdev_exit, vm);
    vm->i8042 = (struct i8042){ .reset = i8042_reset, .opaque = vm };
    rtc_init(&vm->rtc);
    acpi_pm_init(&vm->acpi_pm, acpi_sci, acpi_poweroff, vm);
    if (bus_register(&vm->pio, UART_COM1_BASE, 8, uart_io, &vm->uart, "uart") ||
        bus_register(&vm->pio, I8042_DATA_PORT, 5, i8042_io, &vm->i8042, "i8042") ||
        bus_register(&vm->pio, RTC_PORT, 2, rtc_io, &vm->rtc, "rtc") ||
        bus_register(&vm->pio, ACPI_PM1_EVT_PORT, 6, acpi_pm_io, &vm->acpi_pm, "acpi-pm") ||
        bus_register(&vm->mmio, FERRY_TESTDEV_ADDR, 4096, testdev_io, &vm->testdev, "testdev")) {
        snprintf(err, errlen, "device address conflict");
        return -1;
    }
    if (vm_add_mig_device(vm, &uart_mig_device(&vm->uart)) < 0)
        return -1;
    return vm_add_mig_device(vm, &acpi_pm_mig_device(&vm->acpi_pm));
}

/* ---- PCI devices (--disk, --net) ---- */

/* The PCI bus, created with the first PCI device. */
static struct pci_host *pci_setup(struct vm *vm, char *err, size_t errlen)
{
    if (vm->pci)
        return vm->pci;
    struct pci_host *h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pci_host_init(h);
    vm->pci = h;
    if (bus_register(&vm->pio, PCI_CONFIG_PORT, PCI_CONFIG_PORTS, pci_pio, h, "pci") ||
        bus_register(&vm->mmio, PCI_MMIO_BASE, PCI_MMIO_SIZE, pci_mmio, h, "pci-mmio") ||
        vm_add_mig_device(vm, &pci_host_mig_device(h))) {
        snprintf(err, errlen, "cannot register the PCI bus");
        return NULL;
    }
    return h;
}

/* Device threads act only once the vCPUs were started (vm->lock held). */
static bool vm_started(void *opaque)
{
    enum vm_state s = ((struct vm *)opaque)->state;
    return s == VM_RUNNING || s == VM_PAUSED;
}

static struct vm_gate vm_gate_of(struct vm *vm)
{
    return (struct vm_gate){ &vm->lock, &vm->cond, &vm->pause_req, &vm->stopping, vm_started, vm };
}

/* Put a built device on the PCI bus (made with the first one) and register
 * its state for migration. */
static int pci_attach(struct vm *vm, struct pci_dev *d, const struct mig_device *mig, char *err,
                      size_t errlen)
{
    struct pci_host *h = pci_setup(vm, err, errlen);
    if (!h || pci_register(h, d, err, errlen) < 0)
        return -1;
    if (vm_add_mig_device(vm, mig) < 0) {
        snprintf(err, errlen, "too many devices");
        return -1;
    }
    return 0;
}

static int disks_setup(struct vm *vm, char *err, size_t errlen)
{
    struct vm_gate gate = vm_gate_of(vm);
    for (int i = 0; i < vm->cfg.ndisks; i++) {
        const struct vm_disk *d = &vm->cfg.disks[i];
        struct disk_id want = { d->size, d->fingerprint };
        if (!(vm->blk[i] = calloc(1, sizeof(*vm->blk[i])))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        if (virtio_blk_create(vm->blk[i], i, d->path, d->readonly, d->have_id ? &want : NULL, vm->fd,
                              &vm->mem, &gate, err, errlen) < 0) {
            free(vm->blk[i]);
            vm->blk[i] = NULL;
            return -1;
        }
        if (pci_attach(vm, &vm->blk[i]->vp.pci, &virtio_blk_mig_device(vm->blk[i]), err, errlen) < 0)
            return -1;
    }
    return 0;
}

static int nets_setup(struct vm *vm, char *err, size_t errlen)
{
    struct vm_gate gate = vm_gate_of(vm);
    for (int i = 0; i < vm->cfg.nnics; i++) {
        const struct vm_nic *c = &vm->cfg.nics[i];
        if (!(vm->net[i] = calloc(1, sizeof(*vm->net[i])))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        if (virtio_net_create(vm->net[i], i, c->tap, c->mac, vm->fd, &vm->mem, &gate, err, errlen) < 0) {
            free(vm->net[i]);
            vm->net[i] = NULL;
            return -1;
        }
        if (pci_attach(vm, &vm->net[i]->vp.pci, &virtio_net_mig_device(vm->net[i]), err, errlen) < 0)
            return -1;
    }
    return 0;
}

static void pci_devices_destroy(struct vm *vm)
{
    for (int i = 0; i < VM_MAX_NICS; i++) {
        if (vm->net[i]) {
            virtio_net_destroy(vm->net[i]);
            free(vm->net[i]);
            vm->net[i] = NULL;
        }
    }
    for (int i = 0; i < VM_MAX_DISKS; i++) {
        if (vm->blk[i]) {
            virtio_blk_destroy(vm->blk[i]);
            free(vm->blk[i]);
            vm->blk[i] = NULL;
        }
    }
    free(vm->pci);
    vm->pci = NULL;
}

static uint64_t tsc_khz(struct vm *vm)
{
    int khz = ioctl(vm->fd, KVM_GET_TSC_KHZ, 0);
    return khz > 0 ? (uint64_t)khz : 0;
}

static int image_load(struct vm *vm, char *err, size_t errlen)
{
    struct boot_params_in in = {
        .kernel_path = vm->cfg.kernel, .initrd_path = vm->cfg.initrd,
        .cmdline = vm->cfg.cmdline, .ncpus = vm->ncpus, .tsc_khz = tsc_khz(vm),
    };
    int elf = boot_is_elf(vm->cfg.kernel);
    if (elf && vm->cfg.initrd) {
        snprintf(err, errlen, "--initrd is only for Linux kernels, not micro-guests");
        return -1;
    }
    int r = elf ? microguest_load(&vm->mem, &in, &vm->boot, err, errlen)
                : linux_load(&vm->mem, &in, &vm->boot, err, errlen);
    if (r < 0)
        return -1;
    return x86_write_tables(&vm->mem, vm->boot.mode == BOOT_MICROGUEST, err, errlen);
}

int vm_create(struct vm *vm, const struct vm_config *cfg, char *err, size_t errlen)
{
    memset(vm, 0, sizeof(*vm));
    vm->cfg = *cfg;
    vm->kvm_fd = vm->fd = -1;
    vm->mem.fd = -1;
    vm->ncpus = cfg->ncpus;
    pthread_mutex_init(&vm->lock, NULL);
    pthread_cond_init(&vm->cond, NULL);

    if (cfg->ncpus < 1 || cfg->ncpus > VM_MAX_VCPUS) {
        snprintf(err, errlen, "vCPU count %d out of range (1-%d)", cfg->ncpus, VM_MAX_VCPUS);
        return -1;
    }
    if (!cfg->kernel && !cfg->incoming) {
        snprintf(err, errlen, "no kernel given (--kernel FILE)");
        return -1;
    }
    pthread_mutex_init(&vm->mig.lock, NULL);
    if (cfg->incoming && cfg->mem_path)
        unlink(cfg->mem_path);  /* RAM must start zeroed: zero pages are not sent */
    if (open_console(vm, cfg->console, err, errlen) < 0 || kvm_open(vm, err, errlen) < 0 ||
        memory_setup(vm, err, errlen) < 0 || devices_setup(vm, err, errlen) < 0 ||
        disks_setup(vm, err, errlen) < 0 || nets_setup(vm, err, errlen) < 0)
        return -1;
    if (cfg->incoming) {
        vm->boot.mode = cfg->boot_mode;
        size_t sz = sizeof(*cfg->cpuid) + cfg->cpuid->nent * sizeof(cfg->cpuid->entries[0]);
        if (!(vm->cpuid = malloc(sz))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcpy(vm->cpuid, cfg->cpuid, sz);
    } else {
        if (image_load(vm, err, errlen) < 0)
            return -1;
        if (!(vm->cpuid = cpuid_supported(vm->kvm_fd, err, errlen)))
            return -1;
    }
    for (int i = 0; i < vm->ncpus; i++) {
        if (vcpu_create(vm, i, err, errlen) < 0)
            return -1;
        if (!cfg->incoming && vcpu_setup_boot(&vm->vcpus[i], err, errlen) < 0)
            return -1;
    }
    /* Probing takes one ioctl per MSR: do it here, not in a migration's pause. */
    return msr_list_build(vm->kvm_fd, vm->vcpus[0].fd, &vm->msrs, err, errlen);
}

static void sig_kick(int sig)
{
    (void)sig;  /* only interrupts KVM_RUN */
}

int vm_start(struct vm *vm)
{
    struct sigaction sa = { .sa_handler = sig_kick };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    /* Hold the lock while threads start: a vCPU that stops the VM at once
     * must find every sibling marked started, or its kick would miss one. */
    pthread_mutex_lock(&vm->lock);
    vm->state = VM_RUNNING;
    for (int i = 0; i < vm->ncpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (pthread_create(&v->thread, NULL, vcpu_thread, v) != 0) {
            pthread_mutex_unlock(&vm->lock);
            log_err("cannot start vCPU %d thread", i);
            vm_request_stop(vm, STOP_ERROR, 1);
            return -1;
        }
        v->started = true;
    }
    pthread_cond_broadcast(&vm->cond);   /* device threads wait in their gate for the start */
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

void vm_incoming_started(struct vm *vm)
{
    for (int i = 0; i < vm->nmig_devs; i++)
        if (vm->mig_devs[i].incoming_started)
            vm->mig_devs[i].incoming_started(vm->mig_devs[i].opaque);
}

void vm_pause(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    if (vm->state != VM_RUNNING) {
        pthread_mutex_unlock(&vm->lock);
        return;
    }
    __atomic_store_n(&vm->pause_req, true, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&vm->cond);   /* a vCPU in a throttle sleep parks at once */
    for (int i = 0; i < vm->ncpus; i++)
        vcpu_kick(&vm->vcpus[i]);
    while (vm->nparked < vm->ncpus && !atomic_load(&vm->stopping))
        pthread_cond_wait(&vm->cond, &vm->lock);
    vm->state = VM_PAUSED;
    pthread_mutex_unlock(&vm->lock);
}

void vm_resume(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    if (vm->state == VM_PAUSED) {
        __atomic_store_n(&vm->pause_req, false, __ATOMIC_RELEASE);
        vm->state = VM_RUNNING;
        pthread_cond_broadcast(&vm->cond);
    }
    pthread_mutex_unlock(&vm->lock);
}

void vm_request_stop(struct vm *vm, enum vm_stop_reason why, int status)
{
    pthread_mutex_lock(&vm->lock);
    if (!atomic_load(&vm->stopping)) {
        vm->stop_reason = why;
        vm->exit_status = status;
        atomic_store(&vm->stopping, true);
        for (int i = 0; i < vm->ncpus; i++)
            if (vm->vcpus[i].run)
                vcpu_kick(&vm->vcpus[i]);
        pthread_cond_broadcast(&vm->cond);
    }
    pthread_mutex_unlock(&vm->lock);
}

int vm_wait(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    while (!atomic_load(&vm->stopping))
        pthread_cond_wait(&vm->cond, &vm->lock);
    pthread_mutex_unlock(&vm->lock);
    for (int i = 0; i < vm->ncpus; i++)
        if (vm->vcpus[i].started)
            pthread_join(vm->vcpus[i].thread, NULL);
    pthread_mutex_lock(&vm->lock);
    vm->state = VM_STOPPED;
    pthread_mutex_unlock(&vm->lock);
    if (vm->console_out)
        fflush(vm->console_out);
    return vm->exit_status;
}

void vm_destroy(struct vm *vm)
{
    atomic_store(&vm->stopping, true);   /* device threads waiting in their gate leave */
    pci_devices_destroy(vm);   /* stops the devices' threads before RAM goes */
    for (int i = 0; i < vm->ncpus; i++)
        if (vm->vcpus[i].fd > 0)
            close(vm->vcpus[i].fd);
    gmem_destroy(&vm->mem);
    free(vm->cpuid);
    if (vm->fd >= 0)
        close(vm->fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    if (vm->console_out && vm->console_out != stdout)
        fclose(vm->console_out);
}
