"""The LRU lists of one node (struct lruvec): which cache pages to reclaim first.

Contract (the same whether the caller is reclaim in the daemon or the replay tool):
- Pages are keys (the daemon uses PFNs), each on exactly one list: inactive/active anon
  (swap-backed: tmpfs pages), inactive/active file (block-device cache), or unevictable.
- `add(key, anon, shadow)` puts a new page on its inactive list (folio_add_lru), unless its
  `shadow` (what `evict` returned when an earlier copy of the page left) says it was part of the
  working set: then it starts active (workingset_refault/activate), and the refault is counted.
- `add_many(keys, anon, shadows)` and `access_many(keys)` do the same for a batch, as fast as the
  lists allow (one request brings in or touches up to 256 pages).
- `access(key)` is a hit (folio_mark_accessed): a first access sets the referenced bit, a second
  one on the inactive list promotes the page to active (pgactivate).
- `remove(key)` takes out a page its owner freed (truncate, unlink): no shadow, no counters.
- `isolate(anon, nr)` takes up to `nr` reclaim candidates from the tail of the inactive list
  (shrink_inactive_list); every page looked at counts as scanned. The pages here are page cache
  that no process maps, so a page's referenced bit does not keep it (folio_check_references):
  what protects a page is a second access, which has already moved it to the active list.
  Before isolating, the active list is aged into the inactive one while `inactive_is_low`
  (shrink_active_list: pgrefill, pgdeactivate).
- The caller then tries to free each candidate. For each one it frees, it calls `evict(key)`
  and keeps the shadow it returns where the page was (the page cache slot); for each it could
  not free (dirty and unwritable, swap full, I/O error) it calls `putback(keys, activate)`.
- `scan_counts(nr, swappiness, may_swap)` splits a reclaim target between anon and file as
  get_scan_count does.
- `nr(lru)` is the size of a list; `on_change(lru, delta)` (if given) is called on every size
  change, so the node's nr_inactive_anon/... counters follow the lists without a second copy.
- Counters (pgactivate, pgdeactivate, pgrefill, pgrotated, workingset_refault_anon/_file,
  workingset_activate_*, workingset_restore_*) accumulate in `events`.

Every operation is O(1) per page (dicts in insertion order: the oldest page first).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from itertools import islice

LRU_INACTIVE_ANON, LRU_ACTIVE_ANON, LRU_INACTIVE_FILE, LRU_ACTIVE_FILE, LRU_UNEVICTABLE = range(5)
LRU_NAMES = ("inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable")
_REFERENCED = 1

OnChange = Callable[[int, int], None]


def _lru(anon: bool, active: bool) -> int:
    return (0 if anon else 2) + (1 if active else 0)


class Lruvec:
    def __init__(self, on_change: OnChange | None = None, total_pages: int = 0) -> None:
        # key -> flags (bit 0: referenced), oldest first
        self.lists: list[dict[int, int]] = [{} for _ in LRU_NAMES]
        self.where: dict[int, int] = {}  # key -> list it is on
        self.on_change = on_change
        self.events: Counter[str] = Counter()
        self.nonresident_age = 0  # lruvec->nonresident_age: evictions and activations so far
        self.total_pages = total_pages  # for inactive_ratio (int_sqrt(10 * GB))
        self.anon_cost = 0
        self.file_cost = 0

    def nr(self, lru: int) -> int:
        return len(self.lists[lru])

    def __contains__(self, key: int) -> bool:
        return key in self.where

    # --- list moves ----------------------------------------------------------------------

    def _put(self, key: int, lru: int, flags: int = 0) -> None:
        self.lists[lru][key] = flags
        self.where[key] = lru
        if self.on_change is not None:
            self.on_change(lru, 1)

    def _take(self, key: int) -> int:
        lru = self.where.pop(key)
        del self.lists[lru][key]
        if self.on_change is not None:
            self.on_change(lru, -1)
        return lru

    # --- the interface -------------------------------------------------------------------

    def add(self, key: int, anon: bool, shadow: int | None = None, unevictable: bool = False) -> None:
        if unevictable:
            self._put(key, LRU_UNEVICTABLE)
            return
        active = False
        if shadow is not None:
            kind = "anon" if anon else "file"
            self.events[f"workingset_refault_{kind}"] += 1
            if self._refault_is_workingset(shadow, anon):
                active = True
                self.events[f"workingset_activate_{kind}"] += 1
                self.nonresident_age += 1
        self._put(key, _lru(anon, active))

    def _refault_is_workingset(self, shadow: int, anon: bool) -> bool:
        """workingset_test_recent: activate if the refault distance fits in the pages that could make room."""
        distance = self.nonresident_age - shadow
        workingset = self.nr(LRU_ACTIVE_FILE)
        if anon:
            workingset += self.nr(LRU_INACTIVE_FILE)
        workingset += self.nr(LRU_ACTIVE_ANON) + (0 if anon else self.nr(LRU_INACTIVE_ANON))
        return distance <= workingset

    def add_many(self, keys: list[int], anon: bool, shadows: list[int | None] | None = None) -> None:
        """`add` for a batch: what a request that brings in many pages at once calls."""
        if shadows is not None and any(sh is not None for sh in shadows):
            for key, shadow in zip(keys, shadows, strict=True):
                self.add(key, anon, shadow)
            return
        lru = _lru(anon, False)
        self.lists[lru].update(dict.fromkeys(keys, 0))
        self.where.update(dict.fromkeys(keys, lru))
        if self.on_change is not None:
            self.on_change(lru, len(keys))

    def access_many(self, keys: list[int]) -> None:
        """`access` for each key, in order."""
        for key in keys:
            self.access(key)

    def access(self, key: int) -> None:
        lru = self.where.get(key)
        if lru is None or lru == LRU_UNEVICTABLE:
            return
        flags = self.lists[lru][key]
        if lru in (LRU_INACTIVE_ANON, LRU_INACTIVE_FILE) and flags & _REFERENCED:
            self._take(key)
            self._put(key, lru + 1)
            self.events["pgactivate"] += 1
            self.nonresident_age += 1
        else:
            self.lists[lru][key] = flags | _REFERENCED

    def remove(self, key: int) -> None:
        if key in self.where:
            self._take(key)

    def inactive_ratio(self) -> int:
        gb = (self.total_pages * 4096) >> 30
        return math.isqrt(10 * gb) if gb else 1

    def inactive_is_low(self, anon: bool) -> bool:
        inactive, active = self.nr(_lru(anon, False)), self.nr(_lru(anon, True))
        return inactive * self.inactive_ratio() < active

    def _age_active(self, anon: bool, nr: int) -> None:
        """shrink_active_list: move up to nr pages from the active tail to the inactive head."""
        active = self.lists[_lru(anon, True)]
        moved = 0
        for key in list(islice(active, nr)):
            self.events["pgrefill"] += 1
            self._take(key)
            self._put(key, _lru(anon, False))
            moved += 1
        self.events["pgdeactivate"] += moved

    def isolate(self, anon: bool, nr: int) -> list[int]:
        if self.inactive_is_low(anon):
            self._age_active(anon, max(nr, 32))
        inactive = self.lists[_lru(anon, False)]
        taken: list[int] = []
        for key in list(islice(inactive, nr)):
            # Page cache that no process maps: a referenced bit alone does not save it
            # (folio_check_references); a second access has already moved it to the active list.
            self._take(key)
            taken.append(key)
        self.events[f"pgscan_{'anon' if anon else 'file'}"] += len(taken)
        return taken

    def putback(self, keys: list[int], anon: bool, activate: bool = False) -> None:
        for key in keys:
            self._put(key, _lru(anon, activate))
        if activate:
            self.events["pgactivate"] += len(keys)

    def evict(self, key: int, anon: bool) -> int:
        """The page is gone from memory: its shadow (the eviction time) for the slot it left."""
        self.events[f"pgsteal_{'anon' if anon else 'file'}"] += 1
        self.nonresident_age += 1
        return self.nonresident_age

    def scan_counts(self, nr: int, swappiness: int, may_swap: bool) -> tuple[int, int]:
        """get_scan_count: (anon, file) pages to scan for a target of nr."""
        anon_size = self.nr(LRU_INACTIVE_ANON) + self.nr(LRU_ACTIVE_ANON)
        file_size = self.nr(LRU_INACTIVE_FILE) + self.nr(LRU_ACTIVE_FILE)
        if not may_swap or not anon_size or swappiness == 0 and file_size:
            return 0, nr
        if not file_size:
            return nr, 0
        total = self.anon_cost + self.file_cost
        a, f = total + self.anon_cost, total + self.file_cost
        ap = swappiness * (a + f + 1) // (a + 1)
        fp = (200 - swappiness) * (a + f + 1) // (f + 1)
        anon = nr * ap // (ap + fp)
        return anon, nr - anon
