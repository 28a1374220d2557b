"""A disk's queue/ directory (block/blk-sysfs.c of Linux 6.1): limits, flags and tunables.

`QUEUE_ATTRS` is the table, in queue_attrs[] order: name, show (from the RequestQueue) and, for
the 0644 ones, store. Stores parse as Linux's do:
- queue_var_store (kstrtoul base 10, at most UINT_MAX; every failure, overflow included, is
  EINVAL): nr_requests, read_ahead_kb, max_sectors_kb, discard_max_bytes, rotational, nomerges,
  rq_affinity, iostats, stable_writes, add_random;
- io_timeout: kstrtou32 base 10, and 0, are EINVAL; io_poll_delay: kstrtoint (EINVAL or ERANGE),
  -1 or more; wbt_lat_usec: kstrtos64 (EINVAL or ERANGE), -1 or more; io_poll: EINVAL without
  poll queues; write_cache: "write back", "write through" or "none" (prefixes, as strncmp).
What the values do is the RequestQueue's business (block/queue.py).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from rinuxfs.block.queue import SCHEDULERS, RequestQueue
from rinuxfs.drivers.base.kobject import Kobject
from rinuxfs.errors import KernelError
from rinuxfs.lib.kstrtox import kstrtoint, kstrtoll, kstrtouint

QShow = Callable[[RequestQueue], object]
QStore = Callable[[RequestQueue, str], None]


def queue_var_store(text: str) -> int:
    """kstrtoul base 10 (an optional '+', one trailing newline), at most UINT_MAX; any failure is EINVAL.

    "0x10" is not a number in base 10, and an overflow is EINVAL here, not ERANGE.
    """
    try:
        return kstrtouint(text, 10)
    except KernelError:
        raise KernelError(errno.EINVAL, f"not a number for a queue attribute: {text!r}") from None


def _store_io_timeout(q: RequestQueue, text: str) -> None:
    try:
        msecs = kstrtouint(text, 10)  # kstrtou32
    except KernelError:
        msecs = 0  # anything kstrtou32 refuses is EINVAL, as 0 is
    q.set_io_timeout(msecs)


def _store_poll(q: RequestQueue, text: str) -> None:
    if not q.poll:
        raise KernelError(errno.EINVAL, "the queue has no poll queues")
    # queue_poll_store accepts and ignores the value ("use driver specific parameters instead")


def _store_poll_delay(q: RequestQueue, text: str) -> None:
    value = kstrtoint(text, 10)
    if value < -1:
        raise KernelError(errno.EINVAL, "io_poll_delay is -1 (classic polling) or a delay in usec")
    q.poll_delay = value


def _store_write_cache(q: RequestQueue, text: str) -> None:
    if text.startswith("write back"):
        q.limits.write_cache = "write back"
    elif text.startswith(("write through", "none")):
        q.limits.write_cache = "write through"
    else:
        raise KernelError(errno.EINVAL, "write_cache takes \"write back\", \"write through\" or \"none\"")


def _store_nomerges(q: RequestQueue, text: str) -> None:
    value = queue_var_store(text)
    q.nomerges = 2 if value == 2 else int(bool(value))


def _store_rq_affinity(q: RequestQueue, text: str) -> None:
    value = queue_var_store(text)
    if value in (0, 1, 2):  # anything else is accepted and changes nothing, as in Linux
        q.rq_affinity = value


def _flag(name: str) -> QStore:
    def store(q: RequestQueue, text: str) -> None:
        setattr(q, name, bool(queue_var_store(text)))

    return store


def _scheduler(q: RequestQueue) -> str:
    return " ".join(f"[{s}]" if s == q.scheduler else s for s in SCHEDULERS)


def _limit(name: str) -> QShow:
    return lambda q: getattr(q.limits, name)


QUEUE_ATTRS: tuple[tuple[str, QShow, QStore | None], ...] = (
    ("nr_requests", _limit("nr_requests"), lambda q, v: q.set_nr_requests(queue_var_store(v))),
    ("read_ahead_kb", _limit("read_ahead_kb"), lambda q, v: q.set_read_ahead_kb(queue_var_store(v))),
    ("max_hw_sectors_kb", _limit("max_hw_sectors_kb"), None),
    ("max_sectors_kb", _limit("max_sectors_kb"), lambda q, v: q.set_max_sectors_kb(queue_var_store(v))),
    ("max_segments", _limit("max_segments"), None),
    ("max_discard_segments", _limit("max_discard_segments"), None),
    ("max_integrity_segments", _limit("max_integrity_segments"), None),
    ("max_segment_size", _limit("max_segment_size"), None),
    ("scheduler", _scheduler, lambda q, v: q.set_scheduler(v)),
    ("hw_sector_size", _limit("logical_block_size"), None),
    ("logical_block_size", _limit("logical_block_size"), None),
    ("physical_block_size", _limit("physical_block_size"), None),
    ("chunk_sectors", _limit("chunk_sectors"), None),
    ("minimum_io_size", _limit("physical_block_size"), None),
    ("optimal_io_size", _limit("optimal_io_size"), None),
    ("discard_granularity", _limit("discard_granularity"), None),
    ("discard_max_bytes", _limit("discard_max_bytes"), lambda q, v: q.set_discard_max_bytes(queue_var_store(v))),
    ("discard_max_hw_bytes", _limit("discard_max_hw_bytes"), None),
    ("discard_zeroes_data", lambda q: 0, None),
    ("write_same_max_bytes", lambda q: 0, None),  # WRITE SAME is gone from the block layer
    ("write_zeroes_max_bytes", _limit("write_zeroes_max_bytes"), None),
    ("zone_append_max_bytes", lambda q: 0, None),
    ("zone_write_granularity", lambda q: 0, None),
    ("rotational", _limit("rotational"), lambda q, v: setattr(q.limits, "rotational", int(bool(queue_var_store(v))))),
    ("zoned", lambda q: "none", None),
    ("nr_zones", lambda q: 0, None),
    ("nomerges", lambda q: q.nomerges, _store_nomerges),
    ("rq_affinity", lambda q: q.rq_affinity, _store_rq_affinity),
    ("iostats", lambda q: int(q.iostats), _flag("iostats")),
    ("stable_writes", lambda q: int(q.stable_writes), _flag("stable_writes")),
    ("add_random", lambda q: int(q.add_random), _flag("add_random")),
    ("io_poll", lambda q: int(q.poll), _store_poll),
    ("write_cache", lambda q: q.limits.write_cache, _store_write_cache),
    ("fua", _limit("fua"), None),
    ("dax", lambda q: 0, None),
    ("wbt_lat_usec", lambda q: q.wbt_lat_usec, lambda q, v: q.set_wbt_lat_usec(kstrtoll(v, 10))),
    ("io_poll_delay", lambda q: q.poll_delay, _store_poll_delay),
    ("io_timeout", lambda q: q.io_timeout_ms, _store_io_timeout),
    ("virt_boundary_mask", _limit("virt_boundary_mask"), None),
    ("dma_alignment", _limit("dma_alignment"), None),
)


def add_queue_dir(disk_dev: Kobject, queue: RequestQueue) -> Kobject:
    """The queue/ directory of a disk (blk_register_queue), rendered from `queue` at each read."""
    q = disk_dev.add_group("queue")
    for name, show, store in QUEUE_ATTRS:
        q.add_attr(name, _render(queue, show), _bind(queue, store) if store is not None else None)
    return q


def _render(queue: RequestQueue, show: QShow) -> Callable[[], str]:
    return lambda: f"{show(queue)}\n"


def _bind(queue: RequestQueue, store: QStore) -> Callable[[str], None]:
    return lambda text: store(queue, text)
