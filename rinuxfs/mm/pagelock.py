"""Page locks for a mapping, by range: the pages a request is working on are off limits to reclaim.

Contract: `with locks.hold(first, last):` marks indexes first..last locked for the duration of the
block (requests nest: reclaim set off by a request's own allocation may run inside it);
`locked(index)` is what reclaim asks before taking a page (folio_trylock failing), `unlocked(pages)`
the same for a batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class PageLocks:
    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: tuple[tuple[int, int], ...] = ()  # a tuple: a mapping nobody is working on costs nothing

    @contextlib.contextmanager
    def hold(self, first: int, last: int) -> Iterator[None]:
        outer = self._held
        self._held = (*outer, (first, last))
        try:
            yield
        finally:
            self._held = outer

    def __bool__(self) -> bool:
        """Whether any page is locked now (reclaim between requests finds none)."""
        return bool(self._held)

    def locked(self, index: int) -> bool:
        if not self._held:
            return False
        return any(first <= index <= last for first, last in self._held)

    def unlocked(self, pages: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The (index, pfn) pairs of `pages` whose index nobody holds: reclaim's batch of trylocks."""
        for first, last in self._held:
            pages = [page for page in pages if not first <= page[0] <= last]
        return pages
