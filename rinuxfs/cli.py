"""rinuxfs mount | umount | mkdisk | inspect.

Errors are one line on stderr and a non-zero exit, never a traceback.
`mount` returns once the mount is live, like mount(8): it boots the kernel
(which locks the image), forks the daemon (which inherits the lock), and waits
for the daemon to say the mount is up (or why not). The daemon's pid is kept in
the runtime directory (`runtime.py`) so that `umount` can wait until everything
is flushed to the image.

A mount whose daemon died (SIGKILL, a crash) is left behind by the host as a dead
FUSE mount: every access fails with ENOTCONN. `umount` removes it and says the
daemon had died; `mount` on such a mount point removes it first, with a message,
when it was a rinuxfs mount (another filesystem's dead mount is reported, not
touched).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rinuxfs.errors import KernelError
from rinuxfs.printk import LogRecord
from rinuxfs.runtime import (
    DaemonRecord,
    daemon_of,
    log_file,
    pid_file,
    process_running,
    sweep,
    write_pid_file,
)
from rinuxfs.units import format_size, parse_size

log = logging.getLogger("rinuxfs")
_PRINTK_TO_LOGGING = [logging.CRITICAL] * 3 + [logging.ERROR, logging.WARNING, logging.INFO, logging.INFO,
                                               logging.DEBUG]


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 1."""


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except KernelError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from None


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (what is wrong, and where help is), not a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rinuxfs", description="A simulated Linux storage stack over a disk image.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    m = sub.add_parser("mount", help="boot the simulated kernel over IMAGE and mount it at MOUNTPOINT")
    m.add_argument("image", type=Path)
    m.add_argument("mountpoint", type=Path)
    m.add_argument("--controller", choices=("nvme", "ahci"), default="nvme")
    m.add_argument("--mem", type=_size_arg, default=parse_size("256M"), help="simulated RAM (default 256M)")
    m.add_argument("--mem-prealloc", action="store_true",
                   help="fault all of the simulated RAM in on the host at mount (QEMU's -mem-prealloc)")
    m.add_argument("--numa", type=int, default=1, help="split RAM into N NUMA nodes (default 1)")
    m.add_argument("--swap", default="auto", metavar="auto|off|DEV[:PRIO][,...]",
                   help="swap partitions to activate at boot (default auto: every Linux swap partition)")
    m.add_argument("--tmpfs-huge", choices=("never", "always", "within_size", "advise"), default="never",
                   help="the rootfs tmpfs huge= option: 2 MiB pages for file data (default never)")
    m.add_argument("--oom", choices=("kill", "errno"), default="kill",
                   help="when memory runs out: the OOM killer (default), or ENOMEM for the request")
    m.add_argument("--cpus", type=int, default=2, help="simulated CPUs (default 2)")
    m.add_argument("--tmpfs-size", type=_size_arg, default=None, help="rootfs size limit (default: half of --mem)")
    m.add_argument("--lba-size", type=int, choices=(512, 4096), default=512,
                   help="logical block size of the NVMe namespace (default 512)")
    m.add_argument("--ro", action="store_true", help="open the image read-only")
    m.add_argument("--force-gpt", action="store_true", help="use the backup GPT if the primary is corrupt")
    m.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    m.add_argument("--log-level", default="warning",
                   choices=("debug", "info", "warning", "error", "critical"), help="daemon log level")

    u = sub.add_parser("umount", help="flush everything to the image and unmount")
    u.add_argument("mountpoint", type=Path)

    k = sub.add_parser("mkdisk", help="write a demo disk image (partition table, ESP, swap, Linux filesystem)")
    k.add_argument("image", type=Path)
    k.add_argument("--size", type=_size_arg, default=parse_size("1G"))
    k.add_argument("--label", choices=("gpt", "dos"), default="gpt")
    k.add_argument("--force", action="store_true", help="overwrite an existing image")

    i = sub.add_parser("inspect", help="print the partition table of IMAGE like sfdisk -l")
    i.add_argument("image", type=Path)
    i.add_argument("--json", action="store_true")
    i.add_argument("--force-gpt", action="store_true", help="use the backup GPT if the primary is corrupt")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "mount":
            return cmd_mount(args)
        if args.command == "umount":
            return cmd_umount(args.mountpoint)
        if args.command == "mkdisk":
            from rinuxfs.mkdisk import cmd_mkdisk

            return cmd_mkdisk(args)
        if args.command == "inspect":
            from rinuxfs.mkdisk import cmd_inspect

            return cmd_inspect(args)
    except (UsageError, KernelError) as e:
        print(f"rinuxfs {args.command}: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


# --- mount -------------------------------------------------------------------------------


def _check_mountpoint(mountpoint: Path) -> Path:
    path = Path(os.path.realpath(mountpoint))  # realpath, not resolve(): a dead mount fails stat with ENOTCONN
    try:
        os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"mount point {mountpoint} does not exist") from None
    except OSError as e:
        if e.errno not in (errno.ENOTCONN, errno.ECONNABORTED):
            raise UsageError(f"mount point {mountpoint}: {e.strerror}") from None
    if _is_dead_fuse_mount(path):
        _remove_dead_mount(path, mountpoint)
    if not path.is_dir():
        raise UsageError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(path):
        raise UsageError(f"mount point {mountpoint} is busy: something is already mounted there")
    if os.geteuid() != 0 and not os.access(mountpoint, os.W_OK):
        raise UsageError(f"mount point {mountpoint}: a user mounts only on a directory it may write to "
                         "(fusermount3's rule)")
    return path


