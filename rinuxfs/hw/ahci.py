"""An AHCI 1.3.1 host bus adapter with one SATA SSD on port 0, modelled at register level.

Contract
--------
The host sees only what a PCI AHCI function shows Linux's `ahci` driver:

* `mmio_read(offset, size)` / `mmio_write(offset, 4, value)` on the ABAR registers (§3.1 generic
  host, §3.3 port 0 at 0x100). Register writes take effect at once: resets, the ST→CR and FRE→FR
  handshakes (so a driver's poll loop sees the new state on its first read), interrupt masks. A
  PxCI or PxSACT write only *records* work.
* `service(budget)` is the HBA's engine: it fetches the command headers and tables of the issued
  slots from RAM, runs the ATA commands against the medium, moves data between RAM and the medium
  through the PRDT, posts FISes into the received-FIS area, sets PxIS bits, and calls
  `raise_irq(0)` once if an enabled interrupt became pending (GHC.IE and PxIE). It completes at
  most `budget` commands (all it can when None) and returns how many it completed (an NCQ command
  or a non-NCQ command finished with a status, or a device-control FIS sent). A driver calls it
  when `has_work` says issued commands wait, e.g. from the task woken by its PxCI write.
* RAM is `PhysicalMemory.view`; an address outside it is a host bus error, never an exception.
* `raise_irq` is called last, once the model's state is consistent, so the handler may call
  `mmio_read`/`mmio_write` (and `service`) straight back. The model is not thread-safe: one caller
  at a time, e.g. the driver's task, or a worker thread that owns it.

The disk answers IDENTIFY DEVICE, READ/WRITE DMA (EXT), READ/WRITE FPDMA QUEUED (NCQ, 32 tags),
FLUSH CACHE (EXT), DATA SET MANAGEMENT/TRIM, SET FEATURES, READ LOG EXT (logs 00h and 10h),
CHECK POWER MODE, IDLE/STANDBY IMMEDIATE; anything else completes with ERR + ABRT.

Rules (the h11 discipline)
--------------------------
* Everything that changes the state machine lives in this file. It knows nothing of trio, FUSE
  or the driver above it: it is driven by calls and talks back only through RAM, registers and
  `raise_irq`, so a test can drive it register by register.
* Register semantics are a table (`GLOBAL_REGISTERS`, `PORT_REGISTERS`): access kind (read-only,
  read/write, write-1-to-clear, write-1-to-set), writable mask, the PxCMD bits that lock it, and
  the side effect to run. ATA commands are a table too (`ATA_COMMANDS`: protocol and handler).
  An illegal access (wrong size, unaligned, read-only, locked, unimplemented) is ignored, as a bus
  would, and noted in `rejected`; an illegal command is an ATA status (ERR + ABRT); a bad pointer
  is a PxIS error bit. Nothing here asserts on what the host did.
* Whatever the host does, the state keeps the rules `consistency_errors()` lists (the fuzzer checks
  them after every register access and service call).
* Layouts are declared once in `ahci_layouts.py` / `ata.py`; the per-command path uses their
  `struct` twins (named after the construct layout) because construct is 100× slower.
* Performance: one command is one `read_into`/`write_from` on the medium with memoryviews of the
  PRDT regions (contiguous regions coalesced); no per-sector or per-byte loops on the data path.

Divergences from QEMU (hw/ide/ahci.c) and simplifications, each deliberate
-------------------------------------------------------------------------
* Out-of-range LBA completes with ERR and error = IDNF|ABRT, as ACS specifies and Linux maps to
  "LBA out of range"; QEMU reports ABRT only.
* A write (or TRIM) to a read-only medium completes with ERR + ABRT: ATA disks have no write
  protect bit, and Linux turns ABRT on a write into an I/O error, which is what a read-only image
  should give.
* A task-file error leaves the failed command's PxCI bit set and stops the port (AHCI §6.2.2)
  until the host clears PxCMD.ST; QEMU clears the bit. NCQ errors come as an SDB FIS with ERR
  (as real disks send, not QEMU's PxSERR tag) and the failing tag is in log 10h.
* OFS (PRDT shorter than the transfer), HBFS (command list, command table, PRDT or received-FIS
  area outside RAM) and HBDS (a data buffer outside RAM) are fatal: no FIS, no data moved, the
  port stops. QEMU moves what fits.
* PxCMD.ST cannot be set while FR = 0 and FRE cannot be cleared while ST = 1 (§3.3.7 "software
  shall not"); PxCLB/PxCLBU are locked while ST or CR, PxFB/PxFBU while FRE or FR.
* Link-up (HBA reset, COMRESET) sets PxSERR.DIAG.N and .X, which PxIS.PRCS and .PCS mirror, as
  real HBAs do; Linux's ahci_port_init and ata_std_postreset clear them. QEMU sets neither.
* PxSSTS reads 0x113 (Gen1) with CAP.ISS = Gen3; CAP2 = 0 (no BIOS handoff, APST, DevSleep).
* NCQ: no DMA Setup FIS (QEMU sends none either); a tag's data uses the PRDT of command slot
  `tag`, as the DMA Setup FIS's buffer identifier would select; the tags finished in one
  `service()` call are reported in one SDB FIS. Clearing PxCMD.ST also drops the commands queued
  in the device (their data could never move again); COMRESET, software reset and HBA reset
  cancel them too, and PxSACT keeps their bits until ST is cleared (§3.3.13).

The medium's faults, and the link's (what a test bench does to a real drive)
--------------------------------------------------------------------------
* `badblocks` (lib/badblocks.py) is the medium's list of unreadable sectors: a read (DMA or
  FPDMA) that touches one completes with ERR and UNC, the first bad sector in the task file's
  LBA (and in the NCQ error log, log 10h), no data moved; a write over them succeeds and clears
  them, as a drive reallocates the sectors it rewrites.
* `fault_knobs()` lists the faults a debugfs directory offers, in the spec's words:
  `interface_fatal_error` (write SError bits: the next read or write the HBA runs ends with
  PxIS.IFS and those bits in PxSERR, the port stopped, as a link CRC or handshake error would),
  `task_file_error` (write N: the next N reads or writes end with ERR and ABRT in the task
  file, PxIS.TFES), `surprise_removal` (write 1: the disk is pulled, PxSSTS.DET 0, PhyRdy
  and connect changes in PxSERR and PxIS, its queue lost, no COMRESET brings it back; write 0:
  plugged in again, the link comes up with a fresh signature).
"""

from __future__ import annotations

import enum
import struct
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from operator import add

from rinuxfs.errors import KernelError
from rinuxfs.hw import ahci_layouts as L
from rinuxfs.hw import ata
from rinuxfs.hw.image import DiskImage
from rinuxfs.hw.ram import PhysicalMemory
from rinuxfs.lib.badblocks import BadBlocks
from rinuxfs.lib.kstrtox import kstrtobool, kstrtouint

