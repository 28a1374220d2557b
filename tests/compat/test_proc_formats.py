"""The byte-level shape of the proc and sys views, against golden files from a real 6.18 kernel.

Values differ from the samples (another machine); widths, padding, tabs,
key order and line structure must not. Also the file semantics tools depend
on: st_size 0 (proc) and 4096 (sys), and a fresh rendering at every read at
offset 0 of a kept-open fd.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from pathlib import Path

import pytest

from tests.compat.compat_helpers import meminfo, read_proc
from tests.conftest import Mounted

# shared/ sits beside the repository, in CI as here.
SAMPLES = Path(__file__).resolve().parents[1] / "samples"  # Linux 6.18 golden files


def _sample(name: str) -> str:
    return (SAMPLES / name).read_text()


# --- /proc/meminfo ----------------------------------------------------------------------------


def _meminfo_line(key: str, value: int) -> str:
    """fs/proc/meminfo.c: show_val_kb's `%-16s%8lu kB`, and the unit-less HugePages_* counts."""
    if key.startswith("HugePages_"):
        return f"{key + ':':<16}{value:8d}"
    if key == "HardwareCorrupted":
        return f"{key}: {value:5d} kB"
    return f"{key + ':':<16}{value:8d} kB"


def _meminfo_pairs(text: str) -> list[tuple[str, int]]:
    return [(line.split(":")[0], int(line.split(":")[1].split()[0])) for line in text.splitlines()]


def test_meminfo_layout_oracle_reproduces_the_sample() -> None:
    """The layout the views are checked with must itself print the real kernel's file byte for byte."""
    sample = _sample("proc_meminfo.txt")
    assert "".join(_meminfo_line(k, v) + "\n" for k, v in _meminfo_pairs(sample)) == sample


def test_meminfo_lines_have_the_kernel_layout(shared_mnt: Mounted) -> None:
    text = read_proc(shared_mnt.path, "meminfo")
    assert text.endswith(" kB\n")
    for line in text.splitlines():
        key, value = _meminfo_pairs(line)[0]
        assert line == _meminfo_line(key, value), repr(line)


def test_meminfo_has_every_key_of_6_18_in_order(shared_mnt: Mounted) -> None:
    ours = [k for k, _ in _meminfo_pairs(read_proc(shared_mnt.path, "meminfo"))]
    theirs = [k for k, _ in _meminfo_pairs(_sample("proc_meminfo.txt"))]
    assert len(ours) == len(set(ours))
    assert [k for k in ours if k in theirs] == theirs
    # Beyond the sample's keys, only config-dependent ones 6.18 prints (procfs-sysfs.md §5.5).
    assert set(ours) - set(theirs) <= {"HardwareCorrupted", "ShadowCallStack", "CmaTotal", "CmaFree", "Unaccepted"}


def test_meminfo_invariants(shared_mnt: Mounted) -> None:
    big = shared_mnt.path / "tmp" / "invariants"
    for size in (0, 8 << 20):
        if size:
            big.write_bytes(b"\xa5" * size)
        try:
            m = meminfo(shared_mnt.path)
            assert m["MemFree"] <= m["MemAvailable"] <= m["MemTotal"], m
            assert m["Active"] == m["Active(anon)"] + m["Active(file)"]
            assert m["Inactive"] == m["Inactive(anon)"] + m["Inactive(file)"]
            assert m["Slab"] == m["SReclaimable"] + m["SUnreclaim"]
            assert m["KReclaimable"] >= m["SReclaimable"]
            assert m["SwapFree"] <= m["SwapTotal"]
            assert m["Shmem"] <= m["Cached"]
            assert m["Dirty"] + m["Writeback"] <= m["Cached"] + m["Buffers"]
            assert m["MemFree"] + m["Cached"] + m["Buffers"] + m["Slab"] <= m["MemTotal"]
            assert m["DirectMap4k"] + m["DirectMap2M"] + m["DirectMap1G"] >= m["MemTotal"]
            assert m["Shmem"] >= size // 1024
        finally:
            big.unlink(missing_ok=True)


# --- /proc/stat, uptime, loadavg ---------------------------------------------------------------


def _stat_keys(text: str) -> list[str]:
    return [re.sub(r"^cpu\d+$", "cpuN", line.split()[0]) for line in text.splitlines()]


