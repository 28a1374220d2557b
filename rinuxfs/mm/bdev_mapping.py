"""The page cache of a block device: device bytes in frames of the simulated RAM, read and written by bios.

Contract (the address_space of a bdev inode; what `Buffers` counts in meminfo):
- `read(offset, size)` brings the pages it covers into the cache with read bios whose segments
  are the cache's own frames (DMA straight into them), one bio per run of missing pages, all
  submitted as one batch; then copies out. Readahead past the request is best effort: short of
  memory, it shortens. A page that comes back after reclaim dropped it brings its shadow to the
  LRU (a refault).
- `write(offset, data)` updates cached pages, first reading a page the write covers only in
  part; the pages become dirty, stamped with the time they became so. Nothing reaches the disk
  until writeback: the flusher (pages dirty longer than dirty_expire_centisecs, or everything
  past the background threshold), fsync, the last close, unmount, reclaim, or the writer itself
  when the dirty pages pass the middle of the background and dirty limits (balance_dirty_pages).
- `writeback(before=None)` writes dirty pages (those dirtied before a time, or all) as one bio per
  run of consecutive pages, submitted as a batch so the queue merges what is adjacent.
- For reclaim (vmscan.Reclaimable): `pageout(pages)` writes the dirty ones of a batch and says
  which can go; `drop(indexes, pfns, shadows)` drops them, each leaving its shadow; `drop_clean()` is
  drop_caches' part: every clean page goes.
- Pages of the range a request is working on are locked: reclaim never takes them.
- The cache never holds a page past the device's end.
- Device errors (BlkError) end as Linux's page cache ends them: a read first goes out as
  readahead (REQ_RAHEAD, never retried by drivers); pages whose bios failed are read again one at
  a time (filemap_read_folio), and the read comes back short before the first page that still
  fails, or fails with EIO if that is its first page. A failed writeback loses the pages of the
  failed bios (end_buffer_async_write: not re-dirtied, dropped so a later read goes to the device)
  and fails with EIO; the other bios' pages are clean.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterable

from rinuxfs.block.bio import REQ_RAHEAD, REQ_SYNC, SECTOR_SHIFT, Bio, ReqOp
from rinuxfs.block.errors import BlkError
from rinuxfs.block.genhd import BlockDevice
from rinuxfs.errors import KernelError
from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.pagelock import PageLocks
from rinuxfs.mm.writeback import dirty_limits

_PAGE_MASK = PAGE_SIZE - 1
BDEV_PAGE_ITEMS = ("nr_blockdev_pages", "nr_file_pages")


class BlockDeviceMapping:
    """A block device's cache; its pages sit on the file LRU."""

    def __init__(self, mm: MemoryManager, bdev: BlockDevice) -> None:
        self.mm = mm
        self.bdev = bdev
        self.pages: dict[int, int] = {}  # index -> pfn
        self.dirty: dict[int, float] = {}  # index -> when it became dirty (monotonic s), oldest first
        self.shadows: dict[int, int] = {}  # index -> the LRU's shadow of a page reclaim dropped
        self.not_uptodate: set[int] = set()  # pages whose readahead failed: readahead skips them (!uptodate)
        self.locks = PageLocks()
        self.mapping_id = mm.register_mapping(self)

    @property
    def size(self) -> int:
        return self.bdev.size_bytes

    # --- filling the cache ---------------------------------------------------------------

    def _populate(self, first: int, last: int, flags: int = 0) -> None:
        """Read pages first..last that are not cached, with one bio per run of missing pages."""
        missing = [i for i in range(first, last + 1) if i not in self.pages]
        if flags & REQ_RAHEAD and self.not_uptodate:
            missing = [i for i in missing if i not in self.not_uptodate]
        if missing:
            self._read_pages(missing, flags)

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
            with self.locks.hold(first, ra_last):
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
        mm = self.mm
        pfns = mm.alloc_pages(len(missing))
        runs = _index_runs(zip(missing, pfns, strict=True))
        bios = [self._bio(ReqOp.READ, run, flags) for run in runs]
        start = time.monotonic()
        try:
            self.bdev.submit(bios)
        except BlkError:  # every bio ended on its own: keep what was read
            good = [page for bio, run in zip(bios, runs, strict=True) if bio.error is None for page in run]
            bad = [page for bio, run in zip(bios, runs, strict=True) if bio.error is not None for page in run]
            mm.free_pages([pfn for _, pfn in bad])
            self.not_uptodate.update(index for index, _ in bad)
            self._install(good)
            raise
        except BaseException:
            mm.free_pages(pfns)
            raise
        finally:
            if mm.on_stall is not None:
                mm.on_stall("io", time.monotonic() - start)
        self._install(list(zip(missing, pfns, strict=True)))

    def _install(self, pages: list[tuple[int, int]]) -> None:
        """Pages read from the device into the cache."""
        if not pages:
            return
        self._add([index for index, _ in pages], [pfn for _, pfn in pages])
        self.mm.events["pgpgin"] += len(pages) * (PAGE_SIZE // 1024)

    def _add(self, indexes: list[int], pfns: list[int]) -> None:
        """New pages into the cache: counted, owned by it, on the file LRU (a page reclaim dropped
        before brings its shadow)."""
        mm = self.mm
        self.not_uptodate.difference_update(indexes)
        self.pages.update(zip(indexes, pfns, strict=True))
        mm.account(BDEV_PAGE_ITEMS, pfns)
        mm.memmap.set_owner(pfns, self.mapping_id, indexes)
        shadows = [self.shadows.pop(i, None) for i in indexes] if self.shadows else None
        mm.lru_add(pfns, anon=False, shadows=shadows)

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
        with self.locks.hold(first, last):
            hits = [pfn for pfn in map(self.pages.get, range(first, last + 1)) if pfn is not None]
            failed = not self._readahead(first, last, max(ra_last, last)) or (
                bool(self.not_uptodate) and not self.not_uptodate.isdisjoint(range(first, last + 1)))
            if not failed:
                try:
                    self._populate(first, last)  # what readahead shortened
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
                run = i
                while run < last and pages.get(run + 1) == pfn + (run + 1 - i):
                    run += 1
                chunk = min(end, (run + 1) << PAGE_SHIFT) - pos
                phys = (pfn << PAGE_SHIFT) + (pos - (i << PAGE_SHIFT))
                parts.append(ram[phys : phys + chunk])
                pos += chunk
                i = run + 1
            if hits:  # pages read in now had their access when added
                self.mm.lru_access(hits)
            return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def write(self, offset: int, data: bytes | memoryview) -> int:
        src = memoryview(data).cast("B")
        end = min(offset + len(src), self.size)
        if offset >= end:
            return 0
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        self._balance_dirty_pages(last - first + 1)
        with self.locks.hold(first, last):
            hits = [pfn for pfn in map(self.pages.get, range(first, last + 1)) if pfn is not None]
            # Pages written only in part must hold the device's bytes around the write.
            partial = {first} if offset & _PAGE_MASK else set()
            if end & _PAGE_MASK and end != self.size:
                partial.add(last)
            for index in sorted(partial):
                try:
                    self._populate(index, index)
                except BlkError:  # block_write_begin could not read the rest of the block
                    raise KernelError(errno.EIO, f"{self.bdev.name}: I/O error reading page {index}") from None
            full = [i for i in range(first, last + 1) if i not in self.pages]
            if full:
                self._add(full, self.mm.alloc_pages(len(full)))
            ram = self.mm.ram.view
            pos, done = offset, 0
            newly_dirty: list[int] = []
            now = time.monotonic()
            for i in range(first, last + 1):
                pfn = self.pages[i]
                chunk = min(end, (i + 1) << PAGE_SHIFT) - pos
                phys = (pfn << PAGE_SHIFT) + (pos - (i << PAGE_SHIFT))
                ram[phys : phys + chunk] = src[done : done + chunk]
                pos += chunk
                done += chunk
                if i not in self.dirty:
                    self.dirty[i] = now
                    newly_dirty.append(pfn)
            self.mm.account(("nr_dirty",), newly_dirty)
            self.mm.events["nr_dirtied"] += len(newly_dirty)
            if hits:
                self.mm.lru_access(hits)
        return done

    def _balance_dirty_pages(self, incoming: int) -> None:
        """balance_dirty_pages: past the middle of the background and dirty limits, the writer is held
        back while dirty pages are written, here by writing its own oldest ones itself.

        Dirty pages cannot be reclaimed until written, so without this a write stream larger than RAM
        (dd onto a big device) would end in ENOMEM where Linux throttles the writer.
        """
        mm = self.mm
        if not self.dirty:
            return
        bg, thresh = dirty_limits(mm)
        dirty = mm.total["nr_dirty"] + incoming
        if dirty > (bg + thresh) // 2:
            mm.events["nr_throttled_written"] += len(self.dirty)
            self.writeback()
        elif dirty > bg:
            mm.writeback_wakeup()

    def writeback(self, before: float | None = None, only: list[int] | None = None) -> int:
        """Write dirty pages (dirtied before `before`, or those `only`, or all): how many were written.

        A failed bio's pages are lost (dropped, not re-dirtied) and EIO is raised once the rest is written.
        """
        if not self.dirty:
            return 0
        if only is not None:
            order = sorted(i for i in only if i in self.dirty)
        else:
            order = sorted(i for i, t in self.dirty.items() if before is None or t < before)
        if not order:
            return 0
        runs = _index_runs([(index, self.pages[index]) for index in order])
        bios = [self._bio(ReqOp.WRITE, run, REQ_SYNC) for run in runs]
        pfns = [self.pages[index] for index in order]
        mm = self.mm
        mm.account(("nr_writeback",), pfns)
        lost: list[int] = []
        start = time.monotonic()
        try:
            self.bdev.submit(bios)
        except BlkError:
            lost = [index for bio, run in zip(bios, runs, strict=True) if bio.error is not None for index, _ in run]
        finally:
            mm.account(("nr_writeback",), pfns, -1)
            if mm.on_stall is not None:
                mm.on_stall("io", time.monotonic() - start)
        for index in order:
            del self.dirty[index]
        mm.account(("nr_dirty",), pfns, -1)
        mm.events["nr_written"] += len(order) - len(lost)
        mm.events["pgpgout"] += (len(order) - len(lost)) * (PAGE_SIZE // 1024)
        if lost:
            self._drop(lost)
            raise KernelError(errno.EIO, f"{self.bdev.name}: lost async page write of {len(lost)} pages")
        return len(order)

    def flush(self) -> None:
        """Make written data durable: write back, then a FLUSH to the device's volatile cache."""
        self.writeback()
        self.bdev.submit([Bio(ReqOp.FLUSH, 0, 0)])

    # --- reclaim and invalidation --------------------------------------------------------

    def writeout_failed(self, index: int) -> None:
        """Never called: dirty block-cache pages are written before pageout answers."""

    def pageout(self, pages: list[tuple[int, int]], plug: object = None) -> list[bool]:
        """Which of these pages can go: clean ones at once, dirty ones once written (pageout)."""
        live = self.locks.unlocked([(i, pfn) for i, pfn in pages if self.pages.get(i) == pfn])
        dirty = [i for i, _ in live if i in self.dirty]
        if dirty:
            try:
                self.writeback(only=dirty)
                self.mm.events["nr_vmscan_write"] += len(dirty)
            except KernelError:
                pass  # the pages of failed bios were dropped with their write; the others are clean
        return [self.pages.get(i) == pfn and i not in self.dirty and not self.locks.locked(i) for i, pfn in pages]

    def drop(self, indexes: list[int], pfns: list[int], shadows: list[int]) -> None:
        cap = max(1024, self.mm.allocator.totalram_pages)
        for index in indexes:
            del self.pages[index]
        self.shadows.update(zip(indexes, shadows, strict=True))
        while len(self.shadows) > cap:  # the shadow node shrinker: the oldest shadows go first
            del self.shadows[next(iter(self.shadows))]
            self.mm.events["workingset_nodereclaim"] += 1
        self.mm.account(BDEV_PAGE_ITEMS, pfns, -1)
        self.mm.free_pages(pfns)

    def _drop(self, indexes: list[int]) -> None:
        """Take pages out of the cache whatever their state (truncate_inode_pages of the range)."""
        dirty = [self.pages[i] for i in indexes if i in self.dirty and i in self.pages]
        for i in indexes:
            self.dirty.pop(i, None)
        if dirty:
            self.mm.account(("nr_dirty",), dirty, -1)
        freed = [self.pages.pop(index) for index in indexes if index in self.pages]
        if freed:
            self.mm.lru_remove(freed)
            self.mm.account(BDEV_PAGE_ITEMS, freed, -1)
            self.mm.free_pages(freed)

    def drop_clean(self) -> int:
        """Every clean, unlocked page out of the cache (drop_caches)."""
        victims = [i for i in self.pages if i not in self.dirty and not self.locks.locked(i)]
        self._drop(victims)
        return len(victims)

    def discard_all(self) -> None:
        """The device is gone: every page leaves the cache, dirty ones lost (kill_bdev)."""
        self.not_uptodate.clear()
        self.shadows.clear()
        self._drop(list(self.pages))

    def invalidate(self) -> None:
        """Drop every page (after writeback): the next read goes to the device."""
        self.writeback()
        self.drop_clean()

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
            self.writeback(only=dirty)
        self._drop([i for i in cached if i in self.pages])


def _index_runs(pages: Iterable[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """(index, pfn) pairs, in order, cut into runs of consecutive indexes (one bio each)."""
    runs: list[list[tuple[int, int]]] = [[]]
    for index, pfn in pages:
        if runs[-1] and index != runs[-1][-1][0] + 1:
            runs.append([])
        runs[-1].append((index, pfn))
    return runs
