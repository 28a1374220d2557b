"""struct page: the state of each allocated frame, kept only for allocated frames.

Contract:
- `allocated(runs, flags)` gives frames a struct page; a frame that already
  has one is a frame handed out twice, and raises BadPageState, as Linux's
  "BUG: Bad page state" reports it.
- `freed(runs)` takes the struct pages away; freeing a frame that has none
  (a double free) raises BadPageState.
- `set_owner(pfns, mapping, indexes)` records which page-cache mapping and
  index a page holds (what reclaim needs to find a page's owner), and
  `owners(pfns)` reads it back; `set_memcg`/`memcg` whom a page is charged to;
  `set_flags` sets PG_ bits.

Storage is sparse, like SPARSEMEM_VMEMMAP populating its memmap on demand:
RAM is cut into sections of 512 frames (2 MiB), and a section's arrays exist
while at least one of its frames is allocated: 18 bytes a frame (flags u16,
mapping id u32, index u64, charged task u32), nothing for free memory. Work is per run of
frames, so a large allocation costs a slice assignment per section.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterable

SECTION_SHIFT = 9
SECTION_PAGES = 1 << SECTION_SHIFT
_MASK = SECTION_PAGES - 1


class PG(enum.IntFlag):
    """Page flags (include/linux/page-flags.h), plus the allocation marker Linux keeps as a refcount."""

    locked = 1 << 0
    referenced = 1 << 1
    uptodate = 1 << 2
    dirty = 1 << 3
    lru = 1 << 4
    active = 1 << 5
    workingset = 1 << 6
    reserved = 1 << 7
    private = 1 << 8
    writeback = 1 << 9
    head = 1 << 10
    swapcache = 1 << 11
    swapbacked = 1 << 12
    unevictable = 1 << 13
    hugetlb = 1 << 14
    allocated = 1 << 15  # page_count() > 0: the frame belongs to someone


class BadPageState(Exception):
    """A frame allocated twice or freed twice: a kernel bug, reported as Linux does and never hidden."""


class _Section:
    """The struct pages of one section. `index` holds page->index less the frame's number: a run of
    frames holding consecutive pages of a file (what a stream allocates) is one repeated value,
    written as a slice without a Python int per page."""

    __slots__ = ("flags", "mapping", "index", "memcg", "used")

    def __init__(self) -> None:
        self.flags = array("H", bytes(2 * SECTION_PAGES))
        self.mapping = array("I", bytes(4 * SECTION_PAGES))
        self.index = array("q", bytes(8 * SECTION_PAGES))
        self.memcg = array("I", bytes(4 * SECTION_PAGES))
        self.used = 0


def _pieces(pfn: int, n: int) -> Iterable[tuple[int, int, int]]:
    """A run of frames cut at section boundaries: (section number, first slot, count)."""
    end = pfn + n
    while pfn < end:
        sec, slot = pfn >> SECTION_SHIFT, pfn & _MASK
        count = min(SECTION_PAGES - slot, end - pfn)
        yield sec, slot, count
        pfn += count


class MemMap:
    def __init__(self) -> None:
        self.sections: dict[int, _Section] = {}

    def allocated(self, runs: Iterable[tuple[int, int]], flags: int = 0) -> None:
        fill = PG.allocated | flags
        for pfn, n in runs:
            for sec, slot, count in _pieces(pfn, n):
                section = self.sections.get(sec)
                if section is None:
                    section = self.sections[sec] = _Section()
                elif section.flags[slot : slot + count].count(0) != count:
                    raise BadPageState(f"BUG: Bad page state: pfn:{_first_set(section, slot, count, sec):#x} "
                                       "allocated while in use")
                if count == 1:
                    section.flags[slot] = fill
                else:
                    section.flags[slot : slot + count] = array("H", [fill]) * count
                section.used += count

    def freed(self, runs: Iterable[tuple[int, int]]) -> None:
        for pfn, n in runs:
            for sec, slot, count in _pieces(pfn, n):
                section = self.sections.get(sec)
                if section is None or section.flags[slot : slot + count].count(0):
                    raise BadPageState(f"BUG: Bad page state: pfn:{pfn:#x} freed while free")
                section.used -= count
                if not section.used:
                    del self.sections[sec]
                    continue
                if count == 1:  # a lone frame (reclaim frees scattered ones): no arrays built for it
                    section.flags[slot] = section.mapping[slot] = section.memcg[slot] = 0
                    continue
                section.flags[slot : slot + count] = array("H", bytes(2 * count))
                section.mapping[slot : slot + count] = array("I", bytes(4 * count))
                section.memcg[slot : slot + count] = array("I", bytes(4 * count))

    def set_flags(self, pfns: Iterable[int], flags: int) -> None:
        for pfn in pfns:
            section = self.sections[pfn >> SECTION_SHIFT]
            section.flags[pfn & _MASK] |= flags

    def set_owner(self, pfns: list[int], mapping: int, indexes: list[int]) -> None:
        """page->mapping and page->index for page-cache pages; one slice per section when both run in step."""
        n = len(pfns)
        if not n:
            return
        p0, i0 = pfns[0], indexes[0]
        if pfns[-1] == p0 + n - 1 and indexes[-1] == i0 + n - 1 and pfns == list(range(p0, p0 + n)) \
                and indexes == list(range(i0, i0 + n)):
            self.set_owner_run(p0, n, mapping, i0)
            return
        for pfn, index in zip(pfns, indexes, strict=True):
            section = self.sections[pfn >> SECTION_SHIFT]
            section.mapping[pfn & _MASK] = mapping
            section.index[pfn & _MASK] = index - pfn

    def set_owner_run(self, pfn: int, count: int, mapping: int, index: int) -> None:
        """set_owner for `count` frames from `pfn` that hold the pages from `index` on, in step."""
        fill = array("I", [mapping])
        step = array("q", [index - pfn])  # the same for every page of the run: see _Section
        for sec, slot, n in _pieces(pfn, count):
            section = self.sections[sec]
            section.mapping[slot : slot + n] = fill * n
            section.index[slot : slot + n] = step * n

    def set_memcg(self, pfns: list[int], charged: int) -> None:
        """Whom a page is charged to (page->memcg_data; here the pid of the task that allocated it)."""
        n = len(pfns)
        if n > 1 and pfns[-1] - pfns[0] == n - 1 and pfns == list(range(pfns[0], pfns[0] + n)):
            self.set_memcg_run(pfns[0], n, charged)
            return
        for pfn in pfns:
            self.sections[pfn >> SECTION_SHIFT].memcg[pfn & _MASK] = charged

    def set_memcg_run(self, pfn: int, count: int, charged: int) -> None:
        for sec, slot, n in _pieces(pfn, count):  # consecutive frames: a slice per section
            self.sections[sec].memcg[slot : slot + n] = array("I", [charged]) * n

    def memcg(self, pfns: list[int]) -> list[int]:
        sections = self.sections
        n = len(pfns)
        if n > 1 and pfns[-1] - pfns[0] == n - 1 and pfns == list(range(pfns[0], pfns[0] + n)):
            out: list[int] = []
            for sec, slot, count in _pieces(pfns[0], n):
                out += sections[sec].memcg[slot : slot + count]
            return out
        return [sections[pfn >> SECTION_SHIFT].memcg[pfn & _MASK] for pfn in pfns]

    def owners(self, pfns: list[int]) -> tuple[list[int], list[int]]:
        """(mapping ids, indexes) of the pages; mapping 0 means none. A batch within one section
        (reclaim's, usually) is read without a section lookup per page."""
        if not pfns:
            return [], []
        sec = pfns[0] >> SECTION_SHIFT
        section = self.sections.get(sec)
        if section is not None and max(pfns) >> SECTION_SHIFT == sec == min(pfns) >> SECTION_SHIFT:
            mapping, index = section.mapping, section.index
            return [mapping[pfn & _MASK] for pfn in pfns], [index[pfn & _MASK] + pfn for pfn in pfns]
        ids, indexes = [], []
        for pfn in pfns:
            section = self.sections.get(pfn >> SECTION_SHIFT)
            ids.append(0 if section is None else section.mapping[pfn & _MASK])
            indexes.append(0 if section is None else section.index[pfn & _MASK] + pfn)
        return ids, indexes

    def nbytes(self) -> int:
        """What the struct pages cost the host (the arrays; object headers aside)."""
        return len(self.sections) * SECTION_PAGES * 18


def _first_set(section: _Section, slot: int, count: int, sec: int) -> int:
    for i in range(slot, slot + count):
        if section.flags[i]:
            return (sec << SECTION_SHIFT) + i
    return sec << SECTION_SHIFT
