"""Tasks and CPU time: the task table, the clock, CPU accounting and the load average.

The simulated machine's CPUs do the daemon's work, so CPU time is the daemon's
own: `system` ticks are the daemon's CPU time (split across the simulated
CPUs), idle is the rest of each CPU's wall time since boot. Host processes
that look at the machine (a caller's /proc/<pid>) join the task table on
first sight and leave it when they exit, so ps and top see them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

USER_HZ = 100
FSHIFT = 11
FIXED_1 = 1 << FSHIFT
EXP_1, EXP_5, EXP_15 = 1884, 2014, 2037
LOAD_FREQ_S = 5


class Clock:
    """CLOCK_BOOTTIME of the simulated machine: seconds since it booted."""

    def __init__(self) -> None:
        self._boot_mono = time.monotonic()
        self.boot_epoch = time.time()

    def uptime(self) -> float:
        return time.monotonic() - self._boot_mono

    def advance(self, seconds: float) -> None:
        """Time the machine spent waiting without the host waiting (a request timeout): uptime jumps ahead.

        The boot time stays what it was, so the simulated machine's wall clock (btime + uptime)
        runs ahead of the host's by the waits skipped so far.
        """
        self._boot_mono -= seconds

    def uptime_usec(self) -> int:
        return int(self.uptime() * 1_000_000)

    def uptime_ticks(self) -> int:
        return int(self.uptime() * USER_HZ)


@dataclass(eq=False)
class Task:
    pid: int
    comm: str
    ppid: int
    state: str  # R, S, D, I (idle kernel thread), Z
    start_ticks: int  # since boot, in USER_HZ ticks
    uid: int = 0
    gid: int = 0
    kthread: bool = False
    oom_score_adj: int = 0  # -1000..1000 (OOM_SCORE_ADJ_MIN..MAX)
    oom_score_adj_min: int = 0  # the lowest an unprivileged writer may set (what it last set as root)
    oom_killed: bool = False  # chosen by the OOM killer: never chosen again
    host: bool = False  # a host process seen through the mount
    cmdline: list[str] = field(default_factory=list)
    make_it_fail: bool = False  # /proc/<pid>/make-it-fail, for fault injection's task-filter; inherited
    fail_nth: int = 0  # /proc/<pid>/fail-nth: the n-th fault-injection check of this task fails


class TaskTable:
    """The tasks the machine knows, by pid."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tasks: dict[int, Task] = {}
        self.last_pid = 0
        self.forks = 0
        self._sweep_at = 64  # sweep out exited host processes when the table grows past this

    def spawn_kernel_thread(self, pid: int, comm: str, ppid: int) -> Task:
        state = "S" if pid == 1 else "I"
        task = Task(pid, comm, ppid, state, self.clock.uptime_ticks(), kthread=pid != 1)
        if pid == 1:
            task.cmdline = ["/sbin/init"]
        self.tasks[pid] = task
        self.last_pid = max(self.last_pid, pid)
        self.forks += 1
        return task

    def get(self, pid: int) -> Task | None:
        """The task `pid`, adopting a live host process of that pid on first sight."""
        task = self.tasks.get(pid)
        if task is not None:
            if task.host and not _host_alive(pid):
                del self.tasks[pid]
                return None
            return task
        return self._adopt_host_process(pid)

    def list(self) -> list[Task]:
        self._sweep()
        return sorted(self.tasks.values(), key=lambda t: t.pid)

    def _sweep(self) -> None:
        """Forget host processes that exited: the table holds what lives, not every process ever seen."""
        for pid in [p for p, t in self.tasks.items() if t.host and not _host_alive(p)]:
            del self.tasks[pid]
        self._sweep_at = 2 * len(self.tasks) + 64

    def _adopt_host_process(self, pid: int) -> Task | None:
        if pid <= 0 or not _host_alive(pid):
            return None
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            st = os.stat(f"/proc/{pid}")
        except OSError:
            return None
        task = Task(pid, comm, 1, "S", self.clock.uptime_ticks(), st.st_uid, st.st_gid, host=True, cmdline=cmdline)
        parent = self.tasks.get(_host_ppid(pid))
        task.make_it_fail = parent is not None and parent.make_it_fail  # copied at fork, as dup_task_struct does
        self.tasks[pid] = task
        self.last_pid = max(self.last_pid, pid)
        self.forks += 1
        if len(self.tasks) > self._sweep_at:
            self._sweep()
        return task

    def nr_running(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state == "R") or 1