SECTOR = ata.SECTOR_SIZE
SERR_DIAG_W = 1 << 18  # Comm Wake: the phy saw a COMWAKE (a device was attached or detached)
SERR_HANDSHAKE = 1 << 22  # DIAG.H: a handshake error, what interface_fatal_error sets by default
_U32 = 0xFFFFFFFF
_LBA48_MASK = (1 << 48) - 1

CAP_VALUE = (
    L.CAP_S64A | L.CAP_SNCQ | (3 << L.CAP_ISS_SHIFT) | L.CAP_SAM | ((L.NR_SLOTS - 1) << L.CAP_NCS_SHIFT)
    | (0 << L.CAP_NP_SHIFT)  # one port
)
CAP2_VALUE = 0


# ---------------------------------------------------------------------------------------------
# Register semantics (AHCI 1.3.1 §3.1, §3.3)
class Access(enum.Enum):
    RO = "read-only"
    RW = "read/write"
    RW1C = "write-1-to-clear"
    RW1S = "write-1-to-set"


@dataclass(frozen=True, slots=True)
class Register:
    name: str
    attr: str  # attribute holding the value, on the HBA (generic registers) or the port
    access: Access
    mask: int = _U32  # bits the host may change; the others keep their value
    locked_by: int = 0  # PxCMD bits: while any is set, a write is ignored (the spec says "shall not")
    on_write: str | None = None  # AhciHba method run after the write, given the old value


GLOBAL_REGISTERS: dict[int, Register] = {
    L.CAP: Register("CAP", "cap", Access.RO),
    L.GHC: Register("GHC", "ghc", Access.RW, mask=L.GHC_HR | L.GHC_IE, on_write="_ghc_written"),  # AE: RO 1 (SAM)
    L.IS: Register("IS", "is_", Access.RW1C, mask=1, on_write="_is_written"),
    L.PI: Register("PI", "pi", Access.RO),
    L.VS: Register("VS", "vs", Access.RO),
    L.CCC_CTL: Register("CCC_CTL", "zero", Access.RO),  # CAP.CCCS = 0
    L.CCC_PORTS: Register("CCC_PORTS", "zero", Access.RO),
    L.EM_LOC: Register("EM_LOC", "zero", Access.RO),  # CAP.EMS = 0
    L.EM_CTL: Register("EM_CTL", "zero", Access.RO),
    L.CAP2: Register("CAP2", "cap2", Access.RO),
    L.BOHC: Register("BOHC", "zero", Access.RO),  # CAP2.BOH = 0
}

_ENGINE_ON = L.PxCMD_ST | L.PxCMD_CR
_FIS_RX_ON = L.PxCMD_FRE | L.PxCMD_FR

PORT_REGISTERS: dict[int, Register] = {
    L.PxCLB: Register("PxCLB", "clb", Access.RW, mask=0xFFFFFC00, locked_by=_ENGINE_ON),  # 1 KiB aligned
    L.PxCLBU: Register("PxCLBU", "clbu", Access.RW, locked_by=_ENGINE_ON),  # CAP.S64A = 1
    L.PxFB: Register("PxFB", "fb", Access.RW, mask=0xFFFFFF00, locked_by=_FIS_RX_ON),  # 256 B aligned
    L.PxFBU: Register("PxFBU", "fbu", Access.RW, locked_by=_FIS_RX_ON),
    L.PxIS: Register("PxIS", "pxis", Access.RW1C, mask=L.PxIS_IMPLEMENTED & ~L.PxIS_MIRRORS, on_write="_is_written"),
    L.PxIE: Register("PxIE", "ie", Access.RW, mask=L.PxIS_IMPLEMENTED, on_write="_ie_written"),
    L.PxCMD: Register("PxCMD", "cmd", Access.RW, mask=L.PxCMD_ST | L.PxCMD_FRE | L.PxCMD_ICC_MASK,
                      on_write="_cmd_written"),
    L.PxTFD: Register("PxTFD", "tfd", Access.RO),
    L.PxSIG: Register("PxSIG", "sig", Access.RO),
    L.PxSSTS: Register("PxSSTS", "ssts", Access.RO),
    L.PxSCTL: Register("PxSCTL", "sctl", Access.RW, mask=0xFFF, on_write="_sctl_written"),  # IPM | SPD | DET
    L.PxSERR: Register("PxSERR", "serr", Access.RW1C, mask=L.SERR_IMPLEMENTED),
    L.PxSACT: Register("PxSACT", "sact", Access.RW1S),
    L.PxCI: Register("PxCI", "ci", Access.RW1S),
    L.PxSNTF: Register("PxSNTF", "sntf", Access.RW1C, mask=0xFFFF),
    L.PxFBS: Register("PxFBS", "zero", Access.RO),  # CAP.FBSS = 0
    L.PxDEVSLP: Register("PxDEVSLP", "zero", Access.RO),  # CAP2.SDS = 0
}


class _Port:
    """Port 0's registers. PxIS's PCS/PRCS/UFS bits are not stored: they mirror PxSERR (§3.3.5)."""

    zero = 0

    def __init__(self) -> None:
        self.reset_registers()

    def reset_registers(self) -> None:
        self.clb = self.clbu = self.fb = self.fbu = 0
        self.is_raw = 0
        self.ie = 0
        self.cmd = L.PxCMD_SUD | L.PxCMD_POD
        self.tfd = L.TFD_NO_DEVICE
        self.sig = L.SIG_NONE
        self.sctl = 0
        self.serr = 0
        self.sact = 0
        self.ci = 0
        self.sntf = 0

    @property
    def pxis(self) -> int:
        mirrors = 0
        if self.serr & L.SERR_DIAG_X:
            mirrors |= L.PxIS_PCS
        if self.serr & L.SERR_DIAG_N:
            mirrors |= L.PxIS_PRCS
        if self.serr & L.SERR_DIAG_F:
            mirrors |= L.PxIS_UFS
        return self.is_raw | mirrors

    @pxis.setter
    def pxis(self, value: int) -> None:
        self.is_raw = value & ~L.PxIS_MIRRORS

    device_present = True  # a disk is attached (surprise removal takes it away)

    @property
    def link_up(self) -> bool:
        return self.device_present and (self.sctl & L.SCTL_DET_MASK) not in (L.SCTL_DET_COMRESET, L.SCTL_DET_OFFLINE)

    @property
    def ssts(self) -> int:
        det = self.sctl & L.SCTL_DET_MASK
        if det == L.SCTL_DET_OFFLINE:
            return L.SCTL_DET_OFFLINE
        return 0 if det == L.SCTL_DET_COMRESET or not self.device_present else L.SSTS_LINK_UP

    @property
    def rx_fis(self) -> int:
        return (self.fbu << 32) | self.fb

    @property
    def cmd_list(self) -> int:
        return (self.clbu << 32) | self.clb


