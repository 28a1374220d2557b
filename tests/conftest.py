"""Fixtures: disk images and live rinuxfs mounts under temporary directories.

A mount fixture starts the real daemon (`python -m rinuxfs mount`), yields
the mount point, and always unmounts and checks that the daemon exited, so
no test leaves a mount or a process behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

RINUXFS = [sys.executable, "-m", "rinuxfs"]


def rinuxfs(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RINUXFS, *args], capture_output=True, text=True, check=check, timeout=timeout)


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def daemon_pid(mountpoint: Path) -> int | None:
    from rinuxfs.cli import pid_file

    p = pid_file(mountpoint.resolve())
    return int(p.read_text()) if p.exists() else None


def pid_alive(pid: int) -> bool:
    from rinuxfs.cli import process_running

    return process_running(pid)


def wait_until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Mounted:
    """A live rinuxfs mount: its path, the image under it, and the daemon's pid."""

    def __init__(self, path: Path, image: Path, pid: int | None) -> None:
        self.path = path
        self.image = image
        self.pid = pid

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    def unmount(self) -> None:
        if is_mounted(self.path):
            result = rinuxfs("umount", str(self.path), check=False)
            if result.returncode != 0 and is_mounted(self.path):
                subprocess.run(["fusermount3", "-uz", str(self.path)], check=False)
        if self.pid is not None:
            assert wait_until(lambda: not pid_alive(self.pid), 30), f"daemon {self.pid} still running"


def mount(image: Path, mountpoint: Path, *extra: str) -> Mounted:
    mountpoint.mkdir(parents=True, exist_ok=True)
    rinuxfs("mount", str(image), str(mountpoint), *extra)
    assert is_mounted(mountpoint.resolve())
    return Mounted(mountpoint.resolve(), image, daemon_pid(mountpoint))


def make_image(path: Path, size: int = 64 << 20) -> Path:
    """A sparse, blank disk image."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@contextlib.contextmanager
def mounted(base: Path, *extra: str) -> Iterator[Mounted]:
    """A fresh mount of a blank image under `base`, unmounted on the way out whatever happens."""
    m = mount(make_image(base / "disk.img"), base / "mnt", *extra)
    try:
        yield m
    finally:
        m.unmount()


def module_mount(*extra: str) -> Any:
    """A module-scoped `mnt` fixture: one mount shared by a module's tests, each in a directory of its own."""

    @pytest.fixture(scope="module", name="mnt")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
        with mounted(tmp_path_factory.mktemp("mod"), *extra) as m:
            yield m

    return fixture


@pytest.fixture
def d(mnt: Mounted, request: pytest.FixtureRequest) -> Path:
    """A directory of the test's own in the mount's /tmp."""
    path = mnt.path / "tmp" / request.node.name[:200]
    path.mkdir()
    return path


@pytest.fixture
def umask_022() -> Iterator[None]:
    """For modules that assert modes: the usual umask, whatever the runner's is."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def blank_image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "disk.img")


@pytest.fixture
def mnt(tmp_path: Path, blank_image: Path) -> Iterator[Mounted]:
    """A fresh rinuxfs mount of a blank 64 MiB image with default options."""
    m = mount(blank_image, tmp_path / "mnt")
    try:
        yield m
    finally:
        m.unmount()


@pytest.fixture(scope="module")
def shared_mnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    """One mount shared by a module's read-only tests (views, formats, tools)."""
    with mounted(tmp_path_factory.mktemp("shared"), "--mem", "512M", "--cpus", "4") as m:
        yield m
