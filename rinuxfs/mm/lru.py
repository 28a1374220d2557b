"""The LRU lists of one node (struct lruvec): which cache pages to reclaim first.

Contract (the same whether the caller is reclaim in the daemon or the replay tool):
- Pages are keys (the daemon uses PFNs), each on exactly one list: inactive/active anon
  (swap-backed: tmpfs pages), inactive/active file (block-device cache), or unevictable; or
  isolated (taken off by `isolate`, until `evict` or `putback`).
- `add(key, anon, shadow)` puts a new page on its inactive list (folio_add_lru), unless its
  `shadow` (what `evict` returned when an earlier copy of the page left) says it was part of the
  working set: then it starts active (workingset_refault/activate), and the refault is counted.
  `add` is the access that brought the page in: do not call `access` for that same access.
- `add_many(keys, anon, shadows)` and `access_many(keys)` do the same for a batch; `keys(lru)`
  lists a list's pages (for views that count pages by zone).
- `access(key)` is a hit (folio_mark_accessed): a first access sets the referenced bit, a second
  one on the inactive list promotes the page to active (pgactivate). It returns whether the page
  is on a list or isolated (the replay tool's hit test); an isolated page keeps the reference.
- `remove(key)` takes out a page its owner freed (truncate, unlink): no shadow, no counters.
- `isolate(anon, nr)` takes up to `nr` reclaim candidates from the tail of the inactive list
  (shrink_inactive_list); pages found referenced are activated instead, and every page looked
  at counts as scanned (`nr_scanned` keeps the last batch's count). Before isolating, the active
  list is aged into the inactive one while `inactive_is_low` (shrink_active_list: pgrefill,
  pgdeactivate).
- The caller then tries to free each candidate. For each one it frees, it calls `evict(key, anon)`
  and keeps the shadow it returns where the page was (the page cache slot); for each it could
  not free (dirty and unwritable, swap full, I/O error), or that was used meanwhile
  (`referenced(key)` after a wait for writeback), it calls `putback(keys, anon, activate)`.
  After a batch it reports what reclaim cost with `note_cost(anon, nr_io, nr_rotated)`
  (lru_note_cost: pages written, and pages scanned but not reclaimed).
- `rotate(key)`: writeback of a page reclaim wanted has finished: it goes to the inactive tail
  so the next scan frees it (folio_rotate_reclaimable, pgrotated).
- `scan_counts(nr, swappiness, may_swap)` splits a reclaim target between anon and file as
  get_scan_count does; `snapshot_refaults()` ends a reclaim pass (snapshot_refaults).
- `nr(lru)` is the size of a list; `on_change(lru, delta)` (if given) is called on every size
  change, so the node's nr_inactive_anon/... counters follow the lists without a second copy.
- Counters (pgactivate, pgdeactivate, pgrefill, pgrotated, pgscan_anon/_file,
  pgsteal_anon/_file, workingset_refault_anon/_file, workingset_activate_*, workingset_restore_*)
  accumulate in `events`.

What /proc shows is Linux's: five lists, new pages inactive, promotion on the second access,
the active list aged while `inactive × inactive_ratio < active`, shadow entries packing the
eviction time (`nonresident_age`, which every eviction and activation advances), the node, the
type and PG_workingset, the refault counters and the anon/file cost balance.

Where the policy goes beyond Linux (`quick_demotion`, the default; README "Eviction policy"), the
inactive list is kept as two queues, both counted as inactive:
- probation: pages that came in and have not been active (S3-FIFO's small queue);
- the inactive list proper: pages the active list aged out, carrying PG_workingset.
Reclaim takes the probation tail while probation holds more than its target share of the type's
pages, else the other tail (aging the active list into it when it is empty), so a page used once
leaves after a short stay instead of crossing half of memory: quick demotion. The rules:
- A page found referenced at either tail is activated, not freed (Linux does so for a page with
  a young PTE): a page used again while on probation is promoted, at the latest then (S3-FIFO's
  lazy promotion). On the active list a referenced page gets another round (a CLOCK, as Linux
  treats referenced pages of executable mappings), so the inactive list receives the pages
  unused for a whole round.
- The probation target adapts as ARC's p does, with the shadows for ghost lists: a refault of a
  page that left probation, within the rest of memory in probation evictions, grows it; one of a
  page that left the working set, within 1.5 targets in evictions of the rest, shrinks it; the
  steps are ARC's (the ratio of the two sizes, at least one page).
- A refault is activated when its distance is within the Linux workingset size plus twice the
  type's pages less the probation target; a page that had been in the working set and fell out
  is restored (workingset_restore) only within the probation target, else it requalifies through
  probation: that keeps a loop larger than memory from flushing everything through the active
  list. (These reaches were chosen by measuring the replay's traces: README "Eviction policy".)
`quick_demotion=False` is Linux's classic two lists as they treat unmapped page-cache pages,
kept to compare against (`python -m rinuxfs.mm.replay --policy classic`).

Every operation is O(1) per page, amortized (OrderedDicts: the oldest page, the list's tail, first;
a rotation on the active list clears the bit only an access sets).
"""

