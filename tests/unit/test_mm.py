"""The page allocator and address spaces, without FUSE: frames, watermarks, and file pages against a model."""

from __future__ import annotations

import errno
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rinuxfs.errors import KernelError
from rinuxfs.hw.ram import PAGE_SIZE
from rinuxfs.mm.buddy import BuddyAllocator
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.filemap import AddressSpace
from rinuxfs.mm.memmap import BadPageState
from rinuxfs.mm.types import PhysAddr, va

SHMEM = ("nr_shmem", "nr_file_pages", "nr_inactive_anon")


class Quota:
    def __init__(self, pages: int) -> None:
        self.limit, self.used = pages, 0

    def charge(self, pages: int) -> None:
        if self.used + pages > self.limit:
            raise KernelError(errno.ENOSPC)
        self.used += pages

    def uncharge(self, pages: int) -> None:
        self.used -= pages


@pytest.fixture(scope="module")
def mm() -> MemoryManager:
    return MemoryManager(64 << 20, 2)


def test_zones_of_a_small_machine() -> None:
    mm = MemoryManager(256 << 20, 2)
    a = mm.allocator
    dma, dma32, normal, movable, device = a.nodes[0].zones
    # As on a 256M x86-64 VM: PFN 0 and the 640K-1M hole are not RAM, the first MiB is reserved.
    assert (dma.start_pfn, dma.spanned, dma.present, dma.managed) == (1, 4095, 3998, 3840)
    assert (dma32.start_pfn, dma32.spanned, dma32.present) == (4096, 65536 - 4096, 65536 - 4096)
    assert not normal.populated and not movable.populated and not device.populated
    assert a.totalram_pages == sum(z.managed for z in a.zones()) == mm.meminfo()["MemTotal"] // 4
    assert 0 < dma.watermark[0] < dma.watermark[1] < dma.watermark[2] < dma.watermark[3]
    assert dma.lowmem_reserve == [0, dma32.managed // 256] + [dma32.managed // 256] * 3
    assert movable.watermark == [32, 32, 32, 32] and device.watermark == [0, 0, 0, 0]
    mm.close()


def _expected_watermarks(managed: list[int], min_free_kbytes: int, scale: int = 10) -> list[list[int]]:
    """mm.md §2.2, written out from the reference rather than from the code under test."""
    pages_min = min_free_kbytes >> 2
    lowmem = sum(managed)
    out = []
    for m in managed:
        share = pages_min * m // lowmem
        delta = max(share // 4, m * scale // 10000)
        out.append([share, share + delta, share + 2 * delta, share + 3 * delta])
    return out


def test_watermarks_and_lowmem_reserve_match_a_real_6_18_zoneinfo() -> None:
    """samples/mm-capture: min_free_kbytes 67584 over DMA/DMA32/Normal managed 3840/772915/425984."""
    mm = MemoryManager(8 << 30, 2)
    a = mm.allocator
    zones = a.nodes[0].zones
    for zone, managed in zip(zones, (3840, 772915, 425984), strict=False):
        zone.managed = managed
    a.min_free_kbytes = 67584
    a.setup_watermarks()
    assert [z.watermark for z in zones[:3]] == [[53, 66, 79, 92], [10857, 13571, 16285, 18999],
                                                [5984, 7480, 8976, 10472]]
    assert zones[0].lowmem_reserve == [0, 3019, 4683, 4683, 4683]
    assert zones[1].lowmem_reserve == [0, 0, 1664, 1664, 1664]
    assert zones[2].lowmem_reserve == [0, 0, 0, 0, 0]
    mm.close()


@pytest.mark.parametrize("mem", [16 << 20, 64 << 20, 256 << 20, 2 << 30, 8 << 30, 1 << 40])
def test_watermarks_follow_the_formula_at_any_size(mem: int) -> None:
    mm = MemoryManager(mem, 2)
    a = mm.allocator
    zones = [z for z in a.zones() if z.populated]
    assert [z.watermark for z in zones] == _expected_watermarks([z.managed for z in zones], a.min_free_kbytes)
    # min_free_kbytes: the larger of sqrt(16 * lowmem kB) and khugepaged's recommendation, within [128, 262144].
    managed = [z.managed for z in zones]
    root = max(128, min(262144, math.isqrt(sum(managed) * 4 * 16)))
    free_buffer = sum(m - w[2] for m, w in zip(managed, _expected_watermarks(managed, root), strict=True))
    recommended = min(512 * len(zones) * 11, free_buffer // 20) * 4
    assert a.min_free_kbytes == max(root, recommended)
    for zone in zones:
        above = 0
        for j in range(zone.idx + 1, 5):
            above += a.nodes[0].zones[j].managed
            ratio = (256, 256, 32, 0, 0)[zone.idx]
            assert zone.lowmem_reserve[j] == (above // ratio if ratio else 0)
    mm.close()


def test_boot_of_a_64_tib_machine_costs_little() -> None:
    mm = MemoryManager(64 << 40, 4)
    a = mm.allocator
    assert a.totalram_pages > (62 << 40) // PAGE_SIZE  # less the memmap: 64 bytes a frame
    # Free memory is a handful of extents and blocks, struct pages exist for the kernel's own pages only.
    assert sum(len(e.starts) for z in a.zones() for e in z.buddy.top) < 16
    assert mm.memmap.nbytes() < 16 << 20
    assert mm.meminfo()["DirectMap1G"] == (64 << 30) - (1 << 20)
    mm.close()


def test_allocation_prefers_high_zones_and_is_contiguous() -> None:
    mm = MemoryManager(64 << 20, 1)
    a = mm.allocator
    pfns = mm.alloc_pages(100)
    assert all(a.zone_of(p).name == "DMA32" for p in pfns)
    assert pfns == list(range(pfns[0], pfns[0] + 100)), "consecutive allocations are physically contiguous"
    free_before = a.nr_free_pages
    mm.free_pages(pfns)
    assert a.nr_free_pages == free_before + 100
    mm.close()


def test_allocator_keeps_the_min_watermark_and_says_enomem() -> None:
    mm = MemoryManager(32 << 20, 1)
    a = mm.allocator
    zones = a.populated_zones()
    floor = sum(z.watermark[0] + z.lowmem_reserve[3] for z in zones)
    with pytest.raises(KernelError) as e:
        mm.alloc_pages(a.nr_free_pages)
    assert e.value.errno == errno.ENOMEM
    got = mm.alloc_pages(a.nr_free_pages - floor)
    assert a.nr_free_pages == floor
    with pytest.raises(KernelError):
        mm.alloc_pages(1)
    mm.free_pages(got)
    mm.close()


def test_double_free_is_a_bad_page_state() -> None:
    mm = MemoryManager(32 << 20, 1)
    pfns = mm.alloc_pages(3)
    mm.free_pages(pfns)
    with pytest.raises(BadPageState):
        mm.free_pages(pfns[:1])
    mm.close()


def test_numa_allocations_prefer_the_local_node_and_count_misses() -> None:
    cpu = [0]
    mm = MemoryManager(256 << 20, 2, nr_nodes=2, current_cpu=lambda: cpu[0])
    a = mm.allocator
    n0, n1 = a.nodes
    assert n0.cpus == {0} and n1.cpus == {1}
    cpu[0] = 1
    pfns = mm.alloc_pages(10)
    assert all(mm.node_of(p) == 1 for p in pfns)
    hit = sum(z.stat["numa_hit"] for z in n1.zones)
    assert hit >= 10 and sum(z.stat["numa_local"] for z in n1.zones) >= 10
    # Node 1 full: the next allocation falls back to node 0 and is a miss there, foreign on node 1.
    rest = mm.alloc_pages(n1.nr_free - sum(z.watermark[1] for z in n1.zones if z.populated))
    spill = mm.alloc_pages(50)
    assert all(mm.node_of(p) == 0 for p in spill)
    assert sum(z.stat["numa_miss"] for z in n0.zones) == 50
    assert sum(z.stat["numa_foreign"] for z in n1.zones) == 50
    assert sum(z.stat["numa_other"] for z in n0.zones) == 50
    mm.free_pages(pfns + rest + spill)
    mm.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3000), st.integers(0, 10**6)), max_size=40))
