"""lib/runs: runs of consecutive integers, against the obvious loop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rinuxfs.lib.runs import run_bounds, runs


def _loop(values: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in values:
        if out and v == out[-1][0] + out[-1][1]:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out


@given(st.lists(st.integers(-3, 40), max_size=60))
def test_runs_are_the_loops(values: list[int]) -> None:
    assert runs(values) == _loop(values)
    bounds = run_bounds(values)
    assert bounds[-1] == len(values) and sum(n for _, n in runs(values)) == len(values)


def test_examples() -> None:
    assert runs([]) == [] and run_bounds([]) == [0]
    assert runs([5, 6, 7, 9, 10, 3]) == [(5, 3), (9, 2), (3, 1)]
    assert run_bounds([5, 6, 7, 9, 10, 3]) == [0, 3, 5, 6]
