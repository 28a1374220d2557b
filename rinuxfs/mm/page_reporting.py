"""Free page reporting (mm/page_reporting.c): big free blocks go back to the host, two seconds late.

The machine's RAM is host memory (hw/ram.py). A frame the machine frees can be
handed back to the host (MADV_DONTNEED), as virtio-balloon's free page reporting
hands a guest's free pages to its hypervisor. Linux reports only blocks of
pageblock order or more (PAGE_REPORTING_MIN_ORDER), and only once they have
stayed free for PAGE_REPORTING_DELAY (2 s) after the free that woke it: memory
freed and allocated again at once (a file deleted and written anew) keeps its
host pages, and the host is not asked twice for the same 2 MiB. A pass reports
at most a sixteenth of the free pageblocks, in batches of PAGE_REPORTING_CAPACITY
(page_reporting_cycle's budget), the highest first (allocation takes the lowest
blocks first); what is left waits for the next pass, 2 s later.

Contract:
- `notify(runs)` records the freed blocks [(pfn, nr_pages)] of pageblock
  order or more; the reporter later hands back the pageblocks among them that
  are still free, in runs, one madvise per run.
- `run()` is the reporter, a task of the kernel's nursery. Until it runs (unit
  tests, boot), `notify` reports at once, so nothing is kept from the host; when
  it stops (shutdown), everything pending is reported.
- Cost follows use: pending work is one set entry per freed pageblock.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from rinuxfs.mm.buddy import PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER
from rinuxfs.mm.page_alloc import to_runs

PAGE_REPORTING_DELAY = 2.0  # seconds (2 * HZ)
PAGE_REPORTING_CAPACITY = 32  # blocks per batch handed to the host


class PageReporting:
    def __init__(self, still_free: Callable[[int], bool], discard: Callable[[int, int], None],
                 nr_free_pages: Callable[[], int] = lambda: 0) -> None:
        self._still_free = still_free  # whether the pageblock at a PFN is free, whole
        self._discard = discard  # hands frames (pfn, count) back to the host
        self._nr_free_pages = nr_free_pages
        self._pending: set[int] = set()  # pageblock numbers freed since the last report
        self._wakeup: trio.Event | None = None
        self.running = False

    def notify(self, runs: list[tuple[int, int]]) -> None:
        if not runs:
            return
        if not self.running:
            for pfn, n in runs:
                self._discard(pfn, n)
            return
        for pfn, n in runs:
            first = pfn >> PAGEBLOCK_ORDER
            self._pending.update(range(first, first + (n >> PAGEBLOCK_ORDER)))
        if self._wakeup is not None:
            self._wakeup.set()

    def report(self, everything: bool = False) -> int:
        """Hand pending pageblocks that are still free back to the host, up to a pass's budget (or
        all of them); the frames handed back."""
        free = sorted((b for b in self._pending if self._still_free(b << PAGEBLOCK_ORDER)), reverse=True)
        batches = -(-(self._nr_free_pages() >> PAGEBLOCK_ORDER) // (PAGE_REPORTING_CAPACITY * 16))
        budget = len(free) if everything else max(1, batches) * PAGE_REPORTING_CAPACITY
        self._pending = set(free[budget:])  # the blocks no longer free are someone's again: forgotten
        runs = to_runs(free[:budget])
        done = 0
        for first, n in runs:  # runs of consecutive pageblocks
            self._discard(first << PAGEBLOCK_ORDER, n * PAGEBLOCK_NR_PAGES)
            done += n * PAGEBLOCK_NR_PAGES
        return done

    async def run(self) -> None:
        self.running = True
        try:
            while True:
                if not self._pending:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                await trio.sleep(PAGE_REPORTING_DELAY)
                self.report()
        finally:
            self.running = False
            self.report(everything=True)  # at shutdown: whatever is free goes back now
