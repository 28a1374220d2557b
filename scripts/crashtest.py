"""Crash campaign: SIGKILL the daemon at --points moments of a write+fsync stream; check the image each time."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.crash_harness import run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=100, help="kill points to try (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per kill point")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rinuxfs-crash-") as d:
        rounds = run(Path(d), args.points, args.seed, log=args.verbose)
    failed = [r for r in rounds if r.bad]
    where = Counter(r.killed_in for r in rounds)
    ops = sum((r.ops for r in rounds), Counter())
    print(f"kill points tried: {len(rounds)} ({Counter(r.controller for r in rounds)})")
    print(f"killed during: {dict(where)}")
    print(f"operations completed before the kills: {dict(ops)}")
    print(f"rounds with a block nobody wrote, or a lost fsync/O_SYNC write: {len(failed)}")
    for r in failed[:10]:
        print(f"  {r.controller} after {r.delay:.3f}s in {r.killed_in}: {r.bad[:3]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
