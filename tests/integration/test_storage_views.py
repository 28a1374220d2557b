"""The disk as tools see it through a mount: lsblk, blkid, partx, vmstat, /proc and /sys.

One image (GPT with partitions 1, 2 and 4, a FAT16, a swap area and an ext2,
built by sfdisk/mkfs/mkswap) is mounted once per controller and shared by the
module. Expected values come from the image (sfdisk --json, blkid and partx on
the image file) and from Linux's rules, not from rinuxfs.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Mounted
from tests.integration.storage_helpers import (
    CONTROLLERS,
    CTRL,
    GPT_PARTS,
    LSBLK_COLUMNS,
    SECTOR,
    SWAP_UUID,
    Controller,
    build_gpt_image,
    diskstats,
    expected_lsblk,
    export,
    lsblk,
    per_controller_mounts,
    run,
)

DISKSTATS_LINE = re.compile(r"^[ \d]{3}\d [ \d]{6}\d \S+( \d+){17}$")
STAT_LINE = re.compile(r"^( {0,7}\d{1,8} ){16} {0,7}\d{1,8}$")
SAMPLES = Path(__file__).resolve().parents[1] / "samples"  # golden files from Linux 6.18 (tests/samples/README.md)


def partitions_line(major: int, minor: int, blocks: int, name: str) -> str:
    return f"{major:4d}  {minor:7d} {blocks:10d} {name}"  # show_partition: "%4d  %7d %10llu %pg\n"


def diskstats_head(major: int, minor: int, name: str) -> str:
    return f"{major:4d} {minor:7d} {name} "  # diskstats_show: "%4d %7d %pg " then the counters


def stat_text(values: list[int]) -> str:
    return " ".join(f"{v:8d}" for v in values) + "\n"  # part_stat_show: 17 times "%8lu"


def test_the_formats_reproduce_the_golden_samples() -> None:
    """The format helpers the tests below expect rinuxfs to follow give back Linux's own files."""
    header, blank, *rows = (SAMPLES / "proc_partitions.txt").read_text().splitlines()
    assert (header, blank) == ("major minor  #blocks  name", "")
    for line in rows:
        major, minor, blocks, name = line.split()
        assert partitions_line(int(major), int(minor), int(blocks), name) == line
    for line in (SAMPLES / "proc_diskstats.txt").read_text().splitlines():
        major, minor, name, *counters = line.split()
        assert len(counters) == 17 and DISKSTATS_LINE.match(line)
        assert diskstats_head(int(major), int(minor), name) + " ".join(counters) == line
    text = (SAMPLES / "sys_block_vda_stat.txt").read_text()
    assert stat_text([int(v) for v in text.split()]) == text and STAT_LINE.match(text.rstrip("\n"))
    keys = [line.split("=")[0] for line in (SAMPLES / "sys_block_vda_uevent.txt").read_text().splitlines()]
    assert keys == ["MAJOR", "MINOR", "DEVNAME", "DEVTYPE", "DISKSEQ"]




@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_gpt_image(tmp_path_factory.mktemp("views") / "gpt.img")


@pytest.fixture(scope="module")
def mounts(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Mounted]]:
    """One mount per controller, made on first use and unmounted when the module is done."""
    with per_controller_mounts(image, tmp_path_factory) as get:
        yield get


@pytest.fixture(scope="module", params=CONTROLLERS)
def ctrl(request: pytest.FixtureRequest) -> Controller:
    return CTRL[request.param]


@pytest.fixture(scope="module")
def m(ctrl: Controller, mounts: Callable[[str], Mounted]) -> Mounted:
    return mounts(ctrl.name)


def devices(ctrl: Controller) -> list[str]:
    return [ctrl.disk, *(ctrl.part(n) for n in GPT_PARTS)]


def read_attr(m: Mounted, path: str) -> str:
    return (m / "sys" / path).read_text()


