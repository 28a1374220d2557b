"""A client cannot take the daemon down: many open files, huge directories, odd names, deep trees, no inodes left.

Each case gets the answers Linux gives (tmpfs, procfs, the host's own path limits) and leaves
the daemon serving, its memory within the bound the README states (`rss_bound`).
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mounted, mounted

MIB = 1 << 20


def rss(m: Mounted, field: str = "VmRSS") -> int:
    assert m.pid is not None
    with open(f"/proc/{m.pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def rss_bound(m: Mounted, open_files: int) -> int:
    """The README's bound: 64 MiB, the simulated RAM in use, 1 KiB an inode, 512 bytes an open file, 16 MiB of views."""
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in (m / "proc/meminfo").open()}
    st = os.statvfs(m.path)
    return 64 * MIB + meminfo["MemTotal"] - meminfo["MemFree"] + (st.f_files - st.f_ffree) * 1024 \
        + open_files * 512 + 16 * MIB


def daemon_cpu_seconds(m: Mounted) -> float:
    with open(f"/proc/{m.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def errno_of(fn: object) -> int:
    try:
        fn()  # type: ignore[operator]
    except OSError as e:
        return e.errno or 0
    return 0


@pytest.fixture(scope="module")
def mnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    with mounted(tmp_path_factory.mktemp("limits"), "--mem", "512M", "--cpus", "16") as m:
        yield m


@pytest.fixture
def nofile() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 13_000)), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_ten_thousand_open_files_and_thousands_of_open_views(mnt: Mounted, nofile: None) -> None:
    d = mnt / "tmp/open"
    d.mkdir()
    fds = [os.open(d / f"f{i}", os.O_CREAT | os.O_RDWR, 0o644) for i in range(10_000)]
    try:
        for i, fd in enumerate(fds):
            assert os.write(fd, b"file %05d" % i) == 10
        # Views hold a rendered copy while open: 2,500 of the largest ones, each read a little.
        views = [os.open(mnt / name, os.O_RDONLY) for name in ("proc/interrupts", "proc/zoneinfo",
                                                               "proc/cpuinfo", "dev/nvme0n1") * 625]
        try:
            for fd in views:
                assert os.read(fd, 64)
            assert all(os.pread(fd, 10, 0) == b"file %05d" % i for i, fd in enumerate(fds))
            assert b"CPU15" in (mnt / "proc/interrupts").read_bytes()  # still serving
            assert rss(mnt) <= rss_bound(mnt, len(fds) + len(views))
        finally:
            for fd in views:
                os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)
    assert len(os.listdir(d)) == 10_000


def test_short_lived_processes_do_not_pile_up_in_proc(mnt: Mounted) -> None:
    # Each cat is a new process that proc/ adopts; once it has exited, its task and /proc/<pid> go,
    # and the host is told to drop the name (proc_flush_pid), so nothing is kept per dead process.
    before = rss(mnt)
    subprocess.run(["sh", "-c", f"for i in $(seq 1000); do cat {mnt.path}/proc/self/status >/dev/null; done"],
                   check=True)
    assert rss(mnt) - before < 8 * MIB  # 12 KiB a process were kept before, 12 MiB here
    assert len([p for p in os.listdir(mnt / "proc") if p.isdigit()]) < 50


def test_names_of_every_byte_value(mnt: Mounted) -> None:
    d = bytes(mnt / "tmp/names")
    os.mkdir(d)
    singles = [bytes([b]) for b in range(1, 256) if b not in (ord("/"), ord("."))]
    every = bytes(b for b in range(1, 256) if b != ord("/"))  # 254 bytes: every byte a name may hold
    names = [*singles, b"...", b".x", every, every[::-1] + b"z"]
    for name in names:
        with open(os.path.join(d, name), "wb") as f:
            f.write(name)
    assert sorted(os.listdir(d)) == sorted(names)
    assert all(open(os.path.join(d, name), "rb").read() == name for name in names)
    for name in names:
        os.rename(os.path.join(d, name), os.path.join(d, name[:254] + b"\xff"))
    assert len(os.listdir(d)) == len(names)
    assert errno_of(lambda: open(os.path.join(d, b"n" * 256), "wb")) == errno.ENAMETOOLONG
    # The views look such names up too: ENOENT, never a daemon error (proc reads them as pids).
    for top in (b"proc", b"sys", b"dev", b"sys/block", b"proc/sys/vm", b"tmp"):
        for name in [*singles, every, b"\xd9\xa1", b"01", b"1\n", b"+1", b"99999999999999999999"]:
            path = os.path.join(bytes(mnt.path), top, name)
            if os.path.lexists(path):
                continue
            assert errno_of(lambda path=path: os.stat(path)) == errno.ENOENT, path
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


