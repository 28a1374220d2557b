"""The page cache of a block device: device bytes in frames of the simulated RAM, read and written by bios.

Contract (the address_space of a bdev inode; what `Buffers` counts in meminfo):
- `read(offset, size)` brings the pages it covers into the cache with read
  bios whose segments are the cache's own frames (DMA straight into them),
  one bio per run of missing pages, all submitted as one batch; then copies out.
  Readahead past the request is best effort: short of memory, it shortens.
- `write(offset, data)` updates cached pages, first reading a page the write
  covers only in part; the pages become dirty. Nothing reaches the disk until
  `writeback()` (fsync, release of the last open file, unmount, reclaim, or a
  writer pushing the dirty pages past vm.dirty_ratio of dirtyable memory).
- `writeback()` writes dirty pages as one bio per run of consecutive dirty
  pages, submitted as a batch so the queue merges what is adjacent.
- `shrink(n)` drops up to n clean pages, oldest first, and returns how many.
- The cache never holds a page past the device's end.
"""

from __future__ import annotations

import errno
from collections import OrderedDict

from rinuxfs.block.bio import SECTOR_SHIFT, Bio, ReqOp
from rinuxfs.block.genhd import BlockDevice
from rinuxfs.errors import KernelError
from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE
from rinuxfs.mm.core import MemoryManager

_PAGE_MASK = PAGE_SIZE - 1
BDEV_PAGE_ITEMS = ("nr_blockdev_pages", "nr_file_pages", "nr_inactive_file")
VM_DIRTY_RATIO = 20  # /proc/sys/vm/dirty_ratio's default: percent of dirtyable memory a writer may dirty


