"""Physical memory through a real mount: machines of any size, zones and buddy views that agree, the hugetlb pool,
the vm sysctls, and the host memory the daemon holds following what the simulated machine uses."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.compat_helpers import meminfo
from tests.conftest import Mounted, daemon_pid, make_image, mount, mounted, rinuxfs, rss_kb, wait_until

MIB = 1 << 20
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def buddyinfo(mnt: Path) -> dict[tuple[int, str], list[int]]:
    rows = {}
    for line in (mnt / "proc" / "buddyinfo").read_text().splitlines():
        match = re.fullmatch(r"Node (\d+), zone +(\w+) ((?: *\d+ ){11})", line)
        assert match, repr(line)
        rows[(int(match.group(1)), match.group(2))] = [int(x) for x in match.group(3).split()]
    return rows


def zoneinfo(mnt: Path) -> dict[tuple[int, str], dict[str, int]]:
    zones: dict[tuple[int, str], dict[str, int]] = {}
    current: dict[str, int] = {}
    for line in (mnt / "proc" / "zoneinfo").read_text().splitlines():
        head = re.fullmatch(r"Node (\d+), zone +(\w+)", line)
        if head:
            current = zones.setdefault((int(head.group(1)), head.group(2)), {})
            continue
        fields = line.split()
        if fields[:2] == ["pages", "free"]:
            current["pages_free"] = int(fields[2])
        elif len(fields) == 2 and fields[1].isdigit() and fields[0] not in current:
            current[fields[0]] = int(fields[1])
    return zones


def write_sysctl(path: Path, value: str) -> int:
    """Write like `echo value > path`; the errno of a refusal, 0 on success."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        return e.errno  # type: ignore[return-value]
    try:
        os.write(fd, value.encode())
    except OSError as e:
        return e.errno  # type: ignore[return-value]
    finally:
        os.close(fd)
    return 0


def assert_views_agree(mnt: Path) -> None:
    info = meminfo(mnt)
    zones = zoneinfo(mnt)
    buddy = buddyinfo(mnt)
    free_zones = sum(z.get("nr_free_pages", 0) for z in zones.values())
    free_buddy = sum(c << o for counts in buddy.values() for o, c in enumerate(counts))
    assert info["MemFree"] == free_zones * 4 == free_buddy * 4
    assert info["MemTotal"] == sum(z["managed"] for z in zones.values()) * 4
    for key, zone in zones.items():
        if zone["present"]:
            assert zone["nr_free_pages"] == sum(c << o for o, c in enumerate(buddy[key])), key
            assert zone["nr_free_pages_blocks"] == sum(c << o for o, c in enumerate(buddy[key]) if o >= 9)


@pytest.fixture(scope="module")
def numa_mnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    with mounted(tmp_path_factory.mktemp("numa"), "--mem", "1G", "--numa", "2", "--cpus", "4") as m:
        yield m


def test_views_agree_at_boot_and_while_files_come_and_go(numa_mnt: Mounted) -> None:
    assert_views_agree(numa_mnt.path)
    f = numa_mnt.path / "tmp" / "agree"
    with open(f, "wb") as out:
        for _ in range(24):
            out.write(os.urandom(MIB))
            assert_views_agree(numa_mnt.path)
    f.unlink()
    assert_views_agree(numa_mnt.path)


def test_node_files_sum_to_the_machine(numa_mnt: Mounted) -> None:
    base = numa_mnt.path / "sys" / "devices" / "system" / "node"
    assert (base / "possible").read_text() == "0-1\n"
    assert (base / "online").read_text() == "0-1\n"
    assert (base / "has_memory").read_text() == "0-1\n"
    assert (base / "node0" / "cpulist").read_text() == "0-1\n"
    assert (base / "node1" / "cpulist").read_text() == "2-3\n"
    assert (base / "node0" / "distance").read_text() == "10 20\n"
    assert (base / "node1" / "distance").read_text() == "20 10\n"
    assert os.readlink(numa_mnt.path / "sys" / "devices" / "system" / "cpu" / "cpu3" / "node1") == "../../node/node1"
    (numa_mnt.path / "tmp" / "sums").write_bytes(os.urandom(3 * MIB))
    total = meminfo(numa_mnt.path)
    nodes = []
    for n in (0, 1):
        values = {}
        for line in (base / f"node{n}" / "meminfo").read_text().splitlines():
            match = re.fullmatch(rf"Node {n} ([\w()]+): +(\d+)( kB)?", line)
            assert match, repr(line)
            values[match.group(1)] = int(match.group(2))
        nodes.append(values)
    for key in ("MemTotal", "MemFree", "Shmem", "Slab", "SReclaimable", "Active(file)", "Inactive(anon)",
                "HugePages_Total"):
        assert nodes[0][key] + nodes[1][key] == total[key], key
    assert nodes[0]["FilePages"] + nodes[1]["FilePages"] == total["Cached"] + total["Buffers"]
    (numa_mnt.path / "tmp" / "sums").unlink()


