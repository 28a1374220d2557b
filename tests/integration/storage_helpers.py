"""Shared by the storage integration tests: images built by real tools, oracles, and readers of the views.

Images are made the way storage.md §3 makes them (sfdisk/fdisk scripts, mkswap
into a temporary file copied in place, mkfs at an offset), without root or
loop devices. What the mount should show is computed from the image with
`sfdisk --json` and the kernel's rules (storage.md §2), never from rinuxfs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import mmap
import os
import random
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mounted, mount

MIB = 1 << 20
SECTOR = 512
PAGE = 4096
ENV = {**os.environ, "LC_ALL": "C"}
CONTROLLERS = ["nvme", "ahci"]

DISKS = Path(__file__).resolve().parents[2] / "disks"  # the layouts of every disk the tests build


def layout(name: str) -> str:
    """An sfdisk script from disks/ (disks/README.md says which test builds which disk)."""
    return (DISKS / f"{name}.sfdisk").read_text()


# Partitions 1, 2 and 4: a gap at 3, GPT names, and a swap partition (storage.md §3.2).
GPT_SCRIPT = layout("tests-gpt")
GPT_PARTS = {1: (2048, 32768), 2: (34816, 32768), 4: (67584, 61440)}  # number: (start, sectors)
SWAP_UUID = "11111111-2222-3333-4444-555555555555"

# Partitions 1, 2 and 4 of 8 MiB, 8 MiB and the rest of a 32 MiB disk.
THREE_PARTS_GPT = layout("tests-io")  # three partitions with a gap at 3 (the I/O and fault tests)
THREE_PARTS = {1: (2048, 16384), 2: (18432, 16384), 4: (34816, 28672)}  # number: (start, sectors), sfdisk's

# An extended partition with two logicals (storage.md §3.3).
MBR_SCRIPT = layout("tests-mbr")


@dataclass(frozen=True)
class Controller:
    """What Linux names the disk behind each host driver (storage.md §2.1)."""

    name: str
    disk: str
    major: int
    tran: str
    # lsblk's TRAN of a partition: "nvme" comes from the name, so partitions have it too; "sata"
    # comes from the disk's `device` link to the SCSI device, which partitions don't have.
    part_tran: str

    def part(self, number: int) -> str:
        return f"{self.disk}{'p' if self.disk[-1].isdigit() else ''}{number}"

    def first_ext_minor(self) -> int:
        """The first 259:N minor the partitions get: NVMe's disk itself took 259:0."""
        return 1 if self.major == 259 else 0

    def static_minors(self) -> int:
        """sd disks own 16 minors (sda1 is 8:1, sda5 is 8:5); NVMe owns none."""
        return 0 if self.major == 259 else 16


CTRL = {"nvme": Controller("nvme", "nvme0n1", 259, "nvme", "nvme"), "ahci": Controller("ahci", "sda", 8, "sata", "")}


def run(*cmd: str, stdin: str | None = None, check: bool = True, cwd: Path | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=check, env=ENV, timeout=60,
                          cwd=cwd)