def write_attr(m: Mounted, path: str, value: str) -> int:
    """Write a sysfs attribute; 0 on success, else the errno."""
    try:
        with open(m / "sys" / path, "w") as f:
            f.write(value)
    except OSError as e:
        return e.errno or -1
    return 0


# --- lsblk ---------------------------------------------------------------------------------------


def test_lsblk_pairs_equal_the_table_sfdisk_reads(m: Mounted, ctrl: Controller, image: Path) -> None:
    assert lsblk(m) == expected_lsblk(image, ctrl)


def test_lsblk_json_tree_equals_the_table(m: Mounted, ctrl: Controller, image: Path) -> None:
    out = run("lsblk", "--sysroot", str(m.path), "-J", "-b", "-o", LSBLK_COLUMNS).stdout
    (disk,) = json.loads(out)["blockdevices"]
    rows = [disk, *disk.pop("children")]

    def as_pairs(row: dict[str, object]) -> dict[str, str]:
        def text(v: object) -> str:
            return "" if v is None else str(int(v)) if isinstance(v, bool) else str(v)
        return {k.upper(): text(v) for k, v in row.items()}

    assert [as_pairs(r) for r in rows] == expected_lsblk(image, ctrl)


def test_lsblk_queue_columns(m: Mounted, ctrl: Controller) -> None:
    rows = lsblk(m, "NAME,LOG-SEC,PHY-SEC,ROTA,SCHED,RQ-SIZE,RA")
    assert [r["NAME"] for r in rows] == devices(ctrl)
    for r in rows:  # partitions have no queue/: lsblk reads their disk's (sysfs_blkdev_enoent_redirect)
        assert (r["LOG-SEC"], r["PHY-SEC"]) == ("512", "512")
        assert r["RQ-SIZE"] == read_attr(m, f"block/{ctrl.disk}/queue/nr_requests").strip()
        assert r["RA"] == read_attr(m, f"block/{ctrl.disk}/queue/read_ahead_kb").strip()
    if ctrl.name == "nvme":
        assert {(r["ROTA"], r["SCHED"]) for r in rows} == {("0", "none")}


# --- /proc/partitions, /proc/diskstats, <dev>/stat -------------------------------------------------