def test_numastat_reads_the_node_files(numa_mnt: Mounted) -> None:
    script = (f"mount --bind {numa_mnt.path}/sys/devices/system/node /sys/devices/system/node && "
              f"mount --bind {numa_mnt.path}/proc/meminfo /proc/meminfo && numastat -m && numastat")
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    total = meminfo(numa_mnt.path)
    row = re.search(r"^MemTotal\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out.stdout, re.M)
    assert row, out.stdout
    node0, node1, both = (float(x) for x in row.groups())
    assert abs(node0 + node1 - both) < 0.02 and abs(both - total["MemTotal"] / 1024) < 0.01
    hits = re.search(r"^numa_hit\s+(\d+)\s+(\d+)$", out.stdout, re.M)
    assert hits and int(hits.group(1)) > 0, out.stdout


def test_allocations_follow_the_cpu_of_the_caller(numa_mnt: Mounted) -> None:
    """A writer runs on a CPU chosen by its pid; its pages land on that CPU's node (numa_local grows there)."""
    base = numa_mnt.path / "sys" / "devices" / "system" / "node"

    def local(n: int) -> int:
        text = (base / f"node{n}" / "numastat").read_text()
        return int(re.search(r"^local_node (\d+)$", text, re.M).group(1))  # type: ignore[union-attr]

    before = [local(0), local(1)]
    for i in range(8):  # new processes, new pids: both nodes get some
        subprocess.run(["dd", "if=/dev/zero", f"of={numa_mnt.path}/tmp/cpu{i}", "bs=1M", "count=2", "status=none"],
                       check=True)
    after = [local(0), local(1)]
    assert after[0] > before[0] and after[1] > before[1]
    for i in range(8):
        (numa_mnt.path / "tmp" / f"cpu{i}").unlink()


def test_hugepages_grow_and_shrink_everywhere(numa_mnt: Mounted) -> None:
    mnt = numa_mnt.path
    before = meminfo(mnt)
    order9 = sum(c[9] * 512 + c[10] * 1024 for c in buddyinfo(mnt).values())
    assert write_sysctl(mnt / "proc" / "sys" / "vm" / "nr_hugepages", "6\n") == 0
    info = meminfo(mnt)
    assert (info["HugePages_Total"], info["HugePages_Free"], info["Hugetlb"]) == (6, 6, 6 * 2048)
    assert info["MemFree"] == before["MemFree"] - 6 * 2048
    assert sum(c[9] * 512 + c[10] * 1024 for c in buddyinfo(mnt).values()) == order9 - 6 * 512
    per_node = [int((mnt / f"sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/nr_hugepages").read_text())
                for n in (0, 1)]
    assert per_node == [3, 3], "the pool is interleaved over the nodes"
    node1 = (mnt / "sys/devices/system/node/node1/meminfo").read_text()
    assert re.search(r"^Node 1 HugePages_Total:     3$", node1, re.M), node1
    sysfs = mnt / "sys/kernel/mm/hugepages/hugepages-2048kB"
    assert (sysfs / "nr_hugepages").read_text() == "6\n" and (sysfs / "free_hugepages").read_text() == "6\n"
    assert write_sysctl(mnt / "sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages", "0") == 0
    assert meminfo(mnt)["HugePages_Total"] == 3
    assert write_sysctl(sysfs / "nr_hugepages", "0") == 0
    after = meminfo(mnt)
    assert after["HugePages_Total"] == 0 and after["MemFree"] == before["MemFree"]
    assert_views_agree(mnt)


@pytest.mark.parametrize(("name", "value", "err"), [
    ("min_free_kbytes", "-1", errno.EINVAL),
    ("min_free_kbytes", "lots", errno.EINVAL),
    ("watermark_scale_factor", "0", errno.EINVAL),
    ("watermark_scale_factor", "3001", errno.EINVAL),
    ("watermark_scale_factor", "10x", errno.EINVAL),  # Linux 6.18 takes "10 20" as 10, and "0x10" as 16
    ("nr_hugepages", "-3", errno.EINVAL),
    ("nr_hugepages", "+3", errno.EINVAL),
    ("numa_zonelist_order", "zone", errno.EINVAL),
])
def test_vm_sysctls_reject_what_linux_rejects(numa_mnt: Mounted, name: str, value: str, err: int) -> None:
    path = numa_mnt.path / "proc" / "sys" / "vm" / name
    before = path.read_text()
    assert write_sysctl(path, value + "\n") == err
    assert path.read_text() == before


def test_lowmem_reserve_ratio_takes_what_it_can_parse_and_ignores_the_rest(numa_mnt: Mounted) -> None:
    # As Linux 6.18 does (seen on a real kernel): its handler ignores the parser's error, so every write
    # succeeds, the values before a bad one are taken, and a sixth value past the five zones is ignored.
    path = numa_mnt.path / "proc/sys/vm/lowmem_reserve_ratio"
    before = path.read_text()
    assert write_sysctl(path, "garbage\n") == 0 and path.read_text() == before
    assert write_sysctl(path, "7 x\n") == 0
    assert path.read_text().split("\t")[0] == "7" and path.read_text().split("\t")[1:] == before.split("\t")[1:]
    assert write_sysctl(path, "1 2 3 4 5 6\n") == 0 and path.read_text() == "1\t2\t3\t4\t5\n"
    assert write_sysctl(path, before) == 0 and path.read_text() == before


def test_sysfs_mm_controls_reject_bad_values(numa_mnt: Mounted) -> None:
    thp = numa_mnt.path / "sys/kernel/mm/transparent_hugepage"
    assert (thp / "enabled").read_text() == "always [madvise] never\n"
    assert write_sysctl(thp / "enabled", "sometimes") == errno.EINVAL
    assert write_sysctl(thp / "hpage_pmd_size", "4096") == errno.EACCES
    assert write_sysctl(numa_mnt.path / "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "many") == \
        errno.EINVAL
    assert write_sysctl(numa_mnt.path / "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "1") == \
        errno.EACCES


def test_watermark_tunables_take_effect(numa_mnt: Mounted) -> None:
    vm = numa_mnt.path / "proc" / "sys" / "vm"
    old_min, old_scale = (vm / "min_free_kbytes").read_text(), (vm / "watermark_scale_factor").read_text()
    try:
        assert write_sysctl(vm / "min_free_kbytes", "8192\n") == 0
        zones = {k: z for k, z in zoneinfo(numa_mnt.path).items() if z["managed"]}
        lowmem = sum(z["managed"] for z in zones.values())
        for z in zones.values():
            assert z["min"] == 2048 * z["managed"] // lowmem
        assert write_sysctl(vm / "watermark_scale_factor", "1000") == 0
        for z in zoneinfo(numa_mnt.path).values():
            if z["managed"]:
                delta = max(z["min"] // 4, z["managed"] * 1000 // 10000)
                assert (z["low"], z["high"]) == (z["min"] + delta, z["min"] + 2 * delta)
        assert write_sysctl(vm / "lowmem_reserve_ratio", "128 0 32 0 0") == 0
        assert (vm / "lowmem_reserve_ratio").read_text() == "128\t0\t32\t0\t0\n"
        text = (numa_mnt.path / "proc" / "zoneinfo").read_text()
        dma32 = zoneinfo(numa_mnt.path)[(0, "DMA32")]["managed"]
        assert f"protection: (0, {dma32 // 128}, {dma32 // 128}, {dma32 // 128}, {dma32 // 128})" in text
    finally:
        write_sysctl(vm / "min_free_kbytes", old_min)
        write_sysctl(vm / "watermark_scale_factor", old_scale)
        write_sysctl(vm / "lowmem_reserve_ratio", "256 256 32 0 0")


def test_zoneinfo_and_pagetypeinfo_have_the_6_18_shape(numa_mnt: Mounted) -> None:
    sample = (SAMPLES / "proc_zoneinfo.txt").read_text().splitlines()
    mine = (numa_mnt.path / "proc" / "zoneinfo").read_text().splitlines()

    def labels(lines: list[str], start: str) -> list[str]:
        i = lines.index(start)
        out = []
        for line in lines[i + 1 :]:
            if line.startswith("Node "):
                break
            out.append(re.sub(r"\d+", "N", line))
        return out

    # Same key order and widths for the first zone (with the per-node stats) and an empty one.
    assert labels(mine, "Node 0, zone      DMA")[:80] == labels(sample, "Node 0, zone      DMA")[:80]
    assert labels(mine, "Node 0, zone  Movable") == labels(sample, "Node 0, zone  Movable")
    pti = numa_mnt.path / "proc" / "pagetypeinfo"
    assert pti.stat().st_mode & 0o777 == 0o400
    text = pti.read_text()
    assert text.startswith("Page block order: 9\nPages per block:  512\n")
    per_type: dict[tuple[int, str], list[int]] = {}
    for match in re.finditer(r"^Node +(\d+), zone +(\w+), type +\w+ ((?: *\d+ ){11})$", text, re.M):
        key = (int(match.group(1)), match.group(2))
        row = [int(x) for x in match.group(3).split()]
        per_type[key] = [a + b for a, b in zip(per_type.get(key, [0] * 11), row, strict=True)]
    assert per_type == buddyinfo(numa_mnt.path)


def test_interrupts_keep_an_honest_tlb_row(numa_mnt: Mounted) -> None:
    (numa_mnt.path / "tmp" / "tlb").write_bytes(os.urandom(MIB))
    (numa_mnt.path / "tmp" / "tlb").read_bytes()
    row = [line for line in (numa_mnt.path / "proc" / "interrupts").read_text().splitlines()
           if line.startswith("TLB:")]
    assert row and row[0].split()[1:5] == ["0", "0", "0", "0"], "read(2) and write(2) remap nothing"
    assert row[0].endswith("  TLB shootdowns")


def test_the_host_pays_for_what_is_used(tmp_path: Path) -> None:
    """Writing N MiB raises the daemon's RSS by about N MiB; deleting it gives the memory back to the host."""
    with mounted(tmp_path, "--mem", "4G") as m:
        assert m.pid is not None
        idle = rss_kb(m.pid)
        big = m.path / "tmp" / "big"
        with open(big, "wb") as f:
            chunk = os.urandom(MIB)
            for _ in range(256):
                f.write(chunk)
        full = rss_kb(m.pid)
        assert 250 * 1024 < full - idle < 300 * 1024, (idle, full)
        big.unlink()
        # Free page reporting hands the freed blocks back PAGE_REPORTING_DELAY (2 s) after the free.
        assert rss_kb(m.pid) - idle > 200 * 1024, "reported at once: a rewrite would fault every page in again"
        deadline = time.monotonic() + 10
        while rss_kb(m.pid) - idle >= 32 * 1024 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rss_kb(m.pid) - idle < 32 * 1024


@pytest.mark.parametrize("mem", ["1T", "64T"])
def test_a_huge_machine_mounts_small(tmp_path: Path, mem: str) -> None:
    image = make_image(tmp_path / "disk.img")
    (tmp_path / "mnt").mkdir()
    result = rinuxfs("mount", str(image), str(tmp_path / "mnt"), "--mem", mem)
    m = Mounted((tmp_path / "mnt").resolve(), image, daemon_pid(tmp_path / "mnt"))
    try:
        size = (1 << 40) if mem == "1T" else (64 << 40)
        # More RAM than the host has: it works, with one line of warning.
        assert "warning: --mem" in result.stderr and len(result.stderr.splitlines()) == 1
        info = meminfo(m.path)
        assert 0.97 * size < info["MemTotal"] * 1024 <= size
        free = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f"mount --bind {m.path}/proc/meminfo /proc/meminfo && free -b"],
                              capture_output=True, text=True, timeout=30)
        row = next(line for line in free.stdout.splitlines() if line.startswith("Mem:"))
        assert int(row.split()[1]) == info["MemTotal"] * 1024
        assert m.pid is not None and rss_kb(m.pid) < 150 * 1024
        assert_views_agree(m.path)
    finally:
        m.unmount()


def test_mem_prealloc_faults_ram_in(tmp_path: Path) -> None:
    with mount(make_image(tmp_path / "disk.img"), tmp_path / "mnt", "--mem", "128M", "--mem-prealloc") as m:
        assert m.pid is not None
        wait_until(lambda: "RAM populated" in (m.path / "proc" / "kmsg").read_text(), 10)
        assert rss_kb(m.pid) > 128 * 1024
