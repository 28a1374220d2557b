"""Disks and partitions (gendisk, block_device) and the registry /proc and /sys render.

Contract:
- A Gendisk owns its request queue and its partitions; `whole` is the block
  device of the whole disk (partno 0), `parts` the partitions by number.
- Device numbers follow Linux: sd disks take major 8 with 16 minors each
  (sda 8:0, sdb 8:16…); NVMe namespaces and partitions past a disk's minors
  take dynamic minors of major 259 (BLOCK_EXT_MAJOR), in registration order.
- Partition names append the number, with a 'p' when the disk name ends in
  a digit (nvme0n1p1), as disk_name() does.
- I/O through a BlockDevice is bounds-checked against its own size and
  remapped to the disk's sectors before it reaches the queue.
- The registry registers the block class with the driver core; `add_disk(disk,
  parent)` (device_add_disk) and `add_partition` register their devices there,
  so /sys shows them (block/disk_attrs.py); `del_gendisk` takes a disk and its
  partitions out of the registry and of /sys again.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from rinuxfs.block.bio import SECTOR_SHIFT, Bio, ReqOp
from rinuxfs.block.disk_attrs import register_disk, register_partition, unregister_disk
from rinuxfs.block.queue import RequestQueue
from rinuxfs.block.stats import IoStats
from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.device import Device
from rinuxfs.drivers.base.kobject import Kobject
from rinuxfs.errors import KernelError

SCSI_DISK0_MAJOR = 8
BLOCK_EXT_MAJOR = 259
SD_MINORS = 16


@dataclass(eq=False)
class BlockDevice:
    """A whole disk (partno 0) or one partition of it."""

    disk: Gendisk
    partno: int
    name: str
    devt: tuple[int, int]
    start_sect: int
    nr_sects: int
    read_only: bool = False
    uuid: str = ""  # PARTUUID
    label: str = ""  # PARTNAME (GPT entry name)
    type_name: str = ""
    bootable: bool = False
    stats: IoStats = field(default_factory=IoStats)
    device: Device | None = None  # its device in the driver core (bd_device), while registered

    @property
    def size_bytes(self) -> int:
        return self.nr_sects << SECTOR_SHIFT

    @property
    def is_partition(self) -> bool:
        return self.partno > 0

    def submit(self, bios: list[Bio]) -> None:
        """Check each bio against this device, remap it to disk sectors, and run the batch."""
        for bio in bios:
            if bio.op.has_data or bio.op in (ReqOp.DISCARD, ReqOp.WRITE_ZEROES):
                if bio.sector < 0 or bio.end_sector > self.nr_sects:
                    raise KernelError(errno.EIO, f"{self.name}: attempt to access beyond end of device")
            # bio_check_ro: an empty FLUSH is not a write, so fsync works on a read-only device.
            if bio.op != ReqOp.READ and bio.op != ReqOp.FLUSH and (self.read_only or self.disk.read_only):
                raise KernelError(errno.EROFS, f"{self.name} is read-only")
            bio.sector += self.start_sect
            bio.bdev = self
        self.disk.queue.submit(bios)


@dataclass(eq=False)
class Gendisk:
    name: str
    major: int
    first_minor: int
    minors: int
    nr_sects: int
    queue: RequestQueue
    model: str = ""
    serial: str = ""
    firmware: str = ""
    transport: str = ""  # nvme | sata
    read_only: bool = False
    removable: bool = False
    diskseq: int = 1
    whole: BlockDevice = field(init=False)
    parts: dict[int, BlockDevice] = field(default_factory=dict)
    pttype: str = ""  # gpt | dos | "" (no table)
    ptuuid: str = ""

    def __post_init__(self) -> None:
        self.whole = BlockDevice(self, 0, self.name, (self.major, self.first_minor), 0, self.nr_sects)
        self.queue.disk = self

    def set_capacity_and_notify(self, nr_sects: int) -> str | None:
        """A new size for the whole disk (a rescan found one); the log line set_capacity_and_notify prints, or None.

        Partitions keep their extents, as in Linux: only a new partition scan changes them.
        """
        if nr_sects == self.nr_sects:
            return None
        line = f"{self.name}: detected capacity change from {self.nr_sects} to {nr_sects}"
        self.nr_sects = self.whole.nr_sects = nr_sects
        return line

    def partition_name(self, partno: int) -> str:
        sep = "p" if self.name[-1].isdigit() else ""
        return f"{self.name}{sep}{partno}"

    def devices(self) -> list[BlockDevice]:
        return [self.whole, *(self.parts[n] for n in sorted(self.parts))]


class BlockRegistry:
    """All registered disks, and the device numbers handed out so far."""

    def __init__(self, core: DriverCore) -> None:
        self.core = core
        self.block_class = core.class_register("block", block=True)
        self.disks: list[Gendisk] = []
        self._next_ext_minor = 0
        self._next_sd_index = 0
        self._nvme_instances = 0
        self.diskseq = 0

    def sd_name_and_devt(self) -> tuple[str, int, int]:
        """The next SCSI disk name (sda, sdb, …, sdz, sdaa…) and its first minor."""
        index = self._next_sd_index
        self._next_sd_index += 1
        name = ""
        n = index
        while True:
            name = chr(ord("a") + n % 26) + name
            n = n // 26 - 1
            if n < 0:
                break
        return f"sd{name}", SCSI_DISK0_MAJOR, index * SD_MINORS

    def next_ext_minor(self) -> int:
        minor = self._next_ext_minor
        self._next_ext_minor += 1
        return minor

    def next_nvme_instance(self) -> int:
        n = self._nvme_instances
        self._nvme_instances += 1
        return n

    def add_disk(self, disk: Gendisk, parent: Kobject) -> Device:
        """device_add_disk: number the disk, list it, register it below its driver's device `parent`."""
        self.diskseq += 1
        disk.diskseq = self.diskseq
        self.disks.append(disk)
        return register_disk(disk, parent, self.block_class, self.core.block_kobj)

    def del_gendisk(self, disk: Gendisk) -> None:
        """The disk and its partitions leave the registry and /sys."""
        unregister_disk(disk, self.core.block_kobj)
        if disk in self.disks:
            self.disks.remove(disk)

    def add_partition(self, disk: Gendisk, partno: int, start: int, nr_sects: int, **info: str) -> BlockDevice:
        if partno < disk.minors:
            devt = (disk.major, disk.first_minor + partno)
        else:
            devt = (BLOCK_EXT_MAJOR, self.next_ext_minor())
        part = BlockDevice(disk, partno, disk.partition_name(partno), devt, start, nr_sects,
                           read_only=disk.read_only, **info)
        disk.parts[partno] = part
        register_partition(part, self.block_class)
        return part

    def all_devices(self) -> list[BlockDevice]:
        return [dev for disk in self.disks for dev in disk.devices()]

    # --- /proc views -------------------------------------------------------------------------

    def render_partitions(self) -> str:
        lines = ["major minor  #blocks  name\n", "\n"]
        for dev in self.all_devices():
            if dev.nr_sects == 0:
                continue
            lines.append(f"{dev.devt[0]:4d}  {dev.devt[1]:7d} {dev.nr_sects >> 1:10d} {dev.name}\n")
        return "".join(lines)

    def render_diskstats(self) -> str:
        lines = []
        for dev in self.all_devices():
            if dev.is_partition and dev.nr_sects == 0:
                continue
            values = " ".join(str(v) for v in dev.stats.fields())
            lines.append(f"{dev.devt[0]:4d} {dev.devt[1]:7d} {dev.name} {values}\n")
        return "".join(lines)
