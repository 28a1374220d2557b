"""Physical memory: one block of real bytes, cut into 4 KiB frames; a physical address indexes straight into it.

The block is an anonymous private mapping made with MAP_NORESERVE, so a machine
of any size (up to x86-64's 46-bit physical address space) maps on a small
host: the host gives a page only when the simulated machine first touches it.
The mapping asks for transparent huge pages (MADV_HUGEPAGE), so that first
touch costs one host fault per 2 MiB rather than one per 4 KiB.

Contract:
- `view` is a memoryview of all of RAM; frame N is view[N << 12 : (N + 1) << 12].
- `discard(pfn, count)` hands frames back to the host (MADV_DONTNEED, as
  virtio-balloon's free page reporting does): they read as zeros afterwards,
  so only free frames may be discarded.
- `prealloc()` faults every frame in from a thread (QEMU's -mem-prealloc): the
  simulated machine then never waits on a host fault, and the host pays for
  all of RAM up front. A host without MADV_POPULATE_WRITE (Linux < 5.14)
  simply faults frames on first use.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PHYS_ADDR_BITS = 46  # x86-64's physical address width (cpuinfo "address sizes")
MAX_RAM = 1 << PHYS_ADDR_BITS
MAP_NORESERVE = 0x4000  # the mmap module does not name it
MADV_POPULATE_WRITE = 23  # Linux 5.14+; the mmap module does not name it
_POPULATE_CHUNK = 8 << 20  # small steps, so the GIL passes to the daemon between them


class PhysicalMemory:
    """The machine's RAM. Frames are numbered by PFN (physical address >> PAGE_SHIFT)."""

    def __init__(self, size: int) -> None:
        if size < 16 * PAGE_SIZE or size % PAGE_SIZE or size > MAX_RAM:
            raise ValueError(f"RAM size must be a multiple of {PAGE_SIZE} between 64 KiB and 64 TiB, not {size}")
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        try:
            self._map.madvise(mmap.MADV_HUGEPAGE)
        except (OSError, AttributeError):
            pass  # a host without THP: 4 KiB faults, same bytes
        self.view = memoryview(self._map)
        self._closing = threading.Event()
        self._populator: threading.Thread | None = None
        self.discarded_pages = 0  # frames handed back to the host, ever

    @property
    def nr_frames(self) -> int:
        return self.size >> PAGE_SHIFT

    def discard(self, pfn: int, count: int) -> None:
        try:
            self._map.madvise(mmap.MADV_DONTNEED, pfn << PAGE_SHIFT, count << PAGE_SHIFT)
        except (OSError, ValueError):
            return  # the frames keep their host pages: nothing is lost but host memory
        self.discarded_pages += count

    def prealloc(self, done: Callable[[], None] | None = None) -> None:
        if self._populator is None:
            self._populator = threading.Thread(target=self._populate, args=(done,), name="ram-populate", daemon=True)
            self._populator.start()

    def _populate(self, done: Callable[[], None] | None) -> None:
        for start in range(0, self.size, _POPULATE_CHUNK):
            if self._closing.is_set():
                return
            try:
                self._map.madvise(MADV_POPULATE_WRITE, start, min(_POPULATE_CHUNK, self.size - start))
            except (OSError, ValueError):
                return
        if done is not None:
            done()

    def close(self) -> None:
        self._closing.set()
        if self._populator is not None:
            self._populator.join()
        self.view.release()
        self._map.close()