def test_stat_layout(shared_mnt: Mounted) -> None:
    text = read_proc(shared_mnt.path, "stat")
    lines = text.splitlines()
    assert re.fullmatch(r"cpu  \d+( \d+){9}", lines[0]), lines[0]
    assert [line.split()[0] for line in lines[1:5]] == ["cpu0", "cpu1", "cpu2", "cpu3"]
    for line in lines[1:5]:
        assert re.fullmatch(r"cpu\d+ \d+( \d+){9}", line), line
    assert list(dict.fromkeys(_stat_keys(text))) == list(dict.fromkeys(_stat_keys(_sample("proc_stat.txt"))))
    rows = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines}
    assert rows["intr"][0] == sum(rows["intr"][1:])
    assert len(rows["softirq"]) == 11 and rows["softirq"][0] == sum(rows["softirq"][1:])
    assert [sum(col) for col in zip(*(rows[f"cpu{c}"] for c in range(4)), strict=True)] == rows["cpu"]
    uptime = float(read_proc(shared_mnt.path, "uptime").split()[0])
    assert abs(rows["btime"][0] - (time.time() - uptime)) <= 2
    assert rows["processes"][0] >= 7  # init, kthreadd, 4 ksoftirqd, kswapd0
    assert rows["procs_running"][0] >= 1 and rows["procs_blocked"][0] == 0


def test_stat_ticks_follow_the_clock(shared_mnt: Mounted) -> None:
    """vmstat's first line divides counters by the cpu line's ticks: they must be about uptime x HZ x CPUs."""
    text = read_proc(shared_mnt.path, "stat")
    uptime = float(read_proc(shared_mnt.path, "uptime").split()[0])
    ticks = sum(map(int, text.splitlines()[0].split()[1:]))
    assert abs(ticks - uptime * 100 * 4) <= 4 * 100 * 0.5 + 8
    for line in text.splitlines()[:5]:
        assert all(int(v) >= 0 for v in line.split()[1:]), line


def test_uptime_layout(shared_mnt: Mounted) -> None:
    text = read_proc(shared_mnt.path, "uptime")
    assert re.fullmatch(r"\d+\.\d{2} \d+\.\d{2}\n", text), text
    assert re.fullmatch(r"\d+\.\d{2} \d+\.\d{2}\n", _sample("proc_uptime.txt"))
    up, idle = map(float, text.split())
    assert up < 600, "the fixture booted this machine moments ago"
    assert idle <= up * 4 + 0.05


def test_loadavg_layout(shared_mnt: Mounted) -> None:
    pattern = r"(\d+)\.(\d{2}) (\d+)\.(\d{2}) (\d+)\.(\d{2}) (\d+)/(\d+) (\d+)\n"
    assert re.fullmatch(pattern, _sample("proc_loadavg.txt"))
    match = re.fullmatch(pattern, read_proc(shared_mnt.path, "loadavg"))
    assert match, read_proc(shared_mnt.path, "loadavg")
    running, total, last_pid = (int(match.group(i)) for i in (7, 8, 9))
    assert 1 <= running <= total
    assert total >= 7 and last_pid >= 7


# --- /proc/cpuinfo ----------------------------------------------------------------------------


def _cpuinfo_keys(block: str) -> list[str]:
    return [line.split(":")[0] for line in block.splitlines()]


def test_cpuinfo_blocks(shared_mnt: Mounted) -> None:
    text = read_proc(shared_mnt.path, "cpuinfo")
    assert text.endswith("power management:\n\n")
    blocks = text[:-2].split("\n\n")
    assert len(blocks) == 4
    sample_keys = _cpuinfo_keys(_sample("proc_cpuinfo.txt").split("\n\n")[0])
    for cpu, block in enumerate(blocks):
        assert _cpuinfo_keys(block) == sample_keys
        assert block.startswith(f"processor\t: {cpu}\n")
        for line in block.splitlines()[:-1]:
            key = line.split(":")[0]
            # The kernel pads each key with tabs to column 16 and puts ": " after it (bugs may be empty).
            assert key.rstrip("\t") and len(key.expandtabs(8)) == 16, repr(line)
            assert line[len(key) :].startswith(":") and (line[len(key) :] in (":",) or line[len(key) + 1] == " ")
        assert block.splitlines()[-1] == "power management:"
    fields = dict(line.split("\t: ", 1) for line in blocks[0].splitlines() if "\t: " in line)
    fields = {k.rstrip("\t"): v for k, v in fields.items()}
    assert fields["siblings"] == fields["cpu cores"] == "4"
    assert re.fullmatch(r"\d+\.\d{3}", fields["cpu MHz"])
    assert re.fullmatch(r"\d+\.\d{2}", fields["bogomips"])