def test_proc_partitions_format_and_values(m: Mounted, ctrl: Controller, image: Path) -> None:
    expected = ["major minor  #blocks  name", ""]
    for row in expected_lsblk(image, ctrl):
        major, minor = row["MAJ:MIN"].split(":")
        expected.append(partitions_line(int(major), int(minor), int(row["SIZE"]) // 1024, row["NAME"]))
    assert (m / "proc/partitions").read_text() == "\n".join(expected) + "\n"


def test_diskstats_format_has_20_fields_per_device(m: Mounted, ctrl: Controller, image: Path) -> None:
    text = (m / "proc/diskstats").read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    devts = {r["NAME"]: r["MAJ:MIN"] for r in expected_lsblk(image, ctrl)}
    assert [line.split()[2] for line in lines] == devices(ctrl)
    for line in lines:
        assert DISKSTATS_LINE.match(line), line
        major, minor, name = line.split()[:3]
        assert f"{major}:{minor}" == devts[name]
        assert line.startswith(diskstats_head(int(major), int(minor), name))
        assert len(line.split()) == 20


def test_sys_stat_equals_diskstats_and_inflight_is_idle(m: Mounted, ctrl: Controller) -> None:
    with open(m / f"dev/{ctrl.disk}", "rb") as f:  # some I/O first, so the counters are not all zero
        f.read(1 << 16)
    stats = diskstats(m)
    disk_dir = Path(os.path.realpath(m / f"sys/block/{ctrl.disk}"))
    for name in devices(ctrl):
        d = disk_dir if name == ctrl.disk else disk_dir / name
        text = (d / "stat").read_text()
        assert STAT_LINE.match(text.rstrip("\n")) and text.endswith("\n")
        assert text == stat_text(stats[name])
        assert (d / "inflight").read_text() == f"{0:8d} {0:8d}\n"
        assert stats[name][8] == 0  # I/Os currently in progress
    assert stats[ctrl.disk][0] > 0 and stats[ctrl.disk][2] >= 128  # the 64 KiB read (and the partition scan)


def test_vmstat_d_reads_the_disk_from_our_diskstats(m: Mounted, ctrl: Controller) -> None:
    """vmstat hard-codes /proc and /sys: bind ours over them in a private mount namespace."""
    script = (f"mount --bind {m.path}/proc/diskstats /proc/diskstats && mount --bind {m.path}/sys /sys && "
              "vmstat -d")
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("disk- ") and "reads" in lines[0] and "writes" in lines[0]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert list(rows) == [ctrl.disk]  # vmstat -d shows disks, not partitions
    stats = diskstats(m)[ctrl.disk]
    # total merged sectors ms (reads), then the same for writes, then cur and sec
    assert [int(v) for v in rows[ctrl.disk][:3]] == stats[0:3]
    assert [int(v) for v in rows[ctrl.disk][4:7]] == stats[4:7]


# --- sysfs attributes and links --------------------------------------------------------------------


def test_disk_attributes(m: Mounted, ctrl: Controller, image: Path) -> None:
    d = f"block/{ctrl.disk}"
    sectors = os.stat(image).st_size // SECTOR
    assert read_attr(m, f"{d}/dev") == f"{ctrl.major}:0\n"
    assert read_attr(m, f"{d}/size") == f"{sectors}\n"
    assert (read_attr(m, f"{d}/ro"), read_attr(m, f"{d}/removable"), read_attr(m, f"{d}/hidden")) == ("0\n",) * 3
    # sd owns 16 minors; NVMe asks for none (all its minors are dynamic); ext_range is DISK_MAX_PARTS.
    assert read_attr(m, f"{d}/range") == ("0\n" if ctrl.name == "nvme" else "16\n")
    assert read_attr(m, f"{d}/ext_range") == "256\n"
    uevent = read_attr(m, f"{d}/uevent").splitlines()
    assert uevent[:4] == [f"MAJOR={ctrl.major}", "MINOR=0", f"DEVNAME={ctrl.disk}", "DEVTYPE=disk"]
    assert re.fullmatch(r"DISKSEQ=\d+", uevent[4])
    assert os.stat(m / f"dev/{ctrl.disk}").st_size == sectors * SECTOR


def test_partition_attributes(m: Mounted, ctrl: Controller, image: Path) -> None:
    names = {1: "EFI System", 2: "swap", 4: "root"}
    rows = {r["NAME"]: r for r in expected_lsblk(image, ctrl)}
    for number, (start, sectors) in GPT_PARTS.items():
        name = ctrl.part(number)
        d = f"block/{ctrl.disk}/{name}"
        major, minor = rows[name]["MAJ:MIN"].split(":")
        assert read_attr(m, f"{d}/partition") == f"{number}\n"
        assert read_attr(m, f"{d}/start") == f"{start}\n"
        assert read_attr(m, f"{d}/size") == f"{sectors}\n"
        assert read_attr(m, f"{d}/dev") == f"{major}:{minor}\n"
        assert read_attr(m, f"{d}/ro") == "0\n"
        uevent = read_attr(m, f"{d}/uevent").splitlines()
        assert uevent[:6] == [f"MAJOR={major}", f"MINOR={minor}", f"DEVNAME={name}", "DEVTYPE=partition",
                              f"PARTN={number}", f"PARTNAME={names[number]}"]
        assert os.stat(m / f"dev/{name}").st_size == sectors * SECTOR
        assert not (m / f"sys/{d}/removable").exists()  # part_attrs has no removable: lsblk inherits the disk's


def test_queue_attributes(m: Mounted, ctrl: Controller) -> None:
    q = f"block/{ctrl.disk}/queue"
    assert read_attr(m, f"{q}/logical_block_size") == "512\n"
    assert read_attr(m, f"{q}/physical_block_size") == "512\n"
    assert read_attr(m, f"{q}/hw_sector_size") == "512\n"
    assert int(read_attr(m, f"{q}/max_sectors_kb")) <= int(read_attr(m, f"{q}/max_hw_sectors_kb"))
    assert read_attr(m, f"{q}/write_cache") in ("write back\n", "write through\n")
    if ctrl.name == "nvme":
        assert read_attr(m, f"{q}/rotational") == "0\n"
        # several hardware queues (one per CPU): elevator_get_default picks none
        assert read_attr(m, f"{q}/scheduler") == "[none] mq-deadline\n"
    else:  # one hardware queue: mq-deadline by default
        assert read_attr(m, f"{q}/scheduler") == "none [mq-deadline]\n"


def test_links_resolve_to_the_device_directories(m: Mounted, ctrl: Controller, image: Path) -> None:
    sys_dir = Path(os.path.realpath(m / "sys"))
    disk_dir = Path(os.path.realpath(m / f"sys/block/{ctrl.disk}"))
    assert disk_dir.is_relative_to(sys_dir / "devices") and disk_dir.name == ctrl.disk
    for row in expected_lsblk(image, ctrl):
        name = row["NAME"]
        target = disk_dir if name == ctrl.disk else disk_dir / name
        assert Path(os.path.realpath(m / f"sys/dev/block/{row['MAJ:MIN']}")) == target
        assert Path(os.path.realpath(m / f"sys/class/block/{name}")) == target
        assert Path(os.path.realpath(target / "subsystem")) == sys_dir / "class/block"
        assert (target / "dev").read_text() == f"{row['MAJ:MIN']}\n"
    assert sorted(p.name for p in (m / "sys/block").iterdir()) == [ctrl.disk]
    # kernfs writes a link as "../" up to an ancestor of the target, then the way down, so even a
    # link to an ancestor ends in its name: lsblk takes HCTL (and so TRAN=sata) from that name.
    device = disk_dir / "device"
    assert os.readlink(device).split("/")[-1] == Path(os.path.realpath(device)).name
    assert os.readlink(device) == "../" * (len(disk_dir.relative_to(Path(os.path.realpath(device))).parts) + 1) + \
        Path(os.path.realpath(device)).name


def test_read_only_attributes_refuse_writes(m: Mounted, ctrl: Controller) -> None:
    """kernfs: opening an attribute without a store method for writing is EACCES, even for root."""
    d = f"block/{ctrl.disk}"
    for path in (f"{d}/size", f"{d}/dev", f"{d}/stat", f"{d}/queue/logical_block_size",
                 f"{d}/queue/max_hw_sectors_kb", f"{d}/{ctrl.part(1)}/start", f"{d}/{ctrl.part(1)}/size"):
        before = read_attr(m, path)
        assert write_attr(m, path, "1\n") == errno.EACCES, path
        assert read_attr(m, path) == before


def test_scheduler_and_nr_requests(m: Mounted, ctrl: Controller) -> None:
    q = f"block/{ctrl.disk}/queue"
    original = read_attr(m, f"{q}/scheduler")
    try:
        assert write_attr(m, f"{q}/scheduler", "none") == 0
        assert read_attr(m, f"{q}/scheduler") == "[none] mq-deadline\n"
        depth = int(read_attr(m, f"{q}/nr_requests"))  # without an elevator: the hardware tag depth
        assert write_attr(m, f"{q}/nr_requests", f"{depth + 1}") == errno.EINVAL
        assert write_attr(m, f"{q}/nr_requests", "16") == 0
        assert read_attr(m, f"{q}/nr_requests") == "16\n"
        assert write_attr(m, f"{q}/nr_requests", "1") == 0  # raised to BLKDEV_MIN_RQ
        assert read_attr(m, f"{q}/nr_requests") == "4\n"
        assert write_attr(m, f"{q}/nr_requests", "many") == errno.EINVAL

        assert write_attr(m, f"{q}/scheduler", "mq-deadline\n") == 0
        assert read_attr(m, f"{q}/scheduler") == "none [mq-deadline]\n"
        # blk_mq_init_sched: twice the smaller of the depth and BLKDEV_DEFAULT_RQ (128)
        assert read_attr(m, f"{q}/nr_requests") == f"{2 * min(depth, 128)}\n"
        assert write_attr(m, f"{q}/nr_requests", "2048") == 0  # MAX_SCHED_RQ
        assert write_attr(m, f"{q}/nr_requests", "2049") == errno.EINVAL
        assert read_attr(m, f"{q}/nr_requests") == "2048\n"
        with open(m / f"dev/{ctrl.disk}", "rb") as f:  # I/O still flows under the other elevator
            assert len(f.read(3 * 4096)) == 3 * 4096

        assert write_attr(m, f"{q}/scheduler", "bfq2") == errno.EINVAL
        assert read_attr(m, f"{q}/scheduler") == "none [mq-deadline]\n"
        assert write_attr(m, f"{q}/scheduler", "none") == 0
        assert read_attr(m, f"{q}/nr_requests") == f"{depth}\n"
    finally:
        write_attr(m, f"{q}/scheduler", original.split("[")[1].split("]")[0])
    assert read_attr(m, f"{q}/scheduler") == original


def test_read_ahead_and_max_sectors(m: Mounted, ctrl: Controller) -> None:
    q = f"block/{ctrl.disk}/queue"
    ra, max_kb = read_attr(m, f"{q}/read_ahead_kb"), read_attr(m, f"{q}/max_sectors_kb")
    hw_kb = int(read_attr(m, f"{q}/max_hw_sectors_kb"))
    try:
        assert write_attr(m, f"{q}/read_ahead_kb", "512") == 0
        assert read_attr(m, f"{q}/read_ahead_kb") == "512\n"
        assert write_attr(m, f"{q}/read_ahead_kb", "0") == 0
        assert read_attr(m, f"{q}/read_ahead_kb") == "0\n"
        # queue_var_store is kstrtoul base 10: no sign, no hex, and overflow is EINVAL too
        for bad in ("-1", "0x10", "4294967296", " 5", "5 kB"):
            assert write_attr(m, f"{q}/read_ahead_kb", bad) == errno.EINVAL, bad
        assert write_attr(m, f"{q}/read_ahead_kb", "+64\n") == 0
        assert read_attr(m, f"{q}/read_ahead_kb") == "64\n"

        assert write_attr(m, f"{q}/max_sectors_kb", "64") == 0
        assert read_attr(m, f"{q}/max_sectors_kb") == "64\n"
        with open(m / f"dev/{ctrl.disk}", "rb") as f:  # a read larger than the limit is split, still whole
            assert len(f.read(256 * 1024)) == 256 * 1024
        assert write_attr(m, f"{q}/max_sectors_kb", f"{hw_kb}") == 0
        assert read_attr(m, f"{q}/max_sectors_kb") == f"{hw_kb}\n"
        assert write_attr(m, f"{q}/max_sectors_kb", f"{hw_kb + 1}") == errno.EINVAL
        assert write_attr(m, f"{q}/max_sectors_kb", "2") == errno.EINVAL  # below a page
        assert read_attr(m, f"{q}/max_sectors_kb") == f"{hw_kb}\n"
    finally:
        write_attr(m, f"{q}/read_ahead_kb", ra)
        write_attr(m, f"{q}/max_sectors_kb", max_kb)
    assert (read_attr(m, f"{q}/read_ahead_kb"), read_attr(m, f"{q}/max_sectors_kb")) == (ra, max_kb)


# --- blkid and partx: the device files give what the image gives ---------------------------------------


def test_blkid_and_partx_on_the_disk_agree_with_the_image(m: Mounted, ctrl: Controller, image: Path) -> None:
    dev = str(m / f"dev/{ctrl.disk}")
    ours, theirs = run("blkid", "-p", "-o", "export", dev), run("blkid", "-p", "-o", "export", str(image))
    assert export(ours.stdout) == export(theirs.stdout)
    assert export(ours.stdout)["PTTYPE"] == "gpt"
    for args in (["--show"], ["-g", "-o", "NR,START,END,SECTORS,TYPE,UUID,NAME"], ["-P"]):
        assert run("partx", *args, dev).stdout == run("partx", *args, str(image)).stdout
    assert [line.split()[0] for line in run("partx", "-g", "-o", "NR", dev).stdout.splitlines()] == ["1", "2", "4"]

    def table(path: str) -> dict[str, object]:
        """sfdisk --json with each node reduced to its partition number (sfdisk adds the 'p' itself)."""
        t = json.loads(run("sfdisk", "--json", path).stdout)["partitiontable"]
        del t["device"]
        for p in t["partitions"]:
            p["node"] = p["node"].removeprefix(path).lstrip("p")
        return t

    assert table(dev) == table(str(image))


def test_blkid_on_each_partition_finds_its_filesystem(m: Mounted, ctrl: Controller, image: Path) -> None:
    found = {}
    for number, (start, sectors) in GPT_PARTS.items():
        ours = export(run("blkid", "-p", "-o", "export", str(m / f"dev/{ctrl.part(number)}")).stdout)
        theirs = export(run("blkid", "-p", "-o", "export", "-O", str(start * SECTOR), "-S", str(sectors * SECTOR),
                            str(image)).stdout)
        assert ours == theirs
        found[number] = ours["TYPE"]
    assert found == {1: "vfat", 2: "swap", 4: "ext2"}
    swap = run("blkid", "-p", str(m / f"dev/{ctrl.part(2)}")).stdout
    assert 'TYPE="swap"' in swap and f'UUID="{SWAP_UUID}"' in swap and 'LABEL="swap0"' in swap


# --- NVMe specifics --------------------------------------------------------------------------------------


def test_nvme_controller_in_sys_class_nvme(mounts: Callable[[str], Mounted]) -> None:
    m = mounts("nvme")
    ctrl_dir = m / "sys/class/nvme/nvme0"
    assert ctrl_dir.is_dir()
    limits = {"model": 40, "serial": 20, "firmware_rev": 8}  # Identify Controller MN, SN, FR widths
    for attr, width in limits.items():
        text = (ctrl_dir / attr).read_text()
        value = text.rstrip("\n")
        assert text.endswith("\n") and value and value == value.strip() and len(value) <= width
        assert value.isascii() and value.isprintable()
    assert os.path.realpath(m / "sys/block/nvme0n1/device") == os.path.realpath(ctrl_dir)
    assert os.path.realpath(ctrl_dir / "nvme0n1") == os.path.realpath(m / "sys/block/nvme0n1")
    assert os.path.realpath(ctrl_dir / "subsystem") == os.path.realpath(m / "sys/class/nvme")


def _nvme_irqs(m: Mounted) -> dict[str, int]:
    counts = {}
    for line in (m / "proc/interrupts").read_text().splitlines():
        fields = line.split()
        if fields and fields[-1].startswith("nvme0q"):
            counts[fields[-1]] = sum(int(v) for v in fields[1:3])  # the 2 CPUs' columns
    return counts


def test_nvme_queue_interrupts_grow_with_io(mounts: Callable[[str], Mounted]) -> None:
    m = mounts("nvme")
    before = _nvme_irqs(m)
    assert sorted(before) == ["nvme0q0", "nvme0q1", "nvme0q2"]  # admin queue + one I/O queue per CPU
    assert before["nvme0q0"] > 0  # the admin commands of the probe
    fd = os.open(m / "dev/nvme0n1", os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    try:
        for i in range(8):  # O_DIRECT: one command each, no page cache in the way
            assert os.preadv(fd, [buf], i * 4096) == 4096
    finally:
        os.close(fd)
    after = _nvme_irqs(m)
    io = sum(after[q] - before[q] for q in ("nvme0q1", "nvme0q2"))
    assert io >= 8
    assert after["nvme0q0"] == before["nvme0q0"]  # reads don't touch the admin queue
