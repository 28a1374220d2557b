"""Owners and modes as Linux has them, seen by an unprivileged user (nobody) through a root mount with allow_other.

The host kernel checks every access against the ids and modes the daemon reports
(default_permissions), so these tests check that the daemon reports Linux's: disk nodes
root:disk 0660, writable attributes root's alone, /proc/<pid> owned by the process, and
that where the daemon itself decides (oom_score_adj below its floor, another task's comm)
it decides as Linux.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mounted, mount
from tests.integration.storage_helpers import build_gpt_image
from tests.integration.users import NOBODY, NOGROUP, as_nobody, outcome

DISK_GID = 6  # group "disk" on Debian


@pytest.fixture(scope="module")
def mnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    base = tmp_path_factory.mktemp("perms")
    with mount(build_gpt_image(base / "disk.img"), base / "mnt") as m:
        yield m


def tree(root: Path, *tops: str) -> list[tuple[str, os.stat_result]]:
    """(path in the mount, lstat) of everything below `tops`, symlinks not followed."""
    rows = []
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(root / top):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                rows.append((str(path.relative_to(root)), path.lstat()))
    return rows


def test_disk_nodes_are_root_disk_0660_and_open_to_the_disk_group(mnt: Mounted) -> None:
    nodes = sorted(p.name for p in (mnt / "dev").iterdir())
    assert nodes == ["nvme0n1", "nvme0n1p1", "nvme0n1p2", "nvme0n1p4"]
    for name in nodes:
        st = (mnt / "dev" / name).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, DISK_GID, 0o660), name

    def child() -> dict[str, str]:
        return {"read": outcome(lambda: open("nvme0n1p1", "rb").close()),
                "write": outcome(lambda: open("nvme0n1p1", "r+b").close())}

    assert as_nobody(mnt / "dev", child) == {"read": "EACCES", "write": "EACCES"}
    # Group disk may, as on Linux: the daemon's group is the one the host checks.
    first = (mnt / "dev/nvme0n1p1").read_bytes()[:512]

    def disk_member() -> bytes:
        with open("nvme0n1p1", "rb") as f:
            return f.read(512)

    assert as_nobody(mnt / "dev", disk_member, groups=[DISK_GID]) == first


def test_only_root_may_write_attributes_and_no_view_is_writable_by_others(mnt: Mounted) -> None:
    rows = tree(mnt.path, "sys", "proc")
    writable = [rel for rel, st in rows if stat.S_ISREG(st.st_mode) and st.st_mode & 0o222]
    assert len(writable) > 30
    loose = [(rel, oct(st.st_mode)) for rel, st in rows
             if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022]
    assert not loose, loose
    root_owned = [rel for rel in writable if dict(rows)[rel].st_uid == 0]

    def child() -> dict[str, str]:
        return {rel: outcome(lambda rel=rel: os.close(os.open(rel, os.O_WRONLY))) for rel in root_owned}

    assert set(as_nobody(mnt.path, child).values()) == {"EACCES"}


def test_debugfs_kmsg_and_pagetypeinfo_are_root_only(mnt: Mounted) -> None:
    st = (mnt / "sys/kernel/debug").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)
    for rel in ("proc/kmsg", "proc/pagetypeinfo"):
        st = (mnt / rel).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o400), rel

    def child() -> dict[str, str]:
        return {"debugfs": outcome(lambda: os.listdir("sys/kernel/debug")),
                "kmsg": outcome(lambda: open("proc/kmsg", "rb").close()),
                "pagetypeinfo": outcome(lambda: open("proc/pagetypeinfo", "rb").close()),
                "meminfo": outcome(lambda: open("proc/meminfo", "rb").read())}

    assert as_nobody(mnt.path, child) == {"debugfs": "EACCES", "kmsg": "EACCES", "pagetypeinfo": "EACCES",
                                          "meminfo": "ok"}


# fs/proc/base.c's modes for the files rinuxfs has.
PID_MODES = {"stat": 0o444, "statm": 0o444, "status": 0o444, "comm": 0o644, "cmdline": 0o444, "mounts": 0o444,
             "mountinfo": 0o444, "oom_score": 0o444, "oom_score_adj": 0o644, "oom_adj": 0o644,
             "make-it-fail": 0o644, "fail-nth": 0o644, "task": 0o555}


def test_proc_pid_belongs_to_its_process_with_base_c_modes(mnt: Mounted) -> None:
    def child() -> dict[str, object]:
        me = os.getpid()
        entries = {}
        for d in (f"proc/{me}", f"proc/{me}/task/{me}", "proc/1", f"proc/{os.getppid()}"):
            st = os.stat(d)
            entries[d.replace(str(me), "ME").replace(str(os.getppid()), "PARENT")] = (
                st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode),
                {name: (os.stat(f"{d}/{name}").st_uid, stat.S_IMODE(os.stat(f"{d}/{name}").st_mode))
                 for name in os.listdir(d)})
        entries["Uid"] = next(line for line in open(f"proc/{me}/status") if line.startswith("Uid:"))
        return entries

    seen = as_nobody(mnt.path, child)
    mine = {name: (NOBODY, mode) for name, mode in PID_MODES.items()}
    roots = {name: (0, mode) for name, mode in PID_MODES.items()}
    assert seen["proc/ME"] == (NOBODY, NOGROUP, 0o555, mine)
    assert seen["proc/ME/task/ME"] == (NOBODY, NOGROUP, 0o555, {k: v for k, v in mine.items() if k != "task"})
    assert seen["proc/1"] == (0, 0, 0o555, roots), "init is a kernel task: root's"
    assert seen["proc/PARENT"] == (0, 0, 0o555, roots), "the test runner is root's"
    assert seen["Uid"] == f"Uid:\t{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}\n"


def test_a_process_writes_its_own_proc_files_and_no_one_elses(mnt: Mounted) -> None:
    def child() -> dict[str, object]:
        me = os.getpid()

        def write(path: str, data: bytes) -> None:
            with open(path, "wb", buffering=0) as f:
                f.write(data)

        return {
            "own comm": outcome(lambda: write(f"proc/{me}/comm", b"renamed")),
            "comm now": open(f"proc/{me}/comm", "rb").read(),
            "own oom_score_adj up": outcome(lambda: write(f"proc/{me}/oom_score_adj", b"500")),
            "oom_score_adj now": open(f"proc/{me}/oom_score_adj", "rb").read(),
            "back down to 0": outcome(lambda: write(f"proc/{me}/oom_score_adj", b"0")),
            "below 0": outcome(lambda: write(f"proc/{me}/oom_score_adj", b"-1")),  # CAP_SYS_RESOURCE
            "root's comm": outcome(lambda: write(f"proc/{os.getppid()}/comm", b"x")),
            "init's oom_score_adj": outcome(lambda: write("proc/1/oom_score_adj", b"1")),
            "hostname": outcome(lambda: write("proc/sys/kernel/hostname", b"x")),
        }

    assert as_nobody(mnt.path, child) == {
        "own comm": "ok", "comm now": b"renamed\n", "own oom_score_adj up": "ok", "oom_score_adj now": b"500\n",
        "back down to 0": "ok", "below 0": "EACCES", "root's comm": "EACCES", "init's oom_score_adj": "EACCES",
        "hostname": "EACCES",
    }
    # Root writing another task's comm is refused by the daemon (comm_write), not by a mode.
    with pytest.raises(OSError) as e, open(mnt / "proc/1/comm", "wb", buffering=0) as f:
        f.write(b"x")
    assert e.value.errno == 22
