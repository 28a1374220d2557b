"""The AHCI HBA model, driven through its registers the way Linux's libahci drives a real HBA.

`Host` below is the test's driver: ahci_reset_controller, ahci_port_init, ahci_start_fis_rx,
a COMRESET (sata_link_hardreset), ahci_start_engine, ahci_dev_classify, then command headers,
command tables and PRDTs built in RAM with the construct layouts and issued through PxCI
(PxSACT first for NCQ). Each test checks what a driver would see: FISes in the received-FIS
area, PxIS, PxTFD, PxCI/PxSACT, the bytes in RAM and in the image, and the interrupts raised.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from construct import Container
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rinuxfs.hw import ahci_layouts as L
from rinuxfs.hw import ata
from rinuxfs.hw.ahci import GLOBAL_REGISTERS, PORT_REGISTERS, AhciHba
from rinuxfs.hw.image import DiskImage
from rinuxfs.hw.ram import PhysicalMemory

RAM_SIZE = 64 << 20
IMAGE_SECTORS = 32768  # 16 MiB
SECTOR = 512
CLB = 0x10000
FB = 0x10400
CT_BASE = 0x20000
CT_STRIDE = 0x2000  # room for 504 PRDs per command table
DATA = 0x100000  # data buffers from 1 MiB up
DEF_PORT_IRQ = 0x78C0007F  # Linux ahci.h: PORT_IRQ_ERROR | SG_DONE | SDB_FIS | DMAS_FIS | PIOS_FIS | D2H_REG_FIS

P = L.PORT_BASE


class SpyImage(DiskImage):
    """The real image, with a record of the calls the model makes on it."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        super().__init__(path, read_only)
        self.calls: list[tuple[Any, ...]] = []

    def read_into(self, offset: int, buffers: list[memoryview]) -> None:
        self.calls.append(("read_into", offset, [len(b) for b in buffers]))
        super().read_into(offset, buffers)

    def write_from(self, offset: int, buffers: list[memoryview]) -> None:
        self.calls.append(("write_from", offset, [len(b) for b in buffers]))
        super().write_from(offset, buffers)

    def discard(self, offset: int, length: int) -> None:
        self.calls.append(("discard", offset, length))
        super().discard(offset, length)

    def flush(self) -> None:
        self.calls.append(("flush",))
        super().flush()

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]


def h2d(command: int, *, lba: int = 0, count: int = 0, features: int = 0, device: int = 0x40, control: int = 0,
        c: bool = True) -> bytes:
    """A Register H2D FIS built from the FisRegH2D layout."""
    return bytes(L.FisRegH2D.build(dict(
        fis_type=L.FIS_TYPE_REG_H2D, flags=dict(c=c, pm_port=0), command=command, features=features & 0xFF,
        lba0=lba & 0xFF, lba1=(lba >> 8) & 0xFF, lba2=(lba >> 16) & 0xFF, device=device,
        lba3=(lba >> 24) & 0xFF, lba4=(lba >> 32) & 0xFF, lba5=(lba >> 40) & 0xFF, features_exp=(features >> 8) & 0xFF,
        count=count & 0xFF, count_exp=(count >> 8) & 0xFF, icc=0, control=control)))


def ncq_fis(write: bool, tag: int, lba: int, nsect: int) -> bytes:
    """READ/WRITE FPDMA QUEUED as libata's ata_build_rw_tf makes it: count in features, tag << 3 in count."""
    return h2d(ata.ATA_CMD_FPDMA_WRITE if write else ata.ATA_CMD_FPDMA_READ, lba=lba, count=tag << 3, features=nsect)


@dataclass
class Host:
    """A minimal libahci: register sequences, command building, and the interrupt log."""

    ram: PhysicalMemory
    hba: AhciHba
    medium: SpyImage
    irqs: list[int] = field(default_factory=list)

    # registers
    def r(self, offset: int) -> int:
        return self.hba.mmio_read(offset, 4)

    def w(self, offset: int, value: int) -> None:
        self.hba.mmio_write(offset, 4, value)

    def poll(self, offset: int, mask: int, want: int, tries: int = 3) -> None:
        for _ in range(tries):
            if self.r(offset) & mask == want:
                return
        raise AssertionError(f"register {offset:#x} & {mask:#x} never became {want:#x}: {self.r(offset):#x}")

    # libahci sequences
    def reset_controller(self) -> None:  # ahci_reset_controller
        self.w(L.GHC, self.r(L.GHC) | L.GHC_AE)
        self.w(L.GHC, self.r(L.GHC) | L.GHC_HR)
        self.poll(L.GHC, L.GHC_HR, 0)
        self.w(L.GHC, self.r(L.GHC) | L.GHC_AE)

    def port_init(self) -> None:  # ahci_port_init: deinit, clear SError, clear port and host IRQ status
        self.stop_engine()
        self.w(P + L.PxCMD, self.r(P + L.PxCMD) & ~L.PxCMD_FRE)
        self.poll(P + L.PxCMD, L.PxCMD_FR, 0)
        self.w(P + L.PxSERR, self.r(P + L.PxSERR))
        self.w(P + L.PxIS, self.r(P + L.PxIS))
        self.w(L.IS, 1)

    def start_fis_rx(self) -> None:  # ahci_start_fis_rx
        self.w(P + L.PxCLBU, 0)
        self.w(P + L.PxCLB, CLB)
        self.w(P + L.PxFBU, 0)
        self.w(P + L.PxFB, FB)
        self.w(P + L.PxCMD, self.r(P + L.PxCMD) | L.PxCMD_FRE)
        self.poll(P + L.PxCMD, L.PxCMD_FR, L.PxCMD_FR)

    def start_engine(self) -> None:  # ahci_start_engine
        self.w(P + L.PxCMD, self.r(P + L.PxCMD) | L.PxCMD_ST)
        self.poll(P + L.PxCMD, L.PxCMD_CR, L.PxCMD_CR)

    def stop_engine(self) -> None:  # ahci_stop_engine
        self.w(P + L.PxCMD, self.r(P + L.PxCMD) & ~L.PxCMD_ST)
        self.poll(P + L.PxCMD, L.PxCMD_CR, 0)

    def hardreset(self) -> None:  # sata_link_hardreset with the engine stopped, as ahci_do_hardreset does
        self.stop_engine()
        self.w(P + L.PxSCTL, 0x301)
        assert self.r(P + L.PxSSTS) & 0xF == 0
        self.w(P + L.PxSCTL, 0x300)
        assert self.r(P + L.PxSSTS) == 0x113
        self.w(P + L.PxSERR, self.r(P + L.PxSERR))  # ata_std_postreset
        self.start_engine()
        self.poll(P + L.PxTFD, ata.ATA_BSY | ata.ATA_DRQ, 0)

    def classify(self) -> str:  # ahci_dev_classify
        return {L.SIG_ATA: "ata", 0xEB140101: "atapi"}.get(self.r(P + L.PxSIG), "unknown")

    def boot(self) -> None:
        self.reset_controller()
        self.port_init()
        self.w(L.GHC, self.r(L.GHC) | L.GHC_IE)
        self.start_fis_rx()
        self.hardreset()
        assert self.classify() == "ata"
        self.w(P + L.PxIS, self.r(P + L.PxIS))
        self.w(P + L.PxIE, DEF_PORT_IRQ)
        self.w(L.IS, 1)

    def recover(self) -> None:
        """Error recovery after a fatal or task-file error (AHCI §6.2.2, ahci_kick_engine)."""
        self.stop_engine()
        self.w(P + L.PxSERR, self.r(P + L.PxSERR))
        self.w(P + L.PxIS, self.r(P + L.PxIS))
        self.w(L.IS, 1)
        self.start_engine()

    # commands
    def command(self, slot: int, fis: bytes, prds: Sequence[tuple[int, int] | tuple[int, int, bool]] = (), *,
                write: bool = False, cfl: int = 5, ctba: int | None = None, reset: bool = False) -> None:
        ctba = CT_BASE + slot * CT_STRIDE if ctba is None else ctba
        header = L.CommandHeader.build(dict(
            flags=dict(pmp=0, c=reset, b=False, r=reset, p=False, w=write, a=False, cfl=cfl),
            prdtl=len(prds), prdbc=0xDEAD, ctba=ctba))
        self.ram.view[CLB + slot * 32 : CLB + slot * 32 + 32] = header
        if ctba + 0x80 + 16 * len(prds) > RAM_SIZE:
            return
        self.ram.view[ctba : ctba + 64] = fis.ljust(64, b"\0")
        table = b"".join(
            L.PrdEntry.build(dict(dba=prd[0], dw3=dict(i=len(prd) > 2 and bool(prd[2]), dbc=prd[1] - 1)))
            for prd in prds)
        self.ram.view[ctba + 0x80 : ctba + 0x80 + len(table)] = table

    def issue(self, *slots: int) -> None:
        self.w(P + L.PxCI, sum(1 << s for s in slots))

    def issue_ncq(self, *tags: int) -> None:  # ahci_qc_issue: PxSACT first, then PxCI
        mask = sum(1 << t for t in tags)
        self.w(P + L.PxSACT, mask)
        self.w(P + L.PxCI, mask)

    def run(self, slot: int, fis: bytes, prds: Sequence[tuple[int, int]] = (), *, write: bool = False) -> int:
        self.command(slot, fis, prds, write=write)
        self.issue(slot)
        return self.hba.service()

    # received FIS area
    def rx(self) -> Container:
        return L.ReceivedFis.parse(bytes(self.ram.view[FB : FB + 256]))

    def d2h(self) -> Container:
        return L.FisRegD2H.parse(self.rx().rfis)

    def prdbc(self, slot: int) -> int:
        return int(L.CommandHeader.parse(bytes(self.ram.view[CLB + slot * 32 : CLB + slot * 32 + 32])).prdbc)

    def ack(self) -> int:
        """The interrupt handler's part: read and clear PxIS, then IS."""
        status = self.r(P + L.PxIS)
        self.w(P + L.PxIS, status)
        self.w(L.IS, 1)
        return status

    def put(self, addr: int, data: bytes) -> None:
        self.ram.view[addr : addr + len(data)] = data

    def get(self, addr: int, n: int) -> bytes:
        return bytes(self.ram.view[addr : addr + n])


