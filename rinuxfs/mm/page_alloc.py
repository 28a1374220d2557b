"""The zoned page frame allocator: nodes, their zones, watermarks, zonelists and NUMA statistics.

Contract:
- `alloc(count, nid, local_nid, ...)` takes up to `count` order-0 frames as
  runs [(pfn, n), ...], walking the zonelist of node `nid` (that node's zones,
  highest first, then the other nodes by distance) and leaving each zone at
  least `mark + lowmem_reserve[highest_zoneidx]` free, as
  get_page_from_freelist() does. It returns fewer frames when the zones have
  no more to give above that mark; deciding what then (reclaim, ENOMEM) is
  the memory manager's job, not this file's.
- `alloc_order(order, nid, ...)` is the same for one naturally aligned block.
- `free_runs(runs)` returns frames to their zones' buddies and
  report the merged free blocks of order >= pageblock_order, which the memory
  manager may hand back to the host.
- Every allocation counts pgalloc_<zone> and numa_hit/miss/foreign/local/other
  per zone as zone_statistics() does.
- `setup_watermarks()` recomputes min/low/high/promo, lowmem_reserve and
  totalreserve from min_free_kbytes, watermark_scale_factor and
  lowmem_reserve_ratio (mm/page_alloc.c, formulas in reference mm.md §2.1–2.2);
  call it after changing any of them.

Zones are x86-64's: DMA below 16 MiB, DMA32 below 4 GiB, Normal above; Movable
and Device exist and stay empty (no kernelcore=, no device memory). A node
holds the zones its PFN range crosses; a 2 GiB node has no Normal zone.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from rinuxfs.hw.ram import PAGE_SHIFT
from rinuxfs.lib.runs import runs as consecutive_runs
from rinuxfs.mm.buddy import (
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    BuddyAllocator,
)
from rinuxfs.mm.lru import SWAP_CLUSTER_MAX
from rinuxfs.mm.memblock import Memblock, overlap

ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, ZONE_MOVABLE, ZONE_DEVICE = range(5)
ZONE_NAMES = ("DMA", "DMA32", "Normal", "Movable", "Device")
MAX_NR_ZONES = len(ZONE_NAMES)
ZONE_DMA_END = (16 << 20) >> PAGE_SHIFT
ZONE_DMA32_END = (4 << 30) >> PAGE_SHIFT
LOWMEM_RESERVE_RATIO = (256, 256, 32, 0, 0)  # vm.lowmem_reserve_ratio, x86-64 default
WATERMARK_SCALE_FACTOR = 10  # vm.watermark_scale_factor: 0.1 %
LOCAL_DISTANCE, REMOTE_DISTANCE = 10, 20  # what QEMU's ACPI SLIT gives by default
WMARK_MIN, WMARK_LOW, WMARK_HIGH, WMARK_PROMO = range(4)
MIN_PERCPU_PAGELIST_HIGH_FRACTION = 8


@dataclass(eq=False)
class Zone:
    """struct zone."""

    nid: int
    idx: int
    start_pfn: int = 0
    spanned: int = 0
    present: int = 0
    managed: int = 0
    buddy: BuddyAllocator = field(default_factory=lambda: BuddyAllocator(0, 0))
    watermark: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    lowmem_reserve: list[int] = field(default_factory=lambda: [0] * MAX_NR_ZONES)
    stat: Counter[str] = field(default_factory=Counter)  # zone_stat_item gauges and the numa_* events

    @property
    def name(self) -> str:
        return ZONE_NAMES[self.idx]

    @property
    def end_pfn(self) -> int:
        return self.start_pfn + self.spanned

    @property
    def nr_free(self) -> int:
        return self.buddy.nr_free

    @property
    def populated(self) -> bool:
        return self.present > 0


@dataclass(eq=False)
class Node:
    """struct pglist_data: one NUMA node's memory."""

    nid: int
    start_pfn: int
    end_pfn: int
    zones: list[Zone]
    cpus: set[int] = field(default_factory=set)
    zonelist: list[Zone] = field(default_factory=list)  # fallback order for allocations preferring this node
    stat: Counter[str] = field(default_factory=Counter)  # node_stat_item gauges and events
    totalreserve_pages: int = 0

    @property
    def present(self) -> int:
        return sum(z.present for z in self.zones)

    @property
    def managed(self) -> int:
        return sum(z.managed for z in self.zones)

    @property
    def nr_free(self) -> int:
        return sum(z.buddy.nr_free for z in self.zones)


