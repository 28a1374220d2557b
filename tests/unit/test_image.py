"""The disk image file: QEMU-style OFD locks, an image cut or grown under the daemon, write-protected images.

Real files, real fcntl locks: two DiskImage objects in one process conflict just as two
daemons do, because an OFD lock belongs to the open file description, not the process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rinuxfs.errors import KernelError
from rinuxfs.hw.image import DiskImage
from rinuxfs.hw.image_lock import find_lock_holder, image_in_use

MIB = 1 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(4 * MIB)
    return path


@contextlib.contextmanager
def opened(path: Path, read_only: bool = False) -> Iterator[DiskImage]:
    img = DiskImage(path, read_only)
    try:
        yield img
    finally:
        img.close()


def proc_locks(path: Path) -> list[tuple[str, str, str]]:
    """(type, start, end) of every lock /proc/locks lists on `path`."""
    st = os.stat(path)
    tag = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    rows = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if fields[1] == "OFDLCK" and fields[5] == tag:
                rows.append((fields[3], fields[6], fields[7]))
    return rows


def test_read_write_open_holds_an_exclusive_lock_on_the_whole_file(image: Path) -> None:
    with opened(image) as img:
        assert img.locked and not img.read_only
        assert proc_locks(image) == [("WRITE", "0", "EOF")]
        assert find_lock_holder(os.stat(image)) == (os.getpid(), "WRITE")
    assert proc_locks(image) == [], "closing the image releases the lock"


def test_read_only_open_takes_qemus_shared_lock_bytes(image: Path) -> None:
    with opened(image, read_only=True):
        # QEMU's bytes: 100 "consistent read" held, 201 "write" not shared (faults.md §9)
        assert sorted(proc_locks(image)) == [("READ", "100", "100"), ("READ", "201", "201")]


@pytest.mark.parametrize("first_ro,second_ro,message", [
    (False, False, 'Failed to get "write" lock'),
    (False, True, 'Failed to get shared "write" lock'),
    (True, False, 'Failed to get "write" lock'),
])
def test_conflicting_opens_fail_at_once_naming_the_holder(image: Path, first_ro: bool, second_ro: bool,
                                                          message: str) -> None:
    with opened(image, first_ro):
        with pytest.raises(KernelError) as e:
            DiskImage(image, second_ro)
        assert e.value.errno == errno.EAGAIN
        text = e.value.args[0]
        assert "\n" not in text and str(image) in text and message in text
        mode = "read-only" if first_ro else "read-write"
        assert f"pid {os.getpid()} (" in text and mode in text
        assert image_in_use(image) is not None
    assert image_in_use(image) is None


def test_readers_share_an_image(image: Path) -> None:
    with opened(image, read_only=True), opened(image, read_only=True) as second:
        assert second.locked
    with opened(image):  # and a writer gets it once they are gone
        pass


def test_a_refused_reader_keeps_no_lock_bytes(image: Path) -> None:
    with opened(image):
        with pytest.raises(KernelError):
            DiskImage(image, read_only=True)
        assert proc_locks(image) == [("WRITE", "0", "EOF")]


def test_reads_past_the_end_of_a_truncated_image_are_errors_not_zeros(image: Path) -> None:
    with opened(image) as img:
        img.write_from(3 * MIB, [memoryview(b"x" * 4096)])
        os.truncate(image, 2 * MIB)
        buf = bytearray(4096)
        img.read_into(MIB, [memoryview(buf)])  # what is still there reads as before
        with pytest.raises(KernelError) as e:
            img.read_into(3 * MIB, [memoryview(buf)])
        assert e.value.errno == errno.EIO and "shrank" in e.value.args[0]
        with pytest.raises(KernelError) as e:  # straddling the new end fails as a whole
            img.read_into(2 * MIB - 512, [memoryview(buf)])
        with pytest.raises(KernelError):
            img.write_from(3 * MIB, [memoryview(b"y" * 4096)])
        assert os.path.getsize(image) == 2 * MIB, "a write past the new end must not grow the file back"
        assert img.size == 4 * MIB, "the capacity stays what it was until a rescan"
        assert img.refresh_size() == 2 * MIB


def test_a_grown_image_changes_nothing_until_refresh(image: Path) -> None:
    with opened(image) as img:
        os.truncate(image, 8 * MIB)
        assert img.size == 4 * MIB
        assert img.refresh_size() == 8 * MIB


def test_a_write_protected_image_opens_read_only(image: Path) -> None:
    subprocess.run(["chattr", "+i", str(image)], check=True)  # immutable: even root cannot open it for writing
    try:
        with opened(image) as img:
            assert img.read_only and img.write_protected == "operation not permitted"
            assert sorted(proc_locks(image)) == [("READ", "100", "100"), ("READ", "201", "201")]
            with pytest.raises(KernelError) as e:
                img.write_from(0, [memoryview(b"x" * 512)])
            assert e.value.errno == errno.EROFS
    finally:
        subprocess.run(["chattr", "-i", str(image)], check=True)


def test_an_unreadable_image_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KernelError) as e:
        DiskImage(tmp_path / "missing.img")
    assert e.value.errno == errno.ENOENT and "no such disk image" in e.value.args[0]
