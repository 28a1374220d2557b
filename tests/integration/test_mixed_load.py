"""64 processes doing mixed tmp/ and dev/ I/O at once for a short while (scripts/loadtest runs the minute).

No call may fail (nothing in the load is an error on Linux), nothing may hang, every byte read
must be what was written, the image must hold every worker's disk region as written, and the
daemon's RSS must stay within the README's bound.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import make_image, mount
from tests.integration.mixed_load import daemon_status, disk_bytes, image_digests, run_load

PROCS = 64
SECONDS = float(os.environ.get("RINUXFS_LOAD_SECONDS", "10"))
MIB = 1 << 20


def test_sixty_four_processes_of_mixed_io(tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", disk_bytes(PROCS))
    with mount(image, tmp_path / "mnt", "--mem", "512M") as m:
        result = run_load(m.path, PROCS, SECONDS)
        print(result.summary())
        assert not result.errors, result.errors[:20]
        assert result.ops > PROCS * 10
        assert m.pid is not None
        peak = daemon_status(m.pid)["VmHWM"]
        # The README's bound: 64 MiB, the simulated RAM (512 MiB at most), 1 KiB an inode, 512 bytes a file.
        assert peak <= 64 * MIB + 512 * MIB + 16 * MIB
        assert "BUG" not in (m / "proc/kmsg").read_text()
    assert image_digests(image, PROCS) == result.digests, "every worker's writes reached the image"
