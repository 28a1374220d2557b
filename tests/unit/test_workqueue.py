"""The kernel's workqueue: deferred work runs in order, later, and a failing item stops nothing."""

from __future__ import annotations

import errno

import trio

from rinuxfs.errors import KernelError
from rinuxfs.printk import KernelLog
from rinuxfs.workqueue import WorkQueue


def test_items_run_in_order_on_flush_and_failures_are_logged() -> None:
    log = KernelLog(lambda: 0)
    wq = WorkQueue(log)
    ran: list[str] = []

    def fails() -> None:
        raise KernelError(errno.ENODEV, "gone")

    def bug() -> None:
        raise ValueError("a bug")

    wq.queue_work(lambda: ran.append("a"))
    wq.queue_work(fails)
    wq.queue_work(bug)
    wq.queue_work(lambda: ran.append("b"))
    assert ran == [] and wq.pending == 4  # queued work never runs at once
    wq.flush()
    assert ran == ["a", "b"] and wq.pending == 0
    text = log.render_kmsg()
    assert "workqueue: test_items_run_in_order_on_flush_and_failures_are_logged.<locals>.fails failed" in text
    assert "BUG in work item" in text and "ValueError" in text


def test_the_worker_runs_what_is_queued_while_it_waits() -> None:
    wq = WorkQueue(KernelLog(lambda: 0))
    ran: list[int] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wq.worker)
            await trio.sleep(0)
            wq.queue_work(lambda: ran.append(1))
            wq.queue_work(lambda: ran.append(2))
            with trio.fail_after(5):
                while len(ran) < 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()  # the worker ends when its nursery is cancelled, as at shutdown

    trio.run(main)
    assert ran == [1, 2]
