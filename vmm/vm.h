/* One virtual machine: the KVM VM, its RAM, vCPU threads and devices. */
#ifndef FERRY_VM_H
#define FERRY_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <linux/kvm.h>

#include "boot/boot.h"
#include "devices/bus.h"
#include "devices/i8042.h"
#include "devices/rtc.h"
#include "devices/acpi_pm.h"
#include "devices/testdev.h"
#include "devices/uart.h"
#include "migration/kvm_state.h"
#include "migration/migrate.h"
#include "migration/vmstate.h"
#include "vmm/memory.h"
#include "vmm/throttle.h"

#define VM_MAX_VCPUS 64

struct vm;
struct pci_host;
struct virtio_blk;
struct virtio_net;

/* A device whose state migrates: one state-table section per device. */
struct mig_device {
    const struct vmstate_desc *desc;   /* section name = desc->name, unique per VM */
    size_t state_size;                 /* sizeof the struct desc describes */
    void *opaque;
    /* Copy the device's state into `state`; the vCPUs are paused and the
     * device must have completed its in-flight I/O. */
    int (*save)(void *opaque, void *state, char *err, size_t errlen);
    /* Install a fully validated `state` before the vCPUs start. */
    int (*load)(void *opaque, const void *state, char *err, size_t errlen);
    /* The VM runs here after an incoming migration (NULL: nothing to do),
     * e.g. a NIC announcing the VM's MAC on this host's network. */
    void (*incoming_started)(void *opaque);
};

#define VM_MAX_MIG_DEVICES 16

struct vcpu {
    struct vm *vm;
    int id;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool started;
    unsigned cpu_flags;       /* x86_cpu_flags() of its CPUID */
    uint64_t throttle_t0;     /* CLOCK_MONOTONIC ns of its last throttle sleep (throttle.c) */
    uint64_t throttle_cpu0;   /* and its thread's CPU time then */
};

enum vm_state { VM_CREATED, VM_RUNNING, VM_PAUSED, VM_STOPPED, VM_MIGRATED };

/* Why the VM stopped; decides ferry-vmm's exit status. */
enum vm_stop_reason { STOP_NONE, STOP_POWEROFF, STOP_RESET, STOP_GUEST_EXIT, STOP_QUIT, STOP_ERROR,
                      STOP_MIGRATED };

/* --disk: a virtio-blk disk. An incoming VM's disks carry the identity the
 * source saw (have_id): the file opened here must match it. */
#define VM_MAX_DISKS 4
struct vm_disk {
    const char *path;
    const char *copy_to;      /* incoming, shared-nothing: the image arrives on the stream; it is
                                 written to path (copy_to + ".ferry-partial"), renamed at COMMIT */
    bool readonly;
    bool have_id;
    uint64_t size, fingerprint;
};

/* --net: a virtio-net NIC on a tap device. An incoming VM's NICs keep the
 * source's MAC; the tap is the source's name unless --net tap=NAME says. */
#define VM_MAX_NICS 4
struct vm_nic {
    const char *tap;
    uint8_t mac[6];
    bool mac_given;
};

struct vm_config {
    uint64_t mem_size;
    const char *mem_path;
    bool mem_prealloc;        /* fault all RAM in at creation (--prealloc) */
    /* RAM already mapped and faulted in, taken over by vm_create: an
     * incoming VM's, prepared while the destination waited (--incoming
     * with --mem and --prealloc), so the migration does not wait for it */
    struct guest_mem *mem_ready;
    int ncpus;
    const char *kernel, *initrd, *cmdline;
    const char *console;      /* "stdio", "file:PATH", "none" */
    /* Incoming migration: no image is loaded; RAM and state arrive on the
     * stream, with the source's boot mode and CPUID. */
    bool incoming;
    enum boot_mode boot_mode;
    const struct kvm_cpuid2 *cpuid;
    struct vm_disk disks[VM_MAX_DISKS];
    int ndisks;
    struct vm_nic nics[VM_MAX_NICS];
    int nnics;
};

