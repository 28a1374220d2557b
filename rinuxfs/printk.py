"""The kernel log: a printk ring buffer of `<level>[seconds.micros] text` records."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

KERN_EMERG, KERN_ALERT, KERN_CRIT, KERN_ERR, KERN_WARNING, KERN_NOTICE, KERN_INFO, KERN_DEBUG = range(8)
LOG_BUF_RECORDS = 4096  # a 2^n ring like CONFIG_LOG_BUF_SHIFT's, counted in records


@dataclass(frozen=True)
class LogRecord:
    seq: int
    level: int
    usec: int  # since boot
    text: str

    def kmsg_line(self) -> str:
        """The syslog(2)/proc/kmsg form: <level>[    5.123456] text."""
        return f"<{self.level}>[{self.usec // 1_000_000:5d}.{self.usec % 1_000_000:06d}] {self.text}\n"


class KernelLog:
    """Ring of the most recent records; the oldest fall off when it is full."""

    def __init__(self, now_usec: Callable[[], int], echo: Callable[[LogRecord], None] | None = None) -> None:
        self._now_usec = now_usec
        self._records: deque[LogRecord] = deque(maxlen=LOG_BUF_RECORDS)
        self._next_seq = 0
        self._echo = echo

    def printk(self, level: int, text: str) -> None:
        for line in text.splitlines() or [""]:
            record = LogRecord(self._next_seq, level, self._now_usec(), line)
            self._next_seq += 1
            self._records.append(record)
            if self._echo:
                self._echo(record)

    def info(self, text: str) -> None:
        self.printk(KERN_INFO, text)

    def warn(self, text: str) -> None:
        self.printk(KERN_WARNING, text)

    def err(self, text: str) -> None:
        self.printk(KERN_ERR, text)

    def records(self) -> list[LogRecord]:
        return list(self._records)

    def render_kmsg(self) -> str:
        return "".join(r.kmsg_line() for r in self._records)
