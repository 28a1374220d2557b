"""Buses and their drivers (drivers/base/bus.c): /sys/bus/<bus>/devices/ and drivers/<driver>/.

Contract:
- A Bus is the kobject bus/<name> with two directories, `devices/` (a link to every device
  registered on the bus, made by device_register) and `drivers/` (one Driver each).
- A Driver is bus/<bus>/drivers/<name>: binding a device to it (device_bind_driver) links the
  device there and makes the device's `driver` link; unbinding removes both.
- Register a bus with `DriverCore.bus_register(name)` and a driver with
  `bus.driver_register(name)`; both return the one already registered under that name.
"""

from __future__ import annotations

from rinuxfs.drivers.base.kobject import Kobject, kobject_add


class Driver(Kobject):
    """struct device_driver: bus/<bus>/drivers/<name>."""

    def __init__(self, name: str, bus: Bus) -> None:
        super().__init__(name)
        self.bus = bus


class Bus(Kobject):
    """struct bus_type: bus/<name>."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.devices: Kobject = Kobject("devices")
        self.drivers: Kobject = Kobject("drivers")

    def register_in(self, bus_kobj: Kobject) -> Bus:
        kobject_add(self, bus_kobj)
        kobject_add(self.devices, self)
        kobject_add(self.drivers, self)
        return self

    def driver_register(self, name: str) -> Driver:
        existing = self.drivers.entries.get(name)
        if isinstance(existing, Driver):
            return existing
        driver = Driver(name, self)
        kobject_add(driver, self.drivers)
        return driver

