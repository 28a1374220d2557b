"""The CPU devices (drivers/base/cpu.c, topology.c, cacheinfo.c): what lscpu --sysroot reads.

Contract:
- `register_cpu_devices(core, machine)` registers the cpu subsystem (bus/cpu and its root
  devices/system/cpu with possible, present, online, offline, kernel_max, isolated) and one
  device cpuN per possible CPU, each with topology/ (an attribute group) and cache/indexK/ (a
  kobject per cache, L1d, L1i, L2 private, L3 shared). cpuN/online (N >= 1) is writable:
  it calls `machine.set_cpu_online(cpu, bool)`; x86 cannot offline the boot CPU, so cpu0 has none.
- `machine` is anything with `cpus` (possible count, online set) and `set_cpu_online`: the
  Kernel, without this module importing it. Values are rendered from it at each read.
"""

from __future__ import annotations

from typing import Protocol

from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.device import Device, device_register
from rinuxfs.drivers.base.kobject import Kobject, Show, Store, const, kobject_create
from rinuxfs.lib.bitmap import cpu_list, cpu_mask
from rinuxfs.lib.kstrtox import parse_bool

NR_CPUS = 8192  # CONFIG_NR_CPUS of a distribution kernel; kernel_max is NR_CPUS - 1

# (level, type, size in KiB, ways, shared by all CPUs)
CACHES = ((1, "Data", 32, 8, False), (1, "Instruction", 32, 8, False), (2, "Unified", 1024, 16, False),
          (3, "Unified", 16384, 16, True))


class CpuState(Protocol):
    possible: int
    online: set[int]


class CpuHotplug(Protocol):
    @property
    def cpus(self) -> CpuState: ...

    def set_cpu_online(self, cpu: int, online: bool) -> None: ...


def register_cpu_devices(core: DriverCore, machine: CpuHotplug) -> Device:
    bus, root = core.subsys_system_register("cpu")
    cpus = machine.cpus
    root.add_attr("possible", lambda: f"{cpu_list(range(cpus.possible))}\n")
    root.add_attr("present", lambda: f"{cpu_list(range(cpus.possible))}\n")
    root.add_attr("online", lambda: f"{cpu_list(cpus.online)}\n")
    root.add_attr("offline", lambda: f"{cpu_list(set(range(cpus.possible)) - cpus.online)}\n")
    root.add_attr("kernel_max", const(f"{NR_CPUS - 1}\n"))
    root.add_attr("isolated", const("\n"))
    for cpu in range(cpus.possible):
        dev = Device(f"cpu{cpu}", root, bus=bus)
        if cpu != 0:  # x86 cannot take the boot CPU offline
            dev.add_attr("online", _show_online(machine, cpu), _store_online(machine, cpu))
        _topology(dev, cpu, cpus.possible)
        _caches(kobject_create("cache", dev), cpu, cpus.possible)
        device_register(dev)
    return root


def _topology(dev: Device, cpu: int, possible: int) -> None:
    """One core per CPU, one package: lscpu then counts sockets, cores and threads as configured."""
    topo = dev.add_group("topology")
    mine, everyone = {cpu}, set(range(possible))
    for name, value in (("core_id", str(cpu)), ("physical_package_id", "0"), ("die_id", "0"),
                        ("cluster_id", str(cpu))):
        topo.add_attr(name, const(value + "\n"))
    for prefix, members in (("thread_siblings", mine), ("core_cpus", mine), ("cluster_cpus", mine),
                            ("core_siblings", everyone), ("package_cpus", everyone), ("die_cpus", everyone)):
        topo.add_attr(prefix, const(cpu_mask(members, possible) + "\n"))
        topo.add_attr(f"{prefix}_list", const(cpu_list(members) + "\n"))


def _caches(cache: Kobject, cpu: int, possible: int) -> None:
    for index, (level, kind, size_kb, ways, shared) in enumerate(CACHES):
        c = kobject_create(f"index{index}", cache)
        sharing = set(range(possible)) if shared else {cpu}
        sets = size_kb * 1024 // (64 * ways)
        for name, value in (
            ("id", "0" if shared else str(cpu)), ("level", str(level)), ("type", kind),
            ("size", f"{size_kb}K"), ("ways_of_associativity", str(ways)), ("number_of_sets", str(sets)),
            ("coherency_line_size", "64"), ("physical_line_partition", "1"),
            ("shared_cpu_map", cpu_mask(sharing, possible)), ("shared_cpu_list", cpu_list(sharing)),
        ):
            c.add_attr(name, const(value + "\n"))



def _show_online(machine: CpuHotplug, cpu: int) -> Show:
    return lambda: f"{int(cpu in machine.cpus.online)}\n"


def _store_online(machine: CpuHotplug, cpu: int) -> Store:
    def store(text: str) -> None:
        machine.set_cpu_online(cpu, parse_bool(text))

    return store
