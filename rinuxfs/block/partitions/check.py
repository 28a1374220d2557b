"""The state one partition scan shares between parsers (`block/partitions/check.h`, `core.c`).

`ParsedPartitions` is `struct parsed_partitions`: the sector reader with its
end-of-device rule, the numbered slots the parsers fill with `put_partition`,
the " sda: sda1 sda2 < sda5 >" line they build, and the log lines they emit.
Sector numbers here are always 512-byte units, as `read_part_sector` uses them
whatever the logical block size.

Sectors are fetched a 4 KiB page at a time and kept, as the page cache does
for the kernel's scan. Reads never raise: a failing or short read is a missing
sector (None), like a failed `read_mapping_folio`, and a read at or past the
capacity sets `access_beyond_eod` instead of reaching the callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from uuid import UUID

from rinuxfs.block.partitions.types import gpt_type_name, is_extended, mbr_type_name
from rinuxfs.errors import KernelError
from rinuxfs.printk import KERN_DEBUG, KERN_INFO, KERN_WARNING

SECTOR_SIZE = 512
DISK_MAX_PARTS = 256  # include/linux/blkdev.h: state->limit; slot numbers stay below it
PAGE_SECTORS = 8  # read_part_sector goes through the page cache: one 4 KiB page per read

ReadSectors = Callable[[int, int], bytes]
"""read_sectors(first, count) -> count * 512 bytes, first and count in 512-byte sectors."""


@dataclass(frozen=True)
class Partition:
    """One partition as the kernel registers it, plus what the table says about it.

    `start`/`size` are in 512-byte sectors (sysfs `start` and `size`), after the
    kernel's scaling and end-of-device truncation; an extended MBR partition
    has size 2 there. `table_start`/`table_size` are the table's own values in
    logical blocks, which listings (sfdisk -l) show.
    """

    number: int
    start: int
    size: int
    table_start: int
    table_size: int
    uuid: str = ""  # PARTUUID: GPT unique GUID, or "%08x-%02x" for msdos; "" when the kernel keeps none
    volname: str = ""  # PARTNAME: the GPT name squashed to 7 bits as efi.c does
    raid: bool = False  # ADDPART_FLAG_RAID: md may autodetect it
    type_guid: UUID | None = None  # GPT only
    sys_ind: int | None = None  # msdos only
    name: str = ""  # the GPT name decoded in full (sfdisk shows this one)
    attributes: int = 0  # GPT attribute bits
    bootable: bool = False  # msdos boot indicator 0x80

    @property
    def end(self) -> int:
        return self.start + self.size - 1

    @property
    def type(self) -> str:
        """The type as sfdisk --json spells it: an upper-case GUID, or hex without 0x ("83", "5")."""
        if self.type_guid is not None:
            return str(self.type_guid).upper()
        return f"{self.sys_ind or 0:x}"

    @property
    def type_name(self) -> str:
        if self.type_guid is not None:
            return gpt_type_name(self.type_guid)
        return mbr_type_name(self.sys_ind or 0)

    @property
    def is_extended(self) -> bool:
        return self.sys_ind is not None and is_extended(self.sys_ind)


class ParsedPartitions:
    """One scan of one disk: what `check_partition` allocates and the parsers fill."""

    def __init__(self, read_sectors: ReadSectors, nr_sectors: int, sector_size: int, disk_name: str,
                 force_gpt: bool) -> None:
        self._read_sectors = read_sectors
        self.capacity = nr_sectors  # get_capacity(): 512-byte sectors
        self.sector_size = sector_size  # queue_logical_block_size()
        self.force_gpt = force_gpt
        self.limit = DISK_MAX_PARTS
        self.parts: dict[int, Partition] = {}
        self.next = 0  # msdos: the next logical partition number
        self.access_beyond_eod = False
        self.messages: list[tuple[int, str]] = []
        self.why: dict[str, str] = {}  # parser label -> why it declined the disk
        self._cache: dict[int, bytes | None] = {}
        # check_partition: partition names get the disk name, or "p" when it ends in a digit
        # (" nvme0n1: p1 p2", as the kernel really prints it).
        self.disk_name = disk_name
        self.part_prefix = "p" if disk_name[-1:].isdigit() else disk_name
        self.pp_buf = f" {disk_name}:"
        # Filled by the parser that recognises the disk.
        self.label = ""
        self.disk_id = ""
        self.first_usable_lba: int | None = None
        self.last_usable_lba: int | None = None
        self.gpt_header = ""  # "primary" or "alternate"
        self.pmbr = ""  # "protective", "hybrid", or "" when force_gpt skipped the check
        self.superfloppy = False

    # --- logging -----------------------------------------------------------------------------

    def debug(self, text: str) -> None:
        self.messages.append((KERN_DEBUG, text))

    def warn(self, text: str) -> None:
        self.messages.append((KERN_WARNING, text))

    def info(self, text: str) -> None:
        self.messages.append((KERN_INFO, text))

    def decline(self, label: str, why: str) -> int:
        """Record why a parser said "not mine" and return its 0."""
        self.why[label] = why
        return 0

    # --- sectors -----------------------------------------------------------------------------

    def read_part_sector(self, n: int) -> bytes | None:
        """512 bytes of sector n, or None (read_part_sector: n >= capacity sets access_beyond_eod)."""
        if n < 0 or n >= self.capacity:
            self.access_beyond_eod = True
            return None
        if n not in self._cache:
            first = n - n % PAGE_SECTORS
            self._fill(first, min(PAGE_SECTORS, self.capacity - first))
        return self._cache[n]

    def _fill(self, first: int, count: int) -> None:
        data = self._call(first, count)
        if data is None and count > 1:  # one bad sector must not hide its neighbours
            for n in range(first, first + count):
                if n not in self._cache:
                    self._cache[n] = self._call(n, 1)
            return
        for i in range(count):
            chunk = data[i * SECTOR_SIZE:(i + 1) * SECTOR_SIZE] if data is not None else b""
            if first + i not in self._cache:
                self._cache[first + i] = chunk if len(chunk) == SECTOR_SIZE else None

    def _call(self, first: int, count: int) -> bytes | None:
        try:
            data = self._read_sectors(first, count)
        except (OSError, KernelError) as e:
            self.debug(f"{self.disk_name}: read of sectors {first}+{count} failed: {e}")
            return None
        return bytes(data)

    # --- slots -------------------------------------------------------------------------------

    def put_partition(self, n: int, start: int, size: int, meta: Partition) -> None:
        """check.h put_partition: slots at or above the limit are silently dropped."""
        if n < self.limit:
            self.parts[n] = replace(meta, number=n, start=start, size=size)
            self.pp_buf += f" {self.part_prefix}{n}"
