"""Device classes (drivers/base/class.c): /sys/class/<class>/ and where their device numbers link.

Contract:
- A Class is the kobject class/<name>; every device registered with it gets a link there named
  after the device, and a `subsystem` link back to the class.
- `dev_kobj` is where a class device's number is linked: dev/block for the block class, dev/char
  for every other (class->dev_kobj).
- Register with `DriverCore.class_register(name)`; it returns the one already registered under
  that name.
"""

from __future__ import annotations

from rinuxfs.drivers.base.kobject import Kobject


class Class(Kobject):
    """struct class: class/<name>."""

    def __init__(self, name: str, dev_kobj: Kobject) -> None:
        super().__init__(name)
        self.dev_kobj = dev_kobj
