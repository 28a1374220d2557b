"""The proc and sys renderers on a booted kernel, without FUSE: formats, accounting and attribute parsing."""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rinuxfs.drivers.base import cpu
from rinuxfs.errors import KernelError
from rinuxfs.fs import procfs
from rinuxfs.kernel import Kernel, KernelConfig
from rinuxfs.lib.bitmap import cpu_list, cpu_mask
from rinuxfs.lib.kstrtox import parse_bool
from rinuxfs.mm.vmstat import VMSTAT_ITEMS, vmstat
from rinuxfs.sched import FIXED_1, Clock, LoadAverage

# shared/ sits beside the repository, in CI as here.
SAMPLES = Path(__file__).resolve().parents[1] / "samples"  # Linux 6.18 golden files
SHMEM = ("nr_shmem", "nr_file_pages", "nr_inactive_anon")


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    k = Kernel(KernelConfig(image=None, mem=512 << 20, cpus=4))
    try:
        yield k
    finally:
        k.close()


def _stat_rows(text: str) -> dict[str, list[int]]:
    return {line.split()[0]: [int(v) for v in line.split()[1:]] for line in text.splitlines()}


def test_meminfo_renderer_prints_the_sample_byte_for_byte() -> None:
    sample = (SAMPLES / "proc_meminfo.txt").read_text()
    values = {line.split(":")[0]: int(line.split(":")[1].split()[0]) for line in sample.splitlines()}
    assert procfs.render_meminfo(values) == sample


def test_meminfo_exceptions_to_the_common_layout() -> None:
    text = procfs.render_meminfo({"HardwareCorrupted": 0, "HugePages_Total": 12, "VmallocTotal": 34359738367})
    assert text == "HardwareCorrupted:     0 kB\nHugePages_Total:      12\nVmallocTotal:   34359738367 kB\n"


def test_meminfo_invariants_hold_from_boot_through_shmem(kernel: Kernel) -> None:
    mm = kernel.mm
    pfns: list[int] = []
    try:
        for step in range(4):
            info = mm.meminfo()
            assert info["MemFree"] <= info["MemAvailable"] <= info["MemTotal"], info
            assert info["Active"] == info["Active(anon)"] + info["Active(file)"]
            assert info["Inactive"] == info["Inactive(anon)"] + info["Inactive(file)"]
            assert info["Slab"] == info["SReclaimable"] + info["SUnreclaim"]
            assert info["SwapFree"] <= info["SwapTotal"]
            assert info["Shmem"] == len(pfns) * 4
            batch = mm.alloc_pages(1024 * (step + 1))
            mm.account(SHMEM, batch)
            pfns += batch
    finally:
        mm.account(SHMEM, pfns, -1)
        mm.free_pages(pfns)
    assert mm.meminfo()["Shmem"] == 0


def test_memtotal_is_what_the_boot_log_announced(kernel: Kernel) -> None:
    match = re.search(r"Memory: (\d+)K/(\d+)K available", kernel.log.render_kmsg())
    assert match
    # Linux counts present pages there: all of RAM but PFN 0 and the 640K-1M hole
    assert int(match.group(2)) == 512 * 1024 - 4 - (0x100000 - 0x9F000) // 1024
    assert kernel.mm.meminfo()["MemTotal"] == int(match.group(1))


def test_vmstat_prints_the_6_18_counters_in_order(kernel: Kernel) -> None:
    sample = [line.split()[0] for line in (SAMPLES / "proc_vmstat.txt").read_text().splitlines()]
    assert list(VMSTAT_ITEMS) == sample
    rows = dict(vmstat(kernel.mm))
    assert rows["nr_free_pages"] == kernel.mm.allocator.nr_free_pages
    assert all(v >= 0 for v in rows.values())


def test_stat_sums_every_possible_cpu_and_lists_the_online_ones(kernel: Kernel) -> None:
    time.sleep(0.03)
    rows = _stat_rows(procfs.render_stat(kernel))
    assert [k for k in rows if k.startswith("cpu")] == ["cpu", "cpu0", "cpu1", "cpu2", "cpu3"]
    assert all(len(v) == 10 and min(v) >= 0 for k, v in rows.items() if k.startswith("cpu"))

    cpu._store_online(kernel, 3)("0\n")
    frozen = _stat_rows(procfs.render_stat(kernel))
    cpu3 = kernel.cpu_accounting.per_cpu(kernel.cpus.online)[3]
    time.sleep(0.05)
    later = _stat_rows(procfs.render_stat(kernel))
    assert [k for k in later if k.startswith("cpu")] == ["cpu", "cpu0", "cpu1", "cpu2"]
    assert kernel.cpu_accounting.per_cpu(kernel.cpus.online)[3] == cpu3, "an offline CPU's counters stand still"
    assert later["cpu0"][3] >= frozen["cpu0"][3] + 4, "online CPUs keep counting idle time"
    # The total line still counts cpu3's frozen ticks, so it never goes backwards.
    assert sum(later["cpu"]) == sum(sum(later[f"cpu{c}"]) for c in range(3)) + sum(cpu3.values())
    for before, after in zip(rows["cpu"], later["cpu"], strict=True):
        assert after >= before

    cpu._store_online(kernel, 3)("1\n")
    time.sleep(0.03)
    back = _stat_rows(procfs.render_stat(kernel))
    assert back["cpu3"][3] > cpu3["idle"]


