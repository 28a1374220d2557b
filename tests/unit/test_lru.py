"""The LRU lists (mm/lru.py): aging, promotion, refaults, scan balance, and their invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rinuxfs.mm.lru import (
    LRU_ACTIVE_ANON,
    LRU_ACTIVE_FILE,
    LRU_INACTIVE_ANON,
    LRU_INACTIVE_FILE,
    LRU_UNEVICTABLE,
    SWAP_CLUSTER_MAX,
    Lruvec,
    Shadow,
    pack_shadow,
    unpack_shadow,
)

ALL_LRUS = (LRU_INACTIVE_ANON, LRU_ACTIVE_ANON, LRU_INACTIVE_FILE, LRU_ACTIVE_FILE, LRU_UNEVICTABLE)


def reclaim(lru: Lruvec, nr: int, anon: bool = False) -> dict[int, int]:
    """What the kernel's reclaim does with a batch: isolate, then evict every candidate."""
    return {key: lru.evict(key, anon) for key in lru.isolate(anon, nr)}


def fill(lru: Lruvec, keys: range, anon: bool = False) -> None:
    for key in keys:
        lru.add(key, anon)


def use_twice(lru: Lruvec, keys: range) -> None:
    """Two hits each: the pages are promoted to the active list."""
    for key in keys:
        lru.access(key)
        lru.access(key)


@pytest.mark.parametrize("quick", [True, False])
def test_second_access_promotes(quick: bool) -> None:
    lru = Lruvec(quick_demotion=quick)
    lru.add(1, anon=False)
    age = lru.nonresident_age
    assert lru.lru_of(1) == LRU_INACTIVE_FILE
    lru.access(1)
    if quick:  # the fault is the first access: the first hit only marks the page
        assert lru.lru_of(1) == LRU_INACTIVE_FILE and lru.referenced(1)
        lru.access(1)
    assert lru.lru_of(1) == LRU_ACTIVE_FILE
    assert not lru.referenced(1)  # activation clears PG_referenced, as folio_mark_accessed does
    assert lru.events["pgactivate"] == 1
    assert lru.nonresident_age == age + 1  # workingset_activation ages the non-resident pages
    lru.access(1)
    assert lru.lru_of(1) == LRU_ACTIVE_FILE and lru.referenced(1)


def test_page_used_again_is_activated_by_reclaim_not_freed() -> None:
    lru = Lruvec()
    fill(lru, range(10))
    lru.access(0)  # the oldest page, used once more: lazy promotion when reclaim reaches it
    victims = reclaim(lru, 1)
    assert list(victims) == [1]
    assert lru.lru_of(0) == LRU_ACTIVE_FILE
    assert lru.events["pgactivate"] == 1 and lru.events["pgscan_file"] == 2 and lru.events["pgsteal_file"] == 1


def test_one_hit_pages_leave_before_the_working_set() -> None:
    """Quick demotion: a page used once is reclaimed before pages the active list aged out."""
    lru = Lruvec()
    fill(lru, range(100))
    use_twice(lru, range(100))
    assert lru.nr(LRU_ACTIVE_FILE) == 100
    reclaim(lru, 0)  # inactive_is_low: the active list is aged into the inactive list
    assert lru.nr(LRU_INACTIVE_FILE) == SWAP_CLUSTER_MAX and lru.events["pgdeactivate"] == SWAP_CLUSTER_MAX
    fill(lru, range(100, 150))  # probation holds 50, above its target (10 % of 150 pages)
    victims = reclaim(lru, 10)
    assert sorted(victims) == list(range(100, 110))
    assert not any(unpack_shadow(s).workingset for s in victims.values())


def test_classic_lists_are_one_fifo() -> None:
    lru = Lruvec(quick_demotion=False)
    fill(lru, range(10))
    for key in range(10):
        lru.access(key)  # the fault marked it: this activates
    assert lru.nr(LRU_ACTIVE_FILE) == 10
    fill(lru, range(10, 14))
    victims = reclaim(lru, 4)
    # inactive_is_low: 4 × 1 < 10, so 10 pages are aged (pgdeactivate) to the head of the same
    # list the new pages are on, and reclaim takes the oldest: the new ones.
    assert sorted(victims) == [10, 11, 12, 13]
    assert lru.events["pgdeactivate"] == 10
    victim, shadow = next(iter(reclaim(lru, 1).items()))
    assert victim == 0 and unpack_shadow(shadow).workingset