# ---------------------------------------------------------------------------------------------
# ATA command dispatch (ACS-3 §7; QEMU ide_cmd_table)
class Protocol(enum.Enum):
    NON_DATA = "non-data"
    PIO_IN = "PIO data-in"  # completes with a PIO Setup FIS, no D2H (SATA §11.7)
    DMA_IN = "DMA in"
    DMA_OUT = "DMA out"
    NCQ = "first-party DMA queued"  # completes with a Set Device Bits FIS


@dataclass(frozen=True, slots=True)
class AtaCommand:
    name: str
    protocol: Protocol
    handler: str  # AhciHba method: (command) -> _Outcome, or raises _Fault


ATA_COMMANDS: dict[int, AtaCommand] = {
    ata.ATA_CMD_ID_ATA: AtaCommand("IDENTIFY DEVICE", Protocol.PIO_IN, "_identify"),
    ata.ATA_CMD_READ_EXT: AtaCommand("READ DMA EXT", Protocol.DMA_IN, "_read_dma_ext"),
    ata.ATA_CMD_WRITE_EXT: AtaCommand("WRITE DMA EXT", Protocol.DMA_OUT, "_write_dma_ext"),
    ata.ATA_CMD_READ: AtaCommand("READ DMA", Protocol.DMA_IN, "_read_dma"),
    ata.ATA_CMD_WRITE: AtaCommand("WRITE DMA", Protocol.DMA_OUT, "_write_dma"),
    ata.ATA_CMD_FPDMA_READ: AtaCommand("READ FPDMA QUEUED", Protocol.NCQ, "_queue_ncq"),
    ata.ATA_CMD_FPDMA_WRITE: AtaCommand("WRITE FPDMA QUEUED", Protocol.NCQ, "_queue_ncq"),
    ata.ATA_CMD_FLUSH_EXT: AtaCommand("FLUSH CACHE EXT", Protocol.NON_DATA, "_flush"),
    ata.ATA_CMD_FLUSH: AtaCommand("FLUSH CACHE", Protocol.NON_DATA, "_flush"),
    ata.ATA_CMD_DSM: AtaCommand("DATA SET MANAGEMENT", Protocol.DMA_OUT, "_data_set_management"),
    ata.ATA_CMD_SET_FEATURES: AtaCommand("SET FEATURES", Protocol.NON_DATA, "_set_features"),
    ata.ATA_CMD_READ_LOG_EXT: AtaCommand("READ LOG EXT", Protocol.PIO_IN, "_read_log_ext"),
    ata.ATA_CMD_CHK_POWER: AtaCommand("CHECK POWER MODE", Protocol.NON_DATA, "_check_power_mode"),
    ata.ATA_CMD_IDLEIMMEDIATE: AtaCommand("IDLE IMMEDIATE", Protocol.NON_DATA, "_ack"),
    ata.ATA_CMD_STANDBYNOW1: AtaCommand("STANDBY IMMEDIATE", Protocol.NON_DATA, "_flush"),  # drives flush first
}

# SET FEATURES subcommands (ACS-3 §7.45.1): the new write-cache state, or None for "accepted, no state"
SET_FEATURES: dict[int, bool | None] = {
    ata.SETFEATURES_WC_ON: True,
    ata.SETFEATURES_WC_OFF: False,
    ata.SETFEATURES_XFER: None,
    ata.SETFEATURES_RA_ON: None,
    ata.SETFEATURES_RA_OFF: None,
    ata.SETFEATURES_DEFAULTS_ON: None,
    ata.SETFEATURES_DEFAULTS_OFF: None,
}


@dataclass(slots=True)
class _Command:
    """One command slot as fetched: its header and the decoded Register H2D FIS (FisRegH2D)."""

    slot: int
    ctba: int
    prdtl: int
    fis_ok: bool  # a Register H2D FIS of at least 5 dwords
    is_command: bool  # C bit: command register update, else device control
    clear_busy: bool  # header C bit: the HBA clears PxTFD.BSY once the FIS is sent (Linux sets it for SRST)
    command: int
    features: int  # 16 bits: features | features_exp << 8
    lba: int  # 48 bits
    device: int
    count: int  # 16 bits: count | count_exp << 8
    control: int


