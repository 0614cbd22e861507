/* The VM's migratable state as named, versioned sections: "vm" (irqchip, PIT,
 * clock), "cpu" (one per vCPU) and one per registered device (struct
 * mig_device: "uart", ...), each device owning its state table. */
#ifndef FERRY_SECTIONS_H
#define FERRY_SECTIONS_H

#include "migration/kvm_state.h"
#include "migration/vmstate.h"
#include "vmm/vm.h"

struct cpu_section {
    uint32_t id;
    struct vcpu_kvm_state s;
};

extern const struct vmstate_desc vmstate_vm;     /* struct vm_kvm_state */
extern const struct vmstate_desc vmstate_cpu;    /* struct cpu_section */

/* Capture everything (the VM must be paused) into STATE payload bytes. */
int sections_save(struct vm *vm, struct buf *out, char *err, size_t errlen);

/* Staged state received from a stream: validated completely before any of
 * it reaches KVM or a device. */
struct staged_state {
    bool have_vm;
    uint32_t ncpus_seen;
    struct vm_kvm_state vm;
    struct cpu_section *cpu;       /* ncpus entries */
    bool *cpu_seen;
    void *dev[VM_MAX_MIG_DEVICES]; /* per vm->mig_devs entry, its state struct */
    bool dev_seen[VM_MAX_MIG_DEVICES];
};

int staged_init(struct staged_state *st, const struct vm *vm);
void staged_free(struct staged_state *st);
/* Parse one STATE payload into st (sections may come in any order, each once). */
int sections_parse(struct staged_state *st, const struct vm *vm, const uint8_t *p, size_t len,
                   char *err, size_t errlen);
/* Check every section arrived, then load it all into KVM and the devices. */
int sections_apply(struct vm *vm, const struct staged_state *st, char *err, size_t errlen);

#endif
