"""The memory manager: RAM, its nodes and zones, the page allocator's policy, and the counters behind /proc.

Contract:
- Every frame the daemon holds data in comes from `alloc_pages` and goes back
  through `free_pages`, so MemFree is always the buddy allocators' free count,
  and every allocated frame has a struct page in `memmap`.
- An allocation prefers the node of the CPU serving the request
  (`current_cpu`) and falls back by distance. It takes frames above each
  zone's low watermark; short of them it wakes kswapd (each node's is a task
  of the kernel; while none runs, the node is reclaimed to its high
  watermarks inline) and retries down to the min watermark; then rounds of
  direct reclaim and a retry, while reclaim frees pages and at most
  MAX_RECLAIM_RETRIES of them; then the OOM killer (`out_of_memory`): after a
  kill one more round, else ENOMEM.
- Owners of pages report what they hold through `account(items, pfns)`: the
  named counters move in each frame's zone, its node and the machine total,
  which zoneinfo, node meminfo and /proc/meminfo render; nothing else writes
  them, so the three always agree.
- Owners of pages reclaim may free (tmpfs files, block-device caches, the
  swap cache) register as mappings (`register_mapping`), which struct pages
  name: reclaim (vmscan) asks a page's owner to write it out or drop it;
  tmpfs pages go to the swap areas (`swap`) and come back through the swap
  cache (`swap_cache`). There are no shrinkers.
- Free blocks of pageblock order or more are handed back to the host
  (MADV_DONTNEED, like virtio-balloon's free page reporting) unless the RAM
  was preallocated (`prealloc`).
"""

from __future__ import annotations

import errno
import time
import weakref
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from rinuxfs.errors import KernelError
from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from rinuxfs.mm.buddy import MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE
from rinuxfs.mm.hugetlb import HugetlbPools
from rinuxfs.mm.lru import LRU_NAMES, SWAP_CLUSTER_MAX, Lruvec
from rinuxfs.mm.memblock import Memblock
from rinuxfs.mm.memcontrol import Charges
from rinuxfs.mm.memmap import PG, MemMap
from rinuxfs.mm.page_alloc import (
    WMARK_LOW,
    WMARK_MIN,
    ZONE_MOVABLE,
    ZONE_NORMAL,
    PageAllocator,
    Zone,
    runs_to_pfns,
    to_runs,
)
from rinuxfs.mm.page_reporting import PageReporting
from rinuxfs.mm.pgtable import DirectMap
from rinuxfs.mm.swap_state import SwapCache
from rinuxfs.mm.swapfile import SwapAreas
from rinuxfs.mm.vmscan import MAX_RECLAIM_RETRIES, Reclaimer
from rinuxfs.printk import KernelLog

KIB_PER_PAGE = PAGE_SIZE // 1024
NODE_ALIGN = (32 << 20) >> PAGE_SHIFT  # FAKE_NODE_MIN_SIZE: NUMA emulation's node granule
MAX_NUMNODES = 1024  # NODES_SHIFT 10, as distribution kernels build

# Kernel-internal memory a booted 6.x kernel holds, as a fraction of RAM (per mille) with a ceiling,
# taken from the buddy allocator at boot so that MemFree and the kernel's own use add up.
_BOOT_KERNEL_USE = {  # item: (per mille, ceiling in MiB, migrate type)
    "nr_slab_reclaimable_pages": (6, 256, MIGRATE_RECLAIMABLE),
    "nr_slab_unreclaimable_pages": (4, 128, MIGRATE_UNMOVABLE),
    "nr_page_table_pages": (1, 16, MIGRATE_UNMOVABLE),
}
_KERNEL_STACK_KB_PER_TASK = 16
_PERCPU_KB_PER_CPU = 476
VMALLOC_TOTAL_KB = 34359738367


