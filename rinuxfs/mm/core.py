"""The memory manager of node 0: RAM, the page allocator, and the counters behind /proc.

Contract:
- Every frame the daemon holds data in comes from `alloc_pages` and goes back
  through `free_pages`, so MemFree is always the allocator's free count.
- Owners of pages (tmpfs address spaces, the kernel's own slab and stacks)
  report what they hold through `account`, which keeps the node counters that
  /proc/meminfo and /proc/vmstat render; nothing else writes them.
- Owners of pages that can be dropped (clean block-device cache pages)
  register a shrinker. When an allocation would take the zones below their
  low watermark, reclaim frees pages up to the high watermark first (kswapd's
  job, done inline here); when an allocation fails, direct reclaim frees what
  it needs and the allocation is retried once, then ENOMEM.
  Swap and the OOM killer come with the memory-management issue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from rinuxfs.errors import KernelError
from rinuxfs.hw.ram import PAGE_SIZE, PhysicalMemory
from rinuxfs.mm.page_alloc import PageAllocator

KIB_PER_PAGE = PAGE_SIZE // 1024

# Kernel-internal memory a booted 6.x kernel holds, as a fraction of RAM (per mille),
# taken from the allocator at boot so that MemFree and the kernel's own use add up.
_BOOT_KERNEL_USE = {"nr_slab_reclaimable_pages": 6, "nr_slab_unreclaimable_pages": 4, "nr_page_table_pages": 1}
_KERNEL_STACK_KB_PER_TASK = 16
_PERCPU_KB_PER_CPU = 476
VMALLOC_TOTAL_KB = 34359738367
SWAP_CLUSTER_MAX = 32  # pages reclaim works on at a time

Shrinker = Callable[[int], int]  # free up to n pages, return how many were freed


class MemoryManager:
    """RAM of one node, its zones, and the node-wide page counters (pglist_data)."""

    def __init__(self, mem_size: int, nr_cpus: int) -> None:
        self.ram = PhysicalMemory(mem_size)
        self.allocator = PageAllocator(self.ram.nr_frames)
        self.nr_cpus = nr_cpus
        self.node = Counter[str]()  # node_stat_item gauges, in pages
        self.events = Counter[str]()  # vm_event_item counters
        self._boot_pages: list[int] = []
        for item, per_mille in _BOOT_KERNEL_USE.items():
            n = max(1, self.allocator.totalram_pages * per_mille // 1000)
            self._boot_pages += self.alloc_pages(n)
            self.node[item] += n
        percpu_pages = -(-_PERCPU_KB_PER_CPU * nr_cpus // KIB_PER_PAGE)
        self._boot_pages += self.alloc_pages(percpu_pages)
        self.percpu_kb = percpu_pages * KIB_PER_PAGE
        self.kernel_stack_kb = 0
        self.committed_pages = 0
        self.shrinkers: list[Shrinker] = []
        self._reclaiming = False

    # --- frames ------------------------------------------------------------------------

    def alloc_pages(self, count: int) -> list[int]:
        if count <= 0:
            return []
        try:
            pfns = self.allocator.alloc_pages(count)
        except KernelError:
            if not self._reclaim(count + SWAP_CLUSTER_MAX, "direct"):
                raise
            pfns = self.allocator.alloc_pages(count)
        self.events["pgalloc_" + self.allocator.zone_of(pfns[0]).name.lower()] += count
        if self.allocator.nr_free_pages < self._watermark("wmark_low"):
            self._reclaim(self._watermark("wmark_high") - self.allocator.nr_free_pages, "kswapd")
        return pfns

    def register_shrinker(self, shrinker: Shrinker) -> None:
        self.shrinkers.append(shrinker)

    def _watermark(self, name: str) -> int:
        return sum(getattr(z, name) + max(z.lowmem_reserve, default=0) for z in self.allocator.zones if z.managed)

    def _reclaim(self, target: int, who: str) -> int:
        """Ask the shrinkers for `target` pages, in SWAP_CLUSTER_MAX batches; count it as Linux's vmstat does."""
        if self._reclaiming or target <= 0:
            return 0
        self._reclaiming = True
        freed = 0
        try:
            if who == "direct":
                self.events["allocstall_" + self.allocator.zones[self.allocator._highest_populated()].name.lower()] += 1
            else:
                self.events["pageoutrun"] += 1
            progress = True
            while freed < target and progress:
                progress = False
                for shrink in list(self.shrinkers):
                    want = min(SWAP_CLUSTER_MAX, target - freed)
                    got = shrink(want)
                    self.events[f"pgscan_{who}"] += want
                    self.events[f"pgsteal_{who}"] += got
                    freed += got
                    progress |= got > 0
                    if freed >= target:
                        break
            self.events["pgscan_file"] += freed
            self.events["pgsteal_file"] += freed
        finally:
            self._reclaiming = False
        return freed

    def free_pages(self, pfns: list[int]) -> None:
        self.allocator.free_pages(pfns)
        self.events["pgfree"] += len(pfns)

    def account(self, items: tuple[str, ...], delta: int) -> None:
        """Add `delta` pages to each named node counter (e.g. a tmpfs page is shmem, file, anon LRU)."""
        node = self.node
        for item in items:
            node[item] += delta

    def task_started(self) -> None:
        self.kernel_stack_kb += _KERNEL_STACK_KB_PER_TASK

    def task_exited(self) -> None:
        self.kernel_stack_kb -= _KERNEL_STACK_KB_PER_TASK

    # --- what /proc/meminfo shows ------------------------------------------------------

    def meminfo(self) -> dict[str, int]:
        """The meminfo values in kB, computed as fs/proc/meminfo.c and si_mem_available() do."""
        a, n = self.allocator, self.node
        kb = KIB_PER_PAGE
        free = a.nr_free_pages
        file_pages = n["nr_file_pages"]
        swapcache = n["nr_swapcached"]
        buffers = n["nr_blockdev_pages"]
        cached = max(0, file_pages - swapcache - buffers)
        active_anon, inactive_anon = n["nr_active_anon"], n["nr_inactive_anon"]
        active_file, inactive_file = n["nr_active_file"], n["nr_inactive_file"]
        sreclaimable, sunreclaim = n["nr_slab_reclaimable_pages"], n["nr_slab_unreclaimable_pages"]
        wmark_low = sum(z.wmark_low for z in a.zones if z.managed)
        available = free - a.totalreserve_pages
        pagecache = active_file + inactive_file
        available += pagecache - min(pagecache // 2, wmark_low)
        available += sreclaimable - min(sreclaimable // 2, wmark_low)
        # si_mem_available() can fall below MemFree when there is no file cache to count (this machine boots
        # with none), which tools and users read as a bug (procfs-sysfs.md §5.5, §7): keep MemFree <= it.
        available = min(max(available, free), a.totalram_pages)
        swap_total, swap_free = n["swap_total_pages"], n["swap_free_pages"]
        totalram = a.totalram_pages
        commit_limit = totalram * 50 // 100 + swap_total  # vm.overcommit_ratio = 50
        direct_map_kb = self.ram.size // 1024
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
            "ShmemHugePages": 0,
            "ShmemPmdMapped": 0,
            "FileHugePages": 0,
            "FilePmdMapped": 0,
            "Balloon": 0,
            "HugePages_Total": 0,
            "HugePages_Free": 0,
            "HugePages_Rsvd": 0,
            "HugePages_Surp": 0,
            "Hugepagesize": 2048,
            "Hugetlb": 0,
            "DirectMap4k": min(direct_map_kb, 16384),
            "DirectMap2M": max(0, direct_map_kb - 16384),
            "DirectMap1G": 0,
        }

    def close(self) -> None:
        self.ram.close()