def test_buddy_never_loses_or_double_hands_a_frame(ops: list[tuple[bool, int, int]]) -> None:
    """Random allocations and frees: frames held are disjoint, counts add up, freeing all restores boot state.

    The free blocks come back the same per order; which migrate type's list holds them may differ, because a
    fallback allocation claims the pageblocks it steals from, as Linux's does.
    """
    mm = _shared_mm()
    a = mm.allocator

    def blocks() -> list[tuple[int, list[int]]]:
        return [(z.nr_free, [sum(col) for col in zip(*z.buddy.counts(), strict=True)]) for z in a.zones()]

    before = blocks()
    held: list[list[int]] = []
    owned: set[int] = set()
    try:
        for alloc, n, pick in ops:
            if alloc or not held:
                try:
                    pfns = mm.alloc_pages(n)
                except KernelError:
                    continue
                assert len(pfns) == n and owned.isdisjoint(pfns)
                owned.update(pfns)
                held.append(pfns)
            else:
                pfns = held.pop(pick % len(held))
                owned.difference_update(pfns)
                mm.free_pages(pfns)
            assert a.nr_free_pages + len(owned) == sum(f for f, _ in before)
            assert sum(c << o for z in a.zones() for row in z.buddy.counts() for o, c in enumerate(row)) == \
                a.nr_free_pages
    finally:
        for pfns in held:
            mm.free_pages(pfns)
    assert blocks() == before


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2000), min_size=1, max_size=300, unique=True))
def test_buddy_merges_back_whatever_order_frames_return_in(order: list[int]) -> None:
    buddy = BuddyAllocator(0, 4096)
    buddy.give_run(0, 4096)
    initial = buddy.counts()
    pfns = [pfn for pfn, n in buddy.take_bulk(2048) for pfn in range(pfn, pfn + n)]
    assert sorted(pfns) == list(range(len(pfns))) and len(pfns) == 2048
    returned = [pfns[i] for i in order if i < len(pfns)]
    for pfn in returned:
        buddy.give(pfn, 0)
    for pfn in sorted(set(pfns) - set(returned)):
        buddy.give(pfn, 0)
    assert buddy.counts() == initial and buddy.nr_free == 4096


