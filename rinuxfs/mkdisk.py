"""`rinuxfs mkdisk` and `rinuxfs inspect`: write a demo disk image, list an image's partitions.

mkdisk writes a sparse image, without root and without loop devices: a GPT
(protective MBR, both headers and entry arrays) or a dos label, then three
partitions aligned to 1 MiB as sfdisk aligns them: an EFI System partition
(100 MiB, or 1/8 of disks under 800 MiB), a Linux swap partition with an
mkswap header (1/8 of the disk, at most 1 GiB), and a Linux filesystem
partition over the rest. The EFI System and Linux filesystem partitions are
left unformatted (zeros). The image appears complete or not at all: it is
written under a temporary name and renamed into place.

mkdisk --force refuses to replace an image that a mount holds (its lock).
inspect takes the shared image lock, as a `--ro` mount does, and reads the
image with the kernel's partition scan
(`rinuxfs.block.partitions`) and prints it like `sfdisk -l`, or like
`sfdisk --json` with --json, so the two can be compared. Where the kernel and
sfdisk disagree (a corrupt primary GPT, partitions past the end of the disk)
it shows what the kernel would use.

Both commands return 0 or raise KernelError/UsageError with a one-line
message; cli.py prints it.
"""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rinuxfs.block.partitions import PartitionTable, ScanResult, probe
from rinuxfs.block.partitions.check import SECTOR_SIZE, Partition
from rinuxfs.block.partitions.efi import GptPartition, build_gpt, entry_array_blocks
from rinuxfs.block.partitions.msdos import MbrPartition, build_msdos
from rinuxfs.block.partitions.types import (
    EFI_SYSTEM,
    EFI_SYSTEM_PARTITION,
    LINUX_DATA_PARTITION,
    LINUX_FILESYSTEM,
    LINUX_SWAP,
    LINUX_SWAP_PARTITION,
)
from rinuxfs.cli import UsageError
from rinuxfs.errors import KernelError
from rinuxfs.hw.image import DiskImage
from rinuxfs.hw.image_lock import image_in_use
from rinuxfs.mm.swap_header import build_swap_header
from rinuxfs.printk import KERN_WARNING

MIB = 1 << 20
ALIGN = MIB // SECTOR_SIZE  # sfdisk's default grain: 1 MiB
ESP_MIB = 100
SWAP_MAX_MIB = 1024
DOS_MAX_SECTORS = 1 << 32  # 32-bit LBAs in MBR slots


@dataclass(frozen=True)
class Planned:
    number: int
    start: int  # LBA (512-byte sectors)
    size: int  # sectors
    role: str  # "esp", "swap" or "root"
    name: str  # GPT partition name


