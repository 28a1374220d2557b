"""x86-64 4-level page tables, and the kernel's direct map of all RAM built with them.

Contract:
- `DirectMap.build(ram, memblock)` maps every e820 RAM range at PAGE_OFFSET +
  phys as init_memory_mapping() does: 4 KiB pages for the first MiB and up to
  the first 2 MiB boundary, then 2 MiB pages up to a 1 GiB boundary, 1 GiB
  pages for whole GiBs (the CPU has pdpe1gb), and the tails back down.
  The tables are real: 512 entries of 8 bytes a page, with x86's bits, in
  frames memblock reserves for them, so a walk of simulated RAM translates.
- `translate(vaddr)` walks the tables (PGD → PUD → PMD → PTE) and returns the
  physical address, or None for an unmapped address.
- `mapped_kb` holds what meminfo's DirectMap4k/2M/1G report: the bytes mapped
  by leaves of each size. Nothing changes the direct map after boot, so no
  TLB shootdown is ever owed for it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from rinuxfs.mm.memblock import Memblock
from rinuxfs.mm.types import PAGE_OFFSET, PhysAddr, VirtAddr

PTRS_PER_TABLE = 512
PGDIR_SHIFT, PUD_SHIFT, PMD_SHIFT = 39, 30, 21
_PRESENT, _RW, _ACCESSED, _DIRTY, _PSE, _GLOBAL = 1 << 0, 1 << 1, 1 << 5, 1 << 6, 1 << 7, 1 << 8
_NX = 1 << 63
KERNPG_TABLE = _PRESENT | _RW | _ACCESSED | _DIRTY
PAGE_KERNEL = _PRESENT | _RW | _ACCESSED | _DIRTY | _GLOBAL | _NX
PAGE_KERNEL_LARGE = PAGE_KERNEL | _PSE
PHYS_MASK = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)
_2M, _1G = 1 << PMD_SHIFT, 1 << PUD_SHIFT
_ENTRIES = struct.Struct(f"<{PTRS_PER_TABLE}Q")


def _up(x: int, align: int) -> int:
    return -(-x // align) * align


def split_mem_range(start: int, end: int) -> list[tuple[int, int, int]]:
    """[start, end) cut into (start, end, page size) pieces as x86's split_mem_range does."""
    pieces: list[tuple[int, int, int]] = []
    head_4k = min(end, _up(start, _2M))
    head_2m = max(head_4k, min(end & ~(_2M - 1), _up(head_4k, _1G)))
    body_1g = max(head_2m, end & ~(_1G - 1))
    tail_2m = max(body_1g, end & ~(_2M - 1))
    for lo, hi, size in ((start, head_4k, PAGE_SIZE), (head_4k, head_2m, _2M), (head_2m, body_1g, _1G),
                         (body_1g, tail_2m, _2M), (tail_2m, end, PAGE_SIZE)):
        if lo < hi:
            pieces.append((lo, hi, size))
    return pieces