def test_split_and_merge_by_hand() -> None:
    buddy = BuddyAllocator(0, 1024)
    buddy.give_run(0, 1024)
    assert buddy.counts()[1] == [0] * 10 + [1]
    pfn = buddy.take(0)
    assert pfn == 0
    # expand(): the halves 1, 2-3, 4-7, … 512-1023 are left, one block of each order below 10.
    assert buddy.counts()[1] == [1] * 10 + [0]
    assert buddy.give(pfn, 0) == (0, 10)
    assert buddy.counts()[1] == [0] * 10 + [1]


def test_hugetlb_pool_grows_shrinks_and_keeps_surplus_pages_in_use() -> None:
    mm = MemoryManager(256 << 20, 2)
    pools = mm.hugetlb
    h = pools.default
    free = mm.allocator.nr_free_pages
    pools.set_max_huge_pages(h, 10)
    assert (h.nr_huge_pages, h.free_huge_pages) == (10, 10)
    assert mm.allocator.nr_free_pages == free - 10 * 512
    assert mm.meminfo()["Hugetlb"] == 10 * 2048 and mm.meminfo()["HugePages_Total"] == 10
    used = [pools.alloc_huge_page(h, 0) for _ in range(4)]
    assert all(p is not None and p % 512 == 0 for p in used)
    pools.set_max_huge_pages(h, 1)  # below use: 4 stay, as surplus beyond the 1 asked for
    assert (h.nr_huge_pages, h.free_huge_pages, h.surplus_huge_pages) == (4, 0, 3)
    for pfn in used:
        pools.free_huge_page(h, pfn, 0)  # type: ignore[arg-type]
    assert (h.nr_huge_pages, h.free_huge_pages, h.surplus_huge_pages) == (1, 1, 0)
    pools.set_max_huge_pages(h, 0)
    assert mm.allocator.nr_free_pages == free and mm.meminfo()["Hugetlb"] == 0
    assert pools.events["htlb_buddy_alloc_success"] == 10
    mm.close()


