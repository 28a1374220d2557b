"""Running unmodified tools against a rinuxfs mount, and reading what they print.

free, vmstat, uptime, top and ps hard-code /proc, so they run in a private
mount namespace (`unshare -m`) where the mount's proc files are bind-mounted
over the host's (procfs-sysfs.md §2.3); the binds vanish with the namespace
and the host's /proc is never touched. lscpu and findmnt take the mount's
paths directly.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

# The files free, vmstat, uptime and top read (procfs-sysfs.md §4).
PROC_FILES = ("meminfo", "stat", "vmstat", "uptime", "loadavg", "cpuinfo")


def in_namespace(
    mnt: Path, command: str, files: tuple[str, ...] = PROC_FILES, whole_proc: bool = False, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run a shell command with the mount's /proc files (or its whole /proc) bound over the host's."""
    script = ["set -e"]
    if whole_proc:
        script.append(f"mount --bind {shlex.quote(str(mnt / 'proc'))} /proc")
    else:
        script += [f"mount --bind {shlex.quote(str(mnt / 'proc' / f))} /proc/{f}" for f in files]
    script.append(command)
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def namespace_popen(mnt: Path, command: str, files: tuple[str, ...] = PROC_FILES) -> subprocess.Popen[str]:
    script = ["set -e"]
    script += [f"mount --bind {shlex.quote(str(mnt / 'proc' / f))} /proc/{f}" for f in files]
    script.append(f"exec {command}")
    return subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> str:
    """A tool run that exited 0 and printed nothing on stderr; returns its stdout."""
    assert result.returncode == 0, f"rc {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stderr == "", result.stderr
    return result.stdout


def meminfo(mnt: Path) -> dict[str, int]:
    """/proc/meminfo of the mount, in kB (HugePages_* in pages)."""
    values = {}
    for line in (mnt / "proc" / "meminfo").read_text().splitlines():
        key, rest = line.split(":", 1)
        values[key] = int(rest.split()[0])
    return values


def vmstat(mnt: Path) -> dict[str, int]:
    """/proc/vmstat of the mount: each counter by name."""
    return {k: int(v) for k, v in (line.split() for line in (mnt / "proc" / "vmstat").read_text().splitlines())}


def free_rows(text: str) -> list[dict[str, int]]:
    """Every `Mem:` row `free` printed, as total/used/free/shared/buff_cache/available."""
    names = ("total", "used", "free", "shared", "buff_cache", "available")
    rows = []
    for line in text.splitlines():
        if line.startswith("Mem:"):
            rows.append(dict(zip(names, map(int, line.split()[1:]), strict=True)))
    return rows


def read_proc(mnt: Path, name: str) -> str:
    return (mnt / "proc" / name).read_text()