@dataclass
class DirectMap:
    ram: PhysicalMemory
    pgd: PhysAddr  # physical address of the top table (CR3)
    mapped_kb: dict[int, int] = field(default_factory=dict)  # leaf size -> kB mapped
    tables: int = 0

    @classmethod
    def build(cls, ram: PhysicalMemory, memblock: Memblock) -> DirectMap:
        first_mib = 1 << 20
        # Linux maps the ISA range [0, 1 MiB) whole, holes and all, then each RAM range above it.
        ranges = [(0, first_mib)] + [(max(s << PAGE_SHIFT, first_mib), e << PAGE_SHIFT)
                                     for s, e in memblock.usable if e << PAGE_SHIFT > first_mib]
        pieces = [p for s, e in ranges for p in split_mem_range(s, e)]
        pieces = _merge_4k_below_first_mib(pieces)
        need = _tables_needed(pieces)
        base = memblock.alloc_top_down(need, 0, memblock.nr_frames, "page tables") << PAGE_SHIFT
        builder = _Builder(ram, base)
        pgd = builder.new_table()
        for start, end, size in pieces:
            builder.map(pgd, start, end, size)
        builder.flush()
        dm = cls(ram, PhysAddr(pgd), {PAGE_SIZE: 0, _2M: 0, _1G: 0}, builder.used)
        for start, end, size in pieces:
            dm.mapped_kb[size] += (end - start) >> 10
        return dm

    def translate(self, vaddr: VirtAddr) -> PhysAddr | None:
        table = self.pgd
        for shift in (PGDIR_SHIFT, PUD_SHIFT, PMD_SHIFT, PAGE_SHIFT):
            index = (vaddr >> shift) & (PTRS_PER_TABLE - 1)
            entry = int.from_bytes(self.ram.view[table + 8 * index : table + 8 * index + 8], "little")
            if not entry & _PRESENT:
                return None
            if shift == PAGE_SHIFT or entry & _PSE:
                return PhysAddr((entry & PHYS_MASK & ~((1 << shift) - 1)) | (vaddr & ((1 << shift) - 1)))
            table = entry & PHYS_MASK
        return None


def _merge_4k_below_first_mib(pieces: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    merged: list[tuple[int, int, int]] = []
    for piece in pieces:
        if merged and merged[-1][2] == piece[2] and merged[-1][1] == piece[0]:
            merged[-1] = (merged[-1][0], piece[1], piece[2])
        else:
            merged.append(piece)
    return merged


def _tables_needed(pieces: list[tuple[int, int, int]]) -> int:
    """Page-table pages the mapping takes: one PGD, and a table per 512 GiB / 1 GiB / 2 MiB that needs one."""
    tables: set[tuple[int, int]] = set()
    for start, end, size in pieces:
        first, last = PAGE_OFFSET + start, PAGE_OFFSET + end - 1
        levels = [PGDIR_SHIFT] + ([PUD_SHIFT] if size < _1G else []) + ([PMD_SHIFT] if size < _2M else [])
        for shift in levels:
            tables.update((shift, i) for i in range(first >> shift, (last >> shift) + 1))
    return 1 + len(tables)


class _Builder:
    """Writes tables into reserved frames; each table is kept as a list until flush()."""

    def __init__(self, ram: PhysicalMemory, base: int) -> None:
        self.ram = ram
        self.next = base
        self.used = 0
        self.tables: dict[int, list[int]] = {}

    def new_table(self) -> int:
        addr = self.next
        self.next += PAGE_SIZE
        self.used += 1
        self.tables[addr] = [0] * PTRS_PER_TABLE
        return addr

    def _child(self, table: int, index: int) -> int:
        entry = self.tables[table][index]
        if entry & _PRESENT:
            return entry & PHYS_MASK
        child = self.new_table()
        self.tables[table][index] = child | KERNPG_TABLE
        return child

    def map(self, pgd: int, start: int, end: int, size: int) -> None:
        addr = start
        while addr < end:
            va = PAGE_OFFSET + addr
            pud = self._child(pgd, (va >> PGDIR_SHIFT) & 511)
            if size == _1G:
                self.tables[pud][(va >> PUD_SHIFT) & 511] = addr | PAGE_KERNEL_LARGE
                addr += _1G
                continue
            pmd = self._child(pud, (va >> PUD_SHIFT) & 511)
            if size == _2M:
                self.tables[pmd][(va >> PMD_SHIFT) & 511] = addr | PAGE_KERNEL_LARGE
                addr += _2M
                continue
            pte = self._child(pmd, (va >> PMD_SHIFT) & 511)
            stop = min(end, (addr | (_2M - 1)) + 1)
            entries = self.tables[pte]
            for a in range(addr, stop, PAGE_SIZE):
                entries[(a >> PAGE_SHIFT) & 511] = a | PAGE_KERNEL
            addr = stop

    def flush(self) -> None:
        view = self.ram.view
        for addr, entries in self.tables.items():
            view[addr : addr + PAGE_SIZE] = _ENTRIES.pack(*entries)
