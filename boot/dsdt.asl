/* Ferry's DSDT, compiled at build time by Debian's iasl (acpica-tools) into
 * dsdt.hex and embedded by boot/acpi.c. With ACPI, Linux finds PCI only
 * through a host bridge here: its _CRS must cover the config ports and the
 * BAR window devices/pci.h assigns from (PCI_MMIO_BASE, PCI_MMIO_SIZE). The
 * power button is the FADT's fixed feature; \_S5 gives the SLP_TYP that
 * devices/acpi_pm.c powers off on (ACPI_PM_SLP_TYP_S5). */
DefinitionBlock ("dsdt.aml", "DSDT", 2, "FERRY", "FERRYVM", 1)
{
    Scope (\_SB)
    {
        Device (PCI0)
        {
            Name (_HID, EisaId ("PNP0A03"))
            Name (_UID, 0)
            Name (_CRS, ResourceTemplate ()
            {
                WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0xFF, 0, 0x100)
                IO (Decode16, 0x0CF8, 0x0CF8, 1, 8)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                        0, 0x0000, 0x0CF7, 0, 0x0CF8)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                        0, 0x0D00, 0xFFFF, 0, 0xF300)
                DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
                             0, 0xE0000000, 0xEFFFFFFF, 0, 0x10000000)
            })
        }
    }
    Name (\_S5, Package (4) { 5, 5, 0, 0 })
}
