"""procps (free, vmstat, uptime, top, ps) reading the simulated machine through bind mounts over /proc.

The mount has --mem 512M --cpus 4 (the shared_mnt fixture), sizes no host of
ours has, so a value that matches them came from the simulated machine.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path

from tests.compat.compat_helpers import (
    assert_clean,
    free_rows,
    in_namespace,
    meminfo,
    namespace_popen,
    read_proc,
)
from tests.conftest import Mounted

MIB = 1 << 20
SIM_MEM_KB = 512 * 1024


def _write_file(path: Path, size: int) -> None:
    chunk = os.urandom(MIB)
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def _boot_memory_line(mnt: Path) -> tuple[int, int]:
    """The kB figures of the boot log's `Memory: 480804K/523896K available` line."""
    match = re.search(r"Memory: (\d+)K/(\d+)K available", read_proc(mnt, "kmsg"))
    assert match, "the boot log has no Memory: line"
    return int(match.group(1)), int(match.group(2))


def test_free_total_is_the_simulated_ram(shared_mnt: Mounted) -> None:
    out = assert_clean(in_namespace(shared_mnt.path, "free -k"))
    info = meminfo(shared_mnt.path)
    (row,) = free_rows(out)
    available, physical = _boot_memory_line(shared_mnt.path)
    assert physical == SIM_MEM_KB - 4 - (0x100000 - 0x9F000) // 1024  # present: RAM but PFN 0 and 640K-1M
    assert row["total"] == info["MemTotal"] == available
    assert 0.9 * SIM_MEM_KB < row["total"] <= SIM_MEM_KB
    assert row["free"] == info["MemFree"]
    assert row["available"] == info["MemAvailable"]
    assert row["used"] == info["MemTotal"] - info["MemAvailable"]
    assert re.search(r"^Swap:\s+0\s+0\s+0$", out, re.M), out


def test_free_sees_a_16mib_file_come_and_go(shared_mnt: Mounted) -> None:
    before = free_rows(assert_clean(in_namespace(shared_mnt.path, "free -k")))[0]
    big = shared_mnt.path / "tmp" / "free-16m"
    try:
        _write_file(big, 16 * MIB)
        during = free_rows(assert_clean(in_namespace(shared_mnt.path, "free -k")))[0]
    finally:
        big.unlink(missing_ok=True)
    after = free_rows(assert_clean(in_namespace(shared_mnt.path, "free -k")))[0]
    # tmpfs data is shmem: counted in shared and buff/cache, and not available (it cannot be dropped without swap).
    assert during["shared"] - before["shared"] == 16384
    assert 16384 <= during["buff_cache"] - before["buff_cache"] < 16384 + 1024
    assert 16384 <= during["used"] - before["used"] < 16384 + 1024
    assert 16384 <= before["free"] - during["free"] < 16384 + 1024
    assert during["total"] == before["total"]
    assert after["shared"] == before["shared"]
    assert abs(after["free"] - before["free"]) < 1024


def test_free_refreshes_on_a_kept_open_fd(shared_mnt: Mounted) -> None:
    """free -s re-reads /proc/meminfo with lseek(0) + read on one fd: each sample must be fresh."""
    proc = namespace_popen(shared_mnt.path, "stdbuf -oL free -k -s 1 -c 3")
    big = shared_mnt.path / "tmp" / "free-s-16m"
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = ""
        while not first.startswith("Mem:"):
            first = proc.stdout.readline()
            assert first, f"free ended early: {proc.stderr.read()}"
        _write_file(big, 16 * MIB)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        big.unlink(missing_ok=True)
    assert proc.returncode == 0 and err == "", err
    rows = free_rows(first + rest)
    assert len(rows) == 3
    assert rows[-1]["shared"] - rows[0]["shared"] == 16384
    assert rows[0]["free"] - rows[-1]["free"] >= 16384


def test_vmstat_shows_the_simulated_memory_and_cpus(shared_mnt: Mounted) -> None:
    out = assert_clean(in_namespace(shared_mnt.path, "vmstat"))
    info = meminfo(shared_mnt.path)
    header, data = out.splitlines()[1:3]
    row = dict(zip(header.split(), map(int, data.split()), strict=True))
    assert row["free"] == info["MemFree"]
    assert row["buff"] == info["Buffers"]
    assert row["cache"] == info["Cached"] + info["SReclaimable"]
    assert row["swpd"] == 0
    for column in ("us", "sy", "id", "wa", "st"):
        assert 0 <= row[column] <= 100, (column, out)
    assert 98 <= row["us"] + row["sy"] + row["id"] + row["wa"] + row["st"] <= 102
    assert row["r"] >= 1


