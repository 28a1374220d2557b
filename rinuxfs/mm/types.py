"""The address types of the memory manager: physical addresses, kernel virtual addresses, page frame numbers.

They are ints at run time (NewType costs nothing) and distinct to the type checker, so a PFN is never
passed where a byte address is meant. The conversions are Linux's: a PFN is a physical address >> 12;
the kernel reaches physical memory through its direct map at PAGE_OFFSET (__va/__pa).
"""

from __future__ import annotations

from typing import NewType

from rinuxfs.hw.ram import PAGE_SHIFT

PhysAddr = NewType("PhysAddr", int)
VirtAddr = NewType("VirtAddr", int)
Pfn = NewType("Pfn", int)

PAGE_OFFSET = 0xFFFF888000000000  # __PAGE_OFFSET_BASE_L4, without KASLR


def pfn_to_phys(pfn: Pfn) -> PhysAddr:
    return PhysAddr(pfn << PAGE_SHIFT)


def phys_to_pfn(addr: PhysAddr) -> Pfn:
    return Pfn(addr >> PAGE_SHIFT)


def va(addr: PhysAddr) -> VirtAddr:
    """__va: where the direct map shows a physical address."""
    return VirtAddr(PAGE_OFFSET + addr)


def pa(addr: VirtAddr) -> PhysAddr:
    """__pa for a direct-map address."""
    return PhysAddr(addr - PAGE_OFFSET)