def test_aging_marks_workingset_and_rotates_referenced_pages() -> None:
    lru = Lruvec()
    fill(lru, range(4))
    use_twice(lru, range(4))
    lru.access(0)  # used while active: another round on the active list
    assert lru.inactive_is_low(False)
    victims = reclaim(lru, 2)
    assert list(victims) == [1, 2]
    assert all(unpack_shadow(s).workingset for s in victims.values())
    assert lru.lru_of(0) == LRU_ACTIVE_FILE and not lru.referenced(0)
    assert lru.events["pgrefill"] == 4 and lru.events["pgdeactivate"] == 3


def test_inactive_ratio_follows_the_lru_size() -> None:
    lru = Lruvec()
    assert lru.inactive_ratio(False) == 1
    gb = (1 << 30) // 4096
    fill(lru, range(gb))
    assert lru.inactive_ratio(False) == 3  # int_sqrt(10 × 1)
    assert lru.inactive_ratio(True) == 1  # the anon LRU is empty


@pytest.mark.parametrize("quick", [True, False])
def test_refault_within_the_workingset_is_activated(quick: bool) -> None:
    lru = Lruvec(quick_demotion=quick)
    fill(lru, range(50))
    use_twice(lru, range(10, 50))  # a working set on the active list
    shadows = reclaim(lru, 5)
    key, shadow = next(iter(shadows.items()))
    lru.add(key, anon=False, shadow=shadow)
    assert lru.lru_of(key) == LRU_ACTIVE_FILE
    assert lru.events["workingset_refault_file"] == 1 and lru.events["workingset_activate_file"] == 1
    assert lru.events["workingset_restore_file"] == 0  # it had never been active


@pytest.mark.parametrize("quick", [True, False])
def test_refault_from_long_ago_starts_inactive(quick: bool) -> None:
    lru = Lruvec(quick_demotion=quick)
    fill(lru, range(20))
    shadow = reclaim(lru, 1)[0]
    for key in range(1000, 1200):  # 200 evictions later, in a memory of 20 pages
        lru.add(key, anon=False)
        reclaim(lru, 1)
    lru.add(0, anon=False, shadow=shadow)
    assert lru.lru_of(0) == LRU_INACTIVE_FILE
    assert lru.events["workingset_refault_file"] == 1 and lru.events["workingset_activate_file"] == 0


def test_working_set_page_refaulting_at_once_is_restored() -> None:
    lru = Lruvec()
    fill(lru, range(200))  # big enough that one refault's cost does not decay at once
    use_twice(lru, range(200))
    shadows = reclaim(lru, 1)  # aged out of the active list, then reclaimed
    key, shadow = next(iter(shadows.items()))
    assert unpack_shadow(shadow).workingset
    lru.add(key, anon=False, shadow=shadow)
    assert lru.lru_of(key) == LRU_ACTIVE_FILE
    assert lru.events["workingset_restore_file"] == 1
    assert lru.file_cost == SWAP_CLUSTER_MAX  # lru_note_cost_refault: one page of I/O


def test_workingset_size_counts_anon_only_with_swap() -> None:
    free_swap = [0]
    lru = Lruvec(nr_swap_pages=lambda: free_swap[0])
    fill(lru, range(10), anon=True)
    fill(lru, range(10, 15))
    use_twice(lru, range(10, 11))
    assert lru.workingset_size(anon=False) == 1  # active_file
    assert lru.workingset_size(anon=True) == 5  # active_file + inactive_file
    free_swap[0] = 100
    assert lru.workingset_size(anon=False) == 11  # + active_anon + inactive_anon
    assert lru.workingset_size(anon=True) == 5


