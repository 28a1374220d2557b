"""The simulated kernel: boots the machine in Linux's order and owns what all subsystems share.

Boot order: mm (RAM, zones, the page allocator), CPUs, the disk image (the
controller, its driver, the partition scan), then the filesystems: rootfs
(tmpfs) at /, proc at /proc, sysfs at /sys, devtmpfs at /dev, debugfs at
/sys/kernel/debug. Subsystems register what /sys shows with the driver core
(`self.core`) as they boot; sysfs and debugfs only render it. The kernel owns
the clock, the kernel log, the task table, the workqueue and the fault
injection attributes (it is configured like a debug kernel: fail_make_request,
fail_io_timeout, fail_page_alloc and the NVMe fault_inject directories are in
debugfs, and the machine's own faults under debugfs rinuxfs/<controller>/);
nothing is module-global, so a test can build a whole kernel in one line and
close it. Disks come and go at any time (hot removal, PCI rescan, SCSI scan):
the block registry's listeners scan a new disk's partitions and give it page
caches and /dev nodes, and take them away again.
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

import trio

from rinuxfs import __version__
from rinuxfs.block.genhd import BlockDevice, BlockRegistry, Gendisk
from rinuxfs.block.partitions import probe
from rinuxfs.block.queue import BlockEnv
from rinuxfs.drivers.ahci import AHCI_PCI_ADDRESS, AHCI_PCI_IDS, AhciDriver
from rinuxfs.drivers.ahci import FIRMWARE as AHCI_FIRMWARE
from rinuxfs.drivers.ahci import MODEL as AHCI_MODEL
from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.cpu import register_cpu_devices
from rinuxfs.drivers.base.debugfs import debugfs_create_dir, debugfs_create_file, fault_create_debugfs_attr
from rinuxfs.drivers.base.device import Device
from rinuxfs.drivers.base.node import register_node_devices
from rinuxfs.drivers.nvme import NVME_PCI_ADDRESS, NVME_PCI_IDS, NvmeDriver
from rinuxfs.drivers.pci import PciBus, PciSlot, Remove
from rinuxfs.errors import KernelError
from rinuxfs.fs.debugfs import DebugfsSuperBlock
from rinuxfs.fs.devfs import DevSuperBlock
from rinuxfs.fs.procfs import ProcSuperBlock
from rinuxfs.fs.sysfs import SysSuperBlock
from rinuxfs.fs.tmpfs import TmpfsSuperBlock
from rinuxfs.fs.vfs import ROOT_CRED, Credentials, Vfs
from rinuxfs.hw.ahci import AhciHba
from rinuxfs.hw.image import DiskImage
from rinuxfs.hw.irq import IrqChip
from rinuxfs.hw.nvme import NvmeController
from rinuxfs.hw.ram import MAX_RAM, PAGE_SIZE
from rinuxfs.ksysfs import register_kernel_attrs
from rinuxfs.lib.fault_inject import FaultAttr, FaultEnv
from rinuxfs.lib.serial import drive_serial
from rinuxfs.mm.bdev_mapping import BlockDeviceMapping
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.fail_page_alloc import FailPageAlloc
from rinuxfs.mm.memblock import (
    KERNEL_BSS_KB,
    KERNEL_CODE_KB,
    KERNEL_INIT_KB,
    KERNEL_RODATA_KB,
    KERNEL_RWDATA_KB,
)
from rinuxfs.mm.mm_sysfs import register_mm_sysfs
from rinuxfs.mm.oom_kill import OomKiller
from rinuxfs.mm.swap_header import MIN_SWAP_PAGES
from rinuxfs.mm.writeback import flusher
from rinuxfs.printk import KERN_EMERG, KERN_NOTICE, KernelLog, LogRecord
from rinuxfs.psi import Psi
from rinuxfs.sched import Clock, CpuAccounting, LoadAverage, Task, TaskTable
from rinuxfs.units import format_size
from rinuxfs.workqueue import WorkQueue

KERNEL_RELEASE = "6.18.0-rinuxfs"
KERNEL_VERSION = "#1 SMP PREEMPT_DYNAMIC Wed Nov 25 00:00:00 UTC 2026"
NR_LEGACY_IRQS = 16


MIN_MEM = 16 << 20  # below this the kernel's own reserves leave nothing to run on
MAX_MEM = MAX_RAM  # x86-64's 46-bit physical address space: 64 TiB


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
    numa: int = 1
    mem_prealloc: bool = False
    swap: str = "auto"  # auto | off | DEV[:PRIO][,DEV[:PRIO]...]
    oom: str = "kill"  # kill | errno
    tmpfs_huge: str = "never"  # the rootfs huge= option: never | always | within_size | advise
    fault_seed: int = 0  # the seed of fault injection's random draws: the same seed, the same failures


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
        self.core = DriverCore()  # the device tree /sys and /sys/kernel/debug render
        register_kernel_attrs(self.core, self)
        self.current: Credentials = ROOT_CRED
        self.on_panic: Callable[[str], None] | None = None  # the daemon's way to stop dead
        self.image: DiskImage | None = None
        self.workqueue = WorkQueue(self.log)
        self._boot_banner()
        self._boot_fault_injection()
        self.mm = self._boot_mm()
        self.mm.should_fail_alloc_page = self.fail_page_alloc.should_fail_alloc_page
        self.cpus = self._boot_cpus()
        register_cpu_devices(self.core, self)
        register_node_devices(self.core, self.mm, self.cpus)
        register_mm_sysfs(self.core, self.mm)
        self.cpu_accounting = CpuAccounting(self.clock, config.cpus)
        self.tasks = TaskTable(self.clock)
        self.loadavg = LoadAverage(self.clock)
        self._boot_tasks()
        try:
            self._boot_storage()
            self.vfs = Vfs()
            self.filesystem_types = [("sysfs", True), ("tmpfs", True), ("devtmpfs", True), ("debugfs", True),
                                     ("proc", True)]
            self._boot_filesystems()
            self._boot_swap()
        except BaseException:
            self.close()
            raise
        self.log.info("Run /sbin/init as init process")

    # --- boot steps --------------------------------------------------------------------

    def _boot_banner(self) -> None:
        u = self.utsname
        self.log.info(f"Linux version {u.release} (rinuxfs@simulator) (rinuxfs {__version__}) {u.version}")
        c = self.config
        cmdline = f"console=ttyS0 mem={c.mem >> 20}M nr_cpus={c.cpus}" + (" gpt" if c.force_gpt else "") \
            + (f" numa=fake={c.numa}" if c.numa > 1 else "")
        self.log.info(f"Command line: {cmdline}")

    def _boot_fault_injection(self) -> None:
        """CONFIG_FAULT_INJECTION and friends: the capabilities, each a debugfs directory (lib/fault-inject.c)."""
        u = self.utsname
        self.fault_env = FaultEnv(self.log.printk, current=self._current_task, whoami=self._whoami,
                                  jiffies=self.clock.uptime_ticks, cpu=self.current_cpu, release=u.release,
                                  version=u.version, seed=self.config.fault_seed)
        debugfs = self.core.debugfs
        self.fail_make_request = FaultAttr("fail_make_request", self.fault_env)
        fault_create_debugfs_attr("fail_make_request", debugfs, self.fail_make_request)
        self.fail_io_timeout = FaultAttr("fail_io_timeout", self.fault_env)
        fault_create_debugfs_attr("fail_io_timeout", debugfs, self.fail_io_timeout)
        self.fail_page_alloc = FailPageAlloc(FaultAttr("fail_page_alloc", self.fault_env))
        self.fail_page_alloc.debugfs(debugfs)
        self.machine_faults = debugfs_create_dir("rinuxfs", debugfs)  # the test bench's knobs, not Linux's

    def _whoami(self) -> tuple[int, int, str]:
        task = self.tasks.get(self.current.pid) if hasattr(self, "tasks") else None
        if task is None:
            return self.current.pid, self.current.uid, "?"
        return task.pid, task.uid, task.comm

    def _boot_mm(self) -> MemoryManager:
        c = self.config
        mem = c.mem
        if not MIN_MEM <= mem <= MAX_MEM or mem % PAGE_SIZE:
            raise KernelError(
                errno.EINVAL,
                f"--mem {format_size(mem)}: RAM must be a multiple of 4K between {format_size(MIN_MEM)}"
                f" and {format_size(MAX_MEM)}",
            )
        try:
            mm = MemoryManager(mem, c.cpus, c.numa, prealloc=c.mem_prealloc, current_cpu=self.current_cpu,
                               current_pid=self.current_pid, log=self.log)
        except ValueError as e:
            raise KernelError(errno.EINVAL, f"bad --mem: {e}") from None
        except KernelError as e:
            if e.errno == errno.EINVAL:
                raise
            raise KernelError(e.errno, f"--mem {format_size(mem)} is too small to boot: {e.args[0]}") from None
        self._log_memory_layout(mm)
        return mm

    def _log_memory_layout(self, mm: MemoryManager) -> None:
        """The boot lines Linux prints about memory, from the machine that was built."""
        a, mb = mm.allocator, mm.memblock
        last = mb.nr_frames * PAGE_SIZE - 1
        if len(a.nodes) > 1:
            for node in a.nodes:
                lo, hi = node.start_pfn * PAGE_SIZE, node.end_pfn * PAGE_SIZE
                self.log.info(f"Faking node {node.nid} at [mem {lo:#018x}-{hi - 1:#018x}] ({(hi - lo) >> 20}MB)")
        self.log.info("Zone ranges:")
        limits = ((PAGE_SIZE, (16 << 20) - 1), (16 << 20, (4 << 30) - 1), (4 << 30, last))
        for name, (lo, hi) in zip(("DMA", "DMA32", "Normal"), limits, strict=True):
            if lo <= last:
                self.log.info(f"  {name:<8} [mem {lo:#018x}-{min(hi, last):#018x}]")
            else:
                self.log.info(f"  {name:<8} empty")
        self.log.info(f"  {'Device':<8} empty")
        self.log.info("Movable zone start for each node")
        self.log.info("Early memory node ranges")
        for node in a.nodes:
            for start, end in mb.usable:
                lo, hi = max(start, node.start_pfn), min(end, node.end_pfn)
                if lo < hi:
                    self.log.info(f"  node {node.nid:3d}: [mem {lo * PAGE_SIZE:#018x}-{hi * PAGE_SIZE - 1:#018x}]")
        for node in a.nodes:
            first = max(node.start_pfn, mb.usable[0][0])
            self.log.info(f"Initmem setup node {node.nid} [mem {first * PAGE_SIZE:#018x}-"
                          f"{node.end_pfn * PAGE_SIZE - 1:#018x}]")
        present = sum(n.present for n in a.nodes)
        kb = PAGE_SIZE // 1024
        self.log.info(
            f"Memory: {a.totalram_pages * kb}K/{present * kb}K available ({KERNEL_CODE_KB}K kernel code, "
            f"{KERNEL_RWDATA_KB}K rwdata, {KERNEL_RODATA_KB}K rodata, {KERNEL_INIT_KB}K init, {KERNEL_BSS_KB}K bss, "
            f"{(present - a.totalram_pages) * kb}K reserved, 0K cma-reserved)"
        )
        if mm.raised_min_free_kbytes is None:
            self.log.info(f"min_free_kbytes: {a.min_free_kbytes}")

    def _boot_cpus(self) -> CpuSet:
        n = self.config.cpus
        cpus = CpuSet(possible=n, online=set(range(n)))
        self.log.info("smp: Bringing up secondary CPUs ...")
        nodes = self.config.numa
        self.log.info(f"smp: Brought up {nodes} node{'s' if nodes > 1 else ''}, {n} CPU{'s' if n > 1 else ''}")
        return cpus

    def _boot_tasks(self) -> None:
        for pid, comm, ppid in ((1, "init", 0), (2, "kthreadd", 0)):
            self.tasks.spawn_kernel_thread(pid, comm, ppid)
            self.mm.task_started()
        for cpu in range(self.config.cpus):
            self.tasks.spawn_kernel_thread(len(self.tasks.tasks) + 1, f"ksoftirqd/{cpu}", 2)
            self.mm.task_started()
        for node in self.mm.allocator.nodes:
            self.tasks.spawn_kernel_thread(len(self.tasks.tasks) + 1, f"kswapd{node.nid}", 2)
            self.mm.task_started()
        self.oom = OomKiller(self.mm, self.log, self.tasks.list, self._current_task, self.panic, self.config.oom)
        self.mm.out_of_memory = self.oom.out_of_memory
        self.psi = Psi(self.clock.uptime)
        self.mm.on_stall = self.psi.stall
        self.panicked = False
        self.drop_caches_quiet = False  # vm.drop_caches bit 4: stop logging drops
        self.oom_adj_warned = False

    def _boot_storage(self) -> None:
        """Build the machine's controller and find the disk as Linux does: PCI scan, driver probe, partitions."""
        self.irqs = IrqChip(self.config.cpus)
        env = BlockEnv(self.log.printk, self.clock.uptime_ticks, self.fail_make_request, self.fail_io_timeout)
        self.block = BlockRegistry(self.core, env)
        self.block.disk_added.append(self._disk_added)
        self.block.disk_removed.append(self._disk_removed)
        self.bdev_mappings: dict[str, BlockDeviceMapping] = {}
        self.storage_driver: NvmeDriver | AhciDriver | None = None
        self.pci = PciBus(self.core, self.log)
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
            self._machine_nvme()
        elif self.config.controller == "ahci":
            self._machine_ahci()
        else:
            raise KernelError(errno.EINVAL, f"unknown controller {self.config.controller!r}: nvme or ahci")

    def _machine_faults(self, name: str, knobs: list[tuple[str, Callable[[], str], Callable[[str], None]]]) -> None:
        directory = debugfs_create_dir(name, self.machine_faults)
        for knob, show, store in knobs:
            debugfs_create_file(knob, 0o600, directory, show, store)

    def _machine_nvme(self) -> None:
        """The NVMe controller in slot 00:04.0; the PCI scan binds the nvme driver to it."""
        def raise_msix(vector: int) -> None:
            driver = self.storage_driver
            if isinstance(driver, NvmeDriver):
                driver.raise_msix(vector)

        assert self.image is not None  # _boot_storage opened it
        ctrl = NvmeController(self.mm.ram, self.image, raise_irq=raise_msix,
                              lba_size=self.config.lba_size, max_queue_pairs=64,
                              serial=drive_serial(self.config.image), model="rinuxfs NVMe disk", firmware=__version__)
        self._machine_faults("nvme0", ctrl.fault_knobs())
        self.pci.add_slot(PciSlot(NVME_PCI_ADDRESS, NVME_PCI_IDS, "nvme", lambda: ctrl.present,
                                  lambda dev: self._bind_nvme(ctrl, dev)))

    def _bind_nvme(self, ctrl: NvmeController, pci: Device) -> Remove:
        driver = NvmeDriver(ctrl, self.mm, self.irqs, self.log, self.config.cpus, self.block.next_nvme_instance(),
                            self.core, fault_env=self.fault_env, wait=self.clock.advance,
                            queue_work=self.workqueue.queue_work)
        self.storage_driver = driver
        try:
            driver.probe(self.block, pci)
        except KernelError:
            self.block.release_nvme_instance(driver.instance)
            raise
        return driver.remove

    def _machine_ahci(self) -> None:
        """The AHCI HBA in slot 00:1f.2 over the kernel's RAM and the image; the PCI scan binds ahci to it."""
        def raise_irq(vector: int) -> None:
            driver = self.storage_driver
            if isinstance(driver, AhciDriver) and driver.irq:
                self.irqs.raise_irq(driver.irq)

        assert self.image is not None  # _boot_storage opened it
        hba = AhciHba(self.mm.ram, self.image, raise_irq=raise_irq,
                      serial=drive_serial(self.config.image), model=AHCI_MODEL, firmware=AHCI_FIRMWARE)
        self._machine_faults("ata1", hba.fault_knobs())
        self.pci.add_slot(PciSlot(AHCI_PCI_ADDRESS, AHCI_PCI_IDS, "ahci", lambda: True,
                                  lambda dev: self._bind_ahci(hba, dev)))

    def _bind_ahci(self, hba: AhciHba, pci: Device) -> Remove:
        driver = AhciDriver(hba, self.mm, self.irqs, self.log, self.core, read_only=self.config.read_only,
                            wait=self.clock.advance, queue_work=self.workqueue.queue_work)
        self.storage_driver = driver
        driver.probe(self.block, pci)
        return driver.remove

    def _disk_added(self, disk: Gendisk) -> None:
        """A disk was registered (boot, rescan, re-attach): its partitions, page caches and /dev nodes."""
        self._scan_partitions(disk)
        devfs = getattr(self, "devfs", None)
        if devfs is not None:
            for dev in disk.devices():
                devfs.add_block_device(self.mm, dev, self.bdev_mappings[dev.name])

    def _disk_removed(self, disk: Gendisk) -> None:
        """del_gendisk: a live disk's page caches are written back first (sync_blockdev), then dropped."""
        devfs = getattr(self, "devfs", None)
        for dev in disk.devices():
            mapping = self.bdev_mappings.pop(dev.name, None)
            if mapping is not None:
                if not disk.dead:
                    try:
                        mapping.writeback()
                    except KernelError as e:
                        self.log.err(f"rinuxfs: {dev.name}: writeback before removal failed: {e.args[0]}")
                mapping.discard_all()
            if devfs is not None:
                devfs.remove_block_device(dev.name)

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
        self.rootfs = TmpfsSuperBlock(self.vfs, mm, size, nr_inodes, mode=0o755, source="rootfs",
                                      huge=self.config.tmpfs_huge)
        self.vfs.mount_root(self.rootfs, "rw,relatime")
        root = self.rootfs.root
        for name, mode in ((b"dev", 0o755), (b"proc", 0o555), (b"sys", 0o555), (b"tmp", 0o1777)):
            d = root.mkdir(name, 0, ROOT_CRED)
            d.mode = stat.S_IFDIR | mode
        self.log.info(f"VFS: Mounted root (tmpfs filesystem) on device {self.rootfs.dev[0]}:{self.rootfs.dev[1]}.")
        self.procfs = ProcSuperBlock(self.vfs, self)
        self.vfs.mount(self.procfs, "/proc", "rw,nosuid,nodev,noexec,relatime")
        self.sysfs = SysSuperBlock(self.vfs, self.core)
        self.vfs.mount(self.sysfs, "/sys", "rw,nosuid,nodev,noexec,relatime")
        self.devfs = DevSuperBlock(self.vfs)
        self.vfs.mount(self.devfs, "/dev", "rw,nosuid,relatime")
        for disk in self.block.disks:
            for dev in disk.devices():
                self.devfs.add_block_device(self.mm, dev, self.bdev_mappings[dev.name])
        self.log.info("devtmpfs: mounted")
        self.debugfs = DebugfsSuperBlock(self.vfs, self.core.debugfs)
        self.vfs.mount(self.debugfs, "/sys/kernel/debug", "rw,nosuid,nodev,noexec,relatime")

    # --- shared services -----------------------------------------------------------------

    def current_pid(self) -> int:
        return self.current.pid

    def current_cpu(self) -> int:
        """The CPU serving the current request: the task's, placed by pid over the online CPUs."""
        online = sorted(self.cpus.online) if hasattr(self, "cpus") else [0]
        return online[self.current.pid % len(online)]

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

    def _boot_swap(self) -> None:
        """swapon -a at boot: every Linux-swap partition with a valid header, or the ones --swap names."""
        c = self.config.swap
        if c == "off" or not self.block.disks:
            return
        wanted: list[tuple[str, int | None]] = []
        if c == "auto":
            for disk in self.block.disks:
                for part in disk.devices()[1:]:
                    if part.type_name in ("Linux swap", "Linux swap / Solaris"):
                        wanted.append((part.name, None))
        else:
            for item in c.split(","):
                name, _, prio = item.partition(":")
                try:
                    wanted.append((name, int(prio) if prio else None))
                except ValueError:
                    raise KernelError(errno.EINVAL, f"--swap {c}: {prio!r} is not a priority") from None
        devices = {dev.name: dev for disk in self.block.disks for dev in disk.devices()}
        for name, prio in wanted:
            bdev = devices.get(name)
            if bdev is None:
                raise KernelError(errno.ENOENT, f"--swap {c}: no block device {name}")
            self.swapon(bdev, prio)

    def swapon(self, bdev: BlockDevice, prio: int | None) -> bool:
        """Activate a swap partition; a bad header leaves it unused, with the kernel's reason in the log."""
        if bdev.size_bytes < MIN_SWAP_PAGES * PAGE_SIZE:  # swapon(8)'s check, before it asks the kernel
            self.log.err(f"swapon: /dev/{bdev.name}: swap space needs to be at least "
                         f"{MIN_SWAP_PAGES * PAGE_SIZE // 1024} KiB")
            return False
        try:
            header = self.bdev_mappings[bdev.name].read(0, PAGE_SIZE)
            solid = not bdev.disk.queue.limits.rotational
            area = self.mm.swap.swapon(bdev, header, prio, solid)
        except KernelError as e:
            self.log.err(e.args[0] if e.args else f"swapon {bdev.name}: {e}")
            return False
        kb = area.pages * 4
        self.log.info(f"Adding {kb}k swap on /dev/{bdev.name}.  Priority:{area.prio} extents:1 across:{kb}k"
                      f"{' SS' if solid else ' '}")
        return True

    def start(self, nursery: trio.Nursery) -> None:
        """The kernel threads: a kswapd per node, the writeback flusher and free page reporting, in the
        daemon's nursery."""
        for node in self.mm.allocator.nodes:
            nursery.start_soon(self.mm.reclaimer.kswapd, node.nid, name=f"kswapd{node.nid}")
        nursery.start_soon(flusher, self.mm, name="writeback")
        if not self.mm.prealloc:
            nursery.start_soon(self.mm.page_reporting.run, name="page_reporting")

    def _current_task(self) -> Task | None:
        return self.tasks.get(self.current.pid) if self.current.pid > 0 else None

    def panic(self, reason: str) -> None:
        """A panicked machine stops where it is: the log gets Linux's line, nothing is flushed."""
        self.log.printk(KERN_EMERG, f"Kernel panic - not syncing: {reason}")
        self.log.printk(KERN_EMERG, f"---[ end Kernel panic - not syncing: {reason} ]---")
        self.panicked = True
        if self.on_panic is not None:
            self.on_panic(reason)

    def sync(self) -> None:
        """Write every dirty page to the disk, flush the device's cache, then the image file.

        Pending work runs first (a removal the workqueue holds). A device that fails does not stop
        the others: everything is tried, each failure logged, and the first one raised at the end,
        so the unmount finishes whatever state the disk is in and still says that data was lost.
        """
        self.workqueue.flush()
        failures: list[KernelError] = []
        for mapping in list(self.bdev_mappings.values()):
            try:
                mapping.writeback()
            except KernelError as e:
                self.log.err(f"rinuxfs: sync: {e.args[0]}")
                failures.append(e)
        for disk in list(self.block.disks):
            if not disk.read_only and not disk.dead and disk.name in self.bdev_mappings:
                try:
                    self.bdev_mappings[disk.name].flush()
                except KernelError as e:
                    self.log.err(f"rinuxfs: sync: {disk.name}: {e.args[0]}")
                    failures.append(e)
        if self.image is not None:
            self.image.flush()
        if failures:
            raise failures[0]

    def close(self) -> None:
        if self.image is not None:
            self.image.close()
            self.image = None
        self.mm.close()
