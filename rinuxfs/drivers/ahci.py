"""The AHCI host driver (drivers/ata/{ahci,libahci,libata-*}.c and sd), over the AHCI HBA model.

Contract
--------
- `AhciDriver.probe(registry, pci)` does what ahci_init_one and libata's EH do at boot:
  ahci_reset_controller (AE, HR, poll HR = 0), ahci_port_init (stop the engine and FIS receive,
  clear PxSERR, PxIS and IS), GHC.IE, one port memory area from the page allocator (command list,
  received-FIS area, 32 command tables: ahci_port_start), ahci_start_fis_rx (FRE, FR),
  ahci_start_engine (ST, CR), a COMRESET (sata_link_hardreset) and the classification by PxSIG,
  PxIE (thaw), IDENTIFY DEVICE, SET FEATURES (transfer mode). It binds to the PCI function and
  registers the SCSI disk: sda (major 8, 16 minors, from `registry.sd_name_and_devt()`),
  transport "sata", with queue limits taken from IDENTIFY (sector sizes, rotation, write cache,
  TRIM, NCQ depth). `remove()` is ahci_remove_one: the disk, the device tree, the binding go.
- `execute(req)` runs one block request synchronously: READ/WRITE become READ/WRITE FPDMA QUEUED
  (NCQ; PxSACT then PxCI) or READ/WRITE DMA (EXT) without NCQ, with a PRDT built from the
  request's RAM segments; FLUSH becomes FLUSH CACHE EXT; DISCARD becomes DATA SET MANAGEMENT/TRIM;
  WRITE_ZEROES becomes TRIM only if the disk reads zeros after TRIM. The doorbell write runs the
  HBA; its interrupt handler (`_interrupt`) reaps the finished tags before the write returns.
  A request larger than one command allows (PRDT room, 65535 sectors, 64 TRIM ranges per block)
  is cut into several commands, issued together under separate NCQ tags.
- A failed command goes through libata's error handling (`_error_handler`, ata_eh_autopsy and
  ata_eh_report): the port is frozen and restarted; an NCQ error reads log 10h (READ LOG EXT) to
  learn the failed tag, whose result taskfile it gives, and the other tags are issued again;
  a device error revalidates the disk; a link, host bus or interface error hard-resets the link.
  The report is Linux's (`exception Emask …`, `failed command: …`, `cmd …`/`res …`, `status:`,
  `error:`, SError decoded). Then the SCSI midlayer's decision: a media error (UNC) is never
  retried (ata_eh_worth_retry, and MEDIUM ERROR 11h is final for sd); anything else is retried
  up to sd's 5 retries unless the request is failfast (readahead). A final failure prints sd's
  FAILED / Sense Key / Add. Sense / CDB lines and raises `AtaError` (a BlkError: MEDIUM for UNC,
  so the block layer prints "critical medium error", the failing sector being the bad LBA, as
  sd_completed_bytes completes what lies before it). AtaError's constructor is the one place
  where ATA status and error become an errno.
- SCSI counters as scsi_sysfs shows them: iorequest_cnt and iodone_cnt count each dispatch and
  completion (one counter: execution is synchronous, so every dispatch has completed when
  `execute` returns or raises), ioerr_cnt each completion with an error, iotmo_cnt each command
  libata's EH took (it aborts them through scsi_timeout) and each real timeout.
- fail_io_timeout (blk_should_fake_timeout at scsi_done): the completion is dropped; SCSI EH
  runs after the queue's io_timeout, finds no command in libata and completes it as done
  ("normal completion occurred after SCSI timeout"): no log line, the time on the clock.
  As for NVMe (drivers/nvme.py explains why), nothing waits: `wait(seconds)` advances the
  simulated clock and the request's time.
- Hot plug: a PhyRdy / connect change interrupt outside a command schedules EH on the workqueue
  (ata_port_schedule_eh). A link that went down detaches the disk (the disk is dead, sd's
  shutdown lines, the SCSI device leaves /sys); one that came up probes and attaches it again.
  sysfs `device/delete` (scsi_remove_device), `device/rescan` (IDENTIFY again: a new capacity is
  a capacity change) and `class/scsi_host/host0/scan` ("<channel> <id> <lun>", each a number or
  "-": libata's user scan probes the port when no disk is attached) act at once.
- Probe registers with the driver core what the PCI core, libata, the SCSI midlayer and sd show:
  ata1 with its transport class objects below the PCI function, scsi host0, target0:0:0 and the
  SCSI device 0:0:0:0 (driver sd) that lsblk reads for TRAN=sata and HCTL, then the disk below it
  (…/0:0:0:0/block/sda).

One caller at a time: the driver and the model are not thread-safe, which the synchronous block
layer guarantees. All DMA memory is one block of frames owned by the driver until remove().
"""

from __future__ import annotations

import errno
import re
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter

from rinuxfs import __version__
from rinuxfs.block.bio import SECTOR_SHIFT, ReqOp, Request
from rinuxfs.block.errors import BlkError, BlkStatus
from rinuxfs.block.genhd import BlockRegistry, Gendisk
from rinuxfs.block.queue import HZ, QueueLimits, RequestQueue
from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.device import (
    Device,
    device_bind_driver,
    device_register,
    device_release_driver,
    device_unregister,
)
from rinuxfs.drivers.base.kobject import Show, const
from rinuxfs.drivers.pci import PciIds, write_only
from rinuxfs.errors import KernelError
from rinuxfs.hw import ahci_layouts as L
from rinuxfs.hw import ata
from rinuxfs.hw.ahci import AhciHba
from rinuxfs.hw.irq import IrqChip
from rinuxfs.hw.mmio import Bar
from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE
from rinuxfs.lib.ratelimit import DEFAULT_RATELIMIT_BURST, DEFAULT_RATELIMIT_SECONDS, RateLimit
from rinuxfs.lib.string_helpers import string_get_size
from rinuxfs.mm.core import MemoryManager
from rinuxfs.printk import KernelLog

# The PCI function: QEMU's ICH9 AHCI (q35), where Linux finds it.
AHCI_PCI_ADDRESS = "0000:00:1f.2"
PCI_VENDOR_INTEL, PCI_DEVICE_ICH9_AHCI = 0x8086, 0x2922
PCI_CLASS_SATA_AHCI = 0x010601
AHCI_PCI_IDS = PciIds(PCI_VENDOR_INTEL, PCI_DEVICE_ICH9_AHCI, 0x1AF4, 0x1100, PCI_CLASS_SATA_AHCI, revision=0x02)
MSI_HWIRQ = (0x1F << 3 | 2) << 11  # pci_msi_domain_calc_hwirq: devfn 00:1f.2 → "512000-edge"
ABAR_PHYS = 0xFEBD5000  # where the BIOS put ABAR; only the boot log shows it
ABAR_LEN = 2048

MODEL = "rinuxfs SATA SSD"  # 16 characters: the whole name fits SCSI INQUIRY's product field
FIRMWARE = ".".join(__version__.split(".")[:2])  # 4 characters or fewer: INQUIRY's revision is the same

# Port memory (ahci_port_start): command list, received FIS, then the command tables, one block.
PORT = L.PORT_BASE  # port 0: the model implements one
CMD_LIST_OFFSET = 0  # 1 KiB aligned
RX_FIS_OFFSET = 0x400  # 256 B aligned
CMD_TABLE_SIZE = 2 * PAGE_SIZE  # 128 B header + 504 PRDs (Linux's AHCI_MAX_SG is 168)
PRDS_PER_TABLE = (CMD_TABLE_SIZE - L.CT_PRDT_OFFSET) // L.PRD_SIZE
TABLES_OFFSET = PAGE_SIZE
SCRATCH_OFFSET = TABLES_OFFSET + L.NR_SLOTS * CMD_TABLE_SIZE  # IDENTIFY, log pages, TRIM ranges: one page
PORT_MEM_PAGES = (SCRATCH_OFFSET + PAGE_SIZE) // PAGE_SIZE

_length = itemgetter(1)  # of an (address, length) segment or PRD

INTERNAL_TAG = L.NR_SLOTS - 1  # non-NCQ commands use the last slot; NCQ tags are 0..30 (libata's depth 31)
NCQ_TAGS = L.NR_SLOTS - 1
PRD_MAX_BYTES = L.PRD_DBC_MASK + 1  # 4 MiB per PRD
MAX_SECTORS_LBA48 = 65535  # ATA_MAX_SECTORS_LBA48: libata never uses the count-0-means-65536 encoding
MAX_SECTORS_LBA28 = 256
DEFAULT_MAX_SECTORS_KB = 1280  # BLK_DEF_MAX_SECTORS_CAP, what sd starts with
TRIM_RANGE_MAX = 0xFFFF  # sectors per DSM range entry
TRIM_RANGES_PER_CMD = ata.DSM_RANGES_PER_BLOCK  # libata sends one 512-byte block (ATA_MAX_TRIM_RNUM)
SD_MAX_RETRIES = 5  # sd's retries of a failed command: 6 attempts in all

# ahci.h DEF_PORT_IRQ and PORT_IRQ_ERROR: what the port interrupts on, and which bits mean trouble.
DEF_PORT_IRQ = (L.PxIS_TFES | L.PxIS_HBFS | L.PxIS_HBDS | L.PxIS_IFS | L.PxIS_PRCS | L.PxIS_PCS | L.PxIS_UFS
                | L.PxIS_OFS | L.PxIS_INFS | L.PxIS_DPS | L.PxIS_SDBS | L.PxIS_DSS | L.PxIS_PSS | L.PxIS_DHRS)
PORT_IRQ_ERROR = (L.PxIS_TFES | L.PxIS_HBFS | L.PxIS_HBDS | L.PxIS_IFS | L.PxIS_PRCS | L.PxIS_PCS | L.PxIS_UFS
                  | L.PxIS_OFS | L.PxIS_INFS)
PORT_IRQ_HOTPLUG = L.PxIS_PRCS | L.PxIS_PCS
SCTL_NO_PARTIAL_SLUMBER = 0x300  # IPM = 3: what libata writes to SControl
XFER_UDMA_6 = 0x46  # SET FEATURES 03h count: UDMA mode 6 (UDMA/133)
WAIT_TRIES = 100  # register polls; the model settles at once, a real HBA within ata_wait_register's timeout

