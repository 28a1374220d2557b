"""sysfs: kobjects and their attributes, rendered on read; the skeleton block devices hang on.

Attribute files report st_size 4096, as sysfs does. Writable attributes parse
their value like the kernel (kstrtobool, kstrtouint) and reject a bad one with
EINVAL; read-only ones refuse writers with EACCES (kernfs_fop_open).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rinuxfs.fs.kernfs import GenDir, Show, Store
from rinuxfs.fs.superblock import StatFs, SuperBlock
from rinuxfs.fs.vfs import Vfs
from rinuxfs.lib.bitmap import cpu_list, cpu_mask
from rinuxfs.lib.kstrtox import parse_bool

if TYPE_CHECKING:
    from rinuxfs.kernel import Kernel

SYSFS_MAGIC = 0x62656572
SYSFS_ATTR_SIZE = 4096
NR_CPUS = 8192  # CONFIG_NR_CPUS of a distribution kernel; kernel_max is NR_CPUS - 1


class SysSuperBlock(SuperBlock):
    fs_type = "sysfs"
    magic = SYSFS_MAGIC
    source = "sysfs"
    entry_timeout = 1.0
    attr_timeout = 1.0

    def __init__(self, vfs: Vfs, kernel: Kernel) -> None:
        super().__init__(vfs)
        self.kernel = kernel
        self.root = GenDir(self, mode=0o555)
        build_sys_tree(self.root, kernel)

    def statfs(self) -> StatFs:
        return StatFs(SYSFS_MAGIC, 4096, 0, 0, 0, 0, 0)


def attr(d: GenDir, name: str, show: Show, store: Store | None = None, mode: int | None = None) -> None:
    d.file(name, show, store, mode, st_size=SYSFS_ATTR_SIZE)


def build_sys_tree(root: GenDir, k: Kernel) -> None:
    for name in ("block", "bus", "class", "dev", "devices", "firmware", "fs", "kernel", "module", "power"):
        root.dir(name)
    root.path("dev/block")
    root.path("dev/char")
    root.path("class/block")
    build_cpu_tree(root, k)
    kernel = root.path("kernel")
    attr(kernel, "address_bits", lambda: "64\n")
    attr(kernel, "cpu_byteorder", lambda: "little\n")
    attr(kernel, "fscaps", lambda: "1\n")
    attr(kernel, "kexec_loaded", lambda: "0\n")
    attr(kernel, "uevent_seqnum", lambda: f"{k.uevent_seqnum}\n")
    attr(kernel, "rcu_expedited", lambda: f"{int(k.sysctl['rcu_expedited'])}\n",
         lambda v: k.sysctl.__setitem__("rcu_expedited", int(parse_bool(v))))
    attr(kernel, "rcu_normal", lambda: f"{int(k.sysctl['rcu_normal'])}\n",
         lambda v: k.sysctl.__setitem__("rcu_normal", int(parse_bool(v))))
    kernel.dir("mm")
    kernel.dir("debug", mode=0o700)
    kernel.dir("security")


def build_cpu_tree(root: GenDir, k: Kernel) -> None:
    cpus = k.cpus
    cpu_dir = root.path("devices/system/cpu")
    attr(cpu_dir, "possible", lambda: f"{cpu_list(range_set(cpus.possible))}\n")
    attr(cpu_dir, "present", lambda: f"{cpu_list(range_set(cpus.possible))}\n")
    attr(cpu_dir, "online", lambda: f"{cpu_list(cpus.online)}\n")
    attr(cpu_dir, "offline", lambda: f"{cpu_list(range_set(cpus.possible) - cpus.online)}\n")
    attr(cpu_dir, "kernel_max", lambda: f"{NR_CPUS - 1}\n")
    attr(cpu_dir, "isolated", lambda: "\n")
    bus = root.path("bus/cpu/devices")
    everyone = range_set(cpus.possible)
    for cpu in range(cpus.possible):
        d = cpu_dir.dir(f"cpu{cpu}")
        bus.add_symlink(f"cpu{cpu}", f"../../../devices/system/cpu/cpu{cpu}")
        if cpu != 0:  # x86 cannot take the boot CPU offline
            attr(d, "online", _show_online(k, cpu), _store_online(k, cpu))
        topo = d.dir("topology")
        mine = {cpu}
        for name, value in (
            ("core_id", str(cpu)), ("physical_package_id", "0"), ("die_id", "0"), ("cluster_id", str(cpu)),
        ):
            attr(topo, name, _const(value + "\n"))
        for prefix, members in (
            ("thread_siblings", mine), ("core_cpus", mine), ("cluster_cpus", mine),
            ("core_siblings", everyone), ("package_cpus", everyone), ("die_cpus", everyone),
        ):
            attr(topo, prefix, _const(cpu_mask(members, cpus.possible) + "\n"))
            attr(topo, f"{prefix}_list", _const(cpu_list(members) + "\n"))
        for index, (level, kind, size_kb, ways, shared) in enumerate(_CACHES):
            c = d.path(f"cache/index{index}")
            sharing = everyone if shared else mine
            sets = size_kb * 1024 // (64 * ways)
            for name, value in (
                ("id", "0" if shared else str(cpu)), ("level", str(level)), ("type", kind),
                ("size", f"{size_kb}K"), ("ways_of_associativity", str(ways)), ("number_of_sets", str(sets)),
                ("coherency_line_size", "64"), ("physical_line_partition", "1"),
                ("shared_cpu_map", cpu_mask(sharing, cpus.possible)), ("shared_cpu_list", cpu_list(sharing)),
            ):
                attr(c, name, _const(value + "\n"))


_CACHES = ((1, "Data", 32, 8, False), (1, "Instruction", 32, 8, False), (2, "Unified", 1024, 16, False),
           (3, "Unified", 16384, 16, True))


def range_set(n: int) -> set[int]:
    return set(range(n))


def _const(text: str) -> Show:
    return lambda: text


def _show_online(k: Kernel, cpu: int) -> Show:
    return lambda: f"{int(cpu in k.cpus.online)}\n"


def _store_online(k: Kernel, cpu: int) -> Callable[[str], None]:
    def store(text: str) -> None:
        k.set_cpu_online(cpu, parse_bool(text))

    return store