def make_image(path: Path, sectors: int = IMAGE_SECTORS) -> bytes:
    data = os.urandom(sectors * SECTOR)
    path.write_bytes(data)
    return data


def image_bytes(medium: DiskImage, lba: int, nsect: int) -> bytes:
    return os.pread(medium.fd, nsect * SECTOR, lba * SECTOR)


def pages(addr: int, nbytes: int, step: int = 4096) -> list[tuple[int, int]]:
    """PRDs of whole 4 KiB pages, `step` apart (step > 4096 leaves holes, like scattered page-cache frames)."""
    return [(addr + i * step, min(4096, nbytes - i * 4096)) for i in range((nbytes + 4095) // 4096)]


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Host]:
    path = tmp_path / "sda.img"
    make_image(path)
    ram = PhysicalMemory(RAM_SIZE)
    medium = SpyImage(path)
    irqs: list[int] = []
    hba = AhciHba(ram, medium, raise_irq=irqs.append)
    yield Host(ram, hba, medium, irqs)
    medium.close()
    ram.close()


@pytest.fixture
def host(machine: Host) -> Host:
    machine.boot()
    machine.irqs.clear()
    machine.medium.calls.clear()
    return machine


# ---------------------------------------------------------------------------------------------
# Layouts: the struct twins used on the hot path agree with the construct declarations


def test_layout_sizes_and_offsets() -> None:
    assert L.CommandHeader.sizeof() == 32
    assert L.PrdEntry.sizeof() == L.PRD_ENTRY.size == 16
    assert L.CommandTable.sizeof() == L.CT_PRDT_OFFSET
    assert L.FisRegH2D.sizeof() == L.FIS_REG_H2D.size == 20
    assert L.FisRegD2H.sizeof() == L.FIS_REG_D2H.size == 20
    assert L.FisPioSetup.sizeof() == L.FIS_PIO_SETUP.size == 20
    assert L.FisSetDeviceBits.sizeof() == L.FIS_SDB.size == 8
    assert L.ReceivedFis.sizeof() == L.RX_FIS_SIZE
    assert ata.IdentifyDevice.sizeof() == ata.NcqErrorLog.sizeof() == ata.GpLogDirectory.sizeof() == 512
    rx = L.ReceivedFis.build(dict(dsfis=b"\1" * 28, psfis=b"\2" * 20, rfis=b"\3" * 20, sdbfis=b"\4" * 8,
                                  ufis=b"\5" * 64))
    assert rx[L.RX_FIS_PIO_SETUP] == 2 and rx[L.RX_FIS_D2H] == 3 and rx[L.RX_FIS_SDB] == 4 and rx[0x60] == 5


@settings(max_examples=40, deadline=None)
@given(cfl=st.integers(0, 31), w=st.booleans(), c=st.booleans(), prdtl=st.integers(0, 0xFFFF),
       prdbc=st.integers(0, 0xFFFFFFFF), ctba=st.integers(0, 2**57 - 1).map(lambda x: x << 7),
       dba=st.integers(0, 2**63 - 1).map(lambda x: x << 1), dbc=st.integers(0, L.PRD_DBC_MASK), i=st.booleans(),
       lba=st.integers(0, 2**48 - 1), length=st.integers(0, 0xFFFF))
def test_struct_twins_match_construct(cfl: int, w: bool, c: bool, prdtl: int, prdbc: int, ctba: int, dba: int,
                                      dbc: int, i: bool, lba: int, length: int) -> None:
    header = L.CommandHeader.build(dict(flags=dict(pmp=0, c=c, b=False, r=False, p=False, w=w, a=False, cfl=cfl),
                                        prdtl=prdtl, prdbc=prdbc, ctba=ctba))
    flags, got_prdtl, got_prdbc, got_ctba = L.COMMAND_HEADER.unpack_from(header)
    assert flags == cfl | (L.CMDH_W if w else 0) | (L.CMDH_C if c else 0)
    assert (got_prdtl, got_prdbc, got_ctba) == (prdtl, prdbc, ctba)
    prd = L.PrdEntry.build(dict(dba=dba, dw3=dict(i=i, dbc=dbc)))
    assert L.PRD_ENTRY.unpack(prd) == (dba, dbc | (L.PRD_I if i else 0))
    entry = L.DsmRange.build(dict(lba=lba, length=length))
    assert L.DSM_RANGE.unpack(entry) == (lba | (length << 48),)
    fis = h2d(0x25, lba=lba, count=length, features=prdtl, device=0x40)
    fields = L.FIS_REG_H2D.unpack(fis)
    assert fields[0] == 0x27 and fields[1] == L.H2D_C and fields[2] == 0x25
    assert int.from_bytes(fields[4] + fields[6], "little") == lba
    assert fields[3] | fields[7] << 8 == prdtl and fields[8] | fields[9] << 8 == length


def test_fis_twins_match_construct() -> None:
    lba = 0x0A0B0C0D0E0F
    d2h = bytearray(20)
    L.FIS_REG_D2H.pack_into(d2h, 0, 0x34, L.FIS_I, 0x51, 0x14, lba.to_bytes(6, "little")[:3], 0x40,
                            lba.to_bytes(6, "little")[3:], 0x34, 0x12)
    assert bytes(d2h) == L.FisRegD2H.build(dict(fis_type=0x34, flags=dict(i=True, pm_port=0), status=0x51, error=0x14,
                                                lba0=0x0F, lba1=0x0E, lba2=0x0D, device=0x40, lba3=0x0C, lba4=0x0B,
                                                lba5=0x0A, count=0x34, count_exp=0x12))
    pio = bytearray(20)
    L.FIS_PIO_SETUP.pack_into(pio, 0, 0x5F, L.FIS_I | L.PIO_D_TO_HOST, 0x58, 0, b"\0\0\0", 0x40, b"\0\0\0", 0, 0,
                              0x50, 512)
    assert bytes(pio) == L.FisPioSetup.build(dict(fis_type=0x5F, flags=dict(i=True, d=True, pm_port=0), status=0x58,
                                                  error=0, lba0=0, lba1=0, lba2=0, device=0x40, lba3=0, lba4=0, lba5=0,
                                                  count=0, count_exp=0, e_status=0x50, transfer_count=512))
    sdb = L.FIS_SDB.pack(0xA1, L.FIS_I, 0x50, 0, 0x80000001)
    assert sdb == L.FisSetDeviceBits.build(dict(fis_type=0xA1, flags=dict(n=False, i=True, pm_port=0), status=0x50,
                                                error=0, sactive=0x80000001))


# ---------------------------------------------------------------------------------------------
# Registers: the generic host and port tables


def test_generic_host_registers(machine: Host) -> None:
    cap = machine.r(L.CAP)
    assert cap & 0x1F == 0  # NP: one port
    assert (cap >> 8) & 0x1F == 31  # NCS: 32 slots
    assert cap & L.CAP_SNCQ and cap & L.CAP_SAM and cap & L.CAP_S64A
    assert (cap >> 20) & 0xF == 3  # ISS Gen3
    assert machine.r(L.PI) == 1
    assert machine.r(L.VS) == 0x00010301
    assert machine.r(L.CAP2) == 0
    assert machine.r(L.GHC) == L.GHC_AE
    machine.w(L.CAP, 0)
    machine.w(L.VS, 0)
    assert machine.r(L.CAP) == cap and machine.r(L.VS) == 0x00010301
    assert (L.CAP, "CAP is read-only") in machine.hba.rejected
    machine.w(L.GHC, 0)  # AE cannot be cleared when CAP.SAM = 1
    assert machine.r(L.GHC) == L.GHC_AE
    machine.w(L.GHC, L.GHC_IE)
    assert machine.r(L.GHC) == L.GHC_AE | L.GHC_IE
    assert machine.hba.mmio_read(L.CAP + 1, 1) == (cap >> 8) & 0xFF
    assert machine.hba.mmio_read(L.VS + 2, 2) == 0x0001
    assert machine.hba.mmio_read(0x2C, 4) == 0  # reserved
    assert machine.hba.mmio_read(L.CAP + 1, 4) == 0  # unaligned: ignored
    machine.hba.mmio_write(L.GHC, 2, L.GHC_HR)  # writes must be 4 bytes
    assert machine.r(L.GHC) == L.GHC_AE | L.GHC_IE
    assert any("2-byte write" in reason for _, reason in machine.hba.rejected)
    assert set(GLOBAL_REGISTERS) >= {L.CAP, L.GHC, L.IS, L.PI, L.VS, L.CAP2}
    assert set(PORT_REGISTERS) >= {L.PxCLB, L.PxIS, L.PxCMD, L.PxTFD, L.PxSACT, L.PxCI}


def test_init_sequence_like_libahci(machine: Host) -> None:
    h = machine
    assert h.r(P + L.PxSIG) == 0xFFFFFFFF  # no signature before FIS receive is on
    assert h.r(P + L.PxTFD) == 0x7F
    assert h.r(P + L.PxCMD) & (L.PxCMD_SUD | L.PxCMD_POD) == L.PxCMD_SUD | L.PxCMD_POD
    h.reset_controller()
    assert h.r(L.GHC) == L.GHC_AE
    assert h.r(P + L.PxSERR) & (L.SERR_DIAG_N | L.SERR_DIAG_X)  # the link came up after the reset
    assert h.r(P + L.PxIS) & (L.PxIS_PCS | L.PxIS_PRCS)
    h.port_init()
    assert h.r(P + L.PxSERR) == 0 and h.r(P + L.PxIS) == 0
    h.w(P + L.PxCLB, CLB | 0x3FF)  # 1 KiB aligned: bits 9:0 are reserved
    h.w(P + L.PxFB, FB | 0xFF)
    assert h.r(P + L.PxCLB) == CLB and h.r(P + L.PxFB) == FB
    h.start_fis_rx()
    assert h.r(P + L.PxSIG) == L.SIG_ATA
    assert h.r(P + L.PxTFD) == 0x0150  # DRDY | DSC, error 01h "diagnostics passed"
    assert h.r(P + L.PxSSTS) == 0x113
    d2h = h.d2h()
    assert d2h.fis_type == L.FIS_TYPE_REG_D2H and d2h.status == 0x50 and d2h.lba0 == 1 and d2h.count == 1
    assert h.r(P + L.PxIS) & L.PxIS_DHRS == 0  # the signature FIS has I = 0
    h.start_engine()
    assert h.r(P + L.PxCMD) & (L.PxCMD_ST | L.PxCMD_CR | L.PxCMD_FRE | L.PxCMD_FR) == 0xC011
    assert h.classify() == "ata"
    assert h.irqs == []


def test_handshake_rules_and_locks(machine: Host) -> None:
    h = machine
    h.reset_controller()
    h.port_init()
    h.w(P + L.PxCMD, h.r(P + L.PxCMD) | L.PxCMD_ST)  # ST before FRE: refused
    assert h.r(P + L.PxCMD) & (L.PxCMD_ST | L.PxCMD_CR) == 0
    h.start_fis_rx()
    h.start_engine()
    h.w(P + L.PxCLB, 0x40000)  # locked while the engine runs
    h.w(P + L.PxFB, 0x40000)
    assert h.r(P + L.PxCLB) == CLB and h.r(P + L.PxFB) == FB
    h.w(P + L.PxCMD, h.r(P + L.PxCMD) & ~L.PxCMD_FRE)  # FRE cannot drop while ST = 1
    assert h.r(P + L.PxCMD) & L.PxCMD_FR
    h.w(P + L.PxCMD, h.r(P + L.PxCMD) | L.PxCMD_CR | L.PxCMD_CCS_MASK | (0xF << 28))  # read-only bits and ICC
    assert h.r(P + L.PxCMD) & (L.PxCMD_CCS_MASK | (0xF << 28)) == 0
    h.w(P + L.PxCMD, h.r(P + L.PxCMD) & ~(L.PxCMD_ST | L.PxCMD_FRE))  # both in one write: ST first, then FRE
    assert h.r(P + L.PxCMD) & (L.PxCMD_ST | L.PxCMD_CR | L.PxCMD_FRE | L.PxCMD_FR) == 0
    h.w(P + L.PxCLB, 0x40000)
    assert h.r(P + L.PxCLB) == 0x40000
    reasons = [reason for _, reason in h.hba.rejected]
    assert "ST set while FR = 0" in reasons and "FRE cleared while ST = 1" in reasons
    assert any(r.startswith("PxCLB written") for r in reasons)


def test_rwc_rw1s_and_mirrored_bits(host: Host) -> None:
    h = host
    h.run(0, h2d(ata.ATA_CMD_FLUSH_EXT))
    assert h.r(P + L.PxIS) == L.PxIS_DHRS
    assert h.r(L.IS) == 1
    h.w(P + L.PxIS, 0)  # writing 0 changes nothing
    h.w(P + L.PxIS, L.PxIS_SDBS)
    assert h.r(P + L.PxIS) == L.PxIS_DHRS
    h.w(L.IS, 1)  # still pending and enabled on the port: IS.IPS stays set
    assert h.r(L.IS) == 1
    h.w(P + L.PxIS, L.PxIS_DHRS)
    assert h.r(P + L.PxIS) == 0
    h.w(L.IS, 1)
    assert h.r(L.IS) == 0
    h.stop_engine()
    h.w(P + L.PxSCTL, 0x301)
    h.w(P + L.PxSCTL, 0x300)
    assert h.r(P + L.PxIS) & (L.PxIS_PCS | L.PxIS_PRCS) == L.PxIS_PCS | L.PxIS_PRCS
    h.w(P + L.PxIS, L.PxIS_PCS | L.PxIS_PRCS)  # mirrors of PxSERR: clearing PxIS does not clear them
    assert h.r(P + L.PxIS) & (L.PxIS_PCS | L.PxIS_PRCS) == L.PxIS_PCS | L.PxIS_PRCS
    h.w(P + L.PxSERR, L.SERR_DIAG_X)
    assert h.r(P + L.PxIS) & (L.PxIS_PCS | L.PxIS_PRCS) == L.PxIS_PRCS
    h.w(P + L.PxSERR, 0xFFFFFFFF)
    assert h.r(P + L.PxSERR) == 0 and h.r(P + L.PxIS) & L.PxIS_PRCS == 0
    h.w(P + L.PxSACT, 0b0101)  # write-1-to-set
    h.w(P + L.PxSACT, 0b0010)
    h.w(P + L.PxSACT, 0)
    assert h.r(P + L.PxSACT) == 0b0111
    h.w(P + L.PxCI, 1 << 5)  # OR on write; not processed while ST = 0
    h.w(P + L.PxCI, 1 << 6)
    assert h.r(P + L.PxCI) == 0b1100000
    assert not h.hba.has_work and h.hba.service() == 0
    h.start_engine()  # ST 1 → 0 cleared them; starting again does not resurrect them
    h.stop_engine()
    assert h.r(P + L.PxCI) == 0 and h.r(P + L.PxSACT) == 0


def test_interrupt_gating(host: Host) -> None:
    h = host
    h.w(L.GHC, L.GHC_AE)  # GHC.IE off: PxIS and IS still latch, nothing is raised
    h.run(0, h2d(ata.ATA_CMD_FLUSH_EXT))
    assert h.irqs == [] and h.r(P + L.PxIS) == L.PxIS_DHRS and h.r(L.IS) == 1
    h.w(L.GHC, L.GHC_AE | L.GHC_IE)  # enabling with a pending interrupt raises it
    assert h.irqs == [0]
    h.ack()
    h.w(P + L.PxIE, DEF_PORT_IRQ & ~L.PxIS_DHRS)  # the port masks D2H completions
    h.run(0, h2d(ata.ATA_CMD_FLUSH_EXT))
    assert h.irqs == [0] and h.r(L.IS) == 0 and h.r(P + L.PxIS) == L.PxIS_DHRS
    h.w(P + L.PxIE, DEF_PORT_IRQ)  # unmasking a pending bit raises it
    assert h.irqs == [0, 0] and h.r(L.IS) == 1


# ---------------------------------------------------------------------------------------------
# Commands


def test_identify_device(host: Host) -> None:
    h = host
    assert h.run(3, h2d(ata.ATA_CMD_ID_ATA), [(DATA, 512)]) == 1
    pio = L.FisPioSetup.parse(h.rx().psfis)
    assert pio.fis_type == L.FIS_TYPE_PIO_SETUP and pio.flags.i and pio.flags.d
    assert pio.e_status == 0x50 and pio.transfer_count == 512
    assert h.r(P + L.PxTFD) == 0x50
    assert h.r(P + L.PxIS) == L.PxIS_PSS and h.irqs == [0]
    assert h.r(P + L.PxCI) == 0 and h.prdbc(3) == 512
    page = h.get(DATA, 512)
    assert sum(page) % 256 == 0 and page[510] == 0xA5
    ident = ata.IdentifyDevice.parse(page)
    assert ident.serial_number == "RNX0001" and ident.model_number == "rinuxfs SATA disk"
    assert ident.firmware_revision == "1.0"
    assert page[27 * 2 : 27 * 2 + 2] == b"ir"  # "ri" byte-swapped, as ATA strings are
    assert ident.lba48_capacity == IMAGE_SECTORS and ident.lba28_capacity == IMAGE_SECTORS
    assert ident.queue_depth == 31 and ident.sata_capabilities & (1 << 8)
    assert ident.command_set_2 & (1 << 10) and ident.command_set_2 & (1 << 13)
    assert ident.capabilities & (1 << 9) and ident.capabilities & (1 << 8)
    assert ident.dsm_support & 1 and ident.max_dsm_blocks == ata.MAX_DSM_BLOCKS
    assert ident.rotation_rate == 1 and ident.sector_size == 0x4000 and ident.hw_reset_result == 0
    assert ident.cfs_enable_1 & (1 << 5)  # write cache on


def test_identify_page_decodes_with_hdparm(host: Host) -> None:
    h = host
    h.run(0, h2d(ata.ATA_CMD_ID_ATA), [(DATA, 512)])
    words = [int.from_bytes(h.get(DATA + 2 * i, 2), "little") for i in range(256)]
    dump = "\n".join(" ".join(f"{w:04x}" for w in words[i : i + 8]) for i in range(0, 256, 8)) + "\n"
    out = subprocess.run(["hdparm", "--Istdin"], input=dump, capture_output=True, text=True, timeout=30).stdout
    assert "Checksum: correct" in out
    assert "Model Number:       rinuxfs SATA disk" in out and "Serial Number:      RNX0001" in out
    assert re.search(rf"LBA48\s+user addressable sectors:\s+{IMAGE_SECTORS}\n", out)
    for feature in ("Queue depth: 32", "Native Command Queueing (NCQ)", "Data Set Management TRIM supported",
                    "Solid State Device", "FLUSH_CACHE_EXT", "48-bit Address feature set",
                    "Logical  Sector size:                   512 bytes"):
        assert feature in out, feature


def test_read_dma_ext_equals_image(host: Host) -> None:
    h = host
    for lba in range(0, IMAGE_SECTORS, 2048):  # the whole image, 1 MiB at a time
        assert h.run(lba // 2048 % 32, h2d(ata.ATA_CMD_READ_EXT, lba=lba, count=2048), pages(DATA, 1 << 20, 8192)) == 1
        got = b"".join(h.get(DATA + i * 8192, 4096) for i in range(256))
        assert got == image_bytes(h.medium, lba, 2048)
    d2h = h.d2h()
    assert d2h.fis_type == 0x34 and d2h.flags.i and d2h.status == 0x50 and d2h.error == 0
    assert h.r(P + L.PxTFD) == 0x50 and h.r(P + L.PxCI) == 0
    assert h.prdbc(IMAGE_SECTORS // 2048 - 1) == 1 << 20
    reads = h.medium.named("read_into")
    assert len(reads) == IMAGE_SECTORS // 2048 and all(len(r[2]) == 256 for r in reads)


def test_contiguous_prds_coalesce_into_one_buffer(host: Host) -> None:
    h = host
    h.run(0, h2d(ata.ATA_CMD_READ_EXT, lba=100, count=2048), pages(DATA, 1 << 20))
    assert h.medium.named("read_into") == [("read_into", 100 * SECTOR, [1 << 20])]
    assert h.get(DATA, 1 << 20) == image_bytes(h.medium, 100, 2048)


def test_write_dma_ext_reaches_image(host: Host) -> None:
    h = host
    data = os.urandom(64 * SECTOR)
    h.put(DATA, data[:20000])
    h.put(DATA + 0x10000, data[20000:])
    prds = [(DATA, 20000), (DATA + 0x10000, len(data) - 20000)]
    assert h.run(7, h2d(ata.ATA_CMD_WRITE_EXT, lba=5000, count=64), prds, write=True) == 1
    assert image_bytes(h.medium, 5000, 64) == data
    assert h.prdbc(7) == len(data) and h.r(P + L.PxIS) == L.PxIS_DHRS and h.irqs == [0]
    assert h.medium.named("write_from") == [("write_from", 5000 * SECTOR, [20000, len(data) - 20000])]
    assert h.medium.named("flush") == []  # write cache on: no flush per write


def test_lba28_read_and_write_dma(host: Host) -> None:
    h = host
    lba = 0x5432
    data = os.urandom(256 * SECTOR)
    h.put(DATA, data)
    fis = h2d(ata.ATA_CMD_WRITE, lba=lba, count=0)  # count 0 = 256 sectors
    assert h.run(0, fis, [(DATA, len(data))], write=True) == 1
    assert image_bytes(h.medium, lba, 256) == data
    h.put(DATA, bytes(len(data)))
    assert h.run(0, h2d(ata.ATA_CMD_READ, lba=lba, count=16), [(DATA, 16 * SECTOR)]) == 1
    assert h.get(DATA, 16 * SECTOR) == data[: 16 * SECTOR]
    h.run(0, h2d(ata.ATA_CMD_READ, lba=lba, count=1, device=0x43), [(DATA, SECTOR)])  # LBA 27:24 in device 3:0
    d2h = h.d2h()
    assert d2h.error == ata.ATA_IDNF | ata.ATA_ABRT and (d2h.lba3, d2h.lba1, d2h.lba0) == (3, 0x54, 0x32)


def test_prd_interrupt_bit_sets_dps(host: Host) -> None:
    h = host
    h.command(0, h2d(ata.ATA_CMD_READ_EXT, lba=0, count=8), [(DATA, 2048), (DATA + 2048, 2048, True)])
    h.issue(0)
    h.hba.service()
    assert h.r(P + L.PxIS) == L.PxIS_DHRS | L.PxIS_DPS and h.irqs == [0]


def test_ncq_32_tags_in_one_service(host: Host) -> None:
    h = host
    writes = {tag: os.urandom(8 * SECTOR) for tag in range(0, 32, 2)}
    for tag in range(32):
        buf = DATA + tag * 0x10000
        if tag in writes:
            h.put(buf, writes[tag])
        # each tag moves 8 sectors through two PRDs, the second in another page
        h.command(tag, ncq_fis(tag in writes, tag, 1000 + 64 * tag, 8), [(buf, 1024), (buf + 0x8000, 3072)],
                  write=tag in writes)
        if tag in writes:
            h.put(buf, writes[tag][:1024])
            h.put(buf + 0x8000, writes[tag][1024:])
    h.issue_ncq(*range(32))
    assert h.r(P + L.PxSACT) == 0xFFFFFFFF
    assert h.hba.has_work
    assert h.hba.service() == 32
    assert not h.hba.has_work
    sdb = L.FisSetDeviceBits.parse(h.rx().sdbfis)
    assert sdb.fis_type == L.FIS_TYPE_SDB and sdb.flags.i and sdb.sactive == 0xFFFFFFFF and sdb.status == 0x50
    assert h.r(P + L.PxSACT) == 0 and h.r(P + L.PxCI) == 0
    assert h.r(P + L.PxIS) == L.PxIS_SDBS and h.irqs == [0]
    for tag in range(32):
        buf = DATA + tag * 0x10000
        moved = h.get(buf, 1024) + h.get(buf + 0x8000, 3072)
        assert moved == image_bytes(h.medium, 1000 + 64 * tag, 8)
        if tag in writes:
            assert moved == writes[tag]
        assert h.prdbc(tag) == 8 * SECTOR


def test_ncq_budget_and_fua(host: Host) -> None:
    h = host
    for tag in range(8):
        h.put(DATA + tag * 4096, bytes([tag]) * 4096)
        h.command(tag, ncq_fis(True, tag, 200 + 8 * tag, 8), [(DATA + tag * 4096, 4096)], write=True)
    h.ram.view[CT_BASE + 7 * CT_STRIDE + 7] |= 0x80  # tag 7: FUA in the device register
    h.issue_ncq(*range(8))
    assert h.hba.service(budget=3) == 3
    assert h.r(P + L.PxSACT) == 0b11111000 and h.r(P + L.PxCI) == 0  # all accepted, 3 reported
    assert h.hba.has_work
    assert h.hba.service(budget=0) == 0
    assert h.hba.service() == 5 and h.r(P + L.PxSACT) == 0
    assert h.medium.named("flush") == [("flush",)]
    for tag in range(8):
        assert image_bytes(h.medium, 200 + 8 * tag, 8) == bytes([tag]) * 4096


def test_flush_cache_and_flush_cache_ext(host: Host) -> None:
    h = host
    assert h.run(0, h2d(ata.ATA_CMD_FLUSH_EXT)) == 1
    assert h.run(1, h2d(ata.ATA_CMD_FLUSH)) == 1
    assert h.medium.named("flush") == [("flush",), ("flush",)]
    assert h.d2h().status == 0x50 and h.r(P + L.PxTFD) == 0x50


def test_trim(host: Host) -> None:
    h = host
    entries = [(300, 8), (308, 8), (0, 0), (5000, 1)]  # adjacent ranges merge; length 0 is an unused entry
    payload = b"".join(L.DsmRange.build(dict(lba=lba, length=n)) for lba, n in entries).ljust(SECTOR, b"\0")
    h.put(DATA, payload)
    fis = h2d(ata.ATA_CMD_DSM, features=ata.DSM_TRIM, count=1)
    assert h.run(0, fis, [(DATA, SECTOR)], write=True) == 1
    assert h.d2h().status == 0x50
    assert h.medium.named("discard") == [("discard", 300 * SECTOR, 16 * SECTOR), ("discard", 5000 * SECTOR, SECTOR)]
    assert image_bytes(h.medium, 300, 16) == bytes(16 * SECTOR)
    assert image_bytes(h.medium, 316, 1) != bytes(SECTOR)
    h.run(1, h2d(ata.ATA_CMD_READ_EXT, lba=300, count=16), [(DATA + 8192, 16 * SECTOR)])
    assert h.get(DATA + 8192, 16 * SECTOR) == bytes(16 * SECTOR)


@pytest.mark.parametrize("features,count,error", [(0, 1, ata.ATA_ABRT),  # no TRIM bit
                                                   (ata.DSM_TRIM, 0, ata.ATA_ABRT),
                                                   (ata.DSM_TRIM, ata.MAX_DSM_BLOCKS + 1, ata.ATA_ABRT)])
def test_trim_rejected(host: Host, features: int, count: int, error: int) -> None:
    h = host
    h.run(0, h2d(ata.ATA_CMD_DSM, features=features, count=count), [(DATA, 16 * SECTOR)], write=True)
    assert h.d2h().error == error and h.medium.named("discard") == []


def test_set_features_write_cache(host: Host) -> None:
    h = host
    for sub in (ata.SETFEATURES_XFER, ata.SETFEATURES_RA_ON, ata.SETFEATURES_WC_OFF):
        assert h.run(0, h2d(ata.ATA_CMD_SET_FEATURES, features=sub, count=0x46)) == 1
        assert h.d2h().status == 0x50
    h.run(0, h2d(ata.ATA_CMD_ID_ATA), [(DATA, 512)])
    assert not ata.IdentifyDevice.parse(h.get(DATA, 512)).cfs_enable_1 & (1 << 5)
    h.put(DATA, bytes(4096))
    h.run(1, h2d(ata.ATA_CMD_WRITE_EXT, lba=8, count=8), [(DATA, 4096)], write=True)
    assert h.medium.named("flush") == [("flush",)]  # write-through with the cache off
    h.run(0, h2d(ata.ATA_CMD_SET_FEATURES, features=0x5A))  # unknown subcommand
    assert h.d2h().error == ata.ATA_ABRT and h.r(P + L.PxIS) & L.PxIS_TFES


def test_check_power_mode_and_standby(host: Host) -> None:
    h = host
    h.run(0, h2d(ata.ATA_CMD_CHK_POWER))
    assert h.d2h().count == 0xFF
    h.run(0, h2d(ata.ATA_CMD_STANDBYNOW1))
    assert h.medium.named("flush") == [("flush",)]


def test_read_log_ext_directory_and_unknown_log(host: Host) -> None:
    h = host
    h.run(0, h2d(ata.ATA_CMD_READ_LOG_EXT, lba=ata.LOG_DIRECTORY, count=1), [(DATA, 512)])
    directory = ata.GpLogDirectory.parse(h.get(DATA, 512))
    assert directory.version == 1 and directory.pages[ata.LOG_NCQ_ERROR - 1] == 1
    assert L.FisPioSetup.parse(h.rx().psfis).e_status == 0x50
    h.run(0, h2d(ata.ATA_CMD_READ_LOG_EXT, lba=0x30, count=1), [(DATA, 512)])  # IDENTIFY DEVICE data log: absent
    assert h.d2h().status == 0x51 and h.d2h().error == ata.ATA_ABRT


# ---------------------------------------------------------------------------------------------
# Errors


def test_unknown_opcode_aborts_and_stops_the_port_until_recovery(host: Host) -> None:
    h = host
    assert h.run(2, h2d(0xB0, features=0xD0)) == 1  # SMART READ DATA: not implemented
    d2h = h.d2h()
    assert d2h.status == 0x51 and d2h.error == ata.ATA_ABRT
    assert h.r(P + L.PxTFD) == (ata.ATA_ABRT << 8) | 0x51
    assert h.r(P + L.PxIS) == L.PxIS_DHRS | L.PxIS_TFES and h.irqs == [0]
    assert h.r(P + L.PxCI) == 1 << 2  # the failed slot keeps its bit
    assert (h.r(P + L.PxCMD) & L.PxCMD_CCS_MASK) >> 8 == 2
    h.command(3, h2d(ata.ATA_CMD_FLUSH_EXT))
    h.issue(3)
    assert not h.hba.has_work and h.hba.service() == 0  # stopped until the host recovers
    h.recover()
    assert h.r(P + L.PxCI) == 0
    assert h.run(3, h2d(ata.ATA_CMD_FLUSH_EXT)) == 1 and h.r(P + L.PxTFD) == 0x50


def test_out_of_range_lba_is_idnf(host: Host) -> None:
    h = host
    h.run(0, h2d(ata.ATA_CMD_READ_EXT, lba=IMAGE_SECTORS - 1, count=2), [(DATA, 1024)])
    d2h = h.d2h()
    assert d2h.status == 0x51 and d2h.error == ata.ATA_IDNF | ata.ATA_ABRT
    assert h.r(P + L.PxIS) & L.PxIS_TFES and h.medium.named("read_into") == []
    h.recover()
    h.run(0, h2d(ata.ATA_CMD_WRITE_EXT, lba=1 << 40, count=1), [(DATA, 512)], write=True)
    assert h.d2h().error == ata.ATA_IDNF | ata.ATA_ABRT and h.medium.named("write_from") == []


def test_ncq_error_reports_sdb_with_err_and_log_10h(host: Host) -> None:
    h = host
    for tag in range(4):
        lba = IMAGE_SECTORS if tag == 2 else 64 * tag
        h.command(tag, ncq_fis(False, tag, lba, 8), [(DATA + tag * 4096, 4096)])
    h.issue_ncq(0, 1, 2, 3)
    assert h.hba.service() == 3  # tags 0 and 1 done, tag 2 failed; tag 3 was aborted with the queue
    sdb = L.FisSetDeviceBits.parse(h.rx().sdbfis)
    assert sdb.status == 0x51 and sdb.error == ata.ATA_IDNF | ata.ATA_ABRT and sdb.sactive == 0
    assert h.r(P + L.PxSACT) == 0b1100
    assert h.r(P + L.PxIS) == L.PxIS_SDBS | L.PxIS_TFES
    assert h.r(P + L.PxTFD) & 0xFF == 0x51
    assert h.get(DATA, 4096) == image_bytes(h.medium, 0, 8)
    assert not h.hba.has_work
    h.recover()  # libata EH: stop, clear, start, then READ LOG EXT 10h
    assert h.r(P + L.PxSACT) == 0
    h.run(5, h2d(ata.ATA_CMD_READ_LOG_EXT, lba=ata.LOG_NCQ_ERROR, count=1), [(DATA, 512)])
    page = h.get(DATA, 512)
    log = ata.NcqErrorLog.parse(page)
    assert sum(page) % 256 == 0
    assert not log.flags.nq and log.flags.tag == 2 and log.status == 0x51
    assert log.error == ata.ATA_IDNF | ata.ATA_ABRT and log.count == 8


def test_ncq_tag_reused_while_queued_is_an_error(host: Host) -> None:
    h = host
    h.command(0, ncq_fis(False, 4, 0, 8), [(DATA, 4096)])
    h.command(1, ncq_fis(False, 4, 8, 8), [(DATA, 4096)])
    h.issue_ncq(0, 1)
    h.hba.service()
    assert h.r(P + L.PxIS) & L.PxIS_TFES and L.FisSetDeviceBits.parse(h.rx().sdbfis).error == ata.ATA_ABRT


def test_prdt_shorter_than_transfer_is_ofs(host: Host) -> None:
    h = host
    h.w(P + L.PxIE, DEF_PORT_IRQ | L.PxIS_OFS)  # Linux leaves OFS out of DEF_PORT_IRQ
    h.put(DATA, b"\xee" * 4096)
    h.command(1, h2d(ata.ATA_CMD_READ_EXT, lba=0, count=8), [(DATA, 2048)])
    h.issue(1)
    rfis_before = h.rx().rfis
    assert h.hba.service() == 0
    assert h.r(P + L.PxIS) == L.PxIS_OFS and h.irqs == [0]
    assert h.rx().rfis == rfis_before  # no FIS: the command never completed
    assert h.get(DATA, 4096) == b"\xee" * 4096  # and nothing moved
    assert h.r(P + L.PxCI) == 0b10 and (h.r(P + L.PxCMD) & L.PxCMD_CCS_MASK) >> 8 == 1
    assert not h.hba.has_work
    h.recover()
    h.command(2, ncq_fis(False, 2, 0, 8), [(DATA, 512)])  # NCQ too
    h.issue_ncq(2)
    h.hba.service()
    assert h.r(P + L.PxIS) == L.PxIS_OFS and h.r(P + L.PxSACT) == 0b100


def test_dma_outside_ram(host: Host) -> None:
    h = host
    h.run(0, h2d(ata.ATA_CMD_READ_EXT, lba=0, count=8), [(RAM_SIZE - 2048, 4096)])  # data buffer past the end
    assert h.r(P + L.PxIS) == L.PxIS_HBDS and h.r(P + L.PxCI) == 1
    h.recover()
    h.command(1, h2d(ata.ATA_CMD_READ_EXT, lba=0, count=8), [(DATA, 4096)], ctba=RAM_SIZE + 0x1000)  # table
    h.issue(1)
    h.hba.service()
    assert h.r(P + L.PxIS) == L.PxIS_HBFS
    h.recover()
    h.stop_engine()
    h.w(P + L.PxCLBU, 1)  # the command list itself past the end
    h.start_engine()
    h.issue(0)
    h.hba.service()
    assert h.r(P + L.PxIS) == L.PxIS_HBFS
    h.w(P + L.PxCLBU, 0)  # still locked: ST = 1
    assert h.r(P + L.PxCLBU) == 1
    h.stop_engine()
    h.w(P + L.PxCLBU, 0)
    h.start_engine()
    assert h.run(0, h2d(ata.ATA_CMD_FLUSH_EXT)) == 1


def test_bad_command_fis_aborts(host: Host) -> None:
    h = host
    h.command(0, h2d(ata.ATA_CMD_FLUSH_EXT), cfl=2)  # shorter than a Register H2D FIS
    h.issue(0)
    h.hba.service()
    assert h.d2h().error == ata.ATA_ABRT and h.r(P + L.PxIS) & L.PxIS_TFES


def test_read_only_medium(tmp_path: Path) -> None:
    path = tmp_path / "ro.img"
    data = make_image(path, 2048)
    ram = PhysicalMemory(RAM_SIZE)
    medium = SpyImage(path, read_only=True)
    try:
        h = Host(ram, AhciHba(ram, medium, raise_irq=lambda v: None), medium)
        h.boot()
        assert h.run(0, h2d(ata.ATA_CMD_READ_EXT, lba=10, count=4), [(DATA, 2048)]) == 1
        assert h.get(DATA, 2048) == data[10 * SECTOR : 14 * SECTOR]
        h.put(DATA, bytes(2048))
        h.run(1, h2d(ata.ATA_CMD_WRITE_EXT, lba=10, count=4), [(DATA, 2048)], write=True)
        assert h.d2h().status == 0x51 and h.d2h().error == ata.ATA_ABRT
        h.recover()
        h.command(2, ncq_fis(True, 2, 10, 4), [(DATA, 2048)], write=True)
        h.issue_ncq(2)
        h.hba.service()
        assert L.FisSetDeviceBits.parse(h.rx().sdbfis).error == ata.ATA_ABRT
        h.recover()
        h.put(DATA, L.DsmRange.build(dict(lba=10, length=4)).ljust(512, b"\0"))
        h.run(3, h2d(ata.ATA_CMD_DSM, features=ata.DSM_TRIM, count=1), [(DATA, 512)], write=True)
        assert h.d2h().error == ata.ATA_ABRT
        assert medium.named("write_from") == [] and medium.named("discard") == []
        assert path.read_bytes() == data
    finally:
        medium.close()
        ram.close()


# ---------------------------------------------------------------------------------------------
# Resets


def queue_ncq_reads(h: Host, n: int = 8, done: int = 2) -> None:
    for tag in range(n):
        h.command(tag, ncq_fis(False, tag, 8 * tag, 8), [(DATA + tag * 4096, 4096)])
    h.issue_ncq(*range(n))
    assert h.hba.service(budget=done) == done
    assert h.r(P + L.PxSACT) == ((1 << n) - 1) & ~((1 << done) - 1)


def test_hba_reset_cancels_ncq(host: Host) -> None:
    h = host
    queue_ncq_reads(h)
    h.reset_controller()
    assert h.r(P + L.PxSACT) == 0 and h.r(P + L.PxCI) == 0 and h.r(P + L.PxCMD) & 0xFFFF == 0x6
    assert h.r(P + L.PxCLB) == 0 and h.r(P + L.PxSIG) == 0xFFFFFFFF and h.r(L.GHC) == L.GHC_AE
    assert not h.hba.has_work and h.hba.service() == 0
    h.boot()
    assert h.run(0, h2d(ata.ATA_CMD_READ_EXT, lba=0, count=8), [(DATA, 4096)]) == 1


def test_comreset_cancels_ncq(host: Host) -> None:
    h = host
    queue_ncq_reads(h)
    h.w(P + L.PxSCTL, 0x301)
    assert h.r(P + L.PxSSTS) == 0 and h.r(P + L.PxTFD) == 0x7F and h.r(P + L.PxSIG) == 0xFFFFFFFF
    h.command(9, h2d(ata.ATA_CMD_FLUSH_EXT))
    h.issue(9)
    assert not h.hba.has_work and h.hba.service() == 0  # nothing reaches a disk held in COMRESET
    h.w(P + L.PxSCTL, 0x300)
    assert h.r(P + L.PxSSTS) == 0x113 and h.r(P + L.PxSIG) == L.SIG_ATA and h.r(P + L.PxTFD) == 0x150
    assert h.hba.service() == 1 and h.r(P + L.PxCI) == 0  # the flush waited for the link; the queue is gone
    assert h.r(P + L.PxSACT) == 0b11111100  # PxSACT is not cleared by a COMRESET (§3.3.13) …
    h.recover()
    assert h.r(P + L.PxSACT) == 0  # … only by clearing ST
    assert h.r(P + L.PxSERR) == 0
    assert h.run(0, h2d(ata.ATA_CMD_READ_EXT, lba=0, count=8), [(DATA, 4096)]) == 1


def test_software_reset_cancels_ncq(host: Host) -> None:
    h = host
    queue_ncq_reads(h)
    h.put(FB + L.RX_FIS_D2H, bytes(20))
    # ahci_do_softreset: SRST with the R and C header bits, then SRST released
    h.command(8, h2d(0, control=L.CONTROL_SRST, c=False), reset=True)
    h.issue(8)
    assert h.hba.service() == 1 and h.r(P + L.PxCI) == 0
    assert h.r(P + L.PxTFD) & (ata.ATA_BSY | ata.ATA_DRQ) == 0  # the C bit cleared BSY
    h.command(9, h2d(0, control=0, c=False))
    h.issue(9)
    assert h.hba.service() == 1 and h.r(P + L.PxCI) == 0
    d2h = h.d2h()
    assert d2h.status == 0x50 and d2h.lba0 == 1 and d2h.count == 1
    assert h.r(P + L.PxSIG) == L.SIG_ATA and h.r(P + L.PxTFD) == 0x150
    assert h.hba.service() == 0 and h.r(P + L.PxSACT) == 0b11111100  # the queued tags never complete
    h.recover()
    assert h.r(P + L.PxSACT) == 0
    assert h.run(0, h2d(ata.ATA_CMD_FLUSH_EXT)) == 1


# ---------------------------------------------------------------------------------------------
# Property: any PRDT split of a transfer moves the same bytes


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    path = tmp_path_factory.mktemp("ahci") / "sda.img"
    make_image(path, 4096)
    ram = PhysicalMemory(RAM_SIZE)
    medium = SpyImage(path)
    h = Host(ram, AhciHba(ram, medium, raise_irq=lambda v: None), medium)
    h.boot()
    yield h
    medium.close()
    ram.close()


@st.composite
def prd_splits(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, int]]]:
    nsect = draw(st.integers(1, 64))
    total = nsect * SECTOR
    cuts = sorted(draw(st.sets(st.integers(1, total // 2 - 1), max_size=12)) if total > 2 else set())
    sizes = [2 * (b - a) for a, b in zip([0, *cuts], [*cuts, total // 2], strict=True)]
    extra = draw(st.integers(0, 3))  # the PRDT may describe more than the transfer
    sizes += [draw(st.integers(1, 4096)) * 2 for _ in range(extra)]
    gaps = draw(st.lists(st.sampled_from([0, 0, 2, 512, 4096]), min_size=len(sizes), max_size=len(sizes)))
    prds, addr = [], DATA
    for size, gap in zip(sizes, gaps, strict=True):
        prds.append((addr, size))
        addr += size + gap
    return draw(st.integers(0, 4096 - nsect)), nsect, prds


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(split=prd_splits(), write=st.booleans(), ncq=st.booleans())
def test_random_prdt_splits(shared: Host, split: tuple[int, int, list[tuple[int, int]]], write: bool,
                            ncq: bool) -> None:
    h = shared
    lba, nsect, prds = split
    total = nsect * SECTOR
    if write:
        payload = os.urandom(total)
        pos = 0
        for addr, size in prds:
            take = min(size, total - pos)
            h.put(addr, payload[pos : pos + take])
            pos += take
    fis = (ncq_fis(write, 5, lba, nsect) if ncq
           else h2d(ata.ATA_CMD_WRITE_EXT if write else ata.ATA_CMD_READ_EXT, lba=lba, count=nsect))
    h.command(5, fis, prds, write=write)
    h.medium.calls.clear()
    if ncq:
        h.issue_ncq(5)
    else:
        h.issue(5)
    assert h.hba.service() == 1
    assert h.r(P + L.PxIS) & L.PxIS_FATAL == 0
    h.ack()
    used, pos = [], 0
    for addr, size in prds:
        if pos == total:
            break
        used.append((addr, min(size, total - pos)))
        pos += used[-1][1]
    gathered = b"".join(h.get(addr, n) for addr, n in used)
    assert gathered == image_bytes(h.medium, lba, nsect)
    if write:
        assert gathered == payload
    merged: list[list[int]] = []
    for addr, n in used:
        if merged and sum(merged[-1]) == addr:
            merged[-1][1] += n
        else:
            merged.append([addr, n])
    (call,) = [c for c in h.medium.calls if c[0] in ("read_into", "write_from")]
    assert call[1:] == (lba * SECTOR, [n for _, n in merged])  # one call, contiguous regions merged


# ---------------------------------------------------------------------------------------------
# Speed: a 1 MiB read is one vectored read, not per sector


def test_one_mib_read_speed(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    h = host
    h.command(0, h2d(ata.ATA_CMD_READ_EXT, lba=4096, count=2048), pages(DATA, 1 << 20, 8192))  # 256 separate pages
    best = float("inf")
    for _ in range(30):
        h.issue(0)
        start = time.perf_counter()
        assert h.hba.service() == 1
        best = min(best, time.perf_counter() - start)
        h.ack()
    reads = h.medium.named("read_into")
    assert len(reads) == 30 and all(len(r[2]) == 256 for r in reads)
    with capsys.disabled():
        print(f"\n1 MiB READ DMA EXT through service(), 256 scattered PRDs: {best * 1e6:.0f} µs")
    # the time is reported, not asserted: a loaded 2-core machine is no place for wall-clock bounds
