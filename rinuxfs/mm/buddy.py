"""The buddy allocator of one zone: free memory as blocks of 2^order frames, orders 0..MAX_PAGE_ORDER.

Contract:
- `take(order, mt)` returns the first PFN of a free block of exactly 2^order
  frames, naturally aligned, or None. It splits a larger block when it must
  (the unused halves go back on the free lists, as Linux's expand() does),
  and falls back to other migrate types as __rmqueue_fallback does, claiming
  the pageblocks it takes from.
- `take_bulk(count, mt)` hands out `count` order-0 frames as runs
  [(pfn, n), ...] of consecutive frames, using the largest blocks that fit, so
  a large request costs a few blocks, not a step per frame.
- `give(pfn, order)` returns a block and merges it with its buddy as long as
  the buddy is free and of the same order (__free_one_page). It returns the
  merged block, so the caller can hand big free blocks back to the host.
- `give_run(pfn, n)` returns any run of frames, cut into aligned blocks.
- A block is never on two lists; `nr_free` is always Σ 2^order over the lists.

Data, chosen so that cost follows use: below the top order each free block is
one dict entry (a dict per order and migrate type, newest last: it is handed
out first, as Linux's lists hand out the hottest page), plus `order_of` to
find a buddy in O(1). Top-order blocks are kept as extents [start, end) of
consecutive free top-order blocks: a never-touched 64 TiB machine is one extent
per node and zone, not sixteen million list entries. Allocation takes the
lowest top-order block, so memory fills from the bottom and a run of
allocations gets consecutive frames.

Pageblocks (2^PAGEBLOCK_ORDER frames) carry a migrate type; all start
Movable, and only the pageblocks that differ are recorded.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

MAX_PAGE_ORDER = 10  # orders 0..10: up to 4 MiB blocks (NR_PAGE_ORDERS = 11 on x86-64)
NR_PAGE_ORDERS = MAX_PAGE_ORDER + 1
PAGEBLOCK_ORDER = 9  # HPAGE_PMD_ORDER on x86-64
PAGEBLOCK_NR_PAGES = 1 << PAGEBLOCK_ORDER

MIGRATE_UNMOVABLE, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_HIGHATOMIC, MIGRATE_ISOLATE = range(5)
MIGRATE_TYPES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate")
MIGRATE_PCPTYPES = 3  # the types with per-CPU lists: unmovable, movable, reclaimable
# mm/page_alloc.c fallbacks[]: where each type looks when its own lists are empty.
FALLBACKS = {
    MIGRATE_UNMOVABLE: (MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE),
    MIGRATE_MOVABLE: (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE),
    MIGRATE_RECLAIMABLE: (MIGRATE_UNMOVABLE, MIGRATE_MOVABLE),
}
_TOP = 1 << MAX_PAGE_ORDER


class Extents:
    """Disjoint, sorted ranges [start, end) of free top-order blocks (PFNs, multiples of 2^MAX_PAGE_ORDER)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.nr_blocks = 0

    def __bool__(self) -> bool:
        return self.nr_blocks > 0

    def add(self, start: int, end: int) -> None:
        """Add free blocks [start, end), merging with the neighbours they touch."""
        self.nr_blocks += (end - start) >> MAX_PAGE_ORDER
        i = bisect_left(self.starts, start)
        if i > 0 and self.ends[i - 1] == start:
            i -= 1
            start = self.starts[i]
            del self.starts[i], self.ends[i]
        if i < len(self.starts) and self.starts[i] == end:
            end = self.ends[i]
            del self.starts[i], self.ends[i]
        self.starts.insert(i, start)
        self.ends.insert(i, end)

    def pop_lowest(self) -> int:
        start = self.starts[0]
        if self.ends[0] - start == _TOP:
            del self.starts[0], self.ends[0]
        else:
            self.starts[0] = start + _TOP
        self.nr_blocks -= 1
        return start

    def take_aligned(self, nr_blocks: int, align: int) -> int | None:
        """The lowest run of `nr_blocks` top-order blocks starting at a multiple of `align` PFNs, taken."""
        span = nr_blocks << MAX_PAGE_ORDER
        for i, (start, end) in enumerate(zip(self.starts, self.ends, strict=True)):
            first = -(-start // align) * align
            if first + span <= end:
                self._cut(i, first, first + span)
                return first
        return None

    def remove(self, start: int, end: int) -> None:
        """Take blocks [start, end), which must lie inside one extent."""
        i = bisect_right(self.starts, start) - 1
        self._cut(i, start, end)

    def _cut(self, i: int, start: int, end: int) -> None:
        lo, hi = self.starts[i], self.ends[i]
        del self.starts[i], self.ends[i]
        if end < hi:
            self.starts.insert(i, end)
            self.ends.insert(i, hi)
        if lo < start:
            self.starts.insert(i, lo)
            self.ends.insert(i, start)
        self.nr_blocks -= (end - start) >> MAX_PAGE_ORDER

    def contains(self, pfn: int) -> bool:
        i = bisect_right(self.starts, pfn) - 1
        return i >= 0 and pfn < self.ends[i]


class BuddyAllocator:
    """free_area[] of one zone, with its pageblock migrate types."""

    def __init__(self, start_pfn: int, end_pfn: int) -> None:
        self.start_pfn, self.end_pfn = start_pfn, end_pfn
        self.lists: list[list[dict[int, None]]] = [[{} for _ in MIGRATE_TYPES] for _ in range(MAX_PAGE_ORDER)]
        self.top: list[Extents] = [Extents() for _ in MIGRATE_TYPES]
        self.order_of: dict[int, int] = {}  # free block start -> order, below the top order
        self.pageblock_type: dict[int, int] = {}  # pageblock number -> type, where not Movable
        self.nr_free = 0

    # --- pageblocks ----------------------------------------------------------------------

    def migratetype(self, pfn: int) -> int:
        return self.pageblock_type.get(pfn >> PAGEBLOCK_ORDER, MIGRATE_MOVABLE)

    def set_pageblock_type(self, pfn: int, nr_pages: int, mt: int) -> None:
        for block in range(pfn >> PAGEBLOCK_ORDER, (pfn + nr_pages - 1 >> PAGEBLOCK_ORDER) + 1):
            if mt == MIGRATE_MOVABLE:
                self.pageblock_type.pop(block, None)
            else:
                self.pageblock_type[block] = mt

    def pageblock_counts(self) -> list[int]:
        """Pageblocks of each migrate type over the zone's span (pagetypeinfo's "Number of blocks type")."""
        first, last = self.start_pfn >> PAGEBLOCK_ORDER, (self.end_pfn - 1) >> PAGEBLOCK_ORDER
        counts = [0] * len(MIGRATE_TYPES)
        for block, mt in self.pageblock_type.items():
            if first <= block <= last:
                counts[mt] += 1
        counts[MIGRATE_MOVABLE] = last - first + 1 - sum(counts) if self.end_pfn > self.start_pfn else 0
        return counts

    # --- the free lists ------------------------------------------------------------------

    def _add(self, pfn: int, order: int) -> None:
        mt = self.migratetype(pfn)
        if order == MAX_PAGE_ORDER:
            self.top[mt].add(pfn, pfn + _TOP)
        else:
            self.lists[order][mt][pfn] = None
            self.order_of[pfn] = order
        self.nr_free += 1 << order

    def _del(self, pfn: int, order: int) -> None:
        del self.lists[order][self.migratetype(pfn)][pfn]
        del self.order_of[pfn]
        self.nr_free -= 1 << order

    def pageblock_free(self, pfn: int) -> bool:
        """Whether the pageblock starting at `pfn` lies, whole, in one free block (order >= PAGEBLOCK_ORDER)."""
        if self.order_of.get(pfn) == PAGEBLOCK_ORDER:
            return True
        top = pfn & ~(_TOP - 1)  # a larger free block is a top-order one: on the extents
        return any(extents.contains(top) for extents in self.top)

    def counts(self) -> list[list[int]]:
        """Free blocks per [migrate type][order] (pagetypeinfo); buddyinfo sums the types."""
        rows = []
        for mt in range(len(MIGRATE_TYPES)):
            rows.append([len(self.lists[o][mt]) for o in range(MAX_PAGE_ORDER)] + [self.top[mt].nr_blocks])
        return rows

    # --- freeing -------------------------------------------------------------------------

    def give(self, pfn: int, order: int) -> tuple[int, int]:
        """Free one block; return the block it merged into (pfn, order)."""
        while order < MAX_PAGE_ORDER:
            buddy = pfn ^ (1 << order)
            if self.order_of.get(buddy) != order:
                break
            self._del(buddy, order)
            pfn &= ~(1 << order)
            order += 1
        self._add(pfn, order)
        return pfn, order

    def give_run(self, pfn: int, n: int) -> list[tuple[int, int]]:
        """Free frames [pfn, pfn + n) as the largest aligned blocks; the merged blocks of order >= PAGEBLOCK_ORDER."""
        big: list[tuple[int, int]] = []
        end = pfn + n
        while pfn < end:
            order = min(MAX_PAGE_ORDER, (pfn & -pfn).bit_length() - 1 if pfn else MAX_PAGE_ORDER,
                        (end - pfn).bit_length() - 1)
            if order == MAX_PAGE_ORDER:
                # Whole top-order blocks never merge further: add them as extents.
                count = (end - pfn) >> MAX_PAGE_ORDER
                self._add_top_run(pfn, pfn + (count << MAX_PAGE_ORDER))
                big.append((pfn, count << MAX_PAGE_ORDER))
                pfn += count << MAX_PAGE_ORDER
                continue
            merged, morder = self.give(pfn, order)
            if morder >= PAGEBLOCK_ORDER:
                big.append((merged, 1 << morder))
            pfn += 1 << order
        return big

    def _add_top_run(self, start: int, end: int) -> None:
        """Free top-order blocks [start, end), each on the list of its first pageblock's type."""
        odd = sorted({(b << PAGEBLOCK_ORDER) & ~(_TOP - 1) for b in self.pageblock_type
                      if start <= b << PAGEBLOCK_ORDER < end})
        cursor = start
        for block in odd:
            if block > cursor:
                self.top[MIGRATE_MOVABLE].add(cursor, block)
            self.top[self.migratetype(block)].add(block, block + _TOP)
            cursor = block + _TOP
        if cursor < end:
            self.top[MIGRATE_MOVABLE].add(cursor, end)
        self.nr_free += end - start

    # --- allocating ----------------------------------------------------------------------

    def take(self, order: int, mt: int = MIGRATE_MOVABLE) -> int | None:
        pfn = self._take_smallest(order, mt)
        if pfn is None and mt in FALLBACKS:
            pfn = self._take_fallback(order, mt)
        return pfn

    def _take_smallest(self, order: int, mt: int) -> int | None:
        for current in range(order, MAX_PAGE_ORDER):
            free = self.lists[current][mt]
            if free:
                pfn, _ = free.popitem()
                del self.order_of[pfn]
                self.nr_free -= 1 << current
                self._expand(pfn, order, current)
                return pfn
        if self.top[mt]:
            pfn = self.top[mt].pop_lowest()
            self.nr_free -= _TOP
            self._expand(pfn, order, MAX_PAGE_ORDER)
            return pfn
        return None

    def _expand(self, pfn: int, low: int, high: int) -> None:
        """Put back the upper halves of a block split from order `high` down to `low`."""
        while high > low:
            high -= 1
            self._add(pfn + (1 << high), high)

    def _take_fallback(self, order: int, mt: int) -> int | None:
        """Steal from another type, largest block first, and claim its pageblocks (__rmqueue_fallback)."""
        for current in range(MAX_PAGE_ORDER, order - 1, -1):
            for other in FALLBACKS[mt]:
                if current == MAX_PAGE_ORDER:
                    if not self.top[other]:
                        continue
                    pfn = self.top[other].pop_lowest()
                    self.set_pageblock_type(pfn, _TOP, mt)
                    self.top[mt].add(pfn, pfn + _TOP)
                    return self._take_smallest(order, mt)
                if not self.lists[current][other]:
                    continue
                pfn = next(reversed(self.lists[current][other]))
                self._claim_pageblock(pfn, mt)
                return self._take_smallest(order, mt)
        return None

    def _claim_pageblock(self, pfn: int, mt: int) -> None:
        """Make the pageblock holding `pfn` of type `mt` and move its free blocks to that type's lists."""
        start = pfn & ~(PAGEBLOCK_NR_PAGES - 1)
        moving = []
        p = start
        while p < start + PAGEBLOCK_NR_PAGES:
            order = self.order_of.get(p)
            if order is None:
                p += 1
                continue
            moving.append((p, order))
            p += 1 << order
        for p, order in moving:
            self._del(p, order)
        self.set_pageblock_type(start, PAGEBLOCK_NR_PAGES, mt)
        for p, order in moving:
            self._add(p, order)

    def take_bulk(self, count: int, mt: int = MIGRATE_MOVABLE) -> list[tuple[int, int]]:
        """Up to `count` frames as runs of consecutive frames, fewer if the zone runs out.

        After the first block, the free block that starts right where the last
        one ended is taken first, so a request gets as few runs as the free
        lists allow.
        """
        runs: list[tuple[int, int]] = []
        while count > 0:
            order = min(MAX_PAGE_ORDER, count.bit_length() - 1)
            got = self._take_at(runs[-1][0] + runs[-1][1], order) if runs else None
            if got is None:
                pfn = None
                while pfn is None and order >= 0:
                    pfn = self.take(order, mt)
                    if pfn is None:
                        order -= 1
                if pfn is None:
                    break
                got = (pfn, order)
            pfn, order = got
            n = 1 << order
            if runs and runs[-1][0] + runs[-1][1] == pfn:
                runs[-1] = (runs[-1][0], runs[-1][1] + n)
            else:
                runs.append((pfn, n))
            count -= n
        return runs

    def _take_at(self, pfn: int, order: int) -> tuple[int, int] | None:
        """The free block starting at `pfn`, cut down to at most 2^order frames: (pfn, order taken), or None."""
        have = self.order_of.get(pfn)
        if have is not None:
            self._del(pfn, have)
        elif pfn & (_TOP - 1) == 0 and pfn < self.end_pfn:
            mt = self.migratetype(pfn)
            if not self.top[mt].contains(pfn):
                return None
            self.top[mt].remove(pfn, pfn + _TOP)
            self.nr_free -= _TOP
            have = MAX_PAGE_ORDER
        else:
            return None
        take = min(have, order)
        self._expand(pfn, take, have)
        return pfn, take

    def take_contig(self, nr_pages: int) -> int | None:
        """A naturally aligned run of nr_pages (a multiple of the top order, e.g. a 1 GiB page) from free extents."""
        for mt in (MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE):
            pfn = self.top[mt].take_aligned(nr_pages >> MAX_PAGE_ORDER, nr_pages)
            if pfn is not None:
                self.nr_free -= nr_pages
                return pfn
        return None
