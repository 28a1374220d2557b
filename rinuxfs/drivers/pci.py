"""The PCI bus: functions in the device tree, the drivers bound to them, remove and rescan.

Contract:
- `PciBus(core, log)` registers bus/pci with its `rescan` attribute (0200: writing a non-zero
  number rescans, pci_rescan_bus; kstrtoul base 0, anything else is EINVAL).
- `add_slot(slot)` puts a slot of the host bridge in the machine (a card that may come and go:
  `slot.present()`) and scans it: a present function is registered below the host bridge
  devices/pci0000:00 with the config-space identity sysfs shows (vendor, device,
  subsystem_vendor, subsystem_device, class, revision, irq, numa_node, enable, msi_bus,
  pci_uevent's variables) and its `remove` attribute; then `slot.probe(dev)` binds the driver,
  which returns its remove callback. At boot a probe failure fails the boot; at a rescan it is
  logged (really_probe) and the function stays, unbound.
- `remove` (0200, kstrtoul base 0; non-zero removes, pci_stop_and_remove_bus_device) calls the
  bound driver's remove, then takes the function out of /sys. A rescan finds it again if the
  card is still there (or back).
- A driver binds itself in its probe (device_bind_driver) and lets the function go in its
  remove (device_release_driver); the bus has no bind or unbind of its own.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.device import Device, device_register, device_unregister
from rinuxfs.drivers.base.kobject import const
from rinuxfs.errors import KernelError
from rinuxfs.lib.kstrtox import kstrtoull
from rinuxfs.printk import KernelLog

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


Remove = Callable[[], None]


@dataclass(eq=False)
class PciSlot:
    """A function's place on the host bridge, the card in it, and the driver that binds to it."""

    address: str  # "0000:00:04.0"
    ids: PciIds
    driver: str  # the name of the driver that binds (bus/pci/drivers/<driver>)
    present: Callable[[], bool]
    probe: Callable[[Device], Remove]  # binds to the function, returns the driver's remove
    dev: Device | None = None
    remove_driver: Remove | None = None


def write_only() -> str:
    raise KernelError(errno.EACCES, "a write-only attribute")


class PciBus:
    def __init__(self, core: DriverCore, log: KernelLog) -> None:
        self.core = core
        self.log = log
        self.bus = core.bus_register("pci")
        self.bus.add_attr("rescan", write_only, self._store_rescan, mode=0o200)
        self.slots: dict[str, PciSlot] = {}

    def add_slot(self, slot: PciSlot) -> None:
        self.slots[slot.address] = slot
        self.scan_slot(slot, boot=True)

    def scan_slot(self, slot: PciSlot, *, boot: bool = False) -> None:
        if slot.dev is not None or not slot.present():
            return
        slot.dev = dev = pci_register_function(self.core, slot.address, slot.ids)
        dev.add_attr("remove", write_only, lambda text: self._store_remove(slot, text), mode=0o200)
        try:
            slot.remove_driver = slot.probe(dev)
        except KernelError as e:
            if boot:
                raise
            if e.errno not in (errno.ENODEV, errno.ENXIO):  # really_probe keeps those quiet
                self.log.err(f"{slot.driver} {slot.address}: probe with driver {slot.driver} failed with error "
                             f"-{e.errno}")

    def remove(self, slot: PciSlot) -> None:
        """pci_stop_and_remove_bus_device: the driver's remove, then the function leaves /sys."""
        remove, slot.remove_driver = slot.remove_driver, None
        if remove is not None:
            remove()
        if slot.dev is not None:
            device_unregister(slot.dev)
            slot.dev = None

    def rescan(self) -> None:
        for slot in self.slots.values():
            self.scan_slot(slot)

    def _store_remove(self, slot: PciSlot, text: str) -> None:
        if _kstrtoul(text):
            self.remove(slot)

    def _store_rescan(self, text: str) -> None:
        if _kstrtoul(text):
            self.rescan()


def _kstrtoul(text: str) -> int:
    try:
        return kstrtoull(text, 0)
    except KernelError:
        raise KernelError(errno.EINVAL, f"not a number: {text!r}") from None


def pci_register_function(core: DriverCore, slot: str, ids: PciIds) -> Device:
    """The function `slot` on bus pci below the host bridge (made on first use), with no driver yet."""
    bus = core.bus_register("pci")
    host = core.devices.entries.get(PCI_HOST_BRIDGE)
    if not isinstance(host, Device):
        host = device_register(Device(PCI_HOST_BRIDGE, core.devices))
    dev = Device(slot, host, bus=bus, uevent=lambda: ids.uevent(slot))
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
