"""Physical memory: one block of real bytes, cut into 4 KiB frames.

A physical address indexes straight into it. The block is an anonymous mmap;
`populate_in_background()` faults its host pages in from a thread (like a VM
started with preallocated memory): a first touch costs the host a page fault
and a zeroed page per 4 KiB, which would otherwise fall on the first write
into each frame and make the simulated machine slower the first time it uses
its RAM than ever after. The daemon starts it once it runs (after fork).
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MADV_POPULATE_WRITE = 23  # Linux 5.14+; the mmap module does not name it
_POPULATE_CHUNK = 8 << 20  # small steps, so the GIL passes to the daemon between them


class PhysicalMemory:
    """The machine's RAM. Frames are numbered by PFN (physical address >> PAGE_SHIFT)."""

    def __init__(self, size: int) -> None:
        if size < 16 * PAGE_SIZE or size % PAGE_SIZE:
            raise ValueError(f"RAM size must be a multiple of {PAGE_SIZE} and at least 64 KiB, not {size}")
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._map)
        self._closing = threading.Event()
        self._populator: threading.Thread | None = None

    def populate_in_background(self, done: Callable[[], None] | None = None) -> None:
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
                return  # an older host kernel: frames fault in on first use instead
        if done is not None:
            done()

    @property
    def nr_frames(self) -> int:
        return self.size >> PAGE_SHIFT

    def close(self) -> None:
        self._closing.set()
        if self._populator is not None:
            self._populator.join()
        self.view.release()
        self._map.close()