# --- /proc/vmstat -----------------------------------------------------------------------------


def test_vmstat_keys_in_kernel_order(shared_mnt: Mounted) -> None:
    text = read_proc(shared_mnt.path, "vmstat")
    assert all(re.fullmatch(r"[a-z0-9_]+ \d+", line) for line in text.splitlines())
    ours = [line.split()[0] for line in text.splitlines()]
    assert ours == [line.split()[0] for line in _sample("proc_vmstat.txt").splitlines()]
    values = {line.split()[0]: int(line.split()[1]) for line in text.splitlines()}
    assert values["nr_free_pages"] * 4 == meminfo(shared_mnt.path)["MemFree"]


# --- the small files -----------------------------------------------------------------------------


def test_version(shared_mnt: Mounted) -> None:
    pattern = r"Linux version (\S+) \(\S+@\S+\) \(.+\) #\d+ .+\n"
    assert re.fullmatch(pattern, _sample("proc_version.txt"))
    match = re.fullmatch(pattern, read_proc(shared_mnt.path, "version"))
    assert match, read_proc(shared_mnt.path, "version")
    assert match.group(1) + "\n" == read_proc(shared_mnt.path, "sys/kernel/osrelease")


def test_filesystems(shared_mnt: Mounted) -> None:
    lines = read_proc(shared_mnt.path, "filesystems").splitlines(keepends=True)
    assert all(re.fullmatch(r"(nodev)?\t[a-z0-9_.]+\n", line) for line in lines), lines
    for name in ("sysfs", "tmpfs", "devtmpfs", "proc"):
        assert f"nodev\t{name}\n" in lines


def test_swaps_header(shared_mnt: Mounted) -> None:
    assert read_proc(shared_mnt.path, "swaps") == _sample("proc_swaps_header_only.txt")
    assert _sample("proc_swaps.txt").startswith(_sample("proc_swaps_header_only.txt"))


def test_kmsg(shared_mnt: Mounted) -> None:
    path = shared_mnt.path / "proc" / "kmsg"
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    lines = path.read_text().splitlines()
    stamps = []
    for line in lines:
        match = re.fullmatch(r"<([0-7])>\[ *(\d+)\.(\d{6})\] (.*)", line)
        assert match, repr(line)
        stamps.append(int(match.group(2)) * 1_000_000 + int(match.group(3)))
    assert stamps == sorted(stamps)
    text = "\n".join(lines)
    assert re.search(r"\] Linux version \S+", text)
    assert re.search(r"\] Memory: \d+K/523896K available", text)  # 512M less PFN 0 and the 640K-1M hole
    assert "] smp: Brought up 1 node, 4 CPUs" in text


def test_sys_kernel_identity(shared_mnt: Mounted) -> None:
    assert read_proc(shared_mnt.path, "sys/kernel/ostype") == "Linux\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*\n", read_proc(shared_mnt.path, "sys/kernel/osrelease"))
    assert read_proc(shared_mnt.path, "sys/kernel/pid_max") == "4194304\n"


def test_hostname_is_writable(shared_mnt: Mounted) -> None:
    path = shared_mnt.path / "proc" / "sys" / "kernel" / "hostname"
    original = path.read_text()
    try:
        path.write_text("simulated-host\n")
        assert path.read_text() == "simulated-host\n"
        path.write_text("h" * 64)
        assert path.read_text() == "h" * 64 + "\n"
        path.write_text("i" * 65)  # proc_dostring cuts at 64 bytes, as Linux 6.18 does
        assert path.read_text() == "i" * 64 + "\n"
    finally:
        path.write_text(original)
    assert path.read_text() == original
    assert os.uname().nodename + "\n" != "simulated-host\n"