def test_vmstat_statistics(shared_mnt: Mounted) -> None:
    out = assert_clean(in_namespace(shared_mnt.path, "vmstat -s"))
    info = meminfo(shared_mnt.path)
    stats = {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s*(\d+) (?:K )?(.+)$", out, re.M)}
    assert stats["total memory"] == info["MemTotal"]
    assert stats["free memory"] == info["MemFree"]
    btime = int(re.search(r"^btime (\d+)$", read_proc(shared_mnt.path, "stat"), re.M).group(1))  # type: ignore[union-attr]
    assert stats["boot time"] == btime


def test_uptime_is_the_simulated_boot(shared_mnt: Mounted) -> None:
    loads_before = read_proc(shared_mnt.path, "loadavg").split()[:3]
    out = assert_clean(in_namespace(shared_mnt.path, "uptime"))
    loads_after = read_proc(shared_mnt.path, "loadavg").split()[:3]
    match = re.search(r" up +(.+?), .* load average: ([\d.]+), ([\d.]+), ([\d.]+)$", out.strip())
    assert match, out
    # The fixture booted the machine moments ago: a host that has been up for hours would say so.
    assert re.fullmatch(r"\d+ min", match.group(1)), out
    assert int(match.group(1).split()[0]) < 10
    assert list(match.groups()[1:]) in (loads_before, loads_after)

    since = assert_clean(in_namespace(shared_mnt.path, "uptime -s")).strip()
    booted = datetime.strptime(since, "%Y-%m-%d %H:%M:%S").timestamp()
    sim_boot = time.time() - float(read_proc(shared_mnt.path, "uptime").split()[0])
    assert abs(booted - sim_boot) <= 2


def test_uptime_reflects_the_load_average_file(shared_mnt: Mounted) -> None:
    """uptime's numbers are /proc/loadavg's, whatever they are: fake a distinctive file to prove the path."""
    fake = shared_mnt.path / "tmp" / "loadavg"
    fake.write_text("3.14 2.72 1.41 2/99 1234\n")
    try:
        out = assert_clean(in_namespace(shared_mnt.path, f"mount --bind {fake} /proc/loadavg; uptime"))
    finally:
        fake.unlink()
    assert out.strip().endswith("load average: 3.14, 2.72, 1.41"), out


def test_top_header_is_the_simulated_machine(shared_mnt: Mounted) -> None:
    out = assert_clean(in_namespace(shared_mnt.path, "top -bn1 -1 -w 512"))
    info = meminfo(shared_mnt.path)
    mem = re.search(r"^MiB Mem :\s+([\d.]+) total,\s+([\d.]+) free", out, re.M)
    assert mem, out
    assert float(mem.group(1)) == round(info["MemTotal"] / 1024, 1)
    assert abs(float(mem.group(2)) - info["MemFree"] / 1024) < 2
    assert re.search(r"MiB Swap:\s+0\.0 total", out), out
    cpus = re.findall(r"%Cpu(\d+)\s*:", out)
    assert sorted(map(int, cpus)) == [0, 1, 2, 3], out
    assert re.search(r"^top - .* up +\d+ min,", out, re.M), out


def test_top_summary_line_adds_up(shared_mnt: Mounted) -> None:
    out = assert_clean(in_namespace(shared_mnt.path, "top -bn1"))
    cpu = re.search(r"^%Cpu\(s\):(.*)$", out, re.M)
    assert cpu, out
    values = [float(v) for v in re.findall(r"([\d.]+) \w\w", cpu.group(1))]
    assert len(values) == 8 and 99.0 <= sum(values) <= 101.0, cpu.group(0)


def test_top_with_the_whole_proc_lists_simulated_tasks(shared_mnt: Mounted) -> None:
    out = assert_clean(in_namespace(shared_mnt.path, "top -bn1 -w 512", whole_proc=True))
    tasks = {}
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0].isdigit():
            tasks[int(fields[0])] = fields[-1]
    assert tasks.get(1) == "init" and tasks.get(2) == "kthreadd", out
    assert "kswapd0" in tasks.values()
    assert "top" in tasks.values()
    total = re.search(r"^Tasks:\s+(\d+) total", out, re.M)
    assert total and int(total.group(1)) == len(tasks), out
    total_mib = meminfo(shared_mnt.path)["MemTotal"] / 1024
    assert re.search(rf"^MiB Mem :\s+{total_mib:.1f} total", out, re.M), out


def test_ps_in_the_simulated_proc(shared_mnt: Mounted) -> None:
    out = assert_clean(in_namespace(shared_mnt.path, "ps -e -o pid=,stat=,comm=", whole_proc=True))
    rows = [line.split(None, 2) for line in out.splitlines()]
    by_pid = {int(pid): (state, comm) for pid, state, comm in rows}
    assert by_pid[1][1] == "init"
    assert by_pid[2][1] == "kthreadd"
    assert sum(1 for _, comm in by_pid.values() if comm.startswith("ksoftirqd/")) == 4
    mine = [(pid, state) for pid, (state, comm) in by_pid.items() if comm == "ps"]
    assert len(mine) == 1 and mine[0][0] > 2
    assert mine[0][1].startswith("R"), "ps sees itself running, as on Linux"


def test_ps_full_format(shared_mnt: Mounted) -> None:
    out = assert_clean(in_namespace(shared_mnt.path, "ps -ef", whole_proc=True))
    lines = out.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    init = next(line for line in lines[1:] if line.split()[1] == "1")
    assert init.split()[-1] == "/sbin/init"
    assert any(line.split()[-1] == "[kthreadd]" for line in lines[1:])


def test_no_request_failed_inside_the_daemon(shared_mnt: Mounted) -> None:
    """Runs last in the module: every tool above was served without a handler bug (logged as EIO)."""
    assert "BUG" not in read_proc(shared_mnt.path, "kmsg")