def test_gigantic_pages_come_from_contiguous_free_memory_and_demote() -> None:
    mm = MemoryManager(4 << 30, 2)
    pools = mm.hugetlb
    g = pools.hstates[1]
    pools.set_max_huge_pages(g, 2)
    assert g.nr_huge_pages == 2 and all(p % (1 << 18) == 0 for p in g.free_lists[0])
    assert pools.demote(g, 1) == 1
    assert g.nr_huge_pages == 1 and pools.default.nr_huge_pages == 512
    assert mm.meminfo()["Hugetlb"] == (1 << 20) + 512 * 2048
    mm.close()


def test_direct_map_translates_through_real_page_tables() -> None:
    mm = MemoryManager(3 << 30, 1)
    dm = mm.direct_map
    for phys in (0, 0x9F123, 1 << 20, (2 << 20) + 5, (1 << 30) + 4097, (3 << 30) - 1):
        assert dm.translate(va(PhysAddr(phys))) == phys
    assert dm.translate(va(PhysAddr(3 << 30))) is None
    info = mm.meminfo()
    assert (info["DirectMap4k"], info["DirectMap2M"], info["DirectMap1G"]) == (2048, 1022 * 1024, 2 << 20)
    mm.close()


def test_meminfo_is_consistent(mm: MemoryManager) -> None:
    info = mm.meminfo()
    assert info["MemAvailable"] <= info["MemTotal"]
    assert info["Slab"] == info["SReclaimable"] + info["SUnreclaim"]
    assert info["MemTotal"] == mm.allocator.totalram_pages * 4
    assert info["MemTotal"] < 64 << 10, "the kernel reserves part of RAM"


def test_file_pages_are_counted_and_given_back(mm: MemoryManager) -> None:
    space = AddressSpace(mm, Quota(10_000), SHMEM)
    free = mm.allocator.nr_free_pages
    space.write(0, b"x" * (4 * PAGE_SIZE + 1))
    assert space.nrpages == 5
    assert mm.allocator.nr_free_pages == free - 5
    assert mm.meminfo()["Shmem"] >= 5 * 4
    space.release()
    assert mm.allocator.nr_free_pages == free


def test_quota_refusal_changes_nothing(mm: MemoryManager) -> None:
    quota = Quota(2)
    space = AddressSpace(mm, quota, SHMEM)
    free = mm.allocator.nr_free_pages
    with pytest.raises(KernelError) as e:
        space.write(0, b"y" * (3 * PAGE_SIZE))
    assert e.value.errno == errno.ENOSPC
    assert space.nrpages == 0 and quota.used == 0 and mm.allocator.nr_free_pages == free


