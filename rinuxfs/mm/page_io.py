"""Swap I/O (mm/page_io.c): pages written to and read from their slots, through the block layer.

Contract:
- `swap_writepages(areas, pages, log)` writes each (entry, pfn) to its slot and returns the
  entries whose write failed (their pages must stay in memory, dirty). Slots of one area
  that follow each other go out as one bio, and the bios of a batch are submitted together
  so the queue merges them: a reclaim batch is one request, not one per page.
- `swap_readpages(areas, pages, log)` reads each (entry, pfn) from its slot; a failed read
  raises KernelError(EIO) after logging the kernel's line.
- A slot's bytes are at sector (offset * 8) of the swap partition: slot 0 is the header page,
  which is never written. Failures are logged as the kernel logs them, one line per page, with
  the whole disk's device number and sector: "Write-error on swap-device (259:0:329728)".
- pswpin/pswpout count pages at submission, failed ones included, as Linux counts them.
"""

from __future__ import annotations

import errno
from collections import Counter

from rinuxfs.block.bio import Bio, ReqOp
from rinuxfs.errors import KernelError
from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE
from rinuxfs.lib.runs import run_bounds
from rinuxfs.lib.runs import runs as consecutive_runs
from rinuxfs.mm.swapfile import SwapAreas, SwapEntry, SwapInfo, swp_offset, swp_type
from rinuxfs.printk import KERN_ALERT, KernelLog

SECTORS_PER_PAGE = PAGE_SIZE >> 9


def _runs(pages: list[tuple[SwapEntry, int]]) -> list[tuple[list[SwapEntry], list[int]]]:
    """(entries, pfns) runs of consecutive slots of one area, in slot order (consecutive entries
    are consecutive slots: the type sits far above any offset)."""
    entries, pfns = zip(*sorted(pages), strict=True)
    bounds = run_bounds(entries)
    return [(list(entries[a:b]), list(pfns[a:b])) for a, b in zip(bounds, bounds[1:], strict=False)]


def _bio(op: ReqOp, entries: list[SwapEntry], pfns: list[int]) -> Bio:
    segments = [(pfn << PAGE_SHIFT, n << PAGE_SHIFT) for pfn, n in consecutive_runs(pfns)]
    return Bio(op, swp_offset(entries[0]) * SECTORS_PER_PAGE, len(entries) * SECTORS_PER_PAGE, segments)


def _whole_disk_sector(area: SwapInfo, entry: SwapEntry) -> int:
    return area.bdev.start_sect + swp_offset(entry) * SECTORS_PER_PAGE


def _log_errors(log: KernelLog, what: str, area: SwapInfo, entries: list[SwapEntry]) -> None:
    major, minor = area.bdev.disk.whole.devt
    for entry in entries:
        log.printk(KERN_ALERT, f"{what}-error on swap-device ({major}:{minor}:{_whole_disk_sector(area, entry)})")


def _submit(areas: SwapAreas, op: ReqOp, pages: list[tuple[SwapEntry, int]], log: KernelLog,
            events: Counter[str]) -> list[SwapEntry]:
    """Submit the runs of one batch; the entries of the runs that failed."""
    failed: list[SwapEntry] = []
    events["pswpout" if op == ReqOp.WRITE else "pswpin"] += len(pages)
    by_area: dict[int, list[tuple[list[SwapEntry], list[int]]]] = {}
    for run in _runs(pages):
        by_area.setdefault(swp_type(run[0][0]), []).append(run)
    for runs in by_area.values():
        area = areas.area(runs[0][0][0])
        try:
            area.bdev.submit([_bio(op, *run) for run in runs])
            continue
        except KernelError:
            pass
        # Which run failed: retry them one by one, as each would have been its own bio's completion.
        for entries, pfns in runs:
            try:
                area.bdev.submit([_bio(op, entries, pfns)])
            except KernelError:
                _log_errors(log, "Write" if op == ReqOp.WRITE else "Read", area, entries)
                failed += entries
    return failed


def swap_writepages(areas: SwapAreas, pages: list[tuple[SwapEntry, int]], log: KernelLog,
                    events: Counter[str]) -> list[SwapEntry]:
    return _submit(areas, ReqOp.WRITE, pages, log, events) if pages else []


def swap_readpages(areas: SwapAreas, pages: list[tuple[SwapEntry, int]], log: KernelLog,
                   events: Counter[str]) -> None:
    if pages and _submit(areas, ReqOp.READ, pages, log, events):
        raise KernelError(errno.EIO, "read error on swap device")
