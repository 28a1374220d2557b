"""Swap areas (mm/swapfile.c): which partitions hold swapped-out pages, and which slots are in use.

Contract:
- `swapon(bdev, header_page, prio)` validates page 0 as swapon(2) does (swap_header.py) and
  activates the area, or raises KernelError(EINVAL) carrying the kernel's log line.
- A swap entry (swp_entry_t) is one integer: `swp_entry(type, offset)`, read back by `swp_type`
  and `swp_offset`. It carries the xarray value-entry tag (swp_to_radix_entry) above any frame
  number, so a mapping that holds frames and entries side by side (shmem's) tells them apart by
  value (`is_swap_entry`), and dicts and sorts of entries work on plain ints.
- `get_swap_pages(n)` hands out up to n free slots as swap entries, from the
  highest-priority area that has any (areas of equal priority take turns, as the plist
  requeue does); a slot's count starts at 1 (SWAP_MAP_SHMEM for tmpfs pages).
- `swap_free(entries)` drops a slot's count; at zero the slot is free again.
- The swap cache (`cache`: entry -> PFN, SWAP_HAS_CACHE in the map) holds pages read ahead
  from swap that no mapping has claimed yet (SwapCached).
- Offsets are pages within the area: slot 0 is the header page and, like the bad pages the
  header lists, is never handed out, so nothing is ever written over mkswap's header.

Cost follows use: the swap_map is kept per cluster of 512 slots (SWAPFILE_CLUSTER with THP
swap), and a cluster's bytes exist only while one of its slots is in use; clusters never used
are one counter. Within an area, slots are handed out in order from the current cluster, so a
batch of swap-outs lands on consecutive slots and goes to the device as one write.
"""

from __future__ import annotations

import errno
import heapq
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

from rinuxfs.block.genhd import BlockDevice
from rinuxfs.errors import KernelError
from rinuxfs.mm.swap_header import check_swap_area

SWAPFILE_CLUSTER = 512
SWAP_MAP_MAX = 0x3E
SWAP_MAP_BAD = 0x3F
SWAP_HAS_CACHE = 0x40
SWAP_MAP_SHMEM = 0xBF
MAX_SWAPFILES = 23  # 32 minus the special entry types of a full-featured x86-64 kernel (mm.md §1.4)
SWAP_FLAG_PRIO_MASK = 0x7FFF
_IN_USE = re.compile(rb"[^\0]")  # a slot whose count is not zero


SwapEntry: TypeAlias = int  # swp_entry_t: SWP_ENTRY_TAG | type << SWP_TYPE_SHIFT | offset
SWP_TYPE_SHIFT = 40
SWP_OFFSET_MASK = (1 << SWP_TYPE_SHIFT) - 1
SWP_ENTRY_TAG = 1 << 62  # xa_mk_value's mark: above every PFN (64 TiB of RAM is 2^34 frames)


def swp_entry(area_type: int, offset: int) -> SwapEntry:
    return SWP_ENTRY_TAG | area_type << SWP_TYPE_SHIFT | offset


def swp_type(entry: SwapEntry) -> int:
    return (entry ^ SWP_ENTRY_TAG) >> SWP_TYPE_SHIFT


def swp_offset(entry: SwapEntry) -> int:
    return entry & SWP_OFFSET_MASK


def is_swap_entry(value: int) -> bool:
    """xa_is_value: a swap entry rather than a frame number."""
    return value >= SWP_ENTRY_TAG


