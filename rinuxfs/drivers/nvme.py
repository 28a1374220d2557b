"""The NVMe host driver (drivers/nvme/host/{core,pci,fault_inject}.c), over the NVMe controller model.

Contract:
- `probe(registry, pci)` does what nvme_probe → nvme_reset_work does: disable the
  controller, set up the admin queue (AQA, ASQ, ACQ as lo/hi writes), enable
  and wait for CSTS.RDY, Identify the controller, ask for one I/O queue pair
  per CPU (Set Features, Number of Queues), create each pair (CQ, then SQ)
  with its own MSI-X vector, then Identify the namespaces and return a
  Gendisk for namespace 1 (nvme<instance>n1, major 259) with queue limits
  taken from Identify (MDTS, LBA format, VWC, ONCS). It binds to the PCI
  function `pci` and registers below it the controller nvme<N> (class nvme,
  char device 240:N, with model, serial, firmware_rev, state, …, and the
  write-only reset_controller and rescan_controller), and the disk with nsid
  and wwid; and the debugfs fault_inject directories of the namespace and of
  the controller (fault_inject.c). `remove()` is nvme_remove: all of it goes.
- `execute(req)` turns one block request into one command on the submitting
  CPU's queue (PRP1/PRP2 or a PRP list for the request's RAM segments), rings
  the doorbell and reaps its completion in the interrupt handler. Then, as
  nvme_complete_rq and nvme_decide_disposition do: success completes; an
  error is retried (the same command again) unless the request is failfast
  (readahead), the status has DNR, `max_retries` (5) retries were made, or
  the disk is dead; a final error prints nvme_log_error's line and raises
  BlkError with nvme_error_status's blk_status_t (the block layer prints the
  "I/O error, dev …" line and turns it into the errno).
- A command without a completion has timed out: `_timeout` is nvme_timeout.
  CSTS.CFS (or all ones: the device is gone) → "controller is down; will
  reset", disable, reset; the completion polled → done; otherwise an Abort,
  and at the second expiry a controller reset. A reset cancels what was in
  flight with Host Aborted Command (371h, no DNR), so the request is retried
  on the new queues. A reset that fails ("Disabling device after reset
  failure") marks the namespace dead (capacity 0, every I/O fails with EIO)
  and queues the removal of the controller and its disk (6.1's
  nvme_remove_dead_ctrl; the PCI function stays, unbound, until removed).
- Why no one waits: the I/O path is synchronous (a doorbell runs the model and
  its interrupt before the write returns, README "Where rinuxfs differs"), so
  a missing completion is known at once, not after io_timeout. Waiting for
  real would stop the one event loop that serves every FUSE request (the
  daemon must go on serving while a device fails), and a timer task could
  not give the request back to a caller that is still on the stack. So the
  driver runs nvme_timeout at once and accounts the time Linux would have
  waited: `wait(seconds)` advances the simulated clock (the log's timestamps
  and uptime show the 30 s), and `req.waited_ns` adds it to the request's
  time in diskstats.
- Fault injection: a completion goes through nvme_should_fail (the
  namespace's fault_inject attribute for I/O, the controller's for admin
  commands; in interrupt context, so task-filter never matches) and then
  blk_should_fake_timeout, which drops it: the command then times out.
- Queue memory and PRP list pages are frames from the page allocator, owned
  by the driver until remove(); a reset reuses them.
"""

from __future__ import annotations

import errno
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat

from rinuxfs.block.bio import SECTOR_SHIFT, ReqOp, Request
from rinuxfs.block.errors import BlkError, BlkStatus
from rinuxfs.block.genhd import BLOCK_EXT_MAJOR, BlockRegistry, Gendisk
from rinuxfs.block.queue import QueueLimits, RequestQueue
from rinuxfs.drivers.base import (
    DebugfsDir,
    Device,
    DriverCore,
    const,
    debugfs_create_dir,
    debugfs_create_file,
    debugfs_remove,
    device_bind_driver,
    device_register,
    device_release_driver,
    device_unregister,
    fault_create_debugfs_attr,
)
from rinuxfs.drivers.pci import PciIds, write_only
from rinuxfs.errors import KernelError
from rinuxfs.hw.irq import IrqChip
from rinuxfs.hw.mmio import Bar
from rinuxfs.hw.nvme import (
    CC_EN,
    CSTS_CFS,
    CSTS_RDY,
    DOORBELL_BASE,
    NSID_BROADCAST,
    STATUS_DNR,
    STATUS_MORE,
    AdminOpcode,
    IoOpcode,
    NvmeController,
    Reg,
    Status,
)
from rinuxfs.hw.nvme_layouts import CQE_SIZE, CQE_STRUCT, SQE_SIZE, SQE_STRUCT, IdentifyController, IdentifyNamespace
from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE
from rinuxfs.lib.fault_inject import FaultAttr, FaultEnv, debugfs_bool, debugfs_x16
from rinuxfs.lib.kstrtox import U32_MAX
from rinuxfs.lib.ratelimit import DEFAULT_RATELIMIT_BURST, DEFAULT_RATELIMIT_SECONDS, RateLimit
from rinuxfs.mm.core import MemoryManager
from rinuxfs.printk import KernelLog

