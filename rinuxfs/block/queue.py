"""The request queue of a disk: merging, splitting, scheduling and accounting of bios.

Contract:
- `submit(bios)` takes a batch (a plug, in Linux's words): adjacent bios of
  the same kind are merged into one request up to max_sectors_kb; a bio
  larger than that is split. The scheduler orders the batch's requests
  (`none`: as submitted; `mq-deadline`: by sector, reads first, the way its
  sorted lists dispatch a backlog), then the driver executes them.
- Execution is synchronous: the simulated controller runs when its doorbell
  rings and its interrupt completes the request before `execute` returns.
  So `submit` returns with every bio done. Each request ends on its own: a
  failed one marks its bios (`bio.error`, bi_status) and the others still
  run; then the first failure is raised, as KernelError with the errno the
  driver mapped (a BlkError, whose blk_print_req_error line, named after its
  status by BLK_ERRORS, is printed here through `env.printk`, ratelimited,
  unless the request was quiet or the disk is dead).
- A driver's timeout handling accounts the time it would have waited in
  `req.waited_ns` (the simulated clock skips it, see the drivers); the
  statistics count it as the request's time, as Linux's would.
- Fault injection (lib/fault_inject.py): `fail_io` is QUEUE_FLAG_FAIL_IO
  (sysfs io-timeout-fail), and `should_fake_timeout()` is what drivers ask
  at completion time (blk_should_fake_timeout).
- Every request is accounted on the whole disk and on the partition of its
  bios: ios, merges, sectors, time, in-flight, io_ticks.
- The limits are those sysfs `queue/` shows (block/blk_sysfs.py parses what
  is written there); the setters here check a value with the errno Linux's
  store functions return. Of the queue flags, `iostats` 0 stops the
  accounting and `nomerges` 2 stops merging, as in Linux; the others are kept
  for what reads them (`rq_timeout` is the request timeout the driver's
  timeout handling uses, in jiffies of HZ ticks per second).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from rinuxfs.block.bio import SECTOR_SHIFT, Bio, ReqOp, Request
from rinuxfs.block.errors import BLK_ERRORS, BlkError
from rinuxfs.errors import KernelError
from rinuxfs.lib.fault_inject import FaultAttr
from rinuxfs.lib.kstrtox import U32_MAX, U64_MAX
from rinuxfs.lib.ratelimit import DEFAULT_RATELIMIT_BURST, DEFAULT_RATELIMIT_SECONDS, RateLimit
from rinuxfs.printk import KERN_ERR, KERN_WARNING

if TYPE_CHECKING:
    from rinuxfs.block.genhd import BlockDevice, Gendisk

SCHEDULERS = ("none", "mq-deadline")
BLKDEV_MIN_RQ = 4
BLKDEV_DEFAULT_RQ = 128
MAX_SCHED_RQ = 16 * BLKDEV_DEFAULT_RQ  # block/blk-mq-sched.h
HZ = 100  # the simulated kernel's tick rate (sched.USER_HZ): what rq_timeout counts in
DEFAULT_RQ_TIMEOUT = 30 * HZ  # NVME_IO_TIMEOUT and SD_TIMEOUT: 30 s
IOPRIO_CLASS_BE = 2  # what a task without an I/O priority gets from its nice value


def _no_log(level: int, text: str) -> None:
    return None


@dataclass
class BlockEnv:
    """What the block layer of one kernel shares: printk, jiffies, the fault attributes, ratelimits."""

    printk: Callable[[int, str], None] = _no_log
    jiffies: Callable[[], int] = lambda: 0
    fail_make_request: FaultAttr | None = None
    fail_io_timeout: FaultAttr | None = None
    req_error_rl: RateLimit = field(
        default_factory=lambda: RateLimit(DEFAULT_RATELIMIT_SECONDS * HZ, DEFAULT_RATELIMIT_BURST))


class BlockDriver(Protocol):
    """What a host driver offers the block layer (blk_mq_ops)."""

    def execute(self, req: Request) -> None:
        """Run one request to completion; raise KernelError(errno) on failure."""
        ...


@dataclass
class QueueLimits:
    logical_block_size: int = 512
    physical_block_size: int = 512
    max_hw_sectors_kb: int = 512
    max_sectors_kb: int = 512
    max_segments: int = 128
    read_ahead_kb: int = 128
    nr_requests: int = 64
    rotational: int = 0
    write_cache: str = "write back"
    discard_granularity: int = 512
    discard_max_hw_bytes: int = 0
    discard_max_bytes: int = 0
    write_zeroes_max_bytes: int = 0
    queue_depth: int = 1023
    max_discard_segments: int = 1
    max_integrity_segments: int = 0
    max_segment_size: int = U32_MAX
    virt_boundary_mask: int = 0  # a data segment may not cross a boundary of this mask + 1 (NVMe: its page)
    dma_alignment: int = 511  # the mask a buffer's address and length must meet without a bounce
    fua: int = 0  # the device honours Force Unit Access
    optimal_io_size: int = 0
    chunk_sectors: int = 0

    @property
    def max_sectors(self) -> int:
        return self.max_sectors_kb * 2


class RequestQueue:
    def __init__(self, driver: BlockDriver, limits: QueueLimits, scheduler: str = "none") -> None:
        self.driver = driver
        self.limits = limits
        self.scheduler = scheduler
        self.disk: Gendisk | None = None
        self.env = BlockEnv()  # the registry's, once the disk is added
        self.fail_io = False  # QUEUE_FLAG_FAIL_IO: sysfs io-timeout-fail
        # nr_requests is the block layer's, not the driver's: the tag set's depth, or the elevator's tags.
        limits.nr_requests = self._default_nr_requests(scheduler)
        # queue flags and tunables (struct request_queue), as a blk-mq queue starts with them
        self.rq_timeout = DEFAULT_RQ_TIMEOUT  # jiffies
        self.iostats = True
        self.add_random = False
        self.nomerges = 0  # 0: merge; 1: only the one-hit merge with the last request; 2: never
        self.rq_affinity = 1
        self.stable_writes = False
        self.poll = False  # no poll queues: io_poll reads 0 and refuses writes
        self.poll_delay = -1  # classic polling
        self.wbt_lat_nsec = self.wbt_default_latency_nsec()

    def wbt_default_latency_nsec(self) -> int:
        """wbt_default_latency_nsec: 2 ms for a non-rotational disk, 75 ms for a rotating one."""
        return 75_000_000 if self.limits.rotational else 2_000_000

    def _default_nr_requests(self, scheduler: str) -> int:
        depth = self.limits.queue_depth
        return depth if scheduler == "none" else 2 * min(depth, BLKDEV_DEFAULT_RQ)

    # --- sysfs queue/ attributes Linux lets root write ----------------------------------------

    def set_scheduler(self, name: str) -> None:
        name = name.strip()
        if name not in SCHEDULERS:
            raise KernelError(errno.EINVAL, f"unknown I/O scheduler {name!r}")
        if name == self.scheduler:
            return
        self.scheduler = name
        # An elevator brings its own tags: blk_mq_init_sched sizes them at twice the smaller of the
        # hardware depth and BLKDEV_DEFAULT_RQ; going back to none gives the tag set's depth again.
        self.limits.nr_requests = self._default_nr_requests(name)

    def set_nr_requests(self, value: int) -> None:
        # queue_requests_store: below BLKDEV_MIN_RQ is raised to it; without an elevator the
        # hardware tags are the limit, with one its scheduler tags (MAX_SCHED_RQ).
        value = max(value, BLKDEV_MIN_RQ)
        limit = self.limits.queue_depth if self.scheduler == "none" else MAX_SCHED_RQ
        if value > limit:
            raise KernelError(errno.EINVAL, f"nr_requests {value} is more than {limit} with scheduler {self.scheduler}")
        self.limits.nr_requests = value

    def set_max_sectors_kb(self, value: int) -> None:
        # queue_max_sectors_store: between a page and max_hw_sectors_kb
        if value > self.limits.max_hw_sectors_kb or value < 4:
            raise KernelError(errno.EINVAL, f"max_sectors_kb must be between 4 and {self.limits.max_hw_sectors_kb}")
        self.limits.max_sectors_kb = value

    def set_read_ahead_kb(self, value: int) -> None:
        self.limits.read_ahead_kb = value

    @property
    def io_timeout_ms(self) -> int:
        """jiffies_to_msecs(rq_timeout), an unsigned int in Linux, so it wraps as there."""
        return self.rq_timeout * 1000 // HZ & U32_MAX

    @property
    def timeout_seconds(self) -> float:
        return self.rq_timeout / HZ

    def set_io_timeout(self, msecs: int) -> None:
        # queue_io_timeout_store: 0 is EINVAL; msecs_to_jiffies rounds up to the next tick.
        if msecs <= 0:
            raise KernelError(errno.EINVAL, "io_timeout must be at least 1 ms")
        self.rq_timeout = -(-msecs * HZ // 1000)

    def set_discard_max_bytes(self, value: int) -> None:
        # queue_discard_max_store: a multiple of the granularity, capped at what the hardware takes
        limits = self.limits
        if value & (limits.discard_granularity - 1) or value >> SECTOR_SHIFT > U32_MAX:
            raise KernelError(errno.EINVAL, f"discard_max_bytes {value} is not a multiple of "
                                            f"{limits.discard_granularity}")
        limits.discard_max_bytes = min(value >> SECTOR_SHIFT, limits.discard_max_hw_bytes >> SECTOR_SHIFT) \
            << SECTOR_SHIFT

    def set_wbt_lat_usec(self, usec: int) -> None:
        # queue_wb_lat_store: -1 restores the default, 0 turns writeback throttling off
        if usec < -1:
            raise KernelError(errno.EINVAL, "wbt_lat_usec must be -1 or more")
        self.wbt_lat_nsec = self.wbt_default_latency_nsec() if usec == -1 else usec * 1000 & U64_MAX

    @property
    def wbt_lat_usec(self) -> int:
        return self.wbt_lat_nsec // 1000

    # --- I/O ---------------------------------------------------------------------------------

    def should_fake_timeout(self) -> bool:
        """blk_should_fake_timeout: drop this completion? Asked by drivers at completion (interrupt) time."""
        attr = self.env.fail_io_timeout
        return self.fail_io and attr is not None and attr.should_fail(
            1, in_task=False, stack=("blk_should_fake_timeout", "__handle_irq_event_percpu", "handle_irq_event"))

    def submit(self, bios: list[Bio]) -> None:
        requests = self._build_requests(bios)
        if self.scheduler == "mq-deadline" and len(requests) > 1:
            requests.sort(key=lambda r: (r.op != ReqOp.READ, r.sector))
        first: KernelError | None = None
        for req in requests:
            try:
                self._execute(req)
            except KernelError as e:  # this request ended with an error; the others still run
                for bio in req.bios:
                    bio.error = e
                    if bio.parent is not None:  # a piece of a split bio: the bio itself failed
                        bio.parent.error = e
                first = first or e
        if first is not None:
            raise first

    def _build_requests(self, bios: list[Bio]) -> list[Request]:
        max_sectors = self.limits.max_sectors
        requests: list[Request] = []
        merge = self.nomerges != 2
        for bio in bios:
            for piece in self._split(bio, max_sectors):
                last = requests[-1] if requests and merge else None
                if last is not None and last.can_append(piece, max_sectors):
                    last.append(piece)
                    self._account_merge(piece)
                else:
                    requests.append(Request.from_bio(piece))
        return requests

    @staticmethod
    def _split(bio: Bio, max_sectors: int) -> list[Bio]:
        if bio.nr_sectors <= max_sectors or not bio.op.has_data:
            return [bio]
        pieces: list[Bio] = []
        segments = list(bio.segments)
        sector = bio.sector
        remaining = bio.nr_sectors
        while remaining:
            take = min(remaining, max_sectors)
            want = take << SECTOR_SHIFT
            segs: list[tuple[int, int]] = []
            while want:
                addr, length = segments[0]
                n = min(length, want)
                segs.append((addr, n))
                if n == length:
                    segments.pop(0)
                else:
                    segments[0] = (addr + n, length - n)
                want -= n
            pieces.append(Bio(bio.op, sector, take, segs, bio.bdev, bio.fua, bio.flags, parent=bio))
            sector += take
            remaining -= take
        return pieces

    def _account_merge(self, bio: Bio) -> None:
        group = bio.op.stat_group
        if self.disk is not None and self.iostats:
            self.disk.whole.stats.merged(group)
        if bio.bdev is not None and self.disk is not None and self.iostats and bio.bdev is not self.disk.whole:
            bio.bdev.stats.merged(group)

    def _execute(self, req: Request) -> None:
        group = req.op.stat_group
        targets = self._stat_targets(req)
        for target in targets:
            target.stats.start(group)
        start = time.monotonic_ns()
        try:
            self.driver.execute(req)
        except BlkError as e:
            if not e.quiet and not (self.disk is not None and self.disk.dead):
                self._print_req_error(req, e)
            raise
        finally:
            elapsed = time.monotonic_ns() - start + req.waited_ns
            sectors = req.nr_sectors if req.op != ReqOp.FLUSH else 0
            for target in targets:
                target.stats.done(group, sectors, elapsed)

    def _print_req_error(self, req: Request, e: BlkError) -> None:
        """blk_print_req_error (printk_ratelimited, KERN_ERR), once a request has failed for good."""
        env = self.env
        if not env.req_error_rl.allow(env.jiffies(), lambda text: env.printk(KERN_WARNING, text),
                                      "blk_print_req_error"):
            return
        name = self.disk.name if self.disk is not None else "?"
        sector = req.sector if e.sector is None else e.sector
        op = req.op
        env.printk(KERN_ERR, f"{BLK_ERRORS[e.status][1]} error, dev {name}, sector {sector} op {op.value:#x}:"
                             f"({op.name}) flags {req.flags & ~0xFF:#x} phys_seg {len(req.segments)} "
                             f"prio class {IOPRIO_CLASS_BE}")

    def _stat_targets(self, req: Request) -> list[BlockDevice]:
        if self.disk is None or not self.iostats:  # blk_do_io_stat: nothing is counted
            return []
        part = req.bios[0].bdev
        if req.op == ReqOp.FLUSH:  # blk_account_io_flush counts flushes on the whole disk (part0) only
            return [self.disk.whole]
        return [self.disk.whole] if part is None or part is self.disk.whole else [self.disk.whole, part]