@dataclass
class VmTunables:
    """The /proc/sys/vm values mm reads (their defaults are Linux's)."""

    swappiness: int = 60
    page_cluster: int = 3
    dirty_ratio: int = 20
    dirty_background_ratio: int = 10
    dirty_bytes: int = 0
    dirty_background_bytes: int = 0
    dirty_expire_centisecs: int = 3000
    dirty_writeback_centisecs: int = 500
    overcommit_memory: int = 0
    overcommit_ratio: int = 50
    overcommit_kbytes: int = 0
    panic_on_oom: int = 0
    oom_kill_allocating_task: int = 0
    oom_dump_tasks: int = 1


def node_ranges(nr_frames: int, nr_nodes: int) -> list[tuple[int, int]]:
    """RAM split into `nr_nodes` equal nodes on 32 MiB boundaries (numa=fake=N), the last taking the rest."""
    per = nr_frames // nr_nodes // NODE_ALIGN * NODE_ALIGN
    if nr_nodes > 1 and per < NODE_ALIGN:
        raise KernelError(errno.EINVAL, f"--numa {nr_nodes}: each node needs at least 32M of RAM "
                                        f"(--mem {nr_frames * PAGE_SIZE >> 20}M is too small for {nr_nodes} nodes)")
    if nr_nodes == 1:
        return [(0, nr_frames)]
    return [(i * per, (i + 1) * per if i < nr_nodes - 1 else nr_frames) for i in range(nr_nodes)]


