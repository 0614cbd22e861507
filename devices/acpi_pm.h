/* ACPI PM1 registers (fixed hardware, boot/acpi.h's FADT points here): the
 * event block (status, enable) at ACPI_PM1_EVT_PORT and the control block at
 * ACPI_PM1_CNT_PORT. The only events are the fixed power button, which raises
 * the SCI (level, IRQ 9) while it is both pending and enabled, and the only
 * sleep state is S5: SLP_EN with \_S5's SLP_TYP powers the VM off. */
#ifndef FERRY_ACPI_PM_H
#define FERRY_ACPI_PM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration/vmstate.h"

#define ACPI_PM_PWRBTN     (1u << 8)    /* PM1 status/enable: power button */
/* Enable bits the guest may set and read back, though only the power button
 * ever fires: the global lock's (ACPICA probes it) and the RTC alarm's
 * (rtc_cmos enables it at boot; "Could not enable RealTimeClock event"
 * otherwise). */
#define ACPI_PM_EN_MASK    (ACPI_PM_PWRBTN | (1u << 5) | (1u << 10))
#define ACPI_PM_SCI_EN     (1u << 0)    /* PM1 control */
#define ACPI_PM_SLP_TYP(v) (((v) >> 10) & 7u)
#define ACPI_PM_SLP_EN     (1u << 13)
#define ACPI_PM_SLP_TYP_S5 5            /* as \_S5 in boot/dsdt.asl */

struct acpi_pm_regs {
    uint16_t sts, en, cnt;
};

struct acpi_pm {
    pthread_mutex_t lock;
    struct acpi_pm_regs r;
    void (*sci)(void *opaque, int level);   /* drive the SCI line */
    void (*poweroff)(void *opaque);         /* the guest entered S5 */
    void *opaque;
    int level;                              /* the SCI as last driven */
};

void acpi_pm_init(struct acpi_pm *pm, void (*sci)(void *, int), void (*poweroff)(void *), void *opaque);
/* Port access at offset 0..5 from ACPI_PM1_EVT_PORT (bus_io_fn). */
void acpi_pm_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
/* Press the power button: the guest is asked to shut down. */
void acpi_pm_power_button(struct acpi_pm *pm);

extern const struct vmstate_desc vmstate_acpi_pm;
int acpi_pm_state_save(void *opaque, void *state, char *err, size_t errlen);
int acpi_pm_state_load(void *opaque, const void *state, char *err, size_t errlen);
#define acpi_pm_mig_device(p) ((struct mig_device){ &vmstate_acpi_pm, sizeof(struct acpi_pm_regs), (p), \
                                                    acpi_pm_state_save, acpi_pm_state_load, NULL })

#endif
