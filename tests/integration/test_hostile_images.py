"""Hostile images through `rinuxfs mount` and `rinuxfs inspect`: odd files and hostile partition tables.

Odd files (a FIFO, a directory, a symlink loop, a socket) are refused with one line and a non-zero
exit, at once and without a traceback; images of 0, 511 and 513 bytes mount as the bare disk they
are. Hostile partition tables (a looping EBR chain, GPT fields that pass their CRC but make no
sense, reversed and out-of-disk entries) mount too: /proc/partitions holds what Linux's own scan
(`fuzzing.linux_partitions`, transcribed from the kernel's C) registers, and proc/kmsg carries
Linux's log lines for it, in order. No image byte and no image mtime changes, read-write mount
or not.
"""

from __future__ import annotations

import os
import socket
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzzing.linux_partitions import U64, linux_scan
from fuzzing.partitions import FuzzDisk, gpt_entry, header_bytes, mbr_sector, mbr_slot

from tests.conftest import RINUXFS, is_mounted
from tests.integration.storage_helpers import kmsg, mounted

LINUX_FS = bytes.fromhex("af3dc60f838472478e793d69d8477de4")
LEVELS = "0123456789"


def rinuxfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RINUXFS, *args], capture_output=True, text=True, timeout=30)


def one_line_refusal(out: subprocess.CompletedProcess[str], command: str) -> str:
    assert out.returncode != 0, out
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rinuxfs {command}: "), out.stderr
    return lines[0]


@pytest.fixture
def odd_files(tmp_path: Path) -> Iterator[dict[str, Path]]:
    files = {"fifo": tmp_path / "fifo", "directory": tmp_path / "dir", "symlink loop": tmp_path / "loop1",
             "socket": tmp_path / "sock"}
    os.mkfifo(files["fifo"])
    files["directory"].mkdir()
    os.symlink(tmp_path / "loop2", tmp_path / "loop1")
    os.symlink(tmp_path / "loop1", tmp_path / "loop2")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(files["socket"]))
    try:
        yield files
    finally:
        sock.close()


WHY = {"fifo": "is a FIFO, not a disk image", "directory": "is a directory, not a disk image",
       "symlink loop": "Too many levels of symbolic links", "socket": "is a socket, not a disk image"}


@pytest.mark.parametrize("kind", sorted(WHY))
def test_odd_files_are_refused_in_one_line(odd_files: dict[str, Path], kind: str, tmp_path: Path) -> None:
    path = odd_files[kind]
    assert WHY[kind] in one_line_refusal(rinuxfs("inspect", str(path)), "inspect")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for extra in ([], ["--ro"]):  # an O_RDONLY open of a FIFO would wait for a writer forever
        assert WHY[kind] in one_line_refusal(rinuxfs("mount", str(path), str(mnt), *extra), "mount")
        assert not is_mounted(mnt.resolve())


