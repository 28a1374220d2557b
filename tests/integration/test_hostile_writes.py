"""Garbage, huge, empty and negative values written to every writable file of sys/, proc/ and debugfs.

The walk finds the files itself (a file is writable when its mode says so), so whatever is
registered later is walked too. Every write must end as Linux would end it:
- refused with one of Linux's errnos for a bad value; never EIO, which here means a bug in
  the daemon (the kernel log then has a "BUG" line, checked at the end), and never EACCES
  for root on a file whose mode lets root write;
- or taken, and then only where `accepts` says the file takes that value (hostname takes any
  string): the test reads back what Linux would show, restores the value it read before,
  and checks that too. A file that takes a value no rule expects fails the test, and so does
  a file that refuses a value its rule says it takes: nothing is skipped silently.
Files whose writes act (a controller reset, a rescan, an injected fatal status, a surprise
removal, a SCSI device's delete) are written like the others; their rule says what each write
does and how the walk undoes it (`recover`), so the files after them find the machine as it was.
The walk runs on an NVMe machine and on an AHCI one, so both drivers' files are walked.
Afterwards the daemon still answers, every file of the views reads and the disk does I/O.
"""

from __future__ import annotations

import errno
import fnmatch
import mmap
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Mounted, mounted, wait_until


@pytest.fixture(scope="module", params=["nvme", "ahci"], name="mnt")
def machine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    with mounted(tmp_path_factory.mktemp(request.param), "--cpus", "4", "--numa", "2", "--mem", "512M",
                 "--controller", request.param) as m:
        yield m


MIB = 1 << 20
VALUES = [
    b"garbage", b"\xff\xfe\x00\x01 not utf-8", b"1_000", "١٢".encode(), "²".encode(), b"0x", b" ",
    b"-1", b"-99999999999999999999999", b"\n", b"9" * MIB, b"x" * MIB,
]
EMPTY = b""
# What Linux answers to a bad value somewhere in these trees. EIO is not here: it is a daemon bug.
LINUX_ERRNOS = {errno.EINVAL, errno.ERANGE, errno.EBUSY, errno.ENODEV, errno.ENOSPC, errno.ENOMEM, errno.EPERM,
                errno.E2BIG, errno.EOVERFLOW, errno.ENOENT, errno.EEXIST, errno.ENXIO, errno.EOPNOTSUPP,
                errno.ESRCH, errno.EAGAIN, errno.ENETRESET}
TOPS = ("sys", "proc")  # sys/kernel/debug is below sys


def dostring(value: bytes, maxlen: int = 64) -> bytes:
    """proc_dostring: the bytes up to a newline or NUL, at most maxlen."""
    return value.split(b"\n")[0].split(b"\0")[0][:maxlen]


# Linux's lax parsers, written from lib/kstrtox.c and lib/vsprintf.c as the test's own oracle.
def kstrtobool(value: bytes) -> bool | None:
    """kstrtobool: the first byte decides (y/Y/t/T/1, n/N/f/F/0), or "on"/"of…"; None where it gives EINVAL."""
    if value[:1] and value[:1] in b"yYtT1":
        return True
    if value[:1] and value[:1] in b"nNfF0":
        return False
    if value[:1] in (b"o", b"O") and value[1:2] and value[1:2] in b"nNfF":
        return value[1:2] in b"nN"
    return None


def leading_number(value: bytes) -> int:
    """simple_strtoul(value, &end, 10): the leading ASCII digits (nothing skipped), 0 if none, as an int keeps it."""
    digits = value[: len(value) - len(value.lstrip(b"0123456789"))]
    return (int(digits) if digits else 0) % (1 << 32)


def sscanf_d(value: bytes) -> int | None:
    """sscanf(value, "%d"): blanks skipped, an optional '-', ASCII digits; None if nothing converts."""
    rest = value.lstrip(b" \t\n\v\f\r")
    negative = rest[:1] == b"-"
    rest = rest[1:] if negative else rest
    if not rest[:1].isdigit():
        return None
    magnitude = leading_number(rest)
    return -magnitude if negative else magnitude


def flag(on: bool | int | None, before: bytes) -> bytes:
    """A 0/1 file after a write that set it (truthy), cleared it (falsy) or left it (None)."""
    return before if on is None else b"1\n" if on else b"0\n"


def yes_no(on: bool | None, before: bytes) -> bytes:
    """A debugfs bool after a write: Y, N, or as it was."""
    return before if on is None else b"Y\n" if on else b"N\n"