from __future__ import annotations

import math
import operator
from collections import Counter, OrderedDict
from collections.abc import Callable
from itertools import repeat
from typing import NamedTuple

LRU_INACTIVE_ANON, LRU_ACTIVE_ANON, LRU_INACTIVE_FILE, LRU_ACTIVE_FILE, LRU_UNEVICTABLE = range(5)
LRU_NAMES = ("inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable")
SWAP_CLUSTER_MAX = 32  # pages reclaim works on at a time (include/linux/swap.h)
DEF_PRIORITY = 12  # reclaim's first scan priority: 1/4096 of the lists
MAX_SWAPPINESS = 200
NODES_SHIFT = 10  # up to 1024 nodes, as --numa allows

# Page flags the lists keep per page (PG_referenced, PG_workingset).
PG_REFERENCED = 1
PG_WORKINGSET = 2

# Internal queues: the five lists, then the probation part of each inactive list.
_Q_PROBATION_ANON, _Q_PROBATION_FILE = 5, 6
_QUEUE_LRU = (0, 1, 2, 3, 4, 0, 2)  # queue -> the list /proc counts it in

# Quick demotion's tuning, measured with the replay tool (README "Eviction policy").
PROBATION_INITIAL = 0.10  # share of a type's pages probation starts with (S3-FIFO's 10%)
PROBATION_MIN, PROBATION_MAX = 0.01, 0.50
WORKINGSET_GHOST = 1.5  # a working-set refault steers adaptation within this many probation targets
REFAULT_REACH = 2  # a probation refault activates within the workingset size plus this many type sizes
EVICTION_MIX_DECAY = 1 / 1024  # moving average of the share of evictions taken from probation

_NODE_MASK = (1 << NODES_SHIFT) - 1
_WORKINGSET_EVENTS = {  # anon -> (refault, activate, restore) counter names
    anon: tuple(f"workingset_{what}_{'anon' if anon else 'file'}" for what in ("refault", "activate", "restore"))
    for anon in (False, True)
}

_PGSCAN = {False: "pgscan_file", True: "pgscan_anon"}
_PGSTEAL = {False: "pgsteal_file", True: "pgsteal_anon"}

OnChange = Callable[[int, int], None]


class Shadow(NamedTuple):
    eviction: int  # nonresident_age when the page left
    node: int
    anon: bool
    workingset: bool  # PG_workingset: the page had been on the active list


def pack_shadow(eviction: int, node: int, anon: bool, workingset: bool) -> int:
    """pack_shadow: one integer, as Linux packs it into an xarray value entry (plus the type)."""
    return (((eviction << NODES_SHIFT | node) << 1 | anon) << 1) | workingset


def unpack_shadow(shadow: int) -> Shadow:
    return Shadow(shadow >> (NODES_SHIFT + 2), (shadow >> 2) & _NODE_MASK,
                  bool(shadow & 2), bool(shadow & 1))


def _inactive_ratio(pages: int) -> int:
    """inactive_is_low's ratio: int_sqrt(10 × GB of this LRU type), 1 below 1 GB."""
    gb = pages >> (30 - 12)
    return math.isqrt(10 * gb) if gb else 1