class BlockDeviceMapping:
    def __init__(self, mm: MemoryManager, bdev: BlockDevice) -> None:
        self.mm = mm
        self.bdev = bdev
        self.pages: OrderedDict[int, int] = OrderedDict()  # index -> pfn, least recently used first
        self.dirty: set[int] = set()
        self.mapping_id = mm.register_mapping(self)
        mm.register_shrinker(self.shrink)

    @property
    def size(self) -> int:
        return self.bdev.size_bytes

    # --- filling the cache ---------------------------------------------------------------

    def _populate(self, first: int, last: int) -> None:
        """Read pages first..last that are not cached, with one bio per run of missing pages.

        The range is marked most recently used first, so that reclaim set off by
        our own allocation takes other pages; should it take some of these
        anyway (a cache smaller than the range), they are read again.
        """
        for _ in range(8):
            for index in range(first, last + 1):
                if index in self.pages:
                    self.pages.move_to_end(index)
            missing = [i for i in range(first, last + 1) if i not in self.pages]
            if not missing:
                return
            self._read_pages(missing)
        raise KernelError(errno.ENOMEM, "block device cache: memory too short to hold one request")

    def _readahead(self, first: int, last: int, ra_last: int) -> None:
        """Read pages first..last and, in the same batch, ahead of need up to ra_last, as memory allows.

        Readahead allocates with __GFP_NORETRY and stops at the first failure
        (page_cache_ra_unbounded): it may shorten, never fail the read it rides
        on. So the window takes at most half of the free frames, and on ENOMEM
        the caller reads just what was asked for.
        """
        ra_last = min(ra_last, first + max(last - first + 1, self.mm.allocator.nr_free_pages // 2) - 1)
        try:
            self._populate(first, ra_last)
        except KernelError as e:
            if e.errno != errno.ENOMEM:
                raise

    def _read_pages(self, missing: list[int]) -> None:
        pfns = self.mm.alloc_pages(len(missing))
        bios: list[Bio] = []
        run: list[tuple[int, int]] = []
        for index, pfn in zip(missing, pfns, strict=True):
            if run and index != run[-1][0] + 1:
                bios.append(self._bio(ReqOp.READ, run))
                run = []
            run.append((index, pfn))
        bios.append(self._bio(ReqOp.READ, run))
        try:
            self.bdev.submit(bios)
        except BaseException:
            self.mm.free_pages(pfns)
            raise
        for index, pfn in zip(missing, pfns, strict=True):
            self.pages[index] = pfn
        self.mm.account(BDEV_PAGE_ITEMS, pfns)
        self.mm.memmap.set_owner(pfns, self.mapping_id, missing)
        self.mm.events["pgpgin"] += len(missing) * (PAGE_SIZE // 1024)

    def _bio(self, op: ReqOp, run: list[tuple[int, int]]) -> Bio:
        """A bio over consecutive page indexes; the tail page may end at the device's end."""
        start = run[0][0] << PAGE_SHIFT
        end = min((run[-1][0] + 1) << PAGE_SHIFT, self.size)
        segments: list[tuple[int, int]] = []
        for index, pfn in run:
            length = min(PAGE_SIZE, end - (index << PAGE_SHIFT))
            addr = pfn << PAGE_SHIFT
            if segments and segments[-1][0] + segments[-1][1] == addr:
                segments[-1] = (segments[-1][0], segments[-1][1] + length)
            else:
                segments.append((addr, length))
        return Bio(op, start >> SECTOR_SHIFT, (end - start) >> SECTOR_SHIFT, segments)

    # --- file I/O ------------------------------------------------------------------------

    def read(self, offset: int, size: int, readahead: int = 0) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        ra_last = min((end - 1 + readahead) >> PAGE_SHIFT, (self.size - 1) >> PAGE_SHIFT)
        if ra_last > last:
            self._readahead(first, last, ra_last)
        self._populate(first, last)  # a no-op unless there was no readahead or reclaim took pages back
        ram = self.mm.ram.view
        parts = []
        pos, i = offset, first
        pages = self.pages
        while i <= last:
            pfn = pages[i]
            pages.move_to_end(i)
            run = i
            while run < last and pages.get(run + 1) == pfn + (run + 1 - i):
                run += 1
                pages.move_to_end(run)
            chunk = min(end, (run + 1) << PAGE_SHIFT) - pos
            phys = (pfn << PAGE_SHIFT) + (pos - (i << PAGE_SHIFT))
            parts.append(ram[phys : phys + chunk])
            pos += chunk
            i = run + 1
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def write(self, offset: int, data: bytes | memoryview) -> int:
        src = memoryview(data).cast("B")
        end = min(offset + len(src), self.size)
        if offset >= end:
            return 0
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        self._balance_dirty_pages(last - first + 1)
        # Pages written only in part must hold the device's bytes around the write.
        partial = {first} if offset & _PAGE_MASK else set()
        if end & _PAGE_MASK and end != self.size:
            partial.add(last)
        for _ in range(8):  # until reclaim set off by our own allocations leaves every page in place
            for index in sorted(partial):
                self._populate(index, index)
            full = [i for i in range(first, last + 1) if i not in self.pages and i not in partial]
            if full:
                pfns = self.mm.alloc_pages(len(full))
                for index, pfn in zip(full, pfns, strict=True):
                    self.pages[index] = pfn
                self.mm.account(BDEV_PAGE_ITEMS, pfns)
                self.mm.memmap.set_owner(pfns, self.mapping_id, full)
            if all(i in self.pages for i in range(first, last + 1)):
                break
        else:
            raise KernelError(errno.ENOMEM, "block device cache: memory too short to hold one write")
        ram = self.mm.ram.view
        pos, done = offset, 0
        newly_dirty: list[int] = []
        for i in range(first, last + 1):
            pfn = self.pages[i]
            self.pages.move_to_end(i)
            chunk = min(end, (i + 1) << PAGE_SHIFT) - pos
            phys = (pfn << PAGE_SHIFT) + (pos - (i << PAGE_SHIFT))
            ram[phys : phys + chunk] = src[done : done + chunk]
            pos += chunk
            done += chunk
            if i not in self.dirty:
                self.dirty.add(i)
                newly_dirty.append(pfn)
        self.mm.account(("nr_dirty",), newly_dirty)
        return done

    def _balance_dirty_pages(self, incoming: int) -> None:
        """balance_dirty_pages: past vm.dirty_ratio of dirtyable memory, the writer cleans its own pages first.

        Dirty pages cannot be reclaimed, so without this a write stream larger
        than RAM (dd onto a big device) would end in ENOMEM where Linux throttles
        the writer and lets writeback catch up.
        """
        node = self.mm.node
        dirtyable = self.mm.allocator.nr_free_pages + node["nr_blockdev_pages"]
        if self.dirty and node["nr_dirty"] + incoming > dirtyable * VM_DIRTY_RATIO // 100:
            self.writeback()

    def writeback(self) -> None:
        if self.dirty:
            self._write_back(sorted(self.dirty))

    def _write_back(self, order: list[int]) -> None:
        """Write the dirty pages `order` (ascending), one bio per run of consecutive ones."""
        bios: list[Bio] = []
        run: list[tuple[int, int]] = []
        for index in order:
            if run and index != run[-1][0] + 1:
                bios.append(self._bio(ReqOp.WRITE, run))
                run = []
            run.append((index, self.pages[index]))
        bios.append(self._bio(ReqOp.WRITE, run))
        pfns = [self.pages[index] for index in order]
        self.mm.account(("nr_writeback",), pfns)
        try:
            self.bdev.submit(bios)
        finally:
            self.mm.account(("nr_writeback",), pfns, -1)
        self.dirty.difference_update(order)
        self.mm.account(("nr_dirty",), pfns, -1)
        self.mm.events["pgpgout"] += len(order) * (PAGE_SIZE // 1024)

    def flush(self) -> None:
        """Make written data durable: write back, then a FLUSH to the device's volatile cache."""
        self.writeback()
        self.bdev.submit([Bio(ReqOp.FLUSH, 0, 0)])

    def shrink(self, count: int) -> int:
        victims: list[int] = []
        for index in self.pages:  # least recently used first; stop as soon as there are enough
            if index not in self.dirty:
                victims.append(index)
                if len(victims) >= count:
                    break
        freed = [self.pages.pop(index) for index in victims]
        if freed:
            self.mm.account(BDEV_PAGE_ITEMS, freed, -1)
            self.mm.free_pages(freed)
        return len(freed)

    def invalidate(self) -> None:
        """Drop every page (after writeback): the next read goes to the device."""
        self.writeback()
        self.shrink(len(self.pages))

    def invalidate_range(self, offset: int, size: int) -> None:
        """What O_DIRECT does first (kiocb_invalidate_pages): write back and drop the cached pages of the range.

        Only the range: a direct I/O beside buffered I/O elsewhere on the device leaves that cache alone.
        """
        first, last = offset >> PAGE_SHIFT, (offset + size - 1) >> PAGE_SHIFT
        if last - first + 1 < len(self.pages):
            cached = [i for i in range(first, last + 1) if i in self.pages]
        else:
            cached = sorted(i for i in self.pages if first <= i <= last)
        dirty = [i for i in cached if i in self.dirty]
        if dirty:
            self._write_back(dirty)
        freed = [self.pages.pop(i) for i in cached]
        if freed:
            self.mm.account(BDEV_PAGE_ITEMS, freed, -1)
            self.mm.free_pages(freed)
