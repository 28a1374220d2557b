"""Names on the rootfs tmpfs: directories, rename, links, symlinks, name limits and the times they change.

Linux tmpfs is the specification; every check runs real syscalls on a live mount.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import module_mount

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
NAME_MAX = 255
BOGO_DIRENT_SIZE = 20  # shmem's st_size per directory entry
TICK = 0.02

_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old: Path, new: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(old))


mnt = module_mount()


pytestmark = pytest.mark.usefixtures("umask_022")




def touch(path: Path, data: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(data)


def errno_of(fn: Callable[..., object], *args: object) -> int:
    try:
        fn(*args)
    except OSError as e:
        return e.errno or -1
    raise AssertionError(f"{getattr(fn, '__name__', fn)}{args} succeeded")


def mc(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_mtime_ns, st.st_ctime_ns


def nlink(path: Path) -> int:
    return os.lstat(path).st_nlink


# --- directories -------------------------------------------------------------------------


def test_mkdir_rmdir_and_their_errors(d: Path) -> None:
    os.mkdir(d / "sub", 0o750)
    st = os.stat(d / "sub")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_nlink == 2 and st.st_size == 2 * BOGO_DIRENT_SIZE and st.st_blocks == 0
    assert errno_of(os.mkdir, d / "sub") == errno.EEXIST
    touch(d / "sub" / "f")
    touch(d / "file")
    assert errno_of(os.rmdir, d / "sub") == errno.ENOTEMPTY
    assert errno_of(os.rmdir, d / "file") == errno.ENOTDIR
    assert errno_of(os.rmdir, d / "missing") == errno.ENOENT
    assert errno_of(os.unlink, d / "sub") == errno.EISDIR
    assert errno_of(os.mkdir, d / "file" / "x") == errno.ENOTDIR
    os.unlink(d / "sub" / "f")
    os.rmdir(d / "sub")
    assert not (d / "sub").exists()


def test_directory_nlink_is_two_plus_subdirectories(d: Path) -> None:
    assert nlink(d) == 2
    for name in ("a", "b", "c"):
        os.mkdir(d / name)
    touch(d / "file")  # files do not count
    os.symlink("a", d / "link")
    assert nlink(d) == 5
    os.rmdir(d / "c")
    assert nlink(d) == 4
    os.rename(d / "b", d / "a" / "b")
    assert nlink(d) == 3 and nlink(d / "a") == 3
    assert os.stat(d / "a" / "b" / "..").st_ino == os.stat(d / "a").st_ino


def test_directory_size_counts_entries(d: Path) -> None:
    for i in range(5):
        touch(d / f"f{i}")
    os.mkdir(d / "sub")
    assert os.stat(d).st_size == (2 + 6) * BOGO_DIRENT_SIZE
    os.unlink(d / "f0")
    assert os.stat(d).st_size == (2 + 5) * BOGO_DIRENT_SIZE


def test_large_directory_lists_every_entry_once_and_removes(d: Path) -> None:
    names = {f"entry-{i:05d}" for i in range(1500)}
    for name in names:
        os.close(os.open(d / name, os.O_CREAT | os.O_WRONLY, 0o644))
    listed = os.listdir(d)
    assert len(listed) == len(names) and set(listed) == names
    with os.scandir(d) as it:
        assert sum(1 for e in it if e.is_file(follow_symlinks=False)) == len(names)
    for name in names:
        os.unlink(d / name)
    assert os.listdir(d) == []
    assert os.stat(d).st_size == 2 * BOGO_DIRENT_SIZE


# --- rename ------------------------------------------------------------------------------


def test_rename_over_file_replaces_it(d: Path) -> None:
    touch(d / "a", b"new")
    touch(d / "b", b"old")
    os.link(d / "b", d / "b2")
    ino = os.stat(d / "a").st_ino
    os.rename(d / "a", d / "b")
    assert not (d / "a").exists()
    assert os.stat(d / "b").st_ino == ino and (d / "b").read_bytes() == b"new"
    assert nlink(d / "b2") == 1 and (d / "b2").read_bytes() == b"old"


def test_rename_of_two_names_of_one_inode_does_nothing(d: Path) -> None:
    touch(d / "a")
    os.link(d / "a", d / "b")
    os.rename(d / "a", d / "b")
    assert (d / "a").exists() and (d / "b").exists() and nlink(d / "a") == 2


def test_rename_directory_over_empty_directory(d: Path) -> None:
    os.mkdir(d / "src")
    touch(d / "src" / "inside")
    os.mkdir(d / "empty")
    assert nlink(d) == 4
    os.rename(d / "src", d / "empty")
    assert os.listdir(d / "empty") == ["inside"]
    assert not (d / "src").exists()
    assert nlink(d) == 3


def test_rename_errors(d: Path) -> None:
    os.mkdir(d / "dir")
    os.mkdir(d / "full")
    touch(d / "full" / "x")
    touch(d / "file")
    assert errno_of(os.rename, d / "dir", d / "full") == errno.ENOTEMPTY
    assert errno_of(os.rename, d / "dir", d / "file") == errno.ENOTDIR
    assert errno_of(os.rename, d / "file", d / "dir") == errno.EISDIR
    assert errno_of(os.rename, d / "dir", d / "dir" / "below") == errno.EINVAL
    assert errno_of(os.rename, d / "missing", d / "other") == errno.ENOENT
    assert sorted(os.listdir(d)) == ["dir", "file", "full"]


def test_rename_across_directories_moves_and_updates_both(d: Path) -> None:
    os.mkdir(d / "from")
    os.mkdir(d / "to")
    touch(d / "from" / "f", b"payload")
    os.mkdir(d / "from" / "sub")
    ino = os.stat(d / "from" / "f").st_ino
    src0, dst0 = mc(d / "from"), mc(d / "to")
    _, c0 = mc(d / "from" / "f")
    time.sleep(TICK)
    os.rename(d / "from" / "f", d / "to" / "g")
    os.rename(d / "from" / "sub", d / "to" / "sub")
    assert os.stat(d / "to" / "g").st_ino == ino and (d / "to" / "g").read_bytes() == b"payload"
    src1, dst1 = mc(d / "from"), mc(d / "to")
    assert src1[0] > src0[0] and src1[1] > src0[1], "the old parent's mtime and ctime change"
    assert dst1[0] > dst0[0] and dst1[1] > dst0[1], "the new parent's mtime and ctime change"
    assert mc(d / "to" / "g")[1] > c0, "the renamed inode's ctime changes"
    assert nlink(d / "from") == 2 and nlink(d / "to") == 3
    assert os.stat(d / "to" / "sub" / "..").st_ino == os.stat(d / "to").st_ino


def test_rename_noreplace(d: Path) -> None:
    touch(d / "a", b"a")
    touch(d / "b", b"b")
    with pytest.raises(FileExistsError):
        renameat2(d / "a", d / "b", RENAME_NOREPLACE)
    assert (d / "a").read_bytes() == b"a" and (d / "b").read_bytes() == b"b"
    renameat2(d / "a", d / "c", RENAME_NOREPLACE)
    assert not (d / "a").exists() and (d / "c").read_bytes() == b"a"


def test_rename_exchange(d: Path) -> None:
    touch(d / "a", b"first")
    touch(d / "b", b"second")
    renameat2(d / "a", d / "b", RENAME_EXCHANGE)
    assert (d / "a").read_bytes() == b"second" and (d / "b").read_bytes() == b"first"
    # A file and a directory in different parents swap, and the parents' link counts follow.
    os.mkdir(d / "p")
    os.mkdir(d / "q")
    os.mkdir(d / "p" / "dir")
    touch(d / "p" / "dir" / "inside")
    touch(d / "q" / "file", b"f")
    renameat2(d / "p" / "dir", d / "q" / "file", RENAME_EXCHANGE)
    assert (d / "p" / "dir").read_bytes() == b"f"
    assert os.listdir(d / "q" / "file") == ["inside"]
    assert nlink(d / "p") == 2 and nlink(d / "q") == 3
    assert os.stat(d / "q" / "file" / "..").st_ino == os.stat(d / "q").st_ino
    with pytest.raises(FileNotFoundError):
        renameat2(d / "a", d / "missing", RENAME_EXCHANGE)
    with pytest.raises(OSError) as e:
        renameat2(d / "a", d / "b", RENAME_EXCHANGE | RENAME_NOREPLACE)
    assert e.value.errno == errno.EINVAL


# --- links -------------------------------------------------------------------------------


def test_hard_links_share_the_inode_and_count(d: Path) -> None:
    touch(d / "a", b"shared")
    os.link(d / "a", d / "b")
    os.mkdir(d / "other")
    os.link(d / "a", d / "other" / "c")
    assert nlink(d / "a") == 3
    assert os.stat(d / "a").st_ino == os.stat(d / "b").st_ino == os.stat(d / "other" / "c").st_ino
    with open(d / "b", "ab") as f:
        f.write(b"+")
    assert (d / "other" / "c").read_bytes() == b"shared+"
    os.unlink(d / "a")
    assert nlink(d / "b") == 2 and (d / "b").read_bytes() == b"shared+"
    assert errno_of(os.link, d / "other", d / "dirlink") == errno.EPERM
    assert errno_of(os.link, d / "b", d / "other" / "c") == errno.EEXIST
    assert errno_of(os.link, d / "missing", d / "x") == errno.ENOENT


def test_link_and_unlink_update_ctime_of_file_and_times_of_parent(d: Path) -> None:
    touch(d / "f")
    os.mkdir(d / "other")
    parent0, file0 = mc(d / "other"), mc(d / "f")
    time.sleep(TICK)
    os.link(d / "f", d / "other" / "g")
    parent1, file1 = mc(d / "other"), mc(d / "f")
    assert parent1[0] > parent0[0] and parent1[1] > parent0[1]
    assert file1[1] > file0[1] and file1[0] == file0[0], "link changes the file's ctime, not its mtime"
    time.sleep(TICK)
    os.unlink(d / "other" / "g")
    parent2, file2 = mc(d / "other"), mc(d / "f")
    assert parent2[0] > parent1[0] and parent2[1] > parent1[1]
    assert file2[1] > file1[1] and file2[0] == file1[0], "unlink changes the remaining name's ctime"


def test_symlinks_and_readlink(d: Path) -> None:
    touch(d / "target", b"via link")
    os.symlink("target", d / "rel")
    os.symlink(str(d / "target"), d / "abs")
    os.symlink("nowhere", d / "dangling")
    assert os.readlink(d / "rel") == "target"
    assert (d / "rel").read_bytes() == b"via link" and (d / "abs").read_bytes() == b"via link"
    st = os.lstat(d / "rel")
    assert stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o777 and st.st_size == len("target")
    assert errno_of(os.stat, d / "dangling") == errno.ENOENT
    assert errno_of(os.readlink, d / "target") == errno.EINVAL
    assert errno_of(os.symlink, "x", d / "rel") == errno.EEXIST
    # Linux tmpfs keeps a short target inline and gives a long one a page of its own.
    short, long = "s" * 127, "l" * 128
    os.symlink(short, d / "short")
    os.symlink(long, d / "long")
    assert os.lstat(d / "short").st_blocks == 0
    assert os.lstat(d / "long").st_blocks == 8
    assert os.readlink(d / "long") == long
    longest = "m" * 4095
    os.symlink(longest, d / "longest")
    assert os.readlink(d / "longest") == longest and os.lstat(d / "longest").st_size == 4095
    assert errno_of(os.symlink, "m" * 4096, d / "too-long") == errno.ENAMETOOLONG


def test_long_symlink_pages_are_charged_and_freed(d: Path) -> None:
    free0 = os.statvfs(d).f_bfree
    os.symlink("z" * 1000, d / "long")
    assert free0 - os.statvfs(d).f_bfree == 1
    os.unlink(d / "long")
    assert os.statvfs(d).f_bfree == free0


# --- name limits -------------------------------------------------------------------------


def test_names_up_to_name_max(d: Path) -> None:
    ok = "a" * NAME_MAX
    too_long = "b" * (NAME_MAX + 1)
    touch(d / ok, b"255")
    assert (d / ok).read_bytes() == b"255" and ok in os.listdir(d)
    os.mkdir(d / ("d" * NAME_MAX))
    os.symlink(ok, d / ("s" * NAME_MAX))
    os.link(d / ok, d / ("h" * NAME_MAX))
    os.mkfifo(d / ("p" * NAME_MAX))
    os.rename(d / ok, d / ("r" * NAME_MAX))
    assert len(os.listdir(d)) == 5
    # Multi-byte names count bytes, not characters.
    os.mkdir(d / ("é" * 127))  # 254 bytes
    assert errno_of(os.mkdir, d / ("é" * 128)) == errno.ENAMETOOLONG
    # Every way to make or reach a 256-byte name fails the same way.
    for fn, args in (
        (os.open, (d / too_long, os.O_CREAT | os.O_WRONLY)),
        (os.mkdir, (d / too_long,)),
        (os.symlink, ("x", d / too_long)),
        (os.link, (d / ("h" * NAME_MAX), d / too_long)),
        (os.mkfifo, (d / too_long,)),
        (os.rename, (d / ("r" * NAME_MAX), d / too_long)),
        (os.stat, (d / too_long,)),
        (os.unlink, (d / too_long,)),
    ):
        assert errno_of(fn, *args) == errno.ENAMETOOLONG, fn
    assert len(os.listdir(d)) == 6


def test_statvfs_namemax_and_pathconf(d: Path) -> None:
    assert os.statvfs(d).f_namemax == NAME_MAX
    assert os.pathconf(d, "PC_NAME_MAX") == NAME_MAX


# --- parent times ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)), id="create"),
        pytest.param(lambda p: os.mkdir(p), id="mkdir"),
        pytest.param(lambda p: os.mkfifo(p), id="mkfifo"),
        pytest.param(lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3)), id="mknod"),
        pytest.param(lambda p: os.symlink("target", p), id="symlink"),
    ],
)
def test_creating_updates_parent_mtime_ctime(d: Path, make: Callable[[Path], object]) -> None:
    before = mc(d)
    a_before = os.stat(d).st_atime_ns
    time.sleep(TICK)
    make(d / "new")
    after = mc(d)
    assert after[0] > before[0] and after[1] > before[1]
    assert os.stat(d).st_atime_ns == a_before
    st = os.lstat(d / "new")
    assert before[0] < st.st_mtime_ns <= after[0] and before[1] < st.st_ctime_ns <= after[1]
    time.sleep(TICK)
    (os.rmdir if stat.S_ISDIR(st.st_mode) else os.unlink)(d / "new")
    removed = mc(d)
    assert removed[0] > after[0] and removed[1] > after[1]


def test_rename_within_one_directory_updates_it_once(d: Path) -> None:
    touch(d / "a")
    before = mc(d)
    time.sleep(TICK)
    os.rename(d / "a", d / "b")
    after = mc(d)
    assert after[0] > before[0] and after[1] > before[1]
