"""Mount, unmount and failure paths of the daemon: no stale mount, no leftover process, one clear line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from rinuxfs.runtime import log_file, pid_file
from tests.conftest import RINUXFS, Mounted, daemon_pid, is_mounted, mount, pid_alive, rinuxfs, wait_until


def _assert_clean_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "an error must say something"
    assert lines[-1].startswith("rinuxfs"), lines
    for word in words:
        assert word in result.stderr.lower(), result.stderr


def test_mount_then_umount_leaves_nothing(tmp_path: Path, blank_image: Path, runtime_dir: Path) -> None:
    with mount(blank_image, tmp_path / "mnt") as m:
        assert m.pid is not None and pid_alive(m.pid)
        assert (runtime_dir / f"{pid_file(m.path).stem}.pid").exists()
        assert (m.path / "proc" / "meminfo").read_text().startswith("MemTotal:")
        result = rinuxfs("umount", str(m.path))
        assert result.returncode == 0 and result.stderr == ""
        assert not is_mounted(m.path)
        assert not pid_alive(m.pid), "umount returns only once the daemon has finished"
        assert daemon_pid(m.path) is None
        assert not log_file(m.path).exists(), "a daemon that ended well leaves no log"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_unmounts_cleanly(tmp_path: Path, blank_image: Path, signum: int) -> None:
    with mount(blank_image, tmp_path / "mnt") as m:
        assert m.pid is not None
        fd = os.open(m / "dev/nvme0n1", os.O_WRONLY)  # open: its dirty page is the unmount's to write back
        try:
            os.write(fd, b"signalled")
            os.kill(m.pid, signum)
            assert wait_until(lambda: not is_mounted(m.path), 10)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)  # the connection is gone: the close itself may fail
        assert wait_until(lambda: not pid_alive(m.pid), 10)
        assert list(m.path.iterdir()) == [], "the mount point is an empty directory again"
        assert blank_image.read_bytes()[:9] == b"signalled"


def test_fusermount_unmount_ends_daemon(tmp_path: Path, blank_image: Path) -> None:
    with mount(blank_image, tmp_path / "mnt") as m:
        subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
        assert wait_until(lambda: m.pid is not None and not pid_alive(m.pid), 10)
        assert not is_mounted(m.path)


def foreground(image: Path, mnt: Path, *extra: str) -> subprocess.Popen[str]:
    mnt.mkdir(exist_ok=True)
    return subprocess.Popen([*RINUXFS, "mount", "-f", str(image), str(mnt), *extra], stderr=subprocess.PIPE,
                            text=True)


def stop_foreground(proc: subprocess.Popen[str], mnt: Path) -> str:
    """SIGTERM, then SIGKILL if it will not go; the dead mount removed; returns what it wrote to stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
    return err


def test_foreground_mode_serves_until_sigterm(tmp_path: Path, blank_image: Path) -> None:
    mnt = tmp_path / "mnt"
    proc = foreground(blank_image, mnt)
    try:
        assert wait_until(lambda: is_mounted(mnt), 15), "foreground mount never came up"
        assert (mnt / "tmp").is_dir()
    finally:
        stop_foreground(proc, mnt)
    assert proc.returncode == 0
    assert not is_mounted(mnt)


@pytest.mark.parametrize("level,shown", [("info", True), ("warning", False)])
def test_log_level_sets_what_the_daemon_prints(tmp_path: Path, blank_image: Path, level: str, shown: bool) -> None:
    mnt = tmp_path / "mnt"
    proc = foreground(blank_image, mnt, "--log-level", level)
    try:
        assert wait_until(lambda: is_mounted(mnt), 15)
        assert "Run /sbin/init as init process" in (mnt / "proc/kmsg").read_text(), "the kernel log has it anyway"
    finally:
        err = stop_foreground(proc, mnt)
    assert ("rinuxfs: [    0." in err and "Run /sbin/init as init process" in err) == shown, err
    assert ("SIGTERM received, unmounting" in err) == shown


def test_busy_mountpoint_is_refused(tmp_path: Path, blank_image: Path) -> None:
    with mount(blank_image, tmp_path / "mnt") as m:
        result = rinuxfs("mount", str(blank_image), str(m.path), check=False)
        _assert_clean_error(result, "busy")
        assert (m.path / "proc" / "version").read_text().startswith("Linux version"), "the first mount still works"


