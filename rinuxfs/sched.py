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
    host: bool = False  # a host process seen through the mount
    cmdline: list[str] = field(default_factory=list)


class TaskTable:
    """The tasks the machine knows, by pid."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tasks: dict[int, Task] = {}
        self.last_pid = 0
        self.forks = 0

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
        for pid in [p for p, t in self.tasks.items() if t.host and not _host_alive(p)]:
            del self.tasks[pid]
        return sorted(self.tasks.values(), key=lambda t: t.pid)

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
        self.tasks[pid] = task
        self.last_pid = max(self.last_pid, pid)
        self.forks += 1
        return task

    def nr_running(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state == "R") or 1


def _host_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


class CpuAccounting:
    """Per-CPU tick counters of /proc/stat, derived from the daemon's CPU time and the clock."""

    def __init__(self, clock: Clock, nr_cpus: int) -> None:
        self.clock = clock
        self.nr_cpus = nr_cpus
        self._cpu_at_boot = time.process_time()

    def per_cpu(self) -> list[dict[str, int]]:
        wall = self.clock.uptime_ticks()
        busy = int((time.process_time() - self._cpu_at_boot) * USER_HZ)
        rows = []
        for cpu in range(self.nr_cpus):
            system = busy // self.nr_cpus + (1 if cpu < busy % self.nr_cpus else 0)
            system = min(system, wall)
            rows.append({"user": 0, "nice": 0, "system": system, "idle": wall - system, "iowait": 0,
                         "irq": 0, "softirq": 0, "steal": 0, "guest": 0, "guest_nice": 0})
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
                _calc_load(load, exp, active * FIXED_1) for load, exp in zip(self.avenrun, (EXP_1, EXP_5, EXP_15))
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