def cpus_of_nodes(nr_cpus: int, nr_nodes: int) -> list[set[int]]:
    """CPUs spread over the nodes in contiguous blocks, as QEMU's default -numa assignment does."""
    nodes: list[set[int]] = [set() for _ in range(nr_nodes)]
    for cpu in range(nr_cpus):
        nodes[cpu * nr_nodes // nr_cpus].add(cpu)
    return nodes


class MemoryManager:
    """All of the machine's memory: RAM, nodes, zones, the allocator's policy and the page counters."""

    def __init__(self, mem_size: int, nr_cpus: int, nr_nodes: int = 1, prealloc: bool = False,
                 current_cpu: Callable[[], int] = lambda: 0, current_pid: Callable[[], int] = lambda: 0,
                 log: KernelLog | None = None) -> None:
        if not 1 <= nr_nodes <= MAX_NUMNODES:
            raise KernelError(errno.EINVAL, f"--numa must be between 1 and {MAX_NUMNODES}, not {nr_nodes}")
        self.nr_cpus = nr_cpus
        self.prealloc = prealloc
        self.current_cpu = current_cpu
        self.current_pid = current_pid
        ranges = node_ranges(mem_size >> PAGE_SHIFT, nr_nodes)
        node_cpus = cpus_of_nodes(nr_cpus, nr_nodes)
        self.cpu_to_node = [next(n for n, cpus in enumerate(node_cpus) if c in cpus) for c in range(nr_cpus)]
        self.ram = PhysicalMemory(mem_size)
        try:
            self.memblock = Memblock.boot(self.ram.nr_frames, ranges)
            self.direct_map = DirectMap.build(self.ram, self.memblock)
            percpu_pages = -(-_PERCPU_KB_PER_CPU * nr_cpus // KIB_PER_PAGE)
            self.memblock.alloc_top_down(percpu_pages, *ranges[0], "percpu")
        except MemoryError as e:
            self.ram.close()
            raise KernelError(errno.ENOMEM, str(e)) from None
        self.percpu_kb = percpu_pages * KIB_PER_PAGE
        self.allocator = PageAllocator(self.memblock, ranges, node_cpus)
        self._node_starts = [n.start_pfn for n in self.allocator.nodes]
        self.memmap = MemMap()
        self.total = Counter[str]()  # node_stat_item gauges summed over nodes, in pages (meminfo, vmstat)
        self.events = Counter[str]()  # vm_event_item counters
        self.kernel_stack_kb = 0
        self.committed_pages = 0
        # Fault injection's hook (fail_page_alloc's should_fail_alloc_page), set by the kernel: called
        # with (order, pages) once per allocation call; True fails the call as ENOMEM (None for alloc_block).
        self.should_fail_alloc_page: Callable[[int, int], bool] | None = None
        self.mappings: weakref.WeakValueDictionary[int, object] = weakref.WeakValueDictionary()
        self._next_mapping_id = 0
        self.tunables = VmTunables()
        self.lruvecs = [Lruvec(self._lru_counter(node.nid), node=node.nid,
                               nr_swap_pages=lambda: self.swap.free_pages,
                               lruvec_of_node=lambda nid: self.lruvecs[nid])
                        for node in self.allocator.nodes]
        self.reclaimer = Reclaimer(self)
        self.page_reporting = PageReporting(lambda pfn: self.allocator.zone_of(pfn).buddy.pageblock_free(pfn),
                                            self.ram.discard, lambda: self.allocator.nr_free_pages)
        self.swap = SwapAreas()
        self.charges = Charges(self.memmap)
        # What to do when reclaim cannot make room: set by the kernel (the OOM killer); None means ENOMEM.
        self.out_of_memory: Callable[[int], bool] | None = None
        self.on_stall: Callable[[str, float], None] | None = None  # PSI: (resource, seconds)
        self.flusher_wakeup: trio.Event | None = None  # set while the flusher task sleeps
        self.log = log if log is not None else KernelLog(lambda: 0)
        self.swap_cache = SwapCache(self, self.log)
        self.tlb_shootdowns = [0] * nr_cpus  # per receiving CPU; nothing here remaps what other CPUs hold
        self._boot_kernel_use()
        self.thp_enabled = "madvise"
        self.thp_defrag = "madvise"
        self.thp_shmem_enabled = "never"
        self.raised_min_free_kbytes = self.allocator.set_recommended_min_free_kbytes()
        self.hugetlb = HugetlbPools(nr_nodes, [n.nid for n in self.allocator.nodes if n.present],
                                    self._alloc_huge_block, self._free_huge_block)

    # --- boot --------------------------------------------------------------------------

    def _boot_kernel_use(self) -> None:
        managed = self.allocator.totalram_pages
        for item, (per_mille, ceiling_mib, mt) in _BOOT_KERNEL_USE.items():
            n = max(1, min(managed * per_mille // 1000, ceiling_mib << (20 - PAGE_SHIFT)))
            runs = self.allocator.alloc(n, 0, 0, mt=mt, highest_zoneidx=ZONE_NORMAL, mark=None)
            got = sum(c for _, c in runs)
            if got < n:
                raise KernelError(errno.ENOMEM, f"out of memory at boot ({item})")
            self.memmap.allocated(runs, PG.reserved)
            for pfn, c in runs:
                self.account_run((item,), pfn, c)

    # --- frames ------------------------------------------------------------------------

    def numa_node_id(self) -> int:
        cpu = self.current_cpu()
        return self.cpu_to_node[cpu] if 0 <= cpu < len(self.cpu_to_node) else 0

    def alloc_pages(self, count: int, mt: int = MIGRATE_MOVABLE) -> list[int]:
        """`count` order-0 frames, from the preferred node down its zonelist; ENOMEM when nothing can help."""
        return runs_to_pfns(self.alloc_page_runs(count, mt))

    def alloc_page_runs(self, count: int, mt: int = MIGRATE_MOVABLE) -> list[tuple[int, int]]:
        """alloc_pages, the frames given as runs (first PFN, count) of consecutive frames."""
        if count <= 0:
            return []
        if self.should_fail_alloc_page is not None and self.should_fail_alloc_page(0, count):
            raise KernelError(errno.ENOMEM, f"page allocation failure: order:0, {count} pages (fail_page_alloc)")
        runs = self._alloc_runs(count, mt)
        self.memmap.allocated(runs)
        self._wake_kswapd_if_low()
        return runs

    def _wake_kswapd_if_low(self) -> None:
        for node in self.allocator.nodes:
            if any(z.nr_free < z.watermark[WMARK_LOW] for z in node.zones if z.populated):
                self.reclaimer.wakeup_kswapd(node.nid)

    def _alloc_runs(self, count: int, mt: int) -> list[tuple[int, int]]:
        """__alloc_pages: the fast path above the low watermarks, then kswapd, the min watermarks, direct
        reclaim while it makes progress (at most MAX_RECLAIM_RETRIES rounds), and the OOM killer."""
        a = self.allocator
        nid = local = self.numa_node_id()
        runs = a.alloc(count, nid, local, mt, ZONE_MOVABLE, WMARK_LOW)
        got = sum(c for _, c in runs)
        if got < count:
            for node in self.allocator.nodes:
                self.reclaimer.wakeup_kswapd(node.nid)
            more = a.alloc(count - got, nid, local, mt, ZONE_MOVABLE, WMARK_MIN)
            runs += more
            got += sum(c for _, c in more)
        retries = 0
        while got < count:
            if not self.reclaimer.in_reclaim:
                freed = self._direct_reclaim(count - got, nid)
            else:
                freed = 0
            more = a.alloc(count - got, nid, local, mt, ZONE_MOVABLE, WMARK_MIN)
            runs += more
            got += sum(c for _, c in more)
            if got >= count:
                break
            retries += 1
            if freed and retries < MAX_RECLAIM_RETRIES:
                continue
            a.free_runs(runs)
            runs, got = [], 0
            if self.reclaimer.in_reclaim or self.out_of_memory is None or not self.out_of_memory(count):
                raise KernelError(errno.ENOMEM, f"out of memory: {count} pages wanted, nothing left to reclaim")
            runs = a.alloc(count, nid, local, mt, ZONE_MOVABLE, WMARK_MIN)
            got = sum(c for _, c in runs)
            retries = MAX_RECLAIM_RETRIES - 1  # after a kill: one more round, then ENOMEM
        return runs

    def _direct_reclaim(self, want: int, nid: int) -> int:
        highest = max((z.idx for z in self.allocator.populated_zones()), default=0)
        self.events[f"allocstall_{('dma', 'dma32', 'normal', 'movable', 'device')[highest]}"] += 1
        nids = [z.nid for z in self.allocator.nodes[nid].zonelist]
        order = list(dict.fromkeys(nids))
        start = time.monotonic()
        try:
            return self.reclaimer.try_to_free_pages(want + SWAP_CLUSTER_MAX, order)
        finally:
            if self.on_stall is not None:
                self.on_stall("memory", time.monotonic() - start)

    def alloc_block(self, order: int, nid: int | None = None, thisnode: bool = False,
                    mark: int | None = WMARK_MIN) -> int | None:
        """One naturally aligned block of 2^order frames (huge pages, contiguous buffers), or None."""
        if self.should_fail_alloc_page is not None and self.should_fail_alloc_page(order, 1 << order):
            return None
        local = self.numa_node_id()
        pfn = self.allocator.alloc_order(order, local if nid is None else nid, local, mark=mark, thisnode=thisnode)
        if pfn is not None:
            self.memmap.allocated([(pfn, 1 << order)])
        return pfn

    def alloc_pages_exact(self, count: int) -> int:
        """`count` physically contiguous frames (alloc_pages_exact: a block of the next order, its tail freed)."""
        order = max(0, (count - 1).bit_length())
        pfn = self.alloc_block(order, mark=WMARK_MIN)
        if pfn is None and not self.reclaimer.in_reclaim:
            self._direct_reclaim(1 << order, self.numa_node_id())
            pfn = self.alloc_block(order, mark=WMARK_MIN)
        if pfn is None:
            raise KernelError(errno.ENOMEM, f"out of memory: no {count} contiguous pages")
        if count < 1 << order:
            self._free_runs([(pfn + count, (1 << order) - count)])
        return pfn

    def free_block(self, pfn: int, order: int) -> None:
        self._free_runs([(pfn, 1 << order)])

    def free_pages(self, pfns: Sequence[int]) -> None:
        if pfns:
            self._free_runs(to_runs(pfns))

    def _free_runs(self, runs: list[tuple[int, int]]) -> None:
        self.memmap.freed(runs)
        big = self.allocator.free_runs(runs)
        if not self.prealloc:
            self.page_reporting.notify(big)

    def _alloc_huge_block(self, order: int, nid: int) -> int | None:
        pfn = self.alloc_block(order, nid, thisnode=True)
        if pfn is not None:
            self.memmap.set_flags([pfn], PG.head | PG.hugetlb)
            self.account_run(("nr_hugetlb",), pfn, 1 << order)
        return pfn

    def _free_huge_block(self, pfn: int, order: int) -> None:
        self.account_run(("nr_hugetlb",), pfn, 1 << order, -1)
        self.free_block(pfn, order)

    # --- reclaim -----------------------------------------------------------------------

    def register_mapping(self, mapping: object) -> int:
        """An id for a page-cache mapping, which struct pages name as their owner (page->mapping)."""
        self._next_mapping_id += 1
        self.mappings[self._next_mapping_id] = mapping
        return self._next_mapping_id

    def writeback_wakeup(self) -> None:
        """Dirty pages past the background threshold: the flusher, now."""
        if self.flusher_wakeup is not None:
            self.flusher_wakeup.set()

    # --- the LRU lists -----------------------------------------------------------------

    def _lru_counter(self, nid: int) -> Callable[[int, int], None]:
        """The lruvec's size changes, into node nid's nr_<list> counters and the machine total."""
        names = [f"nr_{name}" for name in LRU_NAMES]
        node_stat = self.allocator.nodes[nid].stat
        total = self.total

        def on_change(lru: int, delta: int) -> None:
            name = names[lru]
            node_stat[name] += delta
            total[name] += delta

        return on_change

    def _by_node(self, pfns: list[int]) -> list[tuple[int, list[int]]]:
        if len(self.lruvecs) == 1:
            return [(0, pfns)]
        groups: dict[int, list[int]] = {}
        for pfn in pfns:
            groups.setdefault(self.node_of(pfn), []).append(pfn)
        return list(groups.items())

    def lru_add(self, pfns: list[int], anon: bool, shadows: list[int | None] | None = None) -> None:
        if not pfns:
            return
        if shadows is None or len(self.lruvecs) == 1:
            for nid, group in self._by_node(pfns):
                self.lruvecs[nid].add_many(group, anon, shadows)
            return
        if len(shadows) != len(pfns):
            raise ValueError(f"lru_add: {len(pfns)} pages, {len(shadows)} shadows")
        # A refault may be judged on the node that evicted the page (Lruvec._refault_verdict), so the
        # pages go in their order: one batch per run of pages of one node.
        node_of, lruvecs = self.node_of, self.lruvecs
        start, nid = 0, node_of(pfns[0])
        for i in range(1, len(pfns)):
            other = node_of(pfns[i])
            if other != nid:
                lruvecs[nid].add_many(pfns[start:i], anon, shadows[start:i])
                start, nid = i, other
        lruvecs[nid].add_many(pfns[start:], anon, shadows[start:])

    def lru_access(self, pfns: list[int]) -> None:
        for nid, group in self._by_node(pfns):
            self.lruvecs[nid].access_many(group)

    def lru_remove(self, pfns: list[int]) -> None:
        for nid, group in self._by_node(pfns):
            self.lruvecs[nid].remove_many(group)

    def zone_lru_counts(self, zone: Zone) -> list[int]:
        """Pages of each LRU list that sit in `zone` (zoneinfo's nr_zone_*: counted when read)."""
        lruvec = self.lruvecs[zone.nid]
        lo, hi = zone.start_pfn, zone.end_pfn
        return [sum(1 for key in lruvec.keys(lru) if lo <= key < hi) for lru in range(len(LRU_NAMES))]

    # --- counters ----------------------------------------------------------------------

    def account(self, items: tuple[str, ...], pfns: Sequence[int], sign: int = 1) -> None:
        """Move each named counter by ±1 per frame, in the frame's zone, node and the total."""
        if not pfns:
            return
        a = self.allocator
        if len(a.zone_at) == 1:
            self._account_zone(items, a.zone_at[0], sign * len(pfns))
            return
        ordered = sorted(pfns)
        bounds, zones = a.zone_bounds, a.zone_at
        i = bisect_right(bounds, ordered[0]) - 1
        pos, total = 0, len(ordered)
        while pos < total:
            zone = zones[i]
            end = bisect_left(ordered, zone.end_pfn, pos)
            if end > pos:
                self._account_zone(items, zone, sign * (end - pos))
            pos = end
            i += 1

    def account_run(self, items: tuple[str, ...], pfn: int, n: int, sign: int = 1) -> None:
        a = self.allocator
        end = pfn + n
        while pfn < end:
            zone = a.zone_of(pfn)
            stop = min(end, zone.end_pfn)
            self._account_zone(items, zone, sign * (stop - pfn))
            pfn = stop

    def _account_zone(self, items: tuple[str, ...], zone: Zone, delta: int) -> None:
        zstat = zone.stat
        nstat = self.allocator.nodes[zone.nid].stat
        total = self.total
        for item in items:
            zstat[item] += delta
            nstat[item] += delta
            total[item] += delta

    def node_of(self, pfn: int) -> int:
        return bisect_right(self._node_starts, pfn) - 1

    def task_started(self) -> None:
        self.kernel_stack_kb += _KERNEL_STACK_KB_PER_TASK

    def task_exited(self) -> None:
        self.kernel_stack_kb -= _KERNEL_STACK_KB_PER_TASK

    # --- what /proc/meminfo shows ------------------------------------------------------

    def meminfo(self) -> dict[str, int]:
        """The meminfo values in kB, computed as fs/proc/meminfo.c and si_mem_available() do."""
        a, n = self.allocator, self.total
        kb = KIB_PER_PAGE
        free = a.nr_free_pages
        file_pages = n["nr_file_pages"]
        swapcache = n["nr_swapcached"]
        buffers = n["nr_blockdev_pages"]
        cached = max(0, file_pages - swapcache - buffers)
        active_anon, inactive_anon = n["nr_active_anon"], n["nr_inactive_anon"]
        active_file, inactive_file = n["nr_active_file"], n["nr_inactive_file"]
        sreclaimable, sunreclaim = n["nr_slab_reclaimable_pages"], n["nr_slab_unreclaimable_pages"]
        wmark_low = a.wmark_sum(WMARK_LOW)
        available = free - a.totalreserve_pages
        pagecache = active_file + inactive_file
        available += pagecache - min(pagecache // 2, wmark_low)
        available += sreclaimable - min(sreclaimable // 2, wmark_low)
        # si_mem_available() can fall below MemFree when there is no file cache to count (this machine boots
        # with none), which tools and users read as a bug (procfs-sysfs.md §5.5, §7): keep MemFree <= it.
        available = min(max(available, free), a.totalram_pages)
        swap_total, swap_free = self.swap.total_pages, self.swap.free_pages
        totalram = a.totalram_pages
        h = self.hugetlb
        hugetlb_pages = h.total_pages()
        t = self.tunables
        if t.overcommit_kbytes:
            commit_limit = t.overcommit_kbytes // kb + swap_total
        else:
            commit_limit = (totalram - hugetlb_pages) * t.overcommit_ratio // 100 + swap_total
        d = h.default
        dm = self.direct_map.mapped_kb
        return {
            "MemTotal": totalram * kb,
            "MemFree": free * kb,
            "MemAvailable": available * kb,
            "Buffers": buffers * kb,
            "Cached": cached * kb,
            "SwapCached": swapcache * kb,
            "Active": (active_anon + active_file) * kb,
            "Inactive": (inactive_anon + inactive_file) * kb,
            "Active(anon)": active_anon * kb,
            "Inactive(anon)": inactive_anon * kb,
            "Active(file)": active_file * kb,
            "Inactive(file)": inactive_file * kb,
            "Unevictable": n["nr_unevictable"] * kb,
            "Mlocked": n["nr_mlock"] * kb,
            "SwapTotal": swap_total * kb,
            "SwapFree": swap_free * kb,
            "Zswap": 0,
            "Zswapped": 0,
            "Dirty": n["nr_dirty"] * kb,
            "Writeback": n["nr_writeback"] * kb,
            "AnonPages": n["nr_anon_pages"] * kb,
            "Mapped": n["nr_mapped"] * kb,
            "Shmem": n["nr_shmem"] * kb,
            "KReclaimable": sreclaimable * kb,
            "Slab": (sreclaimable + sunreclaim) * kb,
            "SReclaimable": sreclaimable * kb,
            "SUnreclaim": sunreclaim * kb,
            "KernelStack": self.kernel_stack_kb,
            "PageTables": n["nr_page_table_pages"] * kb,
            "SecPageTables": 0,
            "NFS_Unstable": 0,
            "Bounce": 0,
            "WritebackTmp": 0,
            "CommitLimit": commit_limit * kb,
            "Committed_AS": self.committed_pages * kb,
            "VmallocTotal": VMALLOC_TOTAL_KB,
            "VmallocUsed": 0,
            "VmallocChunk": 0,
            "Percpu": self.percpu_kb,
            "HardwareCorrupted": 0,
            "AnonHugePages": 0,
            "ShmemHugePages": n["nr_shmem_hugepages"] * kb,
            "ShmemPmdMapped": 0,
            "FileHugePages": 0,
            "FilePmdMapped": 0,
            "Balloon": 0,
            "HugePages_Total": d.nr_huge_pages,
            "HugePages_Free": d.free_huge_pages,
            "HugePages_Rsvd": d.resv_huge_pages,
            "HugePages_Surp": d.surplus_huge_pages,
            "Hugepagesize": d.size_kb,
            "Hugetlb": hugetlb_pages * kb,
            "DirectMap4k": dm[PAGE_SIZE],
            "DirectMap2M": dm[1 << 21],
            "DirectMap1G": dm[1 << 30],
        }

    def node_meminfo(self, nid: int) -> dict[str, int]:
        """/sys/devices/system/node/nodeN/meminfo, in kB (drivers/base/node.c node_read_meminfo)."""
        node = self.allocator.nodes[nid]
        n, kb = node.stat, KIB_PER_PAGE
        free = node.nr_free
        sreclaimable, sunreclaim = n["nr_slab_reclaimable_pages"], n["nr_slab_unreclaimable_pages"]
        d = self.hugetlb.default
        kernel_stack = self.kernel_stack_kb if nid == 0 else 0
        return {
            "MemTotal": node.managed * kb,
            "MemFree": free * kb,
            "MemUsed": (node.managed - free) * kb,
            "SwapCached": n["nr_swapcached"] * kb,
            "Active": (n["nr_active_anon"] + n["nr_active_file"]) * kb,
            "Inactive": (n["nr_inactive_anon"] + n["nr_inactive_file"]) * kb,
            "Active(anon)": n["nr_active_anon"] * kb,
            "Inactive(anon)": n["nr_inactive_anon"] * kb,
            "Active(file)": n["nr_active_file"] * kb,
            "Inactive(file)": n["nr_inactive_file"] * kb,
            "Unevictable": n["nr_unevictable"] * kb,
            "Mlocked": n["nr_mlock"] * kb,
            "Dirty": n["nr_dirty"] * kb,
            "Writeback": n["nr_writeback"] * kb,
            "FilePages": n["nr_file_pages"] * kb,
            "Mapped": n["nr_mapped"] * kb,
            "AnonPages": n["nr_anon_pages"] * kb,
            "Shmem": n["nr_shmem"] * kb,
            "KernelStack": kernel_stack,
            "PageTables": n["nr_page_table_pages"] * kb,
            "SecPageTables": 0,
            "NFS_Unstable": 0,
            "Bounce": 0,
            "WritebackTmp": 0,
            "KReclaimable": sreclaimable * kb,
            "Slab": (sreclaimable + sunreclaim) * kb,
            "SReclaimable": sreclaimable * kb,
            "SUnreclaim": sunreclaim * kb,
            "AnonHugePages": 0,
            "ShmemHugePages": n["nr_shmem_hugepages"] * kb,
            "ShmemPmdMapped": 0,
            "FileHugePages": 0,
            "FilePmdMapped": 0,
            "HugePages_Total": d.nr_huge_pages_node[nid],
            "HugePages_Free": d.free_huge_pages_node[nid],
            "HugePages_Surp": d.surplus_huge_pages_node[nid],
        }

    def close(self) -> None:
        self.ram.close()
