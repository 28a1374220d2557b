"""What the partition scan registers at mount, on images made by real tools, ordinary and broken.

Each case mounts its own image. Where the kernel and util-linux agree on a
well-formed table, sfdisk/partx are the oracle; where they differ (a corrupt
primary GPT, a truncated disk: storage.md §2.6) the test states the kernel's
answer explicitly. The kernel log (/proc/kmsg) must say why a disk shows no
partitions.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import Mounted
from tests.integration.storage_helpers import (
    CONTROLLERS,
    CTRL,
    GPT_PARTS,
    MBR_SCRIPT,
    MIB,
    SECTOR,
    Controller,
    build_gpt_image,
    diskstats,
    expected_lsblk,
    export,
    fdisk_table,
    image_slice,
    kmsg,
    layout,
    lsblk,
    mounted,
    put_swap,
    run,
    sfdisk_image,
    sha,
)


@pytest.fixture(scope="module")
def gpt_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_gpt_image(tmp_path_factory.mktemp("parts") / "gpt.img")


@pytest.fixture(scope="module")
def mbr_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = sfdisk_image(tmp_path_factory.mktemp("parts") / "mbr.img", MBR_SCRIPT)
    put_swap(image, 79872, 4 * MIB)  # a swap area at the start of logical partition 6
    return image


@pytest.fixture(params=CONTROLLERS)
def ctrl(request: pytest.FixtureRequest) -> Controller:
    return CTRL[request.param]


def copy(image: Path, tmp_path: Path, size: int | None = None) -> Path:
    """A private copy of `image`, cut to `size` bytes if given."""
    out = tmp_path / image.name
    shutil.copy(image, out)
    if size is not None:
        os.truncate(out, size)
    return out


def partitions_in_proc(m: Mounted) -> list[tuple[str, int]]:
    """(name, #blocks) rows of /proc/partitions."""
    lines = (m / "proc/partitions").read_text().splitlines()
    assert lines[:2] == ["major minor  #blocks  name", ""]
    return [(line.split()[3], int(line.split()[2])) for line in lines[2:]]


def partition_dirs(m: Mounted, disk: str) -> list[str]:
    return sorted(p.name for p in (m / f"sys/block/{disk}").iterdir() if p.name.startswith(disk))


# --- MBR with an extended partition ---------------------------------------------------------------------


def test_mbr_extended_and_logical_partitions(ctrl: Controller, mbr_image: Path, tmp_path: Path) -> None:
    with mounted(mbr_image, tmp_path / "mnt", "--controller", ctrl.name) as m:
        rows = lsblk(m)
        assert rows == expected_lsblk(mbr_image, ctrl)
        assert [r["NAME"] for r in rows[1:]] == [ctrl.part(n) for n in (1, 2, 3, 5, 6)]
        # The extended container is registered as 2 sectors: /proc/partitions shows 1 KiB.
        assert dict(partitions_in_proc(m))[ctrl.part(3)] == 1
        assert [r["MAJ:MIN"] for r in rows[1:]] == (["259:1", "259:2", "259:3", "259:4", "259:5"]
                                                    if ctrl.name == "nvme" else ["8:1", "8:2", "8:3", "8:5", "8:6"])
        prefix = "p" if ctrl.name == "nvme" else ctrl.disk
        parts = " ".join(f"{prefix}{n}" for n in (1, 2, 3)) + " < " + " ".join(f"{prefix}{n}" for n in (5, 6)) + " >"
        assert f" {ctrl.disk}: {parts}\n" in kmsg(m)
        disk_dir = m / f"sys/block/{ctrl.disk}"
        uevent = (disk_dir / ctrl.part(5) / "uevent").read_text().splitlines()
        assert "PARTN=5" in uevent and "PARTUUID=deadbeef-05" in uevent
        assert not any(line.startswith("PARTNAME=") for line in uevent)  # msdos has no names
        assert (disk_dir / ctrl.part(5) / "start").read_text() == "53248\n"
        dev = str(m / f"dev/{ctrl.disk}")
        assert run("partx", "--show", dev).stdout == run("partx", "--show", str(mbr_image)).stdout
        theirs = export(run("blkid", "-p", "-o", "export", str(mbr_image)).stdout)
        ours = export(run("blkid", "-p", "-o", "export", dev).stdout)
        assert ours == theirs == {"PTUUID": "deadbeef", "PTTYPE": "dos"}
        assert export(run("blkid", "-p", "-o", "export", str(m / f"dev/{ctrl.part(6)}")).stdout)["TYPE"] == "swap"
        # The 2-sector container reads as the EBR it starts with.
        assert (m / f"dev/{ctrl.part(3)}").read_bytes() == image_slice(mbr_image, 51200 * SECTOR, 1024)


# --- GPT details --------------------------------------------------------------------------------------------


def test_gpt_numbering_gaps_and_names(tmp_path: Path) -> None:
    script = """label: gpt
unit: sectors
first-lba: 2048
2 : start=2048, size=4MiB, type=linux, name="café €"
5 : size=4MiB, type=swap, name="with spaces"
128 : size=4MiB, type=linux
"""
    image = sfdisk_image(tmp_path / "names.img", script, 32 * MIB)
    with mounted(image, tmp_path / "mnt") as m:
        assert lsblk(m) == expected_lsblk(image, CTRL["nvme"])
        assert partition_dirs(m, "nvme0n1") == ["nvme0n1p128", "nvme0n1p2", "nvme0n1p5"]

        def uevent(name: str) -> list[str]:
            return (m / f"sys/class/block/{name}/uevent").read_text().splitlines()

        # efi.c keeps the low 7 bits of each UTF-16 unit: é (U+00E9) -> 'i', € (U+20AC) -> ','
        assert "PARTNAME=cafi ," in uevent("nvme0n1p2")
        assert "PARTNAME=with spaces" in uevent("nvme0n1p5")
        assert not any(line.startswith("PARTNAME=") for line in uevent("nvme0n1p128"))  # no name, no variable
        assert (m / "sys/class/block/nvme0n1p128/partition").read_text() == "128\n"


def test_corrupt_primary_gpt_needs_force_gpt(gpt_image: Path, tmp_path: Path) -> None:
    image = copy(gpt_image, tmp_path)
    with open(image, "r+b") as f:  # zero the primary header's CRC field
        f.seek(SECTOR + 16)
        f.write(bytes(4))
    with mounted(image, tmp_path / "mnt") as m:
        assert partitions_in_proc(m) == [("nvme0n1", 65536)]
        assert partition_dirs(m, "nvme0n1") == [] and [r["NAME"] for r in lsblk(m)] == ["nvme0n1"]
        log = kmsg(m)
        assert "GUID Partition Table Header CRC is wrong:" in log
        assert "nvme0n1: no partition table recognised" in log and "force_gpt" in log
        assert "using alternate GPT" not in log
    with mounted(image, tmp_path / "mnt2", "--force-gpt") as m:
        # util-linux falls back on the backup by itself, so with force_gpt the kernel agrees with it
        assert lsblk(m) == expected_lsblk(image, CTRL["nvme"])
        assert [name for name, _ in partitions_in_proc(m)] == ["nvme0n1", "nvme0n1p1", "nvme0n1p2", "nvme0n1p4"]
        # efi.c find_valid_gpt's own words when only the backup is good
        assert "Primary GPT is invalid, using alternate GPT.\n" in kmsg(m)
        assert " nvme0n1: p1 p2 p4\n" in kmsg(m)
        dev = str(m / "dev/nvme0n1")
        assert run("partx", "--show", dev).stdout == run("partx", "--show", str(image)).stdout
        assert (m / "dev/nvme0n1p2").read_bytes() == image_slice(image, GPT_PARTS[2][0] * SECTOR, 16 * MIB)


# --- a disk shorter than its table ------------------------------------------------------------------------------


def test_truncated_gpt_image_is_a_bare_usable_disk(gpt_image: Path, tmp_path: Path) -> None:
    size = 60 * MIB + 1000  # below last_usable_lba, and not a whole number of sectors
    image = copy(gpt_image, tmp_path, size)
    sectors = size // SECTOR
    tail = image_slice(image, sectors * SECTOR, 1000)
    with mounted(image, tmp_path / "mnt") as m:
        # is_gpt_valid: last_usable_lba past the last LBA makes the primary invalid, so nothing at all
        assert partitions_in_proc(m) == [("nvme0n1", sectors // 2)]
        assert (m / "sys/block/nvme0n1/size").read_text() == f"{sectors}\n"
        assert f"GPT: last_usable_lba incorrect: 131038 > {sectors - 1}" in kmsg(m)
        dev = m / "dev/nvme0n1"
        assert os.stat(dev).st_size == sectors * SECTOR
        with open(dev, "r+b") as f:
            f.seek(sectors * SECTOR - 600)
            assert f.read() == image_slice(image, sectors * SECTOR - 600, 600)  # the partial sector is not ours
            f.seek(sectors * SECTOR - 5)
            f.write(b"last!")
    assert image_slice(image, sectors * SECTOR - 5, 5) == b"last!"
    assert image_slice(image, sectors * SECTOR, 1000) == tail
    with mounted(image, tmp_path / "mnt2", "--force-gpt") as m:
        # force_gpt tries the backup at the (new) last LBA: file data there, not a header
        assert partitions_in_proc(m) == [("nvme0n1", sectors // 2)]
        assert f"the backup header at LBA {sectors - 1} is invalid too" in kmsg(m)


MBR_PAST_END = layout("tests-mbr-past-end")


def test_truncated_mbr_partitions_past_the_end(tmp_path: Path) -> None:
    image = sfdisk_image(tmp_path / "mbr.img", MBR_PAST_END)
    os.truncate(image, 32 * MIB)  # 65536 sectors: p2 runs past the end, p4 starts past it
    with mounted(image, tmp_path / "mnt") as m:
        assert partitions_in_proc(m) == [("nvme0n1", 32768), ("nvme0n1p1", 16384), ("nvme0n1p2", 12288)]
        assert (m / "sys/block/nvme0n1/nvme0n1p2/size").read_text() == f"{65536 - 40960}\n"
        log = kmsg(m)
        assert "nvme0n1: p2 size 32768 extends beyond EOD, truncated\n" in log
        assert "nvme0n1: p4 start 100000 is beyond EOD, truncated\n" in log
        assert os.stat(m / "dev/nvme0n1p2").st_size == (65536 - 40960) * SECTOR


def test_truncated_ebr_chain(mbr_image: Path, tmp_path: Path) -> None:
    image = copy(mbr_image, tmp_path, 38 * MIB)  # the second EBR (sector 77824) is the first one past the end
    with mounted(image, tmp_path / "mnt") as m:
        assert [name for name, _ in partitions_in_proc(m)] == ["nvme0n1", *(f"nvme0n1p{n}" for n in (1, 2, 3, 5))]
        assert "nvme0n1: partition table partially beyond EOD, truncated\n" in kmsg(m)


# --- big, small, odd -------------------------------------------------------------------------------------------


def test_one_tebibyte_sparse_disk_with_100_partitions_costs_only_its_table(ctrl: Controller, tmp_path: Path) -> None:
    """The mount reads the partition table and nothing else: counted in diskstats and meminfo, not timed.

    (scripts/bench times this mount.)
    """
    image = sfdisk_image(tmp_path / "big.img", layout("tera-100"), 1 << 40)
    assert os.stat(image).st_blocks * 512 < 4 * MIB  # still sparse
    with mounted(image, tmp_path / "mnt", "--controller", ctrl.name) as m:
        reads, _, sectors = diskstats(m)[ctrl.disk][:3]
        # protective MBR, both GPT headers and both 32-sector entry arrays: a few dozen KiB
        assert reads <= 16 and sectors <= 256, (reads, sectors)
        buffers = int(next(line for line in (m / "proc/meminfo").read_text().splitlines()
                           if line.startswith("Buffers:")).split()[1])
        assert buffers <= 256, f"{buffers} kB of block-device cache for a partition scan"
        rows = lsblk(m)
        assert rows == expected_lsblk(image, ctrl)
        assert len(rows) == 101 and rows[-1]["NAME"] == ctrl.part(100)
        assert (m / f"sys/block/{ctrl.disk}/size").read_text() == f"{1 << 31}\n"
        assert len(partitions_in_proc(m)) == 101
        if ctrl.name == "ahci":  # sd's 16 minors run out: sda16 on take dynamic 259:N minors from 0
            assert [r["MAJ:MIN"] for r in rows[15:18]] == ["8:15", "259:0", "259:1"]


def test_4096_byte_logical_blocks(tmp_path: Path) -> None:
    """A 4Kn GPT made by `fdisk -b 4096` (storage.md §3.5), on a namespace of 4096-byte LBAs."""
    image = tmp_path / "gpt4k.img"
    with open(image, "wb") as f:
        f.truncate(64 * MIB)
    script = "g\nn\n1\n\n+16M\nt\n1\nn\n2\n\n+16M\nt\n2\n19\nn\n3\n\n\nw\n"
    run("fdisk", "-b", "4096", str(image), stdin=script)
    table = fdisk_table(image, 4096)["partitions"]
    assert [(p["start"], p["size"]) for p in table] == [(256, 4096), (4352, 4096), (8448, 7680)]
    with mounted(image, tmp_path / "mnt", "--lba-size", "4096") as m:
        assert lsblk(m) == expected_lsblk(image, CTRL["nvme"], lbs=4096)
        # sysfs counts 512-byte sectors whatever the block size; partx -S 4096 says the same
        q = m / "sys/block/nvme0n1/queue"
        assert [(q / a).read_text() for a in ("logical_block_size", "physical_block_size", "hw_sector_size")] == \
               ["4096\n"] * 3
        assert (m / "sys/block/nvme0n1/size").read_text() == f"{64 * MIB // SECTOR}\n"
        partx = run("partx", "-S", "4096", "-g", "-o", "NR,START,SECTORS", str(image)).stdout.split()
        for nr, start, sectors in zip(partx[0::3], partx[1::3], partx[2::3], strict=True):
            d = m / f"sys/block/nvme0n1/nvme0n1p{nr}"
            assert ((d / "start").read_text(), (d / "size").read_text()) == (f"{start}\n", f"{sectors}\n")
        assert "logical blocks" not in kmsg(m), "Linux's NVMe driver prints no capacity line (sd does)"
        assert (m / "dev/nvme0n1p2").read_bytes() == image_slice(image, 4352 * 4096, 16 * MIB)
        fd = os.open(m / "dev/nvme0n1p2", os.O_RDONLY | os.O_DIRECT)
        buf = bytearray(8192)
        aligned = mmap.mmap(-1, 8192)
        try:
            for off, n in ((512, 4096), (0, 512), (2048, 4096)):  # fine on 512e, not on 4Kn
                with pytest.raises(OSError) as e:
                    os.preadv(fd, [memoryview(aligned)[:n]], off)
                assert e.value.errno == errno.EINVAL, (off, n)
            assert os.preadv(fd, [memoryview(aligned)[:8192]], 4096) == 8192
            buf[:] = aligned[:]
        finally:
            os.close(fd)
        assert bytes(buf) == image_slice(image, 4353 * 4096, 8192)


@pytest.mark.parametrize("content", ["empty", "garbage"])
def test_empty_and_garbage_images_give_a_bare_disk(ctrl: Controller, content: str, tmp_path: Path) -> None:
    image = tmp_path / f"{content}.img"
    image.write_bytes(b"" if content == "empty" else os.urandom(4 * MIB))
    digest = sha(image.read_bytes())
    with mounted(image, tmp_path / "mnt", "--controller", ctrl.name) as m:
        size = image.stat().st_size
        rows = lsblk(m)
        assert [(r["NAME"], r["SIZE"], r["TYPE"]) for r in rows] == [(ctrl.disk, str(size), "disk")]
        assert partitions_in_proc(m) == ([] if content == "empty" else [(ctrl.disk, size // 1024)])
        assert list(diskstats(m)) == [ctrl.disk]  # diskstats lists even an empty disk
        assert partition_dirs(m, ctrl.disk) == []
        assert f"{ctrl.disk}: no partition table recognised" in kmsg(m)
        dev = m / f"dev/{ctrl.disk}"
        assert dev.read_bytes() == image.read_bytes()
        ours = run("blkid", "-p", str(dev), check=False)
        theirs = run("blkid", "-p", str(image), check=False)
        assert ours.returncode == theirs.returncode == 2 and ours.stdout == theirs.stdout == ""  # nothing found
        if content == "empty":
            fd = os.open(dev, os.O_WRONLY)
            try:
                with pytest.raises(OSError) as e:
                    os.pwrite(fd, b"x", 0)
                assert e.value.errno == errno.ENOSPC  # a write at the end of a 0-byte device
            finally:
                os.close(fd)
    assert sha(image.read_bytes()) == digest