@dataclass(frozen=True)
class Accepts:
    """Files (a glob on the path in the mount) that take `takes` values, showing `expect(value, before)` after.

    What a file shows is its bytes, or the errno's name when reading it fails (a device deleted).
    `restore(before)` is written back afterwards (None: the file holds nothing to restore, as a trigger).
    A write-only file shows its effect in another: `shown_by`, a file of the same directory, is read
    instead. `recover` is a control (a path in the mount) and the value written to it after the
    restore, where writing the old value back does not undo what the write did; its rule says why.
    `settled` is a file (path, content) that shows the machine whole again afterwards: a device
    found again is registered at once, but the host hears asynchronously that the names it cached
    went with the old one, so the walk waits (a moment) until that file reads right by its old path.
    """

    pattern: str
    takes: Callable[[bytes], bool]
    expect: Callable[[bytes, bytes], bytes | str]
    restore: Callable[[bytes], bytes] | None = lambda before: before
    shown_by: str | None = None
    recover: tuple[str, bytes] | None = None
    settled: tuple[str, bytes] | None = None


def accepts(own_pid: int, sdev: str) -> list[Accepts]:
    """The rules; `sdev` is the SCSI device's directory on an AHCI machine (its files' paths)."""
    running = (f"{sdev}/state", b"running\n")
    return [
        # proc_dostring takes any bytes: a newline or NUL ends the value, past 64 bytes it is cut.
        Accepts("proc/sys/kernel/hostname", lambda v: True, lambda v, _: dostring(v) + b"\n"),
        Accepts("proc/sys/kernel/domainname", lambda v: True, lambda v, _: dostring(v) + b"\n"),
        # comm_write: a task renames itself with the first 15 bytes (newline kept); others get EINVAL.
        Accepts(f"proc/{own_pid}/*comm", lambda v: True, lambda v, _: v[:15].split(b"\0")[0] + b"\n",
                restore=lambda before: before[:-1]),
        # Root may set any oom_score_adj in -1000..1000, and lower it too.
        Accepts("proc/*/oom_score_adj", lambda v: v == b"-1", lambda v, _: b"-1\n"),
        # -1 is wbt's "back to the default" (the value at boot), and io_poll_delay's classic polling.
        Accepts("sys/devices/*/queue/wbt_lat_usec", lambda v: v == b"-1", lambda v, before: before),
        Accepts("sys/devices/*/queue/io_poll_delay", lambda v: v == b"-1", lambda v, _: b"-1\n"),
        # lowmem_reserve_ratio's handler ignores parse errors (every write succeeds) and keeps values
        # below 1 as 0; of these values only -1 parses.
        Accepts("proc/sys/vm/lowmem_reserve_ratio", lambda v: True,
                lambda v, before: b"0\t" + before.split(b"\t", 1)[1] if v == b"-1" else before),
        # Plain proc_dointvec, no bounds (mm/oom_kill.c's vm_oom_kill_table): -1 is an int like any other.
        Accepts("proc/sys/vm/oom_kill_allocating_task", lambda v: v == b"-1", lambda v, _: b"-1\n"),
        Accepts("proc/sys/vm/oom_dump_tasks", lambda v: v == b"-1", lambda v, _: b"-1\n"),
        # oom_adj_write takes -17..15 and scales it: -1 is oom_score_adj -1000/17 = -58 (C division), which
        # oom_adj_read scales back to -58*17/1000 = 0.
        Accepts("proc/*/oom_adj", lambda v: v == b"-1", lambda v, _: b"0\n"),
        # --- the fault-injection kernel (lib/fault-inject.c, fs/debugfs/file.c, block/, drivers/nvme/host/)
        # times and space are atomic_t files (DEFINE_DEBUGFS_ATTRIBUTE_SIGNED, kstrtoll): -1 is "unlimited".
        Accepts("sys/kernel/debug/*/times", lambda v: v == b"-1", lambda v, _: b"-1\n"),
        Accepts("sys/kernel/debug/*/space", lambda v: v == b"-1", lambda v, _: b"-1\n"),
        # debugfs_write_file_bool returns the count whatever it holds; kstrtobool's verdict, if any, is set.
        # (probability stays 0 through the walk, so a task-filter or dont_retry set meanwhile fails nothing.)
        *(Accepts(f"sys/kernel/debug/*/{name}", lambda v: True, lambda v, before: yes_no(kstrtobool(v), before))
          for name in ("task-filter", "dont_retry", "ignore-gfp-wait", "ignore-gfp-highmem")),
        # part_fail_store: sscanf("%d") sets (non-zero) or clears (0) the flag, leaves it if nothing converts,
        # and returns the count either way. part_timeout_store: simple_strtoul base 10 into an int, no blanks
        # or sign skipped, so what is not a number clears it. Both act only with a probability set.
        Accepts("sys/devices/*/make-it-fail", lambda v: True, lambda v, before: flag(sscanf_d(v), before)),
        Accepts("sys/devices/*/io-timeout-fail", lambda v: True, lambda v, before: flag(leading_number(v), before)),
        # nvme_sysfs_reset and nvme_sysfs_rescan read nothing of what is written: every write resets the
        # controller (nvme_reset_ctrl_sync) or scans its namespaces, and the controller is live afterwards.
        Accepts("sys/devices/*/nvme/nvme0/reset_controller", lambda v: True, lambda v, before: before,
                restore=None, shown_by="state"),
        Accepts("sys/devices/*/nvme/nvme0/rescan_controller", lambda v: True, lambda v, before: before,
                restore=None, shown_by="state"),
        # rinuxfs's own controller faults (sys/kernel/debug/rinuxfs/<ctrl>/) take what kstrtobool takes. A
        # fatal status (CSTS.CFS) clears only when the controller is reset, as the driver does when it next
        # times out; a device back in its slot after a surprise removal is in its power-on state, which the
        # driver, that saw nothing, learns at a reset too. So the walk resets it, as an admin would.
        *(Accepts(f"sys/kernel/debug/rinuxfs/nvme0/{name}", lambda v: kstrtobool(v) is not None,
                  lambda v, before: flag(kstrtobool(v), before),
                  recover=("sys/class/nvme/nvme0/reset_controller", b"1"))
          for name in ("controller_fatal_status", "surprise_removal")),
        # sdev_store_delete reads nothing of what is written: scsi_remove_device, and the device's directory is
        # gone (its state file with it) until the host's scan, which libata's user_scan takes as "- - -".
        # store_rescan_field: scsi_rescan_device, whatever is written; an unchanged disk stays as it was.
        Accepts("sys/devices/*/0:0:0:0/delete", lambda v: True, lambda v, before: "ENOENT", restore=None,
                shown_by="state", recover=("sys/class/scsi_host/host0/scan", b"- - -"), settled=running),
        Accepts("sys/devices/*/0:0:0:0/rescan", lambda v: True, lambda v, before: before, restore=None,
                shown_by="state"),
        # rinuxfs/ata1/surprise_removal (kstrtobool): the phy reports the device gone, EH detaches sda; written
        # back to 0 the device is plugged in again and EH attaches it, under the same name.
        Accepts("sys/kernel/debug/rinuxfs/ata1/surprise_removal", lambda v: kstrtobool(v) is not None,
                lambda v, before: flag(kstrtobool(v), before), settled=running),
    ]


