"""Address spaces: the pages of one file, kept in frames of the simulated RAM.

Contract (the page cache of one inode, struct address_space):
- `pages` maps a page index (file offset >> 12) to the PFN holding it. An index
  that is absent is a hole and reads as zeros; nothing is allocated for it.
- `write(offset, data)` allocates only the pages it touches, charging them to
  the owner's quota first (ENOSPC, nothing changed) and to the memory manager
  (ENOMEM, nothing changed); its cost is O(pages touched), never O(file size).
- `read(offset, size)` returns the bytes; a range in consecutive frames comes
  back as a view of RAM, valid only until the address space next changes
  (the FUSE reply copies it at once), anything else as one joined copy.
- `truncate(size)` frees every page wholly past `size` and zeroes the tail of
  the page that straddles it, so a later extension reads zeros there.
- `release()` frees everything; the address space must not be used after it.

Each resident page is counted in the node counters given as `account_items`
(for tmpfs: shmem, file pages, inactive anon LRU), so /proc/meminfo follows
page ownership without a second copy of the numbers.
"""

from __future__ import annotations

from typing import Protocol

from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE
from rinuxfs.mm.core import MemoryManager

_PAGE_MASK = PAGE_SIZE - 1
_ZERO_PAGE = bytes(PAGE_SIZE)


class PageQuota(Protocol):
    """Who pays for the pages (a tmpfs superblock's size= limit)."""

    def charge(self, pages: int) -> None: ...
    def uncharge(self, pages: int) -> None: ...


class AddressSpace:
    def __init__(self, mm: MemoryManager, quota: PageQuota, account_items: tuple[str, ...]) -> None:
        self.mm = mm
        self.quota = quota
        self.account_items = account_items
        self.pages: dict[int, int] = {}
        self.mapping_id = mm.register_mapping(self)

    @property
    def nrpages(self) -> int:
        return len(self.pages)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        src = memoryview(data).cast("B")
        length = len(src)
        if not length:
            return
        end = offset + length
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        if None in map(self.pages.get, range(first, last + 1)):
            self._populate([i for i in range(first, last + 1) if i not in self.pages], offset, end)
        ram = self.mm.ram.view
        pos, done = offset, 0
        for index, pfn, count in self._runs(first, last):
            chunk = min(end, (index + count) << PAGE_SHIFT) - pos
            phys = (pfn << PAGE_SHIFT) + (pos - (index << PAGE_SHIFT))  # type: ignore[operator]
            ram[phys : phys + chunk] = src[done : done + chunk]
            pos += chunk
            done += chunk

    def _runs(self, first: int, last: int) -> list[tuple[int, int | None, int]]:
        """Pages first..last as runs (first index, first PFN or None for a hole, count) of consecutive frames.

        The common case, one run of consecutive frames, is recognised by list
        comparisons that run in C: a per-page Python loop would cost more than
        the copy of the data itself.
        """
        pfns = list(map(self.pages.get, range(first, last + 1)))
        n = len(pfns)
        head = pfns[0]
        if head is not None and pfns[-1] == head + n - 1 and pfns == list(range(head, head + n)):
            return [(first, head, n)]
        runs: list[tuple[int, int | None, int]] = []
        start = 0
        for k in range(1, n + 1):
            if k < n:
                prev, cur = pfns[k - 1], pfns[k]
                if (prev is None and cur is None) or (prev is not None and cur == prev + 1):
                    continue
            runs.append((first + start, pfns[start], k - start))
            start = k
        return runs

    def _populate(self, indexes: list[int], offset: int, end: int) -> None:
        self.quota.charge(len(indexes))
        try:
            pfns = self.mm.alloc_pages(len(indexes))
        except BaseException:
            self.quota.uncharge(len(indexes))
            raise
        ram = self.mm.ram.view
        first_partial = offset >> PAGE_SHIFT if offset & _PAGE_MASK else -1
        last_partial = (end - 1) >> PAGE_SHIFT if end & _PAGE_MASK else -1
        for index, pfn in zip(indexes, pfns, strict=True):
            self.pages[index] = pfn
            # A new page the write covers only in part must not show a freed frame's stale bytes.
            if index == first_partial or index == last_partial:
                ram[pfn << PAGE_SHIFT : (pfn + 1) << PAGE_SHIFT] = _ZERO_PAGE
        self.mm.account(self.account_items, pfns)
        self.mm.memmap.set_owner(pfns, self.mapping_id, indexes)

    def read(self, offset: int, size: int) -> bytes | memoryview:
        if size <= 0:
            return b""
        end = offset + size
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        ram = self.mm.ram.view
        parts: list[bytes | memoryview] = []
        pos = offset
        for index, pfn, count in self._runs(first, last):
            chunk = min(end, (index + count) << PAGE_SHIFT) - pos
            if pfn is None:
                parts.append(bytes(chunk))
            else:
                phys = (pfn << PAGE_SHIFT) + (pos - (index << PAGE_SHIFT))
                parts.append(ram[phys : phys + chunk])
            pos += chunk
        if len(parts) == 1:
            return parts[0]  # zero-copy: the FUSE reply copies it out before anything can change the page
        return b"".join(parts)

    def truncate(self, size: int) -> None:
        keep = (size + _PAGE_MASK) >> PAGE_SHIFT
        gone = [i for i in self.pages if i >= keep]
        if gone:
            self._free([self.pages.pop(i) for i in gone])
        if size & _PAGE_MASK:
            pfn = self.pages.get(size >> PAGE_SHIFT)
            if pfn is not None:
                start = (pfn << PAGE_SHIFT) + (size & _PAGE_MASK)
                self.mm.ram.view[start : (pfn + 1) << PAGE_SHIFT] = _ZERO_PAGE[: PAGE_SIZE - (size & _PAGE_MASK)]

    def release(self) -> None:
        pfns = list(self.pages.values())
        self.pages.clear()
        self._free(pfns)

    def _free(self, pfns: list[int]) -> None:
        if not pfns:
            return
        self.mm.account(self.account_items, pfns, -1)
        self.mm.free_pages(pfns)
        self.quota.uncharge(len(pfns))
