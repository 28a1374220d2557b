"""Fixtures: disk images and live rinuxfs mounts under temporary directories.

A mount fixture starts the real daemon (`python -m rinuxfs mount`), yields
the mount point, and always unmounts and checks that the daemon exited, so
no test leaves a mount or a process behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

RINUXFS = [sys.executable, "-m", "rinuxfs"]


@pytest.fixture(scope="session", autouse=True)
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The daemons' pid and log files go to a directory of this session's (inherited by every subprocess).

    At the end it must hold no pid file: a daemon still running is one a test leaked; it is
    killed and its mount removed, and the session reports it.
    """
    path = tmp_path_factory.mktemp("run")
    os.environ["RINUXFS_RUNTIME_DIR"] = str(path)
    yield path
    from rinuxfs.runtime import live_daemons

    leaked = live_daemons()
    for record in leaked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        subprocess.run(["fusermount3", "-uz", record.mountpoint], check=False, capture_output=True)
    assert not leaked, f"daemons still running at the end of the session: {leaked}"


def rinuxfs(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RINUXFS, *args], capture_output=True, text=True, check=check, timeout=timeout)


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def daemon_pid(mountpoint: Path) -> int | None:
    from rinuxfs.runtime import daemon_of

    record = daemon_of(Path(os.path.realpath(mountpoint)))
    return record.pid if record else None


def pid_alive(pid: int) -> bool:
    from rinuxfs.runtime import process_running

    return process_running(pid)


def rss_kb(pid: int) -> int:
    """The resident set of a host process (VmRSS), in kB."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match
    return int(match.group(1))


def wait_until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Mounted:
    """A live rinuxfs mount: its path, the image under it, and the daemon's pid.

    Also a context manager that unmounts on the way out. `unmount()` always leaves nothing
    behind: `rinuxfs umount`, then a lazy unmount if that failed, then SIGKILL for a daemon
    that will not exit; it says so (AssertionError) only after everything is cleaned up.
    """

    def __init__(self, path: Path, image: Path, pid: int | None) -> None:
        self.path = path
        self.image = image
        self.pid = pid

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    def __enter__(self) -> Mounted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()

    def unmount(self) -> None:
        problems = []
        if is_mounted(self.path):
            result = rinuxfs("umount", str(self.path), check=False)
            if result.returncode != 0 and is_mounted(self.path):
                problems.append(f"rinuxfs umount failed: {result.stderr.strip()}")
                subprocess.run(["fusermount3", "-uz", str(self.path)], check=False, capture_output=True)
        if self.pid is not None and not wait_until(lambda: not pid_alive(self.pid), 30):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(self.pid), 10)
            problems.append(f"daemon {self.pid} did not exit after unmount: killed")
        if is_mounted(self.path):  # the SIGKILL left a dead mount
            subprocess.run(["fusermount3", "-uz", str(self.path)], check=False, capture_output=True)
        assert not problems, "; ".join(problems)


def mount(image: Path, mountpoint: Path, *extra: str) -> Mounted:
    """`rinuxfs mount`; on failure whatever came up is cleaned away before CalledProcessError is raised."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = rinuxfs("mount", str(image), str(mountpoint), *extra, check=False)
    m = Mounted(mountpoint.resolve(), image, daemon_pid(mountpoint))
    if result.returncode != 0 or not is_mounted(m.path):
        with contextlib.suppress(AssertionError):
            m.unmount()
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout,
                                            result.stderr or "mount returned 0 but nothing is mounted")
    return m


def make_image(path: Path, size: int = 64 << 20) -> Path:
    """A sparse, blank disk image."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def mounted(base: Path, *extra: str) -> Mounted:
    """A fresh mount of a blank image under `base`; use it in a `with`, which unmounts whatever happens."""
    return mount(make_image(base / "disk.img"), base / "mnt", *extra)


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
    with mount(blank_image, tmp_path / "mnt") as m:
        yield m


@pytest.fixture(scope="module")
def shared_mnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    """One mount shared by a module's read-only tests (views, formats, tools)."""
    with mounted(tmp_path_factory.mktemp("shared"), "--mem", "512M", "--cpus", "4") as m:
        yield m
