"""Fuzz target: the AHCI HBA model (`rinuxfs.hw.ahci`) at register, command-table and PRDT level.

A case builds a machine (RAM of a few pages to 2 MiB, a sparse image of any
size, 0 and 511 bytes included) and drives the HBA through a test-side
libahci. Two kinds of case, as for NVMe:

- chaos: random MMIO reads and writes (every register, reserved offsets,
  odd sizes and alignments, PxCI/PxSACT bits, ST/FRE toggles, COMRESET, HBA
  reset), bytes poked anywhere in RAM, command headers with random CFL, W,
  C, PRDTL and CTBA (past the end of RAM too), H2D FISes with random
  commands, LBAs, counts, features, device and control bytes (soft resets
  included), PRDTs whose entries point anywhere and describe any length,
  NCQ tags reused, service() with and without a budget, interrupt
  acknowledgement, Linux's error recovery. Checked: no exception leaves the
  model, `consistency_errors()` is empty after every step, only vector 0
  interrupts, service() leaves no work behind, and at the end Linux's
  bring-up (HBA reset, port init, FIS receive, COMRESET, engine start)
  always gives a working disk again (IDENTIFY, then a READ DMA EXT that
  returns the image's bytes).
- faults: a clean bring-up, then well-formed commands carrying at most one
  fault each (an LBA range past the end, an unknown opcode, a PRDT shorter
  than the transfer, a command table or a data buffer past the end of RAM,
  a write to a read-only medium, a TRIM of 0 blocks, an NCQ tag reused).
  Each outcome must be what the model's rules say (storage.md §1.5): a
  task-file error with the right error bits, or PxIS.OFS/HBFS/HBDS with the
  port halted; NCQ errors as an SDB FIS with ERR and the tag in log 10h.
  Successful commands must have moved exactly the image's bytes. After each
  error the host recovers as Linux's ahci_error_intr/ahci_kick_engine do.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from fuzzing.machine import PAGE, U64, Machine, addresses, run_case, seeds
from rinuxfs.hw import ahci_layouts as L
from rinuxfs.hw import ata
from rinuxfs.hw.ahci import ATA_COMMANDS, GLOBAL_REGISTERS, PORT_REGISTERS, AhciHba

P = L.PORT_BASE
SECTOR = 512
DEF_PORT_IRQ = 0x78C0007F  # Linux ahci.h DEF_PORT_IRQ
CLB, FB = 0x1000, 0x1400  # the host's command list and received-FIS area (the clean layout)
CT_BASE = 0x2000  # command tables, CT_STRIDE apart
CT_STRIDE = 0x400  # room for 56 PRDs each
DATA = 0xA000  # data buffers from here up


@dataclass
class AhciCase:
    mode: str  # "chaos" or "faults"
    ram_size: int
    image_size: int
    read_only: bool = False
    boot: bool = True  # the host brings the HBA up before the steps
    steps: list[tuple] = field(default_factory=list)
    data_seed: int = 0  # every byte of data the case writes comes from it


class Host(Machine):
    """A test-side libahci that checks the model after every step."""

    def __init__(self, case: AhciCase, workdir: Path) -> None:
        super().__init__(workdir, "sda.img", ram_size=case.ram_size, image_size=case.image_size,
                         read_only=case.read_only, random_bytes=16384,
                         data_seed=case.data_seed)
        self.case = case
        self.hba = self.device = AhciHba(self.ram, self.medium, raise_irq=self.irqs.append)

    @property
    def sectors(self) -> int:
        return self.case.image_size // SECTOR

    def sectors_of_image(self, lba: int, nsect: int) -> bytes:
        return self.image(lba * SECTOR, nsect * SECTOR)

    def service(self, budget: int | None = None) -> int:
        done = self.hba.service(budget)
        assert done >= 0
        if budget is None:
            assert not self.hba.has_work, f"step {self.step}: service() returned with work left"
        self.check()
        return done

    # libahci sequences
    def poll(self, offset: int, mask: int, want: int) -> bool:
        return any(self.r(offset) & mask == want for _ in range(3))

    def boot(self) -> None:
        """ahci_reset_controller, ahci_port_init, ahci_start_fis_rx, a COMRESET, ahci_start_engine."""
        self.w(L.GHC, self.r(L.GHC) | L.GHC_AE)
        self.w(L.GHC, self.r(L.GHC) | L.GHC_HR)
        assert self.poll(L.GHC, L.GHC_HR, 0), "GHC.HR never cleared"
        self.w(L.GHC, self.r(L.GHC) | L.GHC_AE)
        self.stop_engine()
        self.w(P + L.PxCMD, self.r(P + L.PxCMD) & ~L.PxCMD_FRE)
        assert self.poll(P + L.PxCMD, L.PxCMD_FR, 0)
        self.clear_errors()
        self.w(L.GHC, self.r(L.GHC) | L.GHC_IE)
        self.w(P + L.PxCLBU, 0)
        self.w(P + L.PxCLB, CLB)
        self.w(P + L.PxFBU, 0)
        self.w(P + L.PxFB, FB)
        self.w(P + L.PxCMD, self.r(P + L.PxCMD) | L.PxCMD_FRE)
        assert self.poll(P + L.PxCMD, L.PxCMD_FR, L.PxCMD_FR)
        self.w(P + L.PxSCTL, 0x301)
        self.w(P + L.PxSCTL, 0x300)
        assert self.r(P + L.PxSSTS) == L.SSTS_LINK_UP
        self.w(P + L.PxSERR, self.r(P + L.PxSERR))
        self.start_engine()
        assert self.r(P + L.PxSIG) == L.SIG_ATA, "no ATA signature after COMRESET"
        self.w(P + L.PxIS, self.r(P + L.PxIS))
        self.w(P + L.PxIE, DEF_PORT_IRQ)
        self.w(L.IS, 1)
        self.check()

    def start_engine(self) -> None:
        self.w(P + L.PxCMD, self.r(P + L.PxCMD) | L.PxCMD_ST)
        assert self.poll(P + L.PxCMD, L.PxCMD_CR, L.PxCMD_CR), "PxCMD.CR never set"

    def stop_engine(self) -> None:
        self.w(P + L.PxCMD, self.r(P + L.PxCMD) & ~L.PxCMD_ST)
        assert self.poll(P + L.PxCMD, L.PxCMD_CR, 0), "PxCMD.CR never cleared"

    def clear_errors(self) -> None:
        """PxSERR, PxIS and IS written back to themselves: write-1-to-clear everything that is set."""
        for reg in (P + L.PxSERR, P + L.PxIS):
            self.w(reg, self.r(reg))
        self.w(L.IS, 1)

    def recover(self) -> None:
        """ahci_error_intr → ahci_kick_engine: stop the engine, clear the errors, start it again."""
        self.stop_engine()
        self.clear_errors()
        self.start_engine()
        self.check()

    def ack(self) -> int:
        status = self.r(P + L.PxIS)
        self.w(P + L.PxIS, status)
        self.w(L.IS, 1)
        return status

    # commands
    def command(self, slot: int, fis: bytes, prds: list[tuple[int, int, bool]], *, write: bool = False, cfl: int = 5,
                ctba: int | None = None, prdtl: int | None = None, reset: bool = False,
                clb: int = CLB) -> int:
        ctba = CT_BASE + slot * CT_STRIDE if ctba is None else ctba
        flags = (cfl & 0x1F) | (L.CMDH_W if write else 0) | (L.CMDH_C | L.CMDH_R if reset else 0)
        self.poke(clb + slot * 32, L.COMMAND_HEADER.pack(flags, len(prds) if prdtl is None else prdtl, 0xDEAD,
                                                         ctba & U64).ljust(32, b"\0"))
        self.poke(ctba, fis.ljust(64, b"\0")[:64])
        table = b"".join(L.PRD_ENTRY.pack(dba & U64, ((n - 1) & L.PRD_DBC_MASK) | (L.PRD_I if i else 0))
                         for dba, n, i in prds)
        self.poke(ctba + L.CT_PRDT_OFFSET, table)
        return ctba

    def prdbc(self, slot: int) -> int:
        return struct.unpack_from("<I", self.ram.view, CLB + slot * 32 + L.CMDH_PRDBC_OFFSET)[0]

    # the end of every case: Linux's bring-up gives a working disk again
    def final_recovery(self) -> None:
        self.boot()
        self.irqs.clear()
        page = self.run_clean(0, h2d(ata.ATA_CMD_ID_ATA), [(DATA, SECTOR, False)])
        assert page & L.PxIS_PSS and not page & L.PxIS_TFES, f"IDENTIFY after recovery: PxIS {page:#x}"
        ident = ata.IdentifyDevice.parse(self.peek(DATA, SECTOR))
        assert ident.lba48_capacity == self.sectors, "IDENTIFY after recovery: wrong capacity"
        if self.sectors:
            self.poke(DATA, b"\xee" * SECTOR)
            status = self.run_clean(1, h2d(ata.ATA_CMD_READ_EXT, lba=0, count=1), [(DATA, SECTOR, False)])
            assert not status & L.PxIS_TFES, f"READ DMA EXT after recovery: PxIS {status:#x}"
            assert self.peek(DATA, SECTOR) == self.sectors_of_image(0, 1), "READ DMA EXT after recovery: wrong bytes"

    def run_clean(self, slot: int, fis: bytes, prds: list[tuple[int, int, bool]], *, write: bool = False) -> int:
        self.command(slot, fis, prds, write=write)
        self.w(P + L.PxCI, 1 << slot)
        self.service()
        return self.ack()


def h2d(command: int, *, lba: int = 0, count: int = 0, features: int = 0, device: int = 0x40, control: int = 0,
        c: bool = True, fis_type: int = L.FIS_TYPE_REG_H2D) -> bytes:
    """A Register H2D FIS, packed with the model's own struct twin of FisRegH2D."""
    lba_bytes = (lba & ((1 << 48) - 1)).to_bytes(6, "little")
    return L.FIS_REG_H2D.pack(fis_type & 0xFF, 0x80 if c else 0, command & 0xFF, features & 0xFF, lba_bytes[:3],
                              device & 0xFF, lba_bytes[3:], (features >> 8) & 0xFF, count & 0xFF, (count >> 8) & 0xFF,
                              0, control & 0xFF)


