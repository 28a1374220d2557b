"""I/O statistics of a disk or partition: the 17 counters of /proc/diskstats and <dev>/stat.

Contract (Documentation/admin-guide/iostats.rst): each completed request adds
to its operation group (read, write, discard, flush) one I/O, its sectors, and
its time in flight; a merged bio adds one merge. io_ticks counts wall time
with at least one request in flight; time_in_queue is the sum of all requests'
times. Times are kept in nanoseconds and shown in milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

READ, WRITE, DISCARD, FLUSH = range(4)  # stat groups, in the order the files print them


@dataclass
class IoStats:
    ios: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    merges: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    sectors: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    nsecs: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    in_flight: list[int] = field(default_factory=lambda: [0, 0])  # reads, writes (discards count as writes)
    io_ticks_ns: int = 0
    _busy_since: int = 0

    def start(self, group: int) -> None:
        now = time.monotonic_ns()
        if not any(self.in_flight):
            self._busy_since = now
        self.in_flight[0 if group == READ else 1] += 1

    def done(self, group: int, sectors: int, elapsed_ns: int) -> None:
        self.in_flight[0 if group == READ else 1] -= 1
        self.ios[group] += 1
        self.sectors[group] += sectors
        self.nsecs[group] += elapsed_ns
        if not any(self.in_flight):
            self.io_ticks_ns += time.monotonic_ns() - self._busy_since

    def merged(self, group: int) -> None:
        self.merges[group] += 1

    def io_ticks_ms(self) -> int:
        ticks = self.io_ticks_ns
        if any(self.in_flight):
            ticks += time.monotonic_ns() - self._busy_since
        return ticks // 1_000_000

    def fields(self) -> list[int]:
        """The 17 values, in /proc/diskstats order after the three id fields."""
        ms = [n // 1_000_000 for n in self.nsecs]
        in_flight = sum(self.in_flight)
        return [
            self.ios[READ], self.merges[READ], self.sectors[READ], ms[READ],
            self.ios[WRITE], self.merges[WRITE], self.sectors[WRITE], ms[WRITE],
            # time_in_queue sums the nanoseconds before converting, as diskstats_show does
            in_flight, self.io_ticks_ms(), sum(self.nsecs) // 1_000_000,
            self.ios[DISCARD], self.merges[DISCARD], self.sectors[DISCARD], ms[DISCARD],
            self.ios[FLUSH], ms[FLUSH],
        ]

    def render_stat(self) -> str:
        """<dev>/stat: the 17 counters, each %8lu."""
        return "".join(f"{v:8d} " for v in self.fields()).rstrip(" ") + "\n"

    def render_inflight(self) -> str:
        return f"{self.in_flight[0]:8d} {self.in_flight[1]:8d}\n"