# libata's err_mask bits (AC_ERR_*) and EH actions (ATA_EH_*)
AC_ERR_DEV, AC_ERR_HSM, AC_ERR_TIMEOUT, AC_ERR_MEDIA = 0x1, 0x2, 0x4, 0x8
AC_ERR_ATA_BUS, AC_ERR_HOST_BUS, AC_ERR_SYSTEM, AC_ERR_INVALID = 0x10, 0x20, 0x40, 0x80
AC_ERR_OTHER, AC_ERR_NCQ = 0x100, 0x400
ATA_EH_REVALIDATE, ATA_EH_SOFTRESET, ATA_EH_HARDRESET, ATA_EH_ENABLE_LINK = 0x1, 0x2, 0x4, 0x8
ATA_EH_RESET = ATA_EH_SOFTRESET | ATA_EH_HARDRESET
# ata_err_string: the first name that matches, in this order
_ERR_STRINGS = ((AC_ERR_HOST_BUS, "host bus error"), (AC_ERR_ATA_BUS, "ATA bus error"), (AC_ERR_TIMEOUT, "timeout"),
                (AC_ERR_HSM, "HSM violation"), (AC_ERR_SYSTEM, "internal error"), (AC_ERR_MEDIA, "media error"),
                (AC_ERR_INVALID, "invalid argument"), (AC_ERR_DEV, "device error"), (AC_ERR_NCQ, "NCQ error"))
# ata_eh_link_report's SError names, bit by bit
_SERROR_NAMES = ((0, "RecovData"), (1, "RecovComm"), (8, "UnrecovData"), (9, "Persist"), (10, "Proto"),
                 (11, "HostInt"), (16, "PHYRdyChg"), (17, "PHYInt"), (18, "CommWake"), (19, "10B8B"), (20, "Dispar"),
                 (21, "BadCRC"), (22, "Handshk"), (23, "LinkSeq"), (24, "TrStaTrns"), (25, "UnrecFIS"),
                 (26, "DevExch"))

# ata_eh_link_report's decodes of the status and error registers, highest bit first
_STATUS_NAMES = ((ata.ATA_BSY, "Busy"), (ata.ATA_DRDY, "DRDY"), (ata.ATA_DF, "DF"), (ata.ATA_DRQ, "DRQ"),
                 (ata.ATA_ERR, "ERR"))
_ERROR_NAMES = ((0x80, "ICRC"), (ata.ATA_UNC, "UNC"), (ata.ATA_AMNF, "AMNF"), (ata.ATA_IDNF, "IDNF"),
                (ata.ATA_ABRT, "ABRT"))
_PROT_NAMES = {True: "ncq dma", False: "dma"}


def _err_string(err_mask: int) -> str:
    return next((name for bit, name in _ERR_STRINGS if err_mask & bit), "unknown error")


# ata_to_sense_error (6.1.192 / 6.18): the error register first, then the status register
_SENSE = (
    (ata.ATA_UNC | 0x80, "Medium Error", "Unrecovered read error - auto reallocate failed"),
    (ata.ATA_AMNF, "Medium Error", "Address mark not found for data field"),
    (ata.ATA_IDNF, "Illegal Request", "Logical block address out of range"),
)


class AtaError(BlkError):
    """A failed ATA command, with the errno Linux returns for it: the only place ATA status becomes errno.

    libata turns the task file into SCSI sense (ata_to_sense_error) and sd/blk into an errno:
    UNC → MEDIUM ERROR/11h → BLK_STS_MEDIUM (ENODATA; the page cache makes it EIO),
    IDNF → ILLEGAL REQUEST/21h (LBA out of range), ABRT → ABORTED COMMAND, each of those EIO.
    ATA has no write-protect bit, so an ABRT of a write while the medium is read-only is taken as
    the write protection (SCSI DATA PROTECT) and becomes EROFS. Host bus errors, interface errors
    and timeouts are EIO too. `retry` says whether libata and sd would try the command again;
    `bad_lba` is the failing LBA the task file names (for media errors).
    """

    def __init__(self, what: str, status: int, error: int, *, write: bool = False, write_protected: bool = False,
                 reason: str = "", err_mask: int = AC_ERR_DEV, bad_lba: int | None = None,
                 sector: int | None = None) -> None:
        media = bool(err_mask & AC_ERR_MEDIA)
        err = errno.EROFS if write and write_protected and error & ata.ATA_ABRT and not error & ata.ATA_IDNF else None
        detail = reason or f"status {{ {_decode(status, _STATUS_NAMES)} }} error {{ {_decode(error, _ERROR_NAMES)} }}"
        super().__init__(BlkStatus.MEDIUM if media else BlkStatus.IOERR, f"ata1.00: {what} failed: {detail}",
                         sector=sector, err=err)
        self.status_reg = status
        self.error = error
        self.err_mask = err_mask
        self.bad_lba = bad_lba
        self.retry = not media  # ata_eh_worth_retry: media errors never; anything else from the fs stack


@dataclass
class _Failure:
    """What EH learned of the command that failed: its result taskfile and err_mask."""

    command: _AtaCommand
    tag: int
    status: int
    error: int
    err_mask: int
    lba: int  # the result taskfile's LBA (the failing LBA of a media error)



def _decode(value: int, names: tuple[tuple[int, str], ...]) -> str:
    return " ".join(name for bit, name in names if value & bit)


@dataclass(slots=True)
class _AtaCommand:
    """One ATA command as libata's taskfile holds it (struct ata_taskfile), before it gets a slot."""

    name: str
    command: int
    lba: int = 0
    count: int = 0  # 16 bits; for NCQ the tag goes here and the sector count in `features`
    features: int = 0
    device: int = 0x40  # LBA mode
    prds: Sequence[tuple[int, int]] = ()
    write: bool = False  # data moves host → device (command header W bit)
    ncq: bool = False


@dataclass(frozen=True, slots=True)
class DiskIdentity:
    """What libata takes from IDENTIFY DEVICE (ata_dev_configure)."""

    model: str
    serial: str
    firmware: str
    sectors: int  # in logical blocks
    lba48: bool
    logical_block_size: int
    physical_block_size: int
    ncq_depth: int  # 0 without NCQ
    trim: bool
    zero_after_trim: bool
    rotational: bool
    write_cache: bool
    flush_ext: bool
    max_multiple: int
    major_version: int
    max_dsm_blocks: int

    @classmethod
    def parse(cls, page: bytes) -> DiskIdentity:
        ident = ata.IdentifyDevice.parse(page)
        lba48 = bool(ident.command_set_2 & (1 << 10))
        sectors = ident.lba48_capacity if lba48 else ident.lba28_capacity
        logical = 512
        physical = 512
        word106 = ident.sector_size
        if word106 & 0xC000 == 0x4000:  # the word is valid
            if word106 & (1 << 12):  # words 117-118 give the logical sector size in words
                logical = ident.logical_sector_words * 2
            if word106 & (1 << 13):  # 2^(bits 3:0) logical sectors per physical sector
                physical = logical << (word106 & 0xF)
        ncq = bool(ident.sata_capabilities & (1 << 8)) and ident.sata_capabilities not in (0, 0xFFFF)
        major = ident.major_version
        major_version = max((v for v in range(1, 15) if major & (1 << v)), default=0) if major != 0xFFFF else 0
        return cls(
            model=ident.model_number, serial=ident.serial_number, firmware=ident.firmware_revision,
            sectors=sectors, lba48=lba48, logical_block_size=logical, physical_block_size=max(physical, logical),
            ncq_depth=(ident.queue_depth & 0x1F) + 1 if ncq else 0,
            trim=bool(ident.dsm_support & ata.DSM_TRIM),
            # ata_id_has_zero_after_trim: deterministic read after TRIM (69.14) and zeros (69.5)
            zero_after_trim=ident.additional_supported & 0x4020 == 0x4020,
            rotational=ident.rotation_rate != 1,
            write_cache=bool(ident.cfs_enable_1 & (1 << 5)),
            flush_ext=bool(ident.command_set_2 & (1 << 13)),
            max_multiple=ident.max_multiple & 0xFF,
            major_version=major_version,
            max_dsm_blocks=ident.max_dsm_blocks or 1,
        )


