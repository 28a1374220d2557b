"""block/badblocks.c: a table of bad sector ranges, and the text of a gendisk's `badblocks` file.

Contract:
- `BadBlocks` keeps acknowledged bad ranges in 512-byte sectors, sorted and merged. Linux's
  table holds at most MAX_BADBLOCKS entries of at most BB_MAX_LEN sectors each, so a long range
  takes several entries; `set` refuses with ENOSPC what would not fit, as badblocks_set fails.
- `set(start, length)` marks a range; `clear(start, length)` unmarks one, splitting ranges it
  cuts (a drive that reallocates sectors on a write clears them so); `first_bad(start, length)`
  is the first bad sector in [start, start + length), or None. Checks bisect the table: their
  cost grows with the log of the ranges, never with the sectors.
- `show()` renders badblocks_show: one "START LEN" line per table entry; `store(text)` parses
  badblocks_store: "<sector> <length>" with an optional newline (sscanf "%llu %d%c": anything
  else after the length is EINVAL, a length of 0 or less is EINVAL). The file cannot clear.
"""

from __future__ import annotations

import errno
import re
from bisect import bisect_right

from rinuxfs.errors import KernelError

MAX_BADBLOCKS = 512  # entries in the table's one page (8-byte entries)
BB_MAX_LEN = 512  # sectors one entry covers at most
_STORE = re.compile(r"\s*\+?(\d+)\s+([+-]?\d+)(.?)", re.S)


class BadBlocks:
    def __init__(self) -> None:
        self._starts: list[int] = []  # sorted, disjoint, not touching: merged ranges [start, end)
        self._ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._starts)

    def ranges(self) -> list[tuple[int, int]]:
        """The merged ranges as (start, length)."""
        return [(s, e - s) for s, e in zip(self._starts, self._ends, strict=True)]

    def entries(self) -> list[tuple[int, int]]:
        """The table's entries: each merged range cut into pieces of at most BB_MAX_LEN sectors."""
        rows = []
        for start, end in zip(self._starts, self._ends, strict=True):
            for s in range(start, end, BB_MAX_LEN):
                rows.append((s, min(BB_MAX_LEN, end - s)))
        return rows

    def first_bad(self, start: int, length: int) -> int | None:
        if not self._starts or length <= 0:
            return None
        i = bisect_right(self._ends, start)  # the first range that ends after `start`
        if i < len(self._starts) and self._starts[i] < start + length:
            return max(start, self._starts[i])
        return None

    def set(self, start: int, length: int) -> None:
        if length <= 0:
            raise KernelError(errno.EINVAL, "a bad block range needs a positive length")
        end = start + length
        lo = bisect_right(self._ends, start - 1)  # first range that ends at or after start (touching merges)
        hi = bisect_right(self._starts, end)  # ranges starting at or before end merge too
        new_start = min([start, *self._starts[lo:hi]])
        new_end = max([end, *self._ends[lo:hi]])
        starts = self._starts[:lo] + [new_start] + self._starts[hi:]
        ends = self._ends[:lo] + [new_end] + self._ends[hi:]
        if sum(-(-(e - s) // BB_MAX_LEN) for s, e in zip(starts, ends, strict=True)) > MAX_BADBLOCKS:
            raise KernelError(errno.ENOSPC, "the bad block table is full")
        self._starts, self._ends = starts, ends

    def clear(self, start: int, length: int) -> None:
        if length <= 0 or not self._starts:
            return
        end = start + length
        lo = bisect_right(self._ends, start)  # first range ending after start
        hi = bisect_right(self._starts, end - 1)  # ranges starting before end
        if lo >= hi:
            return
        keep_s: list[int] = []
        keep_e: list[int] = []
        if self._starts[lo] < start:
            keep_s.append(self._starts[lo])
            keep_e.append(start)
        if self._ends[hi - 1] > end:
            keep_s.append(end)
            keep_e.append(self._ends[hi - 1])
        self._starts[lo:hi] = keep_s
        self._ends[lo:hi] = keep_e

    def show(self) -> str:
        return "".join(f"{s} {n}\n" for s, n in self.entries())

    def store(self, text: str) -> None:
        m = _STORE.match(text)
        if m is None or m.group(3) not in ("", "\n"):
            raise KernelError(errno.EINVAL, f"badblocks takes \"<sector> <length>\", not {text!r}")
        length = int(m.group(2))
        if length <= 0:
            raise KernelError(errno.EINVAL, "a bad block range needs a positive length")
        self.set(int(m.group(1)), length)
