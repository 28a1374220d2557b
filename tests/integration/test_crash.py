"""SIGKILL of the daemon at many points of a write+fsync stream: what fsync promised is in the image.

The harness (crash_harness.py) says what each round checks. The suite tries KILL_POINTS rounds
over one image, NVMe and AHCI in turn; `scripts/crashtest --points N` runs longer campaigns.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.integration.crash_harness import run

KILL_POINTS = 10


def test_sigkill_never_loses_what_fsync_or_o_sync_covered(tmp_path: Path) -> None:
    rounds = run(tmp_path, KILL_POINTS, seed=8)
    assert len(rounds) == KILL_POINTS
    bad = [(i, r.controller, r.killed_in, r.bad[:3]) for i, r in enumerate(rounds, 1) if r.bad]
    assert not bad, f"blocks with values nobody wrote or fsync lost: {bad}"
    ops = sum((r.ops for r in rounds), Counter())
    assert ops["fsync"] and ops["direct"] and ops["write"], f"the stream did not mix its operations: {ops}"