def test_a_tree_deeper_than_path_max(mnt: Mounted) -> None:
    depth = 2100  # "d/" 2100 times: 4200 bytes, past PATH_MAX (4096) from the mount's root
    free_before = os.statvfs(mnt.path).f_ffree
    top = mnt / "tmp/deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"at the bottom")
        assert os.path.exists(os.path.join(top, *["d"] * 1000, "d"))
        assert errno_of(lambda: os.stat(os.path.join(top, *["d"] * depth))) == errno.ENAMETOOLONG  # the host's rule
        # Moving the top into its own depths is EINVAL, however far down.
        tmp = os.open(mnt / "tmp", os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert errno_of(lambda: os.rename("deep", "into", src_dir_fd=tmp, dst_dir_fd=fd)) == errno.EINVAL
        finally:
            os.close(tmp)
    finally:
        os.close(fd)
    # Real tools walk it (fts opens directory by directory) and remove it.
    found = subprocess.run(["find", str(top)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(found) == depth + 2
    subprocess.run(["rm", "-rf", str(top)], check=True)
    assert not top.exists()
    assert os.statvfs(mnt.path).f_ffree == free_before, "every inode came back"


def test_nr_inodes_exhausted_is_enospc_as_tmpfs(tmp_path: Path) -> None:
    with mounted(tmp_path, "--mem", "32M") as m:
        d = m / "tmp/full"
        d.mkdir()
        st = os.statvfs(m.path)
        mem_total_kb = int((m / "proc/meminfo").read_text().split()[1])
        assert st.f_files == mem_total_kb // 4 // 2  # nr_inodes: half the managed pages, as Linux tmpfs
        made = 0
        while True:
            try:
                os.mknod(d / f"f{made}")
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
            made += 1
        assert made == st.f_ffree
        assert os.statvfs(m.path).f_ffree == 0
        df = subprocess.run(["df", "--output=itotal,iused,iavail,ipcent", str(m.path)], capture_output=True,
                            text=True, check=True).stdout.split()
        assert df[-4:] == [str(st.f_files), str(st.f_files), "0", "100%"]
        # Every way to make a name needs an inode, a hard link too (shmem_link).
        for make in (lambda: os.mkdir(d / "dir"), lambda: os.symlink("target", d / "sym"),
                     lambda: os.mkfifo(d / "fifo"), lambda: os.link(d / "f0", d / "hard"),
                     lambda: open(d / "new", "wb")):
            assert errno_of(make) == errno.ENOSPC
        # Space is not inodes: existing files still grow.
        (d / "f1").write_bytes(b"x" * 100_000)
        assert (d / "f1").read_bytes() == b"x" * 100_000
        os.unlink(d / "f2")
        os.link(d / "f0", d / "hard")  # the slot unlink gave back
        assert errno_of(lambda: os.mknod(d / "again")) == errno.ENOSPC
        os.unlink(d / "hard")
        os.mknod(d / "again")
        assert "BUG" not in (m / "proc/kmsg").read_text()
        for name in os.listdir(d):
            os.unlink(d / name)
        assert os.statvfs(m.path).f_ffree == st.f_ffree


def test_a_hundred_thousand_entries_in_one_directory(tmp_path: Path) -> None:
    n = 100_000
    with mounted(tmp_path, "--mem", "1G") as m:  # nr_inodes 124,612
        d = m / "tmp/big"
        d.mkdir()
        for i in range(n):
            os.mknod(d / f"entry-{i:06d}")
        cpu = daemon_cpu_seconds(m)
        names = os.listdir(d)
        # Listing is linear: a few microseconds of the daemon's time an entry (quadratic would be minutes).
        assert daemon_cpu_seconds(m) - cpu < 10.0
        assert len(names) == n and len(set(names)) == n
        assert sorted(names)[n // 2] == f"entry-{n // 2:06d}"
        # Open directories cost nothing each however large the directory is: 300 readers mid-listing.
        before = rss(m)
        fds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY) for _ in range(300)]
        readers = [os.scandir(fd) for fd in fds]  # scandir reads from a copy of the descriptor
        try:
            assert all(next(r).name.startswith("entry-") for r in readers)
            assert rss(m) - before < 16 * MIB
            assert rss(m) <= rss_bound(m, len(fds))
        finally:
            for r, fd in zip(readers, fds, strict=True):
                r.close()
                os.close(fd)
        assert os.stat(d).st_size == (n + 2) * 20  # shmem's BOGO_DIRENT_SIZE an entry
        assert "BUG" not in (m / "proc/kmsg").read_text()
