"""Bytes through the device files: reads, writes, the end of a device, O_DIRECT, fsync, --ro, and the counters.

The images are filled with pseudo-random bytes before sfdisk writes the table,
so every slice is distinguishable and a byte landing at the wrong offset shows.
The expectations are block/fops.c's (storage.md §2.5): reads stop at the end,
a write at or past it is ENOSPC, O_DIRECT must be logical-block aligned, and
data written through the page cache reaches the image on fsync, on the last
close, or at unmount, never outside its partition.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Mounted
from tests.integration.storage_helpers import (
    CONTROLLERS,
    CTRL,
    MIB,
    SECTOR,
    THREE_PARTS,
    THREE_PARTS_GPT,
    Controller,
    diskstats,
    errno_of,
    expected_lsblk,
    hash_outside,
    image_slice,
    layout,
    lsblk,
    mounted,
    per_controller_mounts,
    sfdisk_image,
    sha,
)

SCRIPT, PARTS = THREE_PARTS_GPT, THREE_PARTS

ODD_SCRIPT = layout("tests-io-odd")  # not page-aligned, and a size that is not a page multiple
ODD_PARTS = {1: (63, 8001), 2: (8100, 4000)}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    img = sfdisk_image(tmp_path_factory.mktemp("io") / "gpt.img", SCRIPT, 32 * MIB, fill_seed=1)
    rows = expected_lsblk(img, CTRL["nvme"])[1:]  # the layout the tests rely on is sfdisk's
    assert [(int(r["START"]), int(r["SIZE"]) // SECTOR) for r in rows] == list(PARTS.values())
    return img


@pytest.fixture(scope="module")
def odd_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sfdisk_image(tmp_path_factory.mktemp("io-odd") / "odd.img", ODD_SCRIPT, 16 * MIB, fill_seed=2)


@pytest.fixture(scope="module", params=CONTROLLERS)
def ctrl(request: pytest.FixtureRequest) -> Controller:
    return CTRL[request.param]


@pytest.fixture(scope="module")
def mounts(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Mounted]]:
    with per_controller_mounts(image, tmp_path_factory) as get:
        yield get


@pytest.fixture(scope="module")
def m(ctrl: Controller, mounts: Callable[[str], Mounted]) -> Mounted:
    """A mount shared by the tests that leave the image's bytes as they found them."""
    return mounts(ctrl.name)


@pytest.fixture
def scratch(image: Path, tmp_path: Path) -> Path:
    """A private copy of the image for a test that writes."""
    copy = tmp_path / "scratch.img"
    shutil.copy(image, copy)
    return copy


def aligned(size: int) -> mmap.mmap:
    """A page-aligned buffer, as O_DIRECT wants memory aligned too."""
    return mmap.mmap(-1, max(size, mmap.PAGESIZE))


