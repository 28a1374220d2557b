"""Devices (drivers/base/core.c): a kobject with a bus or a class, a device number and a driver.

Contract:
- `Device(name, parent, bus=…, cls=…, devt=…, devtype=…, driver=…, uevent=…)` describes a device;
  `device_register(dev)` puts it in the tree, `device_unregister(dev)` takes it out with every
  link the registration made. Both work at any time after boot; a device is registered once.
- Where it lands (get_device_parent): under `parent`, except that a class device whose parent is
  a device of no class goes into a directory named after the class below the parent (the "glue"
  directory: …/0000:00:04.0/nvme/nvme0, …/0:0:0:0/block/sda). A glue directory is removed
  with the last device in it.
- What registering makes, as device_add does: the attributes `uevent` (and `dev` "MAJ:MIN"
  when there is a device number), the `power/` group; for a class device, `subsystem` -> the
  class, class/<class>/<name> -> the device and, unless it is a partition, `device` -> its
  parent device; for a bus device, `subsystem` -> the bus and bus/<bus>/devices/<name> -> the
  device; with a device number, dev/block/MAJ:MIN or dev/char/MAJ:MIN -> the device (by the
  class's dev_kobj); with a driver set, the driver links (device_bind_driver). Then a uevent.
- `uevent` renders MAJOR, MINOR, DEVNAME, DEVTYPE, DRIVER (those that apply, in dev_uevent's
  order) then the lines of the device's own `uevent()` callback (the bus's and type's variables).
- Unregistering removes the links first, then the directory (everything in it goes with it),
  then the glue directory if it is left empty; the device's children must be unregistered
  before it, as Linux's callers do, or their links elsewhere would point nowhere.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from rinuxfs.drivers.base.bus import Bus, Driver
from rinuxfs.drivers.base.devclass import Class
from rinuxfs.drivers.base.kobject import (
    Kobject,
    const,
    kobject_add,
    kobject_del,
    kobject_uevent,
    sysfs_create_link,
    sysfs_remove_link,
)
from rinuxfs.errors import KernelError

UEVENT_ACTIONS = ("add", "remove", "change", "move", "online", "offline", "bind", "unbind")


class Device(Kobject):
    """struct device."""

    def __init__(self, name: str, parent: Kobject, *, bus: Bus | None = None, cls: Class | None = None,
                 devt: tuple[int, int] | None = None, devtype: str = "", driver: Driver | None = None,
                 uevent: Callable[[], list[str]] | None = None) -> None:
        super().__init__(name)
        if bus is not None and cls is not None:
            raise KernelError(errno.EINVAL, f"device {name}: a bus device or a class device, not both")
        self.parent_device = parent  # dev->parent: the kobject parent may be a glue directory below it
        self.bus = bus
        self.cls = cls
        self.devt = devt
        self.devtype = devtype
        self.uevent_vars = uevent
        self.driver: Driver | None = driver  # bound (its links made) when the device is registered
        self.runtime_auto = True  # power/control: "auto" until someone writes "on"

    def render_uevent(self) -> str:
        lines: list[str] = []
        if self.devt is not None:
            lines += [f"MAJOR={self.devt[0]}", f"MINOR={self.devt[1]}", f"DEVNAME={self.name}"]
        if self.devtype:
            lines.append(f"DEVTYPE={self.devtype}")
        if self.driver is not None:
            lines.append(f"DRIVER={self.driver.name}")
        if self.uevent_vars is not None:
            lines += self.uevent_vars()
        return "".join(line + "\n" for line in lines)

    def store_uevent(self, text: str) -> None:
        """Writing an action name synthesizes that uevent (kobject_synth_uevent); anything else is EINVAL."""
        action = text.split(" ", 1)[0].rstrip("\n")
        if action not in UEVENT_ACTIONS:
            raise KernelError(errno.EINVAL, f"unknown uevent action {action!r}")
        kobject_uevent(self, action)


class GlueDir(Kobject):
    """The directory named after a class that holds its devices below a device of no class."""


def device_register(dev: Device) -> Device:
    kobject_add(dev, _kobject_parent(dev))
    dev.add_attr("uevent", dev.render_uevent, dev.store_uevent)
    if dev.devt is not None:
        dev.add_attr("dev", const(_devt_name(dev.devt) + "\n"))
    _add_power_group(dev)
    if dev.cls is not None:
        sysfs_create_link(dev, "subsystem", dev.cls)
        sysfs_create_link(dev.cls, dev.name, dev)
        if isinstance(dev.parent_device, Device) and dev.devtype != "partition":
            sysfs_create_link(dev, "device", dev.parent_device)
    if dev.bus is not None:
        sysfs_create_link(dev, "subsystem", dev.bus)
        sysfs_create_link(dev.bus.devices, dev.name, dev)
    if dev.devt is not None:
        sysfs_create_link(_dev_kobj(dev), _devt_name(dev.devt), dev)
    if dev.driver is not None:
        driver, dev.driver = dev.driver, None
        device_bind_driver(dev, driver)
    kobject_uevent(dev, "add")
    return dev


def device_unregister(dev: Device) -> None:
    if not dev.in_sysfs:
        return
    kobject_uevent(dev, "remove")
    device_release_driver(dev)
    if dev.devt is not None:
        sysfs_remove_link(_dev_kobj(dev), _devt_name(dev.devt))
    if dev.bus is not None:
        sysfs_remove_link(dev.bus.devices, dev.name)
    if dev.cls is not None and dev.cls.entries.get(dev.name) is not None:
        sysfs_remove_link(dev.cls, dev.name)
    holder = dev.parent
    kobject_del(dev)
    if isinstance(holder, GlueDir) and not holder.entries:
        kobject_del(holder)


def device_bind_driver(dev: Device, driver: Driver) -> None:
    """The device is now driven by `driver`: the `driver` link and bus/<bus>/drivers/<driver>/<dev>."""
    if dev.driver is not None:
        raise KernelError(errno.EBUSY, f"{dev.name} is bound to {dev.driver.name} already")
    dev.driver = driver
    sysfs_create_link(dev, "driver", driver)
    sysfs_create_link(driver, dev.name, dev)


def device_release_driver(dev: Device) -> None:
    driver = dev.driver
    if driver is None:
        return
    sysfs_remove_link(driver, dev.name)
    sysfs_remove_link(dev, "driver")
    dev.driver = None


def _kobject_parent(dev: Device) -> Kobject:
    """get_device_parent: the parent itself, or the class's glue directory below a classless device."""
    parent = dev.parent_device
    if dev.cls is None or not isinstance(parent, Device) or parent.cls is not None:
        return parent
    glue = parent.entries.get(dev.cls.name)
    if isinstance(glue, GlueDir):
        return glue
    return kobject_add(GlueDir(dev.cls.name), parent)