# --- strategies --------------------------------------------------------------------------------------------


COMMANDS = sorted(ATA_COMMANDS)
REGISTER_OFFSETS = sorted([*GLOBAL_REGISTERS, *(P + off for off in PORT_REGISTERS), 0x2C, 0xA0, P + 0x1C, P + 0x70])
dwords = st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 1, 0xFFFFFFFF, 0x11, 0x10, 0x301, 0x300, 0x4]))


@st.composite
def chaos_steps(draw: st.DrawFn, ram_size: int) -> list[tuple]:
    steps: list[tuple] = []
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["cmd", "cmd", "cmd", "cmd", "service", "ack", "mmio", "mmio", "read", "poke",
                                     "recover", "reset"]))
        if kind == "cmd":
            slot = draw(st.integers(0, 31))
            prds = draw(st.lists(st.tuples(addresses(ram_size), st.sampled_from([1, 2, 511, 512, 4096, 4 << 20]),
                                           st.booleans()), max_size=4))
            command = draw(st.one_of(st.sampled_from(COMMANDS), st.integers(0, 255)))
            fis = h2d(command, lba=draw(st.one_of(st.integers(0, 40), st.integers(0, (1 << 48) - 1))),
                      count=draw(st.sampled_from([0, 1, 2, 8, 0xFF, 0x100, 0xFFFF, 31 << 3, 7 << 3])),
                      features=draw(st.sampled_from([0, 1, 2, 8, 0x82, 0x55, 0xFFFF])),
                      device=draw(st.sampled_from([0x40, 0xC0, 0x4F, 0])),
                      control=draw(st.sampled_from([0, 0, CONTROL_SRST])), c=draw(st.integers(0, 5)) > 0,
                      fis_type=draw(st.sampled_from([L.FIS_TYPE_REG_H2D] * 5 + [0, 0x34])))
            steps.append(("cmd", slot, fis, prds, draw(st.booleans()), draw(st.sampled_from([5, 5, 0, 4, 31])),
                          draw(st.one_of(st.none(), addresses(ram_size))),
                          draw(st.one_of(st.none(), st.sampled_from([0, 1, 5, 0xFFFF]))),
                          draw(st.booleans()), draw(st.sampled_from(["ci", "ci", "ncq", "none"]))))
        elif kind == "service":
            steps.append(("service", draw(st.one_of(st.none(), st.integers(0, 3)))))
        elif kind == "mmio":
            offset = draw(st.one_of(st.sampled_from(REGISTER_OFFSETS), st.integers(0, 0x200)))
            steps.append(("mmio", offset, draw(st.sampled_from([4, 4, 4, 1, 2, 8])), draw(dwords)))
        elif kind == "read":
            steps.append(("read", draw(st.integers(0, 0x200)), draw(st.sampled_from([4, 1, 2, 8]))))
        elif kind == "poke":
            steps.append(("poke", draw(addresses(ram_size)), draw(st.binary(min_size=1, max_size=96))))
        elif kind == "reset":
            steps.append(("reset", draw(st.sampled_from(["hba", "comreset", "offline", "srst"]))))
        else:
            steps.append((kind,))
    return steps