def _remove_dead_mount(path: Path, shown: Path) -> None:
    """A mount whose daemon died: unmount it if it was rinuxfs's, else say how."""
    fstype = mounted_fstype(path)
    if fstype != "fuse.rinuxfs":
        raise UsageError(f"mount point {shown} holds a dead {fstype or 'FUSE'} mount whose daemon is gone: "
                         f"unmount it first (fusermount3 -u {path})")
    _unmount_dead(path, shown, daemon_of(path),
                  lambda who: f"rinuxfs mount: {shown}: the rinuxfs daemon{who} mounted there had died: "
                              "removed its dead mount")


def _unmount_dead(path: Path, shown: Path, record: DaemonRecord | None, said: Callable[[str], str]) -> None:
    """Unmount a mount whose daemon died, say so and drop the daemon's pid file.

    The line printed is `said` of " (pid N)", naming the daemon, or of "" when its pid is not on record.
    """
    _fusermount_u(path, shown)
    print(said(f" (pid {record.pid})" if record else ""), file=sys.stderr)
    pid_file(path).unlink(missing_ok=True)


def mounted_fstype(path: Path) -> str | None:
    """The type of the filesystem mounted last at `path`, from /proc/self/mountinfo (None: nothing is)."""
    from rinuxfs.daemon import mounts_at

    mounts = mounts_at(path)
    return mounts[-1][mounts[-1].index("-") + 1] if mounts else None


def _echo_to_logging(record: LogRecord) -> None:
    log.log(_PRINTK_TO_LOGGING[record.level], "[%5d.%06d] %s", record.usec // 1_000_000, record.usec % 1_000_000,
            record.text)


def host_mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _warn_if_larger_than_host(mem: int) -> None:
    """A machine larger than the host works (its RAM is mapped, not taken), but filling it would exhaust the host."""
    available = host_mem_available()
    if available is not None and mem > available:
        print(f"rinuxfs mount: warning: --mem {format_size(mem)} is more than the host's available memory "
              f"({available / (1 << 30):.1f}G): filling it would exhaust the host", file=sys.stderr)


def cmd_mount(args: argparse.Namespace) -> int:
    from rinuxfs.kernel import Kernel, KernelConfig

    mountpoint = _check_mountpoint(args.mountpoint)  # before the sweep: a dead mount's pid file names its daemon
    sweep()
    if not os.path.exists("/dev/fuse"):
        raise UsageError("/dev/fuse is missing: install fuse3 (scripts/setup does) and load the fuse module")
    if os.geteuid() != 0 and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        # fusermount3 opens /dev/fuse as the user: its mode is what lets users mount FUSE at all.
        raise UsageError("/dev/fuse is not open to users (udev makes it 0666; here it is "
                         f"{stat.S_IMODE(os.stat('/dev/fuse').st_mode):04o}): only root can mount")
    # realpath, not Path.resolve(): on a symlink loop the latter raises RuntimeError (Python 3.11); the image
    # open then says "Too many levels of symbolic links" in one line.
    image = Path(os.path.realpath(args.image))
    config = KernelConfig(image=image, controller=args.controller, mem=args.mem, cpus=args.cpus,
                          tmpfs_size=args.tmpfs_size, read_only=args.ro, force_gpt=args.force_gpt,
                          lba_size=args.lba_size, numa=args.numa, mem_prealloc=args.mem_prealloc,
                          swap=args.swap, oom=args.oom, tmpfs_huge=args.tmpfs_huge)
    logging.basicConfig(level=args.log_level.upper(), format="rinuxfs: %(message)s")
    kernel = Kernel(config, _echo_to_logging)  # boot errors, a locked image among them, reach the user from here
    if kernel.image is not None and kernel.image.write_protected:
        print(f"rinuxfs mount: WARNING: {args.image} is write-protected ({kernel.image.write_protected}), "
              "mounted read-only", file=sys.stderr)
    _warn_if_larger_than_host(args.mem)
    if args.foreground:
        return _serve(kernel, mountpoint, lambda: None)
    return _fork_daemon(kernel, mountpoint, image)