def test_umount_while_in_use_says_busy_and_keeps_mount(tmp_path: Path, blank_image: Path) -> None:
    with mount(blank_image, tmp_path / "mnt") as m:
        holder = subprocess.Popen(["sleep", "30"], cwd=m.path)
        try:
            result = rinuxfs("umount", str(m.path), check=False)
            _assert_clean_error(result, "busy")
            assert is_mounted(m.path) and m.pid is not None and pid_alive(m.pid)
        finally:
            holder.kill()
            holder.wait()
        assert rinuxfs("umount", str(m.path)).returncode == 0
        assert not is_mounted(m.path)


def test_a_failed_daemon_keeps_its_log_and_umount_says_so(tmp_path: Path, blank_image: Path) -> None:
    """The daemon's last writeback fails (every bio to the disk fails): exit 1, the log kept, umount reports it."""
    with mount(blank_image, tmp_path / "mnt") as m:
        # fail_make_request on the disk: the unmount's cache FLUSH (sync_blockdev) fails with EIO.
        (m / "sys/block/nvme0n1/make-it-fail").write_text("1\n")
        (m / "sys/kernel/debug/fail_make_request/probability").write_text("100\n")
        (m / "sys/kernel/debug/fail_make_request/times").write_text("-1\n")
        result = rinuxfs("umount", str(m.path), check=False)
        _assert_clean_error(result, "writeback", str(log_file(m.path)))
        assert not is_mounted(m.path) and m.pid is not None and not pid_alive(m.pid)
        log = log_file(m.path).read_text()
        assert "writeback at unmount failed" in log and "Traceback" not in log


def test_missing_image(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    result = rinuxfs("mount", str(tmp_path / "nope.img"), str(tmp_path / "mnt"), check=False)
    _assert_clean_error(result, "nope.img", "no such")
    assert not is_mounted(tmp_path / "mnt")


def test_image_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    result = rinuxfs("mount", str(tmp_path), str(tmp_path / "mnt"), check=False)
    _assert_clean_error(result, "directory")


def test_missing_mountpoint(tmp_path: Path, blank_image: Path) -> None:
    result = rinuxfs("mount", str(blank_image), str(tmp_path / "nowhere"), check=False)
    _assert_clean_error(result, "does not exist")


@pytest.mark.parametrize("option,value,words", [
    ("--mem", "12X", ["12x"]), ("--tmpfs-size", "lots", ["lots"]), ("--mem", "10K", ["10k"]),
    ("--mem", "8M", ["16m", "64t"]), ("--mem", "65T", ["16m", "64t"]), ("--mem", "20001K", ["multiple of 4k"]),
    ("--mem", "15M", ["between 16m and 64t"]), ("--mem", "lots", ["bad size"]),
    ("--numa", "0", ["--numa must be between 1 and 1024"]), ("--numa", "2000", ["not 2000"]),
    ("--mem", "64M --numa 4", ["at least 32m"]),
    ("--cpus", "0", ["between 1 and 64"]), ("--cpus", "65", ["between 1 and 64"]),
    ("--lba-size", "1024", ["1024"]), ("--controller", "scsi", ["scsi"]),
])
def test_bad_options_are_one_clear_line(tmp_path: Path, blank_image: Path, option: str, value: str,
                                        words: list[str]) -> None:
    (tmp_path / "mnt").mkdir()
    result = rinuxfs("mount", str(blank_image), str(tmp_path / "mnt"), option, *value.split(), check=False)
    if is_mounted(tmp_path / "mnt"):  # it should not have mounted; if it did, leave nothing behind
        Mounted(tmp_path / "mnt", blank_image, daemon_pid(tmp_path / "mnt")).unmount()
    assert "Traceback" not in result.stderr and result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    last = result.stderr.strip()
    assert last.startswith("rinuxfs mount"), result.stderr
    for word in words:
        assert word in last.lower(), result.stderr
    assert not is_mounted(tmp_path / "mnt")


def test_umount_of_something_not_mounted(tmp_path: Path) -> None:
    result = rinuxfs("umount", str(tmp_path), check=False)
    _assert_clean_error(result, "not mounted")