def stamp(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.mark.parametrize("size", [0, 511, 513])
def test_tiny_images_inspect_in_one_line_and_mount_as_a_bare_disk(tmp_path: Path, size: int) -> None:
    image = tmp_path / f"{size}.img"
    image.write_bytes(os.urandom(size))
    before = stamp(image)
    assert "no partition table" in one_line_refusal(rinuxfs("inspect", str(image)), "inspect")
    with mounted(image, tmp_path / "mnt") as m:
        assert (m / "dev/nvme0n1").read_bytes() == before[0][:size // 512 * 512]  # the tail is no sector
        assert (m / "sys/block/nvme0n1/size").read_text() == f"{size // 512}\n"
        assert [line.split()[-1] for line in (m / "proc/partitions").read_text().splitlines()[2:]] == \
            (["nvme0n1"] if size >= 512 else [])
    assert stamp(image) == before


# --- hostile tables, built as the fuzzer builds them ------------------------------------------------


def looping_ebr_chain() -> FuzzDisk:
    """Every EBR has a data partition and the last links back to the first: Linux emits p5…p255."""
    disk = FuzzDisk(16384)
    disk.put_lba(0, mbr_sector([mbr_slot(0, 0x83, 2048, 2048), mbr_slot(0, 0x05, 4096, 8192)]))
    disk.put_lba(4096, mbr_sector([mbr_slot(0, 0x83, 64, 64), mbr_slot(0, 0x05, 4096, 4096)]))
    disk.put_lba(8192, mbr_sector([mbr_slot(0, 0x82, 64, 64), mbr_slot(0, 0x05, 0, 4096)]))  # back to the first
    disk.put_lba(8192 + 64 + 1, b"\x00" * 12 + b"\xee\xde\x0d\x60")  # not a VTOC at sector 1 of p6: no match
    return disk


def lying_gpt(*, force_gpt: bool = False, **fields: int) -> FuzzDisk:
    """A GPT whose headers pass their CRCs with `fields` changed, and entries that make no sense."""
    disk = FuzzDisk(16384, force_gpt=force_gpt)
    last = disk.last_lba
    entries = {0: gpt_entry(LINUX_FS, b"\x01" * 16, 2048, 4095, 0, "root".encode("utf-16-le").ljust(72, b"\0")),
               3: gpt_entry(LINUX_FS, b"\x04" * 16, 3000, 1000, 0, b"\xff\xfe" * 36),  # reversed: wraps
               7: gpt_entry(LINUX_FS, b"\x08" * 16, 100, last + 1, 0, bytes(72)),  # past the end: dropped
               9: gpt_entry(LINUX_FS, b"\x0a" * 16, 2048, 2050, 0, bytes(72)),  # overlaps p1
               100: gpt_entry(LINUX_FS, b"\x65" * 16, 40, 41, 0, bytes(72))}  # out of order
    array = bytearray(128 * 128)
    for i, raw in entries.items():
        array[i * 128:(i + 1) * 128] = raw
    header = {"signature": 0x5452415020494645, "revision": 0x10000, "header_size": 92, "header_crc32": 0,
              "reserved1": 0, "my_lba": 1, "alternate_lba": last, "first_usable_lba": 34, "last_usable_lba": last - 33,
              "disk_guid": b"\x11" * 16, "partition_entry_lba": 2, "num_partition_entries": 128,
              "sizeof_partition_entry": 128, "partition_entry_array_crc32": zlib.crc32(array)}
    disk.put_lba(0, mbr_sector([mbr_slot(0, 0xEE, 1, 12345)]))  # a PMBR that lies about the disk size
    disk.put_lba(2, bytes(array))
    disk.put_lba(last - 32, bytes(array))
    disk.put_lba(last, header_bytes(dict(header, my_lba=last, alternate_lba=1, partition_entry_lba=last - 32),
                                    512, b"", True))
    disk.put_lba(1, header_bytes(dict(header, **fields), 512, b"", True))
    return disk


HOSTILE = {
    "looping EBR chain": (looping_ebr_chain, "nvme", []),
    "looping EBR chain on sd (minors past 15 from 259)": (looping_ebr_chain, "ahci", []),
    "reversed and out-of-disk GPT entries": (lying_gpt, "nvme", []),
    "alternate_lba of 2^64-1 with a good CRC": (lambda: lying_gpt(alternate_lba=U64), "ahci", []),
    "first_usable_lba past the disk with a good CRC": (lambda: lying_gpt(first_usable_lba=U64), "ahci", []),
    "forced backup after an absurd primary": (lambda: lying_gpt(force_gpt=True, my_lba=7), "nvme", ["--force-gpt"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tables_mount_as_linux_reads_them(case: str, tmp_path: Path) -> None:
    build, controller, extra = HOSTILE[case]
    disk = build()
    disk.name = {"nvme": "nvme0n1", "ahci": "sda"}[controller]
    image = tmp_path / "hostile.img"
    disk.write_image(image)
    before = stamp(image)
    linux = linux_scan(disk, truncate_wrapped=True)
    with mounted(image, tmp_path / "mnt", "--controller", controller, *extra) as m:
        rows = [line.split() for line in (m / "proc/partitions").read_text().splitlines()[2:]]
        got = {name: int(blocks) for _, _, blocks, name in rows}
        prefix = disk.name + ("p" if disk.name[-1].isdigit() else "")
        want = {disk.name: disk.capacity // 2} | {f"{prefix}{n}": p.size // 2 for n, p in linux.parts.items()}
        assert got == want
        for n, p in linux.parts.items():
            part = m / f"sys/block/{disk.name}/{prefix}{n}"
            assert ((part / "start").read_text(), (part / "size").read_text()) == (f"{p.start}\n", f"{p.size}\n")
            assert (m / f"dev/{prefix}{n}").stat().st_size == p.size * 512
        log = [(int(line[1]), line[line.index("] ") + 2:]) for line in kmsg(m).splitlines()]
        found = iter(log)
        missing = [entry for entry in linux.messages if entry not in found]  # Linux's lines, in Linux's order
        assert missing == [], f"kernel log lacks {missing}"
    assert stamp(image) == before, "the mount wrote to the image"