struct vm {
    struct vm_config cfg;
    int kvm_fd, fd;
    struct guest_mem mem;
    struct kvm_cpuid2 *cpuid;
    struct msr_list msrs;     /* MSRs a migration saves: probed once, before the vCPUs run */
    struct boot_entry boot;
    int ncpus;
    struct vcpu vcpus[VM_MAX_VCPUS];

    struct bus pio, mmio;
    struct uart uart;
    struct testdev testdev;
    struct i8042 i8042;
    struct rtc rtc;
    struct acpi_pm acpi_pm;
    FILE *console_out;
    int console_in;           /* fd fed to the UART, or -1 */
    struct pci_host *pci;     /* PCI bus, when a PCI device is configured */
    struct virtio_blk *blk[VM_MAX_DISKS];   /* --disk */
    struct virtio_net *net[VM_MAX_NICS];    /* --net */

    pthread_mutex_t lock;     /* state, pause handshake */
    pthread_cond_t cond;
    enum vm_state state;
    bool pause_req;
    int nparked;              /* vCPU threads parked by a pause */
    atomic_bool stopping;
    enum vm_stop_reason stop_reason;
    int exit_status;

    struct mig_device mig_devs[VM_MAX_MIG_DEVICES];
    int nmig_devs;
    struct migration mig;     /* outgoing migration (source side) */
    struct throttle throttle; /* auto-converge, set by the migration */
    bool quit_req;            /* `quit` after the VM left by migration */
};

/* Build the VM from cfg: KVM, memory, irqchip, devices, image, vCPUs. */
int vm_create(struct vm *vm, const struct vm_config *cfg, char *err, size_t errlen);
int vm_start(struct vm *vm);
/* After vm_start of a VM that came by migration: devices' incoming_started. */
void vm_incoming_started(struct vm *vm);
/* Park every vCPU outside KVM_RUN (returns once all are parked) / let them run. */
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
/* Ask the VM to stop; the first reason wins. Safe from any thread. */
void vm_request_stop(struct vm *vm, enum vm_stop_reason why, int status);
/* Wait until the VM stops, join vCPU threads; returns the process exit status. */
int vm_wait(struct vm *vm);
void vm_destroy(struct vm *vm);
const char *vm_state_name(enum vm_state s);
/* Register a device for migration (at VM creation; 0 or -1 when full). */
int vm_add_mig_device(struct vm *vm, const struct mig_device *d);

/* vcpu.c */
int vcpu_create(struct vm *vm, int id, char *err, size_t errlen);
int vcpu_setup_boot(struct vcpu *v, char *err, size_t errlen);
void *vcpu_thread(void *arg);
void vcpu_kick(struct vcpu *v);

/* cpuid.c / msr.c */
struct kvm_cpuid2 *cpuid_supported(int kvm_fd, char *err, size_t errlen);
/* A CPUID feature word and the Linux names of its bits (NULL: unnamed). */
struct cpuid_word {
    uint32_t fn, idx;
    int reg;                  /* 0 eax, 1 ebx, 2 ecx, 3 edx */
    const char *bits[32];
};
extern const struct cpuid_word cpuid_words[];
extern const size_t cpuid_nwords;
uint32_t cpuid_word_value(const struct kvm_cpuid2 *c, const struct cpuid_word *w);
/* --cpu-features: the guest sees only the listed (comma-separated) named
 * features; -1 with the reason for an unknown name. */
int cpuid_mask_set(const char *list, char *err, size_t errlen);
/* One vCPU's CPUID: the mask, APIC ids, no PMU. */
void cpuid_filter(struct kvm_cpuid2 *c, int vcpu_id, int ncpus);
/* 0 when every feature the VM was given (and, with a mask, may see) is
 * available in `have`. */
int cpuid_check_compatible(const struct kvm_cpuid2 *want, const struct kvm_cpuid2 *have,
                           char *err, size_t errlen);
int msr_setup_boot(int vcpu_fd);

#endif