class AhciDriver:
    """The ahci driver for one HBA with one SATA disk on port 0 (ata1, scsi host0, sd 0:0:0:0)."""

    host_no = 0
    ata_port = 1

    def __init__(self, hba: AhciHba, mm: MemoryManager, irqs: IrqChip, log: KernelLog, core: DriverCore, *,
                 read_only: bool = False, wait: Callable[[float], None] = lambda seconds: None,
                 queue_work: Callable[[Callable[[], None]], None] = lambda fn: fn()) -> None:
        self.hba = hba
        self.core = core
        self.devices: list[Device] = []  # what probe registered below the PCI function, parents first
        self.scsi_devices: list[Device] = []  # target0:0:0, 0:0:0:0 and its class devices: what delete takes
        self.pci: Device | None = None
        self.registry: BlockRegistry | None = None
        self.bar = Bar(hba)
        self.mm = mm
        self.irqs = irqs
        self.log = log
        self.read_only = read_only
        self.wait = wait  # the simulated clock skips this many seconds (a timeout nobody waits for)
        self.queue_work = queue_work
        self.irq = 0
        self.mem = 0  # physical address of the port memory block
        self.identity: DiskIdentity | None = None
        self.id_page = b""  # the last IDENTIFY DEVICE data, as sysfs `id` shows it
        self.ncq = False
        self.depth = 1  # host queue depth: NCQ tags in use, or 1
        self.disk: Gendisk | None = None
        self.counts: Counter[str] = Counter()  # ATA commands issued, by name (tests and sysfs iorequest_cnt)
        self.errors = 0  # ioerr_cnt
        self.timeouts = 0  # iotmo_cnt
        self.eh_rounds = 0
        self.removed = False
        self._next_tag = 0
        self._active = 0  # non-NCQ slots issued, not yet seen complete
        self._ncq_active = 0  # NCQ tags issued, not yet seen complete
        self._irq_error = 0  # PxIS error bits the handler saw; the error handler takes them
        self._irq_stat = 0  # the whole PxIS value(s) those came with
        self._busy = False  # a command is being issued: an error interrupt is the issuer's to handle
        self._eh_scheduled = False
        self.link_down = False  # EH found no device on the link: nothing is retried until it comes back
        self.host: Device | None = None
        self._cap = 0
        self._sctl = SCTL_NO_PARTIAL_SLUMBER
        self._sd_rl = RateLimit(DEFAULT_RATELIMIT_SECONDS * HZ, DEFAULT_RATELIMIT_BURST)
        self._jiffies = lambda: int(time.monotonic() * HZ)

    # --- registers --------------------------------------------------------------------------

    def _readl(self, offset: int) -> int:
        return self.bar.readl(offset)

    def _writel(self, offset: int, value: int) -> None:
        self.bar.writel(offset, value)

    def _wait(self, offset: int, mask: int, want: int, what: str) -> int:
        """ata_wait_register: poll until (reg & mask) == want; ENODEV/EIO naming `what` if it never does."""
        value = self._readl(offset)
        for _ in range(WAIT_TRIES):
            if value & mask == want:
                return value
            value = self._readl(offset)
        if value & mask == want:
            return value
        raise KernelError(errno.EIO, f"ahci {AHCI_PCI_ADDRESS}: {what} (register {offset:#x} = {value:#x})")

    # --- probe and remove -------------------------------------------------------------------

    def probe(self, registry: BlockRegistry, pci: Device) -> Gendisk | None:
        self.registry, self.pci = registry, pci
        cap = self._readl(L.CAP)
        self._reset_controller()
        self._print_info(cap)
        self._port_init()
        self._writel(L.GHC, self._readl(L.GHC) | L.GHC_IE)
        self.irq = self.irqs.request_irq("PCI-MSI", MSI_HWIRQ, f"ahci[{AHCI_PCI_ADDRESS}]", 0, self._interrupt)
        self.log.info(f"scsi host{self.host_no}: ahci")
        self.log.info(f"ata{self.ata_port}: SATA max UDMA/133 abar m{ABAR_LEN}@{ABAR_PHYS:#x} port "
                      f"{ABAR_PHYS + PORT:#x} irq {self.irq}")
        self._port_start()
        self._cap = cap
        device_bind_driver(pci, self.core.bus_register("pci").driver_register("ahci"))
        pci.add_attr("irq", const(f"{self.irq}\n"))
        self._register_devices(pci)
        self._hardreset()  # a port with nothing on it stays empty; a hot plug or a scan finds the disk later
        self._thaw()
        return self._attach()

    def _attach(self) -> Gendisk:
        self._ata_probe()
        return self._scsi_attach()

    def _ata_probe(self) -> DiskIdentity:
        """ata_dev_classify, then ata_dev_configure: IDENTIFY, NCQ, the transfer mode."""
        sig = self._readl(PORT + L.PxSIG)
        if sig != L.SIG_ATA:  # ahci_dev_classify: 0x101 is an ATA disk, 0xEB140101 ATAPI, else nothing
            raise KernelError(errno.ENODEV, f"ata{self.ata_port}: no ATA disk on the port (signature {sig:#010x})")
        self.identity = None
        ident = self._identify()
        self._configure(ident, self._cap)
        self._set_xfer_mode()
        self.link_down = False
        return ident

    def _scsi_attach(self) -> Gendisk:
        """The SCSI scan of 0:0:0:0 and sd_probe: the SCSI device, then its disk (whose partitions are read)."""
        registry, ident = self.registry, self.identity
        assert registry is not None and ident is not None
        self.counts["requests"] = self.errors = self.timeouts = 0  # a new scsi_device's
        disk = self._gendisk(registry, ident)
        registry.add_disk(disk, self._register_scsi_device())
        return disk

    def remove(self) -> None:
        """ahci_remove_one → ata_host_detach: the disk goes (synced and stopped if it still answers), then all."""
        if self.removed:
            return
        if self.disk is not None:
            self._detach(alive=self.hba.port.link_up)
        self.removed = True
        while self.devices:
            device_unregister(self.devices.pop())
        if self.pci is not None:
            self.pci.remove("irq")
            device_release_driver(self.pci)
        self._stop_engine()
        if self.irq:
            self.irqs.free_irq(self.irq)
            self.irq = 0
        if self.mem:
            first = self.mem >> PAGE_SHIFT
            self.mm.free_pages(list(range(first, first + PORT_MEM_PAGES)))
            self.mem = 0

    def _reset_controller(self) -> None:
        """ahci_reset_controller: AHCI mode first (HR is AHCI-specific), then HR until it reads 0."""
        self._writel(L.GHC, self._readl(L.GHC) | L.GHC_AE)
        ghc = self._readl(L.GHC)
        if not ghc & L.GHC_HR:
            self._writel(L.GHC, ghc | L.GHC_HR)
        try:
            self._wait(L.GHC, L.GHC_HR, 0, "controller reset failed")
        except KernelError as e:
            raise KernelError(errno.ENODEV, str(e.args[0])) from None
        self._writel(L.GHC, self._readl(L.GHC) | L.GHC_AE)

    def _print_info(self, cap: int) -> None:
        """ahci_print_info: version, slots, ports, speed, implemented ports, mode, flags."""
        vs = self._readl(L.VS)
        pi = self._readl(L.PI)
        speed = {1: "1.5", 2: "3", 3: "6"}.get((cap >> L.CAP_ISS_SHIFT) & 0xF, "?")
        slots = ((cap >> L.CAP_NCS_SHIFT) & 0x1F) + 1
        ports = (cap & 0x1F) + 1
        mode = "SATA" if cap & L.CAP_SAM else "IDE"
        version = f"{vs >> 24 & 0xFF:02x}{vs >> 16 & 0xFF:02x}.{vs >> 8 & 0xFF:02x}{vs & 0xFF:02x}"
        self.log.info(f"ahci {AHCI_PCI_ADDRESS}: version 3.0")
        self.log.info(f"ahci {AHCI_PCI_ADDRESS}: AHCI {version} {slots} slots {ports} ports {speed} Gbps "
                      f"{pi:#x} impl {mode} mode")
        flags = [name for bit, name in ((L.CAP_S64A, "64bit"), (L.CAP_SNCQ, "ncq"), (L.CAP_SAM, "only"))
                 if cap & bit]
        self.log.info(f"ahci {AHCI_PCI_ADDRESS}: flags: {' '.join(flags)}")

    def _port_init(self) -> None:
        """ahci_port_init: the port idle (engine and FIS receive off), old errors and interrupts cleared."""
        self._stop_engine()
        cmd = self._readl(PORT + L.PxCMD)
        if cmd & L.PxCMD_FRE:
            self._writel(PORT + L.PxCMD, cmd & ~L.PxCMD_FRE)
            self._wait(PORT + L.PxCMD, L.PxCMD_FR, 0, "FIS receive did not stop")
        self._clear_errors()

    def _clear_errors(self) -> None:
        """PxSERR and PxIS are write-1-to-clear: writing back what they read clears exactly that."""
        self._writel(PORT + L.PxSERR, self._readl(PORT + L.PxSERR))
        self._writel(PORT + L.PxIS, self._readl(PORT + L.PxIS))
        self._writel(L.IS, 1 << 0)

    def _port_start(self) -> None:
        """ahci_port_start + ahci_start_fis_rx: one zeroed DMA block, its addresses in CLB/FB, then FRE."""
        self.mem = self.mm.alloc_pages_exact(PORT_MEM_PAGES) << PAGE_SHIFT
        size = PORT_MEM_PAGES << PAGE_SHIFT
        self.mm.ram.view[self.mem : self.mem + size] = bytes(size)
        clb, fb = self.mem + CMD_LIST_OFFSET, self.mem + RX_FIS_OFFSET
        self._writel(PORT + L.PxCLBU, clb >> 32)
        self._writel(PORT + L.PxCLB, clb & 0xFFFFFFFF)
        self._writel(PORT + L.PxFBU, fb >> 32)
        self._writel(PORT + L.PxFB, fb & 0xFFFFFFFF)
        self._writel(PORT + L.PxCMD, self._readl(PORT + L.PxCMD) | L.PxCMD_FRE)
        self._wait(PORT + L.PxCMD, L.PxCMD_FR, L.PxCMD_FR, "FIS receive did not start")
        self._start_engine()

    def _start_engine(self) -> None:
        """ahci_start_engine: ST, and the HBA answers with CR."""
        self._writel(PORT + L.PxCMD, self._readl(PORT + L.PxCMD) | L.PxCMD_ST)
        self._wait(PORT + L.PxCMD, L.PxCMD_CR, L.PxCMD_CR, "command engine did not start")

    def _stop_engine(self) -> None:
        """ahci_stop_engine: clear ST, wait for CR to drop (the HBA forgets PxCI and PxSACT)."""
        cmd = self._readl(PORT + L.PxCMD)
        if cmd & (L.PxCMD_ST | L.PxCMD_CR):
            self._writel(PORT + L.PxCMD, cmd & ~L.PxCMD_ST)
            self._wait(PORT + L.PxCMD, L.PxCMD_CR, 0, "command engine did not stop")
        self._active = self._ncq_active = 0

    def _hardreset(self) -> bool:
        """ahci_hardreset: COMRESET through SControl with the engine stopped; False if the link stays down."""
        self._stop_engine()
        # As ahci_hardreset does: mark the D2H area busy, so a stale FIS cannot pass for the new signature.
        self.mm.ram.view[self.mem + RX_FIS_OFFSET + L.RX_FIS_D2H + 2] = ata.ATA_BSY
        self._writel(PORT + L.PxSCTL, self._sctl | L.SCTL_DET_COMRESET)
        self._writel(PORT + L.PxSCTL, self._sctl)
        ssts = self._readl(PORT + L.PxSSTS)
        if ssts & 0xF != 3:  # DET 3: device present, phy communication established
            self.log.info(f"ata{self.ata_port}: SATA link down (SStatus {ssts:x} SControl {self._sctl:x})")
            self._writel(PORT + L.PxSERR, self._readl(PORT + L.PxSERR))
            self._start_engine()
            return False
        speed = {1: "1.5", 2: "3.0", 3: "6.0"}.get((ssts >> 4) & 0xF, "?")
        self.log.info(f"ata{self.ata_port}: SATA link up {speed} Gbps (SStatus {ssts:x} SControl {self._sctl:x})")
        self._writel(PORT + L.PxSERR, self._readl(PORT + L.PxSERR))  # ata_std_postreset: the reset's own SError
        self._start_engine()
        self._wait(PORT + L.PxTFD, ata.ATA_BSY | ata.ATA_DRQ, 0, "device stayed busy after COMRESET")
        return True

    def _freeze(self) -> None:
        """ahci_freeze: mask the port's interrupts while EH resets it (a COMRESET raises PhyRdy changes)."""
        self._writel(PORT + L.PxIE, 0)

    def _thaw(self) -> None:
        """ahci_thaw: clear what the reset left in PxIS and IS, then unmask the port's interrupts."""
        self._clear_errors()
        self._irq_error = self._irq_stat = 0
        self._writel(PORT + L.PxIE, DEF_PORT_IRQ)

    def _identify(self) -> DiskIdentity:
        """IDENTIFY DEVICE (PIO data-in, 512 bytes) into the scratch page; the page is checked and parsed."""
        page = self._internal(_AtaCommand("IDENTIFY DEVICE", ata.ATA_CMD_ID_ATA, device=0), 512)
        if page[510] == 0xA5 and sum(page) & 0xFF:
            self.log.warn(f"ata{self.ata_port}.00: IDENTIFY checksum mismatch")
        ident = DiskIdentity.parse(page)
        self.id_page = page
        if self.identity is not None and ident.serial != self.identity.serial:
            raise KernelError(errno.ENODEV, f"ata{self.ata_port}.00: a different disk after reset")
        self.identity = ident
        return ident

    def _configure(self, ident: DiskIdentity, cap: int) -> None:
        """ata_dev_configure: NCQ if both ends do it, and the lines libata prints about the disk."""
        host_slots = ((cap >> L.CAP_NCS_SHIFT) & 0x1F) + 1
        self.ncq = bool(cap & L.CAP_SNCQ) and ident.ncq_depth > 1
        self.depth = min(ident.ncq_depth, host_slots - 1, NCQ_TAGS) if self.ncq else 1
        dev = f"ata{self.ata_port}.00"
        self.log.info(f"{dev}: ATA-{ident.major_version}: {ident.model}, {ident.firmware}, max UDMA/133")
        if self.ncq:
            ncq = (f"NCQ (depth {self.depth}/{ident.ncq_depth})" if self.depth < ident.ncq_depth
                   else f"NCQ (depth {ident.ncq_depth})")
        else:
            ncq = "NCQ (not used)" if ident.ncq_depth else ""
        lba = "LBA48" if ident.lba48 else "LBA"
        self.log.info(f"{dev}: {ident.sectors} sectors, multi {ident.max_multiple}: {lba} {ncq}".rstrip())

    def _set_xfer_mode(self) -> None:
        """ata_dev_set_mode: SET FEATURES, transfer mode, UDMA/133 (the link is SATA, the mode is nominal)."""
        self._internal(_AtaCommand("SET FEATURES", ata.ATA_CMD_SET_FEATURES, count=XFER_UDMA_6,
                                   features=ata.SETFEATURES_XFER, device=0))
        self.log.info(f"ata{self.ata_port}.00: configured for UDMA/133")

    # --- the block device -------------------------------------------------------------------

    def _limits(self, ident: DiskIdentity) -> QueueLimits:
        lbs = ident.logical_block_size
        trim_max = TRIM_RANGE_MAX * TRIM_RANGES_PER_CMD * lbs if ident.trim else 0  # ata_scsiop_inq_b0
        max_hw_kb = (MAX_SECTORS_LBA48 if ident.lba48 else MAX_SECTORS_LBA28) * 512 // 1024
        return QueueLimits(
            logical_block_size=lbs, physical_block_size=ident.physical_block_size,
            max_hw_sectors_kb=max_hw_kb, max_sectors_kb=min(DEFAULT_MAX_SECTORS_KB, max_hw_kb),
            max_segments=PRDS_PER_TABLE, read_ahead_kb=128,
            nr_requests=self.depth, queue_depth=self.depth,
            rotational=int(ident.rotational),
            write_cache="write back" if ident.write_cache else "write through",
            discard_granularity=ident.physical_block_size if ident.trim else 0,
            discard_max_hw_bytes=trim_max, discard_max_bytes=trim_max,
            write_zeroes_max_bytes=trim_max if ident.zero_after_trim else 0,
            max_discard_segments=1, max_segment_size=PRD_MAX_BYTES,
            dma_alignment=lbs - 1,  # ata_scsi_dev_config: a sector's alignment for ATA disks
        )

    def _gendisk(self, registry: BlockRegistry, ident: DiskIdentity) -> Gendisk:
        name, major, first_minor = registry.sd_name_and_devt()
        nr_sects = ident.sectors * ident.logical_block_size >> SECTOR_SHIFT
        # mq-deadline: Linux's default elevator for a single-queue device such as a SATA disk.
        queue = RequestQueue(self, self._limits(ident), scheduler="mq-deadline")
        queue.add_random = ident.rotational  # sd_read_block_characteristics: spinning disks feed entropy
        disk = Gendisk(name, major, first_minor, 16, nr_sects, queue, model=ident.model, serial=ident.serial,
                       firmware=ident.firmware, transport="sata", read_only=self.read_only)
        disk.bb = self.hba.badblocks  # the simulated drive keeps its medium's bad-block list
        self.disk = disk
        self._scsi_scan_messages(disk, ident)
        return disk

    def _scsi_scan_messages(self, disk: Gendisk, ident: DiskIdentity) -> None:
        sd = f"sd {self.hctl}: [{disk.name}]"
        self.log.info(f"scsi {self.hctl}: Direct-Access     {self.scsi_vendor} {self.scsi_model} {self.scsi_rev} "
                      f"PQ: 0 ANSI: 5")
        self._log_capacity(disk, ident)
        if ident.physical_block_size != ident.logical_block_size:
            self.log.info(f"{sd} {ident.physical_block_size}-byte physical blocks")
        self.log.info(f"{sd} Write Protect is {'on' if self.read_only else 'off'}")
        self._log_cache(ident)

    def _log_capacity(self, disk: Gendisk, ident: DiskIdentity) -> None:
        lbs = ident.logical_block_size
        self.log.info(f"sd {self.hctl}: [{disk.name}] {ident.sectors} {lbs}-byte logical blocks: "
                      f"({string_get_size(ident.sectors, lbs, 1000)}/{string_get_size(ident.sectors, lbs, 1024)})")

    def _log_cache(self, ident: DiskIdentity) -> None:
        assert self.disk is not None
        wc = "enabled" if ident.write_cache else "disabled"
        self.log.info(f"sd {self.hctl}: [{self.disk.name}] Write cache: {wc}, read cache: enabled, "
                      "doesn't support DPO or FUA")

    # --- SCSI identity as libata's INQUIRY emulation reports it (ata_scsiop_inq_std) ------------

    @property
    def hctl(self) -> str:
        return f"{self.host_no}:0:0:0"

    @property
    def scsi_vendor(self) -> str:
        return "ATA     "

    @property
    def scsi_model(self) -> str:
        model = self.identity.model if self.identity else ""
        return model[:16].ljust(16)

    @property
    def scsi_rev(self) -> str:
        """The last 4 characters of the 8-character firmware field, or the first 4 if those are blank (SAT)."""
        fw = (self.identity.firmware if self.identity else "").ljust(8)
        rev = fw[4:8] if fw[4:8].strip() else fw[:4]
        return rev if rev.strip() else "n/a "

    # --- I/O --------------------------------------------------------------------------------

    def execute(self, req: Request) -> None:
        """The SCSI command of one request, with sd's retries; AtaError when it fails for good."""
        ident = self.identity
        if ident is None or self.disk is None or self.link_down:
            raise BlkError(BlkStatus.IOERR, f"{self.hctl}: rejecting I/O to offline device", quiet=True)
        while True:
            self.counts["requests"] += 1  # iorequest_cnt: at dispatch
            try:
                self._dispatch(req, ident)
            except AtaError as e:
                self.errors += 1  # ioerr_cnt: a completion with a nonzero result
                if e.retry and not req.failfast and req.retries < SD_MAX_RETRIES and not self.link_down:
                    req.retries += 1  # scsi_eh_flush_done_q: the command goes back to the queue
                    continue
                self._sd_failed(req, e)
                raise
            except KernelError:
                self.errors += 1
                raise
            if self.disk is not None and self.disk.queue.should_fake_timeout():
                self._scsi_timeout(req)
            return

    def _dispatch(self, req: Request, ident: DiskIdentity) -> None:
        op = req.op
        if op in (ReqOp.READ, ReqOp.WRITE):
            self._read_write(req, ident)
        elif op == ReqOp.FLUSH:
            flush = ata.ATA_CMD_FLUSH_EXT if ident.flush_ext else ata.ATA_CMD_FLUSH
            self._issue([_AtaCommand("FLUSH CACHE EXT" if ident.flush_ext else "FLUSH CACHE", flush)])
        elif op == ReqOp.DISCARD and ident.trim:
            self._trim(req, ident)
        elif op == ReqOp.WRITE_ZEROES and ident.trim and ident.zero_after_trim:
            self._trim(req, ident)  # the disk promises zeros from trimmed blocks (IDENTIFY word 69)
        else:
            raise KernelError(errno.EOPNOTSUPP, f"ata{self.ata_port}.00: {op.name} not supported by the disk")

    def _scsi_timeout(self, req: Request) -> None:
        """fail_io_timeout dropped the completion: SCSI EH after the timeout finds no qc and completes it."""
        assert self.disk is not None
        seconds = self.disk.queue.timeout_seconds
        self.wait(seconds)
        req.waited_ns += int(seconds * 1e9)
        self.timeouts += 1  # scsi_timeout ran: iotmo_cnt

    def _lba_range(self, req: Request, ident: DiskIdentity) -> tuple[int, int]:
        """The request's first logical block and block count; EINVAL if it is not whole blocks."""
        shift = ident.logical_block_size.bit_length() - 1
        start, nbytes = req.sector << SECTOR_SHIFT, req.nr_sectors << SECTOR_SHIFT
        if (start | nbytes) & (ident.logical_block_size - 1):
            raise KernelError(errno.EINVAL, f"ata{self.ata_port}.00: I/O not aligned to the logical block size")
        return start >> shift, nbytes >> shift

    def _read_write(self, req: Request, ident: DiskIdentity) -> None:
        lba, nblocks = self._lba_range(req, ident)
        if not nblocks:
            return  # nothing to move (and a count of 0 would mean 65536 to the disk)
        write = req.op == ReqOp.WRITE
        lbs = ident.logical_block_size
        prds = build_prds(req.segments)
        if sum(map(_length, prds)) != nblocks * lbs:
            raise KernelError(errno.EIO, f"ata{self.ata_port}.00: request segments do not cover its sectors")
        max_blocks = MAX_SECTORS_LBA48 if ident.lba48 else MAX_SECTORS_LBA28
        if len(prds) <= PRDS_PER_TABLE and nblocks <= max_blocks:  # the common case: one command
            commands = [self._rw_command(write, lba, nblocks, prds, req.fua)]
        else:
            commands = []
            for chunk in split_prds(prds, lbs, PRDS_PER_TABLE, max_blocks * lbs):
                n = sum(map(_length, chunk)) // lbs
                commands.append(self._rw_command(write, lba, n, chunk, req.fua))
                lba += n
        if self.ncq:
            for first in range(0, len(commands), self.depth):
                self._issue(commands[first : first + self.depth])
        else:
            for command in commands:
                self._issue([command])
        if req.fua and not self.ncq:
            self._issue([_AtaCommand("FLUSH CACHE EXT", ata.ATA_CMD_FLUSH_EXT)])  # FUA without NCQ: write + flush

    def _rw_command(self, write: bool, lba: int, n: int, prds: Sequence[tuple[int, int]], fua: bool) -> _AtaCommand:
        """ata_build_rw_tf: FPDMA QUEUED with NCQ; else LBA28 READ/WRITE DMA when it fits, else the EXT form."""
        if self.ncq:
            name = "WRITE FPDMA QUEUED" if write else "READ FPDMA QUEUED"
            opcode = ata.ATA_CMD_FPDMA_WRITE if write else ata.ATA_CMD_FPDMA_READ
            return _AtaCommand(name, opcode, lba=lba, features=n, device=0x40 | (0x80 if fua else 0), prds=prds,
                               write=write, ncq=True)
        if lba + n <= ata.LBA28_LIMIT and n <= MAX_SECTORS_LBA28:  # lba_28_ok
            name = "WRITE DMA" if write else "READ DMA"
            opcode = ata.ATA_CMD_WRITE if write else ata.ATA_CMD_READ
            return _AtaCommand(name, opcode, lba=lba & 0xFFFFFF, count=n & 0xFF, device=0x40 | (lba >> 24) & 0xF,
                               prds=prds, write=write)
        name = "WRITE DMA EXT" if write else "READ DMA EXT"
        opcode = ata.ATA_CMD_WRITE_EXT if write else ata.ATA_CMD_READ_EXT
        return _AtaCommand(name, opcode, lba=lba, count=n, prds=prds, write=write)

    def _trim(self, req: Request, ident: DiskIdentity) -> None:
        """DATA SET MANAGEMENT/TRIM: one 512-byte block of up to 64 ranges per command (ata_format_dsm_trim_descr)."""
        lba, nblocks = self._lba_range(req, ident)
        ranges: list[int] = []  # DsmRange entries: LBA in bits 47:0, length in 63:48
        end = lba + nblocks
        while lba < end:
            n = min(TRIM_RANGE_MAX, end - lba)
            ranges.append(lba | n << 48)
            lba += n
        scratch = self.mem + SCRATCH_OFFSET
        view = self.mm.ram.view
        for first in range(0, len(ranges), TRIM_RANGES_PER_CMD):
            batch = ranges[first : first + TRIM_RANGES_PER_CMD]
            block = struct.pack(f"<{len(batch)}Q", *batch).ljust(ata.SECTOR_SIZE, b"\0")  # DsmRange entries
            view[scratch : scratch + ata.SECTOR_SIZE] = block
            self._issue([_AtaCommand("DATA SET MANAGEMENT", ata.ATA_CMD_DSM, count=1, features=ata.DSM_TRIM,
                                     prds=[(scratch, ata.SECTOR_SIZE)], write=True)])

    def _internal(self, command: _AtaCommand, data_in: int = 0) -> bytes:
        """ata_exec_internal, for EH and probe: a non-NCQ command on the internal slot, no EH report on failure.

        `data_in` bytes land in the scratch page.
        """
        if data_in:
            scratch = self.mem + SCRATCH_OFFSET
            command.prds = [(scratch, data_in)]
        self._issue([command], internal=True)
        if not data_in:
            return b""
        return bytes(self.mm.ram.view[self.mem + SCRATCH_OFFSET : self.mem + SCRATCH_OFFSET + data_in])

    # --- issue and completion -----------------------------------------------------------------

    def _issue(self, commands: list[_AtaCommand], *, internal: bool = False) -> None:
        """Put each command in a slot, ring once (PxSACT then PxCI for NCQ), and check every one completed.

        All NCQ or one non-NCQ command: a non-NCQ command never shares the port with queued ones.
        A failure goes through EH: the innocent NCQ commands the device aborted are issued again
        (without being charged a retry), and AtaError is raised for the one that failed.
        """
        while commands:
            tags: dict[int, _AtaCommand] = {}
            for command in commands:
                tag = self._alloc_tag() if command.ncq else INTERNAL_TAG
                self._prep(tag, command)
                tags[tag] = command
                self.counts[command.name] += 1
            mask = sum(1 << tag for tag in tags)
            self._busy = True
            try:
                if commands[0].ncq:
                    self._ncq_active |= mask
                    self._writel(PORT + L.PxSACT, mask)
                else:
                    self._active |= mask
                self._writel(PORT + L.PxCI, mask)  # the HBA runs now; _interrupt reaps before this returns
            finally:
                self._busy = False
            if not self._irq_error and not (self._active | self._ncq_active) & mask:
                return
            if internal:
                self._internal_failed(tags)
            commands = self._error_handler(tags)  # the innocent NCQ commands, which go again

    def _alloc_tag(self) -> int:
        """The next NCQ tag in turn (tags are all free between requests: execution is synchronous)."""
        busy = self._ncq_active
        for _ in range(self.depth):
            tag = self._next_tag
            self._next_tag = (tag + 1) % self.depth
            if not busy & (1 << tag):
                return tag
        raise KernelError(errno.EBUSY, f"ata{self.ata_port}: no free NCQ tag")

    def _prep(self, tag: int, command: _AtaCommand) -> None:
        """ahci_qc_prep: the H2D FIS and PRDT in the slot's command table, then its command header."""
        view = self.mm.ram.view
        table = self.mem + TABLES_OFFSET + tag * CMD_TABLE_SIZE
        count = tag << 3 if command.ncq else command.count  # NCQ: the tag in count bits 7:3
        lba = command.lba.to_bytes(6, "little")
        features = command.features
        L.FIS_REG_H2D.pack_into(view, table, L.FIS_TYPE_REG_H2D, L.H2D_C, command.command, features & 0xFF,
                                lba[:3], command.device, lba[3:], features >> 8 & 0xFF, count & 0xFF,
                                count >> 8 & 0xFF, 0, 0)  # FisRegH2D
        prds = command.prds
        if prds:
            flat: list[int] = []
            for addr, length in prds:
                flat += (addr, length - 1)  # DBC is 0's based (ahci_fill_sg)
            _prdt_struct(len(prds)).pack_into(view, table + L.CT_PRDT_OFFSET, *flat)  # PrdEntry × n
        flags = 5 | (L.CMDH_W if command.write else 0)  # CFL: a Register H2D FIS is 5 dwords
        L.COMMAND_HEADER.pack_into(view, self.mem + CMD_LIST_OFFSET + tag * L.COMMAND_HEADER_SIZE, flags,
                                   len(prds), 0, table)  # CommandHeader

    def _interrupt(self) -> None:
        """ahci_single_level_irq → ahci_port_intr: ack PxIS then IS; complete what PxSACT / PxCI dropped.

        Errors are only recorded here: the error handler runs in process context, as libata's EH
        thread does, not inside the interrupt. A hot plug outside any command schedules it.
        """
        if not self._readl(L.IS) & 1:
            return  # not our port: IRQ_NONE
        status = self._readl(PORT + L.PxIS)
        self._writel(PORT + L.PxIS, status)
        if status & PORT_IRQ_ERROR:
            self._irq_error |= status & PORT_IRQ_ERROR
            self._irq_stat |= status  # what EH's description prints, completion bits included
            if not self._busy and status & PORT_IRQ_HOTPLUG and not self._eh_scheduled and not self.removed:
                self._eh_scheduled = True
                self.queue_work(self._hotplug_eh)  # ata_port_schedule_eh
        else:
            if self._ncq_active:
                self._ncq_active &= self._readl(PORT + L.PxSACT)  # SDB FIS: a cleared bit is a finished tag
            if self._active:
                self._active &= self._readl(PORT + L.PxCI)  # D2H / PIO Setup FIS: the slot's CI bit dropped
        self._writel(L.IS, 1)

    # --- error handling ---------------------------------------------------------------------

    def _port_recover(self, reset: bool) -> bool:
        """ahci_error_handler's port work: freeze, stop, clear, reset or restart, thaw; False if the link is gone."""
        self._freeze()
        self._stop_engine()
        self._clear_errors()
        up = True
        if reset:
            self.log.info(f"ata{self.ata_port}: hard resetting link")
            up = self._hardreset()
        else:
            self._start_engine()
        self._thaw()
        return up

    def _internal_failed(self, tags: dict[int, _AtaCommand]) -> None:
        """An internal command failed: the port restarted quietly, and the caller learns it (ata_exec_internal)."""
        irq_stat, self._irq_error = self._irq_error, 0
        self._irq_stat = 0
        tfd = self._readl(PORT + L.PxTFD)
        status, error = tfd & 0xFF, tfd >> 8 & 0xFF
        busy = bool(tfd & (ata.ATA_BSY | ata.ATA_DRQ))
        fatal = irq_stat & (L.PxIS_HBFS | L.PxIS_HBDS | L.PxIS_IFS | PORT_IRQ_HOTPLUG)
        up = self._port_recover(reset=bool(busy or fatal or not irq_stat))
        command = next(iter(tags.values()))
        reason = "" if up else "link down"
        if irq_stat & (L.PxIS_HBFS | L.PxIS_HBDS):
            reason = f"host bus error (irq_stat {irq_stat:#x})"
        raise AtaError(command.name, status, error, write=command.write, write_protected=self.read_only,
                       reason=reason, err_mask=AC_ERR_DEV if irq_stat & L.PxIS_TFES else AC_ERR_OTHER)

    def _error_handler(self, tags: dict[int, _AtaCommand]) -> list[_AtaCommand]:
        """ahci_error_intr's classification, ata_eh_autopsy and ata_eh_report, then the recovery.

        Returns the innocent NCQ commands to issue again if none failed; else raises AtaError for the
        one that failed, after the innocent ones went again.
        """
        irq_stat, self._irq_error = self._irq_error, 0
        shown, self._irq_stat = self._irq_stat, 0
        tfd = self._readl(PORT + L.PxTFD)
        serr = self._readl(PORT + L.PxSERR)
        sact = self._readl(PORT + L.PxSACT) | self._ncq_active
        failed_tags = (self._active | self._ncq_active) & sum(1 << t for t in tags)
        status, error = tfd & 0xFF, tfd >> 8 & 0xFF
        ncq = any(c.ncq for c in tags.values())
        self.eh_rounds += 1
        self.timeouts += bin(failed_tags).count("1") or 1  # each command EH takes goes through scsi_timeout
        # ahci_error_intr: what the link (host_ehi) is charged with, and what EH must do
        ehi_mask, action, desc, frozen = 0, 0, [f"irq_stat {shown:#010x}"], False
        if irq_stat & (L.PxIS_HBFS | L.PxIS_HBDS):
            ehi_mask, action = ehi_mask | AC_ERR_HOST_BUS, action | ATA_EH_RESET
            desc.append("host bus error")
            frozen = frozen or bool(irq_stat & L.PxIS_HBFS)
        if irq_stat & L.PxIS_IFS:
            ehi_mask, action, frozen = ehi_mask | AC_ERR_ATA_BUS, action | ATA_EH_RESET, True
            desc.append("interface fatal error")
        if irq_stat & PORT_IRQ_HOTPLUG:
            ehi_mask, action, frozen = ehi_mask | AC_ERR_ATA_BUS, action | ATA_EH_RESET | ATA_EH_ENABLE_LINK, True
            desc.append("connection status changed" if irq_stat & L.PxIS_PCS else "PHY RDY changed")
        timed_out = not irq_stat and bool(failed_tags)
        if timed_out:
            ehi_mask, action, frozen = ehi_mask | AC_ERR_TIMEOUT, action | ATA_EH_RESET, True
        busy = bool(tfd & (ata.ATA_BSY | ata.ATA_DRQ))
        if busy:
            action |= ATA_EH_RESET
        # ahci_error_handler: a port that is not frozen gets its engine restarted before the autopsy
        self._freeze()
        self._stop_engine()
        self._clear_errors()
        if not frozen:
            self._start_engine()
            self._thaw()
        # the failed command, its result taskfile and err_mask (ata_eh_analyze_ncq_error / analyze_tf)
        failure = self._autopsy(tags, failed_tags, irq_stat, status, error, ehi_mask, ncq)
        # the report comes first, then the recovery's lines (ata_eh_report before ata_eh_recover)
        self._report_exception(failure, ehi_mask, sact, serr, action, frozen, desc)
        up = self._port_recover(reset=True) if action & ATA_EH_RESET or frozen else True
        if up and self.disk is not None:
            try:
                self._revalidate()
            except AtaError:
                up = False
        if up:
            self.log.info(f"ata{self.ata_port}: EH complete")
        if not up:
            self.link_down = True
            if self.disk is not None:
                self.log.warn(f"ata{self.ata_port}.00: disable device")
                self.queue_work(lambda: self._detach(alive=False))
            error = AtaError(failure.command.name, failure.status, failure.error, reason="the link is down",
                             err_mask=failure.err_mask | AC_ERR_ATA_BUS)
            error.retry = False
            raise error
        innocent = [c for t, c in tags.items() if failed_tags & (1 << t) and c is not failure.command and ncq]
        if innocent and failure.err_mask & AC_ERR_NCQ:
            self._issue(innocent)  # ata_eh_qc_retry without charging them: the device aborted them, not failed them
        cmd = failure.command
        bad = failure.lba if failure.err_mask & AC_ERR_MEDIA else None
        reason = ""
        if failure.err_mask & AC_ERR_HOST_BUS:
            reason = f"host bus error (irq_stat {irq_stat:#x})"
        elif failure.err_mask & AC_ERR_ATA_BUS:
            reason = f"ATA bus error (irq_stat {irq_stat:#x})"
        elif failure.err_mask & AC_ERR_TIMEOUT:
            reason = "timeout"
        raise AtaError(cmd.name, failure.status, failure.error, write=cmd.write, write_protected=self.read_only,
                       reason=reason, err_mask=failure.err_mask, bad_lba=bad,
                       sector=None if bad is None else bad * self._lbs() >> SECTOR_SHIFT)

    def _lbs(self) -> int:
        return self.identity.logical_block_size if self.identity is not None else 512

    def _autopsy(self, tags: dict[int, _AtaCommand], failed_tags: int, irq_stat: int, status: int, error: int,
                 ehi_mask: int, ncq: bool) -> _Failure:
        first = (failed_tags & -failed_tags).bit_length() - 1 if failed_tags else next(iter(tags))
        tag, lba = first, 0
        err_mask = ehi_mask
        if irq_stat & L.PxIS_TFES:
            err_mask |= AC_ERR_DEV
            if ncq:
                status, error, log_tag, lba = self._read_ncq_error_log(status, error)
                if log_tag in tags:
                    tag = log_tag
                    err_mask |= AC_ERR_NCQ
            else:
                lba = self._result_lba()
            if error & (ata.ATA_UNC | ata.ATA_AMNF):
                err_mask |= AC_ERR_MEDIA
            if error & ata.ATA_IDNF:
                err_mask |= AC_ERR_INVALID
            if error & 0x80:  # ICRC
                err_mask |= AC_ERR_ATA_BUS
        elif not irq_stat:
            err_mask |= AC_ERR_TIMEOUT
        elif not err_mask:
            err_mask = AC_ERR_OTHER
        return _Failure(tags[tag], tag, status, error, err_mask, lba)

    def _result_lba(self) -> int:
        """The LBA of the D2H Register FIS the device sent with the error (the result taskfile)."""
        fis = self.mem + RX_FIS_OFFSET + L.RX_FIS_D2H
        raw = bytes(self.mm.ram.view[fis : fis + 12])
        return int.from_bytes(raw[4:7] + raw[8:11], "little")

    def _read_ncq_error_log(self, status: int, error: int) -> tuple[int, int, int, int]:
        """ata_eh_read_log_10h: (status, error, tag, LBA) of the failed NCQ command; PxTFD's if the log fails."""
        try:
            page = self._internal(_AtaCommand("READ LOG EXT", ata.ATA_CMD_READ_LOG_EXT, lba=ata.LOG_NCQ_ERROR,
                                              count=1, device=0), 512)
        except AtaError as e:
            self.log.err(f"ata{self.ata_port}.00: Read log 0x10 page 0x00 failed, Emask {e.err_mask:#x}")
            self.log.err(f"ata{self.ata_port}: failed to read log page 10h (errno=-{errno.EIO})")
            return status, error, -1, 0
        log = ata.NcqErrorLog.parse(page)
        if sum(page) & 0xFF:
            self.log.warn(f"ata{self.ata_port}: invalid checksum 0x{sum(page) & 0xFF:x} on log page 10h")
        if log.flags.nq:
            return status, error, -1, 0
        lba = log.lba0 | log.lba1 << 8 | log.lba2 << 16 | log.lba3 << 24 | log.lba4 << 32 | log.lba5 << 40
        return log.status, log.error, log.flags.tag, lba

    def _revalidate(self) -> None:
        """ata_dev_revalidate: IDENTIFY again (same disk?), transfer mode, write cache state."""
        ident = self._identify()
        self._set_xfer_mode()
        if self.disk is not None:
            self.disk.queue.limits.write_cache = "write back" if ident.write_cache else "write through"

    def _report_exception(self, failure: _Failure, emask: int, sact: int, serr: int, action: int, frozen: bool,
                          desc: list[str]) -> None:
        """ata_eh_link_report: the exception line, the description, SError, then the failed command."""
        dev = f"ata{self.ata_port}.00"
        suffix = " frozen" if frozen else ""
        self.log.err(f"{dev}: exception Emask {emask:#x} SAct {sact:#x} SErr {serr:#x} action {action:#x}{suffix}")
        self.log.err(f"{dev}: {', '.join(desc)}")
        self._report_serror(f"ata{self.ata_port}", serr)
        self._report_command(failure)

    def _report_serror(self, link: str, serr: int) -> None:
        """ata_eh_link_report's SError line, its bits by name; nothing when SError is clear."""
        if serr:
            names = "".join(f" {name}" for bit, name in _SERROR_NAMES if serr >> bit & 1)
            self.log.err(f"{link}: SError: {{{names} }}")

    def _report_command(self, f: _Failure) -> None:
        """The failed command's lines: its taskfile, the result taskfile, status and error decoded."""
        dev = f"ata{self.ata_port}.00"
        cmd = f.command
        lba = cmd.lba.to_bytes(6, "little")
        count = f.tag << 3 if cmd.ncq else cmd.count
        res = f.lba.to_bytes(6, "little")
        nbytes = sum(map(_length, cmd.prds))
        data = f" {_PROT_NAMES[cmd.ncq]} {nbytes} {'out' if cmd.write else 'in'}" if cmd.prds else ""
        ncq_flag = " <F>" if f.err_mask & AC_ERR_NCQ else ""
        self.log.err(f"{dev}: failed command: {cmd.name}")
        self.log.err(f"{dev}: cmd {cmd.command:02x}/{cmd.features & 0xFF:02x}:{count & 0xFF:02x}:{lba[0]:02x}:"
                     f"{lba[1]:02x}:{lba[2]:02x}/{cmd.features >> 8 & 0xFF:02x}:{count >> 8 & 0xFF:02x}:"
                     f"{lba[3]:02x}:{lba[4]:02x}:{lba[5]:02x}/{cmd.device:02x} tag {f.tag}{data}\n"
                     f"         res {f.status:02x}/{f.error:02x}:00:{res[0]:02x}:{res[1]:02x}:{res[2]:02x}/00:00:"
                     f"{res[3]:02x}:{res[4]:02x}:{res[5]:02x}/40 Emask {f.err_mask:#x} ({_err_string(f.err_mask)})"
                     f"{ncq_flag}")
        if f.status & ata.ATA_BSY:
            self.log.err(f"{dev}: status: {{ Busy }}")
        elif f.status & (ata.ATA_DRDY | ata.ATA_DF | ata.ATA_DRQ | ata.ATA_ERR):
            self.log.err(f"{dev}: status: {{ {_decode(f.status, _STATUS_NAMES)} }}")
        if f.error & (0x80 | ata.ATA_UNC | ata.ATA_AMNF | ata.ATA_IDNF | ata.ATA_ABRT):
            self.log.err(f"{dev}: error: {{ {_decode(f.error, _ERROR_NAMES)} }}")

    # --- the SCSI midlayer's view of a failed command ------------------------------------------

    def _sd_failed(self, req: Request, e: AtaError) -> None:
        """scsi_io_completion_action's lines for a command that failed for good (KERN_INFO, ratelimited)."""
        if not self._sd_rl.allow(self._jiffies(), self.log.warn, "scsi_io_completion_action") or self.disk is None:
            return
        sd = f"sd {self.hctl}: [{self.disk.name}] tag#0"
        age = int((time.monotonic_ns() - req.start_ns + req.waited_ns) // 1_000_000_000)
        key, sense = "Aborted Command", "No additional sense information"
        for bits, k, s in _SENSE:
            if e.error & bits:
                key, sense = k, s
                break
        self.log.info(f"{sd} FAILED Result: hostbyte=DID_OK driverbyte=DRIVER_OK cmd_age={age}s")
        self.log.info(f"{sd} Sense Key : {key} [current] ")
        self.log.info(f"{sd} Add. Sense: {sense}")
        self.log.info(f"{sd} CDB: {self._cdb(req)}")

    def _cdb(self, req: Request) -> str:
        """The CDB sd built for the request (sd_setup_read_write_cmnd, sd_setup_flush_cmnd, sd_setup_unmap_cmnd)."""
        if req.op == ReqOp.FLUSH:
            return "Synchronize Cache(10) 35 00 00 00 00 00 00 00 00 00"
        if req.op not in (ReqOp.READ, ReqOp.WRITE):
            return "Unmap/Read sub-channel 42 00 00 00 00 00 00 00 18 00"
        shift = self._lbs().bit_length() - 1
        lba = (req.sector << SECTOR_SHIFT) >> shift
        n = (req.nr_sectors << SECTOR_SHIFT) >> shift
        read = req.op == ReqOp.READ
        if lba > 0xFFFFFFFF or n > 0xFFFF:
            cdb = bytes([0x88 if read else 0x8A, 0]) + lba.to_bytes(8, "big") + n.to_bytes(4, "big") + bytes(2)
            name = "Read(16)" if read else "Write(16)"
        else:
            cdb = bytes([0x28 if read else 0x2A, 0]) + lba.to_bytes(4, "big") + b"\0" + n.to_bytes(2, "big") + b"\0"
            name = "Read(10)" if read else "Write(10)"
        return f"{name} {cdb.hex(' ')}"

    # --- hot plug, delete, rescan, scan ---------------------------------------------------------

    def _hotplug_eh(self) -> None:
        """EH for a PhyRdy/connect change outside any command (ahci_error_intr → ata_ehi_hotplugged)."""
        self._eh_scheduled = False
        if self.removed:
            return
        irq_stat, self._irq_error = self._irq_error, 0
        self._irq_stat = 0
        serr = self._readl(PORT + L.PxSERR)
        action = ATA_EH_RESET | ATA_EH_ENABLE_LINK
        link = f"ata{self.ata_port}"
        self.log.err(f"{link}: exception Emask {AC_ERR_ATA_BUS:#x} SAct 0x0 SErr {serr:#x} action {action:#x} frozen")
        what = "connection status changed" if irq_stat & L.PxIS_PCS else "PHY RDY changed"
        self.log.err(f"{link}: irq_stat {irq_stat:#010x}, {what}")
        self._report_serror(link, serr)
        up = self._port_recover(reset=True)
        if not up:
            self.link_down = True
            if self.disk is not None:
                self.log.warn(f"{link}.00: disable device")
            self.log.info(f"{link}: EH complete")
            if self.disk is not None:
                self._detach(alive=False)
            return
        if self.disk is not None:
            try:
                self._revalidate()
            except KernelError:
                self.log.warn(f"{link}.00: revalidation failed (errno=-{errno.ENODEV})")
            self.log.info(f"{link}: EH complete")
            return
        try:
            self._ata_probe()
        except KernelError as e:
            self.log.info(f"{link}: EH complete")
            self.log.err(f"{link}.00: failed to attach the disk: {e.args[0]}")
            return
        self.log.info(f"{link}: EH complete")
        self._scsi_attach()  # ata_scsi_hotplug, after EH

    def _detach(self, *, alive: bool) -> None:
        """scsi_remove_device with sd's shutdown: sync and stop a disk that answers; a gone one just goes."""
        disk = self.disk
        if disk is None or self.registry is None:
            return
        sd = f"sd {self.hctl}: [{disk.name}]"
        if not alive:
            self.log.info(f"ata{self.ata_port}.00: detaching (SCSI {self.hctl})")
            disk.dead = True  # the device is offline: its caches cannot be written back
        self.registry.del_gendisk(disk)  # writes back a live disk's page caches first
        self.log.printk(5, f"{sd} Synchronizing SCSI cache")
        if alive:
            try:
                self._internal(_AtaCommand("FLUSH CACHE EXT", ata.ATA_CMD_FLUSH_EXT))
                self.log.printk(5, f"{sd} Stopping disk")
                self._internal(_AtaCommand("STANDBY IMMEDIATE", ata.ATA_CMD_STANDBYNOW1))
                self.log.printk(5, f"ata{self.ata_port}.00: Entering standby power mode")
            except AtaError:
                pass
            self.log.warn(f"ata{self.ata_port}.00: disable device")
        else:
            self.log.printk(5, f"{sd} Synchronize Cache(10) failed: Result: hostbyte=DID_BAD_TARGET "
                               "driverbyte=DRIVER_OK")
            self.log.printk(5, f"{sd} Stopping disk")
            self.log.printk(5, f"{sd} Start/Stop Unit failed: Result: hostbyte=DID_BAD_TARGET driverbyte=DRIVER_OK")
        self.disk = None
        self.identity = None
        while self.scsi_devices:
            dev = self.scsi_devices.pop()
            device_unregister(dev)
            if dev in self.devices:
                self.devices.remove(dev)

    def _store_delete(self, text: str) -> None:
        """sdev_store_delete: scsi_remove_device, at once."""
        if self.disk is not None:
            self._detach(alive=self.hba.port.link_up)

    def _store_rescan(self, text: str) -> None:
        """sdev_store_rescan → sd_rescan: IDENTIFY again; a new size is a capacity change, else nothing to say."""
        disk, registry = self.disk, self.registry
        if disk is None or registry is None:
            return
        try:
            ident = self._identify()
        except AtaError as e:
            raise KernelError(errno.EIO, str(e.args[0])) from None
        nr_sects = ident.sectors * ident.logical_block_size >> SECTOR_SHIFT
        if nr_sects != disk.nr_sects:
            self._log_capacity(disk, ident)
            registry.set_capacity_and_notify(disk, nr_sects)

    def _store_scan(self, text: str) -> None:
        """scsi_scan → ata_scsi_user_scan: "<channel> <id> <lun>", each a number or "-"; probe an empty port."""
        fields = text.split()
        if len(fields) != 3:
            raise KernelError(errno.EINVAL, "scan takes \"<channel> <id> <lun>\"")
        values = [_scan_field(f) for f in fields]
        channel, ident, lun = values
        if lun not in (0, None) or channel not in (0, None) or ident not in (0, None):
            raise KernelError(errno.EINVAL, f"ata{self.ata_port} has one device: 0 0 0")
        if self.disk is not None:
            return
        self._freeze()
        up = self._hardreset()
        self._thaw()
        if up:
            try:
                self._attach()
            except KernelError as e:
                self.log.err(f"ata{self.ata_port}.00: failed to attach the disk: {e.args[0]}")

    # --- write cache (sd's cache_type, which libata turns into SET FEATURES) --------------------

    def set_write_cache(self, enabled: bool) -> None:
        sub = ata.SETFEATURES_WC_ON if enabled else ata.SETFEATURES_WC_OFF
        self._internal(_AtaCommand("SET FEATURES", ata.ATA_CMD_SET_FEATURES, features=sub, device=0))
        ident = self._identify()
        if self.disk is not None:
            self.disk.queue.limits.write_cache = "write back" if ident.write_cache else "write through"
            self._log_cache(ident)

    def _store_cache_type(self, text: str) -> None:
        value = text.strip()
        modes = {"write back": True, "write through": False, "none": False}  # sd_cache_types, WCE bit
        if value not in modes:
            raise KernelError(errno.EINVAL, f"cache_type {value!r}: write back, write through or none")
        self.set_write_cache(modes[value])

    # --- the device tree (what libata, the SCSI midlayer and sd show) ----------------------------

    def _register_devices(self, pci: Device) -> None:
        """ata1 with its transport objects, scsi host0 below the PCI function (what stays without a disk)."""
        core = self.core
        ata_dev = self._register(Device(f"ata{self.ata_port}", pci))
        self._ata_transport(ata_dev)
        scsi = core.bus_register("scsi")
        host = self.host = self._register(Device(f"host{self.host_no}", ata_dev, bus=scsi, devtype="scsi_host"))
        self._scsi_host_class(host)

    def _register_scsi_device(self) -> Device:
        """target0:0:0 and the SCSI device 0:0:0:0 (driver sd) with its class devices; returns 0:0:0:0."""
        core = self.core
        scsi = core.bus_register("scsi")
        assert self.host is not None
        target = self._register(Device(f"target{self.host_no}:0:0", self.host, bus=scsi, devtype="scsi_target"))
        sdev = Device(self.hctl, target, bus=scsi, devtype="scsi_device", driver=scsi.driver_register("sd"),
                      uevent=lambda: ["MODALIAS=scsi:t-0x00"])
        self._scsi_device_attrs(sdev)
        self._register(sdev)
        self._register(Device(self.hctl, sdev, cls=core.class_register("scsi_device")))
        self._register(self._scsi_disk_class(sdev))
        self.scsi_devices = self.devices[-4:]
        return sdev

    def _register(self, dev: Device) -> Device:
        self.devices.append(device_register(dev))
        return dev

    def _ata_transport(self, ata_dev: Device) -> None:
        """ata1's transport objects (libata-transport.c): ata_port/ata1, link1/ata_link/link1, dev1.0/ata_device/."""
        core, n = self.core, self.ata_port
        port = Device(f"ata{n}", ata_dev, cls=core.class_register("ata_port"))
        for name, value in (("port_no", str(n)), ("nr_pmp_links", "0"), ("idle_irq", "0")):
            port.add_attr(name, const(value + "\n"))
        self._register(port)
        link = self._register(Device(f"link{n}", ata_dev))
        link_cls = Device(f"link{n}", link, cls=core.class_register("ata_link"))
        link_cls.add_attr("sata_spd", self._sata_spd)
        for name, value in (("hw_sata_spd_limit", "<unknown>"), ("sata_spd_limit", "<unknown>")):
            link_cls.add_attr(name, const(value + "\n"))
        self._register(link_cls)
        dev = self._register(Device(f"dev{n}.0", link))
        dev_cls = Device(f"dev{n}.0", dev, cls=core.class_register("ata_device"))
        for name, value in (("class", "ata"), ("pio_mode", "PIO4"), ("dma_mode", "UDMA/133"),
                            ("xfer_mode", "UDMA/133"), ("spdn_cnt", "0"), ("ering", ""), ("gscr", "")):
            dev_cls.add_attr(name, const(value + "\n"))
        dev_cls.add_attr("trim", lambda: ("unqueued" if self.identity and self.identity.trim else "unsupported")
                         + "\n")
        dev_cls.add_attr("id", self._identify_words)
        self._register(dev_cls)

    def _sata_spd(self) -> str:
        spd = self._readl(PORT + L.PxSSTS) >> 4 & 0xF
        return {1: "1.5 Gbps", 2: "3.0 Gbps", 3: "6.0 Gbps"}.get(spd, "<unknown>") + "\n"

    def _identify_words(self) -> str:
        """ata_device id: the 256 IDENTIFY words as the disk last reported them, 8 per line (%04x)."""
        if len(self.id_page) != 512:
            return ""
        words = struct.unpack("<256H", self.id_page)
        return "".join(f"{w:04x}{chr(10) if i % 8 == 7 else ' '}" for i, w in enumerate(words))

    def _write_cache_on(self) -> bool:
        """sd's WCE: what the drive last said of its cache (IDENTIFY), not the queue's write_cache flag."""
        return bool(self.identity is not None and self.identity.write_cache)

    def _scsi_host_class(self, host: Device) -> None:
        """Scsi_Host host0: proc_name "ahci" is what lsblk matches for TRAN=sata; libahci's own attributes too."""
        sh = Device(f"host{self.host_no}", host, cls=self.core.class_register("scsi_host"))
        for name, value in (("proc_name", "ahci"), ("unique_id", str(self.ata_port)), ("cmd_per_lun", "0"),
                            ("sg_tablesize", str(PRDS_PER_TABLE)), ("host_busy", "0"),
                            ("state", "running"), ("active_mode", "Initiator"), ("supported_mode", "Initiator"),
                            ("prot_capabilities", "0"), ("prot_guard_type", "0"), ("eh_deadline", "off"),
                            ("link_power_management_policy", "max_performance"), ("em_message_type", "0")):
            sh.add_attr(name, const(value + "\n"))
        sh.add_attr("can_queue", lambda: f"{self.depth}\n")
        sh.add_attr("scan", write_only, self._store_scan, mode=0o200)
        for name, reg in (("ahci_host_caps", L.CAP), ("ahci_host_cap2", L.CAP2), ("ahci_host_version", L.VS),
                          ("ahci_port_cmd", PORT + L.PxCMD)):
            sh.add_attr(name, self._register_show(reg))
        self._register(sh)

    def _register_show(self, offset: int) -> Show:
        return lambda: f"{self._readl(offset):x}\n"

    def _scsi_device_attrs(self, sdev: Device) -> None:
        """The SCSI device 0:0:0:0 (scsi_sysfs.c sdev_attrs)."""
        for name, value in (("vendor", self.scsi_vendor), ("model", self.scsi_model), ("rev", self.scsi_rev),
                            ("type", "0"), ("scsi_level", "6"), ("state", "running"),  # ANSI 5 (SPC-3) + 1
                            ("queue_depth", str(self.depth)), ("queue_type", "simple" if self.ncq else "none"),
                            ("device_blocked", "0"), ("device_busy", "0"), ("eh_timeout", "10"),
                            ("iocounterbits", "32"), ("evt_media_change", "0"), ("ncq_prio_enable", "0"),
                            ("ncq_prio_supported", "0"), ("modalias", "scsi:t-0x00")):
            sdev.add_attr(name, const(value + "\n"))
        sdev.add_attr("timeout", self._timeout_seconds)  # sdev_show_timeout: the queue's rq_timeout / HZ
        sdev.add_attr("iorequest_cnt", lambda: f"{self.counts['requests']:#x}\n")
        sdev.add_attr("iodone_cnt", lambda: f"{self.counts['requests']:#x}\n")  # each dispatch has completed
        sdev.add_attr("ioerr_cnt", lambda: f"{self.errors:#x}\n")
        sdev.add_attr("iotmo_cnt", lambda: f"{self.timeouts:#x}\n")
        sdev.add_attr("delete", write_only, self._store_delete, mode=0o200)
        sdev.add_attr("rescan", write_only, self._store_rescan, mode=0o200)

    def _timeout_seconds(self) -> str:
        return f"{self.disk.queue.rq_timeout // HZ if self.disk is not None else 30}\n"

    def _scsi_disk_class(self, sdev: Device) -> Device:
        """sd's scsi_disk class object, with the writable cache_type."""
        sk = Device(self.hctl, sdev, cls=self.core.class_register("scsi_disk"))
        sk.add_attr("cache_type", lambda: ("write back" if self._write_cache_on() else "write through") + "\n",
                    self._store_cache_type)
        trim = bool(self.identity and self.identity.trim)
        for name, value in (("FUA", "0"), ("allow_restart", "1"), ("manage_start_stop", "1"),
                            ("protection_type", "0"), ("protection_mode", "none"), ("app_tag_own", "0"),
                            ("thin_provisioning", str(int(trim))), ("provisioning_mode", "unmap" if trim else "full"),
                            ("max_medium_access_timeouts", "2"), ("max_write_same_blocks", "0"),
                            ("zoned_cap", "none"), ("max_retries", "5")):
            sk.add_attr(name, const(value + "\n"))
        return sk


def _scan_field(text: str) -> int | None:
    """check_set: "-" is the wildcard, else simple_strtoull base 0 of the whole field."""
    if text == "-":
        return None
    if not re.fullmatch(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text):
        raise KernelError(errno.EINVAL, f"not a number: {text!r}")
    return int(text, 0)

# --- PRDT building ----------------------------------------------------------------------------


def build_prds(segments: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """PRD regions for RAM segments: contiguous ones merged, none over 4 MiB, every address and length even.

    An odd address or length cannot be described (DBA bit 0 is reserved, DBC must be odd: an
    even byte count); Linux's block layer would have bounced such a buffer, here it is EINVAL.
    """
    prds: list[tuple[int, int]] = []
    start = end = -1  # the region being extended while segments continue it
    for addr, length in segments:
        if (addr | length) & 1:
            raise KernelError(errno.EINVAL, f"ahci: segment {addr:#x}+{length} is not word aligned")
        if addr == end:  # physically contiguous with the previous segment: the same region
            end += length
            continue
        _add_region(prds, start, end)
        start, end = addr, addr + length
    _add_region(prds, start, end)
    return prds


def _add_region(prds: list[tuple[int, int]], start: int, end: int) -> None:
    """Append [start, end) as PRDs of at most 4 MiB (a PRD's byte count has 22 bits)."""
    while end - start > PRD_MAX_BYTES:
        prds.append((start, PRD_MAX_BYTES))
        start += PRD_MAX_BYTES
    if end > start:
        prds.append((start, end - start))


def split_prds(prds: list[tuple[int, int]], block: int, max_prds: int, max_bytes: int) -> list[list[tuple[int, int]]]:
    """Cut a PRD list into commands of at most `max_prds` entries and `max_bytes`, each whole `block`s long."""
    if len(prds) <= max_prds and sum(map(_length, prds)) <= max_bytes:
        return [prds]  # the common case: one command
    chunks: list[list[tuple[int, int]]] = []
    pending = list(reversed(prds))  # a stack: pop() gives the next region
    current: list[tuple[int, int]] = []
    size = 0
    while pending:
        addr, length = pending.pop()
        room = max_bytes - size
        if length > room:
            pending.append((addr + room, length - room))
            length = room
        current.append((addr, length))
        size += length
        if size == max_bytes or len(current) == max_prds or not pending:
            excess = size % block  # give back the tail that does not make a whole block
            while excess:
                a, n = current.pop()
                size -= n
                if n > excess:
                    current.append((a, n - excess))
                    size += n - excess
                    pending.append((a + n - excess, excess))
                    excess = 0
                else:
                    pending.append((a, n))
                    excess -= n
            if not current:
                raise KernelError(errno.EINVAL, "ahci: request too fragmented for one command table")
            chunks.append(current)
            current, size = [], 0
    return chunks


@lru_cache(maxsize=64)
def _prdt_struct(entries: int) -> struct.Struct:
    """`entries` PrdEntry records back to back: PRD_ENTRY's format repeated."""
    return struct.Struct("<" + L.PRD_ENTRY.format.lstrip("<") * entries)