def test_ostype_is_read_only(shared_mnt: Mounted) -> None:
    with pytest.raises(OSError) as e:
        (shared_mnt.path / "proc" / "sys" / "kernel" / "ostype").write_text("BSD\n")
    assert e.value.errno == errno.EACCES


# --- file semantics ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["meminfo", "stat", "uptime", "loadavg", "cpuinfo", "vmstat", "version", "swaps",
                                  "sys/kernel/ostype", "self/stat", "self/status", "1/stat"])
def test_proc_files_report_size_zero(shared_mnt: Mounted, name: str) -> None:
    path = shared_mnt.path / "proc" / name
    assert path.stat().st_size == 0
    assert path.read_text(), "size 0 must not stop the content from being read"


def test_sys_attributes_report_4096(shared_mnt: Mounted) -> None:
    cpu = shared_mnt.path / "sys" / "devices" / "system" / "cpu"
    for path in (cpu / "possible", cpu / "online", cpu / "cpu1" / "online", cpu / "cpu0" / "topology" / "core_id",
                 cpu / "cpu0" / "cache" / "index0" / "size", shared_mnt.path / "sys" / "kernel" / "address_bits"):
        assert path.stat().st_size == 4096, path
        assert len(path.read_bytes()) < 4096


def test_kept_open_fd_rerenders_at_offset_zero(shared_mnt: Mounted) -> None:
    fd = os.open(shared_mnt.path / "proc" / "uptime", os.O_RDONLY)
    try:
        first = os.read(fd, 8191)
        assert os.read(fd, 8191) == b"", "EOF after the snapshot"
        time.sleep(0.1)
        os.lseek(fd, 0, os.SEEK_SET)
        second = os.read(fd, 8191)
    finally:
        os.close(fd)
    assert float(second.split()[0]) >= float(first.split()[0]) + 0.09


def test_small_reads_see_one_snapshot(shared_mnt: Mounted) -> None:
    """Reads past offset 0 come from the snapshot taken at offset 0, so a file read in pieces is whole."""
    fd = os.open(shared_mnt.path / "proc" / "meminfo", os.O_RDONLY)
    try:
        pieces = []
        while piece := os.read(fd, 37):
            pieces.append(piece)
            time.sleep(0.001)
    finally:
        os.close(fd)
    text = b"".join(pieces).decode()
    assert text == "".join(_meminfo_line(k, v) + "\n" for k, v in _meminfo_pairs(text))
    assert text.startswith("MemTotal:") and text.endswith("DirectMap1G:           0 kB\n")


def test_meminfo_fits_procps_single_read(shared_mnt: Mounted) -> None:
    """free and vmstat do one read() of at most 8191 bytes."""
    fd = os.open(shared_mnt.path / "proc" / "meminfo", os.O_RDONLY)
    try:
        data = os.read(fd, 8191)
        assert os.read(fd, 8191) == b""
    finally:
        os.close(fd)
    assert data.endswith(b" kB\n") and data.count(b"\n") >= 50


# --- /proc/self ---------------------------------------------------------------------------------


def test_self_is_the_caller(shared_mnt: Mounted) -> None:
    proc = shared_mnt.path / "proc"
    assert os.readlink(proc / "self") == str(os.getpid())
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    status = (proc / "self" / "status").read_text()
    assert status.startswith(f"Name:\t{comm}\n")
    assert f"\nPid:\t{os.getpid()}\n" in status
    fields = (proc / "self" / "stat").read_text().split()
    assert fields[0] == str(os.getpid()) and fields[1] == f"({comm})"
    assert len(fields) == 52


def test_self_follows_another_caller(shared_mnt: Mounted) -> None:
    import subprocess

    proc = shared_mnt.path / "proc"
    # exec keeps the shell's pid, so $$ is the pid of the reader.
    out = subprocess.run(["sh", "-c", f'echo $$; exec readlink "{proc}/self"'], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == out[1]
    status = subprocess.run(["sh", "-c", f'exec cat "{proc}/self/status"'], capture_output=True, text=True,
                            check=True).stdout
    assert status.startswith("Name:\tcat\n")
    assert "\nState:\tR (running)\n" in status
