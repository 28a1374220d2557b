"""Disks and partitions as devices of the block class (device_add_disk, add_partition, del_gendisk).

Contract:
- `register_disk(disk, parent, block_class, block_kobj)` registers the whole disk as a device of
  class block below `parent` (its driver's device: nvme0, or the SCSI device 0:0:0:0, which
  puts it in a `block/` glue directory) with genhd.c's disk_attrs, holders/, slaves/ and queue/,
  and links block/<disk> to it; `register_partition(part, block_class)` does partitions/core.c's
  part for one partition, below its disk. Each sets `BlockDevice.device`.
- `unregister_disk(disk, block_kobj)` takes the partitions, the block/ link and the disk out again.
- The fault-injection kernel's files (CONFIG_FAIL_MAKE_REQUEST, CONFIG_FAIL_IO_TIMEOUT):
  make-it-fail on disks and partitions (part_fail_store: sscanf "%d", a non-number changes
  nothing and the write still succeeds), io-timeout-fail on disks (part_timeout_store:
  simple_strtoul base 10 into an int, so a non-number, " 1" or "-1" clears it); and badblocks on
  a disk whose driver keeps a bad-block list (disk_visible shows it only when disk->bb is set).
- Everything is rendered from the Gendisk and BlockDevice at each read; with the device core's
  own links (class/block/<name>, dev/block/MAJ:MIN, subsystem, device) that is the layout
  lsblk --sysroot walks:
      devices/<controller path>/<disk>/            attributes, queue/, <part>/
      block/<disk>                    -> the disk directory
      class/block/<disk or part>      -> the disk or partition directory
      dev/block/<major>:<minor>       -> the disk or partition directory
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rinuxfs.block.blk_sysfs import add_queue_dir
from rinuxfs.block.partitions import DISK_MAX_PARTS
from rinuxfs.drivers.base.devclass import Class
from rinuxfs.drivers.base.device import Device, device_register, device_unregister
from rinuxfs.drivers.base.kobject import Kobject, const, kobject_create, sysfs_create_link, sysfs_remove_link
from rinuxfs.lib.kstrtox import s32, simple_strtoull, sscanf_int

if TYPE_CHECKING:
    from rinuxfs.block.genhd import BlockDevice, Gendisk

DISK_CAPABILITY = 0x0  # GENHD_FL_* of a modern disk: nothing the old flags say (removable media, …)


def register_disk(disk: Gendisk, parent: Kobject, block_class: Class, block_kobj: Kobject) -> Device:
    whole = disk.whole
    dev = Device(disk.name, parent, cls=block_class, devt=whole.devt, devtype="disk",
                 uevent=lambda: [f"DISKSEQ={disk.diskseq}"])
    _common_attrs(dev, whole)
    dev.add_attr("range", lambda: f"{disk.minors}\n")
    dev.add_attr("ext_range", const(f"{DISK_MAX_PARTS}\n"))  # disk_ext_range_show: every disk here can be partitioned
    dev.add_attr("removable", lambda: f"{int(disk.removable)}\n")
    dev.add_attr("hidden", const("0\n"))
    dev.add_attr("capability", const(f"{DISK_CAPABILITY:x}\n"))
    dev.add_attr("diskseq", lambda: f"{disk.diskseq}\n")
    dev.add_attr("events", const("\n"))
    dev.add_attr("events_async", const("\n"))
    dev.add_attr("events_poll_msecs", const("-1\n"))
    kobject_create("slaves", dev)
    add_queue_dir(dev, disk.queue)
    dev.add_attr("io-timeout-fail", lambda: f"{int(disk.queue.fail_io)}\n",
                 lambda text: _store_io_timeout_fail(disk, text))
    if disk.bb is not None:
        bb = disk.bb
        dev.add_attr("badblocks", bb.show, bb.store)
    whole.device = device_register(dev)
    sysfs_create_link(block_kobj, disk.name, dev)
    return dev


def register_partition(part: BlockDevice, block_class: Class) -> Device:
    disk_dev = part.disk.whole.device
    if disk_dev is None:
        raise ValueError(f"{part.name}: its disk {part.disk.name} is not registered")
    dev = Device(part.name, disk_dev, cls=block_class, devt=part.devt, devtype="partition",
                 uevent=lambda: _part_uevent(part))
    _common_attrs(dev, part)
    dev.add_attr("partition", const(f"{part.partno}\n"))
    dev.add_attr("start", lambda: f"{part.start_sect}\n")
    part.device = device_register(dev)
    return dev


def unregister_disk(disk: Gendisk, block_kobj: Kobject) -> None:
    for part in disk.parts.values():
        unregister_partition(part)
    sysfs_remove_link(block_kobj, disk.name)
    if disk.whole.device is not None:
        device_unregister(disk.whole.device)
        disk.whole.device = None


def unregister_partition(part: BlockDevice) -> None:
    if part.device is not None:
        device_unregister(part.device)
        part.device = None


def _common_attrs(dev: Device, bdev: BlockDevice) -> None:
    """What disks and partitions both have (the core adds dev, uevent and power/)."""
    dev.add_attr("size", lambda: f"{bdev.nr_sects}\n")
    dev.add_attr("ro", lambda: f"{int(bdev.read_only or bdev.disk.read_only)}\n")
    dev.add_attr("alignment_offset", const("0\n"))
    dev.add_attr("discard_alignment", const("0\n"))
    dev.add_attr("stat", bdev.stats.render_stat)
    dev.add_attr("inflight", bdev.stats.render_inflight)
    dev.add_attr("make-it-fail", lambda: f"{int(bdev.make_it_fail)}\n", lambda text: _store_make_it_fail(bdev, text))
    kobject_create("holders", dev)


def _store_make_it_fail(bdev: BlockDevice, text: str) -> None:
    """part_fail_store: sscanf("%d"); nothing parsed changes nothing, and the write succeeds anyway."""
    value = sscanf_int(text.encode(errors="surrogateescape"))
    if value is not None:
        bdev.make_it_fail = value != 0


def _store_io_timeout_fail(disk: Gendisk, text: str) -> None:
    """part_timeout_store: `int val = simple_strtoul(buf, &p, 10)`, so what sets it is what an int keeps."""
    value, _ = simple_strtoull(text.encode(errors="surrogateescape"), 10)
    disk.queue.fail_io = s32(value) != 0


def _part_uevent(part: BlockDevice) -> list[str]:
    """part_uevent: PARTN, then PARTNAME and PARTUUID when the table gave them."""
    lines = [f"PARTN={part.partno}"]
    if part.label:
        lines.append(f"PARTNAME={part.label}")
    if part.uuid:
        lines.append(f"PARTUUID={part.uuid}")
    return lines