ADMIN_DEPTH = 32  # NVME_AQ_DEPTH
IO_DEPTH = 256  # entries per I/O queue: 16 KiB of SQ, 4 KiB of CQ
PRP_ENTRIES_PER_PAGE = PAGE_SIZE // 8
NVME_PCI_ADDRESS = "0000:00:04.0"
PCI_VENDOR_REDHAT, PCI_DEVICE_QEMU_NVME = 0x1B36, 0x0010
NVME_PCI_IDS = PciIds(PCI_VENDOR_REDHAT, PCI_DEVICE_QEMU_NVME, 0x1AF4, 0x1100, 0x010802)
NVME_CHAR_MAJOR = 240  # the first dynamic character major, where nvme's controller nodes land
NVME_CTRL_PAGE_SIZE = 4096
NVME_DSM_MAX_RANGES = 256
NVME_MAX_RETRIES = 5  # nvme_core.max_retries
NVME_ADMIN_TIMEOUT = 60.0  # seconds (nvme_core.admin_timeout)
STATUS_HOST_ABORTED = 0x371  # NVME_SC_HOST_ABORTED_CMD: what nvme_cancel_request completes a request with
PCI_STATUS_CAP_LIST = 0x0010  # the config space status word of the function: a capabilities list
ALL_ONES = 0xFFFFFFFF  # a register read of a device that is gone

# nvme_error_status (core.c): the status field (SCT|SC) -> blk_status_t
_BLK_STATUS = {
    0x081: BlkStatus.NOSPC,
    0x080: BlkStatus.TARGET, 0x021: BlkStatus.TARGET, 0x082: BlkStatus.TARGET,
    0x180: BlkStatus.NOTSUPP, 0x001: BlkStatus.NOTSUPP, 0x002: BlkStatus.NOTSUPP, 0x00B: BlkStatus.NOTSUPP,
    0x280: BlkStatus.MEDIUM, 0x281: BlkStatus.MEDIUM, 0x287: BlkStatus.MEDIUM, 0x286: BlkStatus.MEDIUM,
    0x182: BlkStatus.MEDIUM, 0x285: BlkStatus.MEDIUM,
    0x282: BlkStatus.PROTECTION, 0x283: BlkStatus.PROTECTION, 0x284: BlkStatus.PROTECTION, 0x181: BlkStatus.PROTECTION,
    0x083: BlkStatus.RESV_CONFLICT,
    0x370: BlkStatus.TRANSPORT,
    0x1BD: BlkStatus.ZONE_ACTIVE_RESOURCE, 0x1BE: BlkStatus.ZONE_OPEN_RESOURCE,
}


def nvme_error_status(status: int) -> BlkStatus:
    return _BLK_STATUS.get(status & 0x7FF, BlkStatus.IOERR) if status & 0x7FF else BlkStatus.OK


def _errno_of(status: int) -> int | None:
    """An errno that differs from blk_status_to_errno's: a write-protected namespace is EROFS here.

    Linux refuses such writes in the block layer (the disk is read-only from Identify's NSATTR);
    a write that still reaches the device gets the same errno.
    """
    return errno.EROFS if status & 0x7FF == Status.NAMESPACE_WRITE_PROTECTED else None


class NvmeError(BlkError):
    """A command that ended with an error status (15-bit field: DNR, MORE, SCT, SC)."""

    def __init__(self, what: str, status: int, *, sector: int | None = None, quiet: bool = False) -> None:
        sc = status & 0x7FF
        dnr = " (DNR)" if status & STATUS_DNR else ""
        super().__init__(nvme_error_status(status) if sc else BlkStatus.IOERR,
                         f"nvme: {what} failed with status {sc:#x}{dnr}", sector=sector, quiet=quiet,
                         err=_errno_of(status))
        self.nvme_status = status


class _Cancelled(Exception):
    """A command the host gave up on: a controller disable cancelled it (nvme_cancel_request)."""


@dataclass(eq=False)
class _Queue:
    """One submission/completion queue pair as the host sees it."""

    qid: int
    depth: int
    sq_addr: int
    cq_addr: int
    prp_list: int  # a page for PRP lists of this queue's (one at a time) commands
    irq: int = 0
    sq_tail: int = 0
    cq_head: int = 0
    phase: int = 1
    done: dict[int, tuple[int, int]] = field(default_factory=dict)  # cid -> (status field, dw0)
    genctr: list[int] = field(default_factory=list)  # per tag: the generation in a command id's top bits

    def sq_doorbell(self) -> int:
        return DOORBELL_BASE + (2 * self.qid) * 4

    def cq_doorbell(self) -> int:
        return DOORBELL_BASE + (2 * self.qid + 1) * 4


@dataclass(eq=False)
class NvmeFaultInject:
    """struct nvme_fault_inject: a fault attribute, the status it injects, and whether with DNR."""

    attr: FaultAttr
    status: int = 0x0001  # NVME_SC_INVALID_OPCODE
    dont_retry: bool = True
    parent: DebugfsDir | None = None

    def create(self, name: str, root: DebugfsDir) -> None:
        """nvme_fault_inject_init: <root>/<name>/fault_inject/ with status (x16) and dont_retry."""
        self.parent = debugfs_create_dir(name, root)
        directory = fault_create_debugfs_attr("fault_inject", self.parent, self.attr)
        debugfs_create_file("status", 0o600, directory, *debugfs_x16(self, "status"))
        debugfs_create_file("dont_retry", 0o600, directory, *debugfs_bool(self, "dont_retry"))

    def destroy(self) -> None:
        if self.parent is not None:
            debugfs_remove(self.parent)
            self.parent = None

    def should_fail(self, status: int) -> int:
        """nvme_should_fail: the status a completion ends with (called in interrupt context)."""
        if self.attr.should_fail(1, in_task=False, stack=("nvme_should_fail", "nvme_irq",
                                                           "__handle_irq_event_percpu")):
            return self.status | (STATUS_DNR if self.dont_retry else 0)
        return status


