"""Sizes and limits of the rootfs tmpfs: size=, ENOSPC, EFBIG, sparse files, and pages in the simulated RAM.

Linux tmpfs is the specification. The FUSE writeback cache is off, so every
write(2), buffered or O_DIRECT, reaches the daemon before it returns: ENOSPC
comes from write(2) itself, as on Linux, with no fsync or close needed.
Only what the daemon decides is tested here; limits the host kernel enforces
before a request reaches FUSE (RLIMIT_FSIZE, offsets past off_t) prove nothing
about rinuxfs.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import pytest

from tests.conftest import Mounted, module_mount, mount

PAGE = 4096
MIB = 1 << 20
MAX_LFS_FILESIZE = (1 << 63) - 1


def make_image(base: Path) -> Path:
    image = base / "disk.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    return image


mnt = module_mount()




def meminfo(m: Mounted) -> dict[str, int]:
    """/proc/meminfo of the simulated machine, in kB."""
    values = {}
    for line in (m.path / "proc" / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return values


def write_synced(path: Path, nbytes: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        assert os.write(fd, os.urandom(nbytes)) == nbytes
        os.fsync(fd)
    finally:
        os.close(fd)


def fill(path: Path, chunk: int = MIB, limit: int = 64 * MIB) -> tuple[int, int]:
    """write(2) chunk by chunk, never fsync, until an error: (bytes write(2) accepted, its errno)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    accepted = 0
    try:
        while accepted < limit:
            accepted += os.write(fd, b"\xa5" * chunk)  # a short count at the limit, then ENOSPC
    except OSError as e:
        return accepted, e.errno or -1
    finally:
        os.close(fd)
    raise AssertionError(f"{limit} bytes written without an error")


# --- size= and ENOSPC ---------------------------------------------------------------------


