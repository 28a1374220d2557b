"""The page allocator: physical frames grouped in zones, handed out one page at a time.

Contract:
- `alloc_pages(n)` returns n free PFNs or raises KernelError(ENOMEM); it never
  takes a zone below its min watermark (the reserve Linux keeps for the kernel).
- `free_pages(pfns)` gives frames back; a freed frame's bytes are stale, so a
  caller that needs zeros clears the frame itself.
- Zones are filled highest first (Normal, then DMA32, then DMA), as Linux's
  zonelist does for GFP_HIGHUSER_MOVABLE, honouring each lower zone's
  lowmem_reserve against allocations that fall back into it.

Each zone keeps its free frames on a stack ordered so that `pop()` returns the
lowest PFN first: pages allocated one after another are physically contiguous,
which lets the page cache copy runs of pages in one slice.

Not yet here (the memory-management issue): the buddy orders behind
/proc/buddyinfo, reclaim, swap and the OOM killer.
"""

from __future__ import annotations

import errno
import math
from dataclasses import dataclass, field

from rinuxfs.errors import KernelError
from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE

ZONE_DMA_END = (16 << 20) >> PAGE_SHIFT  # 16 MiB
ZONE_DMA32_END = (4 << 30) >> PAGE_SHIFT  # 4 GiB
LOWMEM_RESERVE_RATIO = (256, 256, 32, 0, 0)  # vm.lowmem_reserve_ratio, x86_64 default
WATERMARK_SCALE_FACTOR = 10  # vm.watermark_scale_factor: 0.1%


@dataclass(eq=False)
class Zone:
    """One memory zone of node 0 (struct zone)."""

    name: str
    start_pfn: int
    spanned: int
    present: int = 0
    managed: int = 0
    free: list[int] = field(default_factory=list)
    wmark_min: int = 0
    wmark_low: int = 0
    wmark_high: int = 0
    wmark_promo: int = 0
    lowmem_reserve: list[int] = field(default_factory=list)

    @property
    def nr_free(self) -> int:
        return len(self.free)


def _kernel_reserved_pfns(nr_frames: int) -> set[int]:
    """Frames the kernel keeps at boot: the first MiB, the kernel image and the memmap.

    Linux reserves the low 1 MiB (BIOS, real-mode trampoline), its own text and
    data, and 64 bytes of struct page per frame; MemTotal is what remains.
    """
    low = min((1 << 20) >> PAGE_SHIFT, nr_frames // 8)
    image = min((8 << 20) >> PAGE_SHIFT, nr_frames // 8)
    memmap = math.ceil(nr_frames * 64 / PAGE_SIZE)
    start = low
    return set(range(0, low)) | set(range(start, min(nr_frames, start + image + memmap)))


class PageAllocator:
    """Zones of node 0 and their free lists (the zoned page frame allocator)."""

    def __init__(self, nr_frames: int) -> None:
        self.nr_frames = nr_frames
        reserved = _kernel_reserved_pfns(nr_frames)
        bounds = [("DMA", 0, ZONE_DMA_END), ("DMA32", ZONE_DMA_END, ZONE_DMA32_END), ("Normal", ZONE_DMA32_END, None)]
        self.zones: list[Zone] = []
        for name, start, end in bounds:
            stop = nr_frames if end is None else min(end, nr_frames)
            span = max(0, stop - start)
            zone = Zone(name, start if span else 0, span, present=span)
            frames = [pfn for pfn in range(start, start + span) if pfn not in reserved]
            frames.reverse()
            zone.free = frames
            zone.managed = len(frames)
            self.zones.append(zone)
        # Movable and Device exist on x86_64 but are empty without kernelcore=/ZONE_DEVICE memory.
        self.zones.append(Zone("Movable", 0, 0))
        self.zones.append(Zone("Device", 0, 0))
        self.reserved_pages = len(reserved)
        self.min_free_kbytes = self._min_free_kbytes()
        self._setup_watermarks()
        self._setup_lowmem_reserve()

    # --- sizes -------------------------------------------------------------------------

    @property
    def totalram_pages(self) -> int:
        return sum(z.managed for z in self.zones)

    @property
    def nr_free_pages(self) -> int:
        return sum(len(z.free) for z in self.zones)

    @property
    def totalreserve_pages(self) -> int:
        """Σ (highest lowmem_reserve + high watermark): memory MemAvailable never counts."""
        return sum(
            min(z.managed, max(z.lowmem_reserve, default=0) + z.wmark_high) for z in self.zones if z.managed
        )

    # --- boot-time tuning --------------------------------------------------------------

    def _min_free_kbytes(self) -> int:
        lowmem_kbytes = self.totalram_pages * (PAGE_SIZE // 1024)
        return max(128, min(262144, math.isqrt(lowmem_kbytes * 16)))

    def _setup_watermarks(self) -> None:
        pages_min = self.min_free_kbytes >> (PAGE_SHIFT - 10)
        lowmem = self.totalram_pages or 1
        for zone in self.zones:
            if not zone.managed:
                zone.wmark_min = zone.wmark_low = zone.wmark_high = zone.wmark_promo = 32
                continue
            share = pages_min * zone.managed // lowmem
            delta = max(share >> 2, zone.managed * WATERMARK_SCALE_FACTOR // 10000)
            zone.wmark_min = share
            zone.wmark_low = share + delta
            zone.wmark_high = share + 2 * delta
            zone.wmark_promo = share + 3 * delta

    def _setup_lowmem_reserve(self) -> None:
        for i, zone in enumerate(self.zones):
            reserve = []
            for j in range(len(self.zones)):
                if j <= i or not LOWMEM_RESERVE_RATIO[i]:
                    reserve.append(0)
                    continue
                above = sum(z.managed for z in self.zones[i + 1 : j + 1])
                reserve.append(above // LOWMEM_RESERVE_RATIO[i])
            zone.lowmem_reserve = reserve

    # --- allocation --------------------------------------------------------------------

    def alloc_pages(self, count: int) -> list[int]:
        """Take `count` order-0 frames, highest zone first; ENOMEM if the zones can't give them."""
        if count <= 0:
            return []
        highest = self._highest_populated()
        taken: list[int] = []
        for zone in reversed(self.zones[: highest + 1]):
            floor = zone.wmark_min + zone.lowmem_reserve[highest]
            spare = len(zone.free) - floor
            if spare <= 0:
                continue
            n = min(spare, count - len(taken))
            del_from = len(zone.free) - n
            taken.extend(reversed(zone.free[del_from:]))
            del zone.free[del_from:]
            if len(taken) == count:
                return taken
        self.free_pages(taken)
        raise KernelError(errno.ENOMEM, f"out of memory: {count} pages wanted, free pages at the min watermark")

    def free_pages(self, pfns: list[int]) -> None:
        for pfn in pfns:
            self.zone_of(pfn).free.append(pfn)

    def zone_of(self, pfn: int) -> Zone:
        if pfn < ZONE_DMA_END:
            return self.zones[0]
        if pfn < ZONE_DMA32_END:
            return self.zones[1]
        return self.zones[2]

    def _highest_populated(self) -> int:
        for i in (2, 1, 0):
            if self.zones[i].managed:
                return i
        return 0
