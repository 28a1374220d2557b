"""Many processes doing mixed tmp/ and dev/ I/O on one mount, every byte checked afterwards.

Each worker owns a 1 MiB file in tmp/, a directory of small files, and a 2 MiB region of the
disk (dev/nvme0n1), and keeps a copy of what they should hold. Until the deadline it picks at
random: buffered and O_DIRECT writes and reads of its disk region, writes and reads of its
file, fsyncs, creating/renaming/unlinking/listing small files, and reads of proc/ views. Every
read is compared with the copy at once, every call is timed, and at the end the worker reads
its whole file and region back. The caller checks the image after unmounting (`image_digests`).

Used by tests/integration/test_mixed_load.py (a short run) and scripts/loadtest (a minute by
default: the throughput and latency figures of the README).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import mmap
import multiprocessing
import os
import random
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20
KINDS = ("dev pwrite", "dev pread", "dev O_DIRECT pwrite", "dev O_DIRECT pread", "tmp pwrite", "tmp pread",
         "fsync", "proc read", "create", "rename", "unlink", "listdir")
REGION = 2 * MIB  # of the disk, per worker
FILE_SIZE = MIB  # of the tmp/ file, per worker
DISK = "dev/nvme0n1"


@dataclass
class WorkerResult:
    index: int
    ops: int
    bytes_moved: int
    latencies_us: bytes  # array("I") of every call's time
    kinds: bytes  # array("B"): the KINDS index of each call
    errors: list[str] = field(default_factory=list)
    region_digest: str = ""


@dataclass
class LoadResult:
    procs: int
    seconds: float
    ops: int
    bytes_moved: int
    p50_us: int
    p99_us: int
    max_us: int
    errors: list[str]
    digests: dict[int, str]
    by_kind: dict[str, tuple[int, int, int]]  # calls, p50 and p99 in µs, per kind of call

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes_moved / self.seconds / 1e6

    def summary(self) -> str:
        return (f"{self.procs} processes, {self.seconds:.1f} s: {self.ops} calls ({self.ops_per_s:.0f}/s), "
                f"{self.mb_per_s:.1f} MB/s; latency p50 {self.p50_us} µs, p99 {self.p99_us} µs, "
                f"max {self.max_us} µs; {len(self.errors)} errors")


def disk_bytes(procs: int) -> int:
    return procs * REGION


def _pattern(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


class Worker:
    def __init__(self, root: Path, index: int, seconds: float, seed: int) -> None:
        self.root = root
        self.index = index
        self.deadline = time.monotonic() + seconds
        self.rng = random.Random(seed)
        self.latencies = array("I")
        self.kinds = array("B")
        self.ops = 0
        self.moved = 0
        self.errors: list[str] = []
        self.base = index * REGION
        self.dir = root / "tmp" / "load" / f"w{index}"
        self.files: dict[str, bytes] = {}  # the small files of its directory, by name
        self.serial = 0

    def timed(self, what: str, fn, *args):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter_ns()
        try:
            return fn(*args)
        except OSError as e:
            self.errors.append(f"worker {self.index}: {what}: {errno.errorcode.get(e.errno or 0, e.errno)}")
            return None
        finally:
            self.latencies.append(min((time.perf_counter_ns() - t0) // 1000, 2**32 - 1))
            self.kinds.append(KINDS.index(what))
            self.ops += 1

    def run(self) -> WorkerResult:
        self.dir.mkdir(parents=True)
        dev = os.open(self.root / DISK, os.O_RDWR)
        direct = os.open(self.root / DISK, os.O_RDWR | os.O_DIRECT)
        tmp = os.open(self.dir / "data", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        aligned = mmap.mmap(-1, 64 * 1024)  # O_DIRECT needs an aligned buffer
        disk = bytearray(os.pread(dev, REGION, self.base))
        data = bytearray(FILE_SIZE)
        os.ftruncate(tmp, FILE_SIZE)
        try:
            while time.monotonic() < self.deadline:
                self.step(dev, direct, tmp, aligned, disk, data)
            self.check_all(dev, tmp, disk, data)
        finally:
            for fd in (dev, direct, tmp):
                os.close(fd)
        return WorkerResult(self.index, self.ops, self.moved, self.latencies.tobytes(), self.kinds.tobytes(),
                            self.errors,
                            hashlib.sha256(disk).hexdigest())

    def step(self, dev: int, direct: int, tmp: int, aligned: mmap.mmap, disk: bytearray, data: bytearray) -> None:
        rng = self.rng
        op = rng.random()
        if op < 0.35:  # buffered I/O on the disk region, any offset and size
            size = rng.choice((512, 4096, 4096, 16384, 65536, rng.randint(1, 20000)))
            off = rng.randrange(0, REGION - size)
            if rng.random() < 0.5:
                chunk = _pattern(rng, size)
                if self.timed("dev pwrite", os.pwrite, dev, chunk, self.base + off) == size:
                    disk[off:off + size] = chunk
                    self.moved += size
            else:
                got = self.timed("dev pread", os.pread, dev, size, self.base + off)
                self.compare("dev", got, disk, off, size)
        elif op < 0.5:  # O_DIRECT, 4 KiB aligned
            size = 4096 * rng.randint(1, 16)
            off = 4096 * rng.randrange(0, (REGION - size) // 4096)
            view = memoryview(aligned)[:size]
            if rng.random() < 0.5:
                chunk = _pattern(rng, size)
                view[:] = chunk
                if self.timed("dev O_DIRECT pwrite", os.pwritev, direct, [view], self.base + off) == size:
                    disk[off:off + size] = chunk
                    self.moved += size
            else:
                n = self.timed("dev O_DIRECT pread", os.preadv, direct, [view], self.base + off)
                self.compare("dev O_DIRECT", bytes(view[:n]) if n is not None else None, disk, off, size)
            view.release()
        elif op < 0.8:  # the tmp/ file
            size = rng.choice((1, 100, 4096, 8192, 65536, rng.randint(1, 30000)))
            off = rng.randrange(0, FILE_SIZE - size)
            if rng.random() < 0.5:
                chunk = _pattern(rng, size)
                if self.timed("tmp pwrite", os.pwrite, tmp, chunk, off) == size:
                    data[off:off + size] = chunk
                    self.moved += size
            else:
                self.compare("tmp", self.timed("tmp pread", os.pread, tmp, size, off), data, off, size)
        elif op < 0.83:
            self.timed("fsync", os.fsync, rng.choice((dev, tmp)))
        elif op < 0.95:
            self.metadata()
        else:
            view = self.root / rng.choice(("proc/meminfo", "proc/diskstats", "proc/self/status", "proc/vmstat"))
            got = self.timed("proc read", view.read_bytes)
            if got is not None and not got:
                self.errors.append(f"worker {self.index}: {view} read empty")

    def metadata(self) -> None:
        rng = self.rng
        choice = rng.random()
        if choice < 0.4 or not self.files:
            name = f"f{self.serial}"
            self.serial += 1
            content = _pattern(rng, rng.randint(0, 300))
            self.timed("create", (self.dir / name).write_bytes, content)
            self.files[name] = content
        elif choice < 0.6:
            old = rng.choice(list(self.files))
            new = f"r{self.serial}"
            self.serial += 1
            self.timed("rename", os.rename, self.dir / old, self.dir / new)
            self.files[new] = self.files.pop(old)
        elif choice < 0.8:
            name = rng.choice(list(self.files))
            self.timed("unlink", os.unlink, self.dir / name)
            del self.files[name]
        else:
            listed = self.timed("listdir", os.listdir, self.dir)
            if listed is not None and sorted(listed) != sorted([*self.files, "data"]):
                self.errors.append(f"worker {self.index}: listdir shows {len(listed)} names, not {len(self.files) + 1}")

    def compare(self, what: str, got: bytes | None, shadow: bytearray, off: int, size: int) -> None:
        if got is None:
            return
        self.moved += len(got)
        if got != shadow[off:off + size]:
            self.errors.append(f"worker {self.index}: {what} read at {off}+{size} differs from what was written")

    def check_all(self, dev: int, tmp: int, disk: bytearray, data: bytearray) -> None:
        if os.pread(dev, REGION, self.base) != disk:
            self.errors.append(f"worker {self.index}: its disk region differs at the end")
        if os.pread(tmp, FILE_SIZE + 1, 0) != data:
            self.errors.append(f"worker {self.index}: its tmp/ file differs at the end")
        for name, content in self.files.items():
            if (self.dir / name).read_bytes() != content:
                self.errors.append(f"worker {self.index}: {name} lost its content")


def _run_worker(args: tuple[str, int, float, int]) -> WorkerResult:
    root, index, seconds, seed = args
    try:
        return Worker(Path(root), index, seconds, seed).run()
    except BaseException as e:  # noqa: BLE001 - a worker reports, the caller decides
        return WorkerResult(index, 0, 0, b"", b"", [f"worker {index} crashed: {e!r}"])


def run_load(root: Path, procs: int = 64, seconds: float = 10.0, seed: int = 1) -> LoadResult:
    """Run `procs` workers for `seconds` against the mount at `root`; raises TimeoutError if they hang."""
    ctx = multiprocessing.get_context("fork")
    started = time.monotonic()
    with ctx.Pool(procs) as pool:
        pending = pool.map_async(_run_worker, [(str(root), i, seconds, seed * 1000 + i) for i in range(procs)])
        # A worker's last call may wait behind every other worker's: generous, but a hang still ends here.
        results: list[WorkerResult] = pending.get(timeout=seconds + 300)
    elapsed = time.monotonic() - started
    latencies, kinds = array("I"), array("B")
    for r in results:
        latencies.frombytes(r.latencies_us)
        kinds.frombytes(r.kinds)
    ordered = sorted(latencies)
    per_kind: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for us, kind in zip(latencies, kinds, strict=True):
        per_kind[KINDS[kind]].append(us)
    by_kind = {kind: (len(v), _pct(sorted(v), 0.5), _pct(sorted(v), 0.99)) for kind, v in per_kind.items() if v}
    return LoadResult(procs, elapsed, sum(r.ops for r in results), sum(r.bytes_moved for r in results),
                      _pct(ordered, 0.5), _pct(ordered, 0.99), ordered[-1] if ordered else 0,
                      [e for r in results for e in r.errors], {r.index: r.region_digest for r in results}, by_kind)


def _pct(ordered: list[int], p: float) -> int:
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0


def image_digests(image: Path, procs: int) -> dict[int, str]:
    """What each worker's disk region holds in the image file (read after unmounting)."""
    with open(image, "rb") as f:
        return {i: hashlib.sha256(os.pread(f.fileno(), REGION, i * REGION)).hexdigest() for i in range(procs)}