def _no_wait(seconds: float) -> None:
    return None


def _run_now(fn: Callable[[], None]) -> None:
    fn()


class NvmeDriver:
    def __init__(self, ctrl: NvmeController, mm: MemoryManager, irqs: IrqChip, log: KernelLog, nr_cpus: int,
                 instance: int, core: DriverCore, *, fault_env: FaultEnv | None = None,
                 wait: Callable[[float], None] = _no_wait,
                 queue_work: Callable[[Callable[[], None]], None] = _run_now) -> None:
        self.ctrl = ctrl
        self.core = core
        self.devices: list[Device] = []  # what probe registered below the PCI function, parents first
        self.disk: Gendisk | None = None
        self.registry: BlockRegistry | None = None
        self.pci: Device | None = None
        self.bar = Bar(ctrl)
        self.mm = mm
        self.irqs = irqs
        self.log = log
        self.nr_cpus = nr_cpus
        self.instance = instance
        self.name = f"nvme{instance}"
        self.wait = wait  # the simulated clock skips this many seconds (see the module's contract)
        self.queue_work = queue_work
        self.state = "new"  # nvme_ctrl_state: new, live, resetting, connecting, deleting, dead
        self.vectors: dict[int, int] = {}  # MSI-X vector -> irq
        self.queues: list[_Queue] = []
        self.dma: list[tuple[int, int]] = []  # (pfn, pages) the driver holds
        self.id_ctrl: dict[str, object] = {}
        self.lba_size = 512
        self.nsze = 0
        self.mdts = 0
        self.vwc = False
        self.oncs = 0
        self.read_only = False
        self.next_cpu = 0
        self.max_retries = NVME_MAX_RETRIES
        self.removed = False
        env = fault_env or FaultEnv(log.printk)
        self.ns_fault = NvmeFaultInject(FaultAttr("fault_inject", env))
        self.ctrl_fault = NvmeFaultInject(FaultAttr("fault_inject", env))
        self._err_rl = RateLimit(DEFAULT_RATELIMIT_SECONDS * 100, DEFAULT_RATELIMIT_BURST)
        self._jiffies = env.jiffies

    # --- the device's interrupt line, as the model calls it ---------------------------------

    def raise_msix(self, vector: int) -> None:
        irq = self.vectors.get(vector)
        if irq is not None:
            self.irqs.raise_irq(irq)

    # --- probe and remove -------------------------------------------------------------------

    def probe(self, registry: BlockRegistry, pci: Device) -> Gendisk:
        self.registry, self.pci = registry, pci
        self.log.info(f"nvme {self.name}: pci function {NVME_PCI_ADDRESS}")
        self.state = "connecting"
        try:
            self._setup()
            nsids = self._active_namespaces()
            if 1 not in nsids:
                raise KernelError(errno.ENODEV, f"{self.name}: no namespace 1")
            self._identify_namespace(1)
        except _Cancelled:
            self._release_resources()
            raise KernelError(errno.EINTR, f"{self.name}: an admin command was cancelled") from None
        except KernelError:
            self._release_resources()
            raise
        device_bind_driver(pci, self.core.bus_register("pci").driver_register("nvme"))
        ctrl_dev = self._register_devices(pci)
        disk = self.disk = self._gendisk(registry)
        self.state = "live"
        disk_dev = registry.add_disk(disk, ctrl_dev)
        disk_dev.add_attr("nsid", const("1\n"))
        disk_dev.add_attr("wwid", const(f"nvme.1b36-{str(self.id_ctrl['serial']).encode().hex()}-0001\n"))
        self.ns_fault.create(disk.name, self.core.debugfs)
        self.ctrl_fault.create(self.name, self.core.debugfs)
        return disk

    def remove(self) -> None:
        """nvme_remove: the namespace's disk, the fault_inject directories, the controller, the driver binding."""
        if self.removed:
            return
        self.removed = True
        if self._csts() == ALL_ONES:
            self.state = "dead"
        elif self.state == "live":
            self.state = "deleting"
        if self.disk is not None and self.registry is not None:
            self.registry.del_gendisk(self.disk)
            self.disk = None
        self.ns_fault.destroy()
        self.ctrl_fault.destroy()
        if self.state != "dead":
            self._shutdown()
        while self.devices:
            device_unregister(self.devices.pop())
        if self.pci is not None:
            device_release_driver(self.pci)
        self._release_resources()
        if self.registry is not None:
            self.registry.release_nvme_instance(self.instance)

    def _shutdown(self) -> None:
        """nvme_dev_disable(shutdown): CC.SHN = normal shutdown, so the controller flushes its cache."""
        cc = self.bar.readl(Reg.CC)
        if cc != ALL_ONES:
            self.bar.writel(Reg.CC, cc | 1 << 14)
            self.bar.writel(Reg.CC, 0)
        self.state = "deleting"

    def _release_resources(self) -> None:
        for irq in self.vectors.values():
            self.irqs.free_irq(irq)
        self.vectors.clear()
        for pfn, pages in self.dma:
            self.mm.free_pages(list(range(pfn, pfn + pages)))
        self.dma.clear()
        self.queues.clear()

    # --- controller setup, also what a reset runs again ----------------------------------------

    def _setup(self) -> None:
        """nvme_reset_work: disable, admin queue, enable, identify, I/O queues (their memory reused by a reset)."""
        self._disable()
        admin = self._queue(0, ADMIN_DEPTH)
        self.bar.writel(Reg.AQA, (ADMIN_DEPTH - 1) << 16 | (ADMIN_DEPTH - 1))
        self.bar.writeq_lo_hi(Reg.ASQ, admin.sq_addr)
        self.bar.writeq_lo_hi(Reg.ACQ, admin.cq_addr)
        cc = 6 << 16 | 4 << 20  # IOSQES 64 B, IOCQES 16 B, CSS NVM, MPS 4 KiB, round robin
        self.bar.writel(Reg.CC, cc)
        self.bar.writel(Reg.CC, cc | CC_EN)
        self._wait_ready(CSTS_RDY, "initialisation")
        if not admin.irq:
            self._request_irq(admin, 0)
        self._identify_controller()
        granted = self._set_queue_count(self.nr_cpus)
        for cpu in range(granted):
            q = self._queue(cpu + 1, IO_DEPTH)
            if not q.irq:
                self._request_irq(q, cpu + 1)
            self._create_io_queue_pair(q)
        del self.queues[granted + 1 :]
        self.log.info(f"nvme {self.name}: {granted}/0/0 default/read/poll queues")

    def _csts(self) -> int:
        return self.bar.readl(Reg.CSTS)

    def _disable(self) -> None:
        """nvme_disable_ctrl: CC.EN = 0 and wait for RDY to drop."""
        if self._csts() == ALL_ONES:
            raise KernelError(errno.ENODEV, f"{self.name}: the device is gone")
        self.bar.writel(Reg.CC, 0)
        self._wait_ready(0, "reset")

    def _wait_ready(self, want: int, op: str) -> None:
        """nvme_wait_ready: RDY as wanted at once (the model settles at once), or after CAP.TO a failure."""
        csts = self._csts()
        if csts == ALL_ONES:
            raise KernelError(errno.ENODEV, f"{self.name}: the device is gone")
        if csts & CSTS_RDY == want:
            return
        timeout = ((self.bar.readq(Reg.CAP) >> 24 & 0xFF) + 1) * 0.5
        self.wait(timeout)
        self.log.err(f"nvme {self.name}: Device not ready; aborting {op}, CSTS={csts:#x}")
        raise KernelError(errno.ENODEV, f"{self.name}: controller did not become ready (CSTS {csts:#x})")

    def _queue(self, qid: int, depth: int) -> _Queue:
        """Queue `qid`: the one a reset reuses, emptied, or new memory for it."""
        if qid < len(self.queues):
            q = self.queues[qid]
            q.sq_tail = q.cq_head = 0
            q.phase = 1
            q.done.clear()
            cq_bytes = -(-q.depth * CQE_SIZE // PAGE_SIZE) * PAGE_SIZE
            self.mm.ram.view[q.cq_addr : q.cq_addr + cq_bytes] = bytes(cq_bytes)
            return q
        sq_pages = -(-depth * SQE_SIZE // PAGE_SIZE)
        cq_pages = -(-depth * CQE_SIZE // PAGE_SIZE)
        sq = self._contiguous(sq_pages)
        cq = self._contiguous(cq_pages)
        prp = self._contiguous(1)
        ram = self.mm.ram.view
        ram[cq : cq + cq_pages * PAGE_SIZE] = bytes(cq_pages * PAGE_SIZE)  # phase bits start at 0
        q = _Queue(qid, depth, sq, cq, prp, genctr=[0] * depth)
        self.queues.append(q)
        return q

    def _contiguous(self, pages: int) -> int:
        """Physically contiguous frames for a queue (CAP.CQR)."""
        pfn = self.mm.alloc_pages_exact(pages)
        self.dma.append((pfn, pages))
        return pfn << PAGE_SHIFT

    def _request_irq(self, q: _Queue, vector: int) -> None:
        cpu = max(0, q.qid - 1)
        name = f"{self.name}q{q.qid}"
        q.irq = self.irqs.request_irq(f"PCI-MSIX-{NVME_PCI_ADDRESS}", vector, name, cpu, lambda: self._reap(q))
        self.vectors[vector] = q.irq

    # --- admin commands ---------------------------------------------------------------------

    def _admin(self, what: str, opcode: int, *, nsid: int = 0, prp1: int = 0, cdw10: int = 0, cdw11: int = 0,
               cdw12: int = 0) -> int:
        """A synchronous admin command (nvme_submit_sync_cmd); NvmeError on a status, _Cancelled if cancelled."""
        admin = self.queues[0]
        tag, cid = self._submit(admin, opcode, nsid, prp1, 0, (cdw10, cdw11, cdw12, 0, 0, 0))
        result = admin.done.pop(cid, None)
        if result is None:
            result = self._admin_timeout(admin, tag, cid, opcode)
        status, dw0 = result
        if status:
            raise NvmeError(what, status)
        return dw0

    def _with_page(self) -> tuple[int, memoryview]:
        pfn = self.mm.alloc_pages(1)[0]
        return pfn, self.mm.ram.view[pfn << PAGE_SHIFT : (pfn + 1) << PAGE_SHIFT]

    def _identify_controller(self) -> None:
        pfn, page = self._with_page()
        try:
            self._admin("Identify Controller", AdminOpcode.IDENTIFY, prp1=pfn << PAGE_SHIFT, cdw10=0x01)
            ident = IdentifyController.parse(bytes(page))
        except NvmeError as e:  # nvme_init_identify: the status is logged, the reset fails with EIO
            self.log.err(f"nvme {self.name}: Identify Controller failed ({e.nvme_status})")
            raise KernelError(errno.EIO, f"{self.name}: Identify Controller failed") from None
        finally:
            self.mm.free_pages([pfn])
        self.id_ctrl = {"model": ident.mn, "serial": ident.sn, "firmware": ident.fr, "cntlid": ident.cntlid}
        self.mdts = ident.mdts
        self.vwc = bool(ident.vwc & 1)
        self.oncs = ident.oncs

    def _set_queue_count(self, wanted: int) -> int:
        dw0 = self._admin("Set Features (Number of Queues)", AdminOpcode.SET_FEATURES, cdw10=0x07,
                          cdw11=(wanted - 1) << 16 | (wanted - 1))
        return min(wanted, (dw0 & 0xFFFF) + 1, (dw0 >> 16) + 1)

    def _create_io_queue_pair(self, q: _Queue) -> None:
        size = (q.depth - 1) << 16 | q.qid
        self._admin("Create I/O Completion Queue", AdminOpcode.CREATE_IO_CQ, prp1=q.cq_addr, cdw10=size,
                    cdw11=q.qid << 16 | 0b11)  # IV = qid, IEN, PC
        self._admin("Create I/O Submission Queue", AdminOpcode.CREATE_IO_SQ, prp1=q.sq_addr, cdw10=size,
                    cdw11=q.qid << 16 | 0b1)  # CQID = qid, PC

    def _active_namespaces(self) -> list[int]:
        pfn, page = self._with_page()
        try:
            self._admin("Identify (active namespaces)", AdminOpcode.IDENTIFY, prp1=pfn << PAGE_SHIFT, cdw10=0x02)
            ids = struct.unpack("<1024I", page)
        finally:
            self.mm.free_pages([pfn])
        return [n for n in ids if n]

    def _identify_namespace(self, nsid: int) -> None:
        pfn, page = self._with_page()
        try:
            self._admin("Identify Namespace", AdminOpcode.IDENTIFY, nsid=nsid, prp1=pfn << PAGE_SHIFT, cdw10=0x00)
            ns = IdentifyNamespace.parse(bytes(page))
        finally:
            self.mm.free_pages([pfn])
        fmt = ns.lbaf[ns.flbas & 0xF]
        self.lba_size = 1 << fmt.lbads
        self.nsze = ns.nsze
        self.read_only = bool(ns.nsattr & 1)

    # --- the block device -------------------------------------------------------------------

    def _gendisk(self, registry: BlockRegistry) -> Gendisk:
        max_hw_kb = (PAGE_SIZE << self.mdts) // 1024 if self.mdts else 2048
        lbs = self.lba_size
        limits = QueueLimits(
            logical_block_size=lbs, physical_block_size=lbs, max_hw_sectors_kb=max_hw_kb,
            max_sectors_kb=max_hw_kb, max_segments=PRP_ENTRIES_PER_PAGE, read_ahead_kb=128, nr_requests=IO_DEPTH - 1,
            rotational=0, write_cache="write back" if self.vwc else "write through",
            discard_granularity=lbs, discard_max_hw_bytes=(0xFFFFFFFF * lbs) if self.oncs & 0x4 else 0,
            discard_max_bytes=(0xFFFFFFFF * lbs) if self.oncs & 0x4 else 0,
            write_zeroes_max_bytes=(0x10000 * lbs) if self.oncs & 0x8 else 0, queue_depth=IO_DEPTH - 1,
            max_discard_segments=NVME_DSM_MAX_RANGES, max_segment_size=U32_MAX,
            virt_boundary_mask=NVME_CTRL_PAGE_SIZE - 1, dma_alignment=3, fua=int(self.vwc),
        )
        nsectors = self.nsze * lbs >> SECTOR_SHIFT
        # elevator_get_default: mq-deadline only for a single hardware queue; several queues go without.
        scheduler = "mq-deadline" if len(self.queues) - 1 == 1 else "none"
        # minors 0: NVMe asks for no static minors, so the disk and all its partitions take dynamic
        # minors of BLOCK_EXT_MAJOR (and sysfs `range` shows 0, as on Linux).
        disk = Gendisk(f"{self.name}n1", BLOCK_EXT_MAJOR, registry.next_ext_minor(), 0, nsectors,
                       RequestQueue(self, limits, scheduler), model=str(self.id_ctrl["model"]),
                       serial=str(self.id_ctrl["serial"]), firmware=str(self.id_ctrl["firmware"]),
                       transport="nvme", read_only=self.read_only)
        disk.bb = self.ctrl.badblocks  # the simulated drive keeps its medium's bad-block list
        return disk

    def _scan_namespaces(self) -> None:
        """nvme_scan_work for namespace 1: Identify it again; a new size is a capacity change."""
        self._identify_namespace(1)
        disk = self.disk
        if disk is not None and self.registry is not None:
            nsectors = self.nsze * self.lba_size >> SECTOR_SHIFT
            if nsectors != disk.nr_sects:
                self.registry.set_capacity_and_notify(disk, nsectors)

    # --- I/O --------------------------------------------------------------------------------

    def execute(self, req: Request) -> None:
        """nvme_queue_rq, then nvme_complete_rq with its retries; raises NvmeError for a final error."""
        if self.state == "dead" or self.removed:
            raise BlkError(BlkStatus.IOERR, f"{self.name}: the controller is dead", quiet=True)
        while True:
            opcode, slba, nlb, status = self._io(req)
            if not status:
                return
            if not self._complete_with_error(req, status):
                req.retries += 1  # nvme_retry_req: requeue the same command (CRD delays: the model sets none)
                continue
            self._log_error(opcode, slba, nlb, status)
            raise NvmeError(f"{req.op.name} of {nlb} blocks at LBA {slba}", status, sector=req.sector)

    def _complete_with_error(self, req: Request, status: int) -> bool:
        """nvme_decide_disposition (6.18): True to complete with the error, False to retry."""
        if status & STATUS_DNR or req.failfast or req.retries >= self.max_retries:
            return True
        disk = self.disk
        return disk is None or disk.dead  # a dying queue completes at once

    def _io(self, req: Request) -> tuple[int, int, int, int]:
        """One attempt: (opcode, slba, nlb, status field) of the command that ran."""
        if self.state != "live":
            return IoOpcode.READ, 0, 0, STATUS_HOST_ABORTED
        q = self.queues[1 + self.next_cpu % (len(self.queues) - 1)]
        self.next_cpu += 1
        lbs_shift = self.lba_size.bit_length() - 1
        slba = (req.sector << SECTOR_SHIFT) >> lbs_shift
        nlb = (req.nr_sectors << SECTOR_SHIFT) >> lbs_shift
        op = req.op
        if op == ReqOp.FLUSH:
            opcode, nsid, prp1, prp2, cdw = IoOpcode.FLUSH, NSID_BROADCAST, 0, 0, (0, 0, 0, 0, 0, 0)
        elif op in (ReqOp.READ, ReqOp.WRITE):
            prp1, prp2 = self._map_prps(q, req.segments)
            fua = 1 << 30 if req.fua else 0
            opcode = IoOpcode.READ if op == ReqOp.READ else IoOpcode.WRITE
            nsid, cdw = 1, (slba & 0xFFFFFFFF, slba >> 32, (nlb - 1) | fua, 0, 0, 0)
        elif op == ReqOp.WRITE_ZEROES:
            opcode, nsid, prp1, prp2 = IoOpcode.WRITE_ZEROES, 1, 0, 0
            cdw = (slba & 0xFFFFFFFF, slba >> 32, nlb - 1, 0, 0, 0)
        elif op == ReqOp.DISCARD:
            page = q.prp_list
            self.mm.ram.view[page : page + 16] = struct.pack("<IIQ", 0, nlb, slba)
            opcode, nsid, prp1, prp2, cdw = IoOpcode.DATASET_MANAGEMENT, 1, page, 0, (0, 1 << 2, 0, 0, 0, 0)
        else:
            raise KernelError(errno.EOPNOTSUPP, f"{self.name}: operation {op.name} not supported")
        tag, cid = self._submit(q, opcode, nsid, prp1, prp2, cdw)
        result = q.done.pop(cid, None)
        if result is None:
            result = self._timeout(q, tag, cid, opcode, req)
        return opcode, slba, nlb, result[0]

    def _map_prps(self, q: _Queue, segments: list[tuple[int, int]]) -> tuple[int, int]:
        """PRP1 and PRP2 (an address or a PRP list) for data in `segments` (nvme_pci_setup_prps)."""
        addrs = [addr for addr, _ in segments]
        if [length for _, length in segments].count(PAGE_SIZE) == len(segments) \
                and not any(map(operator.and_, addrs, repeat(PAGE_SIZE - 1))):
            pages = addrs  # whole pages each (swap writes of scattered frames): checked in C, one entry each
        else:
            pages = self._segment_pages(segments)
        if len(pages) == 1:
            return pages[0], 0
        if len(pages) == 2:
            return pages[0], pages[1]
        if len(pages) - 1 > PRP_ENTRIES_PER_PAGE:
            raise KernelError(errno.EIO, f"{self.name}: request larger than one PRP list page")
        rest = pages[1:]
        self.mm.ram.view[q.prp_list : q.prp_list + 8 * len(rest)] = struct.pack(f"<{len(rest)}Q", *rest)
        return pages[0], q.prp_list

    def _segment_pages(self, segments: list[tuple[int, int]]) -> list[int]:
        """The PRP entries of any segments: the first one's address, then every page boundary crossed."""
        pages: list[int] = []
        for i, (addr, length) in enumerate(segments):
            end = addr + length
            if i and addr & (PAGE_SIZE - 1):
                raise KernelError(errno.EIO, f"{self.name}: a segment inside a request does not start on a page")
            if i < len(segments) - 1 and end & (PAGE_SIZE - 1):
                raise KernelError(errno.EIO, f"{self.name}: a segment inside a request does not end on a page")
            pages.extend(range(addr & ~(PAGE_SIZE - 1), end, PAGE_SIZE))
        pages[0] = segments[0][0]
        return pages

    def _submit(self, q: _Queue, opcode: int, nsid: int, prp1: int, prp2: int,
                cdw: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
        """Write the SQE in the next slot and ring; returns (tag, command id). The model runs at the ring."""
        tag = q.sq_tail
        q.genctr[tag] = (q.genctr[tag] + 1) & 0xF
        cid = q.genctr[tag] << 12 | tag  # nvme_cid: the tag, and a generation counter in the top 4 bits
        slot = q.sq_addr + tag * SQE_SIZE
        SQE_STRUCT.pack_into(self.mm.ram.view, slot, opcode, 0, cid, nsid, prp1, prp2, *cdw)
        q.sq_tail = (q.sq_tail + 1) % q.depth
        self.bar.writel(q.sq_doorbell(), q.sq_tail)  # the controller runs, then interrupts: _reap
        return tag, cid

    def _reap(self, q: _Queue) -> None:
        """The interrupt handler (nvme_irq): consume CQEs whose phase matches, then move the head doorbell.

        Each completion goes through nvme_try_complete_req: fault injection may change its status,
        and blk_should_fake_timeout may drop it (the command then times out).
        """
        ram = self.mm.ram.view
        moved = False
        disk = self.disk
        while True:
            dw0, _dw1, _sqhd, _sqid, cid, raw = CQE_STRUCT.unpack_from(ram, q.cq_addr + q.cq_head * CQE_SIZE)
            if raw & 1 != q.phase:
                break
            q.cq_head += 1
            if q.cq_head == q.depth:
                q.cq_head = 0
                q.phase ^= 1
            moved = True
            status = raw >> 1
            fault = self.ns_fault if q.qid else self.ctrl_fault
            if fault.attr.probability:  # should_fail's first test in interrupt context: nothing to do at 0
                status = fault.should_fail(status)
            if q.qid and disk is not None and disk.queue.fail_io and disk.queue.should_fake_timeout():
                continue  # the device did the work; the host never learns: the request stays in flight
            q.done[cid] = (status, dw0)
        if moved:
            self.bar.writel(q.cq_doorbell(), q.cq_head)

    # --- timeouts, aborts and resets (nvme_timeout) ---------------------------------------------

    def _timeout(self, q: _Queue, tag: int, cid: int, opcode: int, req: Request) -> tuple[int, int]:
        """nvme_timeout for an I/O command that did not complete: the (status, dw0) it ends with."""
        seconds = self._io_timeout()
        aborted = False
        while True:
            self._expire(seconds, req)
            csts = self._csts()
            if self._should_reset(csts):
                self._warn_reset(csts)
                self._reset()
                return STATUS_HOST_ABORTED, 0
            self._reap(q)  # did we miss an interrupt?
            if cid in q.done:
                self.log.warn(f"nvme {self.name}: I/O tag {tag} ({cid:04x}) QID {q.qid} timeout, completion polled")
                return q.done.pop(cid)
            if aborted:
                self.log.warn(f"nvme {self.name}: I/O tag {tag} ({cid:04x}) opcode {opcode:#x} (I/O Cmd) QID {q.qid} "
                              "timeout, reset controller")
                self._reset()
                return STATUS_HOST_ABORTED, 0
            aborted = True
            op = req.op
            self.log.warn(f"nvme {self.name}: I/O tag {tag} ({cid:04x}) opcode {opcode:#x} (I/O Cmd) QID {q.qid} "
                          f"timeout, aborting req_op:{op.name}({op.value}) size:{req.nr_sectors << SECTOR_SHIFT}")
            try:
                status = self._abort(q.qid, cid)
            except _Cancelled:  # the Abort itself timed out: the reset that followed cancelled this one too
                return STATUS_HOST_ABORTED, 0
            self.log.warn(f"nvme {self.name}: Abort status: {status:#x}")
            if cid in q.done:  # the controller aborted it: it completes (with Command Abort Requested)
                return q.done.pop(cid)

    def _io_timeout(self) -> float:
        return self.disk.queue.timeout_seconds if self.disk is not None else 30.0

    def _expire(self, seconds: float, req: Request | None = None) -> None:
        """The request's timer runs out: the time it would have waited goes on the simulated clock."""
        self.wait(seconds)
        if req is not None:
            req.waited_ns += int(seconds * 1e9)

    def _abort(self, sqid: int, cid: int) -> int:
        """An Abort for (sqid, cid) on the admin queue: its own status (what abort_endio prints)."""
        admin = self.queues[0]
        tag, acid = self._submit(admin, AdminOpcode.ABORT, 0, 0, 0, (sqid | cid << 16, 0, 0, 0, 0, 0))
        result = admin.done.pop(acid, None)
        if result is None:
            result = self._admin_timeout(admin, tag, acid, AdminOpcode.ABORT)
        return result[0]

    def _admin_timeout(self, admin: _Queue, tag: int, cid: int, opcode: int) -> tuple[int, int]:
        """nvme_timeout for the admin queue: completion polled, else disable (while connecting) or reset."""
        self._expire(NVME_ADMIN_TIMEOUT)
        csts = self._csts()
        if self.state == "live" and self._should_reset(csts):
            self._warn_reset(csts)
            self._reset()
            raise _Cancelled
        self._reap(admin)
        if cid in admin.done:
            self.log.warn(f"nvme {self.name}: I/O tag {tag} ({cid:04x}) QID 0 timeout, completion polled")
            return admin.done.pop(cid)
        if self.state in ("connecting", "deleting"):
            self.log.warn(f"nvme {self.name}: I/O tag {tag} ({cid:04x}) QID 0 timeout, disable controller")
            self._dev_disable()
            raise _Cancelled
        self.log.warn(f"nvme {self.name}: I/O tag {tag} ({cid:04x}) opcode {opcode:#x} (Admin Cmd) QID 0 timeout, "
                      "reset controller")
        self._reset()
        raise _Cancelled

    def _should_reset(self, csts: int) -> bool:
        """nvme_should_reset: CSTS.CFS (all ones has it too), unless a reset is already under way."""
        return self.state not in ("resetting", "connecting") and bool(csts & CSTS_CFS)

    def _warn_reset(self, csts: int) -> None:
        """nvme_warn_reset, with the PCI status word as config space gives it (all ones: nobody answered)."""
        pci_status = 0xFFFF if csts == ALL_ONES else PCI_STATUS_CAP_LIST
        self.log.warn(f"nvme {self.name}: controller is down; will reset: CSTS={csts:#x}, PCI_STATUS={pci_status:#x}")
        if csts == ALL_ONES:
            self.log.warn(f"nvme {self.name}: Does your device have a faulty power saving mode enabled?")
            self.log.warn(f"nvme {self.name}: Try \"nvme_core.default_ps_max_latency_us=0 pcie_aspm=off "
                          "pcie_port_pm=off\" and report a bug")

    def _dev_disable(self) -> None:
        """nvme_dev_disable: the controller off (CC.EN = 0); every command in flight is cancelled."""
        if self._csts() != ALL_ONES:
            self.bar.writel(Reg.CC, 0)
        for q in self.queues:
            q.done.clear()

    def _reset(self) -> bool:
        """nvme_reset_ctrl_sync: disable, then nvme_reset_work; False if the controller is dead afterwards."""
        if self.state not in ("live", "new"):
            return False
        self.state = "resetting"
        self._dev_disable()
        self.state = "connecting"
        try:
            self._setup()
            self._scan_namespaces()
        except _Cancelled:
            self._dead(-errno.EINTR)
            return False
        except KernelError as e:
            self._dead(-e.errno)
            return False
        self.state = "live"
        return True

    def _dead(self, result: int) -> None:
        """The reset failed (6.18's nvme_reset_work "out:"): namespaces dead, controller dead, removal queued."""
        self.log.warn(f"nvme {self.name}: Disabling device after reset failure: {result}")
        self.state = "deleting"
        self._dev_disable()
        disk = self.disk
        if disk is not None and self.registry is not None:  # nvme_mark_namespaces_dead
            self.registry.set_capacity_and_notify(disk, 0)
            disk.dead = True
        self.state = "dead"
        # 6.1 unbinds a controller whose reset failed (nvme_remove_dead_ctrl_work), which takes its
        # disks away; 6.18 keeps it bound and dead. The disk goes, as the issue asks of a dead controller.
        self.queue_work(self.remove)

    def _log_error(self, opcode: int, slba: int, nlb: int, status: int) -> None:
        """nvme_log_error without NVME_VERBOSE_ERRORS (Debian's config): generic names, a trailing space."""
        if not self._err_rl.allow(self._jiffies(), self.log.warn, "nvme_log_error"):
            return
        name = self.disk.name if self.disk is not None else "?"
        more = "MORE " if status & STATUS_MORE else ""
        dnr = "DNR " if status & STATUS_DNR else ""
        self.log.err(f"{name}: I/O Cmd({opcode:#x}) @ LBA {slba}, {nlb} blocks, I/O Error "
                     f"(sct {status >> 8 & 7:#x} / sc {status & 0xFF:#x}) {more}{dnr}")

    # --- the device tree (what the PCI core and nvme_sysfs_* show) -----------------------------

    def _register_devices(self, pci: Device) -> Device:
        """The controller below the PCI function (…/0000:00:04.0/nvme/nvme0); returns it."""
        core = self.core
        ctrl = Device(self.name, pci, cls=core.class_register("nvme"), devt=(NVME_CHAR_MAJOR, self.instance))
        ident = self.id_ctrl
        for name, value in (("model", str(ident["model"])), ("serial", str(ident["serial"])),
                            ("firmware_rev", str(ident["firmware"])), ("transport", "pcie"),
                            ("cntlid", str(ident["cntlid"])), ("address", NVME_PCI_ADDRESS),
                            ("queue_count", str(len(self.queues))), ("sqsize", str(IO_DEPTH - 1)),
                            ("numa_node", "-1")):
            ctrl.add_attr(name, const(value + "\n"))
        ctrl.add_attr("state", lambda: f"{self.state}\n")
        ctrl.add_attr("reset_controller", write_only, self._store_reset, mode=0o200)
        ctrl.add_attr("rescan_controller", write_only, self._store_rescan, mode=0o200)
        self.devices = [device_register(ctrl)]
        return ctrl

    def _store_reset(self, text: str) -> None:
        """nvme_sysfs_reset: a synchronous reset; EBUSY if one cannot start, ENETRESET if not live after."""
        if self.state != "live":
            raise KernelError(errno.EBUSY, f"{self.name} is {self.state}")
        if not self._reset():
            raise KernelError(errno.ENETRESET, f"{self.name} is {self.state} after the reset")

    def _store_rescan(self, text: str) -> None:
        """nvme_sysfs_rescan: a namespace scan when live; the write succeeds either way."""
        if self.state != "live":
            return
        try:
            self._scan_namespaces()
        except (KernelError, _Cancelled):
            return