def sfdisk_image(path: Path, script: str, size: int = 64 * MIB, fill_seed: int | None = None) -> Path:
    """A new image of `size` bytes partitioned by sfdisk; with `fill_seed`, pseudo-random bytes under the table."""
    with open(path, "wb") as f:
        if fill_seed is None:
            f.truncate(size)
        else:
            rng = random.Random(fill_seed)
            for _ in range(size // MIB):
                f.write(rng.randbytes(MIB))
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", "--wipe", "never", str(path), stdin=script)
    return path


def put_swap(image: Path, start_sector: int, size: int, label: str = "swap0") -> None:
    """mkswap 2.38 has no --offset: make the area in a file and copy it in, as `dd conv=notrunc` does."""
    area = image.with_suffix(".swap")
    with open(area, "wb") as f:
        f.truncate(size)
    run("mkswap", "-L", label, "-U", SWAP_UUID, str(area))
    with open(image, "r+b") as f:
        f.seek(start_sector * SECTOR)
        f.write(area.read_bytes())
    area.unlink()


def build_gpt_image(path: Path) -> Path:
    """GPT_SCRIPT on 64 MiB with a FAT16 on p1, a swap area on p2 and an ext2 on p4."""
    sfdisk_image(path, GPT_SCRIPT)
    start, sectors = GPT_PARTS[1]
    run("mkfs.vfat", "-F", "16", "-n", "EFI", "-i", "12345678", "--offset", str(start), str(path),
        str(sectors // 2))
    start, sectors = GPT_PARTS[2]
    put_swap(path, start, sectors * SECTOR)
    start, sectors = GPT_PARTS[4]
    run("mkfs.ext2", "-q", "-F", "-L", "root", "-U", "22222222-3333-4444-5555-666666666666", "-E",
        f"offset={start * SECTOR}", str(path), f"{sectors // 2}k")
    return path


def sfdisk_json(image: Path, *args: str) -> dict[str, Any]:
    table: dict[str, Any] = json.loads(run("sfdisk", *args, "--json", str(image)).stdout)["partitiontable"]
    return table


def partition_number(node: str, image: Path) -> int:
    return int(node[len(str(image)):])


def expected_lsblk(image: Path, ctrl: Controller, *, ro: bool = False, lbs: int = SECTOR) -> list[dict[str, str]]:
    """lsblk -P rows for the disk and what the kernel registers from sfdisk's view of the table.

    Kernel rules applied on top of sfdisk (storage.md §2.2/§2.6): an extended partition is
    registered as 2 sectors (one logical block on 4Kn); sizes and starts are in bytes and
    512-byte sectors whatever the logical block size.
    """
    size = os.stat(image).st_size // lbs * lbs
    rows = [{"NAME": ctrl.disk, "MAJ:MIN": f"{ctrl.major}:0", "SIZE": str(size), "START": "", "TYPE": "disk",
             "TRAN": ctrl.tran, "RO": str(int(ro)), "RM": "0"}]
    table = sfdisk_json(image) if lbs == SECTOR else fdisk_table(image, lbs)
    scale = lbs // SECTOR
    parts = sorted(table["partitions"], key=lambda p: partition_number(p["node"], image))
    ext_minor = ctrl.first_ext_minor()  # partitions past the disk's own minors take 259:N in scan order
    for p in parts:
        number = partition_number(p["node"], image)
        if number < ctrl.static_minors():
            devt = f"{ctrl.major}:{number}"
        else:
            devt, ext_minor = f"259:{ext_minor}", ext_minor + 1
        sectors = p["size"] * scale
        if p["type"] in ("5", "f", "85"):
            sectors = min(sectors, max(scale, 2))
        rows.append({"NAME": ctrl.part(number), "MAJ:MIN": devt, "SIZE": str(sectors * SECTOR),
                     "START": str(p["start"] * scale), "TYPE": "part", "TRAN": ctrl.part_tran, "RO": str(int(ro)),
                     "RM": "0"})
    return rows


def fdisk_table(image: Path, lbs: int) -> dict[str, Any]:
    """sfdisk cannot be told the sector size of a plain file; `fdisk -b` can, and its -l output is parsed here."""
    out = run("fdisk", "-b", str(lbs), "-l", "-o", "Device,Start,Sectors,Type-UUID", str(image)).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith(str(image))]
    return {"partitions": [{"node": r[0], "start": int(r[1]), "size": int(r[2]), "type": r[3]} for r in rows]}


LSBLK_COLUMNS = "NAME,MAJ:MIN,SIZE,START,TYPE,TRAN,RO,RM"


def lsblk(mnt: Mounted, columns: str = LSBLK_COLUMNS) -> list[dict[str, str]]:
    """lsblk --sysroot MNT -P rows; no udev-fed column, or lsblk would read dev/<name> to EOF."""
    out = run("lsblk", "--sysroot", str(mnt.path), "-o", columns, "-b", "-n", "-P").stdout
    return [dict(field.split("=", 1) for field in shlex.split(line)) for line in out.splitlines()]


def diskstats(mnt: Mounted) -> dict[str, list[int]]:
    """/proc/diskstats by device name: the 17 counters after major, minor and name."""
    rows = {}
    for line in (mnt / "proc/diskstats").read_text().splitlines():
        fields = line.split()
        rows[fields[2]] = [int(v) for v in fields[3:]]
    return rows


def kmsg(mnt: Mounted) -> str:
    return (mnt / "proc/kmsg").read_text()


def uptime(m: Path | Mounted) -> float:
    return float((m / "proc/uptime").read_text().split()[0])


RATELIMIT_SECONDS, RATELIMIT_BURST = 5, 10  # printk_ratelimited's DEFAULT_RATELIMIT_{INTERVAL,BURST}


@dataclass(frozen=True)
class KLine:
    ts: float
    text: str
    raw: str


def klines(m: Path | Mounted) -> list[KLine]:
    """proc/kmsg, line by line: the timestamp, the text after it, and the line as printed."""
    lines = []
    for raw in (m / "proc/kmsg").read_text().splitlines():
        head, _, text = raw.partition("] ")
        lines.append(KLine(float(head.split("[", 1)[1]), text, raw))
    return lines


class Log:
    """The kernel log printed since it was made, as of the last `refresh()`.

    The ring holds 4096 records, so a line count would stop moving once it is full: the start is
    found by the last few raw lines (timestamped, so they do not repeat) instead.
    """

    def __init__(self, m: Path | Mounted) -> None:
        self.m = m
        self.mark = [line.raw for line in klines(m)[-8:]]
        self.t0 = uptime(m)
        self.all: list[KLine] = []
        self.new: list[KLine] = []

    def refresh(self) -> list[str]:
        self.all = klines(self.m)
        raws = [line.raw for line in self.all]
        k = len(self.mark)
        start = 0  # the mark fell off the ring: everything there is is new
        for i in range(len(raws) - k, -1, -1):
            if raws[i : i + k] == self.mark:
                start = i + k
                break
        self.new = self.all[start:]
        return self.lines()

    def lines(self) -> list[str]:
        return [line.text for line in self.new]

    def count(self, text: str) -> int:
        return sum(text in line.text for line in self.new)

    def has(self, text: str) -> bool:
        return self.count(text) > 0

    def ratelimited(self, site: re.Pattern[str]) -> bool:
        """Could a message of this printk_ratelimited site have been suppressed during this log?

        A message suppressed at time t means RATELIMIT_BURST lines of its site in [t - interval, t],
        and t is after this log was made: so at least that many since t0 - interval.
        """
        since = self.t0 - RATELIMIT_SECONDS - 0.02
        return sum(1 for line in self.all if line.ts >= since and site.search(line.text)) >= RATELIMIT_BURST


def errno_of(call: Callable[[], object]) -> int:
    """The errno `call` fails with, 0 if it does not."""
    try:
        call()
    except OSError as e:
        return e.errno or -1
    return 0


def write_attr(path: Path, value: str) -> int:
    """Write an attribute with one write(2); 0 on success, else the errno."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        return e.errno or -1
    try:
        os.write(fd, value.encode())
    except OSError as e:
        return e.errno or -1
    finally:
        os.close(fd)
    return 0


def read_direct(path: Path, offset: int, size: int = PAGE) -> bytes:
    """One O_DIRECT pread into a page-aligned buffer, so it reaches the device past the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, max(size, PAGE))
    try:
        n = os.preadv(fd, [memoryview(buf)[:size]], offset)
        return bytes(buf[:n])
    finally:
        buf.close()
        os.close(fd)


def write_direct(path: Path, offset: int, data: bytes) -> None:
    """One O_DIRECT pwrite from a page-aligned buffer; a short write is EIO."""
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, max(len(data), PAGE))
    buf[: len(data)] = data
    try:
        if os.pwritev(fd, [memoryview(buf)[: len(data)]], offset) != len(data):
            raise OSError(errno.EIO, "short O_DIRECT write")
    finally:
        buf.close()
        os.close(fd)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_slice(image: Path, offset: int, size: int) -> bytes:
    with open(image, "rb") as f:
        f.seek(offset)
        return f.read(size)


