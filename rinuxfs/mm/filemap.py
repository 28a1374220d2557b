"""Address spaces of tmpfs files (shmem): a file's pages in frames of the simulated RAM, or in swap.

Contract (the page cache of one shmem inode, struct address_space):
- `pages` maps a page index (file offset >> 12) to the PFN holding it or, once the page was
  swapped out, to its swap entry (as shmem keeps swap entries in its mapping; an entry's value is
  above every PFN, swapfile.is_swap_entry). An index that is
  absent is a hole and reads as zeros; nothing is allocated for it.
- `write(offset, data)` allocates only the pages it touches, charging them to the owner's quota
  first (ENOSPC, nothing changed), then to memory (ENOMEM, nothing changed) and to the task
  writing (RssShmem); swapped-out pages it touches come back first. Its cost is O(pages touched).
- `read(offset, size)` returns the bytes; swapped-out pages in the range are brought back first
  (demand paging: pgmajfault, pswpin, a refault the LRU learns from). A range in consecutive
  frames comes back as a view of RAM, valid only until the address space next changes (the FUSE
  reply copies it at once), anything else as one joined copy.
- Every page touched counts as an access for the LRU (folio_mark_accessed).
- With the mount's huge=always (or within_size, for blocks inside the file's size), a write to an
  empty, aligned 2 MiB block gets one 2 MiB folio (ShmemHugePages, thp_file_alloc) when a free
  order-9 block is at hand, small pages otherwise (thp_file_fallback); a folio is split into small
  pages (thp_split_page) before any of its pages goes to swap, and when a truncate cuts into it.
- `truncate(size)` frees every page and swap slot wholly past `size` and zeroes the tail of the
  page that straddles it; `release()` frees everything, and the mapping must not be used after.
- For reclaim (vmscan.Reclaimable): `pageout(pages)` writes a batch of pages to swap and says
  which can go (a page in the range of the request in progress, a page with no free slot, a
  failed write: kept); `drop(indexes, pfns, shadows)` replaces them by their swap entries.

Resident pages are counted in the node counters given as `account_items` (Shmem, file pages)
and sit on the anon LRU, so /proc/meminfo follows page ownership without a second copy.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from itertools import compress, repeat
from typing import Protocol

from rinuxfs.errors import KernelError
from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.page_alloc import WMARK_LOW, runs_to_pfns
from rinuxfs.mm.pagelock import PageLocks
from rinuxfs.mm.swapfile import SWP_ENTRY_TAG, SwapEntry, is_swap_entry
from rinuxfs.mm.vmscan import SwapPlug

_PAGE_MASK = PAGE_SIZE - 1
_ZERO_PAGE = bytes(PAGE_SIZE)
HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
_ZERO_HUGE = bytes(HPAGE_PMD_NR * PAGE_SIZE)


class PageQuota(Protocol):
    """Who pays for the pages (a tmpfs superblock's size= limit)."""

    def charge(self, pages: int) -> None: ...
    def uncharge(self, pages: int) -> None: ...


class AddressSpace:
    # Slots, and the containers only a file with swapped or huge pages needs made on first use: a tmpfs
    # of 100,000 empty files costs little more than its names.
    __slots__ = ("mm", "quota", "account_items", "huge_policy", "huge", "pages", "nr_swapped", "shadows",
                 "locks", "_pending", "_mapping_id", "__weakref__")

    def __init__(self, mm: MemoryManager, quota: PageQuota, account_items: tuple[str, ...],
                 huge: Callable[[], str] = lambda: "never") -> None:
        self.mm = mm
        self.quota = quota
        self.account_items = account_items
        self.huge_policy = huge  # the mount's huge= option: never | always | within_size | advise
        self.huge: set[int] | None = None  # first indexes of the 2 MiB folios the file holds
        self.pages: dict[int, int] = {}  # index -> PFN, or swap entry
        self.nr_swapped = 0
        self.shadows: dict[int, int] | None = None  # index -> the LRU's shadow of a page that went to swap
        self.locks = PageLocks()  # index ranges of the requests in progress
        self._pending: dict[int, SwapEntry] | None = None  # written to swap by pageout, awaiting drop
        self._mapping_id = 0

    @property
    def mapping_id(self) -> int:
        """The id struct pages name this mapping by: registered when the first page comes."""
        if not self._mapping_id:
            self._mapping_id = self.mm.register_mapping(self)
        return self._mapping_id

    @property
    def nrpages(self) -> int:
        """Pages in memory (a file's st_blocks counts these and its swapped pages)."""
        return len(self.pages) - self.nr_swapped

    @property
    def nrblocks(self) -> int:
        return len(self.pages)

    # --- the request side ----------------------------------------------------------------

    def write(self, offset: int, data: bytes | memoryview, i_size: int = 0) -> None:
        """Write at offset; `i_size` is the file's size, which huge=within_size reads."""
        src = memoryview(data).cast("B")
        length = len(src)
        if not length:
            return
        end = offset + length
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        with self.locks.hold(first, last):
            # The pages' state is read once for the request: each later step works on that list.
            found = list(map(self.pages.get, range(first, last + 1)))
            holes = found.count(None)
            if self.nr_swapped and any(pfn is not None and pfn >= SWP_ENTRY_TAG for pfn in found):
                hits = self._resident(found)  # pages brought in now had their access when added
                self._make_present(first, last, offset, end, max(i_size, end))
                found = list(map(self.pages.get, range(first, last + 1)))
            elif holes:
                hits = self._resident(found) if holes < len(found) else []
                missing = list(range(first, last + 1)) if not hits else \
                    [i for i, pfn in zip(range(first, last + 1), found, strict=True) if pfn is None]
                self._fill(missing, offset, end, max(i_size, end))
                found = list(map(self.pages.get, range(first, last + 1)))
            else:
                hits = found
            ram = self.mm.ram.view
            pos, done = offset, 0
            for index, pfn, count in self._runs(first, found):
                chunk = min(end, (index + count) << PAGE_SHIFT) - pos
                phys = (pfn << PAGE_SHIFT) + (pos - (index << PAGE_SHIFT))  # type: ignore[operator]
                ram[phys : phys + chunk] = src[done : done + chunk]
                pos += chunk
                done += chunk
            if hits:
                self.mm.lru_access(hits)

    def _resident(self, found: list[int | None]) -> list[int]:
        """The frames among a range's `found` entries (what a request finds in memory is a hit)."""
        if not self.nr_swapped:
            return [pfn for pfn in found if pfn is not None]  # type: ignore[misc]
        return [pfn for pfn in found if pfn is not None and pfn < SWP_ENTRY_TAG]

    def read(self, offset: int, size: int) -> bytes | memoryview:
        if size <= 0:
            return b""
        end = offset + size
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        with self.locks.hold(first, last):
            found = list(map(self.pages.get, range(first, last + 1)))
            hits = self._resident(found)
            if self.nr_swapped:
                self._swapin_range(first, last)
                found = list(map(self.pages.get, range(first, last + 1)))
            ram = self.mm.ram.view
            parts: list[bytes | memoryview] = []
            pos = offset
            for index, pfn, count in self._runs(first, found):
                chunk = min(end, (index + count) << PAGE_SHIFT) - pos
                if pfn is None:
                    parts.append(bytes(chunk))
                else:
                    phys = (pfn << PAGE_SHIFT) + (pos - (index << PAGE_SHIFT))
                    parts.append(ram[phys : phys + chunk])
                pos += chunk
            if hits:
                self.mm.lru_access(hits)
        if len(parts) == 1:
            return parts[0]  # zero-copy: the FUSE reply copies it out before anything can change the page
        return b"".join(parts)

    def _make_present(self, first: int, last: int, offset: int, end: int, i_size: int = 0) -> None:
        """Every page of first..last in a frame: swapped-out ones read back, holes allocated."""
        self._swapin_range(first, last)
        if None in map(self.pages.get, range(first, last + 1)):
            self._fill([i for i in range(first, last + 1) if i not in self.pages], offset, end, i_size)

    def _fill(self, missing: list[int], offset: int, end: int, i_size: int) -> None:
        """Frames for the holes `missing` of a write to offset..end: 2 MiB folios where huge= asks, pages."""
        policy = self.huge_policy()
        if policy in ("always", "within_size"):
            missing = self._populate_huge(missing, policy, i_size)
        if missing:
            self._populate(missing, offset, end)

    def _populate_huge(self, missing: list[int], policy: str, i_size: int) -> list[int]:
        """2 MiB folios for the aligned blocks a write reaches that hold nothing yet (shmem_alloc_and_add_folio
        with huge=); what they do not cover is left for small pages. A folio that cannot be had right
        away (no free order-9 block above the low watermark: no reclaim for it) falls back to small pages."""
        mm = self.mm
        rest: list[int] = []
        blocks = sorted({i & ~(HPAGE_PMD_NR - 1) for i in missing})
        for block in blocks:
            fits = policy == "always" or (block + HPAGE_PMD_NR) * PAGE_SIZE <= i_size
            if not fits or any(i in self.pages for i in range(block, block + HPAGE_PMD_NR)):
                rest += [i for i in missing if block <= i < block + HPAGE_PMD_NR]
                continue
            try:
                self.quota.charge(HPAGE_PMD_NR)
            except KernelError:
                rest += [i for i in missing if block <= i < block + HPAGE_PMD_NR]
                continue
            pfn = mm.alloc_block(HPAGE_PMD_ORDER, mark=WMARK_LOW)
            if pfn is None:
                self.quota.uncharge(HPAGE_PMD_NR)
                mm.events["thp_file_fallback"] += 1
                rest += [i for i in missing if block <= i < block + HPAGE_PMD_NR]
                continue
            mm.ram.view[pfn << PAGE_SHIFT : (pfn + HPAGE_PMD_NR) << PAGE_SHIFT] = _ZERO_HUGE
            indexes = list(range(block, block + HPAGE_PMD_NR))
            pfns = list(range(pfn, pfn + HPAGE_PMD_NR))
            for index, p in zip(indexes, pfns, strict=True):
                self.pages[index] = p
            if self.huge is None:
                self.huge = set()
            self.huge.add(block)
            mm.account(self.account_items, pfns)
            mm.account_run(("nr_shmem_hugepages",), pfn, HPAGE_PMD_NR)
            mm.memmap.set_owner(pfns, self.mapping_id, indexes)
            mm.charges.charge(mm.current_pid(), pfns)
            mm.lru_add(pfns, anon=True)
            mm.events["thp_file_alloc"] += 1
        return rest

    def _split(self, block: int) -> None:
        """split_folio: the 2 MiB folio becomes 512 small pages (for a swap-out, or a truncate inside it)."""
        self.huge.discard(block)  # type: ignore[union-attr]  # called only for a folio the file holds
        pfn = self.pages[block]
        if not is_swap_entry(pfn):
            self.mm.account_run(("nr_shmem_hugepages",), pfn, HPAGE_PMD_NR, -1)
        self.mm.events["thp_split_page"] += 1

    def _runs(self, first: int, pfns: list[int | None]) -> list[tuple[int, int | None, int]]:
        """Pages first.. (their frames `pfns`, None for a hole) as runs (first index, first PFN or None
        for a hole, count) of consecutive frames.

        The common case, one run of consecutive frames, is recognised by list
        comparisons that run in C: a per-page Python loop would cost more than
        the copy of the data itself.
        """
        n = len(pfns)
        head = pfns[0]
        if head is not None and pfns[-1] == head + n - 1 and pfns == list(range(head, head + n)):
            return [(first, head, n)]
        runs: list[tuple[int, int | None, int]] = []
        start = 0
        for k in range(1, n + 1):
            if k < n:
                prev, cur = pfns[k - 1], pfns[k]
                if (prev is None and cur is None) or (prev is not None and cur == prev + 1):
                    continue
            runs.append((first + start, pfns[start], k - start))
            start = k
        return runs

    def _populate(self, indexes: list[int], offset: int, end: int) -> None:
        """Small pages for the holes `indexes` (ascending) of a write to offset..end."""
        mm = self.mm
        n = len(indexes)
        self.quota.charge(n)
        try:
            runs = mm.alloc_page_runs(n)
        except BaseException:
            self.quota.uncharge(n)
            raise
        pfns = runs_to_pfns(runs)
        self.pages.update(zip(indexes, pfns, strict=True))
        # A new page the write covers only in part must not show a freed frame's stale bytes (the
        # write's first and last pages: if new, they are the first and last of `indexes`).
        ram = mm.ram.view
        for k, partial in ((0, offset >> PAGE_SHIFT if offset & _PAGE_MASK else -1),
                           (-1, (end - 1) >> PAGE_SHIFT if end & _PAGE_MASK else -1)):
            if indexes[k] == partial:
                pfn = pfns[k]
                ram[pfn << PAGE_SHIFT : (pfn + 1) << PAGE_SHIFT] = _ZERO_PAGE
        mm.account(self.account_items, pfns)
        if len(runs) == 1 and indexes[-1] - indexes[0] == n - 1:
            # A stream's request: consecutive pages in consecutive frames, recorded as slices.
            mm.memmap.set_owner_run(runs[0][0], n, self.mapping_id, indexes[0])
            mm.charges.charge_run(mm.current_pid(), runs[0][0], n)
        else:
            mm.memmap.set_owner(pfns, self.mapping_id, indexes)
            mm.charges.charge(mm.current_pid(), pfns)
        mm.lru_add(pfns, anon=True)

    def _swapin_range(self, first: int, last: int) -> None:
        """_swapin of the pages of first..last that are in swap."""
        if self.nr_swapped:
            get = self.pages.get
            self._swapin([i for i in range(first, last + 1) if get(i, 0) >= SWP_ENTRY_TAG])

    def _swapin(self, indexes: list[int]) -> None:
        """Bring swapped-out pages back (shmem_swapin_folio): the slots are freed, the charge comes back."""
        if not indexes:
            return
        mm = self.mm
        entries: list[SwapEntry] = list(map(self.pages.__getitem__, indexes))
        pfns = mm.swap_cache.swapin(entries)
        self.pages.update(zip(indexes, pfns, strict=True))
        self.nr_swapped -= len(indexes)
        mm.account(self.account_items, pfns)
        mm.memmap.set_owner(pfns, self.mapping_id, indexes)
        mm.charges.from_swap(entries, pfns)
        mm.swap.swap_free(entries)
        shadows = list(map(self.shadows.pop, indexes, repeat(None, len(indexes)))) if self.shadows else None
        mm.lru_add(pfns, anon=True, shadows=shadows)

    # --- truncate and release ------------------------------------------------------------

    def truncate(self, size: int) -> None:
        keep = (size + _PAGE_MASK) >> PAGE_SHIFT
        gone = [i for i in self.pages if i >= keep]
        if gone:
            self._free(gone)
        if self.shadows:
            for i in [i for i in self.shadows if i >= keep]:
                del self.shadows[i]
        if size & _PAGE_MASK:
            index = size >> PAGE_SHIFT
            if is_swap_entry(self.pages.get(index, 0)):
                with self.locks.hold(index, index):
                    self._swapin([index])
            pfn = self.pages.get(index)
            if pfn is not None:
                start = (pfn << PAGE_SHIFT) + (size & _PAGE_MASK)
                self.mm.ram.view[start : (pfn + 1) << PAGE_SHIFT] = _ZERO_PAGE[: PAGE_SIZE - (size & _PAGE_MASK)]

    def release(self) -> None:
        self._free(list(self.pages))
        self.shadows = None

    def _free(self, indexes: list[int]) -> None:
        if not indexes:
            return
        mm = self.mm
        if self.huge:
            gone = set(indexes)
            for block in sorted(b for b in self.huge if b in gone or b + HPAGE_PMD_NR - 1 in gone):
                if all(i in gone for i in range(block, block + HPAGE_PMD_NR)):
                    self.huge.discard(block)  # freed whole: no split
                    mm.account_run(("nr_shmem_hugepages",), self.pages[block], HPAGE_PMD_NR, -1)  # type: ignore[arg-type]
                else:
                    self._split(block)
        pfns: list[int] = []
        entries: list[SwapEntry] = []
        for i in indexes:
            v = self.pages.pop(i)
            if v >= SWP_ENTRY_TAG:
                entries.append(v)
            else:
                pfns.append(v)
        if pfns:
            mm.lru_remove(pfns)
            mm.account(self.account_items, pfns, -1)
            mm.charges.uncharge(pfns)
            mm.free_pages(pfns)
        if entries:
            self.nr_swapped -= len(entries)
            mm.swap_cache.forget_many(entries)
            mm.charges.uncharge_swap(entries)
            mm.swap.swap_free(entries)
        self.quota.uncharge(len(indexes))

    # --- the reclaim side ----------------------------------------------------------------

    def pageout(self, pages: list[tuple[int, int]], plug: SwapPlug) -> list[bool]:
        """shmem_writeout for a batch: a slot for each page, its write queued on the reclaim pass's plug."""
        mm = self.mm
        # Still the page reclaim isolated (not truncated or replaced since): compared in C.
        now = map(self.pages.get, [i for i, _ in pages])
        candidates = list(compress(pages, map(operator.eq, now, [pfn for _, pfn in pages])))
        if self.locks:
            candidates = self.locks.unlocked(candidates)
        if self.huge:
            for block in {i & ~(HPAGE_PMD_NR - 1) for i, _ in candidates} & self.huge:
                self._split(block)  # shmem_writeout splits a large folio before it goes to swap
        entries = mm.swap.get_swap_pages(len(candidates))
        taken = candidates[: len(entries)]
        if self._pending is None:
            self._pending = {}
        indexes = [index for index, _ in taken]
        self._pending.update(zip(indexes, entries, strict=True))
        plug.writes.extend(zip(entries, [pfn for _, pfn in taken], strict=True))
        if len(taken) == len(pages):
            return [True] * len(pages)
        ok = set(indexes)
        return [index in ok for index, _ in pages]

    def writeout_failed(self, index: int) -> None:
        """The page's swap write failed: it stays, dirty; its slot is given back."""
        entry = self._pending.pop(index)  # type: ignore[union-attr]
        self.mm.swap.swap_free([entry])

    def drop(self, indexes: list[int], pfns: list[int], shadows: list[int]) -> None:
        mm = self.mm
        # Whole batches by C-level maps and dict updates: reclaim drops hundreds of pages at a time.
        entries = list(map(self._pending.pop, indexes))  # type: ignore[union-attr]
        if self.shadows is None:
            self.shadows = {}
        self.pages.update(zip(indexes, entries, strict=True))
        self.shadows.update(zip(indexes, shadows, strict=True))
        self.nr_swapped += len(indexes)
        mm.account(self.account_items, pfns, -1)
        mm.charges.to_swap(pfns, entries)
        mm.free_pages(pfns)
