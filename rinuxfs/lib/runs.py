"""Runs of consecutive integers (frames, slots, sectors), found by C-level maps rather than a loop.

Contract: `run_bounds(values)` gives the indexes where a run starts (a value that is not one more
than the value before it), then len(values); `runs(values)` gives (first value, count) per run.
Batches of hundreds of frames or swap slots are cut into runs on every request, so the
comparison of each value with its predecessor runs in C.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import compress, islice, repeat


def run_bounds(values: Sequence[int]) -> list[int]:
    n = len(values)
    if not n:
        return [0]
    follows = map(operator.eq, islice(values, 1, None), map(operator.add, values, repeat(1)))
    return [0, *compress(range(1, n), map(operator.not_, follows)), n]


def runs(values: Sequence[int]) -> list[tuple[int, int]]:
    bounds = run_bounds(values)
    return [(values[a], b - a) for a, b in zip(bounds, islice(bounds, 1, None), strict=False)]
