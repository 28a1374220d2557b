"""Locks on the disk image, as QEMU takes them (block/file-posix.c), so two writers never share an image.

Open file description (OFD) locks, not POSIX ones: they belong to the open file
description, so the daemon forked by `rinuxfs mount` holds the lock its parent
took (POSIX locks are not inherited across fork) and keeps it for its whole life;
it goes when the last descriptor of the image closes, including on SIGKILL.

- Read-write: an exclusive lock (F_WRLCK) on the whole file. Any other rinuxfs,
  and QEMU (which tests its lock bytes with F_WRLCK), is refused.
- Read-only (`--ro`, `rinuxfs inspect`): QEMU's own shared locks for a reader that
  does not let others write: F_RDLCK on byte 100 ("consistent read" held) and byte
  201 ("write" not shared), after testing byte 101 ("write" held by someone, as a
  read-write QEMU holds it). Readers share an image; a writer is refused, and so
  is a reader while a writer runs.
- A conflict is EAGAIN with one line in QEMU's words that names the holder's pid.
  F_OFD_GETLK reports l_pid -1 for OFD locks, and so does /proc/locks, so the holder
  is found through the `lock:` lines of /proc/PID/fdinfo, which list a lock under
  the descriptor whose open file description owns it.
- A filesystem without OFD locks (ENOLCK, EINVAL, EOPNOTSUPP) leaves the image
  unlocked: `lock_image` returns False and the caller says so.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from rinuxfs.errors import KernelError

F_OFD_GETLK, F_OFD_SETLK = 36, 37  # include/uapi/asm-generic/fcntl.h; Python's fcntl does not name them
_FLOCK = struct.Struct("hhqqi4x")  # struct flock: l_type, l_whence, l_start, l_len (0: to the end), l_pid

LOCK_PERM_BASE, LOCK_SHARED_BASE = 100, 200  # RAW_LOCK_PERM_BASE, RAW_LOCK_SHARED_BASE
PERM_CONSISTENT_READ, PERM_WRITE = 0, 1  # BLK_PERM_* bit numbers
_UNSUPPORTED = (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP)


def _flock(fd: int, cmd: int, kind: int, start: int, length: int) -> int:
    """One fcntl on a byte range; returns the l_type that F_OFD_GETLK leaves (F_UNLCK: no conflict)."""
    result = fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, start, length, 0))
    return int(_FLOCK.unpack(result)[0])


def lock_image(fd: int, path: Path, write: bool) -> bool:
    """Take the image lock for a writer or a reader; raise KernelError(EAGAIN) naming the holder on conflict."""
    try:
        if write:
            try:
                _flock(fd, F_OFD_SETLK, fcntl.F_WRLCK, 0, 0)
            except BlockingIOError:
                raise _conflict(fd, path, 'Failed to get "write" lock') from None
            return True
        if _flock(fd, F_OFD_GETLK, fcntl.F_WRLCK, LOCK_PERM_BASE + PERM_WRITE, 1) != fcntl.F_UNLCK:
            raise _conflict(fd, path, 'Failed to get shared "write" lock')
        for byte in (LOCK_PERM_BASE + PERM_CONSISTENT_READ, LOCK_SHARED_BASE + PERM_WRITE):
            try:
                _flock(fd, F_OFD_SETLK, fcntl.F_RDLCK, byte, 1)
            except BlockingIOError:
                _flock(fd, F_OFD_SETLK, fcntl.F_UNLCK, 0, 0)  # release what this call took
                raise _conflict(fd, path, 'Failed to get shared "write" lock') from None
        return True
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return False
        raise KernelError(e.errno or errno.EIO, f"{path}: cannot lock the image: {e.strerror}") from None


def image_in_use(path: Path) -> str | None:
    """Why `path` may not be replaced now (a holder of any lock on it), or None; for mkdisk --force."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _flock(fd, F_OFD_GETLK, fcntl.F_WRLCK, 0, 0) == fcntl.F_UNLCK:
            return None
        return _describe_holder(os.fstat(fd))
    except OSError:
        return None
    finally:
        os.close(fd)


def _conflict(fd: int, path: Path, what: str) -> KernelError:
    return KernelError(errno.EAGAIN, f"{path}: {what}: the image is in use by {_describe_holder(os.fstat(fd))}")


def _describe_holder(st: os.stat_result) -> str:
    holder = find_lock_holder(st)
    if holder is None:
        return "another process (not one this user can see)"
    pid, kind = holder
    mode = "read-write" if kind == "WRITE" else "read-only"
    return f"pid {pid} ({_command_line(pid)}, {mode})"


def find_lock_holder(st: os.stat_result) -> tuple[int, str] | None:
    """(pid, "WRITE"|"READ") of a process holding a lock on the file `st` describes, from /proc/PID/fdinfo."""
    tag = f" {os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{name}/fdinfo/{fd}") as f:
                    info = f.read()
            except OSError:
                continue
            for line in info.splitlines():
                if line.startswith("lock:") and tag in line + " ":
                    return int(name), "WRITE" if " WRITE " in line else "READ"
    return None


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "gone"
    for i, arg in enumerate(args):  # "python -m rinuxfs mount …" or ".venv/bin/rinuxfs mount …": from rinuxfs on
        if Path(arg).name == "rinuxfs":
            return " ".join(["rinuxfs", *args[i + 1 :]])
    return " ".join(args) or "?"
