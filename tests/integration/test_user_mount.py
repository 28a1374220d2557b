"""A user's own mount, end to end as nobody: `rinuxfs mount` and `umount` of an image nobody owns.

The daemon runs as nobody and mounts through fusermount3 without allow_other. Inside, the user
is the machine's root (its ids are shown as the user's), so dev/, sys/ attributes and
proc/kmsg work; what needs host root is skipped with a log line (the bdi readahead), and
other users, root included, are kept out, as FUSE keeps them out of any user's mount.

The CLI runs in a child of the test process that drops to nobody (tests/integration/users.py
says why not an exec); the tools it is checked with run as nobody through setpriv.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import is_mounted, pid_alive, wait_until
from tests.integration.storage_helpers import GPT_PARTS, GPT_SCRIPT, SECTOR
from tests.integration.users import NOBODY, NOGROUP, as_nobody, setpriv

# Imported before dropping privileges: the interpreter's own library is not readable by nobody here.
PRELOAD = ("rinuxfs.cli", "rinuxfs.kernel", "rinuxfs.daemon", "rinuxfs.mkdisk", "encodings.utf_16_le")
DISK_GID = 6


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory of nobody's under /tmp (pytest's own are root's, 0700): the image, the mount point, the run dir."""
    d = Path(tempfile.mkdtemp(prefix="rinuxfs-user-", dir="/tmp"))
    os.chown(d, NOBODY, NOGROUP)
    try:
        yield d
    finally:
        for mnt in (d / "mnt", d / "root-owned"):
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
        for pidfile in (d / "run").glob("rinuxfs/*.pid"):
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)


def rinuxfs_as_nobody(home: Path, *args: str) -> tuple[int, str]:
    """`rinuxfs ARGS` run by nobody with its own XDG_RUNTIME_DIR: exit status and stderr."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run"), "LC_ALL": "C"}

    def child() -> tuple[int, str]:
        from rinuxfs.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = main(list(args))
        return status, err.getvalue()

    return as_nobody(home, child, env=env, preload=PRELOAD)


def nobody(*cmd: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(setpriv(*cmd), input=stdin, capture_output=True, check=True).stdout


def test_a_user_mounts_its_own_image_and_everything_but_host_root_works(home: Path) -> None:
    nobody("mkdir", "-m", "0700", str(home / "run"), str(home / "mnt"))
    nobody("truncate", "-s", "64M", str(home / "img"))
    nobody("sfdisk", "-q", str(home / "img"), stdin=GPT_SCRIPT.encode())
    status, err = rinuxfs_as_nobody(home, "mount", "img", "mnt")
    assert (status, err) == (0, "")
    mnt = home / "mnt"
    try:
        options = next(line for line in open("/proc/self/mountinfo") if line.split()[4] == str(mnt))
        assert f"user_id={NOBODY}" in options and "allow_other" not in options
        # Root is kept out of a user's mount (no allow_other), as FUSE keeps every other user out.
        with pytest.raises(PermissionError):
            os.listdir(mnt)
        pidfiles = list((home / "run/rinuxfs").glob("*.pid"))
        assert len(pidfiles) == 1 and (home / "run/rinuxfs").stat().st_uid == NOBODY
        daemon = int(pidfiles[0].read_text().split()[0])
        assert os.stat(f"/proc/{daemon}").st_uid == NOBODY

        # The machine's root is the user: its files show as the user's, the disk group stays the disk's.
        listing = nobody("ls", "-ln", str(mnt / "dev")).decode()
        assert f"-rw-rw---- 1 {NOBODY} {DISK_GID}" in listing and "nvme0n1p4" in listing
        lsblk = nobody("lsblk", "--sysroot", str(mnt), "-rno", "NAME").decode().split()
        assert lsblk == ["nvme0n1", "nvme0n1p1", "nvme0n1p2", "nvme0n1p4"]
        assert b"MemTotal:" in nobody("cat", str(mnt / "proc/meminfo"))

        # Writes that need the machine's root work: a partition, a queue attribute, the hostname.
        start, _ = GPT_PARTS[2]
        pattern = bytes(range(256)) * 64
        nobody("dd", f"of={mnt}/dev/nvme0n1p2", "bs=16k", "conv=fsync,notrunc", "status=none", stdin=pattern)
        assert nobody("dd", f"if={mnt}/dev/nvme0n1p2", "bs=16k", "count=1", "status=none") == pattern
        nobody("sh", "-c", f"echo mq-deadline > {mnt}/sys/block/nvme0n1/queue/scheduler")
        assert b"[mq-deadline]" in nobody("cat", str(mnt / "sys/block/nvme0n1/queue/scheduler"))
        nobody("sh", "-c", f"echo userbox > {mnt}/proc/sys/kernel/hostname")
        nobody("sh", "-c", f"echo kept > {mnt}/tmp/file")
        assert nobody("stat", "-c", "%u %g %a", str(mnt / "tmp/file")) == f"{NOBODY} {NOGROUP} 644\n".encode()
        assert b"fail_make_request" in nobody("ls", str(mnt / "sys/kernel/debug"))  # the machine's root sees it

        # What needs host root is skipped, and the kernel log says so.
        kmsg = nobody("cat", str(mnt / "proc/kmsg")).decode()
        assert "raising it needs root" in kmsg and "BUG" not in kmsg
    finally:
        status, err = rinuxfs_as_nobody(home, "umount", "mnt")
    assert (status, err) == (0, "")
    assert not is_mounted(mnt)
    assert wait_until(lambda: not pid_alive(daemon), 10)
    with open(home / "img", "rb") as f:
        f.seek(start * SECTOR)
        assert f.read(len(pattern)) == pattern, "the user's writes reached the image"
    assert not list((home / "run/rinuxfs").glob("*")), "pid file and log gone with the daemon"


def test_what_a_user_may_not_do_is_one_clear_line(home: Path) -> None:
    nobody("truncate", "-s", "16M", str(home / "img"))
    root_owned = home / "root-owned"
    root_owned.mkdir(mode=0o755)  # the mount point belongs to root
    nobody("mkdir", "-m", "0700", str(home / "run"))
    status, err = rinuxfs_as_nobody(home, "mount", "img", "root-owned")
    assert (status, err) == (1, "rinuxfs mount: mount point root-owned: a user mounts only on a directory it may "
                             "write to (fusermount3's rule)\n")
    assert not is_mounted(root_owned)

    # A runtime directory someone else could plant files in is refused, not used.
    planted = home / "planted"
    (planted / "rinuxfs").mkdir(parents=True, mode=0o755)  # root's
    nobody("mkdir", "-m", "0700", str(home / "mnt"))

    def mount_with_planted_run_dir() -> tuple[int, str]:
        from rinuxfs.cli import main

        os.environ["XDG_RUNTIME_DIR"] = str(planted)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = main(["mount", "img", "mnt"])
        return status, err.getvalue()

    status, err = as_nobody(home, mount_with_planted_run_dir, env={"PATH": os.environ["PATH"]}, preload=PRELOAD)
    assert status == 1 and "is not private" in err and err.count("\n") == 1, err
    assert not is_mounted(home / "mnt")
    assert stat.S_IMODE((planted / "rinuxfs").stat().st_mode) == 0o755
