"""The NUMA node devices (drivers/base/node.c): devices/system/node and bus/node.

Contract:
- `register_node_devices(core, mm, cpus)` registers the node subsystem: its root
  devices/system/node with possible, online, has_cpu, has_memory, has_normal_memory and
  has_generic_initiator, and one device nodeN per node with cpumap, cpulist, distance,
  meminfo, numastat, vmstat and hugepages/, a cpuN link to each of its CPUs' devices and a
  nodeN link back from each CPU device. Everything is rendered from `mm` at each read.
- `cpus` is anything with the online set (the Kernel's CpuSet), read at each read too.
"""

from __future__ import annotations

from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.cpu import CpuState
from rinuxfs.drivers.base.device import Device, device_register
from rinuxfs.drivers.base.kobject import Kobject, const, kobject_create, sysfs_create_link
from rinuxfs.lib.bitmap import cpu_list, cpu_mask
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.mm_sysfs import add_hstate_attrs
from rinuxfs.mm.vmstat import NODE_STAT_ITEMS, NUMA_EVENTS, ZONE_STAT_ITEMS, node_stat_value, zone_stat_values


def register_node_devices(core: DriverCore, mm: MemoryManager, cpus: CpuState) -> Device:
    bus, root = core.subsys_system_register("node")
    nodes = mm.allocator.nodes
    everyone = [n.nid for n in nodes]
    with_memory = [n.nid for n in nodes if n.present]
    root.add_attr("possible", const(f"{cpu_list(everyone)}\n"))
    root.add_attr("online", const(f"{cpu_list(everyone)}\n"))
    root.add_attr("has_memory", const(f"{cpu_list(with_memory)}\n"))
    root.add_attr("has_normal_memory", const(f"{cpu_list(with_memory)}\n"))
    root.add_attr("has_cpu", lambda: f"{cpu_list([n.nid for n in nodes if n.cpus & cpus.online])}\n")
    root.add_attr("has_generic_initiator", const("\n"))
    for node in nodes:
        nid = node.nid
        dev = Device(f"node{nid}", root, bus=bus)
        dev.add_attr("cpumap", lambda n=node: f"{cpu_mask(n.cpus & cpus.online, cpus.possible)}\n")
        dev.add_attr("cpulist", lambda n=node: f"{cpu_list(n.cpus & cpus.online)}\n")
        dev.add_attr("meminfo", lambda i=nid: render_node_meminfo(mm, i))
        dev.add_attr("numastat", lambda i=nid: render_node_numastat(mm, i))
        dev.add_attr("vmstat", lambda i=nid: render_node_vmstat(mm, i))
        dev.add_attr("distance", const(" ".join(str(x) for x in mm.allocator.distance[nid]) + "\n"))
        hugepages = kobject_create("hugepages", dev)
        for h in mm.hugetlb.hstates:
            add_hstate_attrs(kobject_create(h.name, hugepages), mm.hugetlb, h, nid)
        device_register(dev)
        for cpu in sorted(node.cpus):
            cpu_dev = core.find(f"devices/system/cpu/cpu{cpu}")
            if isinstance(cpu_dev, Kobject):
                sysfs_create_link(dev, f"cpu{cpu}", cpu_dev)
                sysfs_create_link(cpu_dev, f"node{nid}", dev)
    return root


def render_node_meminfo(mm: MemoryManager, nid: int) -> str:
    lines = []
    for key, value in mm.node_meminfo(nid).items():
        if key.startswith("HugePages_"):
            lines.append(f"Node {nid} {key + ':':<17}{value:5d}\n")
        else:
            lines.append(f"Node {nid} {key + ':':<16}{value:8d} kB\n")
    return "".join(lines)


def render_node_numastat(mm: MemoryManager, nid: int) -> str:
    zones = mm.allocator.nodes[nid].zones
    total = {name: sum(z.stat[name] for z in zones) for name in NUMA_EVENTS}
    return (f"numa_hit {total['numa_hit']}\nnuma_miss {total['numa_miss']}\nnuma_foreign {total['numa_foreign']}\n"
            f"interleave_hit {total['numa_interleave']}\nlocal_node {total['numa_local']}\n"
            f"other_node {total['numa_other']}\n")


def render_node_vmstat(mm: MemoryManager, nid: int) -> str:
    node = mm.allocator.nodes[nid]
    per_zone = [zone_stat_values(mm, z) for z in node.zones if z.populated]
    rows = [(name, sum(values[name] for values in per_zone)) for name in ZONE_STAT_ITEMS]
    rows += [(name, sum(z.stat[name] for z in node.zones)) for name in NUMA_EVENTS]
    rows += [(name, node_stat_value(mm, node, name)) for name in NODE_STAT_ITEMS]
    return "".join(f"{name} {value}\n" for name, value in rows)