@dataclass(eq=False)
class SwapInfo:
    """struct swap_info_struct: one active swap area."""

    type: int
    bdev: BlockDevice
    prio: int
    maxpages: int  # slots, page 0 included
    pages: int  # usable slots
    bad: frozenset[int]
    solid_state: bool
    inuse_pages: int = 0
    clusters: dict[int, bytearray] = field(default_factory=dict)  # cluster -> its slots' counts
    cluster_used: dict[int, int] = field(default_factory=dict)  # cluster -> slots not free (bad included)
    free_clusters: list[int] = field(default_factory=list)  # a heap of clusters used before and now free
    next_untouched: int = 0  # clusters from here on were never used
    current: int = -1  # the cluster slots are taken from
    cursor: int = 0  # next slot to look at in it
    nonfull: set[int] = field(default_factory=set)  # clusters in use with free slots
    cluster_bad: dict[int, int] = field(default_factory=dict)  # cluster -> slots never usable (header, bad)

    @property
    def nr_clusters(self) -> int:
        return -(-self.maxpages // SWAPFILE_CLUSTER)

    @property
    def device_path(self) -> str:
        return f"/dev/{self.bdev.name}"

    def _materialize(self, cluster: int) -> bytearray:
        first = cluster * SWAPFILE_CLUSTER
        slots = bytearray(SWAPFILE_CLUSTER)
        used = 0
        for off in range(SWAPFILE_CLUSTER):
            slot = first + off
            if slot >= self.maxpages or slot in self.bad:
                slots[off] = SWAP_MAP_BAD
                used += 1
        self.clusters[cluster] = slots
        self.cluster_used[cluster] = used
        if used:
            self.cluster_bad[cluster] = used
        return slots

    def _next_cluster(self) -> int | None:
        """A cluster with free slots: a partly used one first, then a free one (lowest), then a new one."""
        while self.nonfull:
            cluster = min(self.nonfull)
            if self.cluster_used[cluster] < SWAPFILE_CLUSTER:
                return cluster
            self.nonfull.discard(cluster)
        if self.free_clusters:
            return heapq.heappop(self.free_clusters)
        if self.next_untouched < self.nr_clusters:
            self.next_untouched += 1
            return self.next_untouched - 1
        return None

    def alloc(self, n: int, count: int) -> list[int]:
        """Up to n free slot offsets, in order, each given `count`."""
        got: list[int] = []
        while len(got) < n and self.inuse_pages < self.pages:
            if self.current < 0 or self.cluster_used.get(self.current, SWAPFILE_CLUSTER) >= SWAPFILE_CLUSTER:
                cluster = self._next_cluster()
                if cluster is None:
                    break
                self.current, self.cursor = cluster, 0
                if cluster not in self.clusters:
                    self._materialize(cluster)
            slots = self.clusters[self.current]
            pos = slots.find(0, self.cursor) if self.cursor < SWAPFILE_CLUSTER else -1
            if pos < 0:
                pos = slots.find(0)
            if pos < 0:
                self.nonfull.discard(self.current)
                self.current = -1
                continue
            # The run of free slots from pos, found and filled by C-level searches, not slot by slot.
            used = _IN_USE.search(slots, pos)
            run = min((used.start() if used else SWAPFILE_CLUSTER) - pos, n - len(got), self.pages - self.inuse_pages)
            slots[pos : pos + run] = bytes([count]) * run
            self.cluster_used[self.current] += run
            self.inuse_pages += run
            self.cursor = pos + run
            base = self.current * SWAPFILE_CLUSTER + pos
            got.extend(range(base, base + run))
            if self.cluster_used[self.current] < SWAPFILE_CLUSTER:
                self.nonfull.add(self.current)
            else:
                self.nonfull.discard(self.current)
        return got

    def count(self, offset: int) -> int:
        slots = self.clusters.get(offset // SWAPFILE_CLUSTER)
        return 0 if slots is None else slots[offset % SWAPFILE_CLUSTER]

    def set_flag(self, offset: int, flag: int, on: bool) -> None:
        slots = self.clusters[offset // SWAPFILE_CLUSTER]
        i = offset % SWAPFILE_CLUSTER
        slots[i] = slots[i] | flag if on else slots[i] & ~flag

    def free_many(self, offsets: Iterable[int]) -> None:
        """Free slots; a slot that is not in use is a bad entry (EINVAL), and stops the batch there."""
        clusters, used = self.clusters, self.cluster_used
        touched: set[int] = set()
        try:
            # Runs of consecutive slots inside one cluster are checked and cleared as one slice.
            for start, n in _slot_runs(offsets):
                cluster, i = divmod(start, SWAPFILE_CLUSTER)
                slots = clusters.get(cluster)
                piece = slots[i : i + n] if slots is not None else b"\0"
                if 0 in piece or SWAP_MAP_BAD in piece:
                    # The first slot not in use is the error; the ones before it are freed.
                    k = next(k for k, count in enumerate(piece) if count in (0, SWAP_MAP_BAD))
                    if k:
                        n = k
                        slots[i : i + n] = bytes(n)  # type: ignore[index]
                        self.inuse_pages -= n
                        used[cluster] -= n
                        touched.add(cluster)
                    raise KernelError(errno.EINVAL, f"swap_free: Bad swap offset entry {start + k:08x}")
                slots[i : i + n] = bytes(n)  # type: ignore[index]
                self.inuse_pages -= n
                used[cluster] -= n
                touched.add(cluster)
        finally:
            for cluster in sorted(touched):
                self._cluster_freed(cluster)

    def _cluster_freed(self, cluster: int) -> None:
        if not self.cluster_used[cluster] and cluster != self.current:
            # Wholly free again: its bytes go and it waits on the free list. Clusters holding
            # bad slots (or the header) keep their map, since those slots stay marked.
            del self.clusters[cluster], self.cluster_used[cluster]
            self.nonfull.discard(cluster)
            heapq.heappush(self.free_clusters, cluster)
            return
        self.nonfull.add(cluster)


def _slot_runs(offsets: Iterable[int]) -> Iterator[tuple[int, int]]:
    """(first, count) runs of consecutive offsets, in the order given, none crossing a cluster boundary."""
    start = prev = -2
    for offset in offsets:
        if offset == prev + 1 and offset % SWAPFILE_CLUSTER:
            prev = offset
            continue
        if start >= 0:
            yield start, prev - start + 1
        start = prev = offset
    if start >= 0:
        yield start, prev - start + 1


class SwapAreas:
    """Every active swap area, in priority order, and the swap cache."""

    def __init__(self) -> None:
        self.areas: list[SwapInfo | None] = []
        self.least_priority = -1  # auto priorities go -2, -3, ... (-1 is reserved)
        self.cache: dict[SwapEntry, int] = {}  # the swap cache: entry -> PFN
        self._turn = 0

    # --- swapon --------------------------------------------------------------------------

    def swapon(self, bdev: BlockDevice, header_page: bytes, prio: int | None, solid_state: bool) -> SwapInfo:
        active = [a for a in self.areas if a is not None]
        if any(a.bdev is bdev for a in active):
            raise KernelError(errno.EBUSY, f"{bdev.name} is already a swap area")
        if len(active) >= MAX_SWAPFILES:
            raise KernelError(errno.EPERM, "too many swap areas")
        area = check_swap_area(header_page, bdev.size_bytes)
        if prio is None:
            self.least_priority -= 1
            prio = self.least_priority
        elif not 0 <= prio <= SWAP_FLAG_PRIO_MASK:
            raise KernelError(errno.EINVAL, f"swap priority {prio} is not within 0..{SWAP_FLAG_PRIO_MASK}")
        slot = next((i for i, a in enumerate(self.areas) if a is None), len(self.areas))
        info = SwapInfo(slot, bdev, prio, area.maxpages, area.pages, area.bad, solid_state)
        if slot == len(self.areas):
            self.areas.append(info)
        else:
            self.areas[slot] = info
        return info

    def active(self) -> list[SwapInfo]:
        return [a for a in self.areas if a is not None]

    # --- slots ---------------------------------------------------------------------------

    @property
    def total_pages(self) -> int:
        return sum(a.pages for a in self.active())

    @property
    def free_pages(self) -> int:
        return sum(a.pages - a.inuse_pages for a in self.active())

    def _by_priority(self) -> list[SwapInfo]:
        """Areas with free slots, highest priority first; equal priorities rotate (plist_requeue)."""
        areas = [a for a in self.areas if a is not None and a.inuse_pages < a.pages]
        if len(areas) < 2:
            return areas
        areas.sort(key=lambda a: -a.prio)
        top = [a for a in areas if a.prio == areas[0].prio]
        if len(top) > 1:
            k = self._turn % len(top)
            self._turn += 1
            top = top[k:] + top[:k]
        return top + areas[len(top):]

    def get_swap_pages(self, n: int, count: int = SWAP_MAP_SHMEM) -> list[SwapEntry]:
        entries: list[SwapEntry] = []
        for area in self._by_priority():
            if len(entries) >= n:
                break
            offsets = area.alloc(n - len(entries), count)
            entries += map(swp_entry(area.type, 0).__or__, offsets)
        return entries

    def area(self, entry: SwapEntry) -> SwapInfo:
        area_type = swp_type(entry)
        area = self.areas[area_type] if 0 <= area_type < len(self.areas) else None
        if area is None:
            raise KernelError(errno.EINVAL, f"swap_free: Bad swap file entry {entry & ~SWP_ENTRY_TAG:08x}")
        return area

    def swap_free(self, entries: list[SwapEntry]) -> None:
        if not entries:
            return
        if swp_type(min(entries)) == swp_type(max(entries)):  # the usual batch: one area's slots
            self.area(entries[0]).free_many(map(SWP_OFFSET_MASK.__and__, entries))
            return
        by_type: dict[int, list[int]] = {}
        for entry in entries:
            by_type.setdefault(swp_type(entry), []).append(swp_offset(entry))
        for area_type, offsets in by_type.items():
            self.area(swp_entry(area_type, 0)).free_many(offsets)

    # --- /proc/swaps ---------------------------------------------------------------------

    def render(self) -> str:
        """mm/swapfile.c swap_show."""
        lines = ["Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"]
        for a in self.active():
            name = "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in a.device_path)
            size, used = a.pages * 4, a.inuse_pages * 4
            pad = max(1, 40 - len(name))
            tab_size, tab_used = "\t" if size < 10**7 else "", "\t" if used < 10**7 else ""
            lines.append(f"{name}{' ' * pad}partition\t{size}\t{tab_size}{used}\t{tab_used}{a.prio}\n")
        return "".join(lines)
