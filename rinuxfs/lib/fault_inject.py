"""lib/fault-inject.c: the generic fault attributes and should_fail, deterministic given a seed.

Contract:
- A `FaultEnv` is what every capability of one kernel shares: printk, the task a check runs
  for (`current`, None outside any task), jiffies, the CPU, the names dump_stack prints, and one
  random generator seeded at boot, so a test that sets the same attributes sees the same
  failures on every run.
- A `FaultAttr` is one capability (struct fault_attr: fail_make_request, fail_io_timeout,
  fail_page_alloc, an NVMe fault_inject directory), with Linux's defaults: probability 0 (never),
  interval 1, times 1, space 0, verbose 2, task-filter N.
- `should_fail(size, in_task=…, nowarn=…, stack=…)` is should_fail_ex of Linux 6.18 without a
  stack filter (CONFIG_FAULT_INJECTION_STACKTRACE_FILTER is off): a task's fail-nth first, then
  probability 0 → no, task-filter, times 0 → no, space consumed by `size`, interval, the random
  draw. A failure prints "FAULT_INJECTION: forcing a failure." and the attribute line (KERN_NOTICE,
  ratelimited by verbose_ratelimit_*), with verbose 2 a dump_stack of `stack` (Linux's function
  names of the path: the simulated kernel has no text, so frames carry no offsets), and then
  counts down `times` unless it is -1. `injected` counts the failures, for tests and reports.
- `fault_attr_files(attr)` lists the debugfs files fault_create_debugfs_attr makes (mode 0600),
  with Linux's formats and parsers: %llu / kstrtoull base 0 for the unsigned ones, %lld /
  kstrtoll for the atomic_t ones (kept in 32 bits as atomic_t does), both on the first 23 bytes
  written (simple_attr's set_buf), and Y/N / kstrtobool for bools, whose writes always succeed:
  debugfs_write_file_bool returns the count whether kstrtobool parsed the value or not, so
  "maybe" leaves the bool as it was and is no error.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rinuxfs.errors import KernelError
from rinuxfs.lib.kstrtox import U32_MAX, U64_MAX, kstrtobool, kstrtoll, kstrtoull, s32
from rinuxfs.lib.ratelimit import DEFAULT_RATELIMIT_BURST, RateLimit

KERN_WARNING, KERN_NOTICE = 4, 5
KERN_DEFAULT = KERN_WARNING  # dump_stack prints at the default message loglevel, 4


class FaultTask(Protocol):
    """What should_fail reads of the current task (task_struct's make_it_fail and fail_nth)."""

    pid: int
    uid: int
    comm: str
    make_it_fail: bool
    fail_nth: int


@dataclass
class FaultEnv:
    printk: Callable[[int, str], None]
    current: Callable[[], FaultTask | None] = lambda: None  # cheap: asked at every check that gets far enough
    whoami: Callable[[], tuple[int, int, str]] = lambda: (0, 0, "swapper/0")  # pid, uid, comm for dump_stack
    jiffies: Callable[[], int] = lambda: 0
    cpu: Callable[[], int] = lambda: 0
    release: str = "6.18.0"
    version: str = "#1"
    hardware: str = "rinuxfs simulated machine"
    seed: int = 0
    fail_nth_armed: bool = False  # some task has a fail-nth set: the checks must look at the current task
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def dump_stack(self, frames: Sequence[str], irq: bool = False) -> None:
        """dump_stack_lvl: the task line of dump_stack_print_info (6.18), the hardware, the call trace.

        In interrupt context the frames are the <IRQ> part; the task's own part then holds none.
        """
        pid, uid, comm = self.whoami()
        log = self.printk
        log(KERN_DEFAULT, f"CPU: {self.cpu()} UID: {uid} PID: {pid} Comm: {comm[:20]} Not tainted "
                          f"{self.release} {self.version.split(' ')[0]} PREEMPT(voluntary) ")
        log(KERN_DEFAULT, f"Hardware name: {self.hardware}")
        log(KERN_DEFAULT, "Call Trace:")
        if irq:
            log(KERN_DEFAULT, " <IRQ>")
        else:
            log(KERN_DEFAULT, " <TASK>")
        for frame in ("dump_stack_lvl", "should_fail_ex", *frames):
            log(KERN_DEFAULT, f" {frame}")
        if irq:
            log(KERN_DEFAULT, " </IRQ>")
            log(KERN_DEFAULT, " <TASK>")
        log(KERN_DEFAULT, " </TASK>")


class FaultAttr:
    """struct fault_attr, and should_fail on it."""

    def __init__(self, name: str, env: FaultEnv) -> None:
        self.name = name  # the debugfs directory name, which the message prints (%pd)
        self.env = env
        self.probability = 0
        self.interval = 1
        self.times = 1
        self.space = 0
        self.verbose = 2
        self.task_filter = False
        self.count = 0
        self.ratelimit = RateLimit(0, DEFAULT_RATELIMIT_BURST)  # RATELIMIT_STATE_INIT_DISABLED
        self.injected = 0

    def should_fail(self, size: int, *, in_task: bool = True, nowarn: bool = False,
                    stack: Sequence[str] = ()) -> bool:
        task = self.env.current() if in_task and (self.probability or self.env.fail_nth_armed) else None
        if task is not None and task.fail_nth:
            task.fail_nth -= 1
            if task.fail_nth:
                return False
        else:
            if self.probability == 0:
                return False
            if self.task_filter and (task is None or not task.make_it_fail):
                return False
            if self.times == 0:
                return False
            if self.space > size:
                self.space -= size
                return False
            if self.interval > 1:
                self.count += 1
                if self.count % self.interval:
                    return False
            if self.probability <= self.env.rng.randrange(100):
                return False
        if not nowarn:
            self._dump(stack, irq=not in_task)
        if self.times != -1 and self.times != 0:
            self.times -= 1
        self.injected += 1
        return True

    def _dump(self, stack: Sequence[str], irq: bool) -> None:
        """fail_dump: the message (times before it is counted down), then the stack with verbose 2."""
        if self.verbose <= 0:
            return
        env = self.env
        if not self.ratelimit.allow(env.jiffies(), lambda text: env.printk(KERN_WARNING, text), "fail_dump"):
            return
        env.printk(KERN_NOTICE, "FAULT_INJECTION: forcing a failure.")
        env.printk(KERN_NOTICE, f"name {self.name}, interval {self.interval}, probability {self.probability}, "
                                f"space {self.space}, times {self.times}")
        if self.verbose > 1:
            env.dump_stack(stack, irq)


FaultShow = Callable[[], str]
FaultStore = Callable[[str], None]


SIMPLE_ATTR_SET_BUF = 23  # simple_attr's set_buf holds 24 bytes with the NUL: a write parses its first 23


def _number(obj: object, name: str, parse: Callable[[str], int]) -> tuple[FaultShow, FaultStore]:
    def store(text: str) -> None:
        head = text.encode(errors="surrogateescape")[:SIMPLE_ATTR_SET_BUF].decode(errors="surrogateescape")
        setattr(obj, name, parse(head))

    return lambda: f"{getattr(obj, name)}\n", store


def _ulong(obj: object, name: str) -> tuple[FaultShow, FaultStore]:
    """debugfs_create_ulong: %llu, kstrtoull base 0."""
    return _number(obj, name, lambda text: kstrtoull(text, 0) & U64_MAX)


def _atomic(obj: object, name: str) -> tuple[FaultShow, FaultStore]:
    """debugfs_create_atomic_t: %lld, kstrtoll base 0, kept in 32 bits."""
    return _number(obj, name, lambda text: s32(kstrtoll(text, 0)))


def debugfs_u32(obj: object, name: str) -> tuple[FaultShow, FaultStore]:
    """debugfs_create_u32: %llu, kstrtoull base 0, kept in 32 bits."""
    return _number(obj, name, lambda text: kstrtoull(text, 0) & U32_MAX)


def debugfs_x16(obj: object, name: str) -> tuple[FaultShow, FaultStore]:
    """debugfs_create_x16: 0x%04llx, kstrtoull base 0, kept in 16 bits."""
    _, store = _number(obj, name, lambda text: kstrtoull(text, 0) & 0xFFFF)
    return lambda: f"0x{getattr(obj, name):04x}\n", store


def debugfs_bool(obj: object, name: str) -> tuple[FaultShow, FaultStore]:
    """debugfs_create_bool: reads Y or N; a write sets what kstrtobool makes of it, and any other is ignored."""
    def store(text: str) -> None:
        try:
            value = kstrtobool(text)
        except KernelError:
            return  # debugfs_write_file_bool returns the count all the same
        setattr(obj, name, value)

    return lambda: "Y\n" if getattr(obj, name) else "N\n", store


def fault_attr_files(attr: FaultAttr) -> list[tuple[str, FaultShow, FaultStore]]:
    """The files of fault_create_debugfs_attr, in its order; each is mode 0600."""
    return [
        ("probability", *_ulong(attr, "probability")),
        ("interval", *_ulong(attr, "interval")),
        ("times", *_atomic(attr, "times")),
        ("space", *_atomic(attr, "space")),
        ("verbose", *_ulong(attr, "verbose")),
        ("verbose_ratelimit_interval_ms", *debugfs_u32(attr.ratelimit, "interval")),
        ("verbose_ratelimit_burst", *debugfs_u32(attr.ratelimit, "burst")),
        ("task-filter", *debugfs_bool(attr, "task_filter")),
    ]