def test_huge_offsets_allocate_only_what_is_touched(mm: MemoryManager) -> None:
    space = AddressSpace(mm, Quota(10), SHMEM)
    space.write(1 << 50, b"end")
    assert space.nrpages == 1
    assert space.read((1 << 50) - 2, 5) == b"\0\0end"
    space.truncate(10)
    assert space.nrpages == 0
    space.release()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 6 * PAGE_SIZE), st.binary(min_size=1, max_size=3 * PAGE_SIZE)),
        st.tuples(st.just("truncate"), st.integers(0, 8 * PAGE_SIZE), st.just(b"")),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_address_space_matches_a_bytearray(operations: list[tuple[str, int, bytes]]) -> None:
    """Any sequence of writes and truncates reads back like a plain byte array, holes as zeros."""
    mm = _shared_mm()
    space = AddressSpace(mm, Quota(1000), SHMEM)
    model = bytearray()
    try:
        for op, offset, data in operations:
            if op == "write":
                if len(model) < offset:
                    model.extend(bytes(offset - len(model)))
                model[offset : offset + len(data)] = data
                space.write(offset, data)
            else:
                del model[offset:]
                model.extend(bytes(offset - len(model)))
                space.truncate(offset)
            assert space.read(0, len(model)) == bytes(model)
            assert all(index * PAGE_SIZE < max(len(model), 1) for index in space.pages)
    finally:
        space.release()


_MM: list[MemoryManager] = []


def _shared_mm() -> MemoryManager:
    if not _MM:
        _MM.append(MemoryManager(32 << 20, 1))
    return _MM[0]


def test_free_page_reporting_hands_back_only_what_stayed_free() -> None:
    mm = MemoryManager(64 << 20, 1)
    handed: list[tuple[int, int]] = []
    clock = [100.0]
    reporting = mm.page_reporting
    reporting._discard = lambda pfn, n: handed.append((pfn, n))  # what would go to madvise
    reporting._clock = lambda: clock[0]
    reporting.running = True  # as the reporter task does: frees are held for the next report
    a = mm.alloc_block(10)
    b = mm.alloc_block(9)
    assert a is not None and b is not None
    mm.free_block(a, 10)
    mm.free_block(b, 9)
    assert handed == [] and reporting.next_due() == 102.0
    again = mm.alloc_block(10)  # the hottest block is handed out again before the report
    assert again == a
    clock[0] = 101.9
    assert reporting.report() == 0 and handed == [], "nothing has stayed free 2 s yet"
    clock[0] = 102.0
    reported = reporting.report()
    assert handed and all(pfn >> 9 == b >> 9 for pfn, _ in handed) and reported == 512
    handed.clear()
    assert reporting.report() == 0 and handed == []  # each free is reported once
    assert reporting.next_due() is None
    mm.free_block(again, 10)
    clock[0] = 103.0
    assert reporting.report() == 0, "freed 1 s ago: kept for a rewrite that may come at once"
    clock[0] = 104.0
    reporting.report()
    assert handed == [(again, 1024)]


def test_free_page_reporting_reports_a_budget_per_pass_highest_first() -> None:
    mm = MemoryManager(256 << 20, 1)
    handed: list[tuple[int, int]] = []
    reporting = mm.page_reporting
    reporting._discard = lambda pfn, n: handed.append((pfn, n))
    reporting.running = True
    blocks = [mm.alloc_block(9) for _ in range(100)]
    assert all(b is not None for b in blocks)
    for b in blocks:
        mm.free_block(b, 9)  # type: ignore[arg-type]
    free_blocks = mm.allocator.nr_free_pages >> 9
    budget = -(-free_blocks // (32 * 16)) * 32
    assert budget < 100
    reporting._clock = lambda: time.monotonic() + 2.0  # every block has stayed free 2 s
    assert reporting.report() == budget * 512
    first = sorted(pfn for pfn, n in handed for pfn in range(pfn, pfn + n, 512))
    assert min(first) > max(sorted(blocks)[: 100 - budget]), "the highest blocks go first"  # type: ignore[type-var]
    while reporting.report():
        pass
    assert sum(n for _, n in handed) == 100 * 512  # every block once, over several passes
    assert reporting.report(everything=True) == 0