def _lru(anon: bool, active: bool) -> int:
    return (0 if anon else 2) + (1 if active else 0)


class Lruvec:
    def __init__(self, on_change: OnChange | None = None, *, node: int = 0,
                 quick_demotion: bool = True, nr_swap_pages: Callable[[], int] | None = None,
                 lruvec_of_node: Callable[[int], Lruvec] | None = None) -> None:
        self.node = node
        self.quick_demotion = quick_demotion
        self.on_change = on_change
        self.nr_swap_pages = nr_swap_pages  # free swap: anon competes in the workingset when > 0
        self._swap_free_now: int | None = None  # nr_swap_pages() taken once for a batch of adds
        self.lruvec_of_node = lruvec_of_node  # a shadow from another node is judged there
        self._queues: list[OrderedDict[int, int]] = [OrderedDict() for _ in range(7)]
        self._where: dict[int, int] = {}  # key -> queue it is on
        self._isolated: dict[int, tuple[int, int]] = {}  # key -> (queue it came from, flags)
        self.events: Counter[str] = Counter()
        self.nonresident_age = 0  # lruvec->nonresident_age: evictions and activations so far
        self.anon_cost = 0
        self.file_cost = 0
        self.nr_scanned = 0  # pages the last isolate looked at
        self._refaults_snapshot = (0, 0)
        # Quick demotion's state, per type (0 anon, 1 file).
        self.probation_share = [PROBATION_INITIAL, PROBATION_INITIAL]
        self._probation_evictions = [0.5, 0.5]

    # --- sizes ---------------------------------------------------------------------------

    def nr(self, lru: int) -> int:
        q = self._queues
        if lru == LRU_INACTIVE_ANON:
            return len(q[0]) + len(q[_Q_PROBATION_ANON])
        if lru == LRU_INACTIVE_FILE:
            return len(q[2]) + len(q[_Q_PROBATION_FILE])
        return len(q[lru])

    def nr_probation(self, anon: bool) -> int:
        return len(self._queues[_Q_PROBATION_ANON if anon else _Q_PROBATION_FILE])

    def __contains__(self, key: int) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def lru_of(self, key: int) -> int | None:
        """The list a page is on (None: not on a list, e.g. isolated)."""
        q = self._where.get(key)
        return None if q is None else _QUEUE_LRU[q]

    def referenced(self, key: int) -> bool:
        q = self._where.get(key)
        if q is None:
            return key in self._isolated and bool(self._isolated[key][1] & PG_REFERENCED)
        return bool(self._queues[q][key] & PG_REFERENCED)

    def isolated(self) -> list[int]:
        return list(self._isolated)

    # --- list moves ----------------------------------------------------------------------

    def _put(self, key: int, q: int, flags: int) -> None:
        self._queues[q][key] = flags
        self._where[key] = q
        if self.on_change is not None:
            self.on_change(_QUEUE_LRU[q], 1)

    def _take(self, key: int) -> tuple[int, int]:
        q = self._where.pop(key)
        flags = self._queues[q].pop(key)
        if self.on_change is not None:
            self.on_change(_QUEUE_LRU[q], -1)
        return q, flags

    def _activate(self, key: int, q: int, flags: int) -> None:
        """An inactive page becomes active (folio_activate + workingset_activation)."""
        del self._queues[q][key]
        self._activate_taken(key, q, flags)

    def _activate_taken(self, key: int, q: int, flags: int) -> None:
        """_activate for a page already taken off queue q."""
        active = 3 if _QUEUE_LRU[q] == LRU_INACTIVE_FILE else 1
        self._queues[active][key] = flags & ~PG_REFERENCED
        self._where[key] = active
        if self.on_change is not None:
            self.on_change(_QUEUE_LRU[q], -1)
            self.on_change(active, 1)
        self.events["pgactivate"] += 1
        self.nonresident_age += 1

    def _inactive_queue(self, anon: bool, new: bool) -> int:
        """Where a page entering the inactive list goes: new pages to probation; pages aged out
        of the active list to the inactive list proper (classic Linux: one list, one queue)."""
        if new or not self.quick_demotion:
            return _Q_PROBATION_ANON if anon else _Q_PROBATION_FILE
        return LRU_INACTIVE_ANON if anon else LRU_INACTIVE_FILE

    # --- the interface -------------------------------------------------------------------

    def add(self, key: int, anon: bool, shadow: int | None = None, unevictable: bool = False) -> None:
        if key in self._where or key in self._isolated:
            raise ValueError(f"lruvec: page {key} added twice")
        if unevictable:
            self._put(key, LRU_UNEVICTABLE, 0)
            return
        if shadow is not None:
            flags = self._refault(anon, shadow)
            if flags is not None:
                self._put(key, _lru(anon, True), flags)
                return
        # Classic Linux: the read that faulted the page in marks it accessed (filemap_read), so
        # its next access activates it. Quick demotion leaves the bit clear: a page used once is
        # reclaimed from probation, a page used again is activated at the latest when reclaim
        # reaches it (S3-FIFO's lazy promotion).
        self._put(key, self._inactive_queue(anon, True), 0 if self.quick_demotion else PG_REFERENCED)

    def add_many(self, keys: list[int], anon: bool, shadows: list[int | None] | None = None) -> None:
        """`add` for a batch (a request brings in up to 256 pages at once): one dict update when no
        page brings a shadow, `add` page by page otherwise."""
        if shadows is not None and (holes := shadows.count(None)) < len(shadows):
            refaults = shadows if not holes else [shadow for shadow in shadows if shadow is not None]
            if not self._refaults_far(anon, refaults, len(keys)):  # type: ignore[arg-type]
                self._add_refaults(keys, anon, shadows)
                return
            self.events[_WORKINGSET_EVENTS[anon][0]] += len(refaults)
        q = self._inactive_queue(anon, True)
        flags = 0 if self.quick_demotion else PG_REFERENCED
        queue = self._queues[q]
        for key in keys:  # measured: 3-4x faster than OrderedDict.update, which goes through a slow generic path
            queue[key] = flags
        self._where.update(dict.fromkeys(keys, q))
        if self.on_change is not None:
            self.on_change(_QUEUE_LRU[q], len(keys))

    def _refaults_far(self, anon: bool, shadows: list[int], n: int) -> bool:
        """Whether every refault of a batch of n adds was evicted here so long ago that, whatever
        size the lists grow to within the batch, `_test_recent` would neither activate its page
        nor steer the adaptation: then the batch needs no judgement page by page (a stream
        coming back from swap). A page of margin keeps float rounding on the safe side."""
        # One C-level pass for the node and workingset bits of every shadow (pack_shadow's layout).
        tags = set(map(operator.and_, shadows, repeat(_NODE_MASK << 2 | 1)))
        here = self.node << 2
        if self.lruvec_of_node is not None and not tags <= {here, here | 1}:
            return False
        kinds = {tag & 1 for tag in tags}
        distance = self.nonresident_age - (max(shadows) >> (NODES_SHIFT + 2))  # the latest eviction
        self._swap_free_now = self._swap_free()
        try:
            pages, competing = self._sizes(anon)
        finally:
            self._swap_free_now = None
        pages = max(1, pages + n)  # the most the lists hold by the batch's end
        if not self.quick_demotion:
            return distance > competing + 1
        t = 0 if anon else 1
        target = self.probation_share[t] * pages
        mix = self._probation_evictions[t]
        if 1 in kinds and not (distance > target + 1 and distance * (1 - mix) > WORKINGSET_GHOST * target + 1):
            return False
        return 0 not in kinds or (distance * mix > pages - target + 1
                                  and distance > competing + REFAULT_REACH * pages - target + 1)

    def _add_refaults(self, keys: list[int], anon: bool, shadows: list[int | None]) -> None:
        """`add` for a batch of which some pages bring a shadow: each refault judged on its own,
        the lists' counters moved once per list. The sizes a refault is judged against are read
        once and carried through the batch (each page before it joined this type's lists, the
        activated ones its active list), as exact as reading them page by page."""
        where, queues = self._where, self._queues
        new_q = self._inactive_queue(anon, True)
        new_flags = 0 if self.quick_demotion else PG_REFERENCED
        active_q = _lru(anon, True)
        added = [0] * len(queues)
        # Free swap is read once for the batch: the adds themselves never change it.
        self._swap_free_now = self._swap_free()
        # An anon page activated here competes in the workingset only while swap is free.
        grows = not anon or bool(self._swap_free_now)
        pages, competing = self._sizes(anon)
        verdict = self._refault_verdict
        isolated = self._isolated
        refaults = 0
        try:
            for key, shadow in zip(keys, shadows, strict=True):
                if key in where or key in isolated:
                    raise ValueError(f"lruvec: page {key} added twice")
                if shadow is None:
                    flags = None
                else:
                    refaults += 1
                    flags = verdict(anon, shadow, pages, competing)
                if flags is None:
                    queues[new_q][key] = new_flags
                    where[key] = new_q
                    added[new_q] += 1
                else:
                    queues[active_q][key] = flags
                    where[key] = active_q
                    added[active_q] += 1
                    competing += grows
                pages += 1
        finally:
            self._swap_free_now = None
            self.events[_WORKINGSET_EVENTS[anon][0]] += refaults
            if self.on_change is not None:
                for q, n in enumerate(added):
                    if n:
                        self.on_change(_QUEUE_LRU[q], n)

    def access_many(self, keys: list[int]) -> None:
        """`access` for each key, in order (a request that hits up to 256 cached pages)."""
        access = self.access
        for key in keys:
            access(key)

    def keys(self, lru: int) -> list[int]:
        """The pages on a list (the inactive lists with their probation part): for views that count
        by zone, which walk the lists when read."""
        q = self._queues
        if lru == LRU_INACTIVE_ANON:
            return [*q[0], *q[_Q_PROBATION_ANON]]
        if lru == LRU_INACTIVE_FILE:
            return [*q[2], *q[_Q_PROBATION_FILE]]
        return list(q[lru])

    def access(self, key: int) -> bool:
        q = self._where.get(key)
        if q is None:
            isolated = self._isolated.get(key)
            if isolated is None:
                return False
            # Reclaim holds the page (writeback in flight): the reference stays with it, and
            # reclaim checks `referenced` before freeing it, as shrink_folio_list does.
            self._isolated[key] = (isolated[0], isolated[1] | PG_REFERENCED)
            return True
        if q == LRU_UNEVICTABLE:
            return True
        queue = self._queues[q]
        flags = queue[key]
        if q == LRU_ACTIVE_FILE or q == LRU_ACTIVE_ANON or not flags & PG_REFERENCED:
            queue[key] = flags | PG_REFERENCED
        else:
            self._activate(key, q, flags)
        return True

    def remove(self, key: int) -> None:
        if key in self._where:
            self._take(key)
        else:
            self._isolated.pop(key, None)

    def remove_many(self, keys: list[int]) -> None:
        """`remove` for a batch (a file truncated or deleted): the lists' counters move once per list."""
        where, queues = self._where, self._queues
        gone = [0] * len(queues)
        for key in keys:
            q = where.pop(key, None)
            if q is None:
                self._isolated.pop(key, None)
                continue
            del queues[q][key]
            gone[q] += 1
        if self.on_change is not None:
            for q, n in enumerate(gone):
                if n:
                    self.on_change(_QUEUE_LRU[q], -n)

    # --- refaults (workingset.c) -----------------------------------------------------------

    def _refault(self, anon: bool, shadow: int) -> int | None:
        """workingset_refault: the flags of an activated refault, or None to start inactive."""
        self.events[_WORKINGSET_EVENTS[anon][0]] += 1
        return self._refault_verdict(anon, shadow)

    def _refault_verdict(self, anon: bool, shadow: int, pages: int = -1, competing: int = 0) -> int | None:
        """_refault without counting the refault itself (a batch counts its refaults at once);
        `pages` and `competing` are this lruvec's `_sizes` when the caller carries them."""
        workingset = shadow & 1
        judge = self
        node = (shadow >> 2) & _NODE_MASK
        if node != self.node and self.lruvec_of_node is not None:
            judge = self.lruvec_of_node(node)  # decided where the eviction happened
            pages = -1
        if pages < 0:
            pages, competing = judge._sizes(anon)
        distance = judge.nonresident_age - (shadow >> (NODES_SHIFT + 2))
        if not judge._test_recent(anon, distance, workingset, pages, competing):
            return None
        _, activate, restore = _WORKINGSET_EVENTS[anon]
        events = self.events
        self.nonresident_age += 1
        events[activate] += 1
        if not workingset:
            return 0
        events[restore] += 1
        self.note_cost(anon, 1, 0)  # lru_note_cost_refault: the refault was I/O
        return PG_WORKINGSET

    def _swap_free(self) -> int:
        if self._swap_free_now is not None:
            return self._swap_free_now
        return self.nr_swap_pages() if self.nr_swap_pages is not None else 0

    def _sizes(self, anon: bool) -> tuple[int, int]:
        """What a refault of this type is judged against: (the type's LRU pages, the workingset
        size it competes with — Linux's workingset_test_recent: the active file list; for anon
        the inactive file list too; while swap is free the active anon list, and for file the
        inactive anon list too)."""
        q = self._queues
        swap = self._swap_free()
        if anon:
            competing = len(q[3]) + len(q[2]) + len(q[6])
            return len(q[0]) + len(q[5]) + len(q[1]), competing + len(q[1]) if swap else competing
        if swap:
            return len(q[2]) + len(q[6]) + len(q[3]), len(q[3]) + len(q[1]) + len(q[0]) + len(q[5])
        return len(q[2]) + len(q[6]) + len(q[3]), len(q[3])

    def workingset_size(self, anon: bool) -> int:
        """Linux's: the pages a refaulting page competes with (workingset_test_recent)."""
        return self._sizes(anon)[1]

    def _test_recent(self, anon: bool, distance: int, workingset: int, pages: int, competing: int) -> bool:
        if not self.quick_demotion:
            return distance <= competing
        t = 0 if anon else 1
        pages = max(1, pages)
        share = self.probation_share[t]
        target = share * pages
        mix = self._probation_evictions[t]
        # ARC's adaptation, with the shadows for ghost lists: the distance times the share of
        # evictions taken from the queue the page left estimates how many more pages that
        # queue needed to keep it. Within the other queue's size it is a ghost hit, and the
        # step is ARC's: the ratio of the two ghost sizes, at least one page.
        if workingset:
            if distance * (1 - mix) <= WORKINGSET_GHOST * target:
                step = max(1.0, (pages - target) / max(target, 1.0))
                self.probation_share[t] = max(PROBATION_MIN, share - step / pages)
            return distance <= target
        if distance * mix <= pages - target:
            step = max(1.0, target / max(pages - target, 1.0))
            self.probation_share[t] = min(PROBATION_MAX, share + step / pages)
        return distance <= competing + REFAULT_REACH * pages - target

    # --- reclaim -------------------------------------------------------------------------

    def inactive_ratio(self, anon: bool) -> int:
        return _inactive_ratio(self.nr(_lru(anon, False)) + self.nr(_lru(anon, True)))

    def inactive_is_low(self, anon: bool) -> bool:
        return self._inactive_is_low(self.nr(_lru(anon, False)), self.nr(_lru(anon, True)))

    @staticmethod
    def _inactive_is_low(inactive: int, active: int) -> bool:
        return inactive * _inactive_ratio(inactive + active) < active

    def _age_active(self, anon: bool, nr: int, scan: int = 0) -> int:
        """shrink_active_list: move up to nr pages from the active tail to the inactive head,
        marked PG_workingset, looking at no more than `scan` pages (default nr); returns how many
        moved. Classic Linux deactivates every unmapped page it looks at, PG_referenced kept;
        quick demotion gives a referenced page another round on the active list instead (what
        Linux does for a page with a young PTE in an executable mapping): the active list is a
        CLOCK, and the pages it hands to the inactive list are the ones unused for a round."""
        active = self._queues[_lru(anon, True)]
        dest = self._inactive_queue(anon, False)
        queue = self._queues[dest]
        where = self._where
        rotate = self.quick_demotion
        moved = scanned = 0
        limit = min(len(active), max(scan, nr))
        while scanned < limit and moved < nr:
            key, flags = active.popitem(last=False)
            scanned += 1
            if rotate and flags & PG_REFERENCED:
                active[key] = flags & ~PG_REFERENCED
                continue
            queue[key] = flags | PG_WORKINGSET
            where[key] = dest
            moved += 1
        if self.on_change is not None and moved:
            self.on_change(_lru(anon, True), -moved)
            self.on_change(_lru(anon, False), moved)
        self.events["pgrefill"] += scanned
        self.events["pgdeactivate"] += moved
        if scanned > moved:
            self.note_cost(anon, 0, scanned - moved)  # rotations cost CPU, as in shrink_active_list
        return moved

    def isolate(self, anon: bool, nr: int) -> list[int]:
        qp = _Q_PROBATION_ANON if anon else _Q_PROBATION_FILE
        qi = LRU_INACTIVE_ANON if anon else LRU_INACTIVE_FILE
        queues = self._queues
        probation, inactive, active = queues[qp], queues[qi], queues[qi + 1]
        nr_inactive, nr_active = len(probation) + len(inactive), len(active)
        batch = nr if nr > SWAP_CLUSTER_MAX else SWAP_CLUSTER_MAX
        if nr_inactive * _inactive_ratio(nr_inactive + nr_active) < nr_active:  # inactive_is_low
            self._age_active(anon, batch)
        # Classic Linux has one inactive queue: always probation's.
        target = self.probation_share[0 if anon else 1] * (nr_inactive + nr_active) if self.quick_demotion else -1
        where, isolated, on_change = self._where, self._isolated, self.on_change
        activate = self.quick_demotion
        taken: list[int] = []
        scanned = 0
        budget = 4 * batch
        while scanned < budget and len(taken) < nr:
            # The queue to take from, and how many pages it gives before that choice must be made again.
            if probation and len(probation) > target:
                src, q, run = probation, qp, min(len(probation), math.ceil(len(probation) - target))
            elif inactive:
                src, q, run = inactive, qi, len(inactive)
            elif active:
                # Nothing on the inactive list proper while probation is at its target: the
                # working set gives up pages, unused ones first (ARC taking from T2 when T1 is at
                # its target p). Classic Linux gets here only with an empty inactive list.
                self._age_active(anon, SWAP_CLUSTER_MAX, len(active))
                continue
            elif probation:
                src, q, run = probation, qp, len(probation)
            else:
                break
            for _ in range(min(run, budget - scanned)):
                key, flags = src.popitem(last=False)
                scanned += 1
                if flags & PG_REFERENCED and activate:
                    self._activate_taken(key, q, flags)
                    continue
                del where[key]
                isolated[key] = (q, flags)
                taken.append(key)
                if len(taken) == nr:
                    break
        if on_change is not None and taken:
            on_change(qi, -len(taken))
        self.nr_scanned = scanned
        self.events[_PGSCAN[anon]] += scanned
        return taken

    def putback(self, keys: list[int], anon: bool, activate: bool = False) -> None:
        """Isolated pages reclaim could not free go back: to the head of the queue they came
        from, or active (activate_locked: pgactivate)."""
        for key in keys:
            q, flags = self._isolated.pop(key)
            if activate:
                self._put(key, _lru(anon, True), flags & ~PG_REFERENCED)
                self.events["pgactivate"] += 1
            else:
                self._put(key, q, flags)

    def evict(self, key: int, anon: bool) -> int:
        """The isolated page is gone from memory: its shadow for the slot it left
        (workingset_eviction: the age before this eviction, then the age advances)."""
        q, flags = self._isolated.pop(key)
        mix = self._probation_evictions
        t = 0 if anon else 1
        mix[t] += ((q >= _Q_PROBATION_ANON) - mix[t]) * EVICTION_MIX_DECAY
        self.events[_PGSTEAL[anon]] += 1
        eviction = self.nonresident_age
        self.nonresident_age = eviction + 1
        # pack_shadow, inline: this runs once per page reclaimed
        return (((eviction << NODES_SHIFT | self.node) << 1 | anon) << 1) | bool(flags & PG_WORKINGSET)

    def evict_many(self, keys: list[int], anon: bool) -> list[int]:
        """`evict` for a batch of isolated pages, in order: their shadows."""
        isolated, mix = self._isolated, self._probation_evictions
        t = 0 if anon else 1
        taken = list(map(isolated.pop, keys))
        share = mix[t]
        for q, _ in taken:
            share += ((q >= _Q_PROBATION_ANON) - share) * EVICTION_MIX_DECAY
        mix[t] = share
        # pack_shadow of consecutive ages: the packed values step by one age unit, plus each page's
        # PG_workingset (flag 2) in bit 0.
        step = 1 << (NODES_SHIFT + 2)
        first = pack_shadow(self.nonresident_age, self.node, anon, False)
        shadows = [shadow | (flags & PG_WORKINGSET) >> 1
                   for shadow, (_, flags) in zip(range(first, first + len(keys) * step, step), taken, strict=True)]
        self.nonresident_age += len(keys)
        self.events[_PGSTEAL[anon]] += len(keys)
        return shadows

    def rotate(self, key: int) -> None:
        q = self._where.get(key)
        if q is not None and _QUEUE_LRU[q] in (LRU_INACTIVE_ANON, LRU_INACTIVE_FILE):
            self._queues[q].move_to_end(key, last=False)
            self.events["pgrotated"] += 1

    # --- anon/file balance (get_scan_count, lru_note_cost) ---------------------------------

    def note_cost(self, anon: bool, nr_io: int, nr_rotated: int) -> None:
        """lru_note_cost: I/O weighs SWAP_CLUSTER_MAX times a rotation; halve both costs once
        they exceed a quarter of the LRU pages, so recent events weigh most."""
        cost = nr_io * SWAP_CLUSTER_MAX + nr_rotated
        if not cost:
            return
        if anon:
            self.anon_cost += cost
        else:
            self.file_cost += cost
        lrusize = len(self._where) - len(self._queues[LRU_UNEVICTABLE])
        if self.anon_cost + self.file_cost > lrusize // 4:
            self.anon_cost //= 2
            self.file_cost //= 2

    def snapshot_refaults(self) -> None:
        """End of a reclaim pass: later workingset activations mean a new working set forms."""
        self._refaults_snapshot = (self.events["workingset_activate_anon"], self.events["workingset_activate_file"])

    def may_deactivate(self, anon: bool) -> bool:
        refaults = self.events["workingset_activate_anon" if anon else "workingset_activate_file"]
        return refaults != self._refaults_snapshot[0 if anon else 1] or self.inactive_is_low(anon)

    def scan_counts(self, nr: int, swappiness: int, may_swap: bool, *, priority: int = DEF_PRIORITY,
                    file_is_tiny: bool = False) -> tuple[int, int]:
        """get_scan_count: (anon, file) pages to scan for a target of nr."""
        anon_size = self.nr(LRU_INACTIVE_ANON) + self.nr(LRU_ACTIVE_ANON)
        file_size = self.nr(LRU_INACTIVE_FILE) + self.nr(LRU_ACTIVE_FILE)
        if not may_swap or not anon_size:
            return 0, nr  # SCAN_FILE: nothing to swap to, or nothing to swap
        if not file_size or file_is_tiny:
            return nr, 0  # SCAN_ANON
        if priority == 0 and swappiness:
            anon = nr * anon_size // (anon_size + file_size)  # SCAN_EQUAL
            return anon, nr - anon
        if self.nr(LRU_INACTIVE_FILE) >> priority and not self.may_deactivate(False):
            return 0, nr  # cache_trim_mode: plenty of inactive file cache that is not thrashing
        total = self.anon_cost + self.file_cost
        a, f = total + self.anon_cost, total + self.file_cost
        ap = swappiness * (a + f + 1) // (a + 1)
        fp = (MAX_SWAPPINESS - swappiness) * (a + f + 1) // (f + 1)
        # SCAN_FRACT: each list is scanned in proportion to its size times its type's fraction.
        wa, wf = anon_size * ap, file_size * fp
        anon = nr * wa // (wa + wf) if wa + wf else 0
        return anon, nr - anon
