"""Boot memory: the firmware's memory map (e820) and memblock, the allocator the kernel uses before the buddy.

The machine's e820 map, as a PC BIOS reports it (no PCI hole: RAM is one
range from 0 to --mem, see README "Where rinuxfs differs"):

    [0x00000000, 0x00001000)  reserved  real-mode IVT and BDA: PFN 0 is never RAM to Linux
    [0x00001000, 0x0009f000)  usable
    [0x0009f000, 0x00100000)  reserved  EBDA, VGA memory, BIOS ROM
    [0x00100000, mem)         usable

memblock then reserves, in Linux's order: the whole first MiB (x86 keeps it
since 5.13), the kernel image (at 16 MiB, CONFIG_PHYSICAL_START, on a machine
that has room, else right after the first MiB), and, top-down in each node,
that node's memmap (64 bytes of struct page per present frame) and the pages
the kernel allocates before the buddy allocator exists. What remains of the
usable ranges is handed to the buddy allocator (memblock_free_all): those are
the zones' managed pages.

Contract: ranges are [start, end) in PFNs, sorted and disjoint; nothing here
touches RAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rinuxfs.hw.ram import PAGE_SHIFT

STRUCT_PAGE_SIZE = 64
_MIB = (1 << 20) >> PAGE_SHIFT
FIRST_MIB = _MIB
E820_HOLE = (0x9F000 >> PAGE_SHIFT, 0x100000 >> PAGE_SHIFT)
PHYSICAL_START = 16 * _MIB  # CONFIG_PHYSICAL_START
# A distribution kernel's image, as the boot line "Memory: …" reports it (kB).
KERNEL_CODE_KB, KERNEL_RWDATA_KB, KERNEL_RODATA_KB, KERNEL_INIT_KB, KERNEL_BSS_KB = 16384, 2465, 6492, 2720, 5244


Range = tuple[int, int]


def subtract(ranges: list[Range], holes: list[Range]) -> list[Range]:
    """`ranges` minus `holes` (both sorted, disjoint)."""
    out: list[Range] = []
    for start, end in ranges:
        cursor = start
        for hs, he in holes:
            if he <= cursor or hs >= end:
                continue
            if hs > cursor:
                out.append((cursor, hs))
            cursor = max(cursor, he)
        if cursor < end:
            out.append((cursor, end))
    return out


def overlap(ranges: list[Range], start: int, end: int) -> int:
    """Frames of `ranges` inside [start, end)."""
    return sum(max(0, min(e, end) - max(s, start)) for s, e in ranges)


@dataclass
class Memblock:
    nr_frames: int
    usable: list[Range] = field(default_factory=list)  # e820 RAM
    reserved: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, what)

    @classmethod
    def boot(cls, nr_frames: int, node_ranges: list[Range]) -> Memblock:
        mb = cls(nr_frames)
        mb.usable = subtract([(1, nr_frames)], [E820_HOLE])
        mb.reserve(0, min(FIRST_MIB, nr_frames), "low memory")
        image = mb.kernel_image_pages()
        base = PHYSICAL_START if nr_frames >= 4 * PHYSICAL_START else FIRST_MIB
        mb.reserve(base, base + image, "kernel image")
        for start, end in node_ranges:
            present = overlap(mb.usable, start, end)
            memmap = -(-present * STRUCT_PAGE_SIZE >> PAGE_SHIFT)
            mb.alloc_top_down(memmap, start, end, "memmap")
        return mb

    def kernel_image_pages(self) -> int:
        kb = KERNEL_CODE_KB + KERNEL_RWDATA_KB + KERNEL_RODATA_KB + KERNEL_INIT_KB + KERNEL_BSS_KB
        return min(kb >> (PAGE_SHIFT - 10), self.nr_frames // 8)

    def reserve(self, start: int, end: int, what: str) -> None:
        self.reserved.append((start, end, what))
        self.reserved.sort()

    def alloc_top_down(self, pages: int, start: int, end: int, what: str) -> int:
        """The highest free, usable range of `pages` frames inside [start, end), reserved for `what`."""
        free = subtract(subtract(self.usable, [(r[0], r[1]) for r in self.reserved]), [(0, start), (end, 1 << 62)])
        for fs, fe in reversed(free):
            if fe - fs >= pages:
                self.reserve(fe - pages, fe, what)
                return fe - pages
        raise MemoryError(f"memblock: no room for {pages} pages of {what}")

    def reserved_ranges(self) -> list[Range]:
        merged: list[Range] = []
        for start, end, _ in self.reserved:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def free_ranges(self) -> list[Range]:
        """What memblock_free_all hands to the buddy allocator."""
        return subtract(self.usable, self.reserved_ranges())

    def reserved_pages(self, what: str | None = None) -> int:
        """Usable frames reserved (for `what`, or for anything)."""
        if what is None:
            return sum(overlap(self.usable, s, e) for s, e in self.reserved_ranges())
        return sum(overlap(self.usable, s, e) for s, e, w in self.reserved if w == what)
