"""The memory views of procfs: buddyinfo, pagetypeinfo, zoneinfo, and the vm sysctls of /proc/sys/vm.

Formats are mm/vmstat.c's (frag_show_print, pagetypeinfo_show*,
zoneinfo_show_print) and kernel/sysctl.c's; each renderer reads the memory
manager when called and keeps nothing. Sysctl writes parse as proc_dointvec /
proc_doulongvec do: whitespace-separated integers, whitespace alone changes
nothing, anything else or a value out of the table's range is EINVAL.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from rinuxfs.errors import KernelError
from rinuxfs.fs.kernfs import GenDir
from rinuxfs.mm.buddy import MIGRATE_TYPES, NR_PAGE_ORDERS, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.page_alloc import (
    MAX_NR_ZONES,
    MIN_PERCPU_PAGELIST_HIGH_FRACTION,
    WMARK_HIGH,
    WMARK_LOW,
    WMARK_MIN,
    WMARK_PROMO,
    Node,
    Zone,
    stat_threshold,
    zone_batchsize,
)
from rinuxfs.mm.vmstat import NUMA_EVENTS, VMSTAT_ITEMS

if TYPE_CHECKING:
    from rinuxfs.kernel import Kernel

INT_MAX = (1 << 31) - 1
ULONG_MAX = (1 << 64) - 1
ZONE_STAT_ITEMS = VMSTAT_ITEMS[: VMSTAT_ITEMS.index("nr_free_cma") + 1]
NODE_STAT_ITEMS = VMSTAT_ITEMS[VMSTAT_ITEMS.index("nr_inactive_anon") : VMSTAT_ITEMS.index("nr_kernel_file_pages") + 1]
_NODE_ALIASES = {"nr_slab_reclaimable": "nr_slab_reclaimable_pages",
                 "nr_slab_unreclaimable": "nr_slab_unreclaimable_pages"}
_ZONE_ALIASES = {"nr_zone_inactive_anon": "nr_inactive_anon", "nr_zone_active_anon": "nr_active_anon",
                 "nr_zone_inactive_file": "nr_inactive_file", "nr_zone_active_file": "nr_active_file",
                 "nr_zone_unevictable": "nr_unevictable"}


# --- buddyinfo, pagetypeinfo ---------------------------------------------------------------


def render_buddyinfo(mm: MemoryManager) -> str:
    lines = []
    for zone in mm.allocator.populated_zones():
        counts = [sum(col) for col in zip(*zone.buddy.counts(), strict=True)]
        lines.append(f"Node {zone.nid}, zone {zone.name:>8} " + "".join(f"{c:6d} " for c in counts) + "\n")
    return "".join(lines)


def render_pagetypeinfo(mm: MemoryManager) -> str:
    zones = mm.allocator.populated_zones()
    out = [f"Page block order: {PAGEBLOCK_ORDER}\n", f"Pages per block:  {PAGEBLOCK_NR_PAGES}\n", "\n"]
    out.append("Free pages count per migrate type at order " + "".join(f"{o:6d} " for o in range(NR_PAGE_ORDERS))
               + "\n")
    for zone in zones:
        for mt, row in enumerate(zone.buddy.counts()):
            out.append(f"Node {zone.nid:4d}, zone {zone.name:>8}, type {MIGRATE_TYPES[mt]:>12} "
                       + "".join(f"{c:6d} " for c in row) + "\n")
    out.append("\nNumber of blocks type     " + "".join(f"{name:>12} " for name in MIGRATE_TYPES) + "\n")
    for zone in zones:
        out.append(f"Node {zone.nid}, zone {zone.name:>8} "
                   + "".join(f"{c:12d} " for c in zone.buddy.pageblock_counts()) + "\n")
    return "".join(out)


# --- zoneinfo and the node views -------------------------------------------------------------


def node_stat_value(mm: MemoryManager, node: Node, name: str) -> int:
    if name == "nr_kernel_stack":
        return mm.kernel_stack_kb if node.nid == 0 else 0
    return max(0, node.stat[_NODE_ALIASES.get(name, name)])


def zone_stat_value(zone: Zone, name: str) -> int:
    if name == "nr_free_pages":
        return zone.nr_free
    if name == "nr_free_pages_blocks":
        return sum(row[o] << o for row in zone.buddy.counts() for o in range(PAGEBLOCK_ORDER, NR_PAGE_ORDERS))
    if name == "nr_zone_write_pending":
        return zone.stat["nr_dirty"] + zone.stat["nr_writeback"]
    return max(0, zone.stat[_ZONE_ALIASES.get(name, name)])


def render_zoneinfo(mm: MemoryManager, online_cpus: list[int]) -> str:
    out: list[str] = []
    for node in mm.allocator.nodes:
        first_populated = next((z for z in node.zones if z.populated), None)
        node_cpus = len(node.cpus)
        for zone in node.zones:
            out.append(f"Node {node.nid}, zone {zone.name:>8}")
            if zone is first_populated:
                out.append("\n  per-node stats")
                out += [f"\n      {name:<12} {node_stat_value(mm, node, name)}" for name in NODE_STAT_ITEMS]
            w = zone.watermark
            out.append(f"\n  pages free     {zone.nr_free}\n        boost    0\n        min      {w[WMARK_MIN]}"
                       f"\n        low      {w[WMARK_LOW]}\n        high     {w[WMARK_HIGH]}"
                       f"\n        promo    {w[WMARK_PROMO]}\n        spanned  {zone.spanned}"
                       f"\n        present  {zone.present}\n        managed  {zone.managed}\n        cma      0")
            out.append("\n        protection: (" + ", ".join(map(str, zone.lowmem_reserve)) + ")")
            if not zone.populated:
                out.append("\n")
                continue
            out += [f"\n      {name:<12} {zone_stat_value(zone, name)}" for name in ZONE_STAT_ITEMS]
            out += [f"\n      {name:<12} {zone.stat[name]}" for name in NUMA_EVENTS]
            batch = zone_batchsize(zone.managed)
            split = node_cpus or len(online_cpus) or 1
            high_min = max(w[WMARK_LOW] // split, batch << 2)
            high_max = max(zone.managed // MIN_PERCPU_PAGELIST_HIGH_FRACTION // split, batch << 2)
            threshold = stat_threshold(zone.managed, len(online_cpus))
            out.append("\n  pagesets")
            for cpu in online_cpus:
                # No per-CPU free lists here: every free frame is on the buddy lists, so count (and the
                # high mark it decays to when idle) is 0.
                out.append(f"\n    cpu: {cpu}\n              count:    0\n              high:     0"
                           f"\n              batch:    {batch}\n              high_min: {high_min}"
                           f"\n              high_max: {high_max}\n  vm stats threshold: {threshold}")
            out.append(f"\n  node_unreclaimable:  0\n  start_pfn:           {zone.start_pfn}\n")
    return "".join(out)


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
    rows = [(name, sum(zone_stat_value(z, name) for z in node.zones if z.populated)) for name in ZONE_STAT_ITEMS]
    rows += [(name, sum(z.stat[name] for z in node.zones)) for name in NUMA_EVENTS]
    rows += [(name, node_stat_value(mm, node, name)) for name in NODE_STAT_ITEMS]
    return "".join(f"{name} {value}\n" for name, value in rows)


# --- sysctl parsing ---------------------------------------------------------------------------


def parse_ints(text: str, count: int, lo: int, hi: int) -> list[int] | None:
    """proc_dointvec_minmax / proc_doulongvec_minmax: up to `count` integers in [lo, hi]; None if only blanks."""
    words = text.split()
    if not words:
        return None
    if len(words) > count:
        raise KernelError(errno.EINVAL, f"at most {count} values")
    values = []
    for word in words:
        if lo >= 0 and word.startswith("-"):
            raise KernelError(errno.EINVAL, f"not an unsigned number: {word!r}")
        try:
            value = int(word, 10)
        except ValueError:
            raise KernelError(errno.EINVAL, f"not a number: {word!r}") from None
        if not lo <= value <= hi:
            raise KernelError(errno.EINVAL, f"{value} is out of range [{lo}, {hi}]")
        values.append(value)
    return values


def _int_sysctl(d: GenDir, name: str, show: Callable[[], int], store: Callable[[int], None],
                lo: int, hi: int) -> None:
    def write(text: str) -> None:
        values = parse_ints(text, 1, lo, hi)
        if values is not None:
            store(values[0])

    d.file(name, lambda: f"{show()}\n", write)


def build_proc_sys_vm(vm: GenDir, k: Kernel) -> None:
    mm = k.mm
    a = mm.allocator
    hugetlb = mm.hugetlb

    def set_min_free_kbytes(value: int) -> None:
        a.min_free_kbytes = a.user_min_free_kbytes = value
        a.setup_watermarks()

    def set_scale_factor(value: int) -> None:
        a.watermark_scale_factor = value
        a.setup_watermarks()

    def set_lowmem_reserve_ratio(text: str) -> None:
        values = parse_ints(text, MAX_NR_ZONES, -INT_MAX - 1, INT_MAX)
        if values is None:
            return
        for i, value in enumerate(values):
            a.lowmem_reserve_ratio[i] = value if value >= 1 else 0
        a.setup_watermarks()

    def set_zonelist_order(text: str) -> None:
        if text[:1] not in ("d", "D", "n", "N"):
            k.log.warn(f"Ignoring unsupported numa_zonelist_order value:  {text.rstrip()}")
            raise KernelError(errno.EINVAL, "numa_zonelist_order is Node")

    _int_sysctl(vm, "min_free_kbytes", lambda: a.min_free_kbytes, set_min_free_kbytes, 0, INT_MAX)
    _int_sysctl(vm, "watermark_scale_factor", lambda: a.watermark_scale_factor, set_scale_factor, 1, 3000)
    vm.file("lowmem_reserve_ratio", lambda: "\t".join(map(str, a.lowmem_reserve_ratio)) + "\n",
            set_lowmem_reserve_ratio)
    h = hugetlb.default
    _int_sysctl(vm, "nr_hugepages", lambda: h.persistent, lambda v: hugetlb.set_max_huge_pages(h, v), 0, ULONG_MAX)
    _int_sysctl(vm, "nr_hugepages_mempolicy", lambda: h.persistent, lambda v: hugetlb.set_max_huge_pages(h, v),
                0, ULONG_MAX)
    _int_sysctl(vm, "nr_overcommit_hugepages", lambda: h.nr_overcommit_huge_pages,
                lambda v: setattr(h, "nr_overcommit_huge_pages", v), 0, ULONG_MAX)
    vm.file("numa_zonelist_order", lambda: "Node\n", set_zonelist_order)
