"""The swap cache and swap-in (mm/swap_state.c): bringing swapped-out pages back, with readahead.

Contract:
- `swapin(entries)` returns a frame holding each entry's page: one already in the swap cache
  (read ahead earlier: a swap_ra_hit), else read from the device. Pages read for the request
  itself leave the swap cache at once, as shmem_swapin_folio takes them; the slots around them
  (2^page-cluster slots, aligned, as swap_cluster_readahead reads) that are in use and not cached
  yet are read in the same batch into new swap-cache pages (swap_ra), which wait on the anon LRU
  for their mapping to ask for them, or for reclaim to drop them (they are clean: nothing to
  write). A failed read raises EIO and leaves every slot as it was.
- `take_many(entries)` hands cached pages to their mapping (they leave the cache, SWAP_HAS_CACHE
  clears); `forget_many(entries)` drops the cached pages of slots being freed.
- The cache is a Reclaimable mapping of its own: struct pages of cached pages name it, with the
  swap entry as their index, so reclaim finds and drops them like any clean cache page.
"""

from __future__ import annotations

import operator
import time
from collections import Counter
from itertools import compress, repeat
from typing import TYPE_CHECKING

from rinuxfs.mm.page_io import swap_readpages
from rinuxfs.mm.swapfile import SWAP_HAS_CACHE, SWAP_MAP_BAD, SwapEntry, swp_offset

if TYPE_CHECKING:
    from rinuxfs.mm.core import MemoryManager
    from rinuxfs.printk import KernelLog

SWAP_CACHE_ITEMS = ("nr_swapcached", "nr_file_pages")


class SwapCache:
    def __init__(self, mm: MemoryManager, log: KernelLog) -> None:
        self.mm = mm
        self.log = log
        self.pages = mm.swap.cache  # entry -> pfn
        self.mapping_id = mm.register_mapping(self)

    # --- swap-in -------------------------------------------------------------------------

    def swapin(self, entries: list[SwapEntry]) -> list[int]:
        mm = self.mm
        hit = list(map(self.pages.__contains__, entries)) if self.pages else []
        if any(hit):
            cached = list(compress(entries, hit))
            wanted = list(compress(entries, map(operator.not_, hit)))
        else:  # nothing read ahead for this request (a sequential read asks for whole windows)
            cached, wanted = [], entries
        mm.events["swap_ra_hit"] += len(cached)
        ahead = self._readahead_window(wanted, set(entries))
        if wanted or ahead:
            fresh = mm.alloc_pages(len(wanted) + len(ahead))
            start = time.monotonic()
            try:
                swap_readpages(mm.swap, list(zip(wanted + ahead, fresh, strict=True)), self.log, mm.events)
            except BaseException:
                mm.free_pages(fresh)
                raise
            finally:
                if mm.on_stall is not None:  # a refault read is a memory stall and an I/O one (psi_memstall)
                    stalled = time.monotonic() - start
                    mm.on_stall("memory", stalled)
                    mm.on_stall("io", stalled)
            if ahead:
                self._insert(ahead, fresh[len(wanted):])
                mm.events["swap_ra"] += len(ahead)
            if not cached:  # every page read for the request, in its order
                return fresh[: len(wanted)]
            by_entry = dict(zip(wanted, fresh[: len(wanted)], strict=True))
        else:
            by_entry = {}
        if cached:
            by_entry.update(zip(cached, self.take_many(cached), strict=True))
        return [by_entry[e] for e in entries]

    def _readahead_window(self, wanted: list[SwapEntry], asked: set[SwapEntry]) -> list[SwapEntry]:
        """The in-use, uncached slots of the aligned 2^page-cluster windows around the wanted ones."""
        cluster = 1 << self.mm.tunables.page_cluster
        if cluster <= 1 or not wanted:
            return []
        # Windows by C-level maps and counts over the entries themselves (the offset is their low
        # bits): a request brings hundreds of entries, and a window it asks for whole (a
        # sequential read) has nothing to read ahead.
        window_of = repeat(~(cluster - 1))
        covered = Counter(map(operator.and_, asked, window_of))
        ahead: dict[SwapEntry, None] = {}
        for start in sorted(set(map(operator.and_, wanted, window_of))):
            if covered[start] == cluster:
                continue
            area = self.mm.swap.area(start)
            end = min(start + cluster, start - swp_offset(start) + area.maxpages)
            for entry in sorted(set(range(start, end)) - asked):
                if entry in self.pages:
                    continue
                count = area.count(swp_offset(entry))
                if count and count != SWAP_MAP_BAD and not count & SWAP_HAS_CACHE:
                    ahead[entry] = None
        return list(ahead)

    def _insert(self, entries: list[SwapEntry], pfns: list[int]) -> None:
        mm = self.mm
        for e, pfn in zip(entries, pfns, strict=True):
            self.pages[e] = pfn
            mm.swap.area(e).set_flag(swp_offset(e), SWAP_HAS_CACHE, True)
        mm.account(SWAP_CACHE_ITEMS, pfns)
        mm.memmap.set_owner(pfns, self.mapping_id, entries)
        mm.lru_add(pfns, anon=True)

    def take_many(self, entries: list[SwapEntry]) -> list[int]:
        """Cached pages leave the cache for their mapping: their frames, in order. They leave the
        LRU too: the mapping adds them back as its own."""
        mm = self.mm
        pfns = list(map(self.pages.pop, entries))
        for e in entries:
            mm.swap.area(e).set_flag(swp_offset(e), SWAP_HAS_CACHE, False)
        mm.account(SWAP_CACHE_ITEMS, pfns, -1)
        mm.lru_remove(pfns)
        return pfns

    def forget_many(self, entries: list[SwapEntry]) -> None:
        """The slots are being freed: their cached pages, if any, go."""
        if not self.pages:
            return
        cached = [e for e in entries if e in self.pages]
        if cached:
            self.mm.free_pages(self.take_many(cached))

    # --- reclaim -------------------------------------------------------------------------

    def writeout_failed(self, index: int) -> None:
        """Never called: swap-cache pages are clean."""

    def pageout(self, pages: list[tuple[int, int]], plug: object = None) -> list[bool]:
        # Clean copies of what the slots hold: droppable as they are.
        return [index in self.pages for index, _ in pages]

    def drop(self, indexes: list[int], pfns: list[int], shadows: list[int]) -> None:
        mm = self.mm
        gone = []
        for entry, pfn in zip(indexes, pfns, strict=True):
            if self.pages.get(entry) == pfn:
                del self.pages[entry]
                mm.swap.area(entry).set_flag(swp_offset(entry), SWAP_HAS_CACHE, False)
                gone.append(pfn)
        mm.account(SWAP_CACHE_ITEMS, gone, -1)
        mm.free_pages(gone)
