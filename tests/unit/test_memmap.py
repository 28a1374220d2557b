"""The struct pages (mm/memmap.py): what is set for a batch of frames reads back per frame, whether
the frames come in runs, cut at section boundaries, or one by one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rinuxfs.mm.memmap import SECTION_PAGES, MemMap
from rinuxfs.mm.page_alloc import to_runs

frames = st.lists(st.integers(0, 4 * SECTION_PAGES - 1), min_size=1, max_size=300, unique=True)


@given(frames, st.integers(0, 1 << 40), st.integers(1, 1 << 20))
def test_owner_and_charge_read_back_per_frame(pfns: list[int], first_index: int, pid: int) -> None:
    memmap = MemMap()
    memmap.allocated(to_runs(pfns))
    indexes = list(range(first_index, first_index + len(pfns)))
    memmap.set_owner(pfns, 7, indexes)
    memmap.set_memcg(pfns, pid)
    assert memmap.owners(pfns) == ([7] * len(pfns), indexes)
    assert memmap.memcg(pfns) == [pid] * len(pfns)
    # Each frame on its own says the same; frames not in the batch belong to no mapping (a page's
    # index means nothing without one) and are charged to no one.
    for pfn, index in zip(pfns, indexes, strict=True):
        assert memmap.owners([pfn]) == ([7], [index]) and memmap.memcg([pfn]) == [pid]
    others = sorted(set(range(4 * SECTION_PAGES)) - set(pfns))[:50]
    memmap.allocated(to_runs(others))
    assert memmap.owners(others)[0] == [0] * len(others)
    assert memmap.memcg(others) == [0] * len(others)
    memmap.freed(to_runs(pfns))
    memmap.allocated(to_runs(pfns))
    assert memmap.memcg(pfns) == [0] * len(pfns) and memmap.owners(pfns)[0] == [0] * len(pfns)


@given(st.integers(0, 3 * SECTION_PAGES), st.integers(1, 2 * SECTION_PAGES), st.integers(0, 1 << 50),
       st.integers(1, 1 << 20))
def test_a_run_set_at_once_reads_as_set_page_by_page(pfn: int, count: int, first_index: int, pid: int) -> None:
    """set_owner_run/set_memcg_run (slices, across sections) leave what per-page stores would."""
    pfns = list(range(pfn, pfn + count))
    indexes = list(range(first_index, first_index + count))
    by_run, by_page = MemMap(), MemMap()
    for memmap in (by_run, by_page):
        memmap.allocated([(pfn, count)])
    by_run.set_owner_run(pfn, count, 9, first_index)
    by_run.set_memcg_run(pfn, count, pid)
    for p, index in zip(pfns, indexes, strict=True):
        by_page.set_owner([p], 9, [index])
        by_page.set_memcg([p], pid)
    assert by_run.owners(pfns) == by_page.owners(pfns) == ([9] * count, indexes)
    assert by_run.memcg(pfns) == by_page.memcg(pfns) == [pid] * count
    assert [by_run.owners([p]) for p in pfns[::37]] == [([9], [index]) for index in indexes[::37]]