def devices(ctrl: Controller, parts: dict[int, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Device name -> (first byte in the image, size in bytes), the disk included."""
    out = {ctrl.part(n): (start * SECTOR, sectors * SECTOR) for n, (start, sectors) in parts.items()}
    return out


# --- reads ------------------------------------------------------------------------------------------


def test_whole_files_equal_the_image(m: Mounted, ctrl: Controller, image: Path) -> None:
    disk = (m / f"dev/{ctrl.disk}").read_bytes()
    assert len(disk) == os.stat(image).st_size and sha(disk) == sha(image.read_bytes())
    for name, (base, size) in devices(ctrl, PARTS).items():
        data = (m / f"dev/{name}").read_bytes()
        assert len(data) == size and sha(data) == sha(image_slice(image, base, size)), name


def test_reads_at_odd_offsets_equal_image_slices(m: Mounted, ctrl: Controller, image: Path) -> None:
    for name, (base, size) in devices(ctrl, PARTS).items():
        fd = os.open(m / f"dev/{name}", os.O_RDONLY)
        try:
            for off, n in ((0, 1), (1, 511), (511, 2), (4095, 2), (4096, 4096), (5000, 10000), (12345, 70001),
                           (size // 2 - 3, 8195), (size - 4097, 4097), (size - 1, 1)):
                assert os.pread(fd, n, off) == image_slice(image, base + off, n), (name, off, n)
            # Across the end: a short read, then end of file, even far past it.
            assert os.pread(fd, 100, size - 10) == image_slice(image, base + size - 10, 10)
            assert os.pread(fd, 100, size) == b""
            assert os.pread(fd, 100, size + 123456) == b""
            os.lseek(fd, size - 3000, os.SEEK_SET)
            assert os.read(fd, 4096) == image_slice(image, base + size - 3000, 3000)
            assert os.read(fd, 4096) == b""
        finally:
            os.close(fd)


def test_o_direct_reads_and_alignment(m: Mounted, ctrl: Controller, image: Path) -> None:
    base, size = devices(ctrl, PARTS)[ctrl.part(2)]
    fd = os.open(m / f"dev/{ctrl.part(2)}", os.O_RDWR | os.O_DIRECT)
    buf = aligned(8192)
    try:
        assert os.preadv(fd, [memoryview(buf)[:4096]], 8192) == 4096
        assert buf[:4096] == image_slice(image, base + 8192, 4096)
        assert os.preadv(fd, [memoryview(buf)[:512]], 512) == 512  # the logical block is 512 bytes
        assert buf[:512] == image_slice(image, base + 512, 512)
        assert os.preadv(fd, [memoryview(buf)[:4096]], size - 512) == 512  # short at the end
        assert os.preadv(fd, [memoryview(buf)[:4096]], size) == 0
        # The end is cut before alignment is checked (blkdev_read_iter/blkdev_write_iter): an
        # unaligned length that only sticks out past the end is fine, and past the end reads 0.
        assert os.preadv(fd, [memoryview(buf)[:100]], size) == 0
        assert os.preadv(fd, [memoryview(buf)[:1000]], size - 512) == 512
        assert buf[:512] == image_slice(image, base + size - 512, 512)
        assert os.pwritev(fd, [memoryview(buf)[:1000]], size - 512) == 512  # the same bytes back
        assert errno_of(lambda: os.pwritev(fd, [memoryview(buf)[:512]], size)) == errno.ENOSPC
        for off, n in ((100, 512), (0, 100), (512, 1000), (256, 4096)):
            assert errno_of(lambda o=off, k=n: os.preadv(fd, [memoryview(buf)[:k]], o)) == errno.EINVAL, (off, n)
            assert errno_of(lambda o=off, k=n: os.pwritev(fd, [memoryview(buf)[:k]], o)) == errno.EINVAL, (off, n)
    finally:
        os.close(fd)
    assert sha(image_slice(image, base, size)) == sha((m / f"dev/{ctrl.part(2)}").read_bytes())


def test_readahead_larger_than_memory_only_shortens(ctrl: Controller, image: Path, tmp_path: Path) -> None:
    """A read_ahead_kb beyond RAM: readahead is best effort (__GFP_NORETRY), the read itself must work."""
    with mounted(image, tmp_path / "mnt", "--controller", ctrl.name, "--mem", "32M") as m:
        q = m / f"sys/block/{ctrl.disk}/queue/read_ahead_kb"
        q.write_text("4194304\n")  # 4 GiB, which queue_ra_store takes as it is
        assert q.read_text() == "4194304\n"
        with open(m / f"dev/{ctrl.disk}", "rb", buffering=0) as f:
            assert f.read(4096) == image_slice(image, 0, 4096)
            chunks = [f.read(1 << 16) for _ in range(32 * MIB >> 16)]  # stream the rest through a small cache
        assert sha(image_slice(image, 0, 4096) + b"".join(chunks)) == sha(image.read_bytes())


def test_writing_more_than_memory_throttles_instead_of_failing(ctrl: Controller, scratch: Path, tmp_path: Path) -> None:
    """dd of a whole disk larger than RAM: dirty pages can't be reclaimed, so writeback must keep up."""
    data = os.urandom(32 * MIB)
    with mounted(scratch, tmp_path / "mnt", "--controller", ctrl.name, "--mem", "32M") as m:
        with open(m / f"dev/{ctrl.disk}", "r+b", buffering=0) as f:
            for pos in range(0, len(data), MIB):
                assert f.write(data[pos:pos + MIB]) == MIB
            os.fsync(f.fileno())
            assert "Dirty:                 0 kB" in (m / "proc/meminfo").read_text()
        # Every sector written once, but for pages two FUSE requests share (the host cuts a write whose
        # buffer is not page-aligned into unaligned pieces): when writeback comes between the two
        # pieces, such a page is written twice, as it would be on Linux. At most one per MiB.
        written = diskstats(m)[ctrl.disk][6]
        assert 32 * MIB // SECTOR <= written <= 32 * MIB // SECTOR + 32 * 8
    assert sha(scratch.read_bytes()) == sha(data)


# --- counters ----------------------------------------------------------------------------------------


def test_diskstats_count_what_we_read_write_and_flush(m: Mounted, ctrl: Controller) -> None:
    disk, p1, p2 = ctrl.disk, ctrl.part(1), ctrl.part(2)
    before = diskstats(m)
    fd = os.open(m / f"dev/{p1}", os.O_RDWR | os.O_DIRECT)
    buf = aligned(65536)
    try:
        assert os.preadv(fd, [buf], MIB) == 65536  # one 128-sector read
        assert os.pwritev(fd, [buf], MIB) == 65536  # the same bytes back: one 128-sector write
    finally:
        os.close(fd)
    fd = os.open(m / f"dev/{p1}", os.O_RDONLY)
    try:
        os.fsync(fd)  # nothing dirty, but blkdev_fsync still sends the device a flush
    finally:
        os.close(fd)
    after = diskstats(m)

    def delta(name: str) -> list[int]:
        return [a - b for a, b in zip(after[name], before[name], strict=True)]

    for name in (disk, p1):
        d = delta(name)
        # reads completed, sectors read; writes completed, sectors written; in flight
        assert (d[0], d[2], d[4], d[6], after[name][8]) == (1, 128, 1, 128, 0), name
    assert delta(disk)[15] == 1  # flush requests
    assert delta(p1)[15] == 0  # blk_account_io_flush counts flushes on the whole disk only
    assert not any(delta(p2)), "a partition nobody touched"
    disk_dir = os.path.realpath(m / f"sys/block/{disk}")
    assert (Path(disk_dir) / "stat").read_text() == " ".join(f"{v:8d}" for v in after[disk]) + "\n"
    assert (Path(disk_dir) / p1 / "inflight").read_text() == f"{0:8d} {0:8d}\n"


# --- writes ------------------------------------------------------------------------------------------


def test_writes_land_in_the_partition_and_nowhere_else(ctrl: Controller, scratch: Path, tmp_path: Path) -> None:
    base, size = devices(ctrl, PARTS)[ctrl.part(2)]
    outside = hash_outside(scratch, base, base + size)
    expected = bytearray(image_slice(scratch, base, size))
    writes = [(0, b"abc"), (4095, b"XY"), (10000, os.urandom(70000)), (size // 2 + 1, os.urandom(4097)),
              (size - 7, b"THE END")]
    with mounted(scratch, tmp_path / "mnt", "--controller", ctrl.name) as m:
        fd = os.open(m / f"dev/{ctrl.part(2)}", os.O_WRONLY)
        try:
            for off, data in writes:
                assert os.pwrite(fd, data, off) == len(data)
                expected[off:off + len(data)] = data
            # At or past the end: ENOSPC; across it: shortened to what fits.
            for off in (size, size + 1, size + 10 * MIB):
                assert errno_of(lambda o=off: os.pwrite(fd, b"x", o)) == errno.ENOSPC, off
            assert os.pwrite(fd, b"0123456789", size - 4) == 4
            expected[size - 4:] = b"0123"
        finally:
            os.close(fd)
        assert (m / f"dev/{ctrl.part(2)}").read_bytes() == expected  # the page cache has it
        # The whole disk's page cache is another mapping: it reads what reached the disk on close.
        with open(m / f"dev/{ctrl.disk}", "rb") as f:
            f.seek(base)
            assert f.read(size) == expected
    assert image_slice(scratch, base, size) == expected
    assert hash_outside(scratch, base, base + size) == outside


def test_fsync_puts_the_data_in_the_image_before_unmount(ctrl: Controller, scratch: Path, tmp_path: Path) -> None:
    base, size = devices(ctrl, PARTS)[ctrl.part(1)]
    data = os.urandom(3 * 4096 + 100)
    off = 2 * MIB + 17
    old = image_slice(scratch, base + off, len(data))
    with mounted(scratch, tmp_path / "mnt", "--controller", ctrl.name) as m:
        fd = os.open(m / f"dev/{ctrl.part(1)}", os.O_RDWR)
        try:
            before = diskstats(m)
            assert os.pwrite(fd, data, off) == len(data)
            assert image_slice(scratch, base + off, len(data)) == old  # still only in the page cache
            os.fsync(fd)
            assert image_slice(scratch, base + off, len(data)) == data
            after = diskstats(m)
            disk = [a - b for a, b in zip(after[ctrl.disk], before[ctrl.disk], strict=True)]
            # bytes 2 MiB+17 .. +12405 are pages 512..515 of the partition: one 32-sector write, then a flush
            assert (disk[4], disk[6], disk[15]) == (1, 32, 1)
            # O_DIRECT bypasses the cache: on the medium as soon as the call returns
            dfd = os.open(m / f"dev/{ctrl.part(1)}", os.O_WRONLY | os.O_DIRECT)
            buf = aligned(4096)
            buf[:] = os.urandom(4096)
            try:
                assert os.pwritev(dfd, [buf], 4 * MIB) == 4096
            finally:
                os.close(dfd)
            assert image_slice(scratch, base + 4 * MIB, 4096) == buf[:]
        finally:
            os.close(fd)


def test_a_device_file_keeps_its_size_o_trunc_is_ignored_and_truncate_is_einval(
        ctrl: Controller, scratch: Path, tmp_path: Path) -> None:
    """README: truncate(2) of a dev file is EINVAL, O_TRUNC is ignored, so `echo x > dev/sdX1` writes 2 bytes."""
    base, size = devices(ctrl, PARTS)[ctrl.part(4)]
    before = image_slice(scratch, base, size)
    with mounted(scratch, tmp_path / "mnt", "--controller", ctrl.name) as m:
        dev = m / f"dev/{ctrl.part(4)}"
        for length in (0, size // 2, size, size + 1):
            assert errno_of(lambda n=length: os.truncate(dev, n)) == errno.EINVAL, length
        fd = os.open(dev, os.O_WRONLY | os.O_TRUNC)
        try:
            assert os.fstat(fd).st_size == size
            assert errno_of(lambda: os.ftruncate(fd, 0)) == errno.EINVAL
        finally:
            os.close(fd)
        subprocess.run(["sh", "-c", f"echo x > {dev}"], check=True)  # the shell's O_CREAT|O_TRUNC open
        assert os.stat(dev).st_size == size
    assert image_slice(scratch, base, size) == b"x\n" + before[2:]


def test_pages_of_unaligned_partitions(ctrl: Controller, odd_image: Path, tmp_path: Path) -> None:
    """Partitions at sector 63 and 8100 with a 8001-sector size: no page of them is a disk page."""
    image = tmp_path / "odd.img"
    shutil.copy(odd_image, image)
    (b1, s1), (b2, s2) = devices(ctrl, ODD_PARTS).values()
    outside = hash_outside(image, b1, b2 + s2)
    gap = image_slice(image, b1 + s1, b2 - b1 - s1)
    p1 = bytearray(image_slice(image, b1, s1))
    p2 = bytearray(image_slice(image, b2, s2))
    with mounted(image, tmp_path / "mnt", "--controller", ctrl.name) as m:
        assert lsblk(m)[1:] == expected_lsblk(image, ctrl)[1:]
        assert (m / f"dev/{ctrl.part(1)}").read_bytes() == p1
        assert (m / f"dev/{ctrl.part(2)}").read_bytes() == p2
        with open(m / f"dev/{ctrl.part(1)}", "r+b") as f:
            for off, data in ((0, b"first"), (s1 - 512, os.urandom(512)), (s1 - 100, b"z" * 100), (4000, b"q" * 200)):
                f.seek(off)
                f.write(data)
                p1[off:off + len(data)] = data
        with open(m / f"dev/{ctrl.part(2)}", "r+b") as f:
            f.write(b"second partition")
            p2[:16] = b"second partition"
            f.flush()
            os.fsync(f.fileno())
        assert (m / f"dev/{ctrl.part(1)}").read_bytes() == p1
    assert image_slice(image, b1, s1) == p1
    assert image_slice(image, b2, s2) == p2
    assert image_slice(image, b1 + s1, b2 - b1 - s1) == gap  # the 99 sectors between them
    assert hash_outside(image, b1, b2 + s2) == outside


# --- read-only --------------------------------------------------------------------------------------------


def test_read_only_mount(ctrl: Controller, scratch: Path, tmp_path: Path) -> None:
    digest = sha(scratch.read_bytes())
    with mounted(scratch, tmp_path / "mnt", "--controller", ctrl.name, "--ro") as m:
        assert lsblk(m) == expected_lsblk(scratch, ctrl, ro=True)
        disk_dir = Path(os.path.realpath(m / f"sys/block/{ctrl.disk}"))
        assert (disk_dir / "ro").read_text() == "1\n"
        for number in PARTS:
            assert (disk_dir / ctrl.part(number) / "ro").read_text() == "1\n"
        for name in (ctrl.disk, ctrl.part(1)):
            for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_DIRECT):
                assert errno_of(lambda n=name, f=flags: os.close(os.open(m / f"dev/{n}", f))) == errno.EROFS
        base, size = devices(ctrl, PARTS)[ctrl.part(1)]
        fd = os.open(m / f"dev/{ctrl.part(1)}", os.O_RDONLY)
        try:
            assert os.pread(fd, 5000, 100) == image_slice(scratch, base + 100, 5000)
            os.fsync(fd)  # a flush is not a write (bio_check_ro): fsync works on a read-only device
        finally:
            os.close(fd)
        stats = diskstats(m)[ctrl.disk]
        assert (stats[4], stats[6]) == (0, 0)  # nothing written
    assert sha(scratch.read_bytes()) == digest
