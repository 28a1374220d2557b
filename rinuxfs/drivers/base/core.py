"""The driver core of one kernel: the root of the device tree and its well-known kobjects.

Contract:
- `DriverCore()` makes the top of /sys as Linux's init code does: block, bus, class, dev
  (dev/block, dev/char), devices (devices/system), firmware, fs, kernel (kernel/mm, and the
  empty mount points kernel/debug and kernel/security), module, power. Each is an attribute
  (`core.devices`, `core.system`, `core.kernel_kobj`, `core.mm_kobj`, `core.block_kobj`, …) to
  hang kobjects, attributes and links on.
- `bus_register(name)` and `class_register(name, block=False)` make bus/<name> and
  class/<name> (a block class links device numbers in dev/block, any other in dev/char); asked
  again for a name, they return the one registered.
- `subsys_system_register(name)` is a bus whose devices live under devices/system/<name>, as
  cpu and node are: it returns the bus and that root device.
- `debugfs` is the root of the debugfs tree; `uevent_seqnum` counts the uevents sent so far.
- One DriverCore per Kernel: nothing here is module-global.
"""

from __future__ import annotations

from rinuxfs.drivers.base.bus import Bus
from rinuxfs.drivers.base.debugfs import DebugfsDir
from rinuxfs.drivers.base.devclass import Class
from rinuxfs.drivers.base.device import Device, device_register
from rinuxfs.drivers.base.kobject import Kobject, KobjectRoot, kobject_add, kobject_create


class DriverCore:
    def __init__(self) -> None:
        self.root = KobjectRoot()
        root = self.root
        self.block_kobj = kobject_create("block", root)  # block_depr: a link per disk
        self.bus_kobj = kobject_create("bus", root)
        self.class_kobj = kobject_create("class", root)
        self.dev_kobj = kobject_create("dev", root)
        self.dev_block = kobject_create("block", self.dev_kobj)
        self.dev_char = kobject_create("char", self.dev_kobj)
        self.devices = kobject_create("devices", root)
        self.system = kobject_create("system", self.devices)
        self.firmware_kobj = kobject_create("firmware", root)
        self.fs_kobj = kobject_create("fs", root)
        self.kernel_kobj = kobject_create("kernel", root)
        self.mm_kobj = kobject_create("mm", self.kernel_kobj)
        kobject_create("debug", self.kernel_kobj)  # where debugfs is mounted (sysfs_create_mount_point)
        kobject_create("security", self.kernel_kobj)  # securityfs's mount point
        self.module_kobj = kobject_create("module", root)
        self.power_kobj = kobject_create("power", root)
        self.buses: dict[str, Bus] = {}
        self.classes: dict[str, Class] = {}
        self.debugfs = DebugfsDir("")

    @property
    def uevent_seqnum(self) -> int:
        return self.root.uevent_seqnum

    def bus_register(self, name: str) -> Bus:
        bus = self.buses.get(name)
        if bus is None:
            bus = self.buses[name] = Bus(name).register_in(self.bus_kobj)
        return bus

    def class_register(self, name: str, *, block: bool = False) -> Class:
        cls = self.classes.get(name)
        if cls is None:
            cls = self.classes[name] = Class(name, self.dev_block if block else self.dev_char)
            kobject_add(cls, self.class_kobj)
        return cls

    def subsys_system_register(self, name: str) -> tuple[Bus, Device]:
        """A bus with its root device devices/system/<name> (subsys_system_register)."""
        bus = self.bus_register(name)
        existing = self.system.entries.get(name)
        if isinstance(existing, Device):
            return bus, existing
        return bus, device_register(Device(name, self.system))

    def find(self, path: str) -> Kobject | None:
        """The kobject at /sys/`path`, following no links (for tests and diagnostics)."""
        node: Kobject = self.root
        for part in path.strip("/").split("/"):
            if not part:
                continue
            child = node.entries.get(part)
            if not isinstance(child, Kobject):
                return None
            node = child
        return node
