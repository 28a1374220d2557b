"""The hugetlb pools: persistent and surplus huge pages of 2 MiB and 1 GiB, per node (mm/hugetlb.c).

Contract:
- `set_max_huge_pages(h, count, nid=None)` grows or shrinks a pool as writing
  nr_hugepages does: growing allocates naturally aligned blocks from the buddy
  allocator, interleaved over the nodes that have memory (or on `nid` only)
  and stops quietly when memory runs out; shrinking frees free huge pages and
  turns pages still in use into surplus pages, which go back to the buddy
  allocator when they are freed.
- `alloc_huge_page(h, nid)` takes a huge page for use (a free one, else a
  surplus page while nr_overcommit_hugepages allows); `free_huge_page`
  returns it. Reserved pages (resv_hugepages) are promised to mappings: no
  file system here maps huge pages yet, so nothing reserves any.
- Huge pages are never reclaimed or swapped; they are allocated memory to the
  buddy allocator (MemFree), and meminfo's HugePages_*/Hugetlb count them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rinuxfs.hw.ram import PAGE_SHIFT


@dataclass(eq=False)
class HState:
    """struct hstate: one huge page size."""

    order: int
    nr_nodes: int
    nr_huge_pages: int = 0
    free_huge_pages: int = 0
    resv_huge_pages: int = 0
    surplus_huge_pages: int = 0
    nr_overcommit_huge_pages: int = 0
    nr_huge_pages_node: list[int] = field(default_factory=list)
    free_huge_pages_node: list[int] = field(default_factory=list)
    surplus_huge_pages_node: list[int] = field(default_factory=list)
    free_lists: list[list[int]] = field(default_factory=list)  # per node: PFNs of free huge pages
    next_nid_to_alloc: int = 0
    next_nid_to_free: int = 0

    def __post_init__(self) -> None:
        n = self.nr_nodes
        self.nr_huge_pages_node = [0] * n
        self.free_huge_pages_node = [0] * n
        self.surplus_huge_pages_node = [0] * n
        self.free_lists = [[] for _ in range(n)]

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    @property
    def size_kb(self) -> int:
        return 1 << (self.order + PAGE_SHIFT - 10)

    @property
    def name(self) -> str:
        return f"hugepages-{self.size_kb}kB"

    @property
    def persistent(self) -> int:
        return self.nr_huge_pages - self.surplus_huge_pages


AllocBlock = Callable[[int, int], int | None]  # (order, nid) -> PFN of a block on that node, or None
FreeBlock = Callable[[int, int], None]  # (pfn, order)


class HugetlbPools:
    def __init__(self, nr_nodes: int, nodes_with_memory: list[int], alloc_block: AllocBlock,
                 free_block: FreeBlock) -> None:
        self.hstates = [HState(9, nr_nodes), HState(18, nr_nodes)]  # 2 MiB (the default size) and 1 GiB
        self.default = self.hstates[0]
        self.nodes = nodes_with_memory
        self._alloc_block = alloc_block
        self._free_block = free_block
        self.events = {"htlb_buddy_alloc_success": 0, "htlb_buddy_alloc_fail": 0}

    def total_pages(self) -> int:
        """Base pages held by all pools (NR_HUGETLB)."""
        return sum(h.nr_huge_pages * h.nr_pages for h in self.hstates)

    # --- growing and shrinking the pool -------------------------------------------------

    def _buddy_alloc(self, h: HState, nid: int) -> int | None:
        pfn = self._alloc_block(h.order, nid)
        if h.order <= 10:  # gigantic pages come from alloc_contig_range, which counts nothing
            self.events["htlb_buddy_alloc_success" if pfn is not None else "htlb_buddy_alloc_fail"] += 1
        return pfn

    def _interleave(self, h: HState, attr: str, nid: int | None) -> list[int]:
        if nid is not None:
            return [nid]
        start = getattr(h, attr)
        order = [self.nodes[(start + i) % len(self.nodes)] for i in range(len(self.nodes))]
        setattr(h, attr, (start + 1) % len(self.nodes))
        return order

    def _grow_one(self, h: HState, nid: int | None) -> bool:
        for node in self._interleave(h, "next_nid_to_alloc", nid):
            pfn = self._buddy_alloc(h, node)
            if pfn is not None:
                h.nr_huge_pages += 1
                h.nr_huge_pages_node[node] += 1
                self._enqueue(h, node, pfn)
                return True
        return False

    def _enqueue(self, h: HState, nid: int, pfn: int) -> None:
        h.free_lists[nid].append(pfn)
        h.free_huge_pages += 1
        h.free_huge_pages_node[nid] += 1

    def _shrink_one(self, h: HState, nid: int | None) -> bool:
        """Free one free huge page back to the buddy allocator."""
        for node in self._interleave(h, "next_nid_to_free", nid):
            if h.free_lists[node]:
                pfn = h.free_lists[node].pop()
                h.free_huge_pages -= 1
                h.free_huge_pages_node[node] -= 1
                h.nr_huge_pages -= 1
                h.nr_huge_pages_node[node] -= 1
                if h.surplus_huge_pages_node[node]:
                    h.surplus_huge_pages -= 1
                    h.surplus_huge_pages_node[node] -= 1
                self._free_block(pfn, h.order)
                return True
        return False

    def _adjust_surplus(self, h: HState, nid: int | None, delta: int) -> bool:
        """Turn a persistent page into a surplus one (delta +1) or back (-1)."""
        for node in self._interleave(h, "next_nid_to_alloc" if delta < 0 else "next_nid_to_free", nid):
            if delta < 0 and not h.surplus_huge_pages_node[node]:
                continue
            if delta > 0 and h.surplus_huge_pages_node[node] >= h.nr_huge_pages_node[node]:
                continue
            h.surplus_huge_pages += delta
            h.surplus_huge_pages_node[node] += delta
            return True
        return False

    def set_max_huge_pages(self, h: HState, count: int, nid: int | None = None) -> None:
        if nid is not None:
            # A node's file sets that node's share; the rest of the pool stays as it is.
            count += h.nr_huge_pages - h.nr_huge_pages_node[nid]
        while h.surplus_huge_pages and count > h.persistent:
            if not self._adjust_surplus(h, nid, -1):
                break
        while count > h.persistent:
            if not self._grow_one(h, nid):
                break
        min_count = max(count, h.resv_huge_pages + h.nr_huge_pages - h.free_huge_pages)
        while min_count < h.persistent:
            if not self._shrink_one(h, nid):
                break
        while count < h.persistent:
            if not self._adjust_surplus(h, nid, +1):
                break

    def demote(self, h: HState, count: int) -> int:
        """Split up to `count` free pages of `h` into pages of the next smaller size; how many were split."""
        smaller = next((s for s in self.hstates if s.order < h.order), None)
        if smaller is None:
            return 0
        done = 0
        for node in self.nodes:
            while done < count and h.free_lists[node] \
                    and h.free_huge_pages_node[node] > h.surplus_huge_pages_node[node]:
                pfn = h.free_lists[node].pop()
                h.free_huge_pages -= 1
                h.free_huge_pages_node[node] -= 1
                h.nr_huge_pages -= 1
                h.nr_huge_pages_node[node] -= 1
                for k in range(1 << (h.order - smaller.order)):
                    smaller.nr_huge_pages += 1
                    smaller.nr_huge_pages_node[node] += 1
                    self._enqueue(smaller, node, pfn + (k << smaller.order))
                done += 1
        return done

    # --- pages in use ------------------------------------------------------------------

    def alloc_huge_page(self, h: HState, nid: int) -> int | None:
        order = [nid] + [n for n in self.nodes if n != nid]
        for node in order:
            if h.free_lists[node] and h.free_huge_pages - h.resv_huge_pages > 0:
                pfn = h.free_lists[node].pop()
                h.free_huge_pages -= 1
                h.free_huge_pages_node[node] -= 1
                return pfn
        if h.surplus_huge_pages >= h.nr_overcommit_huge_pages:
            return None
        for node in order:
            pfn = self._buddy_alloc(h, node)
            if pfn is not None:
                h.nr_huge_pages += 1
                h.nr_huge_pages_node[node] += 1
                h.surplus_huge_pages += 1
                h.surplus_huge_pages_node[node] += 1
                return pfn
        return None

    def free_huge_page(self, h: HState, pfn: int, nid: int) -> None:
        if h.surplus_huge_pages_node[nid]:
            h.nr_huge_pages -= 1
            h.nr_huge_pages_node[nid] -= 1
            h.surplus_huge_pages -= 1
            h.surplus_huge_pages_node[nid] -= 1
            self._free_block(pfn, h.order)
        else:
            self._enqueue(h, nid, pfn)
