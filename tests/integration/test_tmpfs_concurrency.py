"""Several processes using the rootfs tmpfs at once: data stays intact and the namespace stays consistent.

Workers are forked processes, so their requests reach the daemon from
different pids at the same time, as they would from unrelated programs.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from pathlib import Path

from tests.conftest import module_mount

WORKERS = 6
REGION = 1 << 20  # each writer's share of the shared file
CHUNK = 12 * 1024  # not a multiple of the page size, so neighbours' writes meet inside pages


mnt = module_mount()




def pattern(worker: int, size: int) -> bytes:
    """Bytes unique to one worker, cheap to make and to check."""
    block = hashlib.sha256(f"worker-{worker}".encode()).digest() * 128  # 4 KiB
    return (block * (size // len(block) + 1))[:size]


def io_worker(args: tuple[str, int]) -> str:
    """Write a file of its own and its region of the shared file, interleaved; read both back."""
    directory, worker = args
    data = pattern(worker, REGION)
    own = os.path.join(directory, f"own-{worker}")
    shared = os.open(os.path.join(directory, "shared"), os.O_RDWR)
    fd = os.open(own, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    try:
        # A region that starts mid-page: neighbouring writers share the pages at the seams.
        base = worker * REGION + 1000
        for off in range(0, REGION, CHUNK):
            piece = data[off : off + CHUNK]
            os.pwrite(fd, piece, off)
            os.pwrite(shared, piece, base + off)
            if off % (16 * CHUNK) == 0:
                assert os.pread(shared, len(piece), base + off) == piece
        os.fsync(fd)
        os.fsync(shared)
        assert os.pread(fd, REGION + 1, 0) == data
    finally:
        os.close(fd)
        os.close(shared)
    return hashlib.sha256(data).hexdigest()


def churn_worker(args: tuple[str, int]) -> int:
    """Create, list, rename and unlink in one shared directory; any error fails the worker."""
    directory, worker = args
    done = 0
    for i in range(150):
        name = os.path.join(directory, f"w{worker}-{i}")
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.write(fd, b"%d" % i)
        os.close(fd)
        listing = os.listdir(directory)
        assert f"w{worker}-{i}" in listing  # its own fresh name is always there
        if i % 3 == 0:
            os.rename(name, name + ".moved")
            name += ".moved"
        if i % 5 == 0:
            os.mkdir(name + ".d")
            os.rmdir(name + ".d")
        os.unlink(name)
        done += 1
    return done


def lister(args: tuple[str, int]) -> int:
    """List and stat while the churn goes on: names may vanish between the two, nothing else."""
    directory, rounds = args
    seen = 0
    for _ in range(rounds):
        with os.scandir(directory) as it:
            for entry in it:
                seen += 1
                try:
                    os.stat(entry.path, follow_symlinks=False)
                except FileNotFoundError:
                    pass  # unlinked since the listing: allowed
    return seen


def test_parallel_writers_distinct_and_shared_files(d: Path) -> None:
    shared = d / "shared"
    shared.write_bytes(b"")
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        digests = pool.map(io_worker, [(str(d), w) for w in range(WORKERS)])
    data = shared.read_bytes()
    assert len(data) == WORKERS * REGION + 1000
    assert data[:1000] == bytes(1000), "the gap before the first region is a hole"
    for w, expected in enumerate(digests):
        region = data[w * REGION + 1000 : (w + 1) * REGION + 1000]
        assert hashlib.sha256(region).hexdigest() == expected, f"worker {w}'s region of the shared file"
        own = (d / f"own-{w}").read_bytes()
        assert hashlib.sha256(own).hexdigest() == expected, f"worker {w}'s own file"
    # Every page written is accounted for once, however many writers touched it.
    blocks = sum(os.stat(d / f"own-{w}").st_blocks for w in range(WORKERS)) + os.stat(shared).st_blocks
    assert blocks * 512 == WORKERS * REGION + ((WORKERS * REGION + 1000 + 4095) // 4096) * 4096


def test_concurrent_create_unlink_and_listing(d: Path) -> None:
    free_before = os.statvfs(d).f_ffree
    jobs = [(str(d), w) for w in range(WORKERS)]
    with multiprocessing.get_context("fork").Pool(WORKERS + 2) as pool:
        listers = [pool.apply_async(lister, ((str(d), 60),)) for _ in range(2)]
        assert pool.map(churn_worker, jobs) == [150] * WORKERS
        for result in listers:
            assert result.get(timeout=60) >= 0
    assert os.listdir(d) == []
    assert os.stat(d).st_nlink == 2
    assert os.statvfs(d).f_ffree == free_before, "every inode made was given back"
