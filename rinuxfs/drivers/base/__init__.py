"""The driver core (Linux's drivers/base/): the tree of kobjects and devices that /sys shows.

Drivers, the block layer and mm register what they expose here; fs/sysfs.py and fs/debugfs.py
render it and know no driver. That is how a lower layer shows something in /sys without
importing fs/. One concept per module:

    kobject.py   kobjects, attributes (show/store), attribute groups, symlinks, uevents
    device.py    Device: a kobject with a bus or class, a device number, a driver; glue dirs
    bus.py       buses (bus/<bus>/devices/, drivers/) and their drivers
    devclass.py  classes (class/<class>/), and whether their numbers go to dev/block or dev/char
    core.py      DriverCore: the root and the well-known kobjects of one kernel
    debugfs.py   the debugfs tree (debugfs_create_dir / debugfs_create_file / debugfs_remove)
    cpu.py       the CPU devices (devices/system/cpu, bus/cpu)
    node.py      the NUMA node devices (devices/system/node, bus/node)

The whole API, as a new subsystem uses it (every name below is importable from here):

    core = kernel.core                                  # the one DriverCore of the kernel
    kobj = kobject_create("hugepages", core.mm_kobj)    # /sys/kernel/mm/hugepages/
    kobj.add_attr("nr", show, store=None, mode=None)    # a file: show() -> text; store(text)
    grp = kobj.add_group("queue")                       # a subdirectory of attributes
    sysfs_create_link(kobj, "device", target_kobj)      # a symlink computed from the tree
    kobj.remove("nr"); sysfs_remove_link(kobj, "device"); kobject_del(kobj)

    bus, root = core.subsys_system_register("node")     # bus/node + devices/system/node
    cls = core.class_register("nvme")                   # class/nvme (block=True: dev/block)
    drv = core.bus_register("pci").driver_register("ahci")
    dev = device_register(Device("node0", root, bus=bus))  # + uevent, power/, links, dev/…
    device_unregister(dev)                              # and everything it made is gone

    d = debugfs_create_dir("fail_make_request", core.debugfs)
    debugfs_create_file("probability", 0o600, d, show, store)

Rules every caller keeps:
- show() returns the whole text, newline included; it is called at each read from offset 0.
- store(text) receives what was written (trailing newline included) and raises
  KernelError(errno.EINVAL) for a bad value, ERANGE for one out of range, as Linux's stores do.
  A file without store is read-only (writers get EACCES, root too); mode defaults to 0644 with
  a store, 0444 without.
- Registration and removal work at any time after boot; what is removed disappears from /sys
  at once. The tree holds only what was registered.
"""

from __future__ import annotations

from rinuxfs.drivers.base.bus import Bus, Driver
from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.debugfs import (
    DebugfsDir,
    DebugfsFile,
    debugfs_create_dir,
    debugfs_create_file,
    debugfs_remove,
    fault_create_debugfs_attr,
)
from rinuxfs.drivers.base.devclass import Class
from rinuxfs.drivers.base.device import (
    Device,
    device_bind_driver,
    device_register,
    device_release_driver,
    device_unregister,
)
from rinuxfs.drivers.base.kobject import (
    Attribute,
    AttributeGroup,
    Kobject,
    Link,
    Show,
    Store,
    const,
    kobject_add,
    kobject_create,
    kobject_del,
    kobject_uevent,
    sysfs_create_link,
    sysfs_remove_link,
)

__all__ = [
    "Attribute", "AttributeGroup", "Bus", "Class", "DebugfsDir", "DebugfsFile", "Device", "Driver", "DriverCore",
    "Kobject", "Link", "Show", "Store", "const", "debugfs_create_dir", "debugfs_create_file", "debugfs_remove",
    "device_bind_driver", "device_register", "device_release_driver", "device_unregister",
    "fault_create_debugfs_attr", "kobject_add", "kobject_create", "kobject_del", "kobject_uevent",
    "sysfs_create_link", "sysfs_remove_link",
]