def plan_layout(size: int, label: str) -> list[Planned]:
    """The three partitions of a `size`-byte disk; raises UsageError when they do not fit."""
    if size <= 0 or size % SECTOR_SIZE:
        raise UsageError(f"disk size {size} is not a positive multiple of {SECTOR_SIZE} bytes")
    nr_sectors = size // SECTOR_SIZE
    if label == "dos" and nr_sectors > DOS_MAX_SECTORS:
        raise UsageError(f"a dos label addresses at most 2 TiB; {_human(size, True)} needs --label gpt")
    total_mib = size // MIB
    esp_mib = ESP_MIB if total_mib >= 8 * ESP_MIB else max(1, total_mib // 8)
    swap_mib = min(max(1, total_mib // 8), SWAP_MAX_MIB)
    esp = Planned(1, ALIGN, esp_mib * ALIGN, "esp", "EFI System Partition")
    swap = Planned(2, esp.start + esp.size, swap_mib * ALIGN, "swap", "swap")
    root_start = swap.start + swap.size
    # The GPT keeps its backup array and header in the last 33 sectors; sfdisk then ends
    # the last partition on a 1 MiB boundary below its last usable LBA, and so do we.
    last_usable = nr_sectors - 2 - entry_array_blocks(128, SECTOR_SIZE) if label == "gpt" else nr_sectors - 1
    root_end = (last_usable + 1) // ALIGN * ALIGN
    if root_end - root_start < ALIGN:
        minimum = (4 + (1 if label == "gpt" else 0)) * MIB
        raise UsageError(f"disk size {_human(size, True)} is too small for the layout (partition table, EFI System,"
                         f" swap and root of at least 1 MiB each, 1 MiB aligned): a {label} disk needs at least"
                         f" {_human(minimum, True)}")
    return [esp, swap, Planned(3, root_start, root_end - root_start, "root", "root")]


def _table_writes(layout: Sequence[Planned], nr_sectors: int, label: str) -> list[tuple[int, bytes]]:
    """(LBA, bytes) for the partition table."""
    if label == "gpt":
        types = {"esp": EFI_SYSTEM, "swap": LINUX_SWAP, "root": LINUX_FILESYSTEM}
        parts = [GptPartition(p.number, p.start, p.start + p.size - 1, types[p.role], uuid.uuid4(), p.name)
                 for p in layout]
        return build_gpt(nr_sectors, parts, uuid.uuid4(), first_usable_lba=ALIGN)
    sys_ind = {"esp": EFI_SYSTEM_PARTITION, "swap": LINUX_SWAP_PARTITION, "root": LINUX_DATA_PARTITION}
    return build_msdos(secrets.randbits(32) or 1, [MbrPartition(p.start, p.size, sys_ind[p.role]) for p in layout])


def _write_image(path: Path, size: int, writes: Sequence[tuple[int, bytes]], force: bool) -> None:
    """A new sparse file of `size` bytes with `writes` (byte offset, data), renamed onto `path`."""
    if path.is_dir():
        raise KernelError(errno.EISDIR, f"{path}: is a directory, not a disk image")
    if os.path.lexists(path):
        if not force:
            raise KernelError(errno.EEXIST, f"{path}: already exists; use --force to overwrite it")
        if not path.is_file():
            raise KernelError(errno.EINVAL, f"{path}: not a regular file; refusing to overwrite it")
        holder = image_in_use(path)
        if holder:  # a mounted image would go on being used (and written) under its old inode
            raise KernelError(errno.EBUSY, f"{path}: the image is in use by {holder}; refusing to replace it")
    directory = path.parent
    if not directory.is_dir():
        raise KernelError(errno.ENOENT, f"{directory}: no such directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as e:
        raise KernelError(e.errno or errno.EIO, f"{directory}: cannot create the image there: {e.strerror}") from None
    try:
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
            os.ftruncate(fd, size)
            for offset, data in writes:
                os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        raise KernelError(e.errno or errno.EIO, f"{path}: cannot write the image: {e.strerror}") from None
    except BaseException:
        os.unlink(tmp)
        raise


def cmd_mkdisk(args: argparse.Namespace) -> int:
    path: Path = args.image
    layout = plan_layout(args.size, args.label)
    nr_sectors = args.size // SECTOR_SIZE
    writes = [(lba * SECTOR_SIZE, data) for lba, data in _table_writes(layout, nr_sectors, args.label)]
    swap = next(p for p in layout if p.role == "swap")
    writes.append((swap.start * SECTOR_SIZE, build_swap_header(swap.size * SECTOR_SIZE, label="swap")))
    _write_image(path, args.size, writes, args.force)

    result, size = probe_image(path, force_gpt=getattr(args, "force_gpt", False))
    if result.table is None:  # our own table must scan: anything else is a bug worth a loud message
        raise KernelError(errno.EIO, f"{path}: the table just written does not scan: {result.reason}")
    print(format_sfdisk_list(result.table, str(path), size), end="")
    print("\nThe EFI System and Linux filesystem partitions are unformatted; the swap partition has an mkswap header.")
    return 0


# --- inspect ---------------------------------------------------------------------------------------


def probe_image(path: Path, *, force_gpt: bool = False) -> tuple[ScanResult, int]:
    """The kernel's partition scan of an image file, and the file's size in bytes."""
    image = DiskImage(path, read_only=True)
    try:
        size = image.size
        result = probe(lambda first, count: image.pread(first * SECTOR_SIZE, count * SECTOR_SIZE),
                       size // SECTOR_SIZE, force_gpt=force_gpt, disk_name=path.name or str(path))
    finally:
        image.close()
    return result, size


def cmd_inspect(args: argparse.Namespace) -> int:
    path: Path = args.image
    result, size = probe_image(path)
    for level, text in result.messages:
        if level <= KERN_WARNING:
            print(f"rinuxfs inspect: warning: {text.strip()}", file=sys.stderr)
    if result.table is None:
        if result.error:
            raise KernelError(-result.error, f"{path}: unable to read the partition table: {result.reason}")
        what = "no partition table" if size >= SECTOR_SIZE else f"no partition table (the file is {size} bytes)"
        raise KernelError(errno.EINVAL, f"{path}: {what}: {result.reason}")
    if args.json:
        print(format_sfdisk_json(result.table, str(path)), end="")
    else:
        print(format_sfdisk_list(result.table, str(path), size), end="")
    return 0


# --- sfdisk's formats (util-linux 2.38) -------------------------------------------------------------


def _human(nbytes: int, long_suffix: bool = False) -> str:
    """lib/strutils.c size_to_human_string: "16M", "1.5G"; with long_suffix "64 MiB"."""
    shift = 10
    while shift <= 60 and nbytes >= 1 << shift:
        shift += 10
    exp = shift - 10
    letter = "BKMGTPE"[exp // 10]
    suffix = (" " + letter + ("iB" if letter != "B" else "")) if long_suffix else letter
    dec, frac = nbytes >> exp, nbytes & ((1 << exp) - 1)
    if frac:
        frac = frac * 1000 >> exp  # three digits after the point, then rounded to one
        frac = (frac + 50) // 100 * 10
        if frac == 100:
            dec, frac = dec + 1, 0
    if frac:
        return f"{dec}.{frac // 10}{suffix}"
    return f"{dec}{suffix}"


def partition_node(device: str, number: int) -> str:
    """libfdisk fdisk_partname: "disk.img1", but "disk0p1" when the name ends in a digit."""
    if device.endswith("disc"):
        return f"{device[:-4]}part{number}"
    return f"{device}{'p' if device[-1:].isdigit() else ''}{number}"


def _listed(table: PartitionTable) -> list[Partition]:
    return sorted(table.partitions, key=lambda p: p.number)


def _columns(headers: Sequence[tuple[str, int, bool]], rows: Sequence[Sequence[str]]) -> list[str]:
    """libsmartcols widths: the widest cell, at least the header, raised to the width hint when the header fits it."""
    widths = []
    for i, (header, hint, _right) in enumerate(headers):
        width = max((len(r[i]) for r in rows), default=0)
        if width < len(header):
            width = len(header)
        elif hint >= 1 and width < hint and len(header) < hint:
            width = hint
        widths.append(width)
    lines = []
    for cells in [[h for h, _, _ in headers], *rows]:
        out = []
        for i, cell in enumerate(cells):
            last = i == len(cells) - 1
            right = headers[i][2]
            out.append(cell.rjust(widths[i]) if right else (cell if last else cell.ljust(widths[i])))
        lines.append(" ".join(out))
    return lines


def format_sfdisk_list(table: PartitionTable, device: str, size: int) -> str:
    """The text of `sfdisk -l DEVICE` for an image file."""
    ss = table.sector_size
    lines = [
        f"Disk {device}: {_human(size, True)}, {size} bytes, {size // ss} sectors",
        f"Units: sectors of 1 * {ss} = {ss} bytes",
        f"Sector size (logical/physical): {ss} bytes / {ss} bytes",
        f"I/O size (minimum/optimal): {ss} bytes / {ss} bytes",
        f"Disklabel type: {table.label}",
        f"Disk identifier: {table.disk_id}",
    ]
    parts = _listed(table)
    if parts:
        rows = []
        for p in parts:
            end = p.table_start + p.table_size - 1
            cells = [partition_node(device, p.number)]
            if table.label == "dos":
                cells.append("*" if p.bootable else "")
            cells += [str(p.table_start), str(end), str(p.table_size), _human(p.table_size * ss)]
            if table.label == "dos":
                cells.append(f"{p.sys_ind or 0:x}")
            cells.append(p.type_name)
            rows.append(cells)
        headers = [("Device", 10, False)]
        if table.label == "dos":
            headers.append(("Boot", 1, False))
        headers += [("Start", 5, True), ("End", 5, True), ("Sectors", 5, True), ("Size", 5, True)]
        if table.label == "dos":
            headers.append(("Id", 2, True))
        headers.append(("Type", 0, False))
        lines += ["", *_columns(headers, rows)]
        starts = [p.table_start for p in parts]
        if starts != sorted(starts):
            lines += ["", "Partition table entries are not in disk order."]
    return "\n".join(lines) + "\n"


def _json_str(text: str) -> str:
    """lib/jsonwrt.c quoting: backslash escapes for quotes, backslashes and control characters."""
    short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(short.get(c, f"\\u{ord(c):04x}" if ord(c) < 0x20 else c) for c in text) + '"'


def gpt_attrs_string(attributes: int) -> str:
    """libfdisk's attrs= text: the named bits, then "GUID:48,50" for the type-specific ones."""
    names = [name for bit, name in ((0, "RequiredPartition"), (1, "NoBlockIOProtocol"), (2, "LegacyBIOSBootable"))
             if attributes >> bit & 1]
    guid_bits = [str(bit) for bit in range(48, 64) if attributes >> bit & 1]
    if guid_bits:
        names.append("GUID:" + ",".join(guid_bits))
    return " ".join(names)


def format_sfdisk_json(table: PartitionTable, device: str) -> str:
    """The text of `sfdisk --json DEVICE`."""
    head: list[tuple[str, str]] = [("label", _json_str(table.label)), ("id", _json_str(table.disk_id)),
                                   ("device", _json_str(device)), ("unit", _json_str("sectors"))]
    if table.label == "gpt":
        head += [("firstlba", str(table.first_usable_lba)), ("lastlba", str(table.last_usable_lba))]
    head.append(("sectorsize", str(table.sector_size)))
    objects = []
    for p in _listed(table):
        fields = [("node", _json_str(partition_node(device, p.number))), ("start", str(p.table_start)),
                  ("size", str(p.table_size)), ("type", _json_str(p.type))]
        if table.label == "gpt":
            fields.append(("uuid", _json_str(p.uuid.upper())))
            if p.name:
                fields.append(("name", _json_str(p.name)))
            if gpt_attrs_string(p.attributes):
                fields.append(("attrs", _json_str(gpt_attrs_string(p.attributes))))
        if p.bootable:
            fields.append(("bootable", "true"))
        objects.append(",\n".join(f'            "{k}": {v}' for k, v in fields))
    lines = ["{", '   "partitiontable": {']
    body = [f'      "{k}": {v}' for k, v in head]
    if objects:
        body.append('      "partitions": [\n         {\n' + "\n         },{\n".join(objects) + "\n         }\n      ]")
    lines.append(",\n".join(body))
    lines += ["   }", "}"]
    return "\n".join(lines) + "\n"
