"""The block devices in sysfs: a disk's directory, its queue/ and partitions, and the links to them.

Rendered from the Gendisk and BlockDevice objects at each read, like every
sysfs attribute; the layout is Linux's (block/genhd.c disk_attrs,
block/partitions/core.c part_attrs, block/blk-sysfs.c queue attributes), so
that `lsblk --sysroot` walks it as it walks a real /sys:
  devices/<controller path>/<disk>/            attributes, queue/, <part>/
  block/<disk>                    -> the disk directory
  class/block/<disk or part>      -> the disk or partition directory
  dev/block/<major>:<minor>       -> the disk or partition directory
"""

from __future__ import annotations

import errno
import posixpath
from collections.abc import Callable

from rinuxfs.block.genhd import BlockDevice, Gendisk
from rinuxfs.block.partitions import DISK_MAX_PARTS
from rinuxfs.block.queue import SCHEDULERS
from rinuxfs.errors import KernelError
from rinuxfs.fs.kernfs import GenDir
from rinuxfs.fs.sysfs import attr

DISK_CAPABILITY = 0x0  # GENHD_FL_* of a modern disk: nothing the old flags say (removable media, …)


def queue_var_store(text: str) -> int:
    """blk-sysfs.c queue_var_store: kstrtoul base 10 (an optional '+', one trailing newline), at most UINT_MAX.

    Every failure, overflow included, is EINVAL there; "0x10" is not a number in base 10.
    """
    body = text[:-1] if text.endswith("\n") else text
    digits = body[1:] if body.startswith("+") else body
    if not digits.isascii() or not digits.isdigit() or int(digits) > 0xFFFFFFFF:
        raise KernelError(errno.EINVAL, f"not a number for a queue attribute: {text!r}")
    return int(digits)


def kernfs_target_path(directory: str, target: str) -> str:
    """kernfs_get_target_path: the text of a symlink in /sys/`directory` that points to /sys/`target`.

    It climbs from the link's directory to the first ancestor of the target's parent, then
    names the way down, so a link to an ancestor still ends in that ancestor's name:
    /sys/block/sda/device is "../../../0:0:0:0", never "../.." (lsblk takes HCTL and the
    SCSI host, hence TRAN, from that last component).
    """
    base = [c for c in directory.split("/") if c]
    dest = [c for c in target.split("/") if c]
    ups = 0
    while base and dest[:-1][:len(base)] != base:
        base.pop()
        ups += 1
    return "../" * ups + "/".join(dest[len(base):])


def link(root: GenDir, at: str, target: str) -> None:
    """A symlink at /sys/`at` pointing to /sys/`target`, written relative as sysfs does."""
    directory, name = posixpath.split(at)
    root.path(directory).add_symlink(name, kernfs_target_path(directory, target))


def add_disk(root: GenDir, disk: Gendisk, disk_dir: str, device_dir: str | None) -> None:
    """Create /sys entries for `disk` at devices path `disk_dir`; `device_dir` is its parent device."""
    d = root.path(disk_dir)
    _device_attrs(d, disk.whole)
    attr(d, "range", lambda: f"{disk.minors}\n")
    attr(d, "ext_range", lambda: f"{DISK_MAX_PARTS}\n")  # disk_ext_range_show: every disk here can be partitioned
    attr(d, "removable", lambda: f"{int(disk.removable)}\n")
    attr(d, "hidden", lambda: "0\n")
    attr(d, "capability", lambda: f"{DISK_CAPABILITY:x}\n")
    attr(d, "diskseq", lambda: f"{disk.diskseq}\n")
    attr(d, "events", lambda: "\n")
    attr(d, "events_async", lambda: "\n")
    attr(d, "events_poll_msecs", lambda: "-1\n")
    d.dir("slaves")
    _queue_dir(d.dir("queue"), disk)
    if device_dir is not None:
        link(root, f"{disk_dir}/device", device_dir)
    link(root, f"{disk_dir}/subsystem", "class/block")
    link(root, f"block/{disk.name}", disk_dir)
    link(root, f"class/block/{disk.name}", disk_dir)
    link(root, f"dev/block/{disk.whole.devt[0]}:{disk.whole.devt[1]}", disk_dir)
    for part in disk.parts.values():
        add_partition(root, disk_dir, part)


