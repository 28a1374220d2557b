"""Replay a page-reference trace through the kernel's LRU (mm/lru.py) beside LRU and Belady's OPT.

    python -m rinuxfs.mm.replay TRACE --pages N [--json] [--policy adaptive|classic] [--batch B]

TRACE is one decimal page id per line, or libCacheSim's oracleGeneral binary (24-byte records
`<u32 ts, u64 id, u32 size, i64 next>`, little-endian), recognised by the extension
`.oracleGeneral`/`.bin` or by its NUL bytes. Every request is a page-cache lookup in a memory of N
frames, all of them file pages:
- the kernel's policy is the daemon's own `Lruvec`: a hit is `access`; a miss when memory is full
  reclaims as the kernel does — `isolate` from the file lists, `evict` each candidate and keep
  its shadow in a dict standing for the page-cache slots, `note_cost` for the pages scanned but
  not freed — then `add`s the page with the shadow its slot held (the refault test);
- LRU evicts the least recently used page;
- OPT (Belady's MIN) evicts the page whose next use is farthest away: the lower bound.
It prints the three miss ratios (`--json`: one object `{"kernel", "lru", "opt", "requests"}`).
`--batch B` reclaims B pages at a time, as kswapd's SWAP_CLUSTER_MAX batches do (default 1: the
memory holds exactly N pages, as LRU and OPT do); `--policy classic` replays Linux's own two
lists instead of quick demotion (lru.py's header).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import struct
import sys
from collections import OrderedDict
from collections.abc import Sequence

from rinuxfs.mm.lru import Lruvec

ORACLE_RECORD = struct.Struct("<IQIq")  # libCacheSim oracleGeneral: ts, id, size, next access time


class TraceError(Exception):
    """A trace that cannot be read: one line for the user, never a traceback."""


def read_trace(path: str) -> list[int]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TraceError(f"{path}: {e.strerror}") from None
    if not data:
        raise TraceError(f"{path}: empty trace")
    if path.endswith((".oracleGeneral", ".bin")) or not _looks_like_text(data[:4096]):
        if len(data) % ORACLE_RECORD.size:
            raise TraceError(f"{path}: {len(data)} bytes is not a whole number of "
                             f"{ORACLE_RECORD.size}-byte oracleGeneral records")
        return [rec[1] for rec in ORACLE_RECORD.iter_unpack(data)]
    try:
        return [int(tok) for tok in data.split()]
    except ValueError:
        for n, line in enumerate(data.splitlines(), 1):
            tok = line.strip()
            if tok and not tok.isdigit():
                raise TraceError(f"{path}:{n}: not a page id: {tok[:40].decode(errors='replace')!r}") from None
        raise


def _looks_like_text(head: bytes) -> bool:
    # oracleGeneral records hold NUL bytes (the high bytes of every size and timestamp field)
    return b"\0" not in head


# --- the three policies -------------------------------------------------------------------


def kernel_misses(trace: Sequence[int], pages: int, *, quick_demotion: bool = True,
                  batch: int = 1) -> tuple[int, Lruvec]:
    lru = Lruvec(quick_demotion=quick_demotion)
    shadows: dict[int, int] = {}  # the page-cache slots of evicted pages
    access, add, isolate, evict = lru.access, lru.add, lru.isolate, lru.evict
    misses = resident = 0
    for key in trace:
        if access(key):
            continue
        misses += 1
        if resident >= pages:
            freed = 0
            while not freed:  # isolate returns nothing only while it activates referenced pages
                for victim in isolate(False, batch):
                    shadows[victim] = evict(victim, False)
                    freed += 1
            lru.note_cost(False, 0, lru.nr_scanned - freed)
            resident -= freed
        add(key, False, shadows.pop(key, None))
        resident += 1
    return misses, lru


def lru_misses(trace: Sequence[int], pages: int) -> int:
    cache: OrderedDict[int, None] = OrderedDict()
    to_front, pop = cache.move_to_end, cache.popitem
    misses = 0
    for key in trace:
        if key in cache:
            to_front(key)
            continue
        misses += 1
        if len(cache) >= pages:
            pop(last=False)
        cache[key] = None
    return misses


def next_uses(trace: Sequence[int]) -> list[int]:
    """For each request, the index of the next request for the same page (never: past the end,
    a distinct value per request so the farthest is well defined)."""
    n = len(trace)
    nxt = [0] * n
    seen: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        key = trace[i]
        nxt[i] = seen.get(key, n + i)
        seen[key] = i
    return nxt


def opt_misses(trace: Sequence[int], pages: int, nxt: list[int] | None = None) -> int:
    """Belady's MIN with demand paging: a missed page always comes in; when memory is full the
    resident page used farthest in the future leaves (a max-heap with stale entries skipped)."""
    if nxt is None:
        nxt = next_uses(trace)
    resident: dict[int, int] = {}  # page -> its next use
    heap: list[tuple[int, int]] = []
    push, pop = heapq.heappush, heapq.heappop
    misses = 0
    for key, nu in zip(trace, nxt, strict=True):
        if key not in resident:
            misses += 1
            if len(resident) >= pages:
                while True:
                    neg, victim = pop(heap)
                    if resident.get(victim) == -neg:
                        break
                del resident[victim]
        resident[key] = nu
        push(heap, (-nu, key))
        if len(heap) > 4 * pages + 1024:  # drop stale entries so the heap follows the memory size
            heap = [(-v, k) for k, v in resident.items()]
            heapq.heapify(heap)
    return misses


def replay(trace: Sequence[int], pages: int, *, quick_demotion: bool = True, batch: int = 1,
           nxt: list[int] | None = None) -> dict[str, float | int]:
    if not trace:
        raise TraceError("empty trace")
    n = len(trace)
    kernel, _ = kernel_misses(trace, pages, quick_demotion=quick_demotion, batch=batch)
    return {"kernel": kernel / n, "lru": lru_misses(trace, pages) / n, "opt": opt_misses(trace, pages, nxt) / n,
            "requests": n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rinuxfs.mm.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="page ids, one per line, or an oracleGeneral binary trace")
    parser.add_argument("--pages", type=int, required=True, help="memory size in pages")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--policy", choices=("adaptive", "classic"), default="adaptive",
                        help="adaptive: the kernel's default (quick demotion); classic: Linux's two lists")
    parser.add_argument("--batch", type=int, default=1, help="pages reclaimed at a time (default 1)")
    args = parser.parse_args(argv)
    if args.pages < 1:
        parser.error("--pages must be at least 1")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    try:
        trace = read_trace(args.trace)
        result = replay(trace, args.pages, quick_demotion=args.policy == "adaptive", batch=args.batch)
    except TraceError as e:
        print(f"replay: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
        return 0
    distinct = len(set(trace))
    print(f"{os.path.basename(args.trace)}: {result['requests']} requests, {distinct} distinct pages, "
          f"memory of {args.pages} pages ({100 * args.pages / distinct:.2g}% of them)")
    print(f"{'policy':<24} {'miss ratio':>10} {'vs LRU':>8}")
    for label, key in ((f"kernel ({args.policy})", "kernel"), ("LRU", "lru"), ("OPT (Belady)", "opt")):
        ratio = float(result[key])
        print(f"{label:<24} {ratio:>10.4f} {100 * (ratio / float(result['lru']) - 1) if result['lru'] else 0:>+7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
