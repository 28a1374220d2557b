"""Address spaces: the pages of one file, kept in frames of the simulated RAM.

Contract (the page cache of one inode, struct address_space):
- `pages` maps a page index (file offset >> 12) to the PFN holding it. An index
  that is absent is a hole and reads as zeros; nothing is allocated for it.
- `write(offset, data)` allocates only the pages it touches, charging them to
  the owner's quota first (ENOSPC, nothing changed) and to the memory manager
  (ENOMEM, nothing changed); its cost is O(pages touched), never O(file size).
- `read(offset, size)` copies out; consecutive pages in consecutive frames are
  copied as one slice.
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
        pages = self.pages
        missing = [i for i in range(first, last + 1) if i not in pages]
        if missing:
            self._populate(missing, offset, end)
        ram = self.mm.ram.view
        pos, done, i = offset, 0, first
        while i <= last:
            pfn = pages[i]
            run = i
            while run < last and pages.get(run + 1) == pfn + (run + 1 - i):
                run += 1
            chunk = min(end, (run + 1) << PAGE_SHIFT) - pos
            phys = (pfn << PAGE_SHIFT) + (pos - (i << PAGE_SHIFT))
            ram[phys : phys + chunk] = src[done : done + chunk]
            pos += chunk
            done += chunk
            i = run + 1

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
        self.mm.account(self.account_items, len(indexes))

    def read(self, offset: int, size: int) -> bytes:
        if size <= 0:
            return b""
        end = offset + size
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        pages = self.pages
        ram = self.mm.ram.view
        parts: list[bytes | memoryview] = []
        pos, i = offset, first
        while i <= last:
            pfn = pages.get(i)
            run = i
            if pfn is None:
                while run < last and (run + 1) not in pages:
                    run += 1
                parts.append(bytes(min(end, (run + 1) << PAGE_SHIFT) - pos))
            else:
                while run < last and pages.get(run + 1) == pfn + (run + 1 - i):
                    run += 1
                phys = (pfn << PAGE_SHIFT) + (pos - (i << PAGE_SHIFT))
                chunk = min(end, (run + 1) << PAGE_SHIFT) - pos
                parts.append(ram[phys : phys + chunk])
            pos = min(end, (run + 1) << PAGE_SHIFT)
            i = run + 1
        if len(parts) == 1:
            return bytes(parts[0])
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
        self.mm.free_pages(pfns)
        self.mm.account(self.account_items, -len(pfns))
        self.quota.uncharge(len(pfns))
