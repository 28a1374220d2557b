"""The memory views of sysfs: NUMA nodes (drivers/base/node.c), hugetlb pools and THP controls (mm/).

Rendered from the memory manager at each read, as procfs is. Writable
attributes parse as the kernel's handlers do (kstrtoul base 10 for the pool
sizes, a word of the list for the THP modes) and reject anything else with
Linux's errno.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from rinuxfs.errors import KernelError
from rinuxfs.fs.kernfs import GenDir
from rinuxfs.fs.procfs_mm import render_node_meminfo, render_node_numastat, render_node_vmstat
from rinuxfs.fs.sysfs import attr, cpu_list, cpu_mask
from rinuxfs.mm.hugetlb import HState, HugetlbPools

if TYPE_CHECKING:
    from rinuxfs.kernel import Kernel

ULONG_MAX = (1 << 64) - 1
THP_ENABLED = ("always", "madvise", "never")
THP_DEFRAG = ("always", "defer", "defer+madvise", "madvise", "never")
THP_SHMEM = ("always", "within_size", "advise", "never", "deny", "force")


def kstrtoul(text: str) -> int:
    value = text[:-1] if text.endswith("\n") else text
    if not value.isdigit():
        raise KernelError(errno.EINVAL, f"not a number: {value!r}")
    number = int(value)
    if number > ULONG_MAX:
        raise KernelError(errno.ERANGE, "value out of range")
    return number


def _choice(current: Callable[[], str], choices: tuple[str, ...]) -> Callable[[], str]:
    return lambda: " ".join(f"[{c}]" if c == current() else c for c in choices) + "\n"


def _set_choice(obj: object, field: str, choices: tuple[str, ...]) -> Callable[[str], None]:
    def store(text: str) -> None:
        value = text.strip()
        if value not in choices:
            raise KernelError(errno.EINVAL, f"{value!r} is not one of {', '.join(choices)}")
        setattr(obj, field, value)

    return store


def build_mm_sysfs(root: GenDir, k: Kernel) -> None:
    mm = k.mm
    nodes = mm.allocator.nodes
    node_dir = root.path("devices/system/node")
    everyone = [n.nid for n in nodes]
    with_memory = [n.nid for n in nodes if n.present]
    attr(node_dir, "possible", lambda: f"{cpu_list(everyone)}\n")
    attr(node_dir, "online", lambda: f"{cpu_list(everyone)}\n")
    attr(node_dir, "has_memory", lambda: f"{cpu_list(with_memory)}\n")
    attr(node_dir, "has_normal_memory", lambda: f"{cpu_list(with_memory)}\n")
    attr(node_dir, "has_cpu", lambda: f"{cpu_list([n.nid for n in nodes if n.cpus & k.cpus.online])}\n")
    attr(node_dir, "has_generic_initiator", lambda: "\n")
    bus = root.path("bus/node/devices")
    cpu_dir = root.path("devices/system/cpu")
    for node in nodes:
        _build_node(node_dir, k, node.nid)
        bus.add_symlink(f"node{node.nid}", f"../../../devices/system/node/node{node.nid}")
        for cpu in sorted(node.cpus):
            cpu_dir.path(f"cpu{cpu}").add_symlink(f"node{node.nid}", f"../../node/node{node.nid}")
    hugepages = root.path("kernel/mm/hugepages")
    for h in mm.hugetlb.hstates:
        _build_hstate(hugepages.dir(h.name), mm.hugetlb, h, None)
    thp = root.path("kernel/mm/transparent_hugepage")
    attr(thp, "enabled", _choice(lambda: mm.thp_enabled, THP_ENABLED), _set_choice(mm, "thp_enabled", THP_ENABLED))
    attr(thp, "defrag", _choice(lambda: mm.thp_defrag, THP_DEFRAG), _set_choice(mm, "thp_defrag", THP_DEFRAG))
    attr(thp, "shmem_enabled", _choice(lambda: mm.thp_shmem_enabled, THP_SHMEM),
         _set_choice(mm, "thp_shmem_enabled", THP_SHMEM))
    attr(thp, "hpage_pmd_size", lambda: f"{2 << 20}\n")


def _build_node(node_dir: GenDir, k: Kernel, nid: int) -> None:
    mm = k.mm
    node = mm.allocator.nodes[nid]
    d = node_dir.dir(f"node{nid}")
    nbits = k.cpus.possible
    attr(d, "cpumap", lambda: f"{cpu_mask(node.cpus & k.cpus.online, nbits)}\n")
    attr(d, "cpulist", lambda: f"{cpu_list(node.cpus & k.cpus.online)}\n")
    attr(d, "meminfo", lambda: render_node_meminfo(mm, nid))
    attr(d, "numastat", lambda: render_node_numastat(mm, nid))
    attr(d, "vmstat", lambda: render_node_vmstat(mm, nid))
    attr(d, "distance", lambda: " ".join(str(x) for x in mm.allocator.distance[nid]) + "\n")
    hugepages = d.dir("hugepages")
    for h in mm.hugetlb.hstates:
        _build_hstate(hugepages.dir(h.name), mm.hugetlb, h, nid)


def _build_hstate(d: GenDir, pools: HugetlbPools, h: HState, nid: int | None) -> None:
    def nr_hugepages() -> str:
        return f"{h.nr_huge_pages if nid is None else h.nr_huge_pages_node[nid]}\n"

    def set_nr_hugepages(text: str) -> None:
        pools.set_max_huge_pages(h, kstrtoul(text), nid)

    attr(d, "nr_hugepages", nr_hugepages, set_nr_hugepages)
    attr(d, "free_hugepages", lambda: f"{h.free_huge_pages if nid is None else h.free_huge_pages_node[nid]}\n")
    attr(d, "surplus_hugepages",
         lambda: f"{h.surplus_huge_pages if nid is None else h.surplus_huge_pages_node[nid]}\n")
    if nid is not None:
        return
    attr(d, "nr_hugepages_mempolicy", nr_hugepages, set_nr_hugepages)
    attr(d, "nr_overcommit_hugepages", lambda: f"{h.nr_overcommit_huge_pages}\n",
         lambda text: setattr(h, "nr_overcommit_huge_pages", kstrtoul(text)))
    attr(d, "resv_hugepages", lambda: f"{h.resv_huge_pages}\n")
    if h.order > 9:
        attr(d, "demote", lambda: "", lambda text: pools.demote(h, kstrtoul(text)), mode=0o200)
        attr(d, "demote_size", lambda: "2048kB\n")
