"""The NVMe model under hostile register, queue and command traffic: a bounded, derandomized sample.

`fuzzing.nvme` says what a case is and what is checked (no exception out of
the model, its consistency rules after every step, each completion's status
as the rules give it, recovery by reset); `scripts/fuzz --target nvme` runs
the same for longer. The regression tests pin what the fuzzer found.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzzing.nvme import CC_LINUX, PAGE, Host, NvmeCase, cases, check_nvme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rinuxfs.hw.nvme import AdminOpcode, Status

SAMPLE = settings(max_examples=250, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nvme-fuzz")


@SAMPLE
@given(case=cases())
def test_hostile_hosts_cannot_break_the_controller(case: NvmeCase, workdir: Path) -> None:
    check_nvme(case, workdir)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = Host(NvmeCase("faults", 64 * PAGE, 1 << 20, mdts=0), tmp_path)
    assert h.enable((32, 32), None, None, CC_LINUX)
    yield h
    h.close()


def test_get_log_page_walks_only_the_prps_of_the_bytes_it_moves(host: Host) -> None:
    """NUMD of 16 GiB with MDTS 0 (no limit): the 512-byte SMART log fits PRP1's page, so a PRP2 that points
    past RAM is never followed. Mapping all NUMD dwords walked a PRP list for minutes and 200 MB."""
    page = host.alloc()
    host.poke(page, b"\xee" * PAGE)
    status, _ = host.admin(AdminOpcode.GET_LOG_PAGE, prp1=page, prp2=host.ram.size + PAGE,
                           cdw=(0x02 | 0xFFFF << 16, 0xFFFF, 0, 0, 0, 0))
    assert status == Status.SUCCESS
    smart = host.peek(page, PAGE)
    assert smart[1:3] == (0x0143).to_bytes(2, "little") and smart[512:] == b"\xee" * (PAGE - 512)


def test_get_log_page_past_the_log_is_still_invalid_field(host: Host) -> None:
    status, _ = host.admin(AdminOpcode.GET_LOG_PAGE, prp1=host.alloc(), cdw=(0x02 | 127 << 16, 0, 512, 0, 0, 0))
    assert status == Status.INVALID_FIELD


def test_the_consistency_rules_see_a_broken_state(host: Host) -> None:
    """The rules the fuzzer checks after every step are not vacuous: break the state, and they say so."""
    host.setup_io(1, 8)
    ctrl = host.ctrl
    assert ctrl.consistency_errors() == []
    sq = ctrl._sqs[1]
    assert sq is not None
    sq.head = sq.size  # a head past the end of its queue
    ctrl._cqs[1].sqids.discard(1)  # type: ignore[union-attr]  # an SQ its CQ does not know
    ctrl._regs[0x1C] |= 0b11 << 2  # CSTS.SHST = 11b, a reserved value
    errors = ctrl.consistency_errors()
    assert any("SQ 1 is out of shape" in e for e in errors) and any("not attached" in e for e in errors)
    assert any("reserved bits or values" in e for e in errors)



def _prp_buffers_by_the_book(prp1: int, entries: list[int], length: int) -> list[tuple[int, int]]:
    """§4.3 one entry at a time: PRP1's page, then each entry's page, a buffer per physically contiguous run."""
    first = min(length, PAGE - prp1 % PAGE)
    runs = [[prp1, first]]
    rest = length - first
    for i, entry in enumerate(entries):
        take = PAGE if i < len(entries) - 1 else rest - (len(entries) - 1) * PAGE
        if entry == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += take
        else:
            runs.append([entry, take])
    return [(start, n) for start, n in runs]


@pytest.fixture(scope="module")
def big_host(workdir: Path) -> Iterator[Host]:
    h = Host(NvmeCase("faults", 256 * PAGE, 1 << 20, mdts=0), workdir)
    for page in range(1, 256):  # every page tells where it is: a buffer over the wrong bytes shows
        h.poke(page * PAGE, page.to_bytes(2, "little") * (PAGE // 2))
    yield h
    h.close()


@settings(max_examples=200, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(offset4=st.integers(0, PAGE // 4 - 1), slots=st.lists(st.integers(1, 40), min_size=2, max_size=40),
       last=st.integers(1, PAGE))
def test_prp_entries_map_to_one_buffer_per_contiguous_run(offset4: int, slots: list[int], last: int,
                                                          big_host: Host) -> None:
    """Whatever mix of consecutive and scattered pages a PRP list names, the model moves data
    through one buffer per contiguous run of them, the last entry cut at the length."""
    pages = [slot * PAGE for slot in slots]  # pages 1..40; the PRP list lives above them
    big_host._next_page = 64
    prp1 = pages[0] + offset4 * 4
    length = (PAGE - offset4 * 4) + (len(pages) - 2) * PAGE + last
    entries = pages[1:]
    prp2 = entries[0] if len(entries) == 1 else big_host.prp_list(entries)
    buffers = big_host.ctrl._map_prp(prp1, prp2, length)
    book = _prp_buffers_by_the_book(prp1, entries, length)
    assert [len(b) for b in buffers] == [n for _, n in book]
    ram = big_host.ctrl._view
    assert [bytes(b) for b in buffers] == [bytes(ram[start:start + n]) for start, n in book]
