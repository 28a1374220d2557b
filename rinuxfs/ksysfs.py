"""/sys/kernel's own attributes (kernel/ksysfs.c), registered on the driver core's kernel_kobj."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.kobject import Store, const
from rinuxfs.lib.kstrtox import parse_bool

if TYPE_CHECKING:
    from rinuxfs.kernel import Kernel


def register_kernel_attrs(core: DriverCore, k: Kernel) -> None:
    kobj = core.kernel_kobj
    kobj.add_attr("address_bits", const("64\n"))
    kobj.add_attr("cpu_byteorder", const("little\n"))
    kobj.add_attr("fscaps", const("1\n"))
    kobj.add_attr("kexec_loaded", const("0\n"))
    kobj.add_attr("uevent_seqnum", lambda: f"{core.uevent_seqnum}\n")
    for name in ("rcu_expedited", "rcu_normal"):
        kobj.add_attr(name, lambda name=name: f"{int(k.sysctl[name])}\n", _store_sysctl(k, name))


def _store_sysctl(k: Kernel, name: str) -> Store:
    def store(text: str) -> None:
        k.sysctl[name] = int(parse_bool(text))

    return store
