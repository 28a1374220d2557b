"""The replay tool (mm/replay.py) and the trace generator, run as a user runs them."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rinuxfs.mm import tracegen
from rinuxfs.mm.replay import TraceError, kernel_misses, lru_misses, opt_misses, read_trace


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("traces")
    out = {"text": d / "zipf.txt", "oracle": d / "zipf.oracleGeneral"}
    for fmt, path in (("text", out["text"]), ("oracleGeneral", out["oracle"])):
        gen = run("rinuxfs.mm.tracegen", "zipf", "--alpha", "0.9", "--requests", "20000", "--format", fmt,
                  "-o", str(path))
        assert gen.returncode == 0, gen.stderr
    return out


def test_replay_json(traces: dict[str, Path]) -> None:
    results = []
    for path in traces.values():
        proc = run("rinuxfs.mm.replay", str(path), "--pages", "300", "--json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)  # exactly one JSON document
        assert set(result) == {"kernel", "lru", "opt", "requests"}
        assert result["requests"] == 20000
        assert 0 < result["opt"] <= result["kernel"] <= 1
        assert result["opt"] <= result["lru"] <= 1
        assert result["kernel"] < result["lru"]  # a skewed trace: quick demotion beats LRU
        results.append(result)
    assert results[0] == results[1]  # the same trace in both formats


def test_replay_table_and_classic_policy(traces: dict[str, Path]) -> None:
    proc = run("rinuxfs.mm.replay", str(traces["text"]), "--pages", "300", "--policy", "classic", "--batch", "32")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("zipf.txt: 20000 requests,")
    assert [line.split()[0] for line in lines[2:]] == ["kernel", "LRU", "OPT"]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty trace"),
    (b"1\n2\nthree\n", "bad.txt:3: not a page id: 'three'"),
    (b"\0" * 25, "not a whole number of 24-byte oracleGeneral records"),
])
def test_bad_trace_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    proc = run("rinuxfs.mm.replay", str(path), "--pages", "10")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(TraceError):
        read_trace(str(path))


def test_missing_trace_and_bad_size(tmp_path: Path) -> None:
    proc = run("rinuxfs.mm.replay", str(tmp_path / "none"), "--pages", "10")
    assert proc.returncode == 1 and "No such file or directory" in proc.stderr
    proc = run("rinuxfs.mm.replay", str(tmp_path / "none"), "--pages", "0")
    assert proc.returncode == 2 and "--pages must be at least 1" in proc.stderr


# --- the baselines, against brute force ---------------------------------------------------


def brute_force_opt(trace: list[int], pages: int) -> int:
    """The fewest misses any demand-paging policy can have: a search over every eviction choice."""

    @functools.cache
    def best(i: int, cache: frozenset[int]) -> int:
        if i == len(trace):
            return 0
        key = trace[i]
        if key in cache:
            return best(i + 1, cache)
        if len(cache) < pages:
            return 1 + best(i + 1, cache | {key})
        return 1 + min(best(i + 1, (cache - {victim}) | {key}) for victim in cache)

    return best(0, frozenset())


def naive_lru(trace: list[int], pages: int) -> int:
    stack: list[int] = []
    misses = 0
    for key in trace:
        if key in stack:
            stack.remove(key)
        else:
            misses += 1
            if len(stack) == pages:
                stack.pop(0)
        stack.append(key)
    return misses


SMALL_TRACES = st.lists(st.integers(0, 6), min_size=1, max_size=14)


@settings(max_examples=200, deadline=None)
@given(SMALL_TRACES, st.integers(1, 4))
def test_opt_is_the_optimum(trace: list[int], pages: int) -> None:
    assert opt_misses(trace, pages) == brute_force_opt(trace, pages)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=300), st.integers(1, 12))
def test_lru_and_kernel_against_the_bounds(trace: list[int], pages: int) -> None:
    opt = opt_misses(trace, pages)
    assert lru_misses(trace, pages) == naive_lru(trace, pages)
    for quick in (True, False):
        for batch in (1, 3):
            misses, lru = kernel_misses(trace, pages, quick_demotion=quick, batch=batch)
            assert opt <= misses <= len(trace)
            assert len(lru) <= pages  # the memory never holds more than N pages
            assert misses >= len(set(trace))  # every page's first access is a miss


def test_generators_have_the_documented_shapes() -> None:
    scan = tracegen.scanmix(requests=60_000)
    assert len(scan) == 60_000 + 2 * 5_000  # scans after the first two blocks, none after the last
    assert scan[20_000:25_000] == list(range(20_000, 25_000))
    assert tracegen.loop()[:3] == [0, 1, 2] and len(tracegen.loop()) == 240_000
    z = tracegen.zipf(1.0, requests=50_000)
    assert len(z) == 50_000 and max(z) < 100_000
    shifting = tracegen.shifting(requests=300_000)
    first, third = set(shifting[:100_000]), set(shifting[200_000:])
    assert len(first) <= 20_000 and len(first & third) < len(first) // 2  # the hot set moved on
    assert tracegen.zipf(1.0, requests=1000) == tracegen.zipf(1.0, requests=1000)  # seeded

