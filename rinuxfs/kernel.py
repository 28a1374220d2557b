"""The simulated kernel: boots the machine in Linux's order and owns what all subsystems share.

Boot order: mm (RAM, zones, the page allocator), CPUs, the disk image (the
storage work adds the controller, driver and partition scan here), then the
filesystems: rootfs (tmpfs) at /, proc at /proc, sysfs at /sys, devtmpfs at
/dev. The kernel owns the clock, the kernel log and the task table; nothing
is module-global, so a test can build a whole kernel in one line and close it.
"""

from __future__ import annotations

import errno
import platform
import stat
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rinuxfs import __version__
from rinuxfs.block.genhd import BlockRegistry, Gendisk
from rinuxfs.block.partitions import probe
from rinuxfs.drivers.nvme import NvmeDriver
from rinuxfs.errors import KernelError
from rinuxfs.fs.devfs import DevSuperBlock
from rinuxfs.fs.procfs import ProcSuperBlock
from rinuxfs.fs.sysfs import SysSuperBlock
from rinuxfs.fs.sysfs_block import add_disk
from rinuxfs.fs.tmpfs import TmpfsSuperBlock
from rinuxfs.fs.vfs import ROOT_CRED, Credentials, Vfs
from rinuxfs.hw.image import DiskImage
from rinuxfs.hw.irq import IrqChip
from rinuxfs.hw.nvme import NvmeController
from rinuxfs.hw.ram import PAGE_SIZE
from rinuxfs.mm.bdev_mapping import BlockDeviceMapping
from rinuxfs.mm.core import MemoryManager
from rinuxfs.printk import KERN_NOTICE, KernelLog, LogRecord
from rinuxfs.sched import Clock, CpuAccounting, LoadAverage, TaskTable
from rinuxfs.units import format_size

KERNEL_RELEASE = "6.18.0-rinuxfs"
KERNEL_VERSION = "#1 SMP PREEMPT_DYNAMIC Wed Nov 25 00:00:00 UTC 2026"
NR_LEGACY_IRQS = 16


def _serial(image: Path | None) -> str:
    """A serial number stable for one image path, as a disk keeps its own."""
    import zlib

    return f"RNX{zlib.crc32(str(image).encode()):08X}"


