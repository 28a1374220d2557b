"""Pressure stall information (kernel/sched/psi.c): how much of the time work waited for memory, I/O or a CPU.

Contract:
- `stall(resource, seconds)` records that the request being served stalled that long on the
  resource ("memory": direct reclaim and swap-in; "io": waiting for block I/O). The daemon
  serves one request at a time, so a stalled request is every runnable task stalled: "some"
  and "full" grow together.
- `render(resource)` is /proc/pressure/<resource>: `some` and `full` lines with avg10/avg60/
  avg300 (percent of wall time, exponentially decayed every PSI_FREQ = 2 s as psi does) and
  total (microseconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable

PSI_FREQ = 2.0
WINDOWS = (10.0, 60.0, 300.0)


class _Pressure:
    def __init__(self, now: float) -> None:
        self.total_us = 0
        self.avgs = [0.0, 0.0, 0.0]
        self.last_update = now
        self.last_total_us = 0


class Psi:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        now = clock()
        self.res = {name: _Pressure(now) for name in ("memory", "io", "cpu")}

    def stall(self, resource: str, seconds: float) -> None:
        if seconds > 0:
            self._update(resource)
            self.res[resource].total_us += int(seconds * 1_000_000)

    def _update(self, resource: str) -> None:
        p = self.res[resource]
        now = self.clock()
        periods = int((now - p.last_update) / PSI_FREQ)
        if periods <= 0:
            return
        # The stall time since the last update, spread over the periods that passed.
        pct = min(100.0, (p.total_us - p.last_total_us) / 1e6 / (periods * PSI_FREQ) * 100)
        for i, window in enumerate(WINDOWS):
            decay = math.exp(-PSI_FREQ / window)
            for _ in range(min(periods, 1000)):
                p.avgs[i] = p.avgs[i] * decay + pct * (1 - decay)
        p.last_update += periods * PSI_FREQ
        p.last_total_us = p.total_us

    def render(self, resource: str) -> str:
        self._update(resource)
        p = self.res[resource]
        line = " ".join(f"avg{int(w)}={a:.2f}" for w, a in zip(WINDOWS, p.avgs, strict=True))
        if resource == "cpu":
            # The daemon's requests never wait for a simulated CPU: one runs at a time, on a host core.
            zero = " ".join(f"avg{int(w)}=0.00" for w in WINDOWS)
            return f"some {zero} total=0\nfull {zero} total=0\n"
        return f"some {line} total={p.total_us}\nfull {line} total={p.total_us}\n"
