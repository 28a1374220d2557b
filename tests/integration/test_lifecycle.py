"""Mount, unmount and failure paths of the daemon: no stale mount, no leftover process, one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import RINUXFS, daemon_pid, is_mounted, mount, pid_alive, rinuxfs, wait_until


def _assert_clean_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "an error must say something"
    assert lines[-1].startswith("rinuxfs"), lines
    for word in words:
        assert word in result.stderr.lower(), result.stderr


def test_mount_then_umount_leaves_nothing(tmp_path: Path, blank_image: Path) -> None:
    m = mount(blank_image, tmp_path / "mnt")
    assert m.pid is not None and pid_alive(m.pid)
    assert (m.path / "proc" / "meminfo").read_text().startswith("MemTotal:")
    result = rinuxfs("umount", str(m.path))
    assert result.returncode == 0 and result.stderr == ""
    assert not is_mounted(m.path)
    assert not pid_alive(m.pid), "umount returns only once the daemon has finished"
    assert daemon_pid(m.path) is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(tmp_path: Path, blank_image: Path, signum: int) -> None:
    m = mount(blank_image, tmp_path / "mnt")
    assert m.pid is not None
    os.kill(m.pid, signum)
    assert wait_until(lambda: not is_mounted(m.path), 10)
    assert wait_until(lambda: not pid_alive(m.pid), 10)
    assert list(m.path.iterdir()) == [], "the mount point is an empty directory again"


def test_fusermount_unmount_ends_daemon(tmp_path: Path, blank_image: Path) -> None:
    m = mount(blank_image, tmp_path / "mnt")
    subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
    assert wait_until(lambda: m.pid is not None and not pid_alive(m.pid), 10)
    assert not is_mounted(m.path)


def test_foreground_mode_serves_until_sigterm(tmp_path: Path, blank_image: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen([*RINUXFS, "mount", "-f", str(blank_image), str(mnt)], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: is_mounted(mnt), 15), "foreground mount never came up"
        assert (mnt / "tmp").is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert not is_mounted(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)


def test_busy_mountpoint_is_refused(tmp_path: Path, blank_image: Path) -> None:
    m = mount(blank_image, tmp_path / "mnt")
    try:
        result = rinuxfs("mount", str(blank_image), str(m.path), check=False)
        _assert_clean_error(result, "busy")
        assert (m.path / "proc" / "version").read_text().startswith("Linux version"), "the first mount still works"
    finally:
        m.unmount()


def test_umount_while_in_use_says_busy_and_keeps_mount(tmp_path: Path, blank_image: Path) -> None:
    m = mount(blank_image, tmp_path / "mnt")
    try:
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
    finally:
        m.unmount()


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


@pytest.mark.parametrize("option,value", [("--mem", "12X"), ("--tmpfs-size", "lots"), ("--mem", "10K")])
def test_bad_sizes(tmp_path: Path, blank_image: Path, option: str, value: str) -> None:
    (tmp_path / "mnt").mkdir()
    result = rinuxfs("mount", str(blank_image), str(tmp_path / "mnt"), option, value, check=False)
    assert "Traceback" not in result.stderr
    assert result.returncode != 0 and value in result.stderr
    assert not is_mounted(tmp_path / "mnt")


def test_umount_of_something_not_mounted(tmp_path: Path) -> None:
    result = rinuxfs("umount", str(tmp_path), check=False)
    _assert_clean_error(result, "not mounted")
