"""The runtime directory: where a daemon keeps its pid file and its log, and how stale ones go away.

Where: `/run/rinuxfs/` for root, `$XDG_RUNTIME_DIR/rinuxfs/` (or `/tmp/rinuxfs-UID/rinuxfs/`)
for other users; `$RINUXFS_RUNTIME_DIR` overrides both (the tests use it to keep to themselves).
Each mount point has one key (a hash of its absolute path) and two files:
- `KEY.pid`: the daemon's pid, then the mount point, then the image, one per line. Written
  by the daemon as soon as it starts, removed when it exits; `umount` reads it to wait
  until everything is flushed, and a refused image lock reads it to name the holder.
- `KEY.log`: the daemon's stdout/stderr. Removed when the daemon exits cleanly, kept
  when it failed, since it says why.
A daemon killed outright (SIGKILL, OOM) removes nothing. `sweep()` runs at each
`rinuxfs mount` and `umount` and deletes what dead daemons left: their pid files, their
empty logs, and all but the `KEEP_FAILED_LOGS` newest non-empty logs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from rinuxfs.errors import KernelError

KEEP_FAILED_LOGS = 8


def runtime_dir() -> Path:
    if os.environ.get("RINUXFS_RUNTIME_DIR"):
        base = Path(os.environ["RINUXFS_RUNTIME_DIR"])
    elif os.geteuid() == 0:
        base = Path("/run/rinuxfs")
    else:
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/rinuxfs-{os.getuid()}") / "rinuxfs"
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(base)
    base.mkdir(parents=True, exist_ok=True)
    return base


def _check_private(path: Path) -> None:
    """Refuse a user's runtime directory (or its /tmp parent) that another user could plant files in."""
    for d in (path, path.parent) if path.parent.name.startswith("rinuxfs-") else (path,):
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise KernelError(errno.EPERM, f"runtime directory {d} is not private (owner uid {st.st_uid}, mode "
                                           f"{stat.S_IMODE(st.st_mode):o}): remove it or set XDG_RUNTIME_DIR")


def _key(mountpoint: Path) -> str:
    return hashlib.sha1(str(mountpoint).encode()).hexdigest()[:16]


def pid_file(mountpoint: Path) -> Path:
    return runtime_dir() / f"{_key(mountpoint)}.pid"


def log_file(mountpoint: Path) -> Path:
    return runtime_dir() / f"{_key(mountpoint)}.log"


@dataclass(frozen=True)
class DaemonRecord:
    pid: int
    mountpoint: str
    image: str


def write_pid_file(mountpoint: Path, image: Path) -> Path:
    path = pid_file(mountpoint)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n{mountpoint}\n{image}\n")
    tmp.replace(path)  # a reader sees the whole record or none
    return path


def read_pid_file(path: Path) -> DaemonRecord | None:
    try:
        lines = path.read_text().splitlines()
        return DaemonRecord(int(lines[0]), *(lines[1:3] + ["", ""])[:2])
    except (OSError, ValueError, IndexError):
        return None


def daemon_of(mountpoint: Path) -> DaemonRecord | None:
    return read_pid_file(pid_file(mountpoint))


def process_running(pid: int) -> bool:
    """True while `pid` runs; a zombie awaiting its reaper (the daemon's parent has gone) has finished."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def is_rinuxfs_daemon(pid: int) -> bool:
    """Running and a rinuxfs process: a pid file whose pid was reused by another program is stale."""
    if not process_running(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"rinuxfs" in f.read()
    except OSError:
        return False


def live_daemons() -> list[DaemonRecord]:
    records = (read_pid_file(p) for p in runtime_dir().glob("*.pid"))
    return [r for r in records if r is not None and is_rinuxfs_daemon(r.pid)]


def sweep() -> list[Path]:
    """Delete the files dead daemons left behind; returns what was deleted."""
    base = runtime_dir()
    removed: list[Path] = []
    live: set[str] = set()
    for path in base.glob("*.pid"):
        record = read_pid_file(path)
        if record is not None and is_rinuxfs_daemon(record.pid):
            live.add(path.stem)
            continue
        if record is None and _age(path) < 60:
            live.add(path.stem)  # being written right now (the rename makes this rare): leave it
            continue
        removed += _unlink(path)
    failed: list[tuple[float, Path]] = []
    for path in base.glob("*.log"):
        if path.stem in live:
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        if st.st_size == 0:
            removed += _unlink(path)  # a killed daemon's log that says nothing
        else:
            failed.append((st.st_mtime, path))
    failed.sort(reverse=True)
    for _, path in failed[KEEP_FAILED_LOGS:]:
        removed += _unlink(path)
    for path in base.glob("*.tmp*"):  # a pid record whose writer died between write and rename
        if _age(path) >= 60:
            removed += _unlink(path)
    return removed


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _unlink(path: Path) -> list[Path]:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        return [path]
    return []
