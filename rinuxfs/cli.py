"""rinuxfs mount | umount | mkdisk | inspect.

Errors are one line on stderr and a non-zero exit, never a traceback.
`mount` returns once the mount is live, like mount(8): it boots the kernel,
forks the daemon, and waits for the daemon to say the mount is up (or why
not). The daemon's pid is kept in a runtime directory so that `umount` can
wait until everything is flushed to the image.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from rinuxfs.errors import KernelError
from rinuxfs.printk import LogRecord
from rinuxfs.units import parse_size

log = logging.getLogger("rinuxfs")
_PRINTK_TO_LOGGING = [logging.CRITICAL] * 3 + [logging.ERROR, logging.WARNING, logging.INFO, logging.INFO,
                                               logging.DEBUG]


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 1."""


def runtime_dir() -> Path:
    if os.geteuid() == 0:
        base = Path("/run/rinuxfs")
    else:
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/rinuxfs-{os.getuid()}") / "rinuxfs"
    base.mkdir(parents=True, exist_ok=True)
    return base


def pid_file(mountpoint: Path) -> Path:
    key = hashlib.sha1(str(mountpoint).encode()).hexdigest()[:16]
    return runtime_dir() / f"{key}.pid"


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except KernelError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rinuxfs", description="A simulated Linux storage stack over a disk image.")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("mount", help="boot the simulated kernel over IMAGE and mount it at MOUNTPOINT")
    m.add_argument("image", type=Path)
    m.add_argument("mountpoint", type=Path)
    m.add_argument("--controller", choices=("nvme", "ahci"), default="nvme")
    m.add_argument("--mem", type=_size_arg, default=parse_size("256M"), help="simulated RAM (default 256M)")
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
    if not mountpoint.exists():
        raise UsageError(f"mount point {mountpoint} does not exist")
    if not mountpoint.is_dir():
        raise UsageError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise UsageError(f"mount point {mountpoint} is busy: something is already mounted there")
    return mountpoint.resolve()


def _echo_to_logging(record: LogRecord) -> None:
    log.log(_PRINTK_TO_LOGGING[record.level], "[%5d.%06d] %s", record.usec // 1_000_000, record.usec % 1_000_000,
            record.text)


def cmd_mount(args: argparse.Namespace) -> int:
    from rinuxfs.kernel import Kernel, KernelConfig

    mountpoint = _check_mountpoint(args.mountpoint)
    if not os.path.exists("/dev/fuse"):
        raise UsageError("/dev/fuse is missing: install fuse3 (scripts/setup does) and load the fuse module")
    # realpath, not Path.resolve(): on a symlink loop the latter raises RuntimeError (Python 3.11); the image
    # open then says "Too many levels of symbolic links" in one line.
    config = KernelConfig(image=Path(os.path.realpath(args.image)), controller=args.controller, mem=args.mem,
                          cpus=args.cpus, tmpfs_size=args.tmpfs_size, read_only=args.ro, force_gpt=args.force_gpt,
                          lba_size=args.lba_size)
    logging.basicConfig(level=args.log_level.upper(), format="rinuxfs: %(message)s")
    if args.foreground:
        kernel = Kernel(config, _echo_to_logging)
        return _serve(kernel, mountpoint, lambda: None)
    kernel = Kernel(config, _echo_to_logging)  # boot errors reach the user from here
    return _fork_daemon(kernel, mountpoint, args.log_level)


def _serve(kernel: object, mountpoint: Path, on_ready: object) -> int:
    from rinuxfs.daemon import serve

    try:
        serve(kernel, mountpoint, on_ready)  # type: ignore[arg-type]
    except RuntimeError as e:  # pyfuse3.init: the mount(2) itself failed
        raise UsageError(f"cannot mount on {mountpoint}: {e}") from None
    return 0


def _fork_daemon(kernel: object, mountpoint: Path, log_level: str) -> int:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read().decode(errors="replace").strip()
        if answer == "ready":
            return 0
        os.waitpid(pid, 0)
        raise UsageError(answer or "the daemon exited before the mount was ready")
    # The daemon: a session of its own, stdio away from the terminal, its pid on record.
    os.close(read_end)
    os.setsid()
    logfile = runtime_dir() / (pid_file(mountpoint).stem + ".log")
    devnull = os.open(os.devnull, os.O_RDWR)
    logfd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(devnull, 0)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    pidfile = pid_file(mountpoint)
    status = 0
    try:
        def ready() -> None:
            pidfile.write_text(f"{os.getpid()}\n")
            os.write(write_end, b"ready\n")
            os.close(write_end)

        _serve(kernel, mountpoint, ready)
    except UsageError as e:
        os.write(write_end, str(e).encode())
        status = 1
    except BaseException as e:  # noqa: BLE001 - report, never leave the parent waiting
        log.exception("daemon failed")
        try:
            os.write(write_end, f"daemon failed: {e!r}".encode())
        except OSError:
            pass
        status = 1
    finally:
        pidfile.unlink(missing_ok=True)
        if status == 0:
            logfile.unlink(missing_ok=True)  # kept only when the daemon failed: it says why
    os._exit(status)


# --- umount ------------------------------------------------------------------------------


def cmd_umount(mountpoint: Path) -> int:
    target = mountpoint.resolve() if mountpoint.exists() else mountpoint.absolute()
    pidfile = pid_file(target)
    daemon = int(pidfile.read_text()) if pidfile.exists() else None
    if not os.path.ismount(target) and not _is_dead_fuse_mount(target):
        raise UsageError(f"{mountpoint}: not mounted")
    result = subprocess.run(["fusermount3", "-u", str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "fusermount3 -u failed"
        if "busy" in why.lower():
            raise UsageError(f"{mountpoint}: target is busy (a process still uses it)")
        raise UsageError(why)
    if daemon is not None:
        _wait_for_exit(daemon, timeout=60.0)
    return 0


def _is_dead_fuse_mount(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


def process_running(pid: int) -> bool:
    """True while `pid` runs; a zombie awaiting its reaper (the daemon's parent has gone) has finished."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
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
