"""The partition scan: what Linux finds on a disk, through a sector-read callback.

Contract:

    probe(read_sectors, nr_sectors, sector_size=512, *, force_gpt=False, disk_name="disk") -> ScanResult
    scan(read_sectors, nr_sectors, sector_size=512, *, force_gpt=False, disk_name="disk", log=None)
        -> PartitionTable | None

`read_sectors(first, count) -> bytes` reads `count` 512-byte sectors from
512-byte sector `first` (the unit `read_part_sector` uses whatever the logical
block size); `nr_sectors` is the capacity in 512-byte sectors and
`sector_size` the logical block size. The callback may raise OSError or
KernelError, or return short data: either counts as an unreadable sector.

The scan ports `check_partition` and `blk_add_partitions` (block/partitions/
core.c, Linux 6.1): the GPT parser runs first, then msdos; the first that
recognises the disk wins. Partitions of size 0 are dropped, those starting at
or past the end are skipped, and those running past it are truncated, each
with the kernel's warning. The result never comes from an exception: a disk
with garbage on it gives `table=None` and a `reason` saying what each parser
rejected; only bad arguments (not bad disk contents) raise ValueError.

`messages` are the kernel log lines (level, text), pr_debug ones included at
KERN_DEBUG: the block layer prints them through printk.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, replace

from rinuxfs.block.partitions.check import DISK_MAX_PARTS, SECTOR_SIZE, ParsedPartitions, Partition, ReadSectors
from rinuxfs.block.partitions.efi import efi_partition
from rinuxfs.block.partitions.msdos import msdos_partition
from rinuxfs.printk import KERN_DEBUG

__all__ = ["DISK_MAX_PARTS", "Partition", "PartitionTable", "ReadSectors", "ScanResult", "probe", "scan"]

CHECK_PART = (("gpt", efi_partition), ("dos", msdos_partition))  # core.c check_part[]: efi must come first


@dataclass(frozen=True)
class PartitionTable:
    """A recognised table and the partitions the kernel registers from it, by number."""

    label: str  # "gpt" or "dos"
    disk_id: str  # as sfdisk shows it: the disk GUID in upper case, or "0x%08x"
    sector_size: int  # logical block size
    nr_sectors: int  # capacity, 512-byte sectors
    partitions: tuple[Partition, ...]
    first_usable_lba: int | None = None  # GPT only
    last_usable_lba: int | None = None  # GPT only
    gpt_header: str = ""  # GPT: "primary", or "alternate" when force_gpt fell back on the backup
    pmbr: str = ""  # GPT: "protective" or "hybrid"; "" when force_gpt skipped the check
    superfloppy: bool = False  # dos: a FAT boot sector on the whole disk, no partitions

    def partition(self, number: int) -> Partition | None:
        return next((p for p in self.partitions if p.number == number), None)


@dataclass(frozen=True)
class ScanResult:
    table: PartitionTable | None
    messages: tuple[tuple[int, str], ...]
    reason: str = ""  # why there is no table: "gpt: ...; dos: ..."
    error: int = 0  # -EIO when the table could not be read (the kernel's scan then fails), else 0


def _register(state: ParsedPartitions) -> tuple[Partition, ...]:
    """blk_add_partitions/blk_add_partition: apply the end-of-device rules to the parsed slots."""
    out = []
    for n in range(1, state.limit):
        p = state.parts.get(n)
        if p is None or not p.size:
            continue
        if p.start >= state.capacity:
            state.warn(f"{state.disk_name}: p{n} start {p.start} is beyond EOD, truncated")
            continue
        if p.start + p.size > state.capacity:
            state.warn(f"{state.disk_name}: p{n} size {p.size} extends beyond EOD, truncated")
            p = replace(p, size=state.capacity - p.start)
        out.append(p)
    return tuple(out)


def probe(read_sectors: ReadSectors, nr_sectors: int, sector_size: int = SECTOR_SIZE, *, force_gpt: bool = False,
          disk_name: str = "disk") -> ScanResult:
    """Scan a disk for a partition table the way Linux does; see the module docstring."""
    if sector_size < SECTOR_SIZE or sector_size > 65536 or sector_size & (sector_size - 1):
        raise ValueError(f"logical block size {sector_size} is not a power of two in 512..65536")
    if nr_sectors < 0 or not disk_name:
        raise ValueError("a disk needs a name and a non-negative capacity")
    if nr_sectors * SECTOR_SIZE < sector_size:
        return ScanResult(None, (), "the disk is empty (smaller than one logical block)")

    state = ParsedPartitions(read_sectors, nr_sectors, sector_size, disk_name, force_gpt)
    res = err = 0
    for _label, parser in CHECK_PART:
        state.parts.clear()
        res = parser(state)
        if res < 0:  # an I/O error: remember it and let the next parser try
            err, res = res, 0
        if res:
            break

    if res > 0:
        state.info(state.pp_buf)
        if state.access_beyond_eod:
            state.warn(f"{disk_name}: partition table partially beyond EOD, truncated")
        table = PartitionTable(label=state.label, disk_id=state.disk_id, sector_size=sector_size,
                               nr_sectors=nr_sectors, partitions=_register(state),
                               first_usable_lba=state.first_usable_lba, last_usable_lba=state.last_usable_lba,
                               gpt_header=state.gpt_header, pmbr=state.pmbr, superfloppy=state.superfloppy)
        return ScanResult(table, tuple(state.messages))

    reason = "; ".join(f"{label}: {state.why[label]}" for label, _ in CHECK_PART if label in state.why)
    if state.access_beyond_eod:
        err = -errno.ENOSPC
    if err:
        state.info(state.pp_buf + " unable to read partition table")
        if err == -errno.ENOSPC:
            state.warn(f"{disk_name}: partition table beyond EOD, truncated")
        return ScanResult(None, tuple(state.messages), reason or "unable to read partition table", -errno.EIO)
    return ScanResult(None, tuple(state.messages), reason or "no partition table")


def scan(read_sectors: ReadSectors, nr_sectors: int, sector_size: int = SECTOR_SIZE, *, force_gpt: bool = False,
         disk_name: str = "disk", log: Callable[[int, str], None] | None = None) -> PartitionTable | None:
    """probe(), with its log lines handed to `log(level, text)` (printk's signature)."""
    result = probe(read_sectors, nr_sectors, sector_size, force_gpt=force_gpt, disk_name=disk_name)
    if log is not None:
        for level, text in result.messages:
            log(level, text)
        if result.table is None and result.reason:
            log(KERN_DEBUG, f"{disk_name}: no partition table: {result.reason}")
    return result.table
