"""Regular-file data and attributes on the rootfs tmpfs, through real syscalls on a live mount.

Linux tmpfs is the specification. The FUSE writeback cache is off, so every
write(2) reaches the daemon before it returns: sizes, times, st_blocks and
statvfs are the daemon's at once, with no fsync needed to see them.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Mounted, is_mounted, module_mount, pid_alive
from tests.integration.users import outcome

PAGE = 4096
BLOCKS_PER_PAGE = PAGE // 512
TICK = 0.02  # long enough for time_ns() to move on every clock this runs on


mnt = module_mount()


pytestmark = pytest.mark.usefixtures("umask_022")




def write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def free_blocks(path: Path) -> int:
    return os.statvfs(path).f_bfree


def times(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


# --- open flags --------------------------------------------------------------------------


def test_create_and_o_excl(d: Path) -> None:
    f = d / "new"
    fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    os.close(fd)
    st = os.stat(f)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_size == 0 and st.st_nlink == 1 and st.st_uid == 0
    with pytest.raises(FileExistsError):
        os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.symlink("missing-target", d / "dangling")
    with pytest.raises(FileExistsError):  # O_EXCL never follows a symlink, even a dangling one
        os.open(d / "dangling", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(os.open(f, os.O_CREAT | os.O_WRONLY))  # without O_EXCL an existing file just opens


def test_create_honours_umask(d: Path) -> None:
    old = os.umask(0o027)
    try:
        os.close(os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o777))
        os.mkdir(d / "sub", 0o777)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(d / "sub").st_mode) == 0o750


def test_o_trunc_truncates_and_updates_mtime_ctime(d: Path) -> None:
    f = d / "t"
    write_file(f, b"x" * 10000)
    _, m0, c0 = times(f)
    time.sleep(TICK)
    fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    st = os.stat(f)
    assert st.st_size == 0
    assert st.st_mtime_ns > m0 and st.st_ctime_ns > c0
    # Linux updates the times on O_TRUNC even when the file is already empty.
    time.sleep(TICK)
    os.close(os.open(f, os.O_WRONLY | os.O_TRUNC))
    assert os.stat(f).st_mtime_ns > st.st_mtime_ns
    with open(f, "rb") as r:
        assert r.read() == b""


def test_o_rdonly_o_trunc_frees_the_pages(d: Path) -> None:
    # Linux truncates for O_RDONLY|O_TRUNC too; the host then sees an empty file, so
    # pages left behind in the daemon would be space nobody can see or free.
    f = d / "t"
    before = free_blocks(d)
    write_file(f, b"y" * (1 << 20))
    assert before - free_blocks(d) == 256
    os.close(os.open(f, os.O_RDONLY | os.O_TRUNC))
    assert os.stat(f).st_size == 0
    assert os.stat(f).st_blocks == 0
    assert free_blocks(d) == before


def test_o_append_writes_at_the_end(d: Path) -> None:
    f = d / "log"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    try:
        os.write(fd, b"abc")
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"def")  # O_APPEND ignores the file position
        other = os.open(f, os.O_WRONLY)
        os.pwrite(other, b"XY", 10)  # the file grows under the appender
        os.close(other)
        os.write(fd, b"!")
    finally:
        os.close(fd)
    assert f.read_bytes() == b"abcdef" + bytes(4) + b"XY!"


# --- data --------------------------------------------------------------------------------


def test_write_read_roundtrip_and_short_read_at_eof(d: Path) -> None:
    f = d / "data"
    payload = os.urandom(3 * PAGE + 123)
    write_file(f, payload)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert os.read(fd, len(payload) + 100) == payload
        assert os.read(fd, 10) == b""
        assert os.pread(fd, 100, len(payload) - 3) == payload[-3:]
        assert os.pread(fd, 10, len(payload) + 5000) == b""
    finally:
        os.close(fd)
    assert os.stat(f).st_size == len(payload)


def test_pwrite_at_any_offset_leaves_holes_that_read_as_zeros(d: Path) -> None:
    f = d / "holes"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"head", 0)
        os.pwrite(fd, b"mid", 5 * PAGE + 17)  # unaligned, several pages past the first
        os.pwrite(fd, b"tail", 40 * PAGE - 2)  # straddles a page boundary
        size = 40 * PAGE + 2
        assert os.fstat(fd).st_size == size
        data = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    expected = bytearray(size)
    expected[0:4] = b"head"
    expected[5 * PAGE + 17 : 5 * PAGE + 20] = b"mid"
    expected[40 * PAGE - 2 :] = b"tail"
    assert data == bytes(expected)
    # Reopened, the data comes from the daemon again rather than the host's page cache.
    assert f.read_bytes() == bytes(expected)
    # Only the three touched pages exist; the 37 between them are holes.
    assert os.stat(f).st_blocks == 4 * BLOCKS_PER_PAGE


def test_sparse_write_at_one_tib_allocates_one_page(d: Path) -> None:
    f = d / "sparse"
    before = free_blocks(d)
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"end", 1 << 40)
        assert os.pread(fd, 8, (1 << 40) - 5) == bytes(5) + b"end"
        assert os.pread(fd, 4096, 1 << 30) == bytes(4096)
    finally:
        os.close(fd)
    st = os.stat(f)
    assert st.st_size == (1 << 40) + 3
    assert st.st_blocks == BLOCKS_PER_PAGE
    assert before - free_blocks(d) == 1


def test_truncate_shrink_then_grow_reads_zeros_in_freed_tail(d: Path) -> None:
    f = d / "sg"
    write_file(f, b"a" * (3 * PAGE))
    fd = os.open(f, os.O_RDWR)
    try:
        os.ftruncate(fd, 100)  # mid-page: the rest of that page must be cleared, not kept
        os.ftruncate(fd, 3 * PAGE)
        data = os.pread(fd, 3 * PAGE, 0)
    finally:
        os.close(fd)
    assert data == b"a" * 100 + bytes(3 * PAGE - 100)
    # The same through truncate(2) by path, and read through a fresh open.
    os.truncate(f, 10)
    os.truncate(f, 2 * PAGE + 1)
    assert f.read_bytes() == b"a" * 10 + bytes(2 * PAGE + 1 - 10)
    assert os.stat(f).st_blocks == BLOCKS_PER_PAGE  # the grow allocated nothing


def test_truncate_frees_pages_and_updates_times(d: Path) -> None:
    f = d / "t"
    before = free_blocks(d)
    write_file(f, b"z" * (8 * PAGE))
    assert os.stat(f).st_blocks == 8 * BLOCKS_PER_PAGE
    _, m0, c0 = times(f)
    time.sleep(TICK)
    os.truncate(f, PAGE)
    st = os.stat(f)
    assert st.st_blocks == BLOCKS_PER_PAGE and before - free_blocks(d) == 1
    assert st.st_mtime_ns > m0 and st.st_ctime_ns > c0


def test_unlink_while_open_keeps_data_until_last_close(d: Path) -> None:
    f = d / "u"
    before = free_blocks(d)
    payload = os.urandom(1 << 20)
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    fd2 = os.open(f, os.O_RDONLY)
    try:
        os.write(fd, payload)
        os.fsync(fd)
        assert before - free_blocks(d) == 256
        os.unlink(f)
        assert not f.exists()
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, len(payload), 0) == payload
        os.pwrite(fd, b"more", len(payload))  # still writable
        os.fsync(fd)
        assert before - free_blocks(d) == 257, "an unlinked open file still holds its pages"
        os.close(fd)
        fd = -1
        assert os.pread(fd2, 4, len(payload)) == b"more"
        assert before - free_blocks(d) == 257, "one open file is enough to keep them"
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(fd2)
    assert free_blocks(d) == before


def test_fsync_hands_the_data_over_and_refreshes_st_blocks(d: Path) -> None:
    f = d / "s"
    before = free_blocks(d)
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"q" * (4 * PAGE))
        os.fsync(fd)
        # Linux tmpfs reports the blocks at once; through FUSE they are right from fsync on.
        assert os.fstat(fd).st_blocks == 4 * BLOCKS_PER_PAGE
        assert before - free_blocks(d) == 4
        os.pwrite(fd, b"r", 10 * PAGE)
        os.fdatasync(fd)
        assert os.fstat(fd).st_blocks == 5 * BLOCKS_PER_PAGE
    finally:
        os.close(fd)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def test_shared_mmap_writes_reach_the_file(d: Path) -> None:
    f = d / "m"
    write_file(f, bytes(2 * PAGE))
    fd = os.open(f, os.O_RDWR)
    try:
        with mmap.mmap(fd, 2 * PAGE) as m:
            m[PAGE : PAGE + 5] = b"mmap!"
            m.flush()
    finally:
        os.close(fd)
    assert f.read_bytes()[PAGE : PAGE + 6] == b"mmap!\0"


# --- attributes and times ----------------------------------------------------------------


def test_write_updates_mtime_ctime_not_atime(d: Path) -> None:
    f = d / "w"
    write_file(f, b"1")
    a0, m0, c0 = times(f)
    time.sleep(TICK)
    fd = os.open(f, os.O_WRONLY)
    os.write(fd, b"2")
    os.close(fd)
    a1, m1, c1 = times(f)
    assert m1 > m0 and c1 > c0
    assert a1 == a0


def test_read_updates_atime_with_relatime(d: Path) -> None:
    f = d / "r"
    write_file(f, b"read me")
    os.utime(f, ns=(1_000_000_000, 2_000_000_000))  # atime older than mtime: relatime must update
    time.sleep(TICK)
    with open(f, "rb") as r:
        assert r.read() == b"read me"
    a1, m1, _ = times(f)
    assert a1 > m1 == 2_000_000_000
    time.sleep(TICK)
    with open(f, "rb") as r:
        r.read()
    assert times(f)[0] == a1, "relatime: atime newer than mtime and ctime is left alone"


def test_chmod_updates_ctime_only(d: Path) -> None:
    f = d / "c"
    write_file(f, b"x")
    a0, m0, c0 = times(f)
    time.sleep(TICK)
    os.chmod(f, 0o4750)
    st = os.stat(f)
    assert stat.S_IMODE(st.st_mode) == 0o4750
    assert st.st_ctime_ns > c0 and st.st_mtime_ns == m0 and st.st_atime_ns == a0


def test_chown_by_root_sets_ids_updates_ctime_and_drops_setuid(d: Path) -> None:
    f = d / "o"
    write_file(f, b"x")
    os.chmod(f, 0o6755)
    _, m0, c0 = times(f)
    time.sleep(TICK)
    os.chown(f, 1234, 5678)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_ctime_ns > c0 and st.st_mtime_ns == m0
    assert stat.S_IMODE(st.st_mode) == 0o755, "a chown of an executable clears set-user-ID and set-group-ID"
    os.chown(f, -1, -1)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (1234, 5678)


def test_utimensat_keeps_nanoseconds(d: Path) -> None:
    f = d / "ns"
    write_file(f, b"x")
    os.utime(f, ns=(1_234_567_891_123_456_789, 987_654_321_987_654_321))
    st = os.stat(f)
    assert st.st_atime_ns == 1_234_567_891_123_456_789
    assert st.st_mtime_ns == 987_654_321_987_654_321
    # Directories and symlinks (lutimes) keep nanoseconds too.
    os.utime(d, ns=(5, 1_000_000_007))
    assert os.stat(d).st_mtime_ns == 1_000_000_007
    os.symlink("ns", d / "link")
    os.utime(d / "link", ns=(11, 22), follow_symlinks=False)
    assert (os.lstat(d / "link").st_atime_ns, os.lstat(d / "link").st_mtime_ns) == (11, 22)
    assert os.stat(f).st_mtime_ns == 987_654_321_987_654_321
    # utime(NULL) sets both to now, and ctime moves with it.
    c0 = st.st_ctime_ns
    time.sleep(TICK)
    os.utime(f)
    st = os.stat(f)
    assert st.st_mtime_ns > 987_654_321_987_654_321 and st.st_ctime_ns > c0


def test_st_blocks_counts_pages(d: Path) -> None:
    f = d / "b"
    write_file(f, b"")
    assert os.stat(f).st_blocks == 0
    write_file(f, b"x")
    assert os.stat(f).st_blocks == BLOCKS_PER_PAGE
    write_file(f, b"x" * (PAGE + 1))
    st = os.stat(f)
    assert st.st_blocks == 2 * BLOCKS_PER_PAGE and st.st_blksize == PAGE


# --- FIFOs and device nodes --------------------------------------------------------------


def test_fifo_node_carries_data_between_processes(d: Path) -> None:
    fifo = d / "fifo"
    os.mkfifo(fifo, 0o640)
    st = os.stat(fifo)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640 and st.st_size == 0
    pid = os.fork()
    if pid == 0:  # the writer; the host kernel serves the FIFO, the daemon only the node
        code = 1
        try:
            wfd = os.open(fifo, os.O_WRONLY)
            os.write(wfd, b"through the fifo")
            os.close(wfd)
            code = 0
        finally:
            os._exit(code)
    rfd = os.open(fifo, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(rfd, 100):
            chunks.append(chunk)
    finally:
        os.close(rfd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"".join(chunks) == b"through the fifo"
    with pytest.raises(OSError) as e:
        os.truncate(fifo, 0)
    assert e.value.errno == errno.EINVAL
    assert os.stat(fifo).st_blocks == 0


def test_mknod_device_and_socket_nodes(d: Path) -> None:
    os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(d / "sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.mknod(d / "sock", stat.S_IFSOCK | 0o755)
    st = os.stat(d / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    st = os.stat(d / "sda")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(8, 0)
    assert stat.S_ISSOCK(os.stat(d / "sock").st_mode)
    with pytest.raises(OSError) as e:
        os.open(d / "sock", os.O_RDONLY)
    assert e.value.errno == errno.ENXIO


# --- robustness --------------------------------------------------------------------------


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) itself: glibc's posix_fallocate would fall back to writing zeros and hide the errno."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_odd_requests_get_the_errno_the_readme_gives(mnt: Mounted, d: Path) -> None:
    f = d / "f"
    write_file(f, b"data")
    dot = f"{d}/."  # a real trailing "." (Path(d) / "." would collapse to d)
    kmsg = mnt.path / "proc" / "kmsg"
    bugs_before = kmsg.read_text().count("BUG in")
    fd = os.open(f, os.O_RDWR)
    try:
        odd: dict[str, tuple[Callable[[], object], str]] = {
            # README: extended attributes are not implemented
            "getxattr": (lambda: os.getxattr(f, "user.x"), "ENOTSUP"),
            "setxattr": (lambda: os.setxattr(f, "user.x", b"1"), "ENOTSUP"),
            "listxattr": (lambda: os.listxattr(f), "ENOTSUP"),
            # README: no fallocate(2) and no O_TMPFILE (EOPNOTSUPP, the same number as ENOTSUP)
            "fallocate": (lambda: fallocate(fd, 0, 0, 3 * PAGE), "ENOTSUP"),
            "fallocate keep size": (lambda: fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 3 * PAGE), "ENOTSUP"),
            "punch hole": (lambda: fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE), "ENOTSUP"),
            "zero range": (lambda: fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, PAGE), "ENOTSUP"),
            "fallocate of nothing": (lambda: fallocate(fd, 0, 0, 0), "EINVAL"),
            "O_TMPFILE": (lambda: os.close(os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600)), "ENOTSUP"),
            # README: SEEK_HOLE and SEEK_DATA see the whole file as data
            "SEEK_DATA past the end": (lambda: os.lseek(fd, 10, os.SEEK_DATA), "ENXIO"),
            "SEEK_HOLE past the end": (lambda: os.lseek(fd, 10, os.SEEK_HOLE), "ENXIO"),
            # the namespace rules of Linux
            "rename onto d/.": (lambda: os.rename(f, dot), "EBUSY"),
            "rename d into itself": (lambda: os.rename(d, d / "inside"), "EINVAL"),
            "rmdir d/.": (lambda: os.rmdir(dot), "EINVAL"),
            "link a directory": (lambda: os.link(d, d / "dirlink"), "EPERM"),
            "readlink of a file": (lambda: os.readlink(f), "EINVAL"),
            "listdir of a file": (lambda: os.listdir(f), "ENOTDIR"),
            "symlink of 4096 bytes": (lambda: os.symlink("x" * 4096, d / "long"), "ENAMETOOLONG"),
            "name of 256 bytes": (lambda: os.mkfifo(d / ("n" * 256)), "ENAMETOOLONG"),
            "rename into proc": (lambda: os.rename(f, mnt.path / "proc" / "f"), "EXDEV"),
            "link into dev": (lambda: os.link(f, mnt.path / "dev" / "f"), "EXDEV"),
            "truncate a directory": (lambda: os.truncate(d, 0), "EISDIR"),
            "utimensat before 1970": (lambda: os.utime(f, ns=(-1, -(10**18))), "ok"),
            "chown to 2^32-2": (lambda: os.chown(f, 2**32 - 2, 2**32 - 2), "ok"),
            "truncate to MAX_LFS_FILESIZE": (lambda: os.truncate(f, (1 << 63) - 1), "ok"),
            "write the last byte": (lambda: os.pwrite(fd, b"x", (1 << 63) - 2), "ok"),
        }
        got = {name: outcome(fn) for name, (fn, _) in odd.items()}
        assert got == {name: want for name, (_, want) in odd.items()}
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        assert os.lseek(fd, 0, os.SEEK_HOLE) == os.fstat(fd).st_size, "the first hole is the end of the file"
        assert os.pread(fd, 2, (1 << 63) - 3) == b"\0x"
    finally:
        os.close(fd)
    assert kmsg.read_text().count("BUG in") == bugs_before, "a tmpfs request raised inside the daemon"
    # dev/, proc/ and sys/ are views: their namespaces take no new entries (README)
    views = {
        "symlink in dev": (lambda: os.symlink("x", mnt.path / "dev" / "s"), "EACCES"),
        "mkdir in dev": (lambda: os.mkdir(mnt.path / "dev" / "x"), "EPERM"),
        "mknod in sys": (lambda: os.mknod(mnt.path / "sys" / "n"), "EACCES"),
        "rename in proc": (lambda: os.rename(mnt.path / "proc" / "meminfo", mnt.path / "proc" / "m2"), "EPERM"),
        "link in proc": (lambda: os.link(mnt.path / "proc" / "meminfo", mnt.path / "proc" / "m3"), "EPERM"),
    }
    assert {name: outcome(fn) for name, (fn, _) in views.items()} == {name: w for name, (_, w) in views.items()}
    assert kmsg.read_text().count("BUG in") == bugs_before
    assert is_mounted(mnt.path)
    assert mnt.pid is not None and pid_alive(mnt.pid)
    assert (mnt.path / "proc" / "meminfo").read_text().startswith("MemTotal:")
