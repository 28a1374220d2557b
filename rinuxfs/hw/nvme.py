"""The NVMe controller model: BAR0 registers, queues, commands and PRP DMA (storage.md §1.1, §1.2, §1.6).

Contract
- The host talks to the controller only through `mmio_read`/`mmio_write` on BAR0
  and through the bytes it leaves in RAM (queues, PRP lists, data buffers).
- `mmio_write` changes register state at once (CC latches on the EN edge, a
  reset happens inside the write), but a doorbell write only records the new
  tail or head: no command runs and no byte moves inside `mmio_write`.
- `service(budget)` does the work the doorbells asked for: it fetches SQEs round
  robin over the submission queues (one per queue per turn), executes them,
  moves data between RAM and the medium, posts CQEs with the phase tag, and
  raises each MSI-X vector that got a completion once, after all posting, so an
  interrupt handler that calls back into the model sees a consistent state.
  `budget` bounds the SQEs consumed; the return value counts CQEs posted.
- An SQ whose CQ is full is not fetched from: nothing is dropped, and work
  resumes once the host moves that CQ's head doorbell (`has_work` turns true).
- `raise_irq(vector)` is the only call out of the model besides RAM and the medium.

Rules (in the manner of h11's _state.py)
- Everything that decides NVMe behaviour lives here; the model knows nothing of
  trio, of the driver above, or of which thread calls it.
- Register semantics, command dispatch, Identify CNS values, log pages, features
  and the reasons to refuse an enable are TABLES (data at the top of the file).
- An illegal access or command never raises to the host: a register access the
  table refuses is ignored and counted in `guest_errors`; a command the tables
  refuse completes with a status code from `Status`; a DMA failure on the
  queues themselves (SQE fetch, CQE post) sets CSTS.CFS and stops processing
  until the host resets the controller (`fatal_reason` says why).
- Only a bad constructor argument (a configuration error of the simulation,
  not of the simulated host) raises, as ValueError.
- Whatever the host does, the state keeps the rules `consistency_errors()`
  lists (the fuzzer checks them after every register access and service call).

Choices where the spec leaves room or QEMU 7.2 differs (also in the tests)
- Writes to a read-only medium (Write, Write Zeroes, DSM with AD) complete with
  Namespace is Write Protected, generic SCT 0 SC 20h + DNR (what Linux's own
  nvmet target returns for a read-only namespace), and Identify Namespace sets
  NSATTR bit 0 so a Linux host marks the disk read-only up front.
- Set Features Number of Queues allocates min(requested, max_queue_pairs) and
  Create I/O SQ/CQ enforce that allocation (QEMU always grants the maximum).
- Delete I/O CQ of a queue that does not exist: Invalid Queue Identifier (the
  spec's generic choice); Get Log Page of an unknown LID: Invalid Log Page 109h.
- MDTS is counted in CAP.MPSMIN (4 KiB) pages as the spec says, not in CC.MPS pages.
- Get Log Page moves the log's bytes from the offset on, at most NUMD dwords, and
  walks only the PRPs those bytes need (QEMU does the same); the rest of the host
  buffer is left alone.
- PRP1 must be dword aligned and a PRP list pointer qword aligned (the spec
  allows the check; QEMU skips it); a list pointer may carry an in-page offset,
  and then that list page holds fewer entries before the chain entry. A list
  piece with room for the chain pointer alone is refused (PRP Offset Invalid),
  so every hop yields data and a cyclic chain cannot hold the controller.
- VWC = 07h: a cache is present and Flush with NSID FFFFFFFFh is supported.
- With the write cache disabled (feature 06h) or FUA set, a write is flushed to
  the medium before it completes.
- INTMS/INTMC are kept and read back but do not gate MSI-X vectors (the spec
  tells hosts not to use them with MSI-X).
- NSSR with "NVMe" is an NVM subsystem reset: like a power cycle it also clears
  AQA/ASQ/ACQ, and it sets CSTS.NSSRO.
- Not modelled: SGLs, CMB/PMR, Format NVM, Compare, fused commands, namespace
  management, firmware download, AER completions (requests are parked until a
  reset), the error log's entries (it reads as zeros).

The medium's faults, and the controller's (what a test bench does to a real drive)
- `badblocks` (lib/badblocks.py, 512-byte sectors) is the medium's list of
  unreadable sectors: a Read that touches one completes with Unrecovered Read
  Error (SCT 2h, SC 81h, no DNR: a retry may succeed on a real drive) and moves
  no data; a Write or Write Zeroes over them succeeds and clears them, as a
  drive reallocates the sectors it rewrites (null_blk's badblocks do the same).
- `fault_knobs()` lists the controller faults a debugfs directory offers, named
  after the spec: `controller_fatal_status` (write 1: CSTS.CFS, the controller
  stops processing until a reset, §3.1.6), `lost_commands` (write N: the next N
  I/O commands fetched are never completed and cannot be aborted: a firmware
  hang), `surprise_removal` (write 1: the function leaves the bus, so every
  register reads all ones and writes go nowhere, as a PCIe read of an absent
  device completes; write 0: a new one is plugged in, in its power-on state).
"""

from __future__ import annotations

import operator
import os
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import repeat
from typing import NamedTuple

from construct import Array, Container, Struct

from rinuxfs.errors import KernelError
from rinuxfs.hw.image import DiskImage
from rinuxfs.hw.nvme_layouts import (
    CQE_STRUCT,
    IDENTIFY_SIZE,
    NIDT_UUID,
    PAGE_4K,
    SQE_SIZE,
    SQE_STRUCT,
    DsmRange,
    ErrorInformationEntry,
    FirmwareSlotLog,
    IdentifyController,
    IdentifyNamespace,
    LbaFormat,
    NamespaceIdDescriptorHeader,
    PowerStateDescriptor,
    SmartLog,
)
from rinuxfs.hw.ram import PhysicalMemory
from rinuxfs.lib.badblocks import BadBlocks
from rinuxfs.lib.kstrtox import kstrtobool, kstrtouint

# --- §1.1 registers -------------------------------------------------------------------


class Reg(IntEnum):
    """BAR0 register offsets (NVMe 1.4 §3.1)."""

    CAP = 0x00
    VS = 0x08
    INTMS = 0x0C
    INTMC = 0x10
    CC = 0x14
    CSTS = 0x1C
    NSSR = 0x20
    AQA = 0x24
    ASQ = 0x28
    ACQ = 0x30
    CMBLOC = 0x38
    CMBSZ = 0x3C


DOORBELL_BASE = 0x1000
NVME_VERSION_1_4 = 0x00010400
NSSR_MAGIC = 0x4E564D65  # "NVMe"

CC_EN = 1 << 0
CSTS_RDY = 1 << 0
CSTS_CFS = 1 << 1
CSTS_SHST_MASK = 0b11 << 2
CSTS_SHST_COMPLETE = 0b10 << 2
CSTS_NSSRO = 1 << 4
CC_WRITABLE = 0x00FFFFF1  # EN, CSS, MPS, AMS, SHN, IOSQES, IOCQES

MQES = 1023  # 0's based: 1024-entry I/O queues
CAP_TO = 0x0F  # 7.5 s in 500 ms units; the model is ready at once, the value is what the host waits at most
CAP_CSS_NVM = 1 << 0  # bit 0 of the CSS field: the NVM command set
CAP_MPSMIN, CAP_MPSMAX = 0, 4
CAP = (
    MQES
    | 1 << 16  # CQR: queues must be physically contiguous
    | CAP_TO << 24
    | 0 << 32  # DSTRD: doorbells 4 bytes apart
    | 1 << 36  # NSSRS: NVM subsystem reset supported
    | CAP_CSS_NVM << 37
    | CAP_MPSMIN << 48
    | CAP_MPSMAX << 52
)