def test_shadow_from_another_node_is_judged_there() -> None:
    nodes: dict[int, Lruvec] = {}
    for nid in (0, 1):
        nodes[nid] = Lruvec(node=nid, lruvec_of_node=nodes.__getitem__)
    fill(nodes[1], range(10))
    shadow = reclaim(nodes[1], 1)[0]
    assert unpack_shadow(shadow).node == 1
    nodes[1].nonresident_age += 10_000  # node 1 evicted a lot since: the page is long gone
    nodes[0].add(0, anon=False, shadow=shadow)
    assert nodes[0].lru_of(0) == LRU_INACTIVE_FILE
    assert nodes[0].events["workingset_refault_file"] == 1 and not nodes[0].events["workingset_activate_file"]


@given(st.integers(0, 1 << 40), st.integers(0, 1023), st.booleans(), st.booleans())
def test_shadow_packs_and_unpacks(eviction: int, node: int, anon: bool, workingset: bool) -> None:
    assert unpack_shadow(pack_shadow(eviction, node, anon, workingset)) == Shadow(eviction, node, anon, workingset)


def test_evict_returns_the_age_before_it_and_advances_it() -> None:
    lru = Lruvec(node=3)
    fill(lru, range(5), anon=True)
    age = lru.nonresident_age
    (key,) = lru.isolate(True, 1)
    assert unpack_shadow(lru.evict(key, True)) == Shadow(age, 3, True, False)
    assert lru.nonresident_age == age + 1 and lru.events["pgsteal_anon"] == 1


def test_page_used_while_isolated_keeps_the_reference() -> None:
    lru = Lruvec()
    fill(lru, range(5))
    (key,) = lru.isolate(False, 1)
    assert not lru.referenced(key)
    assert lru.access(key) and lru.referenced(key)  # used while its writeback was in flight
    lru.putback([key], anon=False)  # so reclaim puts it back instead of freeing it
    assert lru.lru_of(key) == LRU_INACTIVE_FILE and lru.referenced(key)
    lru.access(key)  # its second use: promoted
    assert lru.lru_of(key) == LRU_ACTIVE_FILE


def test_rotate_puts_a_page_at_the_tail() -> None:
    lru = Lruvec()
    fill(lru, range(10))
    lru.rotate(7)
    assert lru.isolate(False, 1) == [7]
    assert lru.events["pgrotated"] == 1


def test_unevictable_pages_stay() -> None:
    lru = Lruvec()
    lru.add(1, anon=True, unevictable=True)
    fill(lru, range(2, 4))
    assert lru.access(1) and lru.nr(LRU_UNEVICTABLE) == 1
    assert sorted(reclaim(lru, 10, anon=True)) == []
    assert sorted(reclaim(lru, 10)) == [2, 3]
    assert lru.lru_of(1) == LRU_UNEVICTABLE


def test_remove_leaves_no_trace_and_double_add_is_a_bug() -> None:
    lru = Lruvec()
    fill(lru, range(3))
    lru.remove(1)
    assert 1 not in lru and len(lru) == 2 and not lru.events
    lru.isolate(False, 1)
    lru.remove(0)  # truncated while reclaim had it isolated
    assert lru.isolated() == []
    with pytest.raises(ValueError):
        lru.add(2, anon=False)


# --- anon/file balance --------------------------------------------------------------------


def balanced(anon_pages: int, file_pages: int) -> Lruvec:
    lru = Lruvec()
    fill(lru, range(anon_pages), anon=True)
    fill(lru, range(anon_pages, anon_pages + file_pages))
    return lru


def test_scan_counts_follow_swappiness() -> None:
    lru = balanced(100, 100)
    assert lru.scan_counts(100, 60, may_swap=True) == (30, 70)  # 60 : 140
    assert lru.scan_counts(100, 0, may_swap=True) == (0, 100)
    assert lru.scan_counts(100, 200, may_swap=True) == (100, 0)
    assert lru.scan_counts(100, 60, may_swap=False) == (0, 100)  # no swap: file only
    assert lru.scan_counts(100, 60, may_swap=True, priority=0) == (50, 50)  # SCAN_EQUAL, by size
    assert lru.scan_counts(100, 60, may_swap=True, file_is_tiny=True) == (100, 0)