@dataclass(slots=True)
class _Queued:
    """An NCQ command accepted by the disk and waiting to run."""

    tag: int
    write: bool
    lba: int
    nsect: int
    fua: bool


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How the disk finished a command: the task file it reports, and what the HBA moved."""

    status: int = ata.STATUS_OK
    error: int = 0
    nbytes: int = 0  # PRDBC
    dps: bool = False  # a PRD with its I bit was consumed
    lba: int = 0  # for the D2H FIS: first failing LBA on IDNF
    count: int = 0


_OK = _Outcome()
_ABORT = _Outcome(ata.STATUS_ERROR, ata.ATA_ABRT)


class _Fault(Exception):
    """A fatal HBA condition (PxIS.HBFS/HBDS/OFS): the command cannot finish and the port stops."""

    def __init__(self, bit: int) -> None:
        super().__init__(bit)
        self.bit = bit


class AhciHba:
    """The AHCI HBA (one port) and the SATA disk behind it. See the module docstring for the contract."""

    def __init__(
        self,
        ram: PhysicalMemory,
        medium: DiskImage,
        *,
        raise_irq: Callable[[int], None],
        serial: str = "RNX0001",
        model: str = "rinuxfs SATA disk",
        firmware: str = "1.0",
    ) -> None:
        self.ram = ram
        self.medium = medium
        self._raise_irq = raise_irq
        self._view = ram.view
        self._ram_size = ram.size
        self.sectors = medium.size // SECTOR
        self.identity = dict(serial=serial, model=model, firmware=firmware)
        self._identify_pages: dict[bool, bytes] = {}
        ata.identify_device(sectors=self.sectors, write_cache=True, **self.identity)  # bad strings fail here
        self.rejected: deque[tuple[int, str]] = deque(maxlen=64)  # (offset, reason) of ignored accesses
        self.cap = CAP_VALUE
        self.cap2 = CAP2_VALUE
        self.pi = 1
        self.vs = L.AHCI_VERSION_1_3_1
        self.zero = 0
        self.badblocks = BadBlocks()  # the medium's unreadable sectors
        self.interface_error = 0  # SError bits the next read/write ends with (fault injection)
        self.task_file_errors = 0  # reads/writes still to fail with ERR/ABRT (fault injection)
        self.port = _Port()
        self._irq_due = False
        self._hba_reset()

    # -----------------------------------------------------------------------------------------
    # Fault injection (the test bench's, not the host's)
    def fault_knobs(self) -> list[tuple[str, Callable[[], str], Callable[[str], None]]]:
        """(name, show, store) of each fault, as a debugfs directory offers them."""
        return [
            ("interface_fatal_error", lambda: f"{self.interface_error:#x}\n", self._store_interface_error),
            ("task_file_error", lambda: f"{self.task_file_errors}\n",
             lambda text: setattr(self, "task_file_errors", kstrtouint(text, 0))),
            ("surprise_removal", lambda: f"{int(not self.port.device_present)}\n",
             lambda text: self.set_device_present(not kstrtobool(text))),
        ]

    def _store_interface_error(self, text: str) -> None:
        bits = kstrtouint(text, 0) & L.SERR_IMPLEMENTED
        self.interface_error = bits if bits or text.strip() in ("0", "0x0") else SERR_HANDSHAKE

    def _inject_link_error(self, slot: int) -> None:
        """The pending interface error hits this command: SError bits, PxIS.IFS, the port stopped."""
        self.port.serr |= self.interface_error
        self.interface_error = 0
        self._fatal(L.PxIS_IFS, slot)

    def set_device_present(self, present: bool) -> None:
        """Surprise removal (False) or insertion (True): the phy reports the change, the HBA interrupts."""
        p = self.port
        if present == p.device_present:
            return
        p.device_present = present
        p.serr |= L.SERR_DIAG_N | SERR_DIAG_W | L.SERR_DIAG_X  # PhyRdy change, COMWAKE, device exchanged
        if present:
            if p.link_up:
                self._device_reset(hard=True)
                p.tfd = L.TFD_NO_DEVICE
                self._signature_pending = True
                self._post_signature()
        else:
            self._device_reset(hard=True)
            self._halted = True  # nothing in flight can finish
            p.tfd = L.TFD_NO_DEVICE
            p.sig = L.SIG_NONE
        self._port_irq(L.PxIS_PRCS | L.PxIS_PCS)
        self._deliver_irq()

    # -----------------------------------------------------------------------------------------
    # Invariants
    def consistency_errors(self) -> list[str]:
        """The rules the model's state keeps between calls, whatever the host wrote; [] when they all hold."""
        errors: list[str] = []
        p = self.port
        if (self.cap, self.cap2, self.pi, self.vs, self.zero) != (CAP_VALUE, CAP2_VALUE, 1, L.AHCI_VERSION_1_3_1, 0):
            errors.append("a read-only capability register changed")
        if self.ghc & ~(L.GHC_AE | L.GHC_IE) or not self.ghc & L.GHC_AE or self.is_ not in (0, 1):
            errors.append(f"GHC {self.ghc:#x} / IS {self.is_:#x} hold bits they cannot")
        values = (p.clb, p.clbu, p.fb, p.fbu, p.is_raw, p.ie, p.cmd, p.tfd, p.sctl, p.serr, p.sact, p.ci, p.sntf)
        if any(not 0 <= v <= _U32 for v in values) or p.clb & 0x3FF or p.fb & 0xFF:
            errors.append("a port register is not a 32-bit value, or a base is misaligned")
        if p.is_raw & ~(L.PxIS_IMPLEMENTED & ~L.PxIS_MIRRORS) or p.ie & ~L.PxIS_IMPLEMENTED \
                or p.serr & ~L.SERR_IMPLEMENTED or p.sctl > 0xFFF or p.sntf > 0xFFFF or p.tfd > 0xFFFF:
            errors.append("PxIS/PxIE/PxSERR/PxSCTL/PxSNTF/PxTFD hold unimplemented bits")
        if p.sig not in (L.SIG_ATA, L.SIG_NONE):
            errors.append(f"PxSIG {p.sig:#x}")
        cmd = p.cmd
        if bool(cmd & L.PxCMD_ST) != bool(cmd & L.PxCMD_CR) or bool(cmd & L.PxCMD_FRE) != bool(cmd & L.PxCMD_FR) \
                or cmd & L.PxCMD_ST and not cmd & L.PxCMD_FR or cmd & L.PxCMD_ICC_MASK:
            errors.append(f"PxCMD {cmd:#x}: the ST/CR and FRE/FR handshakes disagree")
        if p.pxis & p.ie and not self.is_:
            errors.append("an enabled port interrupt is pending but IS.IPS is clear")
        if self._pending_mask != sum(1 << slot for slot in self._pending) or self._pending_mask & ~p.ci:
            errors.append("fetched commands are not the issued slots they came from")
        if (self._pending or self._queue or self._halted) and not cmd & L.PxCMD_ST:
            errors.append("commands queued or the port halted while PxCMD.ST is clear")
        if any(not 0 <= tag < L.NR_SLOTS or not 1 <= q.nsect <= 0x10000 for tag, q in self._queue.items()):
            errors.append("the NCQ queue holds a bad tag or count")
        if self._sdb_done or self._irq_due or not 0 <= self._next_slot < L.NR_SLOTS:
            errors.append("work of a finished call is left over (SDB bits, an interrupt, the slot pointer)")
        return errors

    # -----------------------------------------------------------------------------------------
    # MMIO
    def mmio_read(self, offset: int, size: int) -> int:
        if size not in (1, 2, 4) or offset % size:
            self.rejected.append((offset, f"{size}-byte read"))
            return 0
        found = self._register(offset & ~3)
        if found is None:
            return 0  # reserved and vendor registers read as zero
        reg, obj = found
        value: int = getattr(obj, reg.attr)
        return (value >> ((offset & 3) * 8)) & ((1 << (size * 8)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset & 3:
            self.rejected.append((offset, f"{size}-byte write"))
            return
        found = self._register(offset)
        if found is None:
            self.rejected.append((offset, "no register"))
            return
        reg, obj = found
        if reg.access is Access.RO:
            self.rejected.append((offset, f"{reg.name} is read-only"))
            return
        if self.port.cmd & reg.locked_by:
            self.rejected.append((offset, f"{reg.name} written while PxCMD = {self.port.cmd:#x}"))
            return
        old: int = getattr(obj, reg.attr)
        value &= reg.mask
        if reg.access is Access.RW:
            new = (old & ~reg.mask) | value
        elif reg.access is Access.RW1C:
            new = old & ~value
        else:
            new = old | value
        setattr(obj, reg.attr, new)
        if reg.on_write is not None:
            getattr(self, reg.on_write)(old)
        self._deliver_irq()

    def _register(self, offset: int) -> tuple[Register, object] | None:
        if offset < L.PORT_BASE:
            reg = GLOBAL_REGISTERS.get(offset)
            return None if reg is None else (reg, self)
        if offset < L.ABAR_SIZE:
            reg = PORT_REGISTERS.get(offset - L.PORT_BASE)
            return None if reg is None else (reg, self.port)
        return None

    # Side effects of register writes, named in the tables above
    def _ghc_written(self, old: int) -> None:
        if self.ghc & L.GHC_HR:
            self._hba_reset()  # completes at once, so HR reads back 0 on the first poll
            return
        self.ghc |= L.GHC_AE
        if self.ghc & ~old & L.GHC_IE and self.is_:
            self._irq_due = True

    def _is_written(self, old: int) -> None:
        if self.port.pxis & self.port.ie:
            self.is_ |= 1  # the port still has enabled bits pending: IS.IPS stays set

    def _ie_written(self, old: int) -> None:
        if self.port.pxis & self.port.ie & ~old:
            self.is_ |= 1
            if self.ghc & L.GHC_IE:
                self._irq_due = True

    def _cmd_written(self, old: int) -> None:
        p = self.port
        asked = p.cmd
        p.cmd &= ~L.PxCMD_ICC_MASK  # the link is always active: a requested transition is done at once
        if old & L.PxCMD_ST and not asked & L.PxCMD_ST:
            self._stop_engine()
        if asked & L.PxCMD_FRE and not old & L.PxCMD_FRE:
            p.cmd |= L.PxCMD_FR
            self._post_signature()
        elif old & L.PxCMD_FRE and not asked & L.PxCMD_FRE:
            if p.cmd & _ENGINE_ON:
                p.cmd |= L.PxCMD_FRE
                self.rejected.append((L.PORT_BASE + L.PxCMD, "FRE cleared while ST = 1"))
            else:
                p.cmd &= ~L.PxCMD_FR
        if asked & L.PxCMD_ST and not old & L.PxCMD_ST:
            if p.cmd & L.PxCMD_FR:
                p.cmd |= L.PxCMD_CR
                self._halted = False
                self._next_slot = 0
            else:
                p.cmd &= ~L.PxCMD_ST
                self.rejected.append((L.PORT_BASE + L.PxCMD, "ST set while FR = 0"))

    def _sctl_written(self, old: int) -> None:
        was_up = (old & L.SCTL_DET_MASK) not in (L.SCTL_DET_COMRESET, L.SCTL_DET_OFFLINE)
        if was_up and not self.port.link_up:
            self._link_down()
        elif self.port.link_up and not was_up:
            self._link_up()  # DET 1 → 0: the COMRESET ends and the device sends its signature

    # -----------------------------------------------------------------------------------------
    # Resets
    def _hba_reset(self) -> None:
        """GHC.HR (§10.4.3): every register to its reset value, the device hard reset, the link back up."""
        self.ghc = L.GHC_AE
        self.is_ = 0
        self.port.reset_registers()
        self._stop_engine()
        self._link_up()

    def _stop_engine(self) -> None:
        """PxCMD.ST 1 → 0 (§3.3.7): PxCI and PxSACT clear, CR clears; the device's queue is dropped."""
        p = self.port
        p.cmd &= ~(L.PxCMD_CR | L.PxCMD_CCS_MASK)
        p.ci = 0
        p.sact = 0
        self._pending: dict[int, _Command] = {}  # fetched non-NCQ commands, PxCI bit still set
        self._pending_mask = 0
        self._queue: dict[int, _Queued] = {}  # the disk's NCQ queue, by tag
        self._sdb_done = 0  # tags finished but not yet reported by an SDB FIS
        self._halted = False
        self._next_slot = 0

    def _link_down(self) -> None:
        """PxSCTL.DET = 1 (COMRESET asserted) or 4 (offline): the disk is reset and its queue lost."""
        p = self.port
        self._device_reset(hard=True)
        p.serr |= L.SERR_DIAG_N
        p.tfd = L.TFD_NO_DEVICE
        p.sig = L.SIG_NONE
        self._port_irq(L.PxIS_PRCS)

    def _link_up(self) -> None:
        """The phy is ready again: the disk sends its signature FIS, posted once FIS receive is on."""
        p = self.port
        if not p.device_present:
            return  # nothing answers the COMRESET: the link stays down
        self._device_reset(hard=True)
        p.serr |= L.SERR_DIAG_N | L.SERR_DIAG_X
        p.tfd = L.TFD_NO_DEVICE
        p.sig = L.SIG_NONE
        self._signature_pending = True
        self._port_irq(L.PxIS_PRCS | L.PxIS_PCS)
        self._post_signature()

    def _device_reset(self, *, hard: bool) -> None:
        """The disk's own reset: the NCQ queue is cancelled; a hard reset also restores power-on features."""
        self._flush_sdb()  # tags that finished before the reset are still reported
        self._queue = {}
        self._srst = False
        if hard:
            self._write_cache = True
            self._error_log = ata.ncq_error_log(queued=False, tag=0, status=0, error=0, lba=0, count=0)

    def _post_signature(self) -> None:
        """The D2H FIS a disk sends after reset (ATA signature in count/LBA), loading PxSIG (QEMU ahci_init_d2h)."""
        if not self._signature_pending or not self.port.cmd & L.PxCMD_FR:
            return
        try:
            self._post_d2h(ata.STATUS_OK, ata.ATA_AMNF, lba=1, count=1, interrupt=False)
        except _Fault as fault:
            self._fatal(fault.bit, 0)
            return
        self.port.sig = L.SIG_ATA
        self._signature_pending = False

    # -----------------------------------------------------------------------------------------
    # The engine
    @property
    def has_work(self) -> bool:
        if not self.port.cmd & L.PxCMD_ST or self._halted or not self.port.link_up:
            return False
        return bool(self.port.ci & ~self._pending_mask or self._queue or self._pending)

    def service(self, budget: int | None = None) -> int:
        """Run issued commands: fetch new slots, then the NCQ queue, then non-NCQ commands one by one."""
        limit = budget if budget is not None else 1 << 62
        done = 0
        p = self.port
        while done < limit and p.cmd & L.PxCMD_ST and not self._halted and p.link_up:
            new = p.ci & ~self._pending_mask
            if new:
                done += self._fetch(self._pick_slot(new))
            elif self._queue:
                done += self._run_queued(self._queue.pop(next(iter(self._queue))))
            elif self._pending:
                self._flush_sdb()
                slot = next(iter(self._pending))
                self._pending_mask &= ~(1 << slot)
                done += self._run(self._pending.pop(slot))
            else:
                break
        self._flush_sdb()
        self._deliver_irq()
        return done

    def _pick_slot(self, issued: int) -> int:
        """Round robin from the slot after the last one fetched, as PxCMD.CCS walks (§3.3.7)."""
        n = self._next_slot
        rotated = ((issued >> n) | (issued << (L.NR_SLOTS - n))) & _U32
        slot = ((rotated & -rotated).bit_length() - 1 + n) % L.NR_SLOTS
        self._next_slot = (slot + 1) % L.NR_SLOTS
        return slot

    def _fetch(self, slot: int) -> int:
        """Read one command header and its CFIS; a device-control FIS runs now (returns 1), commands wait."""
        p = self.port
        p.cmd = (p.cmd & ~L.PxCMD_CCS_MASK) | (slot << L.PxCMD_CCS_SHIFT)
        try:
            cmd = self._read_command(slot)
        except _Fault as fault:
            self._fatal(fault.bit, slot)
            return 0
        if cmd.fis_ok and not cmd.is_command:
            self._device_control(cmd)
            return 1
        spec = ATA_COMMANDS.get(cmd.command) if cmd.fis_ok else None
        if spec is not None and spec.protocol is Protocol.NCQ:
            p.ci &= ~(1 << slot)  # the disk accepted it (a D2H with BSY = 0 in real life)
            getattr(self, spec.handler)(cmd)
            return 0
        self._pending[slot] = cmd
        self._pending_mask |= 1 << slot
        return 0

    def _read_command(self, slot: int) -> _Command:
        header = self.port.cmd_list + slot * L.COMMAND_HEADER_SIZE
        self._check_struct(header, L.COMMAND_HEADER_SIZE)
        flags, prdtl, _prdbc, ctba = L.COMMAND_HEADER.unpack_from(self._view, header)  # CommandHeader
        ctba &= ~(L.CT_ALIGN - 1)
        self._check_struct(ctba, L.CT_PRDT_OFFSET)
        (fis_type, pm, command, feat, lba_lo, device, lba_hi, feat_exp, count, count_exp, _icc, control
         ) = L.FIS_REG_H2D.unpack_from(self._view, ctba)  # FisRegH2D
        return _Command(
            slot=slot,
            ctba=ctba,
            prdtl=prdtl,
            fis_ok=fis_type == L.FIS_TYPE_REG_H2D and (flags & L.CMDH_CFL_MASK) >= 5,
            is_command=bool(pm & L.H2D_C),
            clear_busy=bool(flags & L.CMDH_C),
            command=command,
            features=feat | (feat_exp << 8),
            lba=int.from_bytes(lba_lo + lba_hi, "little"),
            device=device,
            count=count | (count_exp << 8),
            control=control,
        )

    def _device_control(self, cmd: _Command) -> None:
        """A Register H2D FIS with C = 0 (SATA §10.5.5): SRST set then cleared is a software reset."""
        p = self.port
        if cmd.control & L.CONTROL_SRST:
            self._device_reset(hard=False)
            self._srst = True
            p.tfd = (p.tfd & ~0xFF) | ata.ATA_BSY
            if cmd.clear_busy:
                p.tfd &= ~(ata.ATA_BSY | ata.ATA_DRQ)
        elif self._srst:
            self._srst = False
            self._signature_pending = True
            self._post_signature()
        p.ci &= ~(1 << cmd.slot)

    def _queue_ncq(self, cmd: _Command) -> None:
        """READ/WRITE FPDMA QUEUED (ACS-3 §7.20, §7.61): count in features, tag in count[7:3]."""
        tag = (cmd.count & 0xFF) >> 3
        if tag in self._queue:
            self._ncq_error(tag, _ABORT, cmd.lba, cmd.features)  # a tag reused while queued
            return
        self._queue[tag] = _Queued(
            tag=tag,
            write=cmd.command == ata.ATA_CMD_FPDMA_WRITE,
            lba=cmd.lba,
            nsect=cmd.features or 0x10000,
            fua=bool(cmd.device & 0x80),
        )

    def _run_queued(self, q: _Queued) -> int:
        """Run one NCQ command; 1 if it completed (well or with an error), 0 on a fatal port error."""
        if self.interface_error:
            self._inject_link_error(q.tag)
            return 0
        if self.task_file_errors:
            self.task_file_errors -= 1
            self._ncq_error(q.tag, _ABORT, q.lba, q.nsect)
            return 1
        header = self.port.cmd_list + q.tag * L.COMMAND_HEADER_SIZE
        try:
            self._check_struct(header, L.COMMAND_HEADER_SIZE)
            _flags, prdtl, _prdbc, ctba = L.COMMAND_HEADER.unpack_from(self._view, header)  # CommandHeader
            outcome = self._transfer(ctba & ~(L.CT_ALIGN - 1), prdtl, q.lba, q.nsect, write=q.write, fua=q.fua)
        except _Fault as fault:
            self._fatal(fault.bit, q.tag)
            return 0
        if outcome.status & ata.ATA_ERR:
            self._ncq_error(q.tag, outcome, q.lba, q.nsect)
            return 1
        self._set_prdbc(header, outcome.nbytes)
        self._sdb_done |= 1 << q.tag
        if outcome.dps:
            self._port_irq(L.PxIS_DPS)
        return 1

    def _ncq_error(self, tag: int, outcome: _Outcome, lba: int, nsect: int) -> None:
        """An NCQ command failed: the disk aborts its queue and sends an SDB FIS with ERR (ACS-3 §4.15.5)."""
        self._flush_sdb()
        self._error_log = ata.ncq_error_log(queued=True, tag=tag, status=outcome.status, error=outcome.error,
                                            lba=outcome.lba or lba, count=nsect)
        self._queue = {}
        try:
            self._post_sdb(0, outcome.status, outcome.error)
        except _Fault as fault:
            self._fatal(fault.bit, tag)

    def _run(self, cmd: _Command) -> int:
        """Run one non-NCQ command and complete it with a D2H (or PIO Setup) FIS; 0 on a fatal port error."""
        p = self.port
        p.cmd = (p.cmd & ~L.PxCMD_CCS_MASK) | (cmd.slot << L.PxCMD_CCS_SHIFT)
        spec = ATA_COMMANDS.get(cmd.command) if cmd.fis_ok and not self._srst else None
        data = (spec is not None and spec.protocol in (Protocol.DMA_IN, Protocol.DMA_OUT)
                and spec.handler != "_data_set_management")  # reads and writes, which faults may hit
        if data and self.interface_error:
            self._inject_link_error(cmd.slot)
            return 0
        try:
            if data and self.task_file_errors:
                self.task_file_errors -= 1
                outcome: _Outcome = _ABORT
            else:
                outcome = _ABORT if spec is None else getattr(self, spec.handler)(cmd)
            self._set_prdbc(p.cmd_list + cmd.slot * L.COMMAND_HEADER_SIZE, outcome.nbytes)
            if outcome.status & ata.ATA_ERR:
                self._error_log = ata.ncq_error_log(queued=False, tag=0, status=outcome.status,
                                                    error=outcome.error, lba=outcome.lba, count=outcome.count)
                self._post_d2h(outcome.status, outcome.error, lba=outcome.lba, count=outcome.count)
                return 1  # PxCI keeps the failed slot's bit (§6.2.2.1)
            if spec is not None and spec.protocol is Protocol.PIO_IN:
                self._post_pio_setup(outcome.status, outcome.nbytes)
            else:
                self._post_d2h(outcome.status, outcome.error, lba=outcome.lba, count=outcome.count)
        except _Fault as fault:
            self._fatal(fault.bit, cmd.slot)
            return 0
        p.ci &= ~(1 << cmd.slot)
        if outcome.dps:
            self._port_irq(L.PxIS_DPS)
        return 1

    def _set_prdbc(self, header: int, nbytes: int) -> None:
        at = header + L.CMDH_PRDBC_OFFSET
        self._view[at : at + 4] = nbytes.to_bytes(4, "little")

    def _fatal(self, bit: int, slot: int) -> None:
        """A fatal port error (§6.1.2): the port stops with CCS naming the slot until software clears ST.

        With the command engine already stopped (a signature FIS that cannot be posted once FRE is set)
        there is nothing to stop: only the status bit says what happened.
        """
        self._flush_sdb()  # the tags that finished before the fault are still reported
        p = self.port
        if p.cmd & L.PxCMD_ST:
            p.cmd = (p.cmd & ~L.PxCMD_CCS_MASK) | (slot << L.PxCMD_CCS_SHIFT)
            self._halted = True
        self._port_irq(bit)

    # -----------------------------------------------------------------------------------------
    # Data movement
    def _check_struct(self, addr: int, length: int) -> None:
        if addr + length > self._ram_size:
            raise _Fault(L.PxIS_HBFS)

    def _prd_views(self, ctba: int, prdtl: int, nbytes: int) -> tuple[list[memoryview], bool]:
        """The RAM regions the PRDT gives for `nbytes`, contiguous ones merged; OFS if it is too short.

        One unpack of the whole table, then list comprehensions and accumulate: a statement-per-PRD
        loop over 256 PRDs cost twice as much, more than the 1 MiB preadv it prepares.
        """
        table = ctba + L.CT_PRDT_OFFSET
        self._check_struct(table, prdtl * L.PRD_SIZE)
        fields = _prdt_fields(self._view, table, prdtl)  # PrdEntry × prdtl: dba, dw3, dba, dw3 …
        dw3s = fields[1::2]
        lengths = [(dw3 & L.PRD_DBC_MASK) + 1 for dw3 in dw3s]  # DBC is 0's based
        reach = list(accumulate(lengths))
        if not reach or reach[-1] < nbytes:
            raise _Fault(L.PxIS_OFS)
        last = bisect_left(reach, nbytes)
        used = last + 1
        lengths = lengths[:used]
        lengths[last] -= reach[last] - nbytes  # the last PRD may describe more than the transfer needs
        starts = [dba & ~1 for dba in fields[0 : 2 * used : 2]]  # DBA bit 0 is reserved
        ends = list(map(add, starts, lengths))
        if max(ends) > self._ram_size:
            raise _Fault(L.PxIS_HBDS)
        dps = max(dw3s[:used]) >= L.PRD_I  # I is DW3's top bit
        view = self._view
        breaks = [i for i in range(1, used) if ends[i - 1] != starts[i]]  # where a region does not continue
        if not breaks:
            return [view[starts[0] : ends[last]]], dps
        if len(breaks) < last:  # some neighbours touch: keep the first start and last end of each run
            run_ends = [ends[b - 1] for b in breaks]
            run_ends.append(ends[last])
            starts, ends = [starts[0], *[starts[b] for b in breaks]], run_ends
        return [view[start:end] for start, end in zip(starts, ends, strict=True)], dps

    def _transfer(self, ctba: int, prdtl: int, lba: int, nsect: int, *, write: bool, fua: bool) -> _Outcome:
        if lba + nsect > self.sectors:
            return _Outcome(ata.STATUS_ERROR, ata.ATA_IDNF | ata.ATA_ABRT, lba=max(lba, self.sectors) & _LBA48_MASK)
        if write and self.medium.read_only:
            return _ABORT
        views, dps = self._prd_views(ctba, prdtl, nsect * SECTOR)
        if not write and self.badblocks:
            bad = self.badblocks.first_bad(lba, nsect)
            if bad is not None:  # an uncorrectable sector: the drive reports the first one it could not read
                return _Outcome(ata.STATUS_ERROR, ata.ATA_UNC, lba=bad)
        try:
            if write:
                self.medium.write_from(lba * SECTOR, views)
                if fua or not self._write_cache:
                    self.medium.flush()
            else:
                self.medium.read_into(lba * SECTOR, views)
        except (OSError, KernelError):
            if write:
                return _Outcome(ata.STATUS_ERROR | ata.ATA_DF, ata.ATA_ABRT, lba=lba)
            return _Outcome(ata.STATUS_ERROR, ata.ATA_UNC, lba=lba)
        if write:
            self.badblocks.clear(lba, nsect)  # rewritten sectors are reallocated
        return _Outcome(nbytes=nsect * SECTOR, dps=dps)

    def _pio_in(self, cmd: _Command, data: bytes) -> _Outcome:
        views, dps = self._prd_views(cmd.ctba, cmd.prdtl, len(data))
        pos = 0
        for v in views:
            v[:] = data[pos : pos + len(v)]
            pos += len(v)
        return _Outcome(nbytes=len(data), dps=dps)

    # -----------------------------------------------------------------------------------------
    # ATA command handlers (named in ATA_COMMANDS)
    def _identify(self, cmd: _Command) -> _Outcome:
        sectors = self.medium.refresh_size() // SECTOR  # an image file grown or cut since shows from here on
        if sectors != self.sectors:
            self.sectors = sectors
            self._identify_pages.clear()
        page = self._identify_pages.get(self._write_cache)
        if page is None:
            page = ata.identify_device(sectors=self.sectors, write_cache=self._write_cache, **self.identity)
            self._identify_pages[self._write_cache] = page
        return self._pio_in(cmd, page)

    def _read_dma_ext(self, cmd: _Command) -> _Outcome:
        return self._transfer(cmd.ctba, cmd.prdtl, cmd.lba, cmd.count or 0x10000, write=False, fua=False)

    def _write_dma_ext(self, cmd: _Command) -> _Outcome:
        return self._transfer(cmd.ctba, cmd.prdtl, cmd.lba, cmd.count or 0x10000, write=True, fua=False)

    @staticmethod
    def _lba28(cmd: _Command) -> tuple[int, int]:
        """LBA and count of a 28-bit command: LBA 27:24 in device bits 3:0, count 0 means 256."""
        return (cmd.lba & 0xFFFFFF) | ((cmd.device & 0xF) << 24), (cmd.count & 0xFF) or 0x100

    def _read_dma(self, cmd: _Command) -> _Outcome:
        lba, nsect = self._lba28(cmd)
        return self._transfer(cmd.ctba, cmd.prdtl, lba, nsect, write=False, fua=False)

    def _write_dma(self, cmd: _Command) -> _Outcome:
        lba, nsect = self._lba28(cmd)
        return self._transfer(cmd.ctba, cmd.prdtl, lba, nsect, write=True, fua=False)

    def _flush(self, cmd: _Command) -> _Outcome:
        try:
            self.medium.flush()
        except (OSError, KernelError):
            return _Outcome(ata.STATUS_ERROR | ata.ATA_DF, ata.ATA_ABRT)
        return _OK

    def _ack(self, cmd: _Command) -> _Outcome:
        return _OK

    def _check_power_mode(self, cmd: _Command) -> _Outcome:
        return _Outcome(count=0xFF)  # active or idle

    def _set_features(self, cmd: _Command) -> _Outcome:
        sub = cmd.features & 0xFF
        if sub not in SET_FEATURES:
            return _ABORT
        state = SET_FEATURES[sub]
        if state is not None:
            self._write_cache = state
        return _OK

    def _data_set_management(self, cmd: _Command) -> _Outcome:
        """DSM with TRIM (ACS-3 §7.5): a DMA-out payload of LBA range entries; length 0 = unused."""
        blocks = cmd.count
        if not cmd.features & ata.DSM_TRIM or not 0 < blocks <= ata.MAX_DSM_BLOCKS or self.medium.read_only:
            return _ABORT
        views, dps = self._prd_views(cmd.ctba, cmd.prdtl, blocks * SECTOR)
        payload = b"".join(views)
        ranges: list[tuple[int, int]] = []
        for (entry,) in L.DSM_RANGE.iter_unpack(payload):  # DsmRange
            length = entry >> 48
            if not length:
                continue
            lba = entry & _LBA48_MASK
            if lba + length > self.sectors:
                return _Outcome(ata.STATUS_ERROR, ata.ATA_IDNF | ata.ATA_ABRT, lba=lba)
            ranges.append((lba, lba + length))
        try:
            for start, end in _merge(ranges):
                self.medium.discard(start * SECTOR, (end - start) * SECTOR)
        except (OSError, KernelError):
            return _Outcome(ata.STATUS_ERROR | ata.ATA_DF, ata.ATA_ABRT)
        return _Outcome(nbytes=blocks * SECTOR, dps=dps)

    def _read_log_ext(self, cmd: _Command) -> _Outcome:
        """READ LOG EXT (ACS-3 §7.24): log address in LBA 7:0, page in LBA 15:8 and 47:40, pages in count."""
        log = cmd.lba & 0xFF
        page = ((cmd.lba >> 8) & 0xFF) | (((cmd.lba >> 40) & 0xFF) << 8)
        logs = {ata.LOG_DIRECTORY: ata.gp_log_directory(), ata.LOG_NCQ_ERROR: self._error_log}
        data = logs.get(log)
        if data is None or cmd.count == 0 or (page + cmd.count) * SECTOR > len(data):
            return _ABORT
        return self._pio_in(cmd, data[page * SECTOR : (page + cmd.count) * SECTOR])

    # -----------------------------------------------------------------------------------------
    # FIS posting into the received-FIS area (§4.2.1) and PxTFD updates
    def _rx_slot(self, offset: int, length: int) -> int | None:
        if not self.port.cmd & L.PxCMD_FR:
            return None  # FIS receive is off: only PxTFD learns the status
        addr = self.port.rx_fis + offset
        self._check_struct(addr, length)
        return addr

    def _post_d2h(self, status: int, error: int, *, lba: int = 0, count: int = 0, interrupt: bool = True) -> None:
        addr = self._rx_slot(L.RX_FIS_D2H, L.FIS_REG_D2H.size)
        if addr is not None:
            lba_bytes = (lba & _LBA48_MASK).to_bytes(6, "little")
            L.FIS_REG_D2H.pack_into(self._view, addr, L.FIS_TYPE_REG_D2H, L.FIS_I if interrupt else 0, status, error,
                                    lba_bytes[:3], 0x40, lba_bytes[3:], count & 0xFF, (count >> 8) & 0xFF)  # FisRegD2H
        self._update_tfd(status, error, L.PxIS_DHRS if interrupt else 0)

    def _post_pio_setup(self, e_status: int, nbytes: int) -> None:
        addr = self._rx_slot(L.RX_FIS_PIO_SETUP, L.FIS_PIO_SETUP.size)
        if addr is not None:
            L.FIS_PIO_SETUP.pack_into(self._view, addr, L.FIS_TYPE_PIO_SETUP, L.FIS_I | L.PIO_D_TO_HOST,
                                      ata.STATUS_OK | ata.ATA_DRQ, 0, b"\0\0\0", 0x40, b"\0\0\0", 0, 0, e_status,
                                      min(nbytes, 0xFFFF))  # FisPioSetup
        self._update_tfd(e_status, 0, L.PxIS_PSS)

    def _post_sdb(self, sactive: int, status: int = ata.STATUS_OK, error: int = 0) -> None:
        addr = self._rx_slot(L.RX_FIS_SDB, L.FIS_SDB.size)
        status &= L.SDB_STATUS_MASK
        if addr is not None:
            L.FIS_SDB.pack_into(self._view, addr, L.FIS_TYPE_SDB, L.FIS_I, status, error, sactive)  # FisSetDeviceBits
        self.port.sact &= ~sactive
        kept = self.port.tfd & (ata.ATA_BSY | ata.ATA_DRQ)
        self._update_tfd(kept | status, error, L.PxIS_SDBS)

    def _flush_sdb(self) -> None:
        if self._sdb_done:
            done, self._sdb_done = self._sdb_done, 0
            try:
                self._post_sdb(done)
            except _Fault as fault:
                self._fatal(fault.bit, (done & -done).bit_length() - 1)

    def _update_tfd(self, status: int, error: int, irq: int) -> None:
        """A FIS from the disk updates PxTFD; ERR in it is a task-file error that stops the port (§5.3.9)."""
        self.port.tfd = (error << 8) | status
        if status & ata.ATA_ERR:
            irq |= L.PxIS_TFES
            self._halted = True
        if irq:
            self._port_irq(irq)

    # -----------------------------------------------------------------------------------------
    # Interrupts (§10.7): PxIS → IS.IPS → raise_irq(0), edge-triggered like MSI
    def _port_irq(self, bits: int) -> None:
        p = self.port
        p.is_raw |= bits & ~L.PxIS_MIRRORS
        if bits & p.ie:
            self.is_ |= 1
            if self.ghc & L.GHC_IE:
                self._irq_due = True

    def _deliver_irq(self) -> None:
        if self._irq_due:
            self._irq_due = False
            self._raise_irq(0)


PRDT_STRUCT_MAX = 256  # PRDs a cached struct covers; Linux's tables are shorter (LIBATA_MAX_PRD is 128)


@lru_cache(maxsize=64)
def _prdt_struct(entries: int) -> struct.Struct:
    """`entries` PrdEntry records back to back: PRD_ENTRY's format repeated."""
    return struct.Struct("<" + L.PRD_ENTRY.format.lstrip("<") * entries)


def _prdt_fields(view: memoryview, table: int, entries: int) -> tuple[int, ...]:
    """dba, dw3, dba, dw3 … of a PRDT. One unpack for the tables drivers build; PRDTL allows 65535 entries,
    and a cached struct of that many (4 MiB each) would let a guest pin memory, so long tables go by
    iter_unpack instead."""
    if entries <= PRDT_STRUCT_MAX:
        return _prdt_struct(entries).unpack_from(view, table)
    raw = view[table : table + entries * L.PRD_SIZE]
    return tuple(value for entry in L.PRD_ENTRY.iter_unpack(raw) for value in entry)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, overlapping or touching [start, end) ranges merged, so each becomes one discard."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