def cc_css(cc: int) -> int:
    return (cc >> 4) & 0x7


def cc_mps(cc: int) -> int:
    return (cc >> 7) & 0xF


def cc_ams(cc: int) -> int:
    return (cc >> 11) & 0x7


def cc_shn(cc: int) -> int:
    return (cc >> 14) & 0x3


def cc_iosqes(cc: int) -> int:
    return (cc >> 16) & 0xF


def cc_iocqes(cc: int) -> int:
    return (cc >> 20) & 0xF


SQES = 0x66  # Identify SQES: min = max = 2^6 = 64 bytes
CQES = 0x44  # Identify CQES: min = max = 2^4 = 16 bytes

# How each dword of the register file takes a write. Offsets not listed (0x40-0xFFF)
# read as 0 and ignore writes. ASQ/ACQ keep every bit written so that a misaligned
# base is caught at enable time (CFS) rather than silently rounded.
_REGISTERS: dict[int, tuple[str, str, int]] = {
    # dword offset: (name, write semantics, writable bits)
    0x00: ("CAP", "read_only", 0),
    0x04: ("CAP (high)", "read_only", 0),
    0x08: ("VS", "read_only", 0),
    0x0C: ("INTMS", "set_mask", 0xFFFFFFFF),
    0x10: ("INTMC", "clear_mask", 0xFFFFFFFF),
    0x14: ("CC", "controller_configuration", CC_WRITABLE),
    0x18: ("reserved", "read_only", 0),
    0x1C: ("CSTS", "write_one_to_clear", CSTS_NSSRO),
    0x20: ("NSSR", "subsystem_reset", 0xFFFFFFFF),
    0x24: ("AQA", "store", 0x0FFF0FFF),
    0x28: ("ASQ", "store", 0xFFFFFFFF),
    0x2C: ("ASQ (high)", "store", 0xFFFFFFFF),
    0x30: ("ACQ", "store", 0xFFFFFFFF),
    0x34: ("ACQ (high)", "store", 0xFFFFFFFF),
    0x38: ("CMBLOC", "read_only", 0),
    0x3C: ("CMBSZ", "read_only", 0),
}

# Why an EN 0→1 edge is refused with CSTS.CFS (QEMU nvme_start_ctrl's list), checked in order;
# the page size is only validated before it is used to check the admin queue alignment.
_ENABLE_REFUSALS: tuple[tuple[str, Callable[[NvmeController, int], bool]], ...] = (
    ("admin queues already exist", lambda c, cc: c._sqs[0] is not None or c._cqs[0] is not None),
    ("CC.CSS selects a command set CAP.CSS does not offer", lambda c, cc: not (CAP_CSS_NVM >> cc_css(cc)) & 1),
    ("CC.MPS is below CAP.MPSMIN", lambda c, cc: cc_mps(cc) < CAP_MPSMIN),
    ("CC.MPS is above CAP.MPSMAX", lambda c, cc: cc_mps(cc) > CAP_MPSMAX),
    ("CC.AMS selects an arbitration CAP.AMS does not offer", lambda c, cc: cc_ams(cc) != 0),
    ("CC.IOCQES is outside Identify CQES", lambda c, cc: not CQES & 0xF <= cc_iocqes(cc) <= CQES >> 4),
    ("CC.IOSQES is outside Identify SQES", lambda c, cc: not SQES & 0xF <= cc_iosqes(cc) <= SQES >> 4),
    ("ASQ is not aligned to the CC.MPS page", lambda c, cc: bool(c._reg64(Reg.ASQ) & _page_mask(cc))),
    ("ACQ is not aligned to the CC.MPS page", lambda c, cc: bool(c._reg64(Reg.ACQ) & _page_mask(cc))),
    ("AQA.ASQS is 0", lambda c, cc: c._regs[Reg.AQA] & 0xFFF == 0),
    ("AQA.ACQS is 0", lambda c, cc: (c._regs[Reg.AQA] >> 16) & 0xFFF == 0),
)


def _page_mask(cc: int) -> int:
    return (PAGE_4K << cc_mps(cc)) - 1


# --- §1.2 status codes ------------------------------------------------------------------


class Status(IntEnum):
    """A CQE status field without DNR and phase: SCT << 8 | SC (NVMe 1.4 §4.6.1.2)."""

    SUCCESS = 0x000
    INVALID_OPCODE = 0x001
    INVALID_FIELD = 0x002
    DATA_TRANSFER_ERROR = 0x004
    INTERNAL_ERROR = 0x006
    INVALID_NAMESPACE = 0x00B
    COMMAND_SEQUENCE_ERROR = 0x00C
    INVALID_PRP_OFFSET = 0x013
    NAMESPACE_WRITE_PROTECTED = 0x020
    LBA_OUT_OF_RANGE = 0x080
    COMPLETION_QUEUE_INVALID = 0x100
    INVALID_QUEUE_IDENTIFIER = 0x101
    INVALID_QUEUE_SIZE = 0x102
    ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED = 0x105
    INVALID_INTERRUPT_VECTOR = 0x108
    INVALID_LOG_PAGE = 0x109
    INVALID_QUEUE_DELETION = 0x10C
    FEATURE_NOT_SAVEABLE = 0x10D
    WRITE_FAULT = 0x280
    UNRECOVERED_READ_ERROR = 0x281


STATUS_DNR = 0x4000
STATUS_MORE = 0x2000

# Statuses that tell the host a retry of the same command would fail the same way.
# The others (a DMA fault, a medium error, a queue still in use, a full AER slot
# set) may succeed later. Mostly QEMU's choices, Command Sequence Error included.
_DNR: frozenset[Status] = frozenset(
    {
        Status.INVALID_OPCODE,
        Status.INVALID_FIELD,
        Status.INVALID_NAMESPACE,
        Status.COMMAND_SEQUENCE_ERROR,
        Status.INVALID_PRP_OFFSET,
        Status.NAMESPACE_WRITE_PROTECTED,
        Status.LBA_OUT_OF_RANGE,
        Status.COMPLETION_QUEUE_INVALID,
        Status.INVALID_QUEUE_IDENTIFIER,
        Status.INVALID_QUEUE_SIZE,
        Status.INVALID_INTERRUPT_VECTOR,
        Status.INVALID_LOG_PAGE,
        Status.FEATURE_NOT_SAVEABLE,
    }
)


def status_field(status: Status) -> int:
    """The 15-bit status field of a CQE (bits 15:1 of its last word), DNR included."""
    return status | (STATUS_DNR if status in _DNR else 0)


# --- §1.2 commands ------------------------------------------------------------------------


class AdminOpcode(IntEnum):
    DELETE_IO_SQ = 0x00
    CREATE_IO_SQ = 0x01
    GET_LOG_PAGE = 0x02
    DELETE_IO_CQ = 0x04
    CREATE_IO_CQ = 0x05
    IDENTIFY = 0x06
    ABORT = 0x08
    SET_FEATURES = 0x09
    GET_FEATURES = 0x0A
    ASYNC_EVENT_REQUEST = 0x0C


class IoOpcode(IntEnum):
    FLUSH = 0x00
    WRITE = 0x01
    READ = 0x02
    WRITE_ZEROES = 0x08
    DATASET_MANAGEMENT = 0x09


NSID_BROADCAST = 0xFFFFFFFF
NSID = 1  # the one namespace: the whole medium

