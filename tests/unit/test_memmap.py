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
    # Each frame on its own says the same; frames not in the batch hold nothing.
    for pfn, index in zip(pfns, indexes, strict=True):
        assert memmap.owners([pfn]) == ([7], [index]) and memmap.memcg([pfn]) == [pid]
    others = sorted(set(range(4 * SECTION_PAGES)) - set(pfns))[:50]
    memmap.allocated(to_runs(others))
    assert memmap.owners(others) == ([0] * len(others), [0] * len(others))
    assert memmap.memcg(others) == [0] * len(others)
    memmap.freed(to_runs(pfns))
    memmap.allocated(to_runs(pfns))
    assert memmap.memcg(pfns) == [0] * len(pfns) and memmap.owners(pfns)[0] == [0] * len(pfns)
