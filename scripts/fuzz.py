"""rinuxfs fuzz campaigns: hostile partition tables and hostile hosts of the NVMe and AHCI models.

The targets and their checks live in tests/fuzzing (the unit tests run a
small, derandomized sample of the same). A campaign splits --cases over the
targets, runs them in seeded batches and prints what it found: cases run per
target, time, the outcomes seen, and each failure with a file that
`--replay` runs again (hypothesis's @reproduce_failure line too). Exit status
1 when something was found.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzzing.campaign import TARGETS, campaign, replay, summary  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000, help="cases in all, split over the targets (3000)")
    parser.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="seed of the first batch (default: now)")
    parser.add_argument("--batch", type=int, default=500, help="cases per hypothesis run (500)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a case may take before it is a hang")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="where failing cases are saved")
    parser.add_argument("--replay", type=Path, help="run a saved case again and show what it raises")
    args = parser.parse_args()
    if args.replay:
        return replay(args.replay)
    names = list(TARGETS) if args.target == "all" else [args.target]
    print(f"fuzz: {args.cases} cases of {', '.join(names)}, seed {args.seed}", flush=True)
    start = time.monotonic()
    reports = campaign(names, args.cases, base_seed=args.seed, batch=args.batch, out=args.out,
                       case_timeout=args.timeout, progress=lambda line: print(f"  {line}", flush=True))
    print()
    print(summary(reports))
    print(f"\n{sum(r.cases for r in reports)} cases in {time.monotonic() - start:.0f} s")
    return 1 if any(r.findings for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