def _host_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _host_ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


class CpuAccounting:
    """Per-CPU tick counters of /proc/stat, derived from the daemon's CPU time and the clock.

    Counters only grow: each look advances every online CPU by the wall time
    since the previous look, shared out as system time (the daemon's CPU use)
    and idle. An offline CPU's counters stand still, as the kernel's do, so
    the `cpu` total never goes backwards when a CPU is unplugged (top and
    vmstat print deltas of it).
    """

    def __init__(self, clock: Clock, nr_cpus: int) -> None:
        self.clock = clock
        self.nr_cpus = nr_cpus
        self._system = [0.0] * nr_cpus  # seconds
        self._idle = [0.0] * nr_cpus
        self._online: set[int] = set(range(nr_cpus))
        self._last_wall = clock.uptime()
        self._last_busy = 0.0
        self._pid = os.getpid()
        self._cpu_base = time.process_time()

    def _daemon_cpu(self) -> float:
        if os.getpid() != self._pid:
            # The kernel boots in the parent and is served by a forked child, whose CPU clock starts at 0.
            self._pid = os.getpid()
            self._cpu_base = 0.0
            self._last_busy = 0.0
        return max(time.process_time() - self._cpu_base, self._last_busy)

    def advance(self, online: Iterable[int] | None = None) -> None:
        """Charge the time since the last look to the CPUs online during it, then take `online` as the new set."""
        now = self.clock.uptime()
        busy = self._daemon_cpu()
        wall = max(0.0, now - self._last_wall)
        cpus = sorted(self._online)
        if cpus:
            share = (busy - self._last_busy) / len(cpus)
            for cpu in cpus:
                system = min(share, wall)
                self._system[cpu] += system
                self._idle[cpu] += wall - system
        self._last_wall, self._last_busy = now, busy
        if online is not None:
            self._online = {c for c in online if 0 <= c < self.nr_cpus}

    def per_cpu(self, online: Iterable[int] | None = None) -> list[dict[str, int]]:
        """Every possible CPU's counters in USER_HZ ticks, offline ones frozen at their last value."""
        self.advance(online)
        rows = []
        for cpu in range(self.nr_cpus):
            rows.append({"user": 0, "nice": 0, "system": int(self._system[cpu] * USER_HZ),
                         "idle": int(self._idle[cpu] * USER_HZ), "iowait": 0, "irq": 0, "softirq": 0, "steal": 0,
                         "guest": 0, "guest_nice": 0})
        return rows


class LoadAverage:
    """avenrun[] in the kernel's fixed point, advanced lazily in LOAD_FREQ steps."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.avenrun = [0, 0, 0]
        self._last_step = 0

    def sample(self, active: int) -> tuple[float, float, float]:
        steps = int(self.clock.uptime() // LOAD_FREQ_S) - self._last_step
        for _ in range(min(steps, 1000)):
            self.avenrun = [
                _calc_load(load, exp, active * FIXED_1)
                for load, exp in zip(self.avenrun, (EXP_1, EXP_5, EXP_15), strict=True)
            ]
        self._last_step += steps
        return tuple(a / FIXED_1 for a in self.avenrun)  # type: ignore[return-value]

    def render_fields(self) -> list[str]:
        out = []
        for load in self.avenrun:
            load += FIXED_1 // 200  # rounds like fs/proc/loadavg.c
            out.append(f"{load >> FSHIFT}.{((load & (FIXED_1 - 1)) * 100) >> FSHIFT:02d}")
        return out


def _calc_load(load: int, exp: int, active: int) -> int:
    newload = load * exp + active * (FIXED_1 - exp)
    if active >= load:
        newload += FIXED_1 - 1
    return newload // FIXED_1