def test_uptime_idle_is_summed_over_cpus(kernel: Kernel) -> None:
    """Counters, not wall time: uptime's idle is the sum of the CPUs' idle ticks, read between two looks at them."""
    accounting = kernel.cpu_accounting
    before = sum(row["idle"] for row in accounting.per_cpu(kernel.cpus.online))
    text = procfs.render_uptime(kernel)
    after = sum(row["idle"] for row in accounting.per_cpu(kernel.cpus.online))
    assert re.fullmatch(r"\d+\.\d{2} \d+\.\d{2}\n", text)
    up, idle = map(float, text.split())
    assert before <= round(idle * 100) <= after
    assert idle <= up * 4 + 0.04, "never more idle time than 4 CPUs' worth of uptime"
    cpu._store_online(kernel, 3)("0\n")
    frozen = accounting.per_cpu(kernel.cpus.online)[3]["idle"]
    _, idle2 = map(float, procfs.render_uptime(kernel).split())
    assert accounting.per_cpu(kernel.cpus.online)[3]["idle"] == frozen, "an offline CPU's idle stands still"
    assert idle2 * 100 >= after


def test_load_average_fixed_point() -> None:
    load = LoadAverage(Clock())
    assert load.render_fields() == ["0.00", "0.00", "0.00"]
    load._last_step = -1  # one LOAD_FREQ interval has passed with one task running
    load.sample(1)
    # calc_load(0, EXP_1, FIXED_1) = 164, which /proc/loadavg prints as 0.08 (the kernel's first tick after boot).
    assert load.avenrun == [164, 34, 11]
    assert load.render_fields() == ["0.08", "0.02", "0.01"]  # each rounded up by FIXED_1/200
    load.avenrun = [FIXED_1, FIXED_1 // 2, 3 * FIXED_1 + 1]
    assert load.render_fields() == ["1.00", "0.50", "3.00"]


def test_loadavg_line(kernel: Kernel) -> None:
    match = re.fullmatch(r"\d+\.\d{2} \d+\.\d{2} \d+\.\d{2} (\d+)/(\d+) (\d+)\n", procfs.render_loadavg(kernel))
    assert match
    assert int(match.group(2)) == len(kernel.tasks.list()) == 7
    assert int(match.group(3)) == 7


def test_pid_stat_has_the_52_fields_of_do_task_stat(kernel: Kernel) -> None:
    task = kernel.tasks.get(2)
    assert task is not None
    fields = procfs.render_pid_stat(kernel, task).split()
    assert len(fields) == 52
    assert fields[:4] == ["2", "(kthreadd)", "I", "0"]
    assert fields[37] == "17", "exit_signal is field 38: SIGCHLD"
    assert int(fields[21]) == task.start_ticks


def test_hostname_store(kernel: Kernel) -> None:
    procfs._set_uts(kernel, "nodename", "box\n")
    assert kernel.utsname.nodename == "box"
    procfs._set_uts(kernel, "nodename", "x" * 64)
    assert kernel.utsname.nodename == "x" * 64
    # proc_dostring, as Linux 6.18 does it (checked on a real kernel in a UTS namespace): longer values
    # are cut at 64 bytes, the value ends at a newline or NUL, and any other byte is taken.
    procfs._set_uts(kernel, "nodename", "y" * 65)
    assert kernel.utsname.nodename == "y" * 64
    procfs._set_uts(kernel, "nodename", "ab\ncd")
    assert kernel.utsname.nodename == "ab"
    procfs._set_uts(kernel, "nodename", b"\xff\xfe\x00garbage".decode(errors="surrogateescape"))
    assert kernel.utsname.nodename.encode(errors="surrogateescape") == b"\xff\xfe"


def test_cpu_list_and_mask_formats() -> None:
    assert cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert cpu_list([3]) == "3"
    assert cpu_mask(range(4), 4) == "f"
    assert cpu_mask({0}, 8) == "01"
    assert cpu_mask(range(40), 40) == "ff,ffffffff"


@pytest.mark.parametrize("text", ["banana", "", "2", "10", "-1", "1 "])
def test_kstrtobool_rejects(text: str) -> None:
    with pytest.raises(KernelError) as e:
        parse_bool(text)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize(("text", "value"), [("1\n", True), ("0", False), ("Y\n", True), ("off", False), ("on", True)])
def test_kstrtobool_accepts(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_cpuinfo_lists_online_cpus_only(kernel: Kernel) -> None:
    kernel.set_cpu_online(2, False)
    text = procfs.render_cpuinfo(kernel)
    assert re.findall(r"^processor\t: (\d+)$", text, re.M) == ["0", "1", "3"]
    assert text.count("\n\n") == 3 and text.endswith("power management:\n\n")


def test_cpu_accounting_survives_the_daemon_fork() -> None:
    """The kernel boots in the parent and is served from a forked child, whose CPU clock restarts at zero."""
    spin_until = time.process_time() + 0.3
    while time.process_time() < spin_until:
        pass
    k = Kernel(KernelConfig(image=None, mem=64 << 20, cpus=2))
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(write_end, procfs.render_stat(k).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as f:
            text = f.read()
        os.waitpid(pid, 0)
    finally:
        k.close()
    rows = _stat_rows(text)
    assert all(v >= 0 for key in ("cpu", "cpu0", "cpu1") for v in rows[key]), text
    assert rows["cpu"][2] < 20, "the child has used next to no CPU since the fork"
