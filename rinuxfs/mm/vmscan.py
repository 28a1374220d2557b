"""Reclaim (mm/vmscan.c): freeing cache pages when memory runs low, by kswapd and by the allocating request.

Contract:
- `shrink_node(nid, nr, who)` frees up to about `nr` pages of a node: it splits the work between
  the anon lists (tmpfs pages, freed by writing them to swap) and the file lists (block-device
  cache, freed by dropping clean pages and writing dirty ones first) as get_scan_count does with
  vm.swappiness, scans at rising priority (DEF_PRIORITY 12 down to 0) in batches of
  SWAP_CLUSTER_MAX, and returns how many pages it freed. `who` is "kswapd" or "direct": the
  pgscan_/pgsteal_ counters are kept apart as Linux keeps them.
- A page is freed by its owner, the mapping its struct page names: `pageout(pages, plug)` makes a
  batch freeable (writes dirty block-cache pages back; gives tmpfs pages a swap slot and queues
  their write on the plug) and says which can go; once the plug's writes went out together,
  `drop(indexes, pfns, shadows)` removes the pages whose write completed, each leaving the shadow the LRU gave it
  at eviction, and `writeout_failed(index)` tells the owner of a page whose write failed. A page
  the owner keeps (pinned by the request in progress, dirty and not writable, no swap slot, a
  write error) goes back on its list.
- `kswapd(nid)` is node nid's kswapd: a task in the kernel's nursery that sleeps until an
  allocation wakes it (a zone below its low watermark), then reclaims in SWAP_CLUSTER_MAX batches
  until the node is balanced (every populated zone above its high watermark), aiming each pass at
  the high watermarks (kswapd_shrink_node) and yielding between passes, and gives up after
  MAX_RECLAIM_RETRIES fruitless passes (all_unreclaimable).
- `drop_caches(mode)`: vm.drop_caches (1 page cache, 2 slab, 3 both).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Protocol

import trio

from rinuxfs.mm.lru import (
    DEF_PRIORITY,
    LRU_ACTIVE_ANON,
    LRU_ACTIVE_FILE,
    LRU_INACTIVE_ANON,
    LRU_INACTIVE_FILE,
    SWAP_CLUSTER_MAX,
)
from rinuxfs.mm.page_alloc import WMARK_HIGH
from rinuxfs.mm.page_io import swap_writepages
from rinuxfs.mm.swapfile import SwapEntry

if TYPE_CHECKING:
    from rinuxfs.mm.core import MemoryManager

MAX_RECLAIM_RETRIES = 16


class Reclaimable(Protocol):
    """A mapping whose pages sit on the LRU (tmpfs files, block-device caches, the swap cache)."""

    def pageout(self, pages: list[tuple[int, int]], plug: SwapPlug) -> list[bool]: ...

    def drop(self, indexes: list[int], pfns: list[int], shadows: list[int]) -> None: ...

    def writeout_failed(self, index: int) -> None: ...


class SwapPlug:
    """blk_plug around a reclaim pass: the swap writes of all its batches go to the device together,
    so adjacent slots merge into large requests, and a page is freed only once its write completed."""

    def __init__(self) -> None:
        self.writes: list[tuple[SwapEntry, int]] = []



class Reclaimer:
    def __init__(self, mm: MemoryManager) -> None:
        self.mm = mm
        self.wakeups: list[trio.Event | None] = [None] * len(mm.allocator.nodes)
        self.running = [False] * len(mm.allocator.nodes)
        self.kswapd_failures = [0] * len(mm.allocator.nodes)
        self.in_reclaim = False

    # --- the core loop -------------------------------------------------------------------

    def shrink_node(self, nid: int, nr_to_reclaim: int, who: str) -> int:
        if self.in_reclaim:  # reclaim's own allocations (swap I/O buffers) never recurse into it
            return 0
        self.in_reclaim = True
        try:
            return self._shrink_node(nid, nr_to_reclaim, who)
        finally:
            self.in_reclaim = False

    def _shrink_node(self, nid: int, nr_to_reclaim: int, who: str) -> int:
        mm = self.mm
        lruvec = mm.lruvecs[nid]
        plug = SwapPlug()
        pending: list[tuple[bool, Reclaimable, list[tuple[int, int]]]] = []
        planned = 0
        for priority in range(DEF_PRIORITY, -1, -1):
            may_swap = mm.swap.free_pages > 0
            sizes = lruvec.nr(LRU_INACTIVE_ANON) + lruvec.nr(LRU_ACTIVE_ANON) \
                + lruvec.nr(LRU_INACTIVE_FILE) + lruvec.nr(LRU_ACTIVE_FILE)
            if not sizes:
                break
            target = max(SWAP_CLUSTER_MAX, min(sizes >> priority, 4 * nr_to_reclaim))
            anon_n, file_n = lruvec.scan_counts(target, mm.tunables.swappiness, may_swap, priority=priority)
            if priority == 0 and may_swap:  # out of options: both kinds equally
                anon_n = file_n = target
            for anon, n in ((False, file_n), (True, anon_n)):
                while n > 0 and planned < nr_to_reclaim:
                    batch = min(SWAP_CLUSTER_MAX, n)
                    n -= batch
                    got, scanned = self._shrink_batch(nid, anon, batch, who, plug, pending)
                    planned += got
                    if not scanned:
                        break
            if planned >= nr_to_reclaim:
                break
        freed = self._finish_plug(nid, who, plug, pending)
        lruvec.snapshot_refaults()
        return freed

    def _shrink_batch(self, nid: int, anon: bool, nr: int, who: str, plug: SwapPlug,
                      pending: list[tuple[bool, Reclaimable, list[tuple[int, int]]]]) -> tuple[int, int]:
        """shrink_folio_list for one batch: (pages that will be freed, pages isolated)."""
        mm = self.mm
        lruvec = mm.lruvecs[nid]
        keys = lruvec.isolate(anon, nr)
        if not keys:
            return 0, 0
        mm.events[f"pgscan_{who}"] += len(keys)
        mappings = mm.mappings
        ids, indexes = mm.memmap.owners(keys)
        by_owner: dict[int, list[tuple[int, int]]]
        if ids.count(ids[0]) == len(ids) and ids[0] in mappings:  # the usual batch: one file's pages
            by_owner = {ids[0]: list(zip(indexes, keys, strict=True))}
        else:
            by_owner = defaultdict(list)
            orphans: list[int] = []
            for pfn, mapping_id, index in zip(keys, ids, indexes, strict=True):
                if mapping_id and mapping_id in mappings:
                    by_owner[mapping_id].append((index, pfn))
                else:
                    orphans.append(pfn)
            if orphans:  # a page whose owner is gone cannot be freed by reclaim: keep it listed
                lruvec.putback(orphans, anon)
        freeable = 0
        for mapping_id, pages in by_owner.items():
            mapping: Reclaimable = mappings[mapping_id]  # type: ignore[assignment]
            verdicts = mapping.pageout(pages, plug)
            if all(verdicts):
                go = pages
            else:
                lruvec.putback([pfn for (_, pfn), ok in zip(pages, verdicts, strict=True) if not ok], anon,
                               activate=True)
                go = [page for page, ok in zip(pages, verdicts, strict=True) if ok]
            if go:
                pending.append((anon, mapping, go))
                freeable += len(go)
        return freeable, len(keys)

    def _finish_plug(self, nid: int, who: str, plug: SwapPlug,
                     pending: list[tuple[bool, Reclaimable, list[tuple[int, int]]]]) -> int:
        """blk_finish_plug: the swap writes go out together; then the pages whose write completed are freed."""
        mm = self.mm
        lruvec = mm.lruvecs[nid]
        failed_pfns: set[int] = set()
        if plug.writes:
            failed = set(swap_writepages(mm.swap, plug.writes, mm.log, mm.events))
            if failed:
                failed_pfns = {pfn for entry, pfn in plug.writes if entry in failed}
            lruvec.note_cost(True, len(plug.writes), 0)
        # Consecutive batches of one mapping are freed together (same order, one call per run of them).
        groups: list[tuple[bool, Reclaimable, list[tuple[int, int]]]] = []
        for anon, mapping, pages in pending:
            if groups and groups[-1][0] == anon and groups[-1][1] is mapping:
                groups[-1][2].extend(pages)
            else:
                groups.append((anon, mapping, list(pages)))
        freed = 0
        for anon, mapping, pages in groups:
            if not failed_pfns:
                ok, bad = pages, []
            else:
                ok = [p for p in pages if p[1] not in failed_pfns]
                bad = [p for p in pages if p[1] in failed_pfns]
            for index, _ in bad:
                mapping.writeout_failed(index)
            if bad:  # a write error leaves the page in memory, dirty (end_swap_bio_write)
                lruvec.putback([pfn for _, pfn in bad], anon, activate=True)
            if ok:
                indexes, pfns = map(list, zip(*ok, strict=True))
                mapping.drop(indexes, pfns, lruvec.evict_many(pfns, anon))
                freed += len(ok)
        mm.events[f"pgsteal_{who}"] += freed
        return freed

    # --- who reclaims --------------------------------------------------------------------

    def balanced(self, nid: int) -> bool:
        """pgdat_balanced: every populated zone of the node at or above its high watermark."""
        zones = [z for z in self.mm.allocator.nodes[nid].zones if z.populated]
        return all(z.nr_free >= z.watermark[WMARK_HIGH] for z in zones)

    def _kswapd_target(self, nid: int) -> int:
        """kswapd_shrink_node: what the node lacks to its high watermarks, at least SWAP_CLUSTER_MAX."""
        zones = self.mm.allocator.nodes[nid].zones
        return max(SWAP_CLUSTER_MAX, sum(max(0, z.watermark[WMARK_HIGH] - z.nr_free) for z in zones if z.populated))

    def wakeup_kswapd(self, nid: int) -> None:
        """A zone of node nid fell below its low watermark: kswapd, or reclaim inline when none runs."""
        event = self.wakeups[nid]
        if self.running[nid] and event is not None:
            event.set()
            return
        if not self.in_reclaim:
            self.balance_node(nid)

    def balance_node(self, nid: int) -> int:
        """One kswapd run, inline: reclaim to the high watermarks of the node (balance_pgdat)."""
        mm = self.mm
        mm.events["pageoutrun"] += 1
        freed = 0
        for _ in range(MAX_RECLAIM_RETRIES):
            if self.balanced(nid):
                break
            got = self.shrink_node(nid, self._kswapd_target(nid), "kswapd")
            freed += got
            if not got:
                break
        return freed

    async def kswapd(self, nid: int) -> None:
        self.running[nid] = True
        try:
            while True:
                event = self.wakeups[nid] = trio.Event()
                await event.wait()
                self.mm.events["pageoutrun"] += 1
                fruitless = 0
                while not self.balanced(nid) and fruitless < MAX_RECLAIM_RETRIES:
                    got = self.shrink_node(nid, self._kswapd_target(nid), "kswapd")
                    fruitless = 0 if got else fruitless + 1
                    await trio.sleep(0)  # let the requests that woke us go on between batches
                self.kswapd_failures[nid] = fruitless
        finally:
            self.running[nid] = False

    def try_to_free_pages(self, nr: int, nids: list[int]) -> int:
        """Direct reclaim by the allocating request, node by node down its zonelist's nodes."""
        freed = 0
        for nid in nids:
            freed += self.shrink_node(nid, nr - freed, "direct")
            if freed >= nr:
                break
        return freed

    # --- vm.drop_caches ------------------------------------------------------------------

    def drop_caches(self, mode: int) -> int:
        """Drop every clean page-cache page (mode & 1) and count a slab shrink (mode & 2)."""
        freed = 0
        if mode & 1:
            self.mm.events["drop_pagecache"] += 1
            for mapping in list(self.mm.mappings.values()):
                drop = getattr(mapping, "drop_clean", None)
                if drop is not None:
                    freed += drop()
        if mode & 2:
            self.mm.events["drop_slab"] += 1
        return freed