def daemon_status(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.startswith(("VmRSS", "VmHWM"))}


def main() -> int:
    """scripts/loadtest: mount a fresh image, run the load, unmount, check the image, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--mem", default="512M")
    args = parser.parse_args()
    from tests.conftest import make_image, mount  # the same helpers the tests use

    with tempfile.TemporaryDirectory(prefix="rinuxfs-load-") as base:
        image = make_image(Path(base) / "disk.img", disk_bytes(args.procs))
        with mount(image, Path(base) / "mnt", "--mem", args.mem) as m:
            result = run_load(m.path, args.procs, args.seconds)
            status = daemon_status(m.pid) if m.pid else {}
        on_image = image_digests(image, args.procs)
    bad = [i for i, digest in result.digests.items() if on_image[i] != digest]
    print(result.summary())
    for kind, (calls, p50, p99) in result.by_kind.items():
        print(f"  {kind:20} {calls:7} calls  p50 {p50:7} µs  p99 {p99:7} µs")
    print(f"daemon RSS at the end {status.get('VmRSS', 0) / MIB:.0f} MiB, peak {status.get('VmHWM', 0) / MIB:.0f} MiB;"
          f" image: {args.procs - len(bad)}/{args.procs} regions as written")
    for line in result.errors[:20]:
        print("  ", line)
    return 1 if result.errors or bad else 0


if __name__ == "__main__":
    sys.exit(main())