def _serve(kernel: object, mountpoint: Path, on_ready: object) -> int:
    from rinuxfs.daemon import DaemonError, serve

    try:
        serve(kernel, mountpoint, on_ready)  # type: ignore[arg-type]
    except RuntimeError as e:  # pyfuse3.init: the mount(2) itself failed
        raise UsageError(f"cannot mount on {mountpoint}: {e}") from None
    except DaemonError as e:
        raise UsageError(str(e)) from None
    return 0


def _fork_daemon(kernel: object, mountpoint: Path, image: Path) -> int:
    logfile = log_file(mountpoint)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read().decode(errors="replace").strip()
        if answer == "ready":
            return 0
        os.waitpid(pid, 0)
        if logfile.exists() and logfile.stat().st_size:
            answer += f" (the daemon's log: {logfile})"
        raise UsageError(answer or "the daemon exited before the mount was ready")
    # The daemon: a session of its own, its pid on record, stdio away from the terminal. It holds the
    # image lock its parent took: an OFD lock belongs to the open file description, which fork shares.
    os.close(read_end)
    os.setsid()
    pidfile = write_pid_file(mountpoint, image)
    devnull = os.open(os.devnull, os.O_RDWR)
    logfd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(devnull, 0)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    status = 0
    try:
        def ready() -> None:
            nonlocal write_end
            os.write(write_end, b"ready\n")
            os.close(write_end)
            write_end = -1  # closed: the next file opened may get its number

        _serve(kernel, mountpoint, ready)
    except UsageError as e:
        log.error("%s", e)  # the log says why, and is kept
        _tell_parent(write_end, str(e))
        status = 1
    except BaseException as e:  # noqa: BLE001 - report, never leave the parent waiting
        log.exception("daemon failed")
        _tell_parent(write_end, f"daemon failed: {e!r}")
        status = 1
    finally:
        pidfile.unlink(missing_ok=True)
        if status == 0:
            logfile.unlink(missing_ok=True)  # kept only when the daemon failed: it says why
    os._exit(status)


def _tell_parent(pipe: int, text: str) -> None:
    """Answer a parent still waiting for "ready"; once it has that answer the pipe is closed (-1): nothing to do."""
    if pipe < 0:
        return
    try:  # the parent may be gone (EPIPE)
        os.write(pipe, text.encode())
    except OSError:
        pass


# --- umount ------------------------------------------------------------------------------


def cmd_umount(mountpoint: Path) -> int:
    target = Path(os.path.realpath(mountpoint))
    record = daemon_of(target)
    dead = _is_dead_fuse_mount(target)
    if not dead and not os.path.ismount(target):
        sweep()
        raise UsageError(f"{mountpoint}: not mounted")
    if dead:
        _unmount_dead(target, mountpoint, record,
                      lambda who: f"rinuxfs umount: {mountpoint}: the daemon{who} had died: removed its dead mount")
    else:
        _fusermount_u(target, mountpoint)
        if record is not None:
            _wait_for_exit(record.pid, timeout=60.0)
            logfile = log_file(target)
            if logfile.exists() and logfile.stat().st_size:  # the daemon keeps its log only when it failed
                raise UsageError(f"{mountpoint}: unmounted, but the daemon failed: {_last_line(logfile)} "
                                 f"(its log: {logfile})")
    sweep()
    return 0


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1].removeprefix("rinuxfs: ") if lines else ""


def _fusermount_u(target: Path, shown: Path) -> None:
    result = subprocess.run(["fusermount3", "-u", str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "fusermount3 -u failed"
        if "busy" in why.lower():
            raise UsageError(f"{shown}: target is busy (a process still uses it)")
        raise UsageError(why)


def _is_dead_fuse_mount(path: Path) -> bool:
    """A FUSE mount whose daemon is gone. statfs always asks the daemon; a stat may be answered from cache."""
    try:
        os.stat(path)
        if not os.path.ismount(path):
            return False
        os.statvfs(path)
    except OSError as e:  # ECONNABORTED: a request the host had in flight when the daemon died
        return e.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def _wait_for_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_running(pid):
            return
        time.sleep(0.01)
    raise UsageError(f"the daemon (pid {pid}) did not exit within {timeout:.0f}s after unmount")


if __name__ == "__main__":
    sys.exit(main())
