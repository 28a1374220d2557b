"""util-linux (lscpu, findmnt) on the mount's paths, and CPU hotplug through sysfs.

lscpu takes --sysroot and findmnt takes -F, so neither needs a bind mount
(procfs-sysfs.md §2.3).
"""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.compat_helpers import assert_clean, read_proc
from tests.conftest import Mounted


def _lscpu(mnt: Path, *args: str) -> str:
    return assert_clean(subprocess.run(["lscpu", "--sysroot", str(mnt), *args], capture_output=True, text=True,
                                       timeout=30))


def _fields(text: str) -> dict[str, str]:
    rows = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        rows[key.strip()] = value.strip()
    return rows


def _cpu_dir(mnt: Path) -> Path:
    return mnt / "sys" / "devices" / "system" / "cpu"


def _write_attr(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@pytest.fixture
def cpu3_back_online(shared_mnt: Mounted) -> Iterator[Path]:
    """cpu3's online file; the CPU is put back online whatever the test did."""
    path = _cpu_dir(shared_mnt.path) / "cpu3" / "online"
    try:
        yield path
    finally:
        _write_attr(path, "1\n")
        assert (_cpu_dir(shared_mnt.path) / "online").read_text() == "0-3\n"


def test_lscpu_topology(shared_mnt: Mounted) -> None:
    rows = _fields(_lscpu(shared_mnt.path))
    assert rows["CPU(s)"] == "4"
    assert rows["On-line CPU(s) list"] == "0-3"
    assert "Off-line CPU(s) list" not in rows
    assert rows["Thread(s) per core"] == "1"
    assert rows["Core(s) per socket"] == "4"
    assert rows["Socket(s)"] == "1"
    assert rows["Vendor ID"] == "GenuineIntel"
    cpuinfo = _fields(read_proc(shared_mnt.path, "cpuinfo").split("\n\n")[0])
    assert rows["Model name"] == cpuinfo["model name"]
    assert rows["BogoMIPS"] == cpuinfo["bogomips"]
    assert rows["L1d cache"] == "128 KiB (4 instances)"
    assert rows["L1i cache"] == "128 KiB (4 instances)"
    assert rows["L2 cache"] == "4 MiB (4 instances)"
    assert rows["L3 cache"] == "16 MiB (1 instance)"


def test_lscpu_caches_and_extended_list(shared_mnt: Mounted) -> None:
    caches = _lscpu(shared_mnt.path, "-C").splitlines()
    assert caches[0].split()[:3] == ["NAME", "ONE-SIZE", "ALL-SIZE"]
    assert [line.split()[:3] for line in caches[1:]] == [
        ["L1d", "32K", "128K"], ["L1i", "32K", "128K"], ["L2", "1M", "4M"], ["L3", "16M", "16M"],
    ]
    table = _lscpu(shared_mnt.path, "-e=CPU,SOCKET,CORE,ONLINE").splitlines()
    assert [line.split() for line in table[1:]] == [[str(c), "0", str(c), "yes"] for c in range(4)]


def test_cpu_hotplug_reaches_lscpu_cpuinfo_and_stat(shared_mnt: Mounted, cpu3_back_online: Path) -> None:
    mnt = shared_mnt.path
    stat_before = read_proc(mnt, "stat")
    _write_attr(cpu3_back_online, "0\n")
    assert cpu3_back_online.read_text() == "0\n"
    assert (_cpu_dir(mnt) / "online").read_text() == "0-2\n"
    assert (_cpu_dir(mnt) / "offline").read_text() == "3\n"
    assert (_cpu_dir(mnt) / "possible").read_text() == "0-3\n"
    assert (_cpu_dir(mnt) / "present").read_text() == "0-3\n"

    rows = _fields(_lscpu(mnt))
    assert rows["CPU(s)"] == "4"
    assert rows["On-line CPU(s) list"] == "0-2"
    assert rows["Off-line CPU(s) list"] == "3"
    table = _lscpu(mnt, "-e=CPU,ONLINE").splitlines()
    assert [line.split() for line in table[1:]] == [["0", "yes"], ["1", "yes"], ["2", "yes"], ["3", "no"]]

    cpuinfo = read_proc(mnt, "cpuinfo")
    assert [line for line in cpuinfo.splitlines() if line.startswith("processor")] == [
        f"processor\t: {c}" for c in range(3)
    ]
    stat = read_proc(mnt, "stat")
    assert [line.split()[0] for line in stat.splitlines() if line.startswith("cpu")] == ["cpu", "cpu0", "cpu1", "cpu2"]
    # top and vmstat print differences of the cpu line: unplugging a CPU must not make it go backwards.
    total_before = sum(map(int, stat_before.splitlines()[0].split()[1:]))
    total_after = sum(map(int, stat.splitlines()[0].split()[1:]))
    assert total_after >= total_before
    assert "smpboot: CPU 3 is now offline" in read_proc(mnt, "kmsg")

    _write_attr(cpu3_back_online, "1\n")
    assert _fields(_lscpu(mnt))["On-line CPU(s) list"] == "0-3"
    assert read_proc(mnt, "cpuinfo").count("processor\t:") == 4


def test_cpu_online_rejects_a_non_boolean(shared_mnt: Mounted, cpu3_back_online: Path) -> None:
    with pytest.raises(OSError) as e:
        _write_attr(cpu3_back_online, "banana\n")
    assert e.value.errno == errno.EINVAL
    assert cpu3_back_online.read_text() == "1\n"
    _write_attr(cpu3_back_online, "n\n")  # kstrtobool reads y/n too
    assert cpu3_back_online.read_text() == "0\n"


@pytest.mark.parametrize("name", ["possible", "present", "online", "offline", "kernel_max", "cpu1/topology/core_id"])
def test_read_only_cpu_attributes_refuse_root(shared_mnt: Mounted, name: str) -> None:
    path = _cpu_dir(shared_mnt.path) / name
    before = path.read_text()
    with pytest.raises(OSError) as e:
        _write_attr(path, "0\n")
    assert e.value.errno == errno.EACCES
    assert path.read_text() == before


def test_boot_cpu_cannot_go_offline(shared_mnt: Mounted) -> None:
    cpu_dir = _cpu_dir(shared_mnt.path)
    assert not (cpu_dir / "cpu0" / "online").exists()
    assert all((cpu_dir / f"cpu{c}" / "online").exists() for c in (1, 2, 3))
    assert not (cpu_dir / "cpu4").exists()


def _findmnt(*args: str) -> str:
    return assert_clean(subprocess.run(["findmnt", *args], capture_output=True, text=True, timeout=30))


EXPECTED_MOUNTS = [["/", "tmpfs", "rootfs"], ["/proc", "proc", "proc"], ["/sys", "sysfs", "sysfs"],
                   ["/dev", "devtmpfs", "devtmpfs"], ["/sys/kernel/debug", "debugfs", "debugfs"]]


@pytest.mark.parametrize("table", ["self/mountinfo", "mounts", "1/mountinfo"])
def test_findmnt_parses_the_mount_tables(shared_mnt: Mounted, table: str) -> None:
    out = _findmnt("-F", str(shared_mnt.path / "proc" / table), "-r", "-n", "-o", "TARGET,FSTYPE,SOURCE")
    assert [line.split() for line in out.splitlines()] == EXPECTED_MOUNTS


def test_findmnt_builds_the_tree_from_mountinfo(shared_mnt: Mounted) -> None:
    out = _findmnt("-J", "-F", str(shared_mnt.path / "proc" / "self" / "mountinfo"),
                   "-o", "TARGET,FSTYPE,MAJ:MIN,ID,PARENT")
    (root,) = json.loads(out)["filesystems"]
    assert root["target"] == "/" and root["fstype"] == "tmpfs"
    children = root["children"]
    assert [c["target"] for c in children] == ["/proc", "/sys", "/dev"]
    assert all(c["parent"] == root["id"] for c in children)
    assert len({c["maj:min"] for c in [root, *children]}) == 4, "each filesystem has its own device number"
    options = _findmnt("-F", str(shared_mnt.path / "proc" / "mounts"), "-n", "-o", "OPTIONS", "/proc")
    assert options.strip().split(",")[:4] == ["rw", "nosuid", "nodev", "noexec"]


def test_no_request_failed_inside_the_daemon(shared_mnt: Mounted) -> None:
    """Runs last in the module: every tool above was served without a handler bug (logged as EIO)."""
    assert "BUG" not in read_proc(shared_mnt.path, "kmsg")
