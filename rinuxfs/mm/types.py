"""The address types of the memory manager: physical addresses and kernel virtual addresses.

They are ints at run time (NewType costs nothing) and distinct to the type checker, so a physical
address is never passed where a virtual one is meant. The kernel reaches physical memory through
its direct map at PAGE_OFFSET (__va).
"""

from __future__ import annotations

from typing import NewType

PhysAddr = NewType("PhysAddr", int)
VirtAddr = NewType("VirtAddr", int)

PAGE_OFFSET = 0xFFFF888000000000  # __PAGE_OFFSET_BASE_L4, without KASLR


def va(addr: PhysAddr) -> VirtAddr:
    """__va: where the direct map shows a physical address."""
    return VirtAddr(PAGE_OFFSET + addr)