CONTROL_SRST = L.CONTROL_SRST


@st.composite
def chaos_cases(draw: st.DrawFn) -> AhciCase:
    ram_size = draw(st.sampled_from([16 * PAGE, 64 * PAGE, 512 * PAGE]))
    return AhciCase("chaos", ram_size, draw(st.sampled_from([0, 511, 512, 513, 64 << 10, 1 << 20])),
                    read_only=draw(st.booleans()), boot=draw(st.integers(0, 4)) > 0, steps=draw(chaos_steps(ram_size)),
                    data_seed=draw(seeds))


FAULTS = ("none", "none", "none", "lba", "opcode", "prdt_short", "ctba_past_ram", "prd_past_ram", "read_only",
          "dsm_zero", "tag_reuse", "clb_past_ram", "fb_past_ram")
OPS = ("read_ext", "write_ext", "read28", "write28", "ncq_read", "ncq_write", "dsm", "flush", "identify", "log",
       "setfeatures", "power")


@st.composite
def fault_steps(draw: st.DrawFn) -> list[tuple]:
    return draw(st.lists(st.tuples(st.sampled_from(FAULTS), st.sampled_from(OPS), st.integers(0, 1 << 20),
                                   st.integers(1, 40), st.integers(0, 31), st.booleans()), min_size=1, max_size=12))


