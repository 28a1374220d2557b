"""SIGKILL of the daemon in the middle of a stream of writes and fsyncs to dev/<partition>, then a check of the image.

One round (one kill point): mount the image (NVMe or AHCI in turn), start a stream of writes to
`dev/<disk>p1` from this process — buffered writes, fsyncs, and O_DIRECT|O_SYNC writes, 4 KiB
aligned, 4 KiB to 256 KiB long — and SIGKILL the daemon after a random delay, from a timer
thread, wherever the stream is. Then `rinuxfs umount` must clean the dead mount, and every 4 KiB
block of the image must hold an allowed value:
- a block that a completed fsync covered, or that a completed O_DIRECT|O_SYNC write wrote,
  holds that data, or data written to it after that point (which may or may not have reached
  the image: the kill may have come before, during or after its writeback);
- a block never written holds what it held before the round;
- every byte outside the partition is unchanged.
Each 4 KiB block is judged on its own: a write the kill interrupted may have reached the image
for some of its pages only. The image after the round is the start of the next.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import mount, pid_alive, rinuxfs, wait_until
from tests.integration.storage_helpers import MIB, layout, sfdisk_image

BLOCK = 4096
PART_START = MIB  # sfdisk's first partition: sector 2048
PART_SIZE = 24 * MIB
IMAGE_SIZE = 32 * MIB
SCRIPT = layout("crash")  # p1: 24 MiB at 1 MiB
DEAD = (errno.ENOTCONN, errno.ECONNABORTED)
# A request the daemon was reading from /dev/fuse when SIGKILL hit fails with EIO (fuse_dev_do_read:
# the copy to the dying reader fails): a sign of the kill too, once it was sent.
DEAD_AFTER_KILL = (*DEAD, errno.EIO)


@dataclass
class Model:
    """What each block of the partition may hold: `durable` for sure, or one of `pending` written since."""

    durable: bytearray
    pending: dict[int, list[bytes]] = field(default_factory=dict)

    def written(self, offset: int, data: bytes) -> None:
        for i in range(0, len(data), BLOCK):
            self.pending.setdefault((offset + i) // BLOCK, []).append(data[i : i + BLOCK])

    def synced_all(self) -> None:
        """A completed fsync: the last write of each block is in the image."""
        for block, values in self.pending.items():
            self.durable[block * BLOCK : (block + 1) * BLOCK] = values[-1]
        self.pending.clear()

    def synced(self, offset: int, data: bytes) -> None:
        """A completed O_DIRECT|O_SYNC write: its blocks hold its data."""
        self.durable[offset : offset + len(data)] = data
        for i in range(0, len(data), BLOCK):
            self.pending.pop((offset + i) // BLOCK, None)

    def check(self, actual: bytes) -> list[str]:
        """Blocks holding a value that is neither durable nor written since; then `actual` is the new durable."""
        bad = []
        durable = self.durable
        for block in range(len(durable) // BLOCK):
            start = block * BLOCK
            got = actual[start : start + BLOCK]
            if got == durable[start : start + BLOCK]:
                continue
            if got not in self.pending.get(block, ()):
                bad.append(f"block {block} (partition byte {start}): {hashlib.sha1(got).hexdigest()[:12]}")
        self.durable = bytearray(actual)
        self.pending.clear()
        return bad


@dataclass
class Round:
    controller: str
    delay: float
    ops: Counter[str] = field(default_factory=Counter)
    killed_in: str = "between operations"
    bad: list[str] = field(default_factory=list)


def _write_stream(dev: Path, model: Model, rng: random.Random, r: Round, killed: threading.Event) -> None:
    """Write until the mount dies under us; the model learns only what a returned call guarantees."""
    fds: list[int] = []
    buf = mmap.mmap(-1, 256 * 1024)  # O_DIRECT wants an aligned buffer
    op = "open"
    try:
        fds.append(os.open(dev, os.O_WRONLY))
        fds.append(os.open(dev, os.O_WRONLY | os.O_DIRECT | os.O_SYNC))
        fd, dfd = fds
        deadline = time.monotonic() + r.delay + 30
        while time.monotonic() < deadline:
            kind = rng.choices(("write", "fsync", "direct"), (14, 3, 2))[0]
            op = kind
            if kind == "fsync":
                os.fsync(fd)
                model.synced_all()
            else:
                length = rng.randrange(1, 65) * BLOCK
                offset = rng.randrange(0, (PART_SIZE - length) // BLOCK + 1) * BLOCK
                data = rng.randbytes(length)
                model.written(offset, data)  # before the call: it may reach the image, in part, and then fail
                if kind == "write":
                    assert os.pwrite(fd, data, offset) == length
                else:
                    buf[:length] = data
                    assert os.pwritev(dfd, [memoryview(buf)[:length]], offset) == length
                    model.synced(offset, data)
            r.ops[kind] += 1
            op = "between operations"
        raise AssertionError("the daemon was never killed")
    except OSError as e:
        if e.errno not in (DEAD_AFTER_KILL if killed.is_set() else DEAD):
            raise
        r.killed_in = op
    finally:
        buf.close()
        for f in fds:
            with contextlib.suppress(OSError):
                os.close(f)


def run_round(image: Path, mountpoint: Path, model: Model, outside: tuple[bytes, bytes], rng: random.Random,
              controller: str) -> Round:
    r = Round(controller, rng.uniform(0.02, 0.6))
    pid = mount(image, mountpoint, "--controller", controller, "--mem", "64M").pid
    disk = "nvme0n1p1" if controller == "nvme" else "sda1"
    timer: threading.Timer | None = None
    try:
        assert pid is not None, f"no daemon on record for {mountpoint}"
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            os.kill(pid, signal.SIGKILL)

        timer = threading.Timer(r.delay, kill)
        timer.start()
        _write_stream(mountpoint / "dev" / disk, model, rng, r, killed)
    finally:
        if timer is not None:
            timer.cancel()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # whatever happened above, this daemon ends here
            wait_until(lambda: not pid_alive(pid), 10)
        cleaned = rinuxfs("umount", str(mountpoint), check=False)
    assert cleaned.returncode == 0 and "had died: removed its dead mount" in cleaned.stderr, cleaned.stderr
    with open(image, "rb") as f:
        head = f.read(PART_START)
        part = f.read(PART_SIZE)
        tail = f.read()
    r.bad = model.check(part)
    if (head, tail) != outside:
        r.bad.append("bytes outside the partition changed")
    return r


def run(workdir: Path, points: int, seed: int, log: bool = False) -> list[Round]:
    """`points` rounds over one image in `workdir`; every round's verdict, with how it was killed."""
    image = sfdisk_image(workdir / "crash.img", SCRIPT, IMAGE_SIZE, fill_seed=seed)  # a stray write anywhere shows
    with open(image, "rb") as f:
        head = f.read(PART_START)
        model = Model(bytearray(f.read(PART_SIZE)))
        outside = (head, f.read())
    rng = random.Random(seed)
    rounds = []
    for i in range(points):
        r = run_round(image, workdir / "mnt", model, outside, rng, ("nvme", "ahci")[i % 2])
        rounds.append(r)
        if log:
            print(f"kill point {i + 1}: {r.controller} after {r.delay:.3f}s, in {r.killed_in}, "
                  f"{sum(r.ops.values())} ops {dict(r.ops)}: {'OK' if not r.bad else r.bad[:3]}", flush=True)
    return rounds