def zone_batchsize(managed: int) -> int:
    """Pages a CPU moves between its per-CPU list and the buddy at a time (zone_batchsize)."""
    batch = min(managed >> 10, (1 << 20) >> PAGE_SHIFT) // 4
    batch = max(batch, 1)
    batch = (1 << ((batch + batch // 2).bit_length() - 1)) - 1
    return max(1, batch)


def stat_threshold(managed: int, nr_online_cpus: int) -> int:
    """calculate_normal_threshold: how far a per-CPU counter may drift before it is folded."""
    mem = managed >> (27 - PAGE_SHIFT)
    return min(125, 2 * nr_online_cpus.bit_length() * (1 + mem.bit_length()))


class PageAllocator:
    """All nodes and zones of the machine, and the tunables that shape them."""

    def __init__(self, memblock: Memblock, node_ranges: list[tuple[int, int]], node_cpus: list[set[int]]) -> None:
        self.memblock = memblock
        self.nr_frames = memblock.nr_frames
        self.nodes: list[Node] = []
        for nid, (start, end) in enumerate(node_ranges):
            zones = [self._make_zone(nid, idx, start, end, memblock) for idx in range(MAX_NR_ZONES)]
            self.nodes.append(Node(nid, start, end, zones, set(node_cpus[nid])))
        self.zone_bounds: list[int] = []  # sorted zone starts, for zone_of()
        self.zone_at: list[Zone] = []
        for zone in sorted(self.zones(), key=lambda z: z.start_pfn):
            if zone.spanned:
                self.zone_bounds.append(zone.start_pfn)
                self.zone_at.append(zone)
        for start, end in memblock.free_ranges():
            self.free_runs([(start, end - start)], boot=True)
        for zone in self.zones():
            zone.managed = zone.nr_free
        self.distance = [[LOCAL_DISTANCE if a == b else REMOTE_DISTANCE for b in range(len(self.nodes))]
                         for a in range(len(self.nodes))]
        self._build_zonelists()
        self.lowmem_reserve_ratio = list(LOWMEM_RESERVE_RATIO)
        self.watermark_scale_factor = WATERMARK_SCALE_FACTOR
        self.user_min_free_kbytes = -1
        self.min_free_kbytes = self.calculate_min_free_kbytes()
        self.setup_watermarks()

    @staticmethod
    def _make_zone(nid: int, idx: int, start: int, end: int, memblock: Memblock) -> Zone:
        lo, hi = ((0, ZONE_DMA_END), (ZONE_DMA_END, ZONE_DMA32_END), (ZONE_DMA32_END, 1 << 62))[idx] \
            if idx <= ZONE_NORMAL else (0, 0)
        first, last = max(lo, start), min(hi, end)
        present = overlap(memblock.usable, first, last) if last > first else 0
        if not present:
            return Zone(nid, idx)
        # A zone spans from its first present frame: PFN 0 is never RAM, so DMA starts at 1, as on Linux.
        first = next(max(s, first) for s, e in memblock.usable if e > first)
        return Zone(nid, idx, first, last - first, present, 0, BuddyAllocator(first, last))

    def zones(self) -> Iterable[Zone]:
        for node in self.nodes:
            yield from node.zones

    def populated_zones(self) -> list[Zone]:
        return [z for z in self.zones() if z.populated]

    def zone_of(self, pfn: int) -> Zone:
        return self.zone_at[bisect_right(self.zone_bounds, pfn) - 1]

    def _build_zonelists(self) -> None:
        """Node order (numa_zonelist_order=Node): own zones highest first, then the others by distance."""
        n = len(self.nodes)
        for node in self.nodes:
            order = sorted(range(n), key=lambda m, a=node.nid: (self.distance[a][m], (m - a) % n))
            node.zonelist = [z for m in order for z in reversed(self.nodes[m].zones[:ZONE_MOVABLE + 1])
                             if z.populated]

    # --- sizes -------------------------------------------------------------------------

    @property
    def totalram_pages(self) -> int:
        return sum(z.managed for z in self.zones())

    @property
    def nr_free_pages(self) -> int:
        return sum(z.buddy.nr_free for z in self.zones())

    @property
    def totalreserve_pages(self) -> int:
        return sum(node.totalreserve_pages for node in self.nodes)

    @property
    def reserved_pages(self) -> int:
        return sum(z.present for z in self.zones()) - self.totalram_pages

    def nr_free_buffer_pages(self) -> int:
        """Σ over zones up to Normal of what lies above the high watermark (nr_free_zone_pages(GFP_USER))."""
        return sum(max(0, z.managed - z.watermark[WMARK_HIGH]) for z in self.zones() if z.idx <= ZONE_NORMAL)

    # --- tunables ----------------------------------------------------------------------

    def calculate_min_free_kbytes(self) -> int:
        lowmem_kbytes = self.nr_free_buffer_pages() << (PAGE_SHIFT - 10)
        return max(128, min(262144, math.isqrt(lowmem_kbytes * 16)))

    def set_recommended_min_free_kbytes(self) -> int | None:
        """khugepaged's raise of min_free_kbytes, so THP allocations find free pageblocks; the new value if raised."""
        nr_zones = sum(1 for z in self.populated_zones() if z.idx <= ZONE_NORMAL)
        recommended = PAGEBLOCK_NR_PAGES * nr_zones * 2
        recommended += PAGEBLOCK_NR_PAGES * nr_zones * MIGRATE_PCPTYPES * MIGRATE_PCPTYPES
        recommended = min(recommended, self.nr_free_buffer_pages() // 20) << (PAGE_SHIFT - 10)
        if recommended > self.min_free_kbytes:
            self.min_free_kbytes = recommended
            self.setup_watermarks()
            return recommended
        return None

    def setup_watermarks(self) -> None:
        """__setup_per_zone_wmarks, setup_per_zone_lowmem_reserve and calculate_totalreserve_pages."""
        pages_min = self.min_free_kbytes >> (PAGE_SHIFT - 10)
        lowmem = sum(z.managed for z in self.zones() if z.idx < ZONE_MOVABLE) or 1
        for zone in self.zones():
            if zone.idx == ZONE_DEVICE:
                continue
            share = pages_min * zone.managed // lowmem
            if zone.idx == ZONE_MOVABLE:
                wmin = max(SWAP_CLUSTER_MAX, min(128, zone.managed // 1024))
            else:
                wmin = share
            delta = max(share >> 2, zone.managed * self.watermark_scale_factor // 10000)
            zone.watermark = [wmin, wmin + delta, wmin + 2 * delta, wmin + 3 * delta]
        for node in self.nodes:
            for i, zone in enumerate(node.zones):
                ratio = self.lowmem_reserve_ratio[i]
                above = 0
                for j in range(MAX_NR_ZONES):
                    if j > i:
                        above += node.zones[j].managed
                    zone.lowmem_reserve[j] = above // ratio if j > i and ratio else 0
            reserve = 0
            for zone in node.zones:
                most = max(zone.lowmem_reserve) + zone.watermark[WMARK_HIGH]
                reserve += min(most, zone.managed)
            node.totalreserve_pages = reserve

    def wmark_sum(self, which: int) -> int:
        return sum(z.watermark[which] for z in self.zones() if z.populated)

    # --- allocation --------------------------------------------------------------------

    def alloc(self, count: int, nid: int, local_nid: int, mt: int = MIGRATE_MOVABLE,
              highest_zoneidx: int = ZONE_MOVABLE, mark: int | None = WMARK_LOW,
              thisnode: bool = False) -> list[tuple[int, int]]:
        """Up to `count` order-0 frames, as runs; fewer if every zone is at its mark."""
        runs: list[tuple[int, int]] = []
        zonelist = self.nodes[nid].zonelist
        preferred = zonelist[0] if zonelist else None
        for zone in zonelist:
            if count <= 0:
                break
            if zone.idx > highest_zoneidx or (thisnode and zone.nid != nid):
                continue
            floor = 0 if mark is None else zone.watermark[mark] + zone.lowmem_reserve[highest_zoneidx]
            spare = zone.buddy.nr_free - floor
            if spare <= 0:
                continue
            got = zone.buddy.take_bulk(min(spare, count), mt)
            n = sum(c for _, c in got)
            if n:
                runs += got
                count -= n
                self._count_alloc(zone, preferred, local_nid, n)
        return runs

    def alloc_order(self, order: int, nid: int, local_nid: int, mt: int = MIGRATE_MOVABLE,
                    highest_zoneidx: int = ZONE_MOVABLE, mark: int | None = WMARK_LOW,
                    thisnode: bool = False) -> int | None:
        """One naturally aligned block of 2^order frames, or None."""
        zonelist = self.nodes[nid].zonelist
        for zone in zonelist:
            if zone.idx > highest_zoneidx or (thisnode and zone.nid != nid):
                continue
            floor = 0 if mark is None else zone.watermark[mark] + zone.lowmem_reserve[highest_zoneidx]
            if zone.buddy.nr_free - (1 << order) < floor:
                continue
            pfn = zone.buddy.take(order, mt) if order <= PAGEBLOCK_ORDER + 1 else zone.buddy.take_contig(1 << order)
            if pfn is not None:
                self._count_alloc(zone, zonelist[0], local_nid, 1 << order)
                return pfn
        return None

    def _count_alloc(self, zone: Zone, preferred: Zone | None, local_nid: int, n: int) -> None:
        stat = zone.stat
        stat["pgalloc"] += n
        if preferred is None or zone.nid == preferred.nid:
            stat["numa_hit"] += n
        else:
            stat["numa_miss"] += n
            preferred.stat["numa_foreign"] += n
        stat["numa_local" if zone.nid == local_nid else "numa_other"] += n

    # --- freeing -----------------------------------------------------------------------

    def free_runs(self, runs: list[tuple[int, int]], boot: bool = False) -> list[tuple[int, int]]:
        """Give frames back; the merged free blocks of pageblock order or more, as (pfn, nr_pages)."""
        big: list[tuple[int, int]] = []
        for pfn, n in runs:
            end = pfn + n
            while pfn < end:
                zone = self.zone_of(pfn)
                stop = min(end, zone.end_pfn)
                big += zone.buddy.give_run(pfn, stop - pfn)
                if not boot:
                    zone.stat["pgfree"] += stop - pfn
                pfn = stop
        return big


def to_runs(pfns: Iterable[int]) -> list[tuple[int, int]]:
    """PFNs as runs (first, count) of consecutive frames, in ascending order."""
    return consecutive_runs(sorted(pfns))


def runs_to_pfns(runs: list[tuple[int, int]]) -> list[int]:
    pfns: list[int] = []
    for pfn, n in runs:
        pfns.extend(range(pfn, pfn + n))
    return pfns
