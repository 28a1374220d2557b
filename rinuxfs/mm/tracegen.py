"""Synthetic page-reference traces for the eviction benchmarks (reference/mm.md §5.2, §5.4).

Each generator returns a list of page ids (ints), reproducible from its seed:
- `zipf(alpha)`: independent references over 100 000 pages, page of rank k drawn with
  probability ∝ 1/k^alpha, the rank→id map shuffled (seed 42).
- `scanmix()`: 1M Zipf(0.9) requests over 20 000 pages, and after every 20 000 of them (but the
  last) a one-shot sequential scan of 5 000 pages never seen before (seed 7): scan resistance.
- `loop()`: a 12 000-page cycle, 240 000 requests: LRU's worst case at a cache of 10 000.
- `shifting()`: Zipf(1.0) over a hot window of 20 000 pages in a universe of 100 000; every
  100 000 requests the window moves on by 10 000 ranks, so the warm half of the old hot set
  becomes the hot half of the new one and 10 000 pages never seen become warm (seed 11):
  exercises refault activation as a working set moves.

`python -m rinuxfs.mm.tracegen NAME [-o FILE] [--alpha A] [--requests N]` writes one decimal
id per line (the replay tool's text format); `--format oracleGeneral` writes libCacheSim's
24-byte binary records instead.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections.abc import Callable

from rinuxfs.mm.replay import ORACLE_RECORD, next_uses


def _zipf_ranks(rng: random.Random, n: int, alpha: float, k: int) -> list[int]:
    """k ranks in [0, n), rank r drawn with probability ∝ 1/(r+1)^alpha (inverse CDF, in C)."""
    cum = list(itertools.accumulate((r + 1) ** -alpha for r in range(n)))
    return rng.choices(range(n), cum_weights=cum, k=k)


def zipf(alpha: float, pages: int = 100_000, requests: int = 1_000_000, seed: int = 42) -> list[int]:
    rng = random.Random(seed)
    ids = list(range(pages))
    rng.shuffle(ids)
    return [ids[r] for r in _zipf_ranks(rng, pages, alpha, requests)]


def scanmix(pages: int = 20_000, requests: int = 1_000_000, scan: int = 5_000, every: int = 20_000,
            alpha: float = 0.9, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    ids = list(range(pages))
    rng.shuffle(ids)
    hot = [ids[r] for r in _zipf_ranks(rng, pages, alpha, requests)]
    out: list[int] = []
    fresh = pages  # scanned pages are new every time: ids above the Zipf set
    for start in range(0, requests, every):
        out += hot[start:start + every]
        if start + every < requests:  # between blocks of Zipf requests, none after the last
            out += range(fresh, fresh + scan)
            fresh += scan
    return out


def loop(cycle: int = 12_000, requests: int = 240_000) -> list[int]:
    return [i % cycle for i in range(requests)]


def shifting(universe: int = 100_000, window: int = 20_000, shift: int = 10_000, phase: int = 100_000,
             requests: int = 1_000_000, alpha: float = 1.0, seed: int = 11) -> list[int]:
    rng = random.Random(seed)
    ids = list(range(universe))
    rng.shuffle(ids)
    ranks = _zipf_ranks(rng, window, alpha, requests)
    return [ids[(i // phase * shift + r) % universe] for i, r in enumerate(ranks)]


GENERATORS: dict[str, Callable[..., list[int]]] = {
    "zipf": zipf, "scanmix": scanmix, "loop": loop, "shifting": shifting,
}


def write_text(trace: list[int], out) -> None:
    for start in range(0, len(trace), 65536):
        out.write("".join(f"{x}\n" for x in trace[start:start + 65536]))


def write_oracle_general(trace: list[int], out) -> None:
    """libCacheSim's oracleGeneral records, next-access times filled in (-1: never again)."""
    end = len(trace)
    out.write(b"".join(ORACLE_RECORD.pack(i, x, 4096, n if n < end else -1)
                       for i, (x, n) in enumerate(zip(trace, next_uses(trace), strict=True))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rinuxfs.mm.tracegen", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(GENERATORS))
    parser.add_argument("-o", "--output", help="file to write (default: standard output)")
    parser.add_argument("--alpha", type=float, default=1.0, help="Zipf skew for `zipf` (default 1.0)")
    parser.add_argument("--requests", type=int, help="number of requests (default: the trace's own)")
    parser.add_argument("--format", choices=("text", "oracleGeneral"), default="text")
    args = parser.parse_args(argv)
    kwargs: dict[str, float | int] = {}
    if args.name == "zipf":
        kwargs["alpha"] = args.alpha
    if args.requests is not None:
        if args.requests <= 0:
            parser.error("--requests must be positive")
        kwargs["requests"] = args.requests
    trace = GENERATORS[args.name](**kwargs)
    if args.format == "text":
        if args.output:
            with open(args.output, "w") as f:
                write_text(trace, f)
        else:
            write_text(trace, sys.stdout)
    elif args.output:
        with open(args.output, "wb") as f:
            write_oracle_general(trace, f)
    else:
        write_oracle_general(trace, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
