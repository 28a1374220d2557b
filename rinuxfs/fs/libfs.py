"""Helpers filesystems share (Linux's fs/libfs.c): stable directory offsets for readdir.

`OffsetMap` gives each name of a directory a readdir position (a cookie) when the name is
added, as Linux's simple_offset_add does for tmpfs since 6.6. A readdir continues after the
cookie it was given, whatever happened meanwhile: a name present for the whole listing is
returned exactly once, a name added or removed during it may or may not be (POSIX), and no
open directory keeps a copy of the listing, so a reader holds no memory however large the
directory is. Finding where to continue is a binary search; a removed name leaves a hole
that is swept once holes outnumber the names.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

DIR_OFFSET_MIN = 3  # 1 and 2 are "." and ".."


class OffsetMap:
    def __init__(self) -> None:
        self._next = DIR_OFFSET_MIN
        self._offset_of: dict[bytes, int] = {}
        self._offsets: list[int] = []  # ascending: names are only ever appended
        self._names: list[bytes | None] = []  # the name at each offset, None where it was removed

    @property
    def next(self) -> int:
        """The offset the next name will get."""
        return self._next

    def add(self, name: bytes) -> None:
        offset = self._next
        self._next += 1
        self._offset_of[name] = offset
        self._offsets.append(offset)
        self._names.append(name)

    def remove(self, name: bytes) -> None:
        offset = self._offset_of.pop(name)
        self._names[bisect_left(self._offsets, offset)] = None
        if len(self._offsets) > 2 * len(self._offset_of) + 64:
            self._sweep()

    def _sweep(self) -> None:
        kept = [(o, n) for o, n in zip(self._offsets, self._names, strict=True) if n is not None]
        # New lists, so a listing that is iterating over the old ones is not disturbed.
        self._offsets = [o for o, _ in kept]
        self._names = [n for _, n in kept]

    def after(self, start: int) -> Iterator[tuple[int, bytes]]:
        """(offset, name) of every name past `start`, in offset order."""
        offsets, names = self._offsets, self._names
        for i in range(bisect_right(offsets, start), len(offsets)):
            name = names[i]
            if name is not None:
                yield offsets[i], name
