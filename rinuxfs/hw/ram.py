"""Physical memory: one block of real bytes, cut into 4 KiB frames.

A physical address indexes straight into it. The block is an anonymous mmap,
so the host only commits the frames the simulated kernel actually touches
(a 2 GiB machine costs nothing until its pages are written).
"""

from __future__ import annotations

import mmap

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


class PhysicalMemory:
    """The machine's RAM. Frames are numbered by PFN (physical address >> PAGE_SHIFT)."""

    def __init__(self, size: int) -> None:
        if size < 16 * PAGE_SIZE or size % PAGE_SIZE:
            raise ValueError(f"RAM size must be a multiple of {PAGE_SIZE} and at least 64 KiB, not {size}")
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._map)

    @property
    def nr_frames(self) -> int:
        return self.size >> PAGE_SHIFT

    def frame(self, pfn: int) -> memoryview:
        start = pfn << PAGE_SHIFT
        return self.view[start : start + PAGE_SIZE]

    def close(self) -> None:
        self.view.release()
        self._map.close()