def test_scan_counts_weigh_list_sizes_and_costs() -> None:
    lru = balanced(300, 100)
    assert lru.scan_counts(100, 100, may_swap=True) == (75, 25)  # equal fractions, sizes 3 : 1
    lru = balanced(100, 100)
    lru.note_cost(False, 1, 0)  # file refaults cost I/O: reclaim leans on anon
    anon, file = lru.scan_counts(100, 60, may_swap=True)
    assert anon > 30 and anon + file == 100


def test_cache_trim_mode_takes_file_only_until_refaults() -> None:
    lru = balanced(100, 5000)
    assert lru.scan_counts(1024, 60, may_swap=True) == (0, 1024)
    lru.events["workingset_activate_file"] += 1  # the file cache started thrashing
    assert lru.scan_counts(1024, 60, may_swap=True)[0] > 0
    lru.snapshot_refaults()
    assert lru.scan_counts(1024, 60, may_swap=True) == (0, 1024)


def test_note_cost_decays() -> None:
    lru = balanced(40, 40)  # a quarter of the LRU pages is 20
    lru.note_cost(True, 0, 15)
    lru.note_cost(False, 0, 4)
    assert (lru.anon_cost, lru.file_cost) == (15, 4)
    lru.note_cost(False, 0, 2)  # 21 > 20: both halve
    assert (lru.anon_cost, lru.file_cost) == (7, 3)


# --- invariants under any sequence of operations -------------------------------------------

KEYS = st.integers(0, 24)
OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), KEYS),
    st.tuples(st.just("access"), KEYS),
    st.tuples(st.just("access"), KEYS),
    st.tuples(st.just("remove"), KEYS),
    st.tuples(st.just("remove_many"), st.lists(KEYS, max_size=6, unique=True)),
    st.tuples(st.just("rotate"), KEYS),
    st.tuples(st.just("reclaim"), st.booleans(), st.integers(0, 6), st.integers(0, 63), st.booleans()),
), max_size=120)


@settings(max_examples=150, deadline=None)
@given(OPS, st.booleans())
def test_lists_stay_consistent(ops: list[tuple], quick: bool) -> None:
    sizes = dict.fromkeys(ALL_LRUS, 0)

    def on_change(lru_id: int, delta: int) -> None:
        sizes[lru_id] += delta
        assert sizes[lru_id] >= 0

    lru = Lruvec(on_change, quick_demotion=quick, nr_swap_pages=lambda: 1)
    resident: set[int] = set()
    shadows: dict[int, int] = {}
    for op in ops:
        if op[0] == "add" and op[1] not in resident:
            lru.add(op[1], anon=op[1] % 2 == 0, shadow=shadows.pop(op[1], None), unevictable=op[1] == 0)
            resident.add(op[1])
        elif op[0] == "access":
            assert lru.access(op[1]) == (op[1] in resident)
        elif op[0] == "remove":
            lru.remove(op[1])
            resident.discard(op[1])
        elif op[0] == "remove_many":
            lru.remove_many(op[1])
            resident.difference_update(op[1])
        elif op[0] == "rotate":
            lru.rotate(op[1])
        elif op[0] == "reclaim":
            _, anon, nr, evict_mask, activate = op
            before = {k: (lru.lru_of(k), lru.referenced(k)) for k in resident}
            aging = lru.events["pgactivate"] + lru.events["pgrefill"] - lru.events["pgdeactivate"]
            taken = lru.isolate(anon, nr)
            assert len(taken) <= nr and len(set(taken)) == len(taken)
            for key in taken:
                assert key % 2 == (0 if anon else 1) and key not in lru
                assert before[key][0] != LRU_UNEVICTABLE
            if quick:
                # A referenced page is never freed on a reference it still had: each one taken
                # lost its bit to aging in this very call (activated at the inactive tail, or
                # rotated on the active list) before it could be taken.
                aged = lru.events["pgactivate"] + lru.events["pgrefill"] - lru.events["pgdeactivate"] - aging
                assert sum(before[key][1] for key in taken) <= aged
            freed = [k for i, k in enumerate(taken) if evict_mask >> i & 1]
            kept = [k for k in taken if k not in freed]
            for key in freed:
                shadows[key] = lru.evict(key, anon)
                resident.discard(key)
            lru.putback(kept, anon, activate)
            for key in kept:  # putback restores: on the page's own type's list again
                assert lru.lru_of(key) == (LRU_ACTIVE_ANON if anon else LRU_ACTIVE_FILE) if activate \
                    else lru.lru_of(key) == (LRU_INACTIVE_ANON if anon else LRU_INACTIVE_FILE)
        # Every page is on exactly one list, of its own type, and the counters agree.
        assert len(lru) == len(resident) and not lru.isolated()
        for key in resident:
            on = lru.lru_of(key)
            assert on is not None
            if key == 0:
                assert on == LRU_UNEVICTABLE
            else:
                assert on in ((LRU_INACTIVE_ANON, LRU_ACTIVE_ANON) if key % 2 == 0 else
                              (LRU_INACTIVE_FILE, LRU_ACTIVE_FILE))
        assert all(sizes[i] == lru.nr(i) for i in ALL_LRUS)
        assert sum(sizes.values()) == len(resident)
        assert lru.nr_probation(True) <= lru.nr(LRU_INACTIVE_ANON)
        assert lru.nr_probation(False) <= lru.nr(LRU_INACTIVE_FILE)