# opcode: (name, handler method)
_ADMIN_COMMANDS: dict[int, tuple[str, str]] = {
    AdminOpcode.DELETE_IO_SQ: ("Delete I/O Submission Queue", "_delete_io_sq"),
    AdminOpcode.CREATE_IO_SQ: ("Create I/O Submission Queue", "_create_io_sq"),
    AdminOpcode.GET_LOG_PAGE: ("Get Log Page", "_get_log_page"),
    AdminOpcode.DELETE_IO_CQ: ("Delete I/O Completion Queue", "_delete_io_cq"),
    AdminOpcode.CREATE_IO_CQ: ("Create I/O Completion Queue", "_create_io_cq"),
    AdminOpcode.IDENTIFY: ("Identify", "_identify"),
    AdminOpcode.ABORT: ("Abort", "_abort"),
    AdminOpcode.SET_FEATURES: ("Set Features", "_set_features"),
    AdminOpcode.GET_FEATURES: ("Get Features", "_get_features"),
    AdminOpcode.ASYNC_EVENT_REQUEST: ("Asynchronous Event Request", "_async_event_request"),
}

# opcode: (name, handler method, accepts NSID FFFFFFFFh)
_IO_COMMANDS: dict[int, tuple[str, str, bool]] = {
    IoOpcode.FLUSH: ("Flush", "_flush", True),
    IoOpcode.WRITE: ("Write", "_write", False),
    IoOpcode.READ: ("Read", "_read", False),
    IoOpcode.WRITE_ZEROES: ("Write Zeroes", "_write_zeroes", False),
    IoOpcode.DATASET_MANAGEMENT: ("Dataset Management", "_dataset_management", False),
}

# Identify CDW10.CNS: (name, builder method)
_IDENTIFY: dict[int, tuple[str, str]] = {
    0x00: ("Identify Namespace", "_identify_namespace"),
    0x01: ("Identify Controller", "_identify_controller"),
    0x02: ("Active Namespace ID list", "_identify_active_nsids"),
    0x03: ("Namespace Identification Descriptor list", "_identify_ns_descriptors"),
}

# Get Log Page LID: (name, builder method)
_LOG_PAGES: dict[int, tuple[str, str]] = {
    0x01: ("Error Information", "_error_log"),
    0x02: ("SMART / Health Information", "_smart_log"),
    0x03: ("Firmware Slot Information", "_firmware_slot_log"),
}


class _Feature(NamedTuple):
    name: str
    setter: str  # method that validates and applies CDW11, returns the Set Features DW0


# Feature identifiers; none is saveable, all are changeable.
_FEATURES: dict[int, _Feature] = {
    0x06: _Feature("Volatile Write Cache", "_set_volatile_write_cache"),
    0x07: _Feature("Number of Queues", "_set_number_of_queues"),
    0x0B: _Feature("Asynchronous Event Configuration", "_set_async_event_config"),
}
FEATURE_CAPABILITY_CHANGEABLE = 1 << 2  # Get Features SEL=011b: bit 0 saveable, bit 1 per-namespace, bit 2 changeable

# Identify Controller values that are not constructor parameters.
AERL = 3  # 0's based: 4 outstanding Asynchronous Event Requests
ONCS_DSM = 1 << 2
ONCS_WRITE_ZEROES = 1 << 3
VWC_PRESENT_BROADCAST_FLUSH = 0x07
LPA_EXTENDED_DATA = 1 << 2  # NUMDU and the log page offset are honoured
TEMPERATURE_KELVIN = 0x0143  # 50 °C, what QEMU reports
TEMPERATURE_WARNING_KELVIN = 0x0157
TEMPERATURE_CRITICAL_KELVIN = 0x0175
LBA_FORMATS = (512, 4096)  # LBAF 0 and LBAF 1; FLBAS picks one
IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024


# --- the SMART counters -------------------------------------------------------------------


