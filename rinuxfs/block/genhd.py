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
  so /sys shows them (block/disk_attrs.py); `del_gendisk` marks the disk dead
  (GD_DEAD: every later bio fails with EIO, no error line) and takes it and its
  partitions out of the registry and of /sys again. Device numbers, sd names
  and NVMe instances are handed out lowest-free-first and given back on
  removal (Linux's IDAs), so a disk that comes back gets its old name. What the kernel does on
  top (the partition scan, the page caches, /dev nodes) hangs on the
  registry's `disk_added` / `disk_removed` listeners, as udev and devtmpfs
  hang on uevents.
- Fault injection (should_fail_bio): a bio to a disk or partition whose
  make-it-fail is set may fail in submission with EIO, before any request
  exists, when the registry's fail_make_request attribute says so: the whole
  disk's flag first, then the partition's (blk_partition_remap). Such a bio
  ends on its own; the others of the batch still run.
- `bb` is the disk's bad block list when its driver keeps one (the simulated
  drives do: it is their medium's), shown as sys/block/<disk>/badblocks.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field

from rinuxfs.block.bio import SECTOR_SHIFT, Bio, ReqOp
from rinuxfs.block.disk_attrs import register_disk, register_partition, unregister_disk
from rinuxfs.block.errors import BlkError, BlkStatus
from rinuxfs.block.queue import BlockEnv, RequestQueue
from rinuxfs.block.stats import IoStats
from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.device import Device
from rinuxfs.drivers.base.kobject import Kobject
from rinuxfs.errors import KernelError
from rinuxfs.lib.badblocks import BadBlocks
from rinuxfs.printk import KERN_INFO

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
    make_it_fail: bool = False  # sysfs make-it-fail (bd_make_it_fail)

    @property
    def size_bytes(self) -> int:
        return self.nr_sects << SECTOR_SHIFT

    @property
    def is_partition(self) -> bool:
        return self.partno > 0

    def submit(self, bios: list[Bio]) -> None:
        """Check each bio against this device, remap it to disk sectors, and run the batch."""
        disk = self.disk
        if disk.dead:  # bio_queue_enter fails on a dead disk: EIO, and no error line
            error = BlkError(BlkStatus.IOERR, f"{self.name}: the disk is gone", quiet=True)
            for bio in bios:
                bio.error = error
            raise error
        failed: BlkError | None = None
        live: list[Bio] = []
        for bio in bios:
            if disk.whole.make_it_fail and self._should_fail_request(bio):  # should_fail_bio
                failed = bio.error = failed or self._injected()
                continue
            if bio.op.has_data or bio.op in (ReqOp.DISCARD, ReqOp.WRITE_ZEROES):
                if bio.sector < 0 or bio.end_sector > self.nr_sects:
                    raise KernelError(errno.EIO, f"{self.name}: attempt to access beyond end of device")
            # bio_check_ro: an empty FLUSH is not a write, so fsync works on a read-only device.
            if bio.op != ReqOp.READ and bio.op != ReqOp.FLUSH and (self.read_only or disk.read_only):
                raise KernelError(errno.EROFS, f"{self.name} is read-only")
            if self.make_it_fail and self.is_partition and self._should_fail_request(bio):  # blk_partition_remap
                failed = bio.error = failed or self._injected()
                continue
            bio.sector += self.start_sect
            bio.bdev = self
            live.append(bio)
        if live:
            disk.queue.submit(live)
        if failed is not None:
            raise failed

    def _should_fail_request(self, bio: Bio) -> bool:
        """should_fail_request for a device whose make-it-fail is set (the callers test it): fail_make_request."""
        attr = self.disk.queue.env.fail_make_request
        return attr is not None and attr.should_fail(
            bio.nr_sectors << SECTOR_SHIFT, stack=("should_fail_bio", "submit_bio_noacct", "submit_bio"))

    def _injected(self) -> BlkError:
        return BlkError(BlkStatus.IOERR, f"{self.name}: I/O error injected by fail_make_request", quiet=True)


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
    bb: BadBlocks | None = None  # the driver's bad block list (disk->bb), shown as sys/block/<disk>/badblocks
    dead: bool = False  # GD_DEAD: removed, or its controller died; every bio fails with EIO

    def __post_init__(self) -> None:
        self.whole = BlockDevice(self, 0, self.name, (self.major, self.first_minor), 0, self.nr_sects)
        self.queue.disk = self

    def partition_name(self, partno: int) -> str:
        sep = "p" if self.name[-1].isdigit() else ""
        return f"{self.name}{sep}{partno}"

    def devices(self) -> list[BlockDevice]:
        return [self.whole, *(self.parts[n] for n in sorted(self.parts))]


class BlockRegistry:
    """All registered disks, and the device numbers handed out so far."""

    def __init__(self, core: DriverCore, env: BlockEnv | None = None) -> None:
        self.core = core
        self.env = env or BlockEnv()
        self.block_class = core.class_register("block", block=True)
        self.disks: list[Gendisk] = []
        self._ext_minors: set[int] = set()  # ext_devt_ida, sd_index_ida, nvme_instance_ida: lowest free first
        self._sd_indexes: set[int] = set()
        self._nvme_ids: set[int] = set()
        self.disk_added: list[Callable[[Gendisk], None]] = []  # run after a disk is registered
        self.disk_removed: list[Callable[[Gendisk], None]] = []  # run before a disk leaves /sys
        self.diskseq = 0

    @staticmethod
    def _ida_alloc(used: set[int]) -> int:
        """ida_alloc: the lowest number not in use, which a removed device gives back."""
        n = 0
        while n in used:
            n += 1
        used.add(n)
        return n

    def sd_name_and_devt(self) -> tuple[str, int, int]:
        """The next SCSI disk name (sda, sdb, …, sdz, sdaa…) and its first minor."""
        index = self._ida_alloc(self._sd_indexes)
        name = ""
        n = index
        while True:
            name = chr(ord("a") + n % 26) + name
            n = n // 26 - 1
            if n < 0:
                break
        return f"sd{name}", SCSI_DISK0_MAJOR, index * SD_MINORS

    def next_ext_minor(self) -> int:
        return self._ida_alloc(self._ext_minors)

    def next_nvme_instance(self) -> int:
        return self._ida_alloc(self._nvme_ids)

    def release_nvme_instance(self, instance: int) -> None:
        self._nvme_ids.discard(instance)

    def _release_numbers(self, disk: Gendisk) -> None:
        for dev in disk.devices():
            if dev.devt[0] == BLOCK_EXT_MAJOR:
                self._ext_minors.discard(dev.devt[1])
        if disk.major == SCSI_DISK0_MAJOR:
            self._sd_indexes.discard(disk.first_minor // SD_MINORS)

    def add_disk(self, disk: Gendisk, parent: Kobject) -> Device:
        """device_add_disk: number the disk, list it, register it below its driver's device `parent`."""
        self.diskseq += 1
        disk.diskseq = self.diskseq
        disk.queue.env = self.env
        self.disks.append(disk)
        dev = register_disk(disk, parent, self.block_class, self.core.block_kobj)
        for listener in self.disk_added:
            listener(disk)
        return dev

    def del_gendisk(self, disk: Gendisk) -> None:
        """The disk is dead from now on; it and its partitions leave the registry and /sys."""
        if disk not in self.disks:
            return
        for listener in self.disk_removed:  # a live disk's caches are written back first (sync_blockdev)
            listener(disk)
        disk.dead = True
        unregister_disk(disk, self.core.block_kobj)
        self.disks.remove(disk)
        self._release_numbers(disk)

    def set_capacity_and_notify(self, disk: Gendisk, nr_sects: int) -> None:
        """The disk's new size, and the line Linux prints when a live disk's size changes.

        Partitions keep their extents, as in Linux: only a new partition scan changes them.
        """
        old = disk.nr_sects
        disk.nr_sects = disk.whole.nr_sects = nr_sects
        if nr_sects != old and disk in self.disks:
            self.env.printk(KERN_INFO, f"{disk.name}: detected capacity change from {old} to {nr_sects}")

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