def hash_outside(image: Path, start: int, end: int) -> tuple[str, str]:
    """Hashes of the image before byte `start` and from byte `end` on: what a partition write must not touch."""
    with open(image, "rb") as f:
        head = hashlib.sha256()
        left = start
        while left:
            chunk = f.read(min(left, 4 * MIB))
            head.update(chunk)
            left -= len(chunk)
        f.seek(end)
        tail = hashlib.sha256()
        while chunk := f.read(4 * MIB):
            tail.update(chunk)
    return head.hexdigest(), tail.hexdigest()


def mount_or_fail(image: Path, mountpoint: Path, *extra: str) -> Mounted:
    """mount(), failing the test with rinuxfs's own message (a missing driver shows as itself)."""
    try:
        return mount(image, mountpoint, *extra)
    except subprocess.CalledProcessError as e:
        last = (e.stderr or "").strip().splitlines()[-1:] or ["no message"]
        pytest.fail(f"rinuxfs mount {' '.join(extra)} failed: {last[0]}", pytrace=False)


def mounted(image: Path, mountpoint: Path, *extra: str) -> Mounted:
    """mount_or_fail() for a `with`, which unmounts whatever the test does."""
    return mount_or_fail(image, mountpoint, *extra)


class MountCache:
    """One mount per key, made on first use and all unmounted at the end (module-scoped sharing).

    A mount that failed is not retried for every test that shares it: the first failure is
    remembered and reported again.
    """

    def __init__(self, base: Callable[[str], Path]) -> None:
        self._base = base
        self._live: dict[str, Mounted] = {}
        self._failed: dict[str, str] = {}

    def get(self, key: str, image: Path, *extra: str) -> Mounted:
        if key in self._failed:
            pytest.fail(self._failed[key], pytrace=False)
        if key not in self._live:
            try:
                self._live[key] = mount_or_fail(image, self._base(key), *extra)
            except pytest.fail.Exception as e:
                self._failed[key] = str(e)
                raise
        return self._live[key]

    def close(self) -> None:
        """Unmount every mount, even after one failed to unmount cleanly; then report all that did."""
        problems = []
        for key, m in self._live.items():
            try:
                m.unmount()
            except Exception as e:  # every mount is unmounted before any failure is raised
                problems.append(f"{key}: {e}")
        self._live.clear()
        assert not problems, "; ".join(problems)


@contextlib.contextmanager
def per_controller_mounts(image: Path, tmp_path_factory: pytest.TempPathFactory, base: Path | None = None,
                          ) -> Iterator[Callable[[str], Mounted]]:
    """One mount per controller, each of its own copy of `image`, made on first use and unmounted on the way out.

    Two machines never share one writable disk: the image lock refuses a second read-write mount.
    The mount points are temporary directories of pytest's, or `base`/<controller> if given.
    """

    def where(key: str) -> Path:
        return base / key if base is not None else tmp_path_factory.mktemp(f"mnt-{key}")

    cache = MountCache(where)

    def get(controller: str) -> Mounted:
        copy = image.with_name(f"{image.stem}-{controller}{image.suffix}")
        if not copy.exists():
            shutil.copyfile(image, copy)
        return cache.get(controller, copy, "--controller", controller)

    try:
        yield get
    finally:
        cache.close()


def export(out: str) -> dict[str, str]:
    """`blkid -o export` without DEVNAME, which names the file probed."""
    return dict(line.split("=", 1) for line in out.splitlines() if line and not line.startswith("DEVNAME="))