@dataclass
class SmartCounters:
    """What the SMART / Health log reports, kept as the model runs (NVMe 1.4 Figure 194).

    Data units count 512-byte units of Read and Write data and are reported in
    thousands, rounded up. Host read/write commands count completed Read and
    Write commands; Write Zeroes and DSM move no host data and count in neither.
    `clock` is replaceable so the kernel can hand in its own monotonic clock.
    """

    units_read: int = 0
    units_written: int = 0
    host_read_commands: int = 0
    host_write_commands: int = 0
    media_errors: int = 0
    power_cycles: int = 1
    unsafe_shutdowns: int = 0
    clock: Callable[[], float] = time.monotonic
    powered_on_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.powered_on_at = self.clock()

    @property
    def data_units_read(self) -> int:
        return -(-self.units_read // 1000)

    @property
    def data_units_written(self) -> int:
        return -(-self.units_written // 1000)

    @property
    def power_on_hours(self) -> int:
        return int(self.clock() - self.powered_on_at) // 3600


# --- queues and commands ----------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _CompletionQueue:
    qid: int
    base: int
    size: int
    vector: int
    irq_enabled: bool
    head: int = 0
    tail: int = 0
    phase: int = 1  # the host starts out expecting phase 1
    sqids: set[int] = field(default_factory=set)

    def full(self) -> bool:
        return (self.tail + 1) % self.size == self.head


@dataclass(eq=False, slots=True)
class _SubmissionQueue:
    qid: int
    base: int
    size: int
    cq: _CompletionQueue
    head: int = 0
    tail: int = 0
    deleted: bool = False


class Command(NamedTuple):
    """The fields of an SQE the model uses, in SQE_STRUCT order (layout: SubmissionQueueEntry)."""

    opcode: int
    flags: int
    cid: int
    nsid: int
    prp1: int
    prp2: int
    cdw10: int
    cdw11: int
    cdw12: int
    cdw13: int
    cdw14: int
    cdw15: int


class _CommandFailed(Exception):
    def __init__(self, status: Status, dw0: int = 0) -> None:
        super().__init__(status.name)
        self.status = status
        self.dw0 = dw0


_Handler = Callable[[Command], "int | None"]  # DW0 of the CQE, or None: parked, no CQE yet


# --- the controller ----------------------------------------------------------------------------


class NvmeController:
    """One NVMe controller with one namespace spanning the medium, behind BAR0."""

    def __init__(
        self,
        ram: PhysicalMemory,
        medium: DiskImage,
        *,
        raise_irq: Callable[[int], None],
        lba_size: int = 512,
        serial: str = "RNX0001",
        model: str = "rinuxfs NVMe disk",
        firmware: str = "1.0",
        max_queue_pairs: int = 64,
        mdts: int = 7,
    ) -> None:
        if lba_size not in LBA_FORMATS:
            raise ValueError(f"lba_size must be one of {LBA_FORMATS}, not {lba_size}")
        if not 1 <= max_queue_pairs <= 0xFFFF:
            raise ValueError(f"max_queue_pairs must be in 1..65535, not {max_queue_pairs}")
        if not 0 <= mdts <= 0xFF:
            raise ValueError(f"mdts must be in 0..255, not {mdts}")
        for name, text, width in (("serial", serial, 20), ("model", model, 40), ("firmware", firmware, 8)):
            if not text.isascii() or len(text) > width:
                raise ValueError(f"{name} must be at most {width} ASCII characters, not {text!r}")
        self._ram = ram
        self._view = ram.view
        self._medium = medium
        self._raise_irq = raise_irq
        self._lba_size = lba_size
        self._lba_shift = lba_size.bit_length() - 1
        self._nsze = medium.size // lba_size
        self._serial, self._model, self._firmware = serial, model, firmware
        self._max_queue_pairs = max_queue_pairs
        self._mdts = mdts
        self._max_transfer = (PAGE_4K << CAP_MPSMIN) << mdts if mdts else 0
        self.msix_vectors = max_queue_pairs + 1  # MSI-X table size: one vector per queue pair plus admin
        self.smart = SmartCounters()
        self.guest_errors: Counter[str] = Counter()  # register accesses and doorbells the tables refused
        self.fatal_reason: str | None = None  # why CSTS.CFS is set, until the next reset
        self.badblocks = BadBlocks()  # the medium's unreadable sectors (512-byte units)
        self.lost_commands = 0  # I/O commands still to lose (fault injection)
        self.present = True  # False after a surprise removal: the bus reads all ones

        self._write_kinds: dict[str, Callable[[int, int], None]] = {
            kind: getattr(self, "_reg_" + kind) for _, kind, _ in _REGISTERS.values()
        }
        self._admin: dict[int, _Handler] = {op: getattr(self, m) for op, (_, m) in _ADMIN_COMMANDS.items()}
        self._io: dict[int, tuple[_Handler, bool]] = {
            op: (getattr(self, m), bcast) for op, (_, m, bcast) in _IO_COMMANDS.items()
        }
        self._identify_data = {cns: getattr(self, m) for cns, (_, m) in _IDENTIFY.items()}
        self._logs = {lid: getattr(self, m) for lid, (_, m) in _LOG_PAGES.items()}
        self._feature_setters = {fid: getattr(self, f.setter) for fid, f in _FEATURES.items()}
        self._id_ctrl = self._build_identify_controller()
        self._id_ns = self._build_identify_namespace()

        self._regs: dict[int, int] = dict.fromkeys(_REGISTERS, 0)
        self._regs[Reg.CAP] = CAP & 0xFFFFFFFF
        self._regs[Reg.CAP + 4] = CAP >> 32
        self._regs[Reg.VS] = NVME_VERSION_1_4
        self._sqs: list[_SubmissionQueue | None] = [None] * (max_queue_pairs + 1)
        self._cqs: list[_CompletionQueue | None] = [None] * (max_queue_pairs + 1)
        self._sq_order: list[_SubmissionQueue] = []  # existing SQs by qid: the round-robin order
        self._rr_next = 0  # qid the next round starts at
        self._parked_aers: list[int] = []  # CIDs of outstanding Asynchronous Event Requests
        self._queues_created = False
        self._page_size = PAGE_4K
        self._features = self._default_features()

    # --- fault injection (the test bench's, not the host's) -----------------------------

    def fault_knobs(self) -> list[tuple[str, Callable[[], str], Callable[[str], None]]]:
        """(name, show, store) of each controller fault, as a debugfs directory offers them."""
        return [
            ("controller_fatal_status", lambda: f"{int(bool(self._regs[Reg.CSTS] & CSTS_CFS))}\n",
             self._store_fatal_status),
            ("lost_commands", lambda: f"{self.lost_commands}\n",
             lambda text: setattr(self, "lost_commands", kstrtouint(text, 0))),
            ("surprise_removal", lambda: f"{int(not self.present)}\n",
             lambda text: self.set_present(not kstrtobool(text))),
        ]

    def _store_fatal_status(self, text: str) -> None:
        """CFS as a controller's firmware raises it: RDY stays as it was, processing stops (§3.1.6)."""
        if kstrtobool(text) and self.present:
            self.fatal_reason = "fatal status injected"
            self._regs[Reg.CSTS] |= CSTS_CFS

    def set_present(self, present: bool) -> None:
        """Surprise removal (False), or a device plugged into the empty slot (True): power-on state."""
        if present and not self.present:
            self._controller_reset()
            for reg in (Reg.AQA, Reg.ASQ, Reg.ASQ + 4, Reg.ACQ, Reg.ACQ + 4, Reg.CSTS):
                self._regs[reg] = 0
            self.lost_commands = 0
            self.smart.power_cycles += 1
        elif not present and self.present:
            self.smart.unsafe_shutdowns += 1
        self.present = present

    # --- invariants ----------------------------------------------------------------------

    def consistency_errors(self) -> list[str]:
        """The rules the model's state keeps whatever the host writes; [] when they all hold."""
        errors: list[str] = []
        regs = self._regs
        if set(regs) != set(_REGISTERS) or any(not 0 <= v <= 0xFFFFFFFF for v in regs.values()):
            errors.append("the register file holds more than 32-bit values at its registers' offsets")
        if self._reg64(Reg.CAP) != CAP or regs[Reg.VS] != NVME_VERSION_1_4:
            errors.append("a read-only identification register changed")
        csts, enabled = regs[Reg.CSTS], regs[Reg.CC] & CC_EN
        if csts & ~(CSTS_RDY | CSTS_CFS | CSTS_SHST_MASK | CSTS_NSSRO) or csts & CSTS_SHST_MASK == CSTS_SHST_MASK:
            errors.append(f"CSTS {csts:#x} has reserved bits or values")
        if csts & CSTS_RDY and not enabled:
            errors.append("CSTS.RDY without CC.EN")
        if csts & CSTS_CFS and self.fatal_reason is None:
            errors.append("CSTS.CFS without a fatal_reason")
        queues = [q for q in (*self._sqs, *self._cqs) if q is not None]
        if queues and not enabled:
            errors.append("queues exist while CC.EN is 0")
        if (self._sqs[0] is None) != (self._cqs[0] is None) or (self._sqs[0] and self._sqs[0].cq is not self._cqs[0]):
            errors.append("the admin SQ and CQ do not exist together")
        if self._sq_order != [sq for sq in self._sqs if sq is not None]:
            errors.append("the round-robin order is not the existing SQs by qid")
        for qid, sq in enumerate(self._sqs):
            if sq is None:
                continue
            most = 0x1000 if qid == 0 else MQES + 1
            if sq.qid != qid or sq.deleted or not 2 <= sq.size <= most or not 0 <= sq.head < sq.size \
                    or not 0 <= sq.tail < sq.size:
                errors.append(f"SQ {qid} is out of shape: size {sq.size}, head {sq.head}, tail {sq.tail}")
            if self._cqs[sq.cq.qid] is not sq.cq or qid not in sq.cq.sqids:
                errors.append(f"SQ {qid} is not attached to an existing CQ")
        for qid, cq in enumerate(self._cqs):
            if cq is None:
                continue
            most = 0x1000 if qid == 0 else MQES + 1
            if cq.qid != qid or not 2 <= cq.size <= most or not 0 <= cq.head < cq.size or not 0 <= cq.tail < cq.size \
                    or cq.phase not in (0, 1) or not 0 <= cq.vector < self.msix_vectors:
                errors.append(f"CQ {qid} is out of shape: size {cq.size}, head {cq.head}, tail {cq.tail}")
            if any(self._sqs[s] is None or self._sqs[s].cq is not cq for s in cq.sqids):  # type: ignore[union-attr]
                errors.append(f"CQ {qid} lists SQs that are gone or use another CQ")
        if len(self._parked_aers) > AERL + 1 or (self._parked_aers and self._sqs[0] is None):
            errors.append(f"{len(self._parked_aers)} parked AERs")
        nsq, ncq = self._number_of_queues()
        if not (1 <= nsq <= self._max_queue_pairs and 1 <= ncq <= self._max_queue_pairs) or \
                self._features[0x06] not in (0, 1):
            errors.append(f"features out of range: {self._features}")
        if not PAGE_4K << CAP_MPSMIN <= self._page_size <= PAGE_4K << CAP_MPSMAX:
            errors.append(f"page size {self._page_size}")
        return errors

    # --- MMIO --------------------------------------------------------------------------

    def mmio_read(self, offset: int, size: int) -> int:
        if not self.present:  # no device answers: the root complex completes the read with all ones
            return (1 << (8 * size)) - 1
        if size not in (4, 8) or offset % 4:
            self.guest_errors[f"MMIO read of {size} bytes at {offset:#x}"] += 1
            return 0
        value = 0
        for i in range(size // 4):  # doorbells and offsets past the register file read as 0
            value |= self._regs.get(offset + 4 * i, 0) << (32 * i)
        return value

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if not self.present:  # posted writes to an absent device go nowhere
            return
        if size not in (4, 8) or offset % 4:
            self.guest_errors[f"MMIO write of {size} bytes at {offset:#x}"] += 1
            return
        if offset >= DOORBELL_BASE:
            self._ring_doorbell(offset, size, value)
            return
        for i in range(size // 4):  # a 64-bit write is its two halves, low first (lo_hi_writeq)
            dword = offset + 4 * i
            entry = _REGISTERS.get(dword)
            if entry is None:
                self.guest_errors[f"write to unimplemented register {dword:#x}"] += 1
                continue
            _, kind, writable = entry
            self._write_kinds[kind](dword, (value >> (32 * i)) & writable)

    def _reg64(self, offset: int) -> int:
        return self._regs[offset] | self._regs[offset + 4] << 32

    def _reg_read_only(self, offset: int, value: int) -> None:
        self.guest_errors[f"write to read-only {_REGISTERS[offset][0]}"] += 1

    def _reg_store(self, offset: int, value: int) -> None:
        self._regs[offset] = value

    def _reg_set_mask(self, offset: int, value: int) -> None:
        mask = self._regs[Reg.INTMS] | value
        self._regs[Reg.INTMS] = self._regs[Reg.INTMC] = mask

    def _reg_clear_mask(self, offset: int, value: int) -> None:
        mask = self._regs[Reg.INTMS] & ~value
        self._regs[Reg.INTMS] = self._regs[Reg.INTMC] = mask

    def _reg_write_one_to_clear(self, offset: int, value: int) -> None:
        self._regs[Reg.CSTS] &= ~value

    def _reg_subsystem_reset(self, offset: int, value: int) -> None:
        if value != NSSR_MAGIC:  # any other value has no effect (§3.1.6)
            return
        self._controller_reset()
        for reg in (Reg.AQA, Reg.ASQ, Reg.ASQ + 4, Reg.ACQ, Reg.ACQ + 4):
            self._regs[reg] = 0
        self._regs[Reg.CSTS] = CSTS_NSSRO

    def _reg_controller_configuration(self, offset: int, cc: int) -> None:
        old = self._regs[Reg.CC]
        self._regs[Reg.CC] = cc
        csts = self._regs[Reg.CSTS]
        if cc_shn(cc) and not cc_shn(old):
            self._shutdown()
            csts = (csts & ~CSTS_SHST_MASK) | CSTS_SHST_COMPLETE
        elif not cc_shn(cc) and cc_shn(old):
            csts &= ~CSTS_SHST_MASK
        if cc & CC_EN and not old & CC_EN:
            refusal = next((why for why, refused in _ENABLE_REFUSALS if refused(self, cc)), None)
            if refusal is None:
                self._start(cc)
                csts = CSTS_RDY | (csts & CSTS_NSSRO)
            else:
                self.fatal_reason = f"enable refused: {refusal}"
                csts = CSTS_CFS | (csts & CSTS_NSSRO)
        elif not cc & CC_EN and old & CC_EN:
            self._controller_reset()
            return
        self._regs[Reg.CSTS] = csts

    def _start(self, cc: int) -> None:
        """The EN 0→1 edge: latch the page size and build the admin queues from AQA/ASQ/ACQ."""
        self._page_size = PAGE_4K << cc_mps(cc)
        aqa = self._regs[Reg.AQA]
        acq = _CompletionQueue(0, self._reg64(Reg.ACQ), ((aqa >> 16) & 0xFFF) + 1, vector=0, irq_enabled=True)
        self._add_cq(acq)
        self._add_sq(_SubmissionQueue(0, self._reg64(Reg.ASQ), (aqa & 0xFFF) + 1, acq))

    def _controller_reset(self) -> None:
        """EN 1→0 (QEMU nvme_ctrl_reset): queues, parked AERs, features and CC/CSTS/INTM go; AQA/ASQ/ACQ stay."""
        self._sqs = [None] * (self._max_queue_pairs + 1)
        self._cqs = [None] * (self._max_queue_pairs + 1)
        self._sq_order = []
        self._rr_next = 0
        self._parked_aers = []
        self._queues_created = False
        self._features = self._default_features()
        self.fatal_reason = None
        self._regs[Reg.CC] = 0
        self._regs[Reg.CSTS] &= CSTS_NSSRO  # only the host clears NSSRO
        self._regs[Reg.INTMS] = self._regs[Reg.INTMC] = 0

    def _shutdown(self) -> None:
        try:
            self._medium.flush()
        except OSError:
            self.smart.media_errors += 1

    def _fail(self, reason: str) -> None:
        """A fatal controller error (CSTS.CFS); nothing is processed until a reset."""
        self.fatal_reason = reason
        self._regs[Reg.CSTS] = CSTS_CFS | (self._regs[Reg.CSTS] & CSTS_NSSRO)

    # --- doorbells -----------------------------------------------------------------------

    def _ring_doorbell(self, offset: int, size: int, value: int) -> None:
        index = (offset - DOORBELL_BASE) >> 2  # DSTRD = 0: 4 bytes per doorbell, SQ tail then CQ head
        qid, is_cq_head = index >> 1, index & 1
        if size != 4 or qid > self._max_queue_pairs:
            self.guest_errors[f"doorbell write of {size} bytes at {offset:#x}"] += 1
            return
        if is_cq_head:
            cq = self._cqs[qid]
            # The new head must lie between the old head and the tail: it may only release posted entries.
            if cq is None or value >= cq.size or (value - cq.head) % cq.size > (cq.tail - cq.head) % cq.size:
                self.guest_errors[f"invalid CQ {qid} head doorbell {value}"] += 1
                return
            cq.head = value
        else:
            sq = self._sqs[qid]
            if sq is None or value >= sq.size:
                self.guest_errors[f"invalid SQ {qid} tail doorbell {value}"] += 1
                return
            sq.tail = value

    # --- processing ------------------------------------------------------------------------

    def _running(self) -> bool:
        return self.present and self._regs[Reg.CSTS] & (CSTS_RDY | CSTS_CFS) == CSTS_RDY

    @property
    def has_work(self) -> bool:
        return self._running() and any(sq.head != sq.tail and not sq.cq.full() for sq in self._sq_order)

    def service(self, budget: int | None = None) -> int:
        """Fetch, execute and complete pending commands, one per SQ per turn; return CQEs posted."""
        completed = consumed = 0
        vectors: dict[int, None] = {}  # an ordered set: raise each vector once, in order of first completion
        while self._running() and (budget is None or consumed < budget):
            progressed = False
            for sq in self._rotation():
                if budget is not None and consumed >= budget:
                    break
                if sq.deleted or sq.head == sq.tail or sq.cq.full():
                    continue
                cmd = self._fetch(sq)
                if cmd is None:
                    break
                consumed += 1
                progressed = True
                self._rr_next = sq.qid + 1
                if sq.qid and self.lost_commands:  # fault injection: fetched, then forgotten
                    self.lost_commands -= 1
                    continue
                status, dw0 = self._execute(sq.qid, cmd)
                if status is None:
                    continue  # a parked AER: it completes later, or never
                cq = sq.cq
                if not self._post(cq, sq, cmd.cid, status, dw0):
                    break
                completed += 1
                if cq.irq_enabled:
                    vectors[cq.vector] = None
            if not progressed:
                break
        for vector in vectors:
            self._raise_irq(vector)
        return completed

    def _rotation(self) -> list[_SubmissionQueue]:
        order = self._sq_order
        start = next((i for i, sq in enumerate(order) if sq.qid >= self._rr_next), 0)
        return order[start:] + order[:start]

    def _fetch(self, sq: _SubmissionQueue) -> Command | None:
        addr = sq.base + sq.head * SQE_SIZE
        if addr + SQE_SIZE > self._ram.size:
            self._fail(f"SQ {sq.qid} entry {sq.head} at {addr:#x} is outside RAM")
            return None
        sq.head = (sq.head + 1) % sq.size
        return Command._make(SQE_STRUCT.unpack_from(self._view, addr))

    def _post(self, cq: _CompletionQueue, sq: _SubmissionQueue, cid: int, status: Status, dw0: int) -> bool:
        addr = cq.base + cq.tail * CQE_STRUCT.size
        if addr + CQE_STRUCT.size > self._ram.size:
            self._fail(f"CQ {cq.qid} entry {cq.tail} at {addr:#x} is outside RAM")
            return False
        # CQE layout: CompletionQueueEntry (dw0, dw1, sqhd, sqid, cid, status with the phase tag)
        CQE_STRUCT.pack_into(self._view, addr, dw0, 0, sq.head, sq.qid, cid, status_field(status) << 1 | cq.phase)
        cq.tail += 1
        if cq.tail == cq.size:
            cq.tail = 0
            cq.phase ^= 1
        return True

    def _execute(self, sqid: int, cmd: Command) -> tuple[Status | None, int]:
        try:
            if sqid == 0:
                handler = self._admin.get(cmd.opcode)
                if handler is None:
                    raise _CommandFailed(Status.INVALID_OPCODE)
            else:
                handler = self._io_handler(cmd)
            if cmd.flags & 0x03 or cmd.flags & 0xC0:  # fused operations and SGLs are not supported
                raise _CommandFailed(Status.INVALID_FIELD)
            dw0 = handler(cmd)
        except _CommandFailed as failure:
            return failure.status, failure.dw0
        return (None, 0) if dw0 is None else (Status.SUCCESS, dw0)

    def _io_handler(self, cmd: Command) -> _Handler:
        """The NSID is checked before the opcode, as QEMU's nvme_io_cmd does."""
        entry = self._io.get(cmd.opcode)
        if cmd.nsid != NSID and not (cmd.nsid == NSID_BROADCAST and entry is not None and entry[1]):
            raise _CommandFailed(Status.INVALID_NAMESPACE)
        if entry is None:
            raise _CommandFailed(Status.INVALID_OPCODE)
        return entry[0]

    # --- queues ------------------------------------------------------------------------

    def _add_cq(self, cq: _CompletionQueue) -> None:
        self._cqs[cq.qid] = cq

    def _add_sq(self, sq: _SubmissionQueue) -> None:
        self._sqs[sq.qid] = sq
        sq.cq.sqids.add(sq.qid)
        self._sq_order = sorted([*self._sq_order, sq], key=lambda q: q.qid)

    def _number_of_queues(self) -> tuple[int, int]:
        """(submission, completion) I/O queues allocated, 1-based."""
        value = self._features[0x07]
        return (value & 0xFFFF) + 1, (value >> 16) + 1

    def _check_new_queue(self, cmd: Command, qid: int, allocated: int, queues: Sequence[object]) -> int:
        """The checks Create I/O CQ and SQ share; returns the queue size (1-based)."""
        if qid == 0 or qid > allocated or queues[qid] is not None:
            raise _CommandFailed(Status.INVALID_QUEUE_IDENTIFIER)
        qsize = cmd.cdw10 >> 16  # 0's based
        if qsize == 0 or qsize > MQES:
            raise _CommandFailed(Status.INVALID_QUEUE_SIZE)
        if cmd.prp1 & (self._page_size - 1):
            raise _CommandFailed(Status.INVALID_PRP_OFFSET)
        return qsize + 1

    def _create_io_cq(self, cmd: Command) -> int:
        qid = cmd.cdw10 & 0xFFFF
        size = self._check_new_queue(cmd, qid, self._number_of_queues()[1], self._cqs)
        vector = cmd.cdw11 >> 16
        if vector >= self.msix_vectors:
            raise _CommandFailed(Status.INVALID_INTERRUPT_VECTOR)
        if not cmd.cdw11 & 1:  # PC: only physically contiguous queues (CAP.CQR = 1)
            raise _CommandFailed(Status.INVALID_FIELD)
        self._add_cq(_CompletionQueue(qid, cmd.prp1, size, vector, irq_enabled=bool(cmd.cdw11 & 2)))
        self._queues_created = True
        return 0

    def _create_io_sq(self, cmd: Command) -> int:
        qid = cmd.cdw10 & 0xFFFF
        cqid = cmd.cdw11 >> 16
        cq = self._cqs[cqid] if 0 < cqid < len(self._cqs) else None
        if cq is None:
            raise _CommandFailed(Status.COMPLETION_QUEUE_INVALID)
        size = self._check_new_queue(cmd, qid, self._number_of_queues()[0], self._sqs)
        if not cmd.cdw11 & 1:
            raise _CommandFailed(Status.INVALID_FIELD)
        self._add_sq(_SubmissionQueue(qid, cmd.prp1, size, cq))
        self._queues_created = True
        return 0

    def _delete_io_sq(self, cmd: Command) -> int:
        qid = cmd.cdw10 & 0xFFFF
        sq = self._sqs[qid] if 0 < qid < len(self._sqs) else None
        if sq is None:
            raise _CommandFailed(Status.INVALID_QUEUE_IDENTIFIER)
        sq.deleted = True
        sq.cq.sqids.discard(qid)
        self._sqs[qid] = None
        self._sq_order = [q for q in self._sq_order if q is not sq]
        return 0

    def _delete_io_cq(self, cmd: Command) -> int:
        qid = cmd.cdw10 & 0xFFFF
        cq = self._cqs[qid] if 0 < qid < len(self._cqs) else None
        if cq is None:
            raise _CommandFailed(Status.INVALID_QUEUE_IDENTIFIER)
        if cq.sqids:
            raise _CommandFailed(Status.INVALID_QUEUE_DELETION)
        self._cqs[qid] = None
        return 0

    # --- admin: identify, logs, features, abort, AER ---------------------------------------

    def _identify(self, cmd: Command) -> int:
        build = self._identify_data.get(cmd.cdw10 & 0xFF)
        if build is None:
            raise _CommandFailed(Status.INVALID_FIELD)
        self._copy_to_host(cmd, build(cmd), IDENTIFY_SIZE)
        return 0

    def _identify_controller(self, cmd: Command) -> bytes:
        return self._id_ctrl

    def _identify_namespace(self, cmd: Command) -> bytes:
        if cmd.nsid != NSID:
            raise _CommandFailed(Status.INVALID_NAMESPACE)
        self._refresh_capacity()
        return self._id_ns

    def _refresh_capacity(self) -> None:
        """The namespace is the whole medium: an image file grown or cut since shows from the next Identify.

        As QEMU's nvme_ns_resize after a block_resize: NSZE changes, and until the host
        identifies the namespace again it goes on using the size it knows.
        """
        nsze = self._medium.refresh_size() // self._lba_size
        if nsze != self._nsze:
            self._nsze = nsze
            self._id_ns = self._build_identify_namespace()

    def _identify_active_nsids(self, cmd: Command) -> bytes:
        if cmd.nsid >= NSID_BROADCAST - 1:
            raise _CommandFailed(Status.INVALID_NAMESPACE)
        nsids = [NSID] if cmd.nsid < NSID else []
        return b"".join(n.to_bytes(4, "little") for n in nsids).ljust(IDENTIFY_SIZE, b"\0")

    def _identify_ns_descriptors(self, cmd: Command) -> bytes:
        if cmd.nsid != NSID:
            raise _CommandFailed(Status.INVALID_NAMESPACE)
        nid = uuid.uuid5(uuid.NAMESPACE_URL, f"rinuxfs:nvme:{self._serial}:{NSID}").bytes
        header = NamespaceIdDescriptorHeader.build({"nidt": NIDT_UUID, "nidl": len(nid)})
        return (header + nid).ljust(IDENTIFY_SIZE, b"\0")

    def _get_log_page(self, cmd: Command) -> int:
        numd = ((cmd.cdw11 & 0xFFFF) << 16 | cmd.cdw10 >> 16) + 1  # NUMDU:NUMDL, 0's based dwords
        length = numd * 4
        offset = cmd.cdw13 << 32 | cmd.cdw12
        self._check_mdts(length)
        if offset & 3:
            raise _CommandFailed(Status.INVALID_FIELD)
        build = self._logs.get(cmd.cdw10 & 0xFF)
        if build is None:
            raise _CommandFailed(Status.INVALID_LOG_PAGE)
        log = build(cmd)
        if offset >= len(log):
            raise _CommandFailed(Status.INVALID_FIELD)
        data = log[offset : offset + length]
        # Only the bytes the log has move, and only their part of the PRPs is walked (QEMU's trans_len):
        # mapping all NUMD dwords would cost with what the host asked for, up to 16 GiB with MDTS 0.
        self._copy_to_host(cmd, data, len(data))
        return 0

    def _error_log(self, cmd: Command) -> bytes:
        return bytes(ErrorInformationEntry.sizeof())  # ELPE = 0: one entry, never filled

    def _smart_log(self, cmd: Command) -> bytes:
        if cmd.nsid not in (0, NSID_BROADCAST):  # LPA bit 0 clear: no per-namespace SMART
            raise _CommandFailed(Status.INVALID_FIELD)
        s = self.smart
        return _build(
            SmartLog,
            composite_temperature=TEMPERATURE_KELVIN,
            available_spare=100,
            available_spare_threshold=10,
            data_units_read=s.data_units_read,
            data_units_written=s.data_units_written,
            host_read_commands=s.host_read_commands,
            host_write_commands=s.host_write_commands,
            power_cycles=s.power_cycles,
            power_on_hours=s.power_on_hours,
            unsafe_shutdowns=s.unsafe_shutdowns,
            media_errors=s.media_errors,
        )

    def _firmware_slot_log(self, cmd: Command) -> bytes:
        slots = [self._firmware.encode().ljust(8, b" ")] + [bytes(8)] * 6
        return bytes(FirmwareSlotLog.build({"afi": 1, "frs": slots}))

    def _set_features(self, cmd: Command) -> int:
        fid = cmd.cdw10 & 0xFF
        setter = self._feature_setters.get(fid)
        if setter is None:
            raise _CommandFailed(Status.INVALID_FIELD)
        if cmd.cdw10 >> 31:  # SV: nothing here survives a power cycle
            raise _CommandFailed(Status.FEATURE_NOT_SAVEABLE)
        return int(setter(cmd.cdw11))

    def _get_features(self, cmd: Command) -> int:
        fid = cmd.cdw10 & 0xFF
        select = (cmd.cdw10 >> 8) & 0x7
        if fid not in _FEATURES or select > 3:
            raise _CommandFailed(Status.INVALID_FIELD)
        if select == 0:  # current
            return self._features[fid]
        if select == 3:  # supported capabilities
            return FEATURE_CAPABILITY_CHANGEABLE
        return self._default_features()[fid]  # default, or saved (= default: nothing is saveable)

    def _default_features(self) -> dict[int, int]:
        most = self._max_queue_pairs - 1
        return {0x06: 1, 0x07: most << 16 | most, 0x0B: 0}

    def _set_volatile_write_cache(self, cdw11: int) -> int:
        self._features[0x06] = cdw11 & 1
        return 0

    def _set_number_of_queues(self, cdw11: int) -> int:
        if self._queues_created:
            raise _CommandFailed(Status.COMMAND_SEQUENCE_ERROR)
        nsqr, ncqr = cdw11 & 0xFFFF, cdw11 >> 16
        if nsqr == 0xFFFF or ncqr == 0xFFFF:
            raise _CommandFailed(Status.INVALID_FIELD)
        most = self._max_queue_pairs - 1
        self._features[0x07] = min(ncqr, most) << 16 | min(nsqr, most)
        return self._features[0x07]

    def _set_async_event_config(self, cdw11: int) -> int:
        self._features[0x0B] = cdw11 & 0xFFFF  # SMART critical warnings [7:0] and notices [15:8]
        return 0

    def _abort(self, cmd: Command) -> int:
        sqid = cmd.cdw10 & 0xFFFF
        if sqid >= len(self._sqs) or self._sqs[sqid] is None:
            raise _CommandFailed(Status.INVALID_FIELD)
        return 1  # DW0 bit 0: not aborted. Commands run to completion inside service(), so none is ever pending.

    def _async_event_request(self, cmd: Command) -> int | None:
        if len(self._parked_aers) > AERL:
            raise _CommandFailed(Status.ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED)
        self._parked_aers.append(cmd.cid)
        return None

    # --- I/O -------------------------------------------------------------------------------

    def _check_mdts(self, length: int) -> None:
        if self._max_transfer and length > self._max_transfer:
            raise _CommandFailed(Status.INVALID_FIELD)

    def _check_bounds(self, slba: int, nlb: int) -> None:
        if slba + nlb > self._nsze:
            raise _CommandFailed(Status.LBA_OUT_OF_RANGE)

    def _check_writable(self) -> None:
        if self._medium.read_only:
            raise _CommandFailed(Status.NAMESPACE_WRITE_PROTECTED)

    def _rw_range(self, cmd: Command) -> tuple[int, int]:
        """(byte offset, byte length) of a Read/Write after the MDTS and LBA range checks, in QEMU's order."""
        slba = cmd.cdw11 << 32 | cmd.cdw10
        nlb = (cmd.cdw12 & 0xFFFF) + 1
        length = nlb << self._lba_shift
        self._check_mdts(length)
        self._check_bounds(slba, nlb)
        return slba << self._lba_shift, length

    def _read(self, cmd: Command) -> int:
        offset, length = self._rw_range(cmd)
        buffers = self._map_prp(cmd.prp1, cmd.prp2, length)
        if self.badblocks and self.badblocks.first_bad(offset >> 9, length >> 9) is not None:
            self.smart.media_errors += 1
            raise _CommandFailed(Status.UNRECOVERED_READ_ERROR)
        try:
            for at, chunk in _iov_chunks(offset, buffers):
                self._medium.read_into(at, chunk)
        except (OSError, KernelError):
            self.smart.media_errors += 1
            raise _CommandFailed(Status.UNRECOVERED_READ_ERROR) from None
        self.smart.host_read_commands += 1
        self.smart.units_read += length >> 9
        return 0

    def _write(self, cmd: Command) -> int:
        self._check_writable()
        offset, length = self._rw_range(cmd)
        buffers = self._map_prp(cmd.prp1, cmd.prp2, length)
        try:
            for at, chunk in _iov_chunks(offset, buffers):
                self._medium.write_from(at, chunk)
            if cmd.cdw12 & (1 << 30) or not self._features[0x06]:  # FUA, or no volatile write cache
                self._medium.flush()
        except (OSError, KernelError):
            self.smart.media_errors += 1
            raise _CommandFailed(Status.WRITE_FAULT) from None
        self.badblocks.clear(offset >> 9, length >> 9)  # rewritten sectors are reallocated
        self.smart.host_write_commands += 1
        self.smart.units_written += length >> 9
        return 0

    def _flush(self, cmd: Command) -> int:
        try:
            self._medium.flush()
        except OSError:
            raise _CommandFailed(Status.INTERNAL_ERROR) from None
        return 0

    def _write_zeroes(self, cmd: Command) -> int:
        """Deallocate instead of writing: DLFEAT says deallocated blocks read as zeroes. No MDTS limit."""
        self._check_writable()
        slba = cmd.cdw11 << 32 | cmd.cdw10
        nlb = (cmd.cdw12 & 0xFFFF) + 1
        self._check_bounds(slba, nlb)
        self._discard(slba, nlb)
        self.badblocks.clear((slba << self._lba_shift) >> 9, (nlb << self._lba_shift) >> 9)
        return 0

    def _dataset_management(self, cmd: Command) -> int:
        nr = (cmd.cdw10 & 0xFF) + 1
        if not cmd.cdw11 & (1 << 2):  # only AD (deallocate) acts; IDR/IDW are hints
            return 0
        self._check_writable()
        ranges = Array(nr, DsmRange).parse(self._copy_from_host(cmd, nr * DsmRange.sizeof()))
        for r in ranges:
            if r.nlb and r.slba + r.nlb <= self._nsze:  # out-of-range ranges are skipped, as QEMU's nvme_dsm_cb
                self._discard(r.slba, r.nlb)
        return 0

    def _discard(self, slba: int, nlb: int) -> None:
        try:
            self._medium.discard(slba << self._lba_shift, nlb << self._lba_shift)
        except (OSError, KernelError):
            self.smart.media_errors += 1
            raise _CommandFailed(Status.WRITE_FAULT) from None

    # --- PRP data pointers (§4.3) ----------------------------------------------------------

    def _map_prp(self, prp1: int, prp2: int, length: int) -> list[memoryview]:
        """RAM views covering `length` bytes described by PRP1/PRP2, physically contiguous pages merged."""
        page = self._page_size
        mask = page - 1
        if prp1 & 3:
            raise _CommandFailed(Status.INVALID_PRP_OFFSET)
        first = min(length, page - (prp1 & mask))
        starts, lengths = [prp1], [first]
        rest = length - first
        if rest:
            if rest <= page:
                pages = [prp2]
            else:
                pages = self._read_prp_list(prp2, -(-rest // page))
            if any(map(operator.and_, pages, repeat(mask))):
                raise _CommandFailed(Status.INVALID_PRP_OFFSET)
            # A buffer per run of entries that follow each other; where the runs break is found by
            # comparing each entry with the end of the one before, in C (a request has up to 512).
            n = len(pages)
            tail = page - (rest - (n - 1) * page)  # what the last entry does not use of its page
            prev_ends = [prp1 + first, *map(operator.add, pages[:-1], repeat(page))]
            bounds = [i for i, same in enumerate(map(operator.eq, pages, prev_ends)) if not same]
            bounds.append(n)
            lengths[0] += bounds[0] * page - (tail if bounds[0] == n else 0)
            for a, b in zip(bounds, bounds[1:], strict=False):
                starts.append(pages[a])
                lengths.append((b - a) * page - (tail if b == n else 0))
        ram_size = self._ram.size
        view = self._view
        buffers = []
        for start, n in zip(starts, lengths, strict=True):
            if start + n > ram_size:
                raise _CommandFailed(Status.DATA_TRANSFER_ERROR)
            buffers.append(view[start : start + n])
        return buffers

    def _read_prp_list(self, addr: int, count: int) -> list[int]:
        """`count` page addresses from a PRP list at `addr`; the last entry of a full list page chains onward."""
        page = self._page_size
        entries: list[int] = []
        while True:
            if addr & 7:
                raise _CommandFailed(Status.INVALID_PRP_OFFSET)
            room = (page - (addr & (page - 1))) >> 3
            need = count - len(entries)
            if need > room < 2:  # a piece holding nothing but the chain pointer: a cycle of them would never end
                raise _CommandFailed(Status.INVALID_PRP_OFFSET)
            chunk = self._read_qwords(addr, min(need, room))
            if need <= room:
                entries += chunk
                return entries
            entries += chunk[:-1]
            addr = chunk[-1]

    def _read_qwords(self, addr: int, count: int) -> list[int]:
        if addr + 8 * count > self._ram.size:
            raise _CommandFailed(Status.DATA_TRANSFER_ERROR)
        return list(struct.unpack_from(f"<{count}Q", self._view, addr))

    def _copy_to_host(self, cmd: Command, data: bytes, length: int) -> None:
        """DMA controller data (Identify, logs) into the host buffer of `length` bytes; `data` may be shorter."""
        pos = 0
        for buffer in self._map_prp(cmd.prp1, cmd.prp2, length):
            n = min(len(buffer), len(data) - pos)
            if n <= 0:
                break
            buffer[:n] = data[pos : pos + n]
            pos += n

    def _copy_from_host(self, cmd: Command, length: int) -> bytes:
        return b"".join(bytes(b) for b in self._map_prp(cmd.prp1, cmd.prp2, length))

    # --- identify data ------------------------------------------------------------------------

    def _build_identify_controller(self) -> bytes:
        psd = [_zeroed(PowerStateDescriptor) for _ in range(32)]
        psd[0].update({"mp": 2500, "enlat": 16, "exlat": 4})  # 25 W, like QEMU's single power state
        return _build(
            IdentifyController,
            vid=0x1B36,  # the vendor id QEMU's emulated NVMe uses: tools treat the disk as an emulator
            ssvid=0x1AF4,
            sn=self._serial,
            mn=self._model,
            fr=self._firmware,
            rab=6,
            mdts=self._mdts,
            cntlid=0,
            ver=NVME_VERSION_1_4,
            cntrltype=1,  # I/O controller
            oacs=0,  # no optional admin commands (no Format NVM, no namespace management)
            acl=3,
            aerl=AERL,
            frmw=0x03,  # slot 1 read-only, one slot
            lpa=LPA_EXTENDED_DATA,
            elpe=0,
            npss=0,
            wctemp=TEMPERATURE_WARNING_KELVIN,
            cctemp=TEMPERATURE_CRITICAL_KELVIN,
            sqes=SQES,
            cqes=CQES,
            nn=1,
            oncs=ONCS_DSM | ONCS_WRITE_ZEROES,
            vwc=VWC_PRESENT_BROADCAST_FLUSH,
            sgls=0,
            subnqn=f"nqn.2024-01.org.rinuxfs:nvme:{self._serial}".encode().ljust(256, b"\0"),
            psd=psd,
        )

    def _build_identify_namespace(self) -> bytes:
        formats = [_zeroed(LbaFormat) for _ in range(16)]
        for lbaf, size in zip(formats, LBA_FORMATS, strict=False):
            lbaf.lbads = size.bit_length() - 1
        return _build(
            IdentifyNamespace,
            nsze=self._nsze,
            ncap=self._nsze,  # no thin provisioning: capacity and utilization are the whole namespace
            nuse=self._nsze,
            nlbaf=len(LBA_FORMATS) - 1,
            flbas=LBA_FORMATS.index(self._lba_size),
            dlfeat=1,
            nvmcap=self._nsze * self._lba_size,
            nsattr=1 if self._medium.read_only else 0,
            lbaf=formats,
        )


def _zeroed(layout: Struct) -> Container:
    return layout.parse(bytes(layout.sizeof()))


def _build(layout: Struct, **fields: object) -> bytes:
    """Build `layout` from the given fields, every other field zero (reserved areas included)."""
    value = _zeroed(layout)
    for name, field_value in fields.items():
        if name not in value:
            raise KeyError(f"{name} is not a field of the layout")
        value[name] = field_value
    return bytes(layout.build(value))


def _iov_chunks(offset: int, buffers: list[memoryview]) -> list[tuple[int, list[memoryview]]]:
    """Split a scatter list at IOV_MAX: one preadv/pwritev per chunk (only transfers of > 4 MiB of scattered pages)."""
    if len(buffers) <= IOV_MAX:
        return [(offset, buffers)]
    chunks = []
    for i in range(0, len(buffers), IOV_MAX):
        chunk = buffers[i : i + IOV_MAX]
        chunks.append((offset, chunk))
        offset += sum(len(b) for b in chunk)
    return chunks
