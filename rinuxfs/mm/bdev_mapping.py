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
- Device errors (BlkError) end as Linux's page cache ends them: a read first
  goes out as readahead (REQ_RAHEAD, never retried by drivers); pages whose
  bios failed are read again one at a time (filemap_read_folio), and the read
  comes back short before the first page that still fails, or fails with EIO
  if that is its first page. A failed writeback loses the pages of the failed
  bios (end_buffer_async_write: not re-dirtied, dropped so a later read goes
  to the device) and fails with EIO; the other bios' pages are clean.
"""

from __future__ import annotations

import errno
from collections import OrderedDict

from rinuxfs.block.bio import REQ_RAHEAD, REQ_SYNC, SECTOR_SHIFT, Bio, ReqOp
from rinuxfs.block.errors import BlkError
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
        self.not_uptodate: set[int] = set()  # pages whose readahead failed: readahead skips them (they stay !uptodate)
        self.mapping_id = mm.register_mapping(self)
        mm.register_shrinker(self.shrink)

    @property
    def size(self) -> int:
        return self.bdev.size_bytes

    # --- filling the cache ---------------------------------------------------------------

    def _populate(self, first: int, last: int, flags: int = 0) -> None:
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
            if flags & REQ_RAHEAD and self.not_uptodate:
                missing = [i for i in missing if i not in self.not_uptodate]
            if not missing:
                return
            self._read_pages(missing, flags)
        raise KernelError(errno.ENOMEM, "block device cache: memory too short to hold one request")

    def _readahead(self, first: int, last: int, ra_last: int) -> bool:
        """Read pages first..last and, in the same batch, ahead of need up to ra_last, as memory allows.

        Readahead allocates with __GFP_NORETRY and stops at the first failure
        (page_cache_ra_unbounded): it may shorten, never fail the read it rides
        on. So the window takes at most half of the free frames, and on ENOMEM
        the caller reads just what was asked for. Its bios carry REQ_RAHEAD; a
        device error leaves the pages of the failed bios out. Returns False
        after a device error.
        """
        ra_last = min(ra_last, first + max(last - first + 1, self.mm.allocator.nr_free_pages // 2) - 1)
        try:
            self._populate(first, ra_last, REQ_RAHEAD)
        except BlkError:
            return False
        except KernelError as e:
            if e.errno != errno.ENOMEM:
                raise
        return True

    def _read_one_by_one(self, first: int, last: int) -> int:
        """After a failed readahead: each missing page alone (flags 0); the last page that could be read."""
        for index in range(first, last + 1):
            if index in self.pages:
                continue
            try:
                self._populate(index, index)
            except BlkError:
                if index == first:
                    raise KernelError(errno.EIO, f"{self.bdev.name}: I/O error reading page {index}") from None
                return index - 1
        return last

    def _read_pages(self, missing: list[int], flags: int = 0) -> None:
        pfns = self.mm.alloc_pages(len(missing))
        runs: list[list[tuple[int, int]]] = [[]]
        for index, pfn in zip(missing, pfns, strict=True):
            if runs[-1] and index != runs[-1][-1][0] + 1:
                runs.append([])
            runs[-1].append((index, pfn))
        bios = [self._bio(ReqOp.READ, run, flags) for run in runs]
        try:
            self.bdev.submit(bios)
        except BlkError:  # every bio ended on its own: keep what was read
            good = [page for bio, run in zip(bios, runs, strict=True) if bio.error is None for page in run]
            bad = [page for bio, run in zip(bios, runs, strict=True) if bio.error is not None for page in run]
            self.mm.free_pages([pfn for _, pfn in bad])
            self.not_uptodate.update(index for index, _ in bad)
            self._install(good)
            raise
        except BaseException:
            self.mm.free_pages(pfns)
            raise
        self._install(list(zip(missing, pfns, strict=True)))

    def _install(self, pages: list[tuple[int, int]]) -> None:
        if not pages:
            return
        indexes = [index for index, _ in pages]
        pfns = [pfn for _, pfn in pages]
        self.not_uptodate.difference_update(indexes)
        for index, pfn in pages:
            self.pages[index] = pfn
        self.mm.account(BDEV_PAGE_ITEMS, pfns)
        self.mm.memmap.set_owner(pfns, self.mapping_id, indexes)
        self.mm.events["pgpgin"] += len(pages) * (PAGE_SIZE // 1024)

    def _bio(self, op: ReqOp, run: list[tuple[int, int]], flags: int = 0) -> Bio:
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
        return Bio(op, start >> SECTOR_SHIFT, (end - start) >> SECTOR_SHIFT, segments, flags=flags)

    # --- file I/O ------------------------------------------------------------------------

    def read(self, offset: int, size: int, readahead: int = 0) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        ra_last = min((end - 1 + readahead) >> PAGE_SHIFT, (self.size - 1) >> PAGE_SHIFT)
        failed = not self._readahead(first, last, max(ra_last, last)) or (
            bool(self.not_uptodate) and not self.not_uptodate.isdisjoint(range(first, last + 1)))
        if not failed:
            try:
                self._populate(first, last)  # what readahead shortened, or reclaim took back
            except BlkError:
                failed = True
        if failed:  # filemap_read_folio, page by page
            last = self._read_one_by_one(first, last)
            end = min(end, (last + 1) << PAGE_SHIFT)
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
                try:
                    self._populate(index, index)
                except BlkError:  # block_write_begin could not read the rest of the block
                    raise KernelError(errno.EIO, f"{self.bdev.name}: I/O error reading page {index}") from None
            full = [i for i in range(first, last + 1) if i not in self.pages and i not in partial]
            if full:
                pfns = self.mm.alloc_pages(len(full))
                self.not_uptodate.difference_update(full)
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
        if not self.dirty:
            return
        order = sorted(self.dirty)
        runs: list[list[tuple[int, int]]] = [[]]
        for index in order:
            if runs[-1] and index != runs[-1][-1][0] + 1:
                runs.append([])
            runs[-1].append((index, self.pages[index]))
        bios = [self._bio(ReqOp.WRITE, run, REQ_SYNC) for run in runs]
        pfns = [self.pages[index] for index in order]
        self.mm.account(("nr_writeback",), pfns)
        lost: list[int] = []
        try:
            self.bdev.submit(bios)
        except BlkError:
            lost = [index for bio, run in zip(bios, runs, strict=True) if bio.error is not None for index, _ in run]
        finally:
            self.mm.account(("nr_writeback",), pfns, -1)
        self.dirty.clear()
        self.mm.account(("nr_dirty",), pfns, -1)
        self.mm.events["pgpgout"] += (len(order) - len(lost)) * (PAGE_SIZE // 1024)
        if lost:
            self._drop(lost)
            raise KernelError(errno.EIO, f"{self.bdev.name}: lost async page write of {len(lost)} pages")

    def _drop(self, indexes: list[int]) -> None:
        """Take pages out of the cache whatever their state (truncate_inode_pages of the range)."""
        self.dirty.difference_update(indexes)
        freed = [self.pages.pop(index) for index in indexes if index in self.pages]
        if freed:
            self.mm.account(BDEV_PAGE_ITEMS, freed, -1)
            self.mm.free_pages(freed)

    def discard_all(self) -> None:
        """The device is gone: every page leaves the cache, dirty ones lost (kill_bdev)."""
        dirty = [self.pages[index] for index in self.dirty if index in self.pages]
        self.mm.account(("nr_dirty",), dirty, -1)
        self.dirty.clear()
        self.not_uptodate.clear()
        self._drop(list(self.pages))

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