@st.composite
def fault_cases(draw: st.DrawFn) -> AhciCase:
    return AhciCase("faults", 512 * PAGE, draw(st.sampled_from([16 << 20, (16 << 20) + 513, 1 << 20])),
                    read_only=draw(st.integers(0, 5)) == 0, steps=[("io", *s) for s in draw(fault_steps())],
                    data_seed=draw(seeds))


def cases() -> st.SearchStrategy[AhciCase]:
    return st.one_of(chaos_cases(), fault_cases())


# --- running a case ----------------------------------------------------------------------------------------


def check_ahci(case: AhciCase, workdir: Path) -> str:
    host = Host(case, workdir)
    bring_up = host.boot if case.boot or case.mode == "faults" else lambda: None
    run = _run_chaos if case.mode == "chaos" else _run_faults
    return run_case(host, case.mode, bring_up, lambda: run(host, case), host.final_recovery)


def _run_chaos(host: Host, case: AhciCase) -> str:
    for host.step, step in enumerate(case.steps):
        kind = step[0]
        if kind == "cmd":
            _, slot, fis, prds, write, cfl, ctba, prdtl, reset, issue = step
            host.command(slot, fis, prds, write=write, cfl=cfl, ctba=ctba, prdtl=prdtl, reset=reset,
                         clb=host.hba.port.cmd_list)
            if issue == "ncq":
                host.w(P + L.PxSACT, 1 << slot)
            if issue != "none":
                host.w(P + L.PxCI, 1 << slot)
        elif kind == "service":
            host.service(step[1])
        elif kind == "ack":
            host.ack()
        elif kind == "mmio":
            host.w(step[1], step[3], step[2])
        elif kind == "read":
            host.r(step[1], step[2])
        elif kind == "poke":
            host.poke(step[1], step[2])
        elif kind == "recover":  # without waiting for CR: the port may be in any state here
            host.w(P + L.PxCMD, host.r(P + L.PxCMD) & ~L.PxCMD_ST)
            host.clear_errors()
            host.w(P + L.PxCMD, host.r(P + L.PxCMD) | L.PxCMD_ST)
        else:
            _chaos_reset(host, step[1])
        host.check()
    host.service()
    tfd = host.r(P + L.PxTFD)
    return "halted" if host.hba._halted else "error" if tfd & ata.ATA_ERR else "ok"


