"""Deferred work (kernel/workqueue.c's system_wq): what must not run inside the operation that found it.

A driver that learns its controller is dead inside one of the disk's own requests cannot take
that disk away under the request (nvme_remove_dead_ctrl_work); libata's error handler does not
run inside the interrupt that reports a hot-plug (ata_port_schedule_eh). They queue the work,
and it runs once the current operation has returned, in order.

Contract:
- `queue_work(fn)` appends `fn`; it never runs it at once.
- `worker()` is the kworker: a task the daemon starts in its nursery and cancels at shutdown;
  it runs items as they come, between FUSE requests (the request loop serves one at a time).
- `flush()` runs everything pending now (flush_workqueue): the kernel calls it before it syncs
  at unmount, and tests without a daemon call it.
- An item that fails (KernelError, or a bug) is logged and dropped: one failing item never stops
  the worker, the ones after it, or the daemon.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable

import trio

from rinuxfs.errors import KernelError
from rinuxfs.printk import KernelLog


class WorkQueue:
    def __init__(self, log: KernelLog) -> None:
        self.log = log
        self._items: deque[Callable[[], None]] = deque()
        self._wakeup: trio.Event | None = None

    def queue_work(self, fn: Callable[[], None]) -> None:
        self._items.append(fn)
        if self._wakeup is not None:
            self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._items)

    def flush(self) -> None:
        while self._items:
            fn = self._items.popleft()
            name = getattr(fn, "__qualname__", repr(fn))
            try:
                fn()
            except KernelError as e:
                self.log.err(f"workqueue: {name} failed: {e}")
            except Exception as e:  # noqa: BLE001 - a bug in one item must not stop the daemon serving
                self.log.err(f"rinuxfs: BUG in work item {name}: {e!r}")
                for line in traceback.format_exc().splitlines():
                    self.log.printk(7, line)

    async def worker(self) -> None:
        while True:
            if not self._items:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                self._wakeup = None
            self.flush()
            await trio.lowlevel.checkpoint()
