"""Swap areas and the OOM killer's arithmetic, without FUSE."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rinuxfs.errors import KernelError
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.oom_kill import OomKiller
from rinuxfs.mm.swap_header import build_swap_header
from rinuxfs.mm.swapfile import (
    SWAP_MAP_SHMEM,
    SWAPFILE_CLUSTER,
    SwapAreas,
    SwapEntry,
    is_swap_entry,
    swp_entry,
    swp_offset,
    swp_type,
)
from rinuxfs.printk import KernelLog

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@dataclass(eq=False)
class FakeDisk:
    whole: object = None


@dataclass(eq=False)
class FakeBdev:
    name: str
    size_bytes: int
    start_sect: int = 2048


def area(areas: SwapAreas, name: str, pages: int, prio: int | None = None, bad: tuple[int, ...] = ()) -> int:
    header = build_swap_header(pages * 4096, badpages=bad)
    return areas.swapon(FakeBdev(name, pages * 4096), header, prio, True).type  # type: ignore[arg-type]


def test_slots_come_in_order_and_the_header_and_bad_pages_never() -> None:
    areas = SwapAreas()
    area(areas, "a", 1000, bad=(5, 6))
    got = areas.get_swap_pages(10)
    assert [swp_offset(e) for e in got] == [1, 2, 3, 4, 7, 8, 9, 10, 11, 12]
    assert areas.total_pages == 1000 - 1 - 2 and areas.free_pages == areas.total_pages - 10
    info = areas.active()[0]
    assert info.count(1) == SWAP_MAP_SHMEM and info.count(0) == 0x3F and info.count(5) == 0x3F


def test_clusters_exist_only_while_used() -> None:
    areas = SwapAreas()
    area(areas, "a", 64 * SWAPFILE_CLUSTER)
    info = areas.active()[0]
    got = areas.get_swap_pages(3 * SWAPFILE_CLUSTER)
    assert len(info.clusters) == 4  # the header's cluster holds one slot fewer
    areas.swap_free(got[SWAPFILE_CLUSTER:2 * SWAPFILE_CLUSTER + 100])
    assert len(info.clusters) <= 4
    areas.swap_free(got[:SWAPFILE_CLUSTER] + got[2 * SWAPFILE_CLUSTER + 100:])
    assert info.inuse_pages == 0 and len(info.clusters) <= 2, "only the header's cluster (and the current) stay"


def test_priorities_and_round_robin() -> None:
    areas = SwapAreas()
    low = area(areas, "low", 100)  # auto: -2
    hi1 = area(areas, "hi1", 100, prio=5)
    hi2 = area(areas, "hi2", 100, prio=5)
    assert areas.active()[0].prio == -2
    used = [swp_type(areas.get_swap_pages(1)[0]) for _ in range(10)]
    assert set(used) == {hi1, hi2} and used.count(hi1) == used.count(hi2) == 5
    rest = areas.get_swap_pages(400)
    assert {swp_type(e) for e in rest[-50:]} == {low}, "the low-priority area only once the others are full"


def test_proc_swaps_layout_matches_linux() -> None:
    areas = SwapAreas()
    area(areas, "loop0", 2048, prio=5)
    text = areas.render()
    sample = (SAMPLES / "proc_swaps.txt").read_text().splitlines()
    assert text.splitlines() == [sample[0], sample[2]], "the header and the partition row of a 6.18 capture"


def test_a_bad_free_is_an_error_not_a_crash() -> None:
    areas = SwapAreas()
    area(areas, "a", 100)
    with pytest.raises(KernelError) as e:
        areas.swap_free([swp_entry(0, 50)])
    assert e.value.errno == errno.EINVAL
    with pytest.raises(KernelError):
        areas.swap_free([swp_entry(7, 1)])
    got = areas.get_swap_pages(10)
    assert [swp_offset(e) for e in got] == list(range(1, 11))
    # A run freed twice: the slots before the first bad one are freed, the bad one is the error.
    areas.swap_free(got[5:])
    with pytest.raises(KernelError) as e:
        areas.swap_free(got[2:7])
    assert "Bad swap offset entry 00000006" in str(e.value)
    assert areas.total_pages - areas.free_pages == 2  # slots 1 and 2 are all that is left in use


@given(st.integers(0, 22), st.integers(0, (1 << 40) - 1))
def test_an_entry_packs_type_and_offset_above_every_frame(area_type: int, offset: int) -> None:
    entry = swp_entry(area_type, offset)
    assert (swp_type(entry), swp_offset(entry)) == (area_type, offset)
    assert is_swap_entry(entry) and not is_swap_entry((64 << 40) >> 12)  # the last frame of 64 TiB


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 700), st.integers(0, 10**6)), max_size=30))
def test_a_slot_is_never_handed_out_twice(ops: list[tuple[bool, int, int]]) -> None:
    areas = SwapAreas()
    area(areas, "a", 3000, bad=(100, 2000))
    held: list[list[SwapEntry]] = []
    owned: set[SwapEntry] = set()
    for alloc, n, pick in ops:
        if alloc or not held:
            got = areas.get_swap_pages(n)
            assert owned.isdisjoint(got) and len(set(got)) == len(got)
            assert all(swp_offset(e) not in (0, 100, 2000) for e in got)
            owned.update(got)
            held.append(got)
        else:
            got = held.pop(pick % len(held))
            owned.difference_update(got)
            areas.swap_free(got)
        assert areas.total_pages - areas.free_pages == len(owned)


@dataclass(eq=False)
class T:
    pid: int
    comm: str = "t"
    uid: int = 0
    kthread: bool = False
    host: bool = True
    oom_score_adj: int = 0
    oom_killed: bool = False


def test_badness_and_oom_score_follow_the_formulas() -> None:
    mm = MemoryManager(64 << 20, 1)
    tasks = [T(1, host=False), T(2, kthread=True), T(100), T(101, oom_score_adj=500), T(102, oom_score_adj=-1000)]
    killed: list[int] = []
    oom = OomKiller(mm, KernelLog(lambda: 0), lambda: tasks, lambda: None, lambda r: None, kill=killed.append)
    total = mm.allocator.totalram_pages
    mm.charges.rss_shmem.update({100: 1000, 101: 10, 102: 5000})
    assert oom.badness(tasks[0]) is None and oom.badness(tasks[1]) is None and oom.badness(tasks[4]) is None
    assert oom.badness(tasks[2]) == 1000
    assert oom.badness(tasks[3]) == 10 + 500 * (total // 1000)
    assert oom.oom_score(tasks[2]) == (1000 + 1000 * 1000 // total) * 2 // 3
    assert oom.oom_score(tasks[0]) == 0
    assert oom.select_bad_process() is tasks[3], "adj 500 outweighs 1000 pages on a small machine"
    assert oom.out_of_memory(1) is True and killed == [101] and mm.events["oom_kill"] == 1
    assert oom.select_bad_process() is tasks[2], "a killed task is never chosen again"
    mm.charges.rss_shmem.clear()
    assert oom.out_of_memory(1) is False, "nothing charged anywhere: nothing to kill, ENOMEM"
    mm.close()