def add_partition(root: GenDir, disk_dir: str, part: BlockDevice) -> None:
    part_dir = f"{disk_dir}/{part.name}"
    d = root.path(part_dir)
    _device_attrs(d, part)
    attr(d, "partition", lambda: f"{part.partno}\n")
    attr(d, "start", lambda: f"{part.start_sect}\n")
    link(root, f"{part_dir}/subsystem", "class/block")
    link(root, f"class/block/{part.name}", part_dir)
    link(root, f"dev/block/{part.devt[0]}:{part.devt[1]}", part_dir)


def _device_attrs(d: GenDir, dev: BlockDevice) -> None:
    """What disks and partitions both have."""
    attr(d, "dev", lambda: f"{dev.devt[0]}:{dev.devt[1]}\n")
    attr(d, "size", lambda: f"{dev.nr_sects}\n")
    attr(d, "ro", lambda: f"{int(dev.read_only or dev.disk.read_only)}\n")
    attr(d, "alignment_offset", lambda: "0\n")
    attr(d, "discard_alignment", lambda: "0\n")
    attr(d, "stat", dev.stats.render_stat)
    attr(d, "inflight", dev.stats.render_inflight)
    attr(d, "uevent", lambda: _uevent(dev))
    d.dir("holders")
    d.dir("power")


def _uevent(dev: BlockDevice) -> str:
    lines = [f"MAJOR={dev.devt[0]}", f"MINOR={dev.devt[1]}", f"DEVNAME={dev.name}"]
    if dev.is_partition:
        lines.append("DEVTYPE=partition")
        lines.append(f"PARTN={dev.partno}")
        if dev.label:
            lines.append(f"PARTNAME={dev.label}")
        if dev.uuid:
            lines.append(f"PARTUUID={dev.uuid}")
    else:
        lines.append("DEVTYPE=disk")
        lines.append(f"DISKSEQ={dev.disk.diskseq}")
    return "\n".join(lines) + "\n"


def _queue_dir(q: GenDir, disk: Gendisk) -> None:
    queue = disk.queue
    limits = queue.limits

    def show(name: str) -> Callable[[], str]:
        return lambda: f"{getattr(limits, name)}\n"

    for name in ("logical_block_size", "physical_block_size", "max_hw_sectors_kb", "max_segments",
                 "rotational", "discard_granularity", "discard_max_hw_bytes", "write_zeroes_max_bytes"):
        attr(q, name, show(name))
    attr(q, "hw_sector_size", show("logical_block_size"))
    attr(q, "minimum_io_size", show("physical_block_size"))
    attr(q, "optimal_io_size", lambda: "0\n")
    attr(q, "max_segment_size", lambda: "4294967295\n")
    attr(q, "discard_zeroes_data", lambda: "0\n")
    attr(q, "zoned", lambda: "none\n")
    attr(q, "nr_zones", lambda: "0\n")
    attr(q, "chunk_sectors", lambda: "0\n")
    attr(q, "nomerges", lambda: "0\n")
    attr(q, "rq_affinity", lambda: "1\n")
    attr(q, "iostats", lambda: "1\n")
    attr(q, "add_random", lambda: "0\n")
    attr(q, "dax", lambda: "0\n")
    attr(q, "fua", lambda: "0\n")
    attr(q, "write_cache", lambda: f"{limits.write_cache}\n")
    attr(q, "scheduler", lambda: " ".join(f"[{s}]" if s == queue.scheduler else s for s in SCHEDULERS) + "\n",
         queue.set_scheduler)
    attr(q, "nr_requests", show("nr_requests"), lambda v: queue.set_nr_requests(queue_var_store(v)))
    attr(q, "read_ahead_kb", show("read_ahead_kb"), lambda v: queue.set_read_ahead_kb(queue_var_store(v)))
    attr(q, "max_sectors_kb", show("max_sectors_kb"), lambda v: queue.set_max_sectors_kb(queue_var_store(v)))
    attr(q, "discard_max_bytes", show("discard_max_bytes"))