def string_get_size(size: int, blk_size: int, divisor: int) -> str:
    """lib/string_helpers.c string_get_size: "67.1 MB" (divisor 1000) or "64.0 MiB" (1024), 3 significant digits."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB") if divisor == 1000 else \
        ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    if not size or not blk_size:
        return "0 B"
    i = remainder = 0
    while blk_size >> 32:
        blk_size //= divisor
        i += 1
    while size >> 32:
        size //= divisor
        i += 1
    size *= blk_size
    while size >= divisor:
        size, remainder = divmod(size, divisor)
        i += 1
    digits, cap = 0, size  # how many decimals keep three significant digits
    while cap * 10 < 1000:
        cap *= 10
        digits += 1
    if divisor == 1024:
        remainder = remainder * 1000 >> 10
    remainder += (500, 50, 5)[digits] if digits < 3 else 0
    if remainder >= 1000:
        remainder -= 1000
        size += 1
    tail = f".{remainder:03d}"[:digits + 1] if digits else ""
    return f"{size}{tail} {units[i] if i < len(units) else 'UNK'}"


MIN_MEM = 16 << 20  # below this the kernel's own reserves leave nothing to run on
MAX_MEM = 16 << 30  # the frame tables are Python lists: keep boot quick and the host safe


@dataclass
class KernelConfig:
    image: Path | None
    controller: str = "nvme"
    mem: int = 256 << 20
    cpus: int = 2
    tmpfs_size: int | None = None  # default: half of RAM, as Linux tmpfs
    read_only: bool = False
    force_gpt: bool = False
    lba_size: int = 512


@dataclass
class UtsName:
    sysname: str = "Linux"
    nodename: str = "rinux"
    release: str = KERNEL_RELEASE
    version: str = KERNEL_VERSION
    machine: str = "x86_64"
    domainname: str = "(none)"


@dataclass
class CpuSet:
    possible: int
    online: set[int] = field(default_factory=set)
    model_name: str = "rinuxfs virtual CPU @ 2.40GHz"
    mhz: float = 2400.0


class Kernel:
    def __init__(self, config: KernelConfig, log_echo: Callable[[LogRecord], None] | None = None) -> None:
        if config.cpus < 1 or config.cpus > 64:
            raise KernelError(errno.EINVAL, f"--cpus must be between 1 and 64, not {config.cpus}")
        self.config = config
        self.clock = Clock()
        self.log = KernelLog(self.clock.uptime_usec, log_echo)
        self.utsname = UtsName()
        self.python_version = platform.python_version()
        self.boot_id = str(uuid.uuid4())
        self.stats: Counter[str] = Counter()
        self.sysctl: dict[str, int] = {"rcu_expedited": 0, "rcu_normal": 0}
        self.uevent_seqnum = 0
        self.current: Credentials = ROOT_CRED
        self.image: DiskImage | None = None
        self._boot_banner()
        self.mm = self._boot_mm()
        self.cpus = self._boot_cpus()
        self.cpu_accounting = CpuAccounting(self.clock, config.cpus)
        self.tasks = TaskTable(self.clock)
        self.loadavg = LoadAverage(self.clock)
        self._boot_tasks()
        try:
            self._boot_storage()
            self.vfs = Vfs()
            self.filesystem_types = [("sysfs", True), ("tmpfs", True), ("devtmpfs", True), ("proc", True)]
            self._boot_filesystems()
        except BaseException:
            self.close()
            raise
        self.log.info("Run /sbin/init as init process")

    # --- boot steps --------------------------------------------------------------------

    def _boot_banner(self) -> None:
        u = self.utsname
        self.log.info(f"Linux version {u.release} (rinuxfs@simulator) (rinuxfs {__version__}) {u.version}")
        c = self.config
        cmdline = f"console=ttyS0 mem={c.mem >> 20}M nr_cpus={c.cpus}" + (" gpt" if c.force_gpt else "")
        self.log.info(f"Command line: {cmdline}")

    def _boot_mm(self) -> MemoryManager:
        mem = self.config.mem
        if not MIN_MEM <= mem <= MAX_MEM or mem % PAGE_SIZE:
            raise KernelError(
                errno.EINVAL,
                f"--mem {format_size(mem)}: RAM must be a multiple of 4K between {format_size(MIN_MEM)}"
                f" and {format_size(MAX_MEM)}",
            )
        try:
            mm = MemoryManager(mem, self.config.cpus)
        except ValueError as e:
            raise KernelError(errno.EINVAL, f"bad --mem: {e}") from None
        except KernelError as e:
            raise KernelError(e.errno, f"--mem {self.config.mem >> 20}M is too small to boot: {e.args[0]}") from None
        a = mm.allocator
        self.log.info("Zone ranges:")
        for zone in a.zones[:3]:
            if zone.spanned:
                end = (zone.start_pfn + zone.spanned) * PAGE_SIZE - 1
                self.log.info(f"  {zone.name:<8} [mem {zone.start_pfn * PAGE_SIZE:#018x}-{end:#018x}]")
            else:
                self.log.info(f"  {zone.name:<8} empty")
        total_kb = a.nr_frames * PAGE_SIZE // 1024
        avail_kb = a.totalram_pages * PAGE_SIZE // 1024
        self.log.info(
            f"Memory: {avail_kb}K/{total_kb}K available ({a.reserved_pages * 4}K reserved, 0K cma-reserved)"
        )
        self.log.info(f"min_free_kbytes: {a.min_free_kbytes}")
        return mm

    def _boot_cpus(self) -> CpuSet:
        n = self.config.cpus
        cpus = CpuSet(possible=n, online=set(range(n)))
        self.log.info("smp: Bringing up secondary CPUs ...")
        self.log.info(f"smp: Brought up 1 node, {n} CPU{'s' if n > 1 else ''}")
        return cpus

    def _boot_tasks(self) -> None:
        for pid, comm, ppid in ((1, "init", 0), (2, "kthreadd", 0)):
            self.tasks.spawn_kernel_thread(pid, comm, ppid)
            self.mm.task_started()
        for cpu in range(self.config.cpus):
            self.tasks.spawn_kernel_thread(len(self.tasks.tasks) + 1, f"ksoftirqd/{cpu}", 2)
            self.mm.task_started()
        self.tasks.spawn_kernel_thread(len(self.tasks.tasks) + 1, "kswapd0", 2)
        self.mm.task_started()

    def _boot_storage(self) -> None:
        """Find the disk as Linux does: controller probe, gendisk, then the partition scan."""
        self.irqs = IrqChip(self.config.cpus)
        self.block = BlockRegistry()
        self.bdev_mappings: dict[str, BlockDeviceMapping] = {}
        if self.config.image is None:
            return
        self.image = DiskImage(self.config.image, self.config.read_only)
        self.config.read_only = self.image.read_only
        mode = "read-only" if self.image.read_only else "read-write"
        self.log.info(f"rinuxfs: disk image {self.image.path} ({self.image.size} bytes, {mode})")
        if self.image.write_protected:  # as Linux does for write-protected media: carry on read-only
            self.log.printk(KERN_NOTICE, f"rinuxfs: disk image is write-protected ({self.image.write_protected}), "
                                         "using it read-only")
        if not self.image.locked:
            self.log.warn("rinuxfs: the image's filesystem has no OFD locks: another writer is not kept out")
        if self.config.controller == "nvme":
            disk = self._probe_nvme()
        elif self.config.controller == "ahci":
            disk = self._probe_ahci()
        else:
            raise KernelError(errno.EINVAL, f"unknown controller {self.config.controller!r}: nvme or ahci")
        self.block.add_disk(disk)
        disk.queue.log = self.log  # blk_print_req_error's lines
        self._scan_partitions(disk)

    def _probe_nvme(self) -> Gendisk:
        driver: NvmeDriver | None = None

        def raise_msix(vector: int) -> None:
            if driver is not None:
                driver.raise_msix(vector)

        ctrl = NvmeController(self.mm.ram, self.image, raise_irq=raise_msix,  # type: ignore[arg-type]
                              lba_size=self.config.lba_size, max_queue_pairs=64,
                              serial=_serial(self.config.image), model="rinuxfs NVMe disk", firmware=__version__)
        driver = NvmeDriver(ctrl, self.mm, self.irqs, self.log, self.config.cpus, self.block.next_nvme_instance())
        self.storage_driver = driver
        return driver.probe(self.block)

    def _probe_ahci(self) -> Gendisk:
        from rinuxfs.drivers.ahci import probe_ahci

        disk, self.storage_driver = probe_ahci(self)
        return disk

    def _scan_partitions(self, disk: Gendisk) -> None:
        mapping = self.bdev_mappings[disk.name] = BlockDeviceMapping(self.mm, disk.whole)

        def read_sectors(first: int, count: int) -> bytes:
            return bytes(mapping.read(first * 512, count * 512))

        result = probe(read_sectors, disk.nr_sects, disk.queue.limits.logical_block_size,
                       force_gpt=self.config.force_gpt, disk_name=disk.name)
        for level, text in result.messages:
            self.log.printk(level, text)
        table = result.table
        if table is None:
            if result.reason:
                self.log.info(f"{disk.name}: no partition table recognised ({result.reason})")
            return
        disk.pttype, disk.ptuuid = table.label, table.disk_id
        for p in table.partitions:
            part = self.block.add_partition(disk, p.number, p.start, p.size, uuid=p.uuid, label=p.volname,
                                            type_name=p.type_name)
            part.bootable = p.bootable
            self.bdev_mappings[part.name] = BlockDeviceMapping(self.mm, part)

    def _boot_filesystems(self) -> None:
        mm = self.mm
        total = mm.allocator.totalram_pages * PAGE_SIZE
        size = self.config.tmpfs_size if self.config.tmpfs_size is not None else total // 2
        nr_inodes = min(mm.allocator.totalram_pages, mm.allocator.totalram_pages // 2)
        self.rootfs = TmpfsSuperBlock(self.vfs, mm, size, nr_inodes, mode=0o755, source="rootfs")
        self.vfs.mount_root(self.rootfs, "rw,relatime")
        root = self.rootfs.root
        for name, mode in ((b"dev", 0o755), (b"proc", 0o555), (b"sys", 0o555), (b"tmp", 0o1777)):
            d = root.mkdir(name, 0, ROOT_CRED)
            d.mode = stat.S_IFDIR | mode
        self.log.info(f"VFS: Mounted root (tmpfs filesystem) on device {self.rootfs.dev[0]}:{self.rootfs.dev[1]}.")
        self.procfs = ProcSuperBlock(self.vfs, self)
        self.vfs.mount(self.procfs, "/proc", "rw,nosuid,nodev,noexec,relatime")
        self.sysfs = SysSuperBlock(self.vfs, self)
        self.vfs.mount(self.sysfs, "/sys", "rw,nosuid,nodev,noexec,relatime")
        self.devfs = DevSuperBlock(self.vfs)
        self.vfs.mount(self.devfs, "/dev", "rw,nosuid,relatime")
        for disk in self.block.disks:
            for dev in disk.devices():
                self.devfs.add_block_device(self.mm, dev, self.bdev_mappings[dev.name])
            disk_dir, device_dir = self.storage_driver.add_sysfs(self.sysfs.root, disk)
            add_disk(self.sysfs.root, disk, disk_dir, device_dir)
        self.log.info("devtmpfs: mounted")

    # --- shared services -----------------------------------------------------------------

    def current_pid(self) -> int:
        return self.current.pid

    def timer_ticks(self) -> list[int]:
        """Local timer interrupts per CPU: one per jiffy while the CPU is online (HZ = USER_HZ here)."""
        return [self.clock.uptime_ticks() if c in self.cpus.online else 0 for c in range(self.cpus.possible)]

    def irq_counts(self) -> list[int]:
        """Interrupts by number since boot, for the `intr` line of /proc/stat."""
        lines = self.irqs.lines
        counts = [0] * max(NR_LEGACY_IRQS, max(lines, default=0) + 1)
        counts[0] = sum(self.timer_ticks())
        for irq, line in lines.items():
            counts[irq] = sum(line.counts)
        return counts

    def set_cpu_online(self, cpu: int, online: bool) -> None:
        # Close the accounting period first, so the ticks so far go to the CPUs online until now.
        self.cpu_accounting.advance(self.cpus.online)
        if online and cpu not in self.cpus.online:
            self.cpus.online.add(cpu)
            self.log.info(f"smpboot: Booting Node 0 Processor {cpu} APIC {cpu:#x}")
        elif not online and cpu in self.cpus.online:
            self.cpus.online.discard(cpu)
            self.log.info(f"smpboot: CPU {cpu} is now offline")
        self.cpu_accounting.advance(self.cpus.online)

    def sync(self) -> None:
        """Write every dirty page to the disk, flush the device's cache, then the image file."""
        for mapping in self.bdev_mappings.values():
            mapping.writeback()
        for disk in self.block.disks:
            if not disk.read_only:
                self.bdev_mappings[disk.name].flush()
        if self.image is not None:
            self.image.flush()

    def close(self) -> None:
        if self.image is not None:
            self.image.close()
            self.image = None
        self.mm.close()
