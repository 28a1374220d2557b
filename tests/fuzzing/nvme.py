"""Fuzz target: the NVMe controller model (`rinuxfs.hw.nvme`) at register, queue and command level.

A case builds a machine (RAM of a few pages to 2 MiB, a sparse image of any
size, 0 and 511 bytes included) and drives the controller through a test-side
host that keeps its own view of the queues. Two kinds of case:

- chaos: random MMIO reads and writes (registers, doorbells of queues that do
  or do not exist, values past a queue's size, unaligned and odd-sized
  accesses), bytes poked anywhere in RAM (queues included), SQEs with random
  opcodes and fields, PRPs and PRP lists pointing anywhere (past the end of
  RAM too, chained, looping), queues created with absurd sizes and places,
  service() with and without a budget, resets. Checked: no exception leaves
  the model, `consistency_errors()` is empty after every step, every CQE the
  host finds is well formed (a known status, DNR as the status table says,
  an SQ id and head that exist), and at the end a controller reset and a
  clean bring-up always give a working controller again (Identify, then a
  read that returns the image's bytes).
- faults: a clean bring-up, then well-formed commands carrying at most one
  fault each (a bad NSID, opcode, fused bit, transfer over MDTS, LBA range,
  PRP offset, PRP pointing past RAM, a write to a read-only medium, queue
  creation with a bad id, size, vector or base, deletion of a CQ still in
  use, Number of Queues after queues exist, unknown CNS or log page). The
  status of each completion must be the one storage.md §1.2 and the model's
  rule tables give, and a successful read or write must have moved exactly
  the image's bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from fuzzing.machine import PAGE, U64, Machine, addresses, run_case, seeds
from rinuxfs.hw.nvme import (
    _DNR,
    CC_EN,
    CSTS_CFS,
    CSTS_RDY,
    DOORBELL_BASE,
    MQES,
    NSSR_MAGIC,
    STATUS_DNR,
    AdminOpcode,
    IoOpcode,
    NvmeController,
    Reg,
    Status,
)
from rinuxfs.hw.nvme_layouts import CQE_STRUCT, SQE_STRUCT

CC_LINUX = 6 << 16 | 4 << 20  # IOSQES 64 B, IOCQES 16 B, NVM, 4 KiB pages, round robin
MAX_PAIRS = 4  # queue pairs the model offers: small, so that the limit is reachable
STATUSES = frozenset(int(s) for s in Status)


# --- the case ---------------------------------------------------------------------------------------


@dataclass
class NvmeCase:
    mode: str  # "chaos" or "faults"
    ram_size: int
    image_size: int
    lba_size: int = 512
    read_only: bool = False
    mdts: int = 7
    aqa: tuple[int, int] = (32, 32)  # admin SQ and CQ depth as written to AQA (1-based, may be absurd)
    asq: int | None = None  # admin queue bases; None: the host allocates them
    acq: int | None = None
    cc: int = CC_LINUX
    pairs: int = 1  # I/O queue pairs created in the prologue
    depth: int = 16
    steps: list[tuple] = field(default_factory=list)
    data_seed: int = 0  # every byte of data the case writes comes from it


# --- the host -----------------------------------------------------------------------------------------


@dataclass
class HostSq:
    base: int
    size: int
    cqid: int
    tail: int = 0


@dataclass
class HostCq:
    base: int
    size: int
    head: int = 0
    phase: int = 1  # the phase tag the next new entry carries


class Host(Machine):
    """A test-side NVMe driver; in faults cases it checks every completion it reaps."""

    def __init__(self, case: NvmeCase, workdir: Path) -> None:
        super().__init__(workdir, "nvme.img", ram_size=case.ram_size, image_size=case.image_size,
                         read_only=case.read_only, random_bytes=8192,
                         data_seed=case.data_seed)
        self.case = case
        self.ctrl = self.device = NvmeController(self.ram, self.medium, raise_irq=self.irqs.append,
                                                 lba_size=case.lba_size, max_queue_pairs=MAX_PAIRS, mdts=case.mdts)
        self.vectors = self.ctrl.msix_vectors
        self.sqs: dict[int, HostSq] = {}
        self.cqs: dict[int, HostCq] = {}
        self.outstanding: dict[int, dict[int, str]] = {}  # sqid -> cid -> what was asked
        self.completions: list[tuple[int, int, int, int]] = []  # (sqid, cid, status, dw0) in order
        self._next_page = 1
        self._cid = 0
        self.checking = case.mode == "faults"  # check each CQE (chaos cases write anything anywhere)

    def alloc(self, pages: int = 1) -> int:
        """Bump allocation of zeroed pages, as dma_alloc_coherent; wraps when RAM runs out (chaos does not mind)."""
        if (self._next_page + pages) * PAGE > self.ram.size:
            self._next_page = 1
        addr = self._next_page * PAGE
        self._next_page += pages
        self.poke(addr, bytes(pages * PAGE))
        return addr

    @property
    def running(self) -> bool:
        return self.r(Reg.CSTS) & (CSTS_RDY | CSTS_CFS) == CSTS_RDY

    def forget_queues(self) -> None:
        self.sqs.clear()
        self.cqs.clear()
        self.outstanding.clear()

    # bring-up (core.c nvme_enable_ctrl, pci.c nvme_pci_configure_admin_queue)

    def enable(self, aqa: tuple[int, int], asq: int | None, acq: int | None, cc: int) -> bool:
        self.w(Reg.CC, 0)
        self.forget_queues()
        sq_depth, cq_depth = aqa
        self.w(Reg.AQA, ((cq_depth - 1) & 0xFFF) << 16 | ((sq_depth - 1) & 0xFFF))
        asq = self.alloc(-(-max(sq_depth, 1) * 64 // PAGE)) if asq is None else asq
        acq = self.alloc(-(-max(cq_depth, 1) * 16 // PAGE)) if acq is None else acq
        for reg, value in ((Reg.ASQ, asq), (Reg.ACQ, acq)):
            self.w(reg, value & 0xFFFFFFFF)
            self.w(reg + 4, (value >> 32) & 0xFFFFFFFF)
        self.w(Reg.CC, cc & ~CC_EN)
        self.w(Reg.CC, cc | CC_EN)
        self.check()
        if not self.running:
            return False
        self.cqs[0] = HostCq(acq, ((cq_depth - 1) & 0xFFF) + 1)
        self.sqs[0] = HostSq(asq, ((sq_depth - 1) & 0xFFF) + 1, 0)
        self.outstanding[0] = {}
        return True

    def setup_io(self, pairs: int, depth: int) -> None:
        self.admin(AdminOpcode.SET_FEATURES, cdw=(0x07, (MAX_PAIRS - 1) << 16 | (MAX_PAIRS - 1), 0, 0, 0, 0))
        for qid in range(1, pairs + 1):
            if self.create_cq(qid, depth, vector=qid) == Status.SUCCESS:
                self.create_sq(qid, depth, cqid=qid)

    def create_cq(self, qid: int, size: int, *, vector: int = 0, base: int | None = None, pc: int = 1) -> int:
        base = self.alloc(-(-size * 16 // PAGE)) if base is None else base
        status, _ = self.admin(AdminOpcode.CREATE_IO_CQ, prp1=base, cdw=(((size - 1) & 0xFFFF) << 16 | qid,
                               vector << 16 | 1 << 1 | pc, 0, 0, 0, 0))
        if status == Status.SUCCESS:
            self.cqs[qid] = HostCq(base, size)
        return status

    def create_sq(self, qid: int, size: int, *, cqid: int, base: int | None = None, pc: int = 1) -> int:
        base = self.alloc(-(-size * 64 // PAGE)) if base is None else base
        status, _ = self.admin(AdminOpcode.CREATE_IO_SQ, prp1=base, cdw=(((size - 1) & 0xFFFF) << 16 | qid,
                               cqid << 16 | pc, 0, 0, 0, 0))
        if status == Status.SUCCESS:
            self.sqs[qid] = HostSq(base, size, cqid)
            self.outstanding[qid] = {}
        return status

    # submission and completion

    def submit(self, qid: int, opcode: int, *, what: str = "", cid: int | None = None, flags: int = 0,
               nsid: int = 0, prp1: int = 0, prp2: int = 0, cdw: tuple[int, ...] = (0,) * 6) -> int | None:
        sq = self.sqs.get(qid)
        if sq is None:
            return None
        if cid is None:
            self._cid = (self._cid + 1) & 0xFFFF
            cid = self._cid
        sqe = SQE_STRUCT.pack(opcode & 0xFF, flags & 0xFF, cid & 0xFFFF, nsid & 0xFFFFFFFF, prp1 & U64, prp2 & U64,
                              *(c & 0xFFFFFFFF for c in cdw))
        self.poke(sq.base + sq.tail * 64, sqe)
        sq.tail = (sq.tail + 1) % sq.size
        self.outstanding.setdefault(qid, {})[cid] = what or f"opcode {opcode:#x}"
        self.w(DOORBELL_BASE + 8 * qid, sq.tail)
        return cid

    def reap_all(self) -> None:
        for cqid in sorted(self.cqs):
            self.reap(cqid)

    def reap(self, cqid: int) -> None:
        """Take the CQEs the controller posted on CQ `cqid` (found by their phase tag), checking each."""
        cq = self.cqs.get(cqid)
        if cq is None:
            return
        found = 0
        while found < cq.size and cq.base + (cq.head + 1) * 16 <= self.ram.size:
            dw0, _dw1, sqhd, sqid, cid, status = CQE_STRUCT.unpack_from(self.ram.view, cq.base + cq.head * 16)
            if status & 1 != cq.phase:
                break
            found += 1
            if self.checking:
                self.check_cqe(cqid, sqid, sqhd, cid, status >> 1)
            self.outstanding.get(sqid, {}).pop(cid, None)
            self.completions.append((sqid, cid, status >> 1 & 0x7FF, dw0))
            cq.head += 1
            if cq.head == cq.size:
                cq.head, cq.phase = 0, cq.phase ^ 1
        if found:
            self.w(DOORBELL_BASE + 8 * cqid + 4, cq.head)

    def check_cqe(self, cqid: int, sqid: int, sqhd: int, cid: int, sf: int) -> None:
        status, dnr = sf & 0x7FF, bool(sf & STATUS_DNR)
        assert status in STATUSES, f"CQE with an unknown status {sf:#x}"
        assert dnr == (Status(status) in _DNR), f"CQE status {status:#x} with DNR {dnr}"
        sq = self.sqs.get(sqid)
        assert sq is not None and sq.cqid == cqid, f"CQE on CQ {cqid} for SQ {sqid}, which does not post there"
        assert sqhd < sq.size, f"SQ head {sqhd} past the size {sq.size} of SQ {sqid}"
        assert cid in self.outstanding.get(sqid, {}), f"CQE for CID {cid} on SQ {sqid}, never submitted or done twice"

    def cmd(self, qid: int, opcode: int, **kw: object) -> tuple[int, int]:
        """Submit one command, run the controller, reap: (status, dw0); (-1, 0) when no CQE came."""
        before = len(self.completions)
        cid = self.submit(qid, opcode, **kw)  # type: ignore[arg-type]
        if cid is None:
            return -1, 0
        self.ctrl.service()
        self.check()
        self.reap(self.sqs[qid].cqid)
        mine = [c for c in self.completions[before:] if c[:2] == (qid, cid)]
        return (mine[-1][2], mine[-1][3]) if mine else (-1, 0)

    def admin(self, opcode: int, **kw: object) -> tuple[int, int]:
        return self.cmd(0, opcode, **kw)

    # data buffers and PRPs, the way Linux builds them

    def buffer(self, length: int, offset: int = 0) -> tuple[list[int], int, int]:
        """Pages for `length` bytes from `offset` into the first: (page addresses, PRP1, PRP2)."""
        n = max(1, -(-(offset + length) // PAGE))
        base = self.alloc(n)
        pages = [base + i * PAGE for i in range(n)]
        for p in pages:
            self.poke(p, b"\xee" * PAGE)  # poison: bytes the controller skipped show
        prp2 = 0 if n == 1 else pages[1] if n == 2 else self.prp_list(pages[1:])
        return pages, pages[0] + offset, prp2

    def prp_list(self, entries: list[int]) -> int:
        room = PAGE // 8
        first = addr = self.alloc()
        while entries:
            here = entries if len(entries) <= room else entries[:room - 1]
            entries = entries[len(here):]
            nxt = self.alloc() if entries else None
            self.poke(addr, b"".join(e.to_bytes(8, "little") for e in [*here, *([nxt] if nxt else [])]))
            addr = nxt or 0
        return first

    def gather(self, pages: list[int], offset: int, length: int) -> bytes:
        data = b"".join(self.peek(p, PAGE) for p in pages)
        return data[offset:offset + length]

    def scatter(self, pages: list[int], offset: int, data: bytes) -> None:
        pos = 0
        for i, p in enumerate(pages):
            start = offset if i == 0 else 0
            n = min(PAGE - start, len(data) - pos)
            self.poke(p + start, data[pos:pos + n])
            pos += n

    # the end of every case: a reset and a clean bring-up give a working controller

    def recover(self) -> None:
        self.w(Reg.CC, 0)
        self.check()
        assert not self.r(Reg.CSTS) & CSTS_RDY, "CSTS.RDY still set after CC.EN = 0"
        self._next_page = 1
        self.checking = True  # fresh, zeroed queues from here on
        assert self.enable((32, 32), None, None, CC_LINUX), f"no clean enable after the case: {self.ctrl.fatal_reason}"
        pages, prp1, prp2 = self.buffer(4096)
        assert self.admin(AdminOpcode.IDENTIFY, prp1=prp1, prp2=prp2, cdw=(1, 0, 0, 0, 0, 0))[0] == Status.SUCCESS
        assert self.peek(pages[0] + 4, 20).rstrip() == b"RNX0001", "Identify Controller after recovery"
        self.setup_io(1, 8)
        nsze = self.case.image_size // self.case.lba_size
        if nsze:
            pages, prp1, prp2 = self.buffer(self.case.lba_size)
            status, _ = self.cmd(1, IoOpcode.READ, nsid=1, prp1=prp1, prp2=prp2, cdw=(0, 0, 0, 0, 0, 0))
            assert status == Status.SUCCESS, f"a read of LBA 0 after recovery: status {status:#x}"
            assert self.gather(pages, 0, self.case.lba_size) == self.image(0, self.case.lba_size)


# --- strategies --------------------------------------------------------------------------------------


dwords = st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 1, 2, 3, 7, 0xFF, 0xFFFF, 0x10000, 0xFFFFFFFF]))


@st.composite
def chaos_steps(draw: st.DrawFn, ram_size: int) -> list[tuple]:
    steps: list[tuple] = []
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["cmd", "cmd", "cmd", "cmd", "queue", "queue", "service", "reap", "mmio", "mmio",
                                     "ring", "read", "poke", "reset"]))
        if kind == "queue":  # queue management with ids, sizes, bases and vectors near and past the limits
            what = st.sampled_from(["create_cq", "create_cq", "create_sq", "create_sq", "delete_sq", "delete_cq"])
            steps.append(("queue", draw(what),
                          draw(st.integers(0, MAX_PAIRS + 1)), draw(st.integers(0, MAX_PAIRS + 1)),
                          draw(st.sampled_from([2, 2, 3, 16, 1, 0, MQES + 1, MQES + 2, 0x10000])),
                          draw(st.one_of(st.none(), addresses(ram_size))), draw(st.integers(0, MAX_PAIRS + 1)),
                          draw(st.integers(0, 3))))
        elif kind == "cmd":
            qid = draw(st.integers(0, MAX_PAIRS))
            admin = qid == 0
            opcode = draw(st.one_of(st.sampled_from(list(AdminOpcode) if admin else list(IoOpcode)),
                                    st.integers(0, 255)))
            data = draw(st.sampled_from(["buffer", "raw", "list"]))
            length = draw(st.sampled_from([0, 512, 4096, 4100, 8192, 3 * PAGE + 12, 64 << 10]))
            steps.append(("cmd", qid, int(opcode), draw(st.sampled_from([0, 0, 0, 1, 0x40, 0xC0, 0xFF])),
                          draw(st.sampled_from([1, 1, 0, 2, 0xFFFFFFFF])), data, length,
                          draw(st.integers(0, 15)) * 4, draw(addresses(ram_size)), draw(addresses(ram_size)),
                          tuple(draw(dwords) for _ in range(6)), draw(st.booleans())))
        elif kind == "service":
            steps.append(("service", draw(st.one_of(st.none(), st.integers(0, 3)))))
        elif kind == "reap":
            steps.append(("reap", draw(st.integers(0, MAX_PAIRS))))
        elif kind == "mmio":
            offset = draw(st.one_of(st.sampled_from([int(r) for r in Reg] + [0x18, 0x2C, 0x34, 0x40, 0xFFC]),
                                    st.integers(0, 0x1100), st.integers(0, 1 << 20)))
            steps.append(("mmio", offset, draw(st.sampled_from([4, 4, 8, 1, 2, 3])),
                          draw(st.one_of(dwords, st.integers(0, U64), st.just(NSSR_MAGIC)))))
        elif kind == "ring":
            qid = draw(st.one_of(st.integers(0, MAX_PAIRS + 1), st.integers(0, 0xFFFF)))
            steps.append(("ring", qid, draw(st.booleans()), draw(st.one_of(st.integers(0, 70), dwords))))
        elif kind == "read":
            steps.append(("read", draw(st.integers(0, 0x1100)), draw(st.sampled_from([4, 8, 1, 2]))))
        elif kind == "poke":
            steps.append(("poke", draw(addresses(ram_size)), draw(st.binary(min_size=1, max_size=128))))
        else:
            steps.append(("reset", draw(st.sampled_from(["cc", "nssr", "shutdown"]))))
    return steps


@st.composite
def chaos_cases(draw: st.DrawFn) -> NvmeCase:
    ram_size = draw(st.sampled_from([16 * PAGE, 64 * PAGE, 256 * PAGE]))
    image_size = draw(st.sampled_from([0, 511, 512, 513, 4096, 64 << 10, 1 << 20]))
    sane = draw(st.integers(0, 3)) > 0
    aqa = (32, 32) if sane else (draw(st.sampled_from([0, 1, 2, 64, 4096, 4097])),
                                 draw(st.sampled_from([0, 1, 2, 64, 4096, 4097])))
    asq = None if sane else draw(st.one_of(st.none(), addresses(ram_size)))
    acq = None if sane else draw(st.one_of(st.none(), addresses(ram_size)))
    cc = CC_LINUX if sane else draw(st.one_of(st.just(CC_LINUX), dwords))
    return NvmeCase("chaos", ram_size, image_size, lba_size=draw(st.sampled_from([512, 4096])),
                    read_only=draw(st.booleans()), mdts=draw(st.sampled_from([7, 7, 0, 1])), aqa=aqa, asq=asq, acq=acq,
                    cc=cc, pairs=draw(st.integers(0, MAX_PAIRS)), depth=draw(st.sampled_from([2, 3, 16, 64])),
                    steps=draw(chaos_steps(ram_size)),
                    data_seed=draw(seeds))


IO_FAULTS = ("none", "none", "none", "nsid", "opcode", "fused", "mdts", "lba", "prp1_offset", "prp1_past_ram",
             "prp2_offset", "list_offset", "list_past_ram", "entry_offset", "entry_past_ram", "read_only")
FATAL_FAULTS = ("asq_misaligned", "acq_misaligned", "aqa_zero", "mps", "iosqes", "iocqes", "css", "ams", "asq_past_ram",
                "acq_past_ram", "io_cq_past_ram", "io_sq_past_ram")
ADMIN_FAULTS = ("cq_qid0", "cq_qid_big", "cq_qid_dup", "cq_size0", "cq_size_big", "cq_base", "cq_pc", "cq_vector",
                "sq_cqid", "sq_qid0", "sq_size0", "sq_base", "del_cq_busy", "del_sq_none", "nq_late", "cns", "lid",
                "identify_ok", "log_ok")


@st.composite
def fault_steps(draw: st.DrawFn) -> list[tuple]:
    steps: list[tuple] = []
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 3)):
            fault = draw(st.sampled_from(IO_FAULTS))
            op = draw(st.sampled_from(["read", "read", "write", "write", "write_zeroes", "flush", "dsm"]))
            steps.append(("io", fault, op, draw(st.integers(0, 1 << 16)), draw(st.integers(1, 24)),
                          draw(st.sampled_from([0, 0, 4, 512, 4092])), draw(st.booleans())))
        elif draw(st.integers(0, 3)):
            steps.append(("admin", draw(st.sampled_from(ADMIN_FAULTS))))
        else:
            steps.append(("fatal", draw(st.sampled_from(FATAL_FAULTS))))
    return steps


@st.composite
def fault_cases(draw: st.DrawFn) -> NvmeCase:
    return NvmeCase("faults", 512 * PAGE, draw(st.sampled_from([64 << 20, (64 << 20) + 513, 1 << 20])),
                    lba_size=draw(st.sampled_from([512, 4096])), read_only=draw(st.integers(0, 5)) == 0,
                    mdts=draw(st.sampled_from([7, 1, 0])), pairs=draw(st.integers(1, MAX_PAIRS - 1)),
                    depth=draw(st.sampled_from([4, 16])), steps=draw(fault_steps()), data_seed=draw(seeds))


def cases() -> st.SearchStrategy[NvmeCase]:
    return st.one_of(chaos_cases(), fault_cases())


# --- running a case ----------------------------------------------------------------------------------


def check_nvme(case: NvmeCase, workdir: Path) -> str:
    host = Host(case, workdir)

    def bring_up() -> None:
        if host.enable(case.aqa, case.asq, case.acq, case.cc) and case.pairs:
            host.setup_io(case.pairs, case.depth)

    run = _run_chaos if case.mode == "chaos" else _run_faults
    return run_case(host, case.mode, bring_up, lambda: run(host, case), host.recover)


def _run_chaos(host: Host, case: NvmeCase) -> str:
    ctrl = host.ctrl
    for host.step, step in enumerate(case.steps):
        kind = step[0]
        if kind == "cmd":
            _chaos_cmd(host, *step[1:])
        elif kind == "queue":
            _chaos_queue(host, *step[1:])
        elif kind == "service":
            ctrl.service(step[1])
        elif kind == "reap":
            host.reap(step[1])
        elif kind == "mmio":
            _, offset, size, value = step
            host.w(offset, value & ((1 << (8 * size)) - 1), size)
        elif kind == "ring":
            _, qid, is_cq, value = step
            host.w(DOORBELL_BASE + 8 * qid + 4 * is_cq, value)
            if is_cq and qid in host.cqs:  # the host's idea of its CQ head may no longer be the controller's
                host.cqs[qid].head = value % host.cqs[qid].size
        elif kind == "read":
            host.r(step[1], step[2])
        elif kind == "poke":
            host.poke(step[1], step[2])
        else:
            _chaos_reset(host, step[1])
        if kind in ("cmd", "service") and (kind == "service" and step[1] is None or kind == "cmd" and step[-1]):
            assert not ctrl.has_work, f"step {host.step}: service() returned with work left"
        if not host.r(Reg.CSTS) & CSTS_RDY:
            host.forget_queues()  # reset or never enabled: whatever queues the host had are gone
        host.check()
    ctrl.service()
    host.check()
    assert not ctrl.has_work, "service() returned with work left"
    host.reap_all()
    host.check()
    csts = host.r(Reg.CSTS)
    return "cfs" if csts & CSTS_CFS else "ready" if csts & CSTS_RDY else "off"


def _chaos_cmd(host: Host, qid: int, opcode: int, flags: int, nsid: int, data: str, length: int, offset: int,
               prp1: int, prp2: int, cdw: tuple[int, ...], service: bool) -> None:
    if data == "buffer":
        _, prp1, prp2 = host.buffer(max(length, 1), offset)
    elif data == "list":
        prp2 = host.prp_list([prp1 & ~(PAGE - 1), prp2, prp1])  # a list whose entries point anywhere
    host.submit(qid, opcode, flags=flags, nsid=nsid, prp1=prp1, prp2=prp2, cdw=cdw)
    if service:
        host.ctrl.service()


def _chaos_queue(host: Host, what: str, qid: int, cqid: int, size: int, base: int | None, vector: int,
                 bits: int) -> None:
    """Create or delete a queue; the host records what the controller accepted, as a driver would."""
    if what == "create_cq":
        host.create_cq(qid, size, vector=vector, base=base, pc=bits & 1)
    elif what == "create_sq":
        host.create_sq(qid, size, cqid=cqid, base=base, pc=bits & 1)  # on a CQ the host may not know of
    else:
        opcode = AdminOpcode.DELETE_IO_SQ if what == "delete_sq" else AdminOpcode.DELETE_IO_CQ
        if host.admin(opcode, cdw=(qid, 0, 0, 0, 0, 0))[0] == Status.SUCCESS:
            (host.sqs if what == "delete_sq" else host.cqs).pop(qid, None)
            if what == "delete_sq":
                host.outstanding.pop(qid, None)


def _chaos_reset(host: Host, how: str) -> None:
    if how == "cc":
        host.w(Reg.CC, 0)
    elif how == "nssr":
        host.w(Reg.NSSR, NSSR_MAGIC)
    else:
        host.w(Reg.CC, host.r(Reg.CC) | 1 << 14)  # CC.SHN = normal shutdown


# --- faults mode: one fault per command, and the status the rules give ---------------------------------------


def _run_faults(host: Host, case: NvmeCase) -> str:
    if not host.running or 1 not in host.sqs:
        raise AssertionError(f"a clean bring-up failed: {host.ctrl.fatal_reason}")
    seen = []
    for host.step, step in enumerate(case.steps):
        host._next_page = 64  # command buffers above the queues, reused by each command
        if step[0] == "fatal":
            status = _fatal_fault(host, step[1])
        else:
            status = _io_fault(host, *step[1:]) if step[0] == "io" else _admin_fault(host, step[1])
        seen.append(status)
        host.check()
    return "ok" if all(s == Status.SUCCESS for s in seen) else "statuses"


def _fatal_fault(host: Host, fault: str) -> int:
    """A fault the rules make fatal to the controller (CSTS.CFS): a refused enable, or a queue the controller
    cannot reach in RAM. Then the host resets and brings the controller up again, as nvme_reset_work does."""
    ram, case = host.ram.size, host.case
    cc = {"mps": CC_LINUX | 5 << 7, "iosqes": (CC_LINUX & ~(0xF << 16)) | 5 << 16,
          "iocqes": (CC_LINUX & ~(0xF << 20)) | 3 << 20, "css": CC_LINUX | 1 << 4, "ams": CC_LINUX | 1 << 11}
    if fault in ("asq_misaligned", "acq_misaligned", "aqa_zero", *cc):
        host._next_page = 1
        odd = host.alloc() + 512
        up = host.enable((1, 1) if fault == "aqa_zero" else (32, 32), odd if fault == "asq_misaligned" else None,
                         odd if fault == "acq_misaligned" else None, cc.get(fault, CC_LINUX))
        assert not up, f"{fault}: the controller accepted the enable"
    elif fault in ("asq_past_ram", "acq_past_ram"):
        host._next_page = 1
        far = ram + 16 * PAGE
        assert host.enable((32, 32), far if fault == "asq_past_ram" else None,
                           far if fault == "acq_past_ram" else None, CC_LINUX), f"{fault}: enable refused"
        host.admin(AdminOpcode.IDENTIFY, prp1=host.alloc(), cdw=(1, 0, 0, 0, 0, 0))
    else:
        qid = next((q for q in range(1, MAX_PAIRS + 1) if q not in host.cqs and q not in host.sqs), None)
        if qid is None:
            return Status.SUCCESS
        far = ram + 64 * PAGE
        assert host.create_cq(qid, 4, base=far if fault == "io_cq_past_ram" else None) == Status.SUCCESS
        assert host.create_sq(qid, 4, cqid=qid, base=far if fault == "io_sq_past_ram" else None) == Status.SUCCESS
        host.cmd(qid, IoOpcode.FLUSH, nsid=1)
    csts = host.r(Reg.CSTS)
    assert csts & CSTS_CFS and not csts & CSTS_RDY, f"{fault}: CSTS {csts:#x}, the rules say CFS"
    assert host.ctrl.fatal_reason, f"{fault}: CFS without a reason"
    host._next_page = 1
    assert host.enable((32, 32), None, None, CC_LINUX), f"{fault}: no clean enable after the reset"
    host.setup_io(case.pairs, case.depth)
    return Status.INTERNAL_ERROR  # not a CQE status: marks the step as an error for the statistics


PRP_FAULTS = ("prp1_offset", "prp1_past_ram", "prp2_offset", "list_offset", "list_past_ram", "entry_offset",
              "entry_past_ram")
OPCODES = {"read": IoOpcode.READ, "write": IoOpcode.WRITE, "write_zeroes": IoOpcode.WRITE_ZEROES,
           "flush": IoOpcode.FLUSH, "dsm": IoOpcode.DATASET_MANAGEMENT}


def _io_fault(host: Host, fault: str, op: str, slba: int, nlb: int, offset: int, fua: bool) -> int:
    """One I/O command with at most one fault; its status must be the one the rules give."""
    case = host.case
    lbs = case.lba_size
    nsze = case.image_size // lbs
    writes, moves = op in ("write", "write_zeroes", "dsm"), op in ("read", "write")
    most = (PAGE << case.mdts) // lbs if case.mdts else 0x10000
    nlb = min(nlb, most, nsze)
    slba %= nsze - nlb + 1
    if case.read_only and writes and fault not in ("nsid", "opcode", "fused"):
        fault = "read_only"  # checked before the range and the data pointers
    elif fault == "read_only" or fault in (*PRP_FAULTS, "mdts") and not moves or fault == "lba" and op == "flush":
        fault = "none"
    if fault == "mdts" and not (case.mdts and most + 1 <= min(0x10000, nsze)):
        fault = "none"
    opcode, nsid, flags, expect = OPCODES[op], 1, 0, Status.SUCCESS
    if fault == "nsid":
        nsid, expect = 7, Status.INVALID_NAMESPACE
    elif fault == "opcode":
        opcode, expect = 0x7E, Status.INVALID_OPCODE
    elif fault == "fused":
        flags, expect = 0x01, Status.INVALID_FIELD
    elif fault == "read_only":
        expect = Status.NAMESPACE_WRITE_PROTECTED
    elif fault == "lba" and op != "dsm":  # DSM skips ranges out of bounds, as QEMU does: no error
        slba, expect = nsze - nlb + 1 + slba % 3, Status.LBA_OUT_OF_RANGE
    elif fault == "mdts":
        slba, nlb, expect = 0, most + 1, Status.INVALID_FIELD
    length = nlb * lbs
    cdw = (slba & 0xFFFFFFFF, slba >> 32, (nlb - 1) | (1 << 30 if fua else 0), 0, 0, 0)
    pages: list[int] = []
    prp1 = prp2 = 0
    data = b""
    if op == "flush":
        cdw, nsid = (0,) * 6, 0xFFFFFFFF if fault == "none" and fua else nsid
    elif op == "dsm":
        pages, prp1, prp2 = host.buffer(16)
        host.poke(prp1, struct.pack("<IIQ", 0, nlb, nsze + 1 if fault == "lba" else slba))
        cdw = (0, 1 << 2, 0, 0, 0, 0)
    elif moves and expect in (Status.SUCCESS, Status.INVALID_FIELD) or fault in PRP_FAULTS:
        offset &= ~3
        pages, prp1, prp2 = host.buffer(length, offset)
        if op == "write":
            data = host.rng.randbytes(length)
            host.scatter(pages, offset, data)
        if fault in PRP_FAULTS:
            broken = _prp_fault(host, fault, pages, prp1, prp2)
            if broken is not None:
                expect, prp1, prp2 = broken
    before = host.image(slba * lbs, length) if op == "read" else b""
    status, _ = host.cmd(1, opcode, nsid=nsid, flags=flags, prp1=prp1, prp2=prp2, cdw=cdw)
    assert status == expect, (f"{op} with fault {fault}: status {status:#x}, the rules say {int(expect):#x}"
                              f" (slba {slba}, nlb {nlb}, lbs {lbs}, nsze {nsze}, prp1 {prp1:#x}, prp2 {prp2:#x})")
    if status == Status.SUCCESS and op == "read":
        assert host.gather(pages, offset, length) == before, f"read of {nlb} blocks at {slba}: wrong bytes in RAM"
    if status == Status.SUCCESS and op == "write":
        assert host.image(slba * lbs, length) == data, f"write of {nlb} blocks at {slba}: wrong bytes in the image"
    if status == Status.SUCCESS and op in ("write_zeroes", "dsm") and fault != "lba":
        assert host.image(slba * lbs, length) == bytes(length), f"{op} of {nlb} blocks at {slba} left data"
    return status


def _prp_fault(host: Host, fault: str, pages: list[int], prp1: int, prp2: int) -> tuple[int, int, int] | None:
    """Break the data pointers the way `fault` says: (status the rules give, PRP1, PRP2), or None if it cannot."""
    ram, n = host.ram.size, len(pages)
    if fault == "prp1_offset":
        return Status.INVALID_PRP_OFFSET, prp1 | 2, prp2
    if fault == "prp1_past_ram":
        return Status.DATA_TRANSFER_ERROR, ram + PAGE, prp2
    if fault == "prp2_offset" and n == 2:
        return Status.INVALID_PRP_OFFSET, prp1, prp2 + 8
    if n <= 2:
        return None
    if fault == "list_offset":
        return Status.INVALID_PRP_OFFSET, prp1, prp2 + 4
    if fault == "list_past_ram":
        return Status.DATA_TRANSFER_ERROR, prp1, ram
    if fault == "entry_offset":
        host.poke(prp2 + 8 * (n - 2), (pages[-1] + 512).to_bytes(8, "little"))
        return Status.INVALID_PRP_OFFSET, prp1, prp2
    if fault == "entry_past_ram":
        host.poke(prp2 + 8 * (n - 2), (ram + 16 * PAGE).to_bytes(8, "little"))
        return Status.DATA_TRANSFER_ERROR, prp1, prp2
    return None


def _admin_fault(host: Host, fault: str) -> int:
    ctrl_pairs = [q for q in host.cqs if q]
    free = next((q for q in range(1, MAX_PAIRS + 1) if q not in host.cqs and q not in host.sqs), None)
    def admin(opcode: int, cdw10: int, nsid: int = 0) -> int:
        return host.admin(opcode, nsid=nsid, prp1=host.alloc(), cdw=(cdw10, 0, 0, 0, 0, 0))[0]

    rules: dict[str, tuple[Callable[[], int], int]] = {
        "cq_qid0": (lambda: host.create_cq(0, 4), Status.INVALID_QUEUE_IDENTIFIER),
        "cq_qid_big": (lambda: host.create_cq(MAX_PAIRS + 1, 4), Status.INVALID_QUEUE_IDENTIFIER),
        "cq_qid_dup": (lambda: host.create_cq(ctrl_pairs[0], 4), Status.INVALID_QUEUE_IDENTIFIER),
        "cq_size0": (lambda: host.create_cq(free or 1, 1), Status.INVALID_QUEUE_SIZE),
        "cq_size_big": (lambda: host.create_cq(free or 1, MQES + 2), Status.INVALID_QUEUE_SIZE),
        "cq_base": (lambda: host.create_cq(free or 1, 4, base=host.alloc() + 16), Status.INVALID_PRP_OFFSET),
        "cq_pc": (lambda: host.create_cq(free or 1, 4, pc=0), Status.INVALID_FIELD),
        "cq_vector": (lambda: host.create_cq(free or 1, 4, vector=MAX_PAIRS + 1), Status.INVALID_INTERRUPT_VECTOR),
        "sq_cqid": (lambda: host.create_sq(free or 1, 4, cqid=free or MAX_PAIRS), Status.COMPLETION_QUEUE_INVALID),
        "sq_qid0": (lambda: host.create_sq(0, 4, cqid=1), Status.INVALID_QUEUE_IDENTIFIER),
        "sq_size0": (lambda: host.create_sq(free or 1, 1, cqid=1), Status.INVALID_QUEUE_SIZE),
        "sq_base": (lambda: host.create_sq(free or 1, 4, cqid=1, base=host.alloc() + 64), Status.INVALID_PRP_OFFSET),
        "del_cq_busy": (lambda: host.admin(AdminOpcode.DELETE_IO_CQ, cdw=(1, 0, 0, 0, 0, 0))[0],
                        Status.INVALID_QUEUE_DELETION),
        "del_sq_none": (lambda: host.admin(AdminOpcode.DELETE_IO_SQ, cdw=(MAX_PAIRS + 1, 0, 0, 0, 0, 0))[0],
                        Status.INVALID_QUEUE_IDENTIFIER),
        "nq_late": (lambda: host.admin(AdminOpcode.SET_FEATURES, cdw=(7, 0, 0, 0, 0, 0))[0],
                    Status.COMMAND_SEQUENCE_ERROR),
        "cns": (lambda: admin(AdminOpcode.IDENTIFY, 0x55), Status.INVALID_FIELD),
        "lid": (lambda: admin(AdminOpcode.GET_LOG_PAGE, 0x7F | 127 << 16), Status.INVALID_LOG_PAGE),
        "identify_ok": (lambda: admin(AdminOpcode.IDENTIFY, 0, nsid=1), Status.SUCCESS),
        "log_ok": (lambda: admin(AdminOpcode.GET_LOG_PAGE, 2 | 127 << 16), Status.SUCCESS),
    }
    if fault.startswith(("cq_size", "cq_base", "cq_pc", "cq_vector", "sq_cqid", "sq_size", "sq_base")) and free is None:
        fault = "identify_ok"  # every queue id is taken: nothing to try a creation on
    action, expect = rules[fault]
    status = action()
    assert status == expect, f"admin fault {fault}: status {status:#x}, the rules say {int(expect):#x}"
    return status
