"""lib/ratelimit.c: at most `burst` messages per `interval`, the others counted and reported later.

Contract: `RateLimit(interval, burst)` is one call site's state (struct ratelimit_state);
`check(now)` is ___ratelimit: it returns whether this message may be printed and how many were
suppressed since the last report, which the caller prints first as Linux does
("<func>: N callbacks suppressed", KERN_WARNING). Times are in jiffies of the caller's clock;
an interval of 0 never limits. DEFAULT_RATELIMIT_INTERVAL / BURST are printk_ratelimited's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_RATELIMIT_BURST = 10
DEFAULT_RATELIMIT_SECONDS = 5  # DEFAULT_RATELIMIT_INTERVAL is 5 * HZ


@dataclass
class RateLimit:
    interval: int  # jiffies; 0: no limit
    burst: int
    begin: int = -1
    printed: int = 0
    missed: int = 0

    def check(self, now: int) -> tuple[bool, int]:
        """(print this one?, callbacks suppressed to report before it)."""
        if not self.interval:
            return True, 0
        if self.begin < 0:
            self.begin = now
        suppressed = 0
        if now > self.begin + self.interval:  # the window is over: report what it swallowed, start anew
            suppressed, self.missed = self.missed, 0
            self.begin, self.printed = now, 0
        if self.burst and self.burst > self.printed:
            self.printed += 1
            return True, suppressed
        self.missed += 1
        return False, suppressed

    def allow(self, now: int, warn: Callable[[str], None], func: str) -> bool:
        """printk_ratelimited's test: report what was suppressed ("<func>: N callbacks suppressed"), then say."""
        ok, suppressed = self.check(now)
        if suppressed:
            warn(f"{func}: {suppressed} callbacks suppressed")
        return ok
