"""Dirty page writeback (mm/page-writeback.c, fs/fs-writeback.c): the limits, and the flusher task.

Contract:
- `dirty_limits(mm)` is global_dirty_limits(): (background, dirty) thresholds in pages, from
  vm.dirty_background_ratio/_bytes and vm.dirty_ratio/_bytes over the dirtyable memory (free pages
  less the reserves, plus the file LRU), background halved when it is not below the other.
- `flusher(mm)` is the writeback worker: a task in the kernel's nursery that wakes every
  dirty_writeback_centisecs (0: only when woken) and writes back the pages dirty for longer than
  dirty_expire_centisecs, and everything dirty while the total is past the background threshold.
  Writers that push the dirty pages past the background threshold wake it at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

from rinuxfs.hw.ram import PAGE_SIZE

if TYPE_CHECKING:
    from rinuxfs.mm.core import MemoryManager


def dirty_limits(mm: MemoryManager) -> tuple[int, int]:
    a, node, t = mm.allocator, mm.total, mm.tunables
    free = a.nr_free_pages
    dirtyable = free - min(free, a.totalreserve_pages) + node["nr_inactive_file"] + node["nr_active_file"] + 1
    thresh = t.dirty_bytes // PAGE_SIZE if t.dirty_bytes else t.dirty_ratio * dirtyable // 100
    bg = t.dirty_background_bytes // PAGE_SIZE if t.dirty_background_bytes else \
        t.dirty_background_ratio * dirtyable // 100
    if bg >= thresh:
        bg = thresh // 2
    return bg, thresh


def writeback_mappings(mm: MemoryManager, before: float | None) -> int:
    written = 0
    for mapping in list(mm.mappings.values()):
        if hasattr(mapping, "dirty") and hasattr(mapping, "writeback") and mapping.dirty:  # type: ignore[attr-defined]
            try:
                written += mapping.writeback(before=before)  # type: ignore[attr-defined]
            except Exception as e:  # noqa: BLE001 - a failed device must not end the flusher
                mm.log.err(f"writeback: {e}")
    return written


async def flusher(mm: MemoryManager) -> None:
    while True:
        period = mm.tunables.dirty_writeback_centisecs / 100
        mm.flusher_wakeup = trio.Event()
        with trio.move_on_after(period if period > 0 else float("inf")):
            await mm.flusher_wakeup.wait()
        bg, _ = dirty_limits(mm)
        if mm.total["nr_dirty"] > bg:
            writeback_mappings(mm, None)
        else:
            writeback_mappings(mm, time.monotonic() - mm.tunables.dirty_expire_centisecs / 100)
        await trio.sleep(0)