def _chaos_reset(host: Host, how: str) -> None:
    if how == "hba":
        host.w(L.GHC, L.GHC_HR)
    elif how in ("comreset", "offline"):
        sctl = host.r(P + L.PxSCTL)
        host.w(P + L.PxSCTL, (sctl & ~0xF) | (1 if how == "comreset" else 4))
        host.w(P + L.PxSCTL, sctl & ~0xF)
    else:  # a software reset: SRST set, then cleared, in two device-control FISes
        clb = host.hba.port.cmd_list
        host.command(0, h2d(0, control=CONTROL_SRST, c=False), [], reset=True, clb=clb)
        host.w(P + L.PxCI, 1)
        host.service()
        host.command(1, h2d(0, c=False), [], clb=clb)
        host.w(P + L.PxCI, 2)


# --- faults mode -------------------------------------------------------------------------------------------

READS = ("read_ext", "read28", "ncq_read")
WRITES = ("write_ext", "write28", "ncq_write")


def _run_faults(host: Host, case: AhciCase) -> str:
    outcomes = []
    for host.step, step in enumerate(case.steps):
        outcomes.append(_one_fault(host, *step[1:]))
        host.check()
    return "ok" if all(o == "ok" for o in outcomes) else "errors"


def _one_fault(host: Host, fault: str, op: str, lba: int, nsect: int, slot: int, fua: bool) -> str:
    """One command with at most one fault: the outcome must be the one the rules give."""
    sectors = host.sectors
    writes, moves = op in (*WRITES, "dsm"), op in (*READS, *WRITES)
    nsect = min(nsect, 256 if op.endswith("28") else 56 * 8, sectors)  # 56 PRDs of 4 KiB fit a command table
    lba %= sectors - nsect + 1
    # The fault this command really carries: some do not apply to every command, and a read-only
    # medium refuses a write after the LBA check but before any PRD is looked at.
    if fault in ("prdt_short", "prd_past_ram", "lba") and not moves or fault == "dsm_zero" and op != "dsm" \
            or fault == "tag_reuse" and not op.startswith("ncq") or fault == "read_only" and not host.case.read_only:
        fault = "none"
    if writes and host.case.read_only and fault not in ("opcode", "ctba_past_ram", "lba", "clb_past_ram",
                                                         "fb_past_ram"):
        fault = "read_only"
    if not writes and fault == "read_only":
        fault = "none"
    ncq = op.startswith("ncq") and fault != "opcode"
    if fault == "lba":
        lba = sectors - nsect + 1 + lba % 5
    nbytes = nsect * SECTOR
    data = host.rng.randbytes(nbytes) if op in WRITES else b""
    prds = [(DATA + i * PAGE, min(PAGE, nbytes - i * PAGE), False) for i in range(-(-nbytes // PAGE))]
    count, features, device, command = nsect, 0, 0x40 | (0x80 if fua else 0), 0
    fis_lba = lba
    if op in ("read_ext", "write_ext"):
        command = ata.ATA_CMD_READ_EXT if op == "read_ext" else ata.ATA_CMD_WRITE_EXT
    elif op in ("read28", "write28"):
        command = ata.ATA_CMD_READ if op == "read28" else ata.ATA_CMD_WRITE
        device, count, fis_lba = 0x40 | (lba >> 24 & 0xF), nsect & 0xFF, lba & 0xFFFFFF
    elif op.startswith("ncq"):
        command = ata.ATA_CMD_FPDMA_READ if op == "ncq_read" else ata.ATA_CMD_FPDMA_WRITE
        count, features = slot << 3, nsect
    elif op == "dsm":
        command, features, count = ata.ATA_CMD_DSM, ata.DSM_TRIM, 0 if fault == "dsm_zero" else 1
        nbytes, prds = SECTOR, [(DATA, SECTOR, False)]
        data = struct.pack("<Q", lba | nsect << 48).ljust(SECTOR, b"\0")
    elif op == "flush":
        command = ata.ATA_CMD_FLUSH_EXT
    elif op == "identify":
        command, nbytes, prds = ata.ATA_CMD_ID_ATA, SECTOR, [(DATA, SECTOR, False)]
    elif op == "log":
        command, fis_lba, count = ata.ATA_CMD_READ_LOG_EXT, ata.LOG_NCQ_ERROR, 1
        nbytes, prds = SECTOR, [(DATA, SECTOR, False)]
    elif op == "setfeatures":
        command, features = ata.ATA_CMD_SET_FEATURES, [ata.SETFEATURES_WC_ON, ata.SETFEATURES_WC_OFF][slot & 1]
    else:
        command, count = ata.ATA_CMD_CHK_POWER, 0
    if fault == "opcode":
        command = 0xF9  # not in the disk's command table
    ctba = None
    if fault == "prdt_short":
        prds = prds[:-1] if len(prds) > 1 else [(DATA, max(nbytes - 2, 1), False)]
    elif fault == "ctba_past_ram":
        ctba = host.ram.size + PAGE
    elif fault == "prd_past_ram":
        prds[-1] = (host.ram.size - 64, prds[-1][1], False)
    for i, (dba, n, _) in enumerate(prds):
        host.poke(dba, data[i * PAGE:i * PAGE + n] if op in (*WRITES, "dsm") else b"\xee" * n)
    fis = h2d(command, lba=fis_lba, count=count, features=features, device=device)
    expect = _expected(fault)
    before = host.sectors_of_image(lba, nsect) if op in READS and expect == "ok" else b""
    host.command(slot, fis, prds, write=op in (*WRITES, "dsm"), ctba=ctba)
    issued = 1 << slot
    if fault == "tag_reuse":  # a second slot with the same tag, issued together: the disk sees the tag twice
        other = (slot + 1) % L.NR_SLOTS
        host.command(other, fis, prds, write=op in WRITES, ctba=CT_BASE + other * CT_STRIDE)
        issued |= 1 << other
    if fault in ("clb_past_ram", "fb_past_ram"):  # the port's own structures out of reach (ahci_start_fis_rx)
        host.stop_engine()
        host.w(P + L.PxCMD, host.r(P + L.PxCMD) & ~L.PxCMD_FRE)
        host.w(P + (L.PxCLB if fault == "clb_past_ram" else L.PxFB), host.ram.size & 0xFFFFFC00)
        host.w(P + L.PxCMD, host.r(P + L.PxCMD) | L.PxCMD_FRE)
        host.start_engine()
    host.irqs.clear()
    if ncq:
        host.w(P + L.PxSACT, 1 << slot)
    host.w(P + L.PxCI, issued)
    host.service()
    pxis, tfd = host.r(P + L.PxIS), host.r(P + L.PxTFD)
    ci, sact = host.r(P + L.PxCI), host.r(P + L.PxSACT)
    where = f"{op} with fault {fault} (lba {lba}, {nsect} sectors, slot {slot}): PxIS {pxis:#x}, PxTFD {tfd:#x}"
    enabled = pxis & DEF_PORT_IRQ  # OFS is not in Linux's DEF_PORT_IRQ: an overflow alone raises nothing
    assert host.irqs == ([0] if enabled else []), f"{where}: interrupts {host.irqs}"
    if expect in ("OFS", "HBFS", "HBDS"):
        bit = {"OFS": L.PxIS_OFS, "HBFS": L.PxIS_HBFS, "HBDS": L.PxIS_HBDS}[expect]
        assert pxis & bit and not pxis & L.PxIS_TFES, f"{where}: the rules say {expect}"
        assert not host.hba.has_work, f"{where}: the port goes on after a fatal error"
        if not ncq or fault in ("ctba_past_ram", "clb_past_ram"):
            assert ci & 1 << slot, f"{where}: the failed command's PxCI bit was cleared"
        host.boot() if fault in ("clb_past_ram", "fb_past_ram") else host.recover()
        return "fatal"
    if expect != "ok":
        error = {"IDNF": ata.ATA_IDNF | ata.ATA_ABRT, "ABRT": ata.ATA_ABRT}[expect]
        assert pxis & L.PxIS_TFES and tfd & ata.ATA_ERR and tfd >> 8 == error, f"{where}: the rules say {expect}"
        if ncq:
            assert pxis & L.PxIS_SDBS and sact & 1 << slot, f"{where}: an NCQ error comes in an SDB FIS"
            host.recover()
            log = _read_log_10h(host)
            assert log[0] & 0x1F == slot and not log[0] & 0x80, f"{where}: log 10h names tag {log[0] & 0x1F}"
        else:
            assert ci & 1 << slot, f"{where}: the failed command's PxCI bit was cleared"
            host.recover()
        return "error"
    assert not pxis & (L.PxIS_TFES | L.PxIS_OFS | L.PxIS_HBFS | L.PxIS_HBDS) and not tfd & ata.ATA_ERR, \
        f"{where}: the command should have succeeded"
    assert not ci & 1 << slot and not sact & 1 << slot, f"{where}: the command is still outstanding"
    completion = L.PxIS_SDBS if ncq else L.PxIS_PSS if op in ("identify", "log") else L.PxIS_DHRS
    assert pxis & completion, f"{where}: no completion FIS"
    if op in READS:
        got = b"".join(host.peek(dba, n) for dba, n, _ in prds)
        assert got == before, f"{where}: wrong bytes read"
    if op in WRITES:
        assert host.sectors_of_image(lba, nsect) == data, f"{where}: wrong bytes written"
    if op == "dsm":
        assert host.sectors_of_image(lba, nsect) == bytes(nbytes * 0 + nsect * SECTOR), f"{where}: TRIM left data"
    if op == "identify":
        assert ata.IdentifyDevice.parse(host.peek(DATA, SECTOR)).lba48_capacity == sectors, f"{where}: capacity"
    if moves:
        assert host.prdbc(slot) == nbytes, f"{where}: PRDBC {host.prdbc(slot)} for {nbytes} bytes"
    host.ack()
    return "ok"


def _expected(fault: str) -> str:
    """The outcome the model's rules (storage.md §1.5) give a command carrying `fault`."""
    return {"none": "ok", "lba": "IDNF", "opcode": "ABRT", "read_only": "ABRT", "dsm_zero": "ABRT",
            "tag_reuse": "ABRT", "prdt_short": "OFS", "ctba_past_ram": "HBFS", "prd_past_ram": "HBDS",
            "clb_past_ram": "HBFS", "fb_past_ram": "HBFS"}[fault]


def _read_log_10h(host: Host) -> bytes:
    host.poke(DATA, b"\xee" * SECTOR)
    pxis = host.run_clean(0, h2d(ata.ATA_CMD_READ_LOG_EXT, lba=ata.LOG_NCQ_ERROR, count=1), [(DATA, SECTOR, False)])
    assert pxis & L.PxIS_PSS and not pxis & L.PxIS_TFES, f"READ LOG EXT 10h: PxIS {pxis:#x}"
    return host.peek(DATA, SECTOR)
