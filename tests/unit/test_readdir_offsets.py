"""readdir of tmpfs directories: stable offsets (fs/libfs.py), no copy of the listing per open directory."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from rinuxfs.fs.libfs import DIR_OFFSET_MIN, OffsetMap
from rinuxfs.fs.vfs import ROOT_CRED
from rinuxfs.kernel import Kernel, KernelConfig


def test_offsets_survive_removals_and_sweeps() -> None:
    offsets = OffsetMap()
    names = [f"n{i}".encode() for i in range(1000)]
    for name in names:
        offsets.add(name)
    assert [o for o, _ in offsets.after(0)] == list(range(DIR_OFFSET_MIN, DIR_OFFSET_MIN + 1000))
    for name in names[:900]:  # enough holes to sweep them
        offsets.remove(name)
    assert [n for _, n in offsets.after(0)] == names[900:]
    assert next(offsets.after(DIR_OFFSET_MIN + 949)) == (DIR_OFFSET_MIN + 950, names[950])
    offsets.add(b"late")
    assert list(offsets.after(DIR_OFFSET_MIN + 999)) == [(DIR_OFFSET_MIN + 1000, b"late")]


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    k = Kernel(KernelConfig(image=None, mem=256 << 20))
    try:
        yield k
    finally:
        k.close()


def listing(k: Kernel, fh: int, batch: int, between: object = None) -> list[bytes]:
    """Read a directory `batch` entries at a time, as the host does, calling `between` after each batch."""
    seen: list[bytes] = []
    cookie = 0
    while True:
        rows = []
        for row in k.vfs.readdir(fh, cookie, ROOT_CRED):
            rows.append(row)
            if len(rows) == batch:
                break
        if not rows:
            return seen
        seen += [name for _, name, _ in rows]
        cookie = rows[-1][0]
        if callable(between):
            between()


def test_a_name_present_throughout_is_listed_once_while_others_come_and_go(kernel: Kernel) -> None:
    vfs = kernel.vfs
    d = vfs.mkdir(1, b"d", 0o755, ROOT_CRED)
    stable = {f"s{i}".encode() for i in range(500)}
    churn = [f"c{i}".encode() for i in range(500)]
    for name in sorted(stable) + churn:
        vfs.create(d.ino, name, 0o644, 0, ROOT_CRED)
    rng = random.Random(7)
    counter = iter(range(10**6))

    def churn_some() -> None:  # remove some churners, rename others, add new names
        for _ in range(20):
            name = rng.choice(churn)
            if d.lookup(name, ROOT_CRED) is not None:
                if rng.random() < 0.5:
                    vfs.unlink(d.ino, name)
                else:
                    vfs.rename(d.ino, name, d.ino, b"r%d" % next(counter), 0)
            vfs.create(d.ino, b"new%d" % next(counter), 0o644, 0, ROOT_CRED)

    fh = vfs.opendir(d.ino)
    seen = listing(kernel, fh, 37, churn_some)
    assert seen[:2] == [b".", b".."]
    assert all(seen.count(name) == 1 for name in stable)
    assert len(seen) == len(set(seen)), "no name twice"
    assert vfs.dirs[fh].rows is None, "a tmpfs directory is read in place, not copied"
    assert not any(name.startswith(b"new") for name in seen), "names added after the listing began stay out"
    assert any(name.startswith(b"new") for name in listing(kernel, fh, 1000)), "they show from the next rewind"
    vfs.releasedir(fh)


def test_generated_directories_are_listed_from_a_snapshot(kernel: Kernel) -> None:
    proc = kernel.vfs.lookup(1, b"proc", ROOT_CRED)
    fh = kernel.vfs.opendir(proc.ino)
    names = listing(kernel, fh, 5)
    assert {b".", b"..", b"meminfo", b"self", b"1"} <= set(names)
    assert len(names) == len(set(names))


def test_open_listings_and_views_share_a_bounded_budget(kernel: Kernel) -> None:
    vfs = kernel.vfs
    vfs.snapshots.budget = 64 * 1024
    proc = vfs.lookup(1, b"proc", ROOT_CRED)
    meminfo = vfs.lookup(proc.ino, b"meminfo", ROOT_CRED)
    dirs = [vfs.opendir(proc.ino) for _ in range(500)]
    files = [vfs.open(meminfo.ino, os.O_RDONLY, ROOT_CRED)[0] for _ in range(500)]
    for fh in dirs:
        next(iter(vfs.readdir(fh, 2, ROOT_CRED)))  # past "..", the listing is a snapshot
    for fh in files:
        assert vfs.file(fh).read(0, 10) == b"MemTotal: "
    assert 0 < vfs.snapshots.used <= vfs.snapshots.budget
    # A dropped copy is taken again: the oldest reader still reads on, and lists everything.
    assert vfs.file(files[0]).read(10, 5)
    assert len(listing(kernel, dirs[0], 3)) == len(listing(kernel, dirs[-1], 3))
    for fh in files:
        vfs.release(fh)
    for fh in dirs:
        vfs.releasedir(fh)
    assert vfs.snapshots.used == 0
