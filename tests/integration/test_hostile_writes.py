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
removal) are written like the others; their rule says what each write does and how the walk
undoes it (`recover`), so the files after them find the machine as it was.
Afterwards the daemon still answers and every file of the views reads.
"""

from __future__ import annotations

import errno
import fnmatch
import mmap
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Mounted, module_mount

mnt = module_mount("--cpus", "4", "--numa", "2", "--mem", "512M")

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

    `restore(before)` is written back afterwards (None: the file holds nothing to restore, as a trigger).
    A write-only file shows its effect in another: `shown_by`, a file of the same directory, is read
    instead. `recover` is a control (a path in the mount) and the value written to it after the
    restore, where writing the old value back does not undo what the write did; its rule says why.
    """

    pattern: str
    takes: Callable[[bytes], bool]
    expect: Callable[[bytes, bytes], bytes]
    restore: Callable[[bytes], bytes] | None = lambda before: before
    shown_by: str | None = None
    recover: tuple[str, bytes] | None = None


def accepts(own_pid: int) -> list[Accepts]:
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


def read(path: Path) -> bytes | None:
    if not path.stat().st_mode & 0o444:
        return None  # write-only (demote, reset_controller): nothing to show
    return path.read_bytes()


def test_every_writable_file_answers_bad_values_as_linux_and_the_daemon_stays_up(mnt: Mounted) -> None:
    own_pid = os.getpid()
    assert (mnt / "proc/self").readlink() == Path(str(own_pid))
    (mnt / "proc/self/status").read_bytes()  # the test's own task joins proc/
    rules = accepts(own_pid)
    files = writable_files(mnt.path)
    names = {str(p.relative_to(mnt.path)) for p in files}
    # The walk reaches every kind of writable file there is today, so a change that hides them fails here.
    for expected in ("proc/sys/kernel/hostname", "proc/sys/vm/min_free_kbytes", f"proc/{own_pid}/comm",
                     "proc/1/oom_score_adj", "sys/kernel/mm/transparent_hugepage/enabled",
                     "sys/devices/system/cpu/cpu1/online", "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
                     "sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"):
        assert expected in names, expected
    assert any(n.endswith("/queue/scheduler") for n in names)

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
            assert before is not None, f"{rel} is write-only: its rule must say which file shows what it did"
            after = read(watched)
            if after != rule.expect(value[:4096], before):
                problems.append(f"{shown}: shows {after[:40]!r}, not {rule.expect(value[:4096], before)[:40]!r}")
            if rule.restore is not None:
                write(path, rule.restore(before))
            if rule.recover is not None and write(mnt / rule.recover[0], rule.recover[1]) != len(rule.recover[1]):
                problems.append(f"{shown}: {rule.recover[0]} did not take {rule.recover[1]!r}")
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
    # Every write to reset_controller reset the controller (nvme_reset_work logs its queues each time), and
    # after those, the injected fatal status and the surprise removal the disk still does I/O.
    assert kmsg.count("nvme nvme0: 4/0/0 default/read/poll queues") > len(VALUES)
    assert (mnt / "sys/class/nvme/nvme0/state").read_text() == "live\n"
    fd = os.open(mnt / "dev/nvme0n1", os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    try:
        assert os.preadv(fd, [buf], 0) == 4096
    finally:
        buf.close()
        os.close(fd)
