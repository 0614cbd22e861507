/* ACPI PM1 event and control registers (see acpi_pm.h). */
#include <string.h>

#include "devices/acpi_pm.h"

void acpi_pm_init(struct acpi_pm *pm, void (*sci)(void *, int), void (*poweroff)(void *), void *opaque)
{
    memset(pm, 0, sizeof(*pm));
    pthread_mutex_init(&pm->lock, NULL);
    pm->r.cnt = ACPI_PM_SCI_EN;   /* no SMI_CMD in the FADT: always in ACPI mode */
    pm->sci = sci;
    pm->poweroff = poweroff;
    pm->opaque = opaque;
}

/* Lock held. The SCI follows pending-and-enabled events. */
static void update_sci(struct acpi_pm *pm)
{
    int level = (pm->r.sts & pm->r.en & ACPI_PM_PWRBTN) != 0;
    if (level != pm->level) {
        pm->level = level;
        pm->sci(pm->opaque, level);
    }
}

/* One 16-bit register at byte offset `reg` (0 status, 2 enable, 4 control). */
static uint16_t *reg16(struct acpi_pm *pm, uint64_t reg)
{
    return reg == 0 ? &pm->r.sts : reg == 2 ? &pm->r.en : reg == 4 ? &pm->r.cnt : NULL;
}

/* Write `v` under `mask` (the bytes written) into a register. */
static bool write_reg(struct acpi_pm *pm, uint64_t reg, uint16_t v, uint16_t mask)
{
    switch (reg) {
    case 0:   /* status: write 1 to clear */
        pm->r.sts &= (uint16_t)~(v & mask);
        return false;
    case 2:
        pm->r.en = (uint16_t)((pm->r.en & ~mask) | (v & mask & ACPI_PM_EN_MASK));
        return false;
    default: {  /* control: SLP_EN is write-only and acts at once */
        uint16_t cnt = (uint16_t)((pm->r.cnt & ~mask) | (v & mask));
        pm->r.cnt = (uint16_t)((cnt & ~ACPI_PM_SLP_EN) | ACPI_PM_SCI_EN);
        return (cnt & ACPI_PM_SLP_EN) && ACPI_PM_SLP_TYP(cnt) == ACPI_PM_SLP_TYP_S5;
    }
    }
}

void acpi_pm_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct acpi_pm *pm = opaque;
    bool off = false;
    pthread_mutex_lock(&pm->lock);
    /* byte by byte, so that any access width ACPICA picks (8/16/32) works */
    for (uint32_t i = 0; i < len && offset + i < 6; i++) {
        uint64_t at = offset + i, reg = at & ~1ull;
        unsigned shift = (unsigned)(at & 1) * 8;
        uint16_t *r = reg16(pm, reg);
        if (!is_write)
            data[i] = (uint8_t)(*r >> shift);
        else
            off |= write_reg(pm, reg, (uint16_t)(data[i] << shift), (uint16_t)(0xff << shift));
    }
    if (is_write)
        update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
    if (off)
        pm->poweroff(pm->opaque);
}

void acpi_pm_power_button(struct acpi_pm *pm)
{
    pthread_mutex_lock(&pm->lock);
    pm->r.sts |= ACPI_PM_PWRBTN;
    update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
}

static const struct vmstate_field acpi_pm_fields[] = {
    VMSTATE_U16(struct acpi_pm_regs, sts),
    VMSTATE_U16(struct acpi_pm_regs, en),
    VMSTATE_U16(struct acpi_pm_regs, cnt),
    VMSTATE_END,
};
const struct vmstate_desc vmstate_acpi_pm = { "acpi-pm", 1, 1, acpi_pm_fields, sizeof(struct acpi_pm_regs) };

int acpi_pm_state_save(void *opaque, void *state, char *err, size_t errlen)
{
    struct acpi_pm *pm = opaque;
    pthread_mutex_lock(&pm->lock);
    memcpy(state, &pm->r, sizeof(pm->r));
    pthread_mutex_unlock(&pm->lock);
    return 0;
}

int acpi_pm_state_load(void *opaque, const void *state, char *err, size_t errlen)
{
    struct acpi_pm *pm = opaque;
    pthread_mutex_lock(&pm->lock);
    memcpy(&pm->r, state, sizeof(pm->r));
    pm->level = -1;   /* drive the destination's line whatever it was */
    update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
    return 0;
}