@settings(max_examples=60, deadline=None)
@given(st.integers(8, 40), st.lists(st.booleans(), min_size=8, max_size=40), st.booleans(),
       st.sampled_from([0, 1, 10, 100, 1000, 100_000]))
def test_a_batch_of_refaults_lands_as_page_by_page_adds(n: int, accessed: list[bool], quick: bool, gap: int) -> None:
    """add_many with shadows leaves the lists, flags, counters, events and the adaptation as `add`
    one by one does, also when the evictions are long past (the batch skips the judgement)."""
    def history() -> tuple[Lruvec, dict[int, int], dict[int, int]]:
        sizes = dict.fromkeys(ALL_LRUS, 0)

        def on_change(lru_id: int, delta: int) -> None:
            sizes[lru_id] += delta

        lru = Lruvec(on_change, quick_demotion=quick, nr_swap_pages=lambda: 100)
        lru.add_many(list(range(n)), anon=True)
        for key, hit in zip(range(n), accessed, strict=False):
            if hit:
                lru.access(key)
        shadows = {key: lru.evict(key, True) for key in lru.isolate(True, n // 2)}
        lru.nonresident_age += gap  # other pages evicted since
        return lru, shadows, sizes

    one, shadows, sizes_one = history()
    many, shadows_many, sizes_many = history()
    assert shadows == shadows_many
    keys = sorted(shadows) + [n + 1, n + 2]
    for key in keys:
        one.add(key, True, shadows.get(key))
    many.add_many(keys, True, [shadows.get(key) for key in keys])
    assert sizes_one == sizes_many
    assert one.events == many.events
    assert (one.probation_share, one.nonresident_age) == (many.probation_share, many.nonresident_age)
    for key in range(n + 3):
        assert (one.lru_of(key), one.referenced(key)) == (many.lru_of(key), many.referenced(key))


def test_evicting_a_batch_is_evicting_page_by_page() -> None:
    def lruvec() -> Lruvec:
        lru = Lruvec(None, nr_swap_pages=lambda: 1)
        lru.add_many(list(range(64)), anon=True)
        for key in range(0, 64, 3):
            lru.access(key)
        return lru

    one, many = lruvec(), lruvec()
    taken = one.isolate(True, 40)
    assert many.isolate(True, 40) == taken
    assert [one.evict(key, True) for key in taken] == many.evict_many(taken, True)
    assert (one.nonresident_age, one.events, one._probation_evictions) == \
        (many.nonresident_age, many.events, many._probation_evictions)