def writable_files(root: Path) -> list[Path]:
    found = []
    for top in TOPS:
        for dirpath, _, filenames in os.walk(root / top):  # symlinks are not followed: each file once
            for name in filenames:
                path = Path(dirpath) / name
                st = path.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o222:
                    found.append(path)
    return found


def write(path: Path, value: bytes) -> int | str:
    """Bytes written, or the errno's name."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as e:
        return errno.errorcode[e.errno or 0]
    try:
        return os.write(fd, value)
    except OSError as e:
        return errno.errorcode[e.errno or 0]
    finally:
        os.close(fd)


def read(path: Path) -> bytes | str | None:
    """The file's bytes; None if it is write-only (demote, reset_controller); the errno's name if reading fails."""
    try:
        if not path.stat().st_mode & 0o444:
            return None
        return path.read_bytes()
    except OSError as e:
        return errno.errorcode[e.errno or 0]


def test_every_writable_file_answers_bad_values_as_linux_and_the_daemon_stays_up(mnt: Mounted) -> None:
    own_pid = os.getpid()
    assert (mnt / "proc/self").readlink() == Path(str(own_pid))
    (mnt / "proc/self/status").read_bytes()  # the test's own task joins proc/
    nvme = (mnt / "sys/class/nvme/nvme0").exists()
    disk = "nvme0n1" if nvme else "sda"
    sdev = "" if nvme else str((mnt / "sys/bus/scsi/devices/0:0:0:0").resolve().relative_to(mnt.path))
    rules = accepts(own_pid, sdev)
    files = writable_files(mnt.path)
    names = {str(p.relative_to(mnt.path)) for p in files}
    # The walk reaches every kind of writable file there is today, so a change that hides them fails here.
    controls = ("nvme/nvme0/reset_controller", "nvme/nvme0/rescan_controller") if nvme else (
        "0:0:0:0/delete", "0:0:0:0/rescan", "scsi_host/host0/scan")
    for expected in ("proc/sys/kernel/hostname", "proc/sys/vm/min_free_kbytes", f"proc/{own_pid}/comm",
                     "proc/1/oom_score_adj", "sys/kernel/mm/transparent_hugepage/enabled",
                     "sys/devices/system/cpu/cpu1/online", "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
                     "sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages",
                     f"sys/block/{disk}/make-it-fail", "sys/kernel/debug/fail_make_request/times"):
        assert str((mnt / expected).resolve().relative_to(mnt.path)) in names, expected
    for suffix in ("/queue/scheduler", *controls):
        assert any(n.endswith(suffix) for n in names), suffix

    problems: list[str] = []
    writes = 0
    for path in files:
        rel = str(path.relative_to(mnt.path))
        shown_by = next((r.shown_by for r in rules if r.shown_by and fnmatch.fnmatchcase(rel, r.pattern)), None)
        watched = path.parent / shown_by if shown_by else path
        before = read(watched)
        for value in VALUES:
            writes += 1
            outcome = write(path, value)
            rule = next((r for r in rules if fnmatch.fnmatchcase(rel, r.pattern) and r.takes(value)), None)
            shown = f"{rel} <- {value[:16]!r}{'…' if len(value) > 16 else ''}: {outcome}"
            if isinstance(outcome, str):
                if getattr(errno, outcome) not in LINUX_ERRNOS:
                    bug = " (a daemon bug)" if outcome == "EIO" else ""
                    problems.append(f"{shown}, not an errno Linux gives here{bug}")
                elif rule is not None:
                    problems.append(f"{shown}, but Linux takes this value")
                continue
            if rule is None:
                problems.append(f"{shown}: taken, and no rule says this file takes it")
                continue
            # A value is taken a page at most per write(2), as kernfs takes it.
            if outcome != min(len(value), 4096):
                problems.append(f"{shown}: wrote {outcome} bytes")
            assert isinstance(before, bytes), f"{rel}: its rule must name a file that shows what a write did"
            after = read(watched)
            if after != rule.expect(value[:4096], before):
                problems.append(f"{shown}: shows {after!r:.40}, not {rule.expect(value[:4096], before)!r:.40}")
            if rule.restore is not None:
                write(path, rule.restore(before))
            if rule.recover is not None and write(mnt / rule.recover[0], rule.recover[1]) != len(rule.recover[1]):
                problems.append(f"{shown}: {rule.recover[0]} did not take {rule.recover[1]!r}")
            if rule.settled is not None:
                settled, content = rule.settled
                if not wait_until(lambda f=mnt / settled, c=content: read(f) == c, 5):
                    problems.append(f"{shown}: {settled} does not read {content!r} again")
            if read(watched) != before:
                problems.append(f"{rel}: not restored to {before!r}")
        # An empty write(2) never reaches a file system: the file opened with O_TRUNC stays as it was.
        if write(path, EMPTY) != 0 or read(watched) != before:
            problems.append(f"{rel}: changed by an empty write")
    assert not problems, "\n".join(problems)
    assert writes > 800

    # The daemon is unharmed: every file of the views still reads, and the kernel log has no BUG line.
    readable = 0
    for top in TOPS:
        for dirpath, _, filenames in os.walk(mnt / top):
            for name in filenames:
                path = Path(dirpath) / name
                st = path.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o444:
                    path.read_bytes()
                    readable += 1
    assert readable > 400
    kmsg = (mnt / "proc/kmsg").read_text(errors="replace")
    assert "BUG" not in kmsg, [line for line in kmsg.splitlines() if "BUG" in line]
    # Every write to reset_controller reset the controller (nvme_reset_work logs its queues each time), every
    # write to delete removed the disk (sd's shutdown says so); after those, the injected faults and the
    # surprise removals, the controller is live and the disk does I/O.
    if nvme:
        assert kmsg.count("nvme nvme0: 4/0/0 default/read/poll queues") > len(VALUES)
        assert (mnt / "sys/class/nvme/nvme0/state").read_text() == "live\n"
    else:
        assert kmsg.count("sd 0:0:0:0: [sda] Synchronizing SCSI cache") > len(VALUES)
        assert (mnt / sdev / "state").read_text() == "running\n"
    fd = os.open(mnt / "dev" / disk, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    try:
        assert os.preadv(fd, [buf], 0) == 4096
    finally:
        buf.close()
        os.close(fd)
