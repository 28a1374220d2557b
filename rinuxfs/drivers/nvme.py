"""The NVMe host driver (drivers/nvme/host/{core,pci}.c), over the NVMe controller model.

Contract:
- `probe()` does what nvme_probe → nvme_reset_work does: disable the
  controller, set up the admin queue (AQA, ASQ, ACQ as lo/hi writes), enable
  and wait for CSTS.RDY, Identify the controller, ask for one I/O queue pair
  per CPU (Set Features, Number of Queues), create each pair (CQ, then SQ)
  with its own MSI-X vector, then Identify the namespaces and return a
  Gendisk for namespace 1 (nvme<instance>n1, major 259) with queue limits
  taken from Identify (MDTS, LBA format, VWC, ONCS).
- `execute(req)` turns one block request into one command on the submitting
  CPU's queue (PRP1/PRP2 or a PRP list for the request's RAM segments), rings
  the doorbell and returns once the interrupt handler has reaped its
  completion; a failure status becomes KernelError with Linux's errno
  (nvme_error_status), the only place NVMe status turns into errno.
- Queue memory and PRP list pages are frames from the page allocator, owned
  by the driver for the life of the kernel.
- Probe registers with the driver core what Linux's PCI core and nvme show:
  the PCI function (bound to driver nvme), the controller nvme<N> (class nvme,
  char device 240:N, with model, serial, firmware_rev, …) and, below it, the
  disk with nsid and wwid. `unregister_devices(registry)` takes them out.
- A failed I/O command is logged as nvme_log_error does (verbose names, as a
  kernel with CONFIG_NVME_VERBOSE_ERRORS).
- `scan_namespaces()` is what `rescan_controller` queues (nvme_scan_work):
  Identify Namespace again, and a new size becomes the disk's capacity.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field

from rinuxfs.block.bio import SECTOR_SHIFT, ReqOp, Request
from rinuxfs.block.genhd import BLOCK_EXT_MAJOR, BlockRegistry, Gendisk
from rinuxfs.block.queue import U32_MAX, QueueLimits, RequestQueue
from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.device import Device, device_register, device_unregister
from rinuxfs.drivers.base.kobject import const
from rinuxfs.drivers.pci import PciIds, pci_register_function
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

# nvme_error_status() and blk_errors[]: NVMe status -> errno. read-only is refused with EROFS
# before a write reaches the device; the driver maps Namespace Write Protected the same way.
_STATUS_ERRNO = {
    Status.LBA_OUT_OF_RANGE: errno.EIO,
    Status.INVALID_OPCODE: errno.EOPNOTSUPP,
    Status.INVALID_FIELD: errno.EOPNOTSUPP,
    Status.INVALID_NAMESPACE: errno.EOPNOTSUPP,
    Status.WRITE_FAULT: errno.ENODATA,
    Status.UNRECOVERED_READ_ERROR: errno.ENODATA,
    Status.NAMESPACE_WRITE_PROTECTED: errno.EROFS,
}


@dataclass(eq=False)
class _Queue:
    """One submission/completion queue pair as the host sees it."""

    qid: int
    depth: int
    sq_addr: int
    cq_addr: int
    irq: int = 0
    sq_tail: int = 0
    cq_head: int = 0
    phase: int = 1
    next_cid: int = 0
    done: dict[int, tuple[int, int]] = field(default_factory=dict)  # cid -> (status field, dw0)
    prp_list: int = 0  # a page for PRP lists of this queue's (one at a time) commands

    def sq_doorbell(self) -> int:
        return DOORBELL_BASE + (2 * self.qid) * 4

    def cq_doorbell(self) -> int:
        return DOORBELL_BASE + (2 * self.qid + 1) * 4


# drivers/nvme/host/constants.c: the names nvme_log_error prints
_OPCODE_NAMES: dict[int, str] = {IoOpcode.FLUSH: "Flush", IoOpcode.WRITE: "Write", IoOpcode.READ: "Read",
                 IoOpcode.WRITE_ZEROES: "Write Zeroes", IoOpcode.DATASET_MANAGEMENT: "Data Set Management"}
_STATUS_NAMES: dict[int, str] = {
    Status.INVALID_OPCODE: "Invalid Command Opcode", Status.INVALID_FIELD: "Invalid Field in Command",
    Status.DATA_TRANSFER_ERROR: "Data Transfer Error", Status.INTERNAL_ERROR: "Internal Error",
    Status.INVALID_NAMESPACE: "Invalid Namespace or Format", Status.INVALID_PRP_OFFSET: "Invalid PRP Offset",
    Status.NAMESPACE_WRITE_PROTECTED: "Namespace is Write Protected", Status.LBA_OUT_OF_RANGE: "LBA Out of Range",
    Status.WRITE_FAULT: "Write Fault", Status.UNRECOVERED_READ_ERROR: "Unrecovered Read Error",
}


def nvme_log_error(disk: str, opcode: int, slba: int, nlb: int, status: int) -> str:
    """The line nvme_log_error prints for a failed I/O command (it ends in a space: MORE and DNR are "%s%s")."""
    sc = status & 0x7FF
    name = _STATUS_NAMES.get(sc, "Unknown")
    more = "MORE " if status & STATUS_MORE else ""
    dnr = "DNR " if status & STATUS_DNR else ""
    return (f"{disk}: {_OPCODE_NAMES.get(opcode, 'Unknown')}({opcode:#x}) @ LBA {slba}, {nlb} blocks, {name} "
            f"(sct {sc >> 8:#x} / sc {sc & 0xFF:#x}) {more}{dnr}")


class NvmeError(KernelError):
    def __init__(self, what: str, status: int) -> None:
        sc = status & 0x7FF
        err = _STATUS_ERRNO.get(Status(sc), errno.EIO) if sc in Status._value2member_map_ else errno.EIO
        dnr = " (DNR)" if status & STATUS_DNR else ""
        super().__init__(err, f"nvme: {what} failed with status {sc:#x}{dnr}")
        self.status = status


class NvmeDriver:
    def __init__(self, ctrl: NvmeController, mm: MemoryManager, irqs: IrqChip, log: KernelLog, nr_cpus: int,
                 instance: int, core: DriverCore) -> None:
        self.ctrl = ctrl
        self.core = core
        self.devices: list[Device] = []  # what probe registered, parents first
        self.disk: Gendisk | None = None
        self.bar = Bar(ctrl)
        self.mm = mm
        self.irqs = irqs
        self.log = log
        self.nr_cpus = nr_cpus
        self.instance = instance
        self.name = f"nvme{instance}"
        self.vectors: dict[int, int] = {}  # MSI-X vector -> irq
        self.queues: list[_Queue] = []
        self.id_ctrl: dict[str, object] = {}
        self.lba_size = 512
        self.nsze = 0
        self.mdts = 0
        self.vwc = False
        self.oncs = 0
        self.next_cpu = 0
        self.disk: Gendisk | None = None

    # --- the device's interrupt line, as the model calls it ---------------------------------

    def raise_msix(self, vector: int) -> None:
        irq = self.vectors.get(vector)
        if irq is not None:
            self.irqs.raise_irq(irq)

    # --- probe ------------------------------------------------------------------------------

    def probe(self, registry: BlockRegistry) -> Gendisk:
        self._disable()
        admin = self._new_queue(0, ADMIN_DEPTH)
        self.bar.writel(Reg.AQA, (ADMIN_DEPTH - 1) << 16 | (ADMIN_DEPTH - 1))
        self.bar.writeq_lo_hi(Reg.ASQ, admin.sq_addr)
        self.bar.writeq_lo_hi(Reg.ACQ, admin.cq_addr)
        cc = 6 << 16 | 4 << 20  # IOSQES 64 B, IOCQES 16 B, CSS NVM, MPS 4 KiB, round robin
        self.bar.writel(Reg.CC, cc)
        self.bar.writel(Reg.CC, cc | CC_EN)
        if not self.bar.readl(Reg.CSTS) & CSTS_RDY:
            raise KernelError(errno.ENODEV, f"{self.name}: controller did not become ready (CSTS {self._csts():#x})")
        self._request_irq(admin, 0)
        self._identify_controller()
        granted = self._set_queue_count(self.nr_cpus)
        for cpu in range(granted):
            q = self._new_queue(cpu + 1, IO_DEPTH)
            self._request_irq(q, cpu + 1)
            self._create_io_queue_pair(q)
        nsids = self._active_namespaces()
        if 1 not in nsids:
            raise KernelError(errno.ENODEV, f"{self.name}: no namespace 1")
        self._identify_namespace(1)
        self.log.info(f"nvme {self.name}: pci function {NVME_PCI_ADDRESS}")
        self.log.info(f"nvme {self.name}: {granted}/0/0 default/read/poll queues")
        ctrl_dev = self._register_devices()
        disk = self.disk = self._gendisk(registry)
        disk_dev = registry.add_disk(disk, ctrl_dev)
        disk_dev.add_attr("nsid", const("1\n"))
        disk_dev.add_attr("wwid", const(f"nvme.1b36-{str(self.id_ctrl['serial']).encode().hex()}-0001\n"))
        return disk

    def _csts(self) -> int:
        return self.bar.readl(Reg.CSTS)

    def _disable(self) -> None:
        self.bar.writel(Reg.CC, 0)
        if self._csts() & CSTS_RDY:
            raise KernelError(errno.ENODEV, f"{self.name}: controller did not disable")

    def _new_queue(self, qid: int, depth: int) -> _Queue:
        sq_pages = -(-depth * SQE_SIZE // PAGE_SIZE)
        cq_pages = -(-depth * CQE_SIZE // PAGE_SIZE)
        sq = self._contiguous(sq_pages)
        cq = self._contiguous(cq_pages)
        prp = self.mm.alloc_pages(1)[0] << PAGE_SHIFT
        ram = self.mm.ram.view
        ram[cq : cq + cq_pages * PAGE_SIZE] = bytes(cq_pages * PAGE_SIZE)  # phase bits start at 0
        q = _Queue(qid, depth, sq, cq, prp_list=prp)
        self.queues.append(q)
        return q

    def _contiguous(self, pages: int) -> int:
        """Physically contiguous frames for a queue (CAP.CQR)."""
        return self.mm.alloc_pages_exact(pages) << PAGE_SHIFT

    def _request_irq(self, q: _Queue, vector: int) -> None:
        cpu = max(0, q.qid - 1)
        name = f"{self.name}q{q.qid}"
        q.irq = self.irqs.request_irq(f"PCI-MSIX-{NVME_PCI_ADDRESS}", vector, name, cpu, lambda: self._reap(q))
        self.vectors[vector] = q.irq

    # --- admin commands ---------------------------------------------------------------------

    def _admin(self, what: str, opcode: int, *, nsid: int = 0, prp1: int = 0, cdw10: int = 0, cdw11: int = 0,
               cdw12: int = 0) -> int:
        status, dw0 = self._submit(self.queues[0], opcode, nsid, prp1, 0, (cdw10, cdw11, cdw12, 0, 0, 0))
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
        self.disk = disk
        return disk

    def scan_namespaces(self) -> None:
        """nvme_scan_work → nvme_validate_ns: Identify Namespace 1 again; a new size is the disk's capacity."""
        self._identify_namespace(1)
        if self.disk is not None:
            line = self.disk.set_capacity_and_notify(self.nsze * self.lba_size >> SECTOR_SHIFT)
            if line:
                self.log.info(line)

    # --- I/O --------------------------------------------------------------------------------

    def execute(self, req: Request) -> None:
        q = self.queues[1 + self.next_cpu % (len(self.queues) - 1)]
        self.next_cpu += 1
        lbs_shift = self.lba_size.bit_length() - 1
        slba = (req.sector << SECTOR_SHIFT) >> lbs_shift
        nlb = (req.nr_sectors << SECTOR_SHIFT) >> lbs_shift
        op = req.op
        if op == ReqOp.FLUSH:
            opcode = IoOpcode.FLUSH
            status, _ = self._submit(q, opcode, NSID_BROADCAST, 0, 0, (0, 0, 0, 0, 0, 0))
        elif op in (ReqOp.READ, ReqOp.WRITE):
            prp1, prp2 = self._map_prps(q, req.segments)
            fua = 1 << 30 if req.fua else 0
            opcode = IoOpcode.READ if op == ReqOp.READ else IoOpcode.WRITE
            status, _ = self._submit(q, opcode, 1, prp1, prp2, (slba & 0xFFFFFFFF, slba >> 32, (nlb - 1) | fua,
                                                                0, 0, 0))
        elif op == ReqOp.WRITE_ZEROES:
            opcode = IoOpcode.WRITE_ZEROES
            status, _ = self._submit(q, opcode, 1, 0, 0, (slba & 0xFFFFFFFF, slba >> 32, nlb - 1, 0, 0, 0))
        elif op == ReqOp.DISCARD:
            opcode = IoOpcode.DATASET_MANAGEMENT
            page = q.prp_list
            self.mm.ram.view[page : page + 16] = struct.pack("<IIQ", 0, nlb, slba)
            status, _ = self._submit(q, opcode, 1, page, 0, (0, 1 << 2, 0, 0, 0, 0))
        else:
            raise KernelError(errno.EOPNOTSUPP, f"{self.name}: operation {op.name} not supported")
        if status:
            self.log.err(nvme_log_error(self.disk.name if self.disk else self.name, opcode, slba, nlb, status))
            raise NvmeError(f"{op.name} of {nlb} blocks at LBA {slba}", status)

    def _map_prps(self, q: _Queue, segments: list[tuple[int, int]]) -> tuple[int, int]:
        """PRP1 and PRP2 (an address or a PRP list) for data in `segments` (nvme_pci_setup_prps)."""
        pages: list[int] = []
        for i, (addr, length) in enumerate(segments):
            end = addr + length
            if i and addr & (PAGE_SIZE - 1):
                raise KernelError(errno.EIO, f"{self.name}: a segment inside a request does not start on a page")
            if i < len(segments) - 1 and end & (PAGE_SIZE - 1):
                raise KernelError(errno.EIO, f"{self.name}: a segment inside a request does not end on a page")
            pages.extend(range(addr & ~(PAGE_SIZE - 1), end, PAGE_SIZE))
        pages[0] = segments[0][0]
        if len(pages) == 1:
            return pages[0], 0
        if len(pages) == 2:
            return pages[0], pages[1]
        if len(pages) - 1 > PRP_ENTRIES_PER_PAGE:
            raise KernelError(errno.EIO, f"{self.name}: request larger than one PRP list page")
        rest = pages[1:]
        self.mm.ram.view[q.prp_list : q.prp_list + 8 * len(rest)] = struct.pack(f"<{len(rest)}Q", *rest)
        return pages[0], q.prp_list

    def _submit(self, q: _Queue, opcode: int, nsid: int, prp1: int, prp2: int,
                cdw: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
        cid = q.next_cid
        q.next_cid = (cid + 1) & 0xFFFF
        slot = q.sq_addr + q.sq_tail * SQE_SIZE
        SQE_STRUCT.pack_into(self.mm.ram.view, slot, opcode, 0, cid, nsid, prp1, prp2, *cdw)
        q.sq_tail = (q.sq_tail + 1) % q.depth
        self.bar.writel(q.sq_doorbell(), q.sq_tail)  # the controller runs, then interrupts: _reap
        result = q.done.pop(cid, None)
        if result is None:
            csts = self._csts()
            why = "controller fatal status" if csts & CSTS_CFS else "no completion"
            self.log.err(f"nvme {self.name}: I/O {cid} QID {q.qid} timeout, {why} (CSTS {csts:#x})")
            raise KernelError(errno.EIO, f"{self.name}: command {opcode:#x} did not complete: {why}")
        return result

    def _reap(self, q: _Queue) -> None:
        """The interrupt handler (nvme_irq): consume CQEs whose phase matches, then move the head doorbell."""
        ram = self.mm.ram.view
        moved = False
        while True:
            dw0, _dw1, _sqhd, _sqid, cid, status = CQE_STRUCT.unpack_from(ram, q.cq_addr + q.cq_head * CQE_SIZE)
            if status & 1 != q.phase:
                break
            q.done[cid] = (status >> 1, dw0)
            q.cq_head += 1
            if q.cq_head == q.depth:
                q.cq_head = 0
                q.phase ^= 1
            moved = True
        if moved:
            self.bar.writel(q.cq_doorbell(), q.cq_head)

    # --- the device tree (what the PCI core and nvme_sysfs_* show) -----------------------------

    def _register_devices(self) -> Device:
        """The PCI function and the controller below it (…/0000:00:04.0/nvme/nvme0); returns the controller."""
        core = self.core
        pci = pci_register_function(core, NVME_PCI_ADDRESS, NVME_PCI_IDS, "nvme")
        ctrl = Device(self.name, pci, cls=core.class_register("nvme"), devt=(NVME_CHAR_MAJOR, self.instance))
        ident = self.id_ctrl
        for name, value in (("model", str(ident["model"])), ("serial", str(ident["serial"])),
                            ("firmware_rev", str(ident["firmware"])), ("transport", "pcie"), ("state", "live"),
                            ("cntlid", str(ident["cntlid"])), ("address", NVME_PCI_ADDRESS),
                            ("queue_count", str(len(self.queues))), ("sqsize", str(IO_DEPTH - 1)),
                            ("numa_node", "-1")):
            ctrl.add_attr(name, const(value + "\n"))
        self.devices = [pci, device_register(ctrl)]
        return ctrl

    def unregister_devices(self, registry: BlockRegistry) -> None:
        """The disk, then the controller, then the PCI function leave the tree (and /sys)."""
        if self.disk is not None:
            registry.del_gendisk(self.disk)
            self.disk = None
        while self.devices:
            device_unregister(self.devices.pop())
