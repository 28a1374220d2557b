"""Free page reporting (mm/page_reporting.c): big free blocks go back to the host, two seconds late.

The machine's RAM is host memory (hw/ram.py). A frame the machine frees can be
handed back to the host (MADV_DONTNEED), as virtio-balloon's free page reporting
hands a guest's free pages to its hypervisor. Linux reports only blocks of
pageblock order or more (PAGE_REPORTING_MIN_ORDER), PAGE_REPORTING_DELAY (2 s)
after a free wakes it. A pass reports at most a sixteenth of the free pageblocks,
in batches of PAGE_REPORTING_CAPACITY (page_reporting_cycle's budget), the
highest first (allocation takes the lowest blocks first); what is left waits for
the next pass.

Where rinuxfs differs: each pageblock must itself have stayed free for the 2 s
before it is reported (Linux's delayed work reports whatever is free when it
runs, 2 s after the free that scheduled it, so a block freed a moment before the
pass goes too). Memory freed and allocated again at once, a file deleted and
written anew, thus keeps its host pages instead of being faulted in again from
the host: measured, the rewrite of a 512 MiB tmpfs file ran at half speed when
the pass fell between the delete and the write. Nothing in the machine's views
depends on it; only the daemon's RSS follows 2 s later than Linux's would.

Contract:
- `notify(runs)` records the freed blocks [(pfn, nr_pages)] of pageblock
  order or more, and when; the reporter later hands back those still free 2 s
  after their last free, in runs, one madvise per run.
- `run()` is the reporter, a task of the kernel's nursery. Until it runs (unit
  tests, boot), `notify` reports at once, so nothing is kept from the host; when
  it stops (shutdown), everything pending is reported.
- Cost follows use: pending work is one dict entry per freed pageblock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from rinuxfs.mm.buddy import PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER
from rinuxfs.mm.page_alloc import to_runs

PAGE_REPORTING_DELAY = 2.0  # seconds (2 * HZ)
PAGE_REPORTING_CAPACITY = 32  # blocks per batch handed to the host


class PageReporting:
    def __init__(self, still_free: Callable[[int], bool], discard: Callable[[int, int], None],
                 nr_free_pages: Callable[[], int] = lambda: 0, clock: Callable[[], float] = time.monotonic) -> None:
        self._still_free = still_free  # whether the pageblock at a PFN is free, whole
        self._discard = discard  # hands frames (pfn, count) back to the host
        self._nr_free_pages = nr_free_pages
        self._clock = clock
        self._pending: dict[int, float] = {}  # pageblock number -> when it was last freed
        self._wakeup: trio.Event | None = None
        self.running = False

    def notify(self, runs: list[tuple[int, int]]) -> None:
        if not runs:
            return
        if not self.running:
            for pfn, n in runs:
                self._discard(pfn, n)
            return
        now = self._clock()
        for pfn, n in runs:
            first = pfn >> PAGEBLOCK_ORDER
            self._pending.update(dict.fromkeys(range(first, first + (n >> PAGEBLOCK_ORDER)), now))
        if self._wakeup is not None:
            self._wakeup.set()

    def report(self, everything: bool = False) -> int:
        """Hand pending pageblocks that have stayed free 2 s (or all of them) back to the host, up to a
        pass's budget (or all of them); the frames handed back."""
        due_by = self._clock() - PAGE_REPORTING_DELAY
        still_free = self._still_free
        # The blocks no longer free are someone's again: forgotten.
        pending = {b: t for b, t in self._pending.items() if still_free(b << PAGEBLOCK_ORDER)}
        due = sorted((b for b, t in pending.items() if everything or t <= due_by), reverse=True)
        batches = -(-(self._nr_free_pages() >> PAGEBLOCK_ORDER) // (PAGE_REPORTING_CAPACITY * 16))
        budget = len(due) if everything else max(1, batches) * PAGE_REPORTING_CAPACITY
        for b in due[:budget]:
            del pending[b]
        self._pending = pending
        done = 0
        for first, n in to_runs(due[:budget]):  # runs of consecutive pageblocks
            self._discard(first << PAGEBLOCK_ORDER, n * PAGEBLOCK_NR_PAGES)
            done += n * PAGEBLOCK_NR_PAGES
        return done

    def next_due(self) -> float | None:
        """When the oldest pending block will have stayed free 2 s (None: nothing pending)."""
        return min(self._pending.values()) + PAGE_REPORTING_DELAY if self._pending else None

    async def run(self) -> None:
        self.running = True
        try:
            while True:
                due = self.next_due()
                if due is None:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    continue
                # Never sooner than 2 s after the last pass, as Linux's delayed work, whatever is due.
                await trio.sleep(max(due - self._clock(), PAGE_REPORTING_DELAY))
                self.report()
        finally:
            self.running = False
            self.report(everything=True)  # at shutdown: whatever is free goes back now
