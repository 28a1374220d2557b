"""The AHCI model under hostile register, command-table and PRDT traffic: a bounded, derandomized sample.

`fuzzing.ahci` says what a case is and what is checked (no exception out of
the model, its consistency rules after every step, each outcome as the rules
give it, recovery by Linux's bring-up); `scripts/fuzz --target ahci` runs the
same for longer. The regression tests pin what the fuzzer found.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzing.ahci import DATA, SECTOR, AhciCase, Host, P, cases, check_ahci, h2d
from hypothesis import HealthCheck, given, settings

from rinuxfs.hw import ahci_layouts as L
from rinuxfs.hw import ata
from rinuxfs.hw.ahci import PRDT_STRUCT_MAX, _prdt_struct

SAMPLE = settings(max_examples=250, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ahci-fuzz")


@SAMPLE
@given(case=cases())
def test_hostile_hosts_cannot_break_the_hba(case: AhciCase, workdir: Path) -> None:
    check_ahci(case, workdir)


def test_a_long_prdt_is_read_without_caching_a_struct_for_it(tmp_path: Path) -> None:
    """PRDTL may be 65535: a cached struct per length (4 MiB each at that size, 64 cached) let a guest pin
    256 MiB of the daemon. Tables longer than drivers build are read entry by entry instead."""
    host = Host(AhciCase("faults", 1024 * 4096, 1 << 20), tmp_path)
    try:
        host.boot()
        entries = PRDT_STRUCT_MAX + 44  # 299 PRDs of 2 bytes, then one for the rest of the two sectors
        rest = 2 * SECTOR - 2 * (entries - 1)
        prds = [(DATA + 2 * i, 2, False) for i in range(entries - 1)] + [(DATA + 2 * (entries - 1), rest, False)]
        misses = _prdt_struct.cache_info().misses
        host.command(3, h2d(ata.ATA_CMD_READ_EXT, lba=7, count=2), prds, ctba=0x40000)
        host.w(P + L.PxCI, 1 << 3)
        host.service()
        assert host.r(P + L.PxIS) & L.PxIS_DHRS and not host.r(P + L.PxIS) & (L.PxIS_TFES | L.PxIS_OFS)
        assert host.peek(DATA, 2 * SECTOR) == host.sectors_of_image(7, 2)
        assert host.prdbc(3) == 2 * SECTOR
        assert _prdt_struct.cache_info().misses == misses
    finally:
        host.close()


def test_the_consistency_rules_see_a_broken_state(tmp_path: Path) -> None:
    """The rules the fuzzer checks after every step are not vacuous: break the state, and they say so."""
    host = Host(AhciCase("faults", 64 * 4096, 1 << 20), tmp_path)
    try:
        host.boot()
        hba = host.hba
        assert hba.consistency_errors() == []
        hba.port.cmd &= ~L.PxCMD_CR  # ST without CR
        hba._pending_mask = 1 << 5  # a fetched slot that was never issued
        errors = hba.consistency_errors()
        assert any("handshakes disagree" in e for e in errors) and any("issued slots" in e for e in errors)
    finally:
        host.close()


def test_a_signature_fis_that_cannot_be_posted_sets_hbfs_without_halting_a_stopped_engine(tmp_path: Path) -> None:
    """Found by a campaign: PxFB past the end of RAM, then FRE: posting the device's signature FIS fails.
    The model marked the port halted although PxCMD.ST was clear (its own rules forbid that); now only
    PxIS.HBFS says so, and the signature comes once the FIS area is somewhere real."""
    case = AhciCase("chaos", 65536, 0, boot=False, steps=[("mmio", P + L.PxFB, 4, 65536), ("read", 0, 4),
                                                          ("mmio", P + L.PxCMD, 4, L.PxCMD_FRE)])
    check_ahci(case, tmp_path)  # the replayed finding: the rules hold after every step
    host = Host(case, tmp_path)
    try:
        host.w(P + L.PxFB, 65536)
        host.w(P + L.PxCMD, L.PxCMD_FRE)
        host.check()
        assert host.r(P + L.PxIS) & L.PxIS_HBFS and host.r(P + L.PxSIG) == L.SIG_NONE
        host.w(P + L.PxCMD, 0)
        host.w(P + L.PxFB, 0x400)
        host.w(P + L.PxCMD, L.PxCMD_FRE)
        assert host.r(P + L.PxSIG) == L.SIG_ATA
        host.check()
    finally:
        host.close()
