"""PCI functions in the device tree: what the PCI core shows of a controller (drivers/pci/pci-sysfs.c).

Contract:
- `pci_register_function(core, slot, ids, driver)` registers the function `slot`
  ("0000:00:04.0") on bus pci below the host bridge devices/pci0000:00 (made on first use),
  bound to `driver` (bus/pci/drivers/<driver>), with the config-space identity sysfs shows
  (vendor, device, subsystem_vendor, subsystem_device, class, revision, irq when given,
  numa_node, enable, msi_bus) and pci_uevent's variables. It returns the Device, the parent of
  what the driver registers next (nvme0, ata1).
- device_unregister(dev) takes it out again (the host bridge stays, as on Linux).
"""

from __future__ import annotations

from dataclasses import dataclass

from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.device import Device, device_register
from rinuxfs.drivers.base.kobject import const

PCI_HOST_BRIDGE = "pci0000:00"


@dataclass(frozen=True)
class PciIds:
    vendor: int
    device: int
    subsystem_vendor: int
    subsystem_device: int
    class_code: int  # base class, subclass, programming interface: 0x010802 is NVMe
    revision: int | None = None
    irq: int | None = None

    def uevent(self, slot: str) -> list[str]:
        """pci_uevent's variables."""
        c = self.class_code
        return [f"PCI_CLASS={c:04X}", f"PCI_ID={self.vendor:04X}:{self.device:04X}",
                f"PCI_SUBSYS_ID={self.subsystem_vendor:04X}:{self.subsystem_device:04X}", f"PCI_SLOT_NAME={slot}",
                f"MODALIAS=pci:v{self.vendor:08X}d{self.device:08X}sv{self.subsystem_vendor:08X}"
                f"sd{self.subsystem_device:08X}bc{c >> 16:02X}sc{c >> 8 & 0xFF:02X}i{c & 0xFF:02X}"]


def pci_register_function(core: DriverCore, slot: str, ids: PciIds, driver: str) -> Device:
    bus = core.bus_register("pci")
    host = core.devices.entries.get(PCI_HOST_BRIDGE)
    if not isinstance(host, Device):
        host = device_register(Device(PCI_HOST_BRIDGE, core.devices))
    dev = Device(slot, host, bus=bus, driver=bus.driver_register(driver), uevent=lambda: ids.uevent(slot))
    rows = [("vendor", f"{ids.vendor:#06x}"), ("device", f"{ids.device:#06x}"),
            ("subsystem_vendor", f"{ids.subsystem_vendor:#06x}"), ("subsystem_device", f"{ids.subsystem_device:#06x}"),
            ("class", f"{ids.class_code:#08x}")]
    if ids.revision is not None:
        rows.append(("revision", f"{ids.revision:#04x}"))
    if ids.irq is not None:
        rows.append(("irq", str(ids.irq)))
    rows += [("numa_node", "-1"), ("enable", "1"), ("msi_bus", "1")]
    for name, value in rows:
        dev.add_attr(name, const(value + "\n"))
    return device_register(dev)