def test_size_limit_enospc_and_space_returned(tmp_path: Path) -> None:
    m = mount(make_image(tmp_path), tmp_path / "mnt", "--tmpfs-size", "8M")
    try:
        tmp = m.path / "tmp"
        st = os.statvfs(tmp)
        assert st.f_blocks * st.f_frsize == 8 * MIB
        assert st.f_bfree == st.f_bavail == st.f_blocks

        accepted, err = fill(tmp / "big")
        assert err == errno.ENOSPC
        assert 7 * MIB <= accepted <= 8 * MIB
        assert os.statvfs(tmp).f_bfree == 0
        assert os.stat(tmp / "big").st_blocks * 512 >= accepted

        # O_DIRECT goes straight to the daemon: write(2) itself fails.
        fd = os.open(tmp / "direct", os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
        buf = mmap.mmap(-1, PAGE)  # page-aligned, as O_DIRECT wants
        try:
            with pytest.raises(OSError) as e:
                os.write(fd, buf)
            assert e.value.errno == errno.ENOSPC
        finally:
            buf.close()
            os.close(fd)
        # Short symlinks live in the inode; a long one needs a page and fails like data,
        # without keeping the inode it was about to use.
        os.symlink("short", tmp / "short-link")
        inodes_free = os.statvfs(tmp).f_ffree
        with pytest.raises(OSError) as e:
            os.symlink("x" * 200, tmp / "long-link")
        assert e.value.errno == errno.ENOSPC
        assert not os.path.lexists(tmp / "long-link")
        assert os.statvfs(tmp).f_ffree == inodes_free

        os.unlink(tmp / "big")
        assert os.statvfs(tmp).f_bfree == st.f_blocks, "unlinking gives every page back"
        write_synced(tmp / "again", 6 * MIB)
        assert os.statvfs(tmp).f_bfree == st.f_blocks - 6 * MIB // PAGE
    finally:
        m.unmount()


def test_truncating_a_full_file_returns_space(tmp_path: Path) -> None:
    m = mount(make_image(tmp_path), tmp_path / "mnt", "--tmpfs-size", "2M")
    try:
        tmp = m.path / "tmp"
        _, err = fill(tmp / "f", chunk=256 * 1024)
        assert err == errno.ENOSPC and os.statvfs(tmp).f_bfree == 0
        os.truncate(tmp / "f", MIB)
        assert os.statvfs(tmp).f_bfree == 256
        write_synced(tmp / "g", MIB)
        assert os.statvfs(tmp).f_bfree == 0
    finally:
        m.unmount()


def test_size_is_rounded_up_to_pages_and_zero_means_unlimited(tmp_path: Path) -> None:
    m = mount(make_image(tmp_path), tmp_path / "a", "--tmpfs-size", "10000")
    try:
        st = os.statvfs(m.path)
        assert st.f_frsize == PAGE and st.f_blocks == 3, "Linux rounds size= up to whole pages"
        assert "size=12k" in (m.path / "proc" / "mounts").read_text().splitlines()[0]
    finally:
        m.unmount()
    m = mount(make_image(tmp_path), tmp_path / "b", "--tmpfs-size", "0")
    try:
        st = os.statvfs(m.path)
        assert st.f_blocks == 0 and st.f_bfree == 0, "size=0: no limit, and statfs reports no blocks"
        f = m.path / "tmp" / "f"
        write_synced(f, 4 * MIB)
        assert os.stat(f).st_blocks == 4 * MIB // 512
        assert "size=" not in (m.path / "proc" / "mounts").read_text().splitlines()[0]
    finally:
        m.unmount()


# --- maximum file size -------------------------------------------------------------------


def test_file_size_limit_is_max_lfs_filesize(mnt: Mounted, d: Path) -> None:
    f = d / "max"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    shmem = meminfo(mnt)["Shmem"]
    try:
        os.ftruncate(fd, MAX_LFS_FILESIZE)  # tmpfs's s_maxbytes: allowed, and allocates nothing
        assert os.fstat(fd).st_size == MAX_LFS_FILESIZE and os.fstat(fd).st_blocks == 0
        assert os.pwrite(fd, b"!", MAX_LFS_FILESIZE - 1) == 1  # the very last byte: one page of the daemon's
        assert os.pread(fd, 2, MAX_LFS_FILESIZE - 2) == b"\0!"
        assert meminfo(mnt)["Shmem"] == shmem + PAGE // 1024
    finally:
        os.close(fd)
    assert os.stat(f).st_blocks == 8


def test_huge_truncate_allocates_nothing(mnt: Mounted, d: Path) -> None:
    f = d / "huge"
    f.write_bytes(b"")
    before = meminfo(mnt)
    free_blocks = os.statvfs(d).f_bfree
    os.truncate(f, 1 << 62)
    st = os.stat(f)
    assert st.st_size == 1 << 62 and st.st_blocks == 0
    with open(f, "rb") as r:
        r.seek((1 << 62) - 10)
        assert r.read() == bytes(10)
        r.seek(1 << 40)
        assert r.read(PAGE) == bytes(PAGE)
    after = meminfo(mnt)
    assert abs(after["MemFree"] - before["MemFree"]) <= 64, "reading holes must not allocate"
    assert after["Shmem"] == before["Shmem"]
    assert os.statvfs(d).f_bfree == free_blocks
    assert os.stat(f).st_blocks == 0


def test_writes_at_the_end_of_a_sparse_gigabyte_allocate_only_their_pages(mnt: Mounted, d: Path) -> None:
    """What such a write costs is counted, not timed (scripts/bench times it): 15 pages for 15 page writes."""
    f = d / "sparse"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, 1 << 30)
        before = meminfo(mnt)
        for i in range(15):
            os.pwrite(fd, b"w" * PAGE, (1 << 30) - (i + 1) * PAGE)
        after = meminfo(mnt)
    finally:
        os.close(fd)
    assert os.stat(f).st_blocks == 15 * PAGE // 512
    assert after["Shmem"] - before["Shmem"] == 15 * PAGE // 1024
    assert 15 * PAGE // 1024 <= before["MemFree"] - after["MemFree"] <= 15 * PAGE // 1024 + 256


# --- pages in the simulated RAM ----------------------------------------------------------


def test_file_pages_are_shmem_in_simulated_ram(mnt: Mounted, d: Path) -> None:
    f = d / "four-mib"
    before = meminfo(mnt)
    write_synced(f, 4 * MIB)
    during = meminfo(mnt)
    assert during["Shmem"] - before["Shmem"] == 4096
    assert during["Cached"] - before["Cached"] == 4096
    assert 4096 <= before["MemFree"] - during["MemFree"] <= 4096 + 256
    os.unlink(f)
    after = meminfo(mnt)
    assert after["Shmem"] == before["Shmem"] and after["Cached"] == before["Cached"]
    assert abs(after["MemFree"] - before["MemFree"]) <= 256