def _dev_kobj(dev: Device) -> Kobject:
    """dev/block for block devices, dev/char for every other device number (the class's dev_kobj)."""
    if dev.cls is None:
        raise KernelError(errno.EINVAL, f"device {dev.name} has a number but no class to say block or char")
    return dev.cls.dev_kobj


def _devt_name(devt: tuple[int, int]) -> str:
    return f"{devt[0]}:{devt[1]}"



def _add_power_group(dev: Device) -> None:
    """power/ (dpm_sysfs_add and the runtime-PM attributes) of a device without runtime PM."""
    power = dev.add_group("power")
    power.add_attr("control", lambda: "auto\n" if dev.runtime_auto else "on\n", lambda v: _store_control(dev, v))
    power.add_attr("runtime_status", lambda: "unsupported\n")  # runtime PM disabled: disable_depth > 0
    power.add_attr("runtime_active_time", lambda: "0\n")
    power.add_attr("runtime_suspended_time", lambda: "0\n")


def _store_control(dev: Device, text: str) -> None:
    """control_store: exactly "auto" or "on", up to the first newline."""
    value = text.split("\n", 1)[0]
    if value not in ("auto", "on"):
        raise KernelError(errno.EINVAL, f"power/control takes auto or on, not {value!r}")
    dev.runtime_auto = value == "auto"
