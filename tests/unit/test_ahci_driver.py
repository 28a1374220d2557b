"""The AHCI host driver against the AHCI HBA model, on a booted kernel without FUSE.

Each test boots a Kernel with controller="ahci" over a temporary image and drives the disk the
way the block layer does (bios through the request queue, or requests straight into
`driver.execute` where the block layer would refuse them), then checks the bytes in RAM and in
the image, the ATA commands the driver chose, the errno of failures and that the port works
again after its error handling.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rinuxfs.block.bio import Bio, ReqOp, Request
from rinuxfs.block.genhd import Gendisk
from rinuxfs.drivers.ahci import (
    MODEL,
    PRD_MAX_BYTES,
    PRDS_PER_TABLE,
    AhciDriver,
    AtaError,
    build_prds,
    split_prds,
)
from rinuxfs.errors import KernelError
from rinuxfs.fs.kernfs import GenDir, GenFile, GenSymlink
from rinuxfs.fs.vfs import ROOT_CRED
from rinuxfs.hw import ahci_layouts as L
from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE
from rinuxfs.kernel import Kernel, KernelConfig

SECTOR = 512
IMAGE_BYTES = 32 << 20


@dataclasses.dataclass
class Machine:
    kernel: Kernel
    image: Path
    data: bytes  # what the image held at boot

    @property
    def driver(self) -> AhciDriver:
        driver = self.kernel.storage_driver
        assert isinstance(driver, AhciDriver)
        return driver

    @property
    def disk(self) -> Gendisk:
        return self.kernel.block.disks[0]

    def pages(self, n: int, *, scatter: bool = False) -> list[int]:
        """n frames; scattered ones are every other frame of a run, so no two are neighbours."""
        pfns = self.kernel.mm.alloc_pages(2 * n if scatter else n)
        if scatter:
            self.kernel.mm.free_pages(pfns[1::2])
            pfns = pfns[::2]
        return pfns

    def segments(self, nbytes: int, *, scatter: bool = False) -> list[tuple[int, int]]:
        pfns = self.pages(-(-nbytes // PAGE_SIZE), scatter=scatter)
        return [(pfn << PAGE_SHIFT, min(PAGE_SIZE, nbytes - i * PAGE_SIZE)) for i, pfn in enumerate(pfns)]

    def ram(self, segments: list[tuple[int, int]]) -> bytes:
        view = self.kernel.mm.ram.view
        return b"".join(bytes(view[a : a + n]) for a, n in segments)

    def fill(self, segments: list[tuple[int, int]], data: bytes) -> None:
        view = self.kernel.mm.ram.view
        pos = 0
        for a, n in segments:
            view[a : a + n] = data[pos : pos + n]
            pos += n

    def submit(self, op: ReqOp, sector: int, nsect: int, segments: list[tuple[int, int]] | None = None) -> None:
        """A bio through the disk's request queue, as the page cache sends it."""
        self.disk.whole.submit([Bio(op, sector, nsect, segments or [])])

    def execute(self, op: ReqOp, sector: int, nsect: int, segments: list[tuple[int, int]] | None = None) -> None:
        """A request straight into the driver, past the block layer's checks."""
        self.driver.execute(Request.from_bio(Bio(op, sector, nsect, segments or [])))

    def image_bytes(self, sector: int, nsect: int) -> bytes:
        with open(self.image, "rb") as f:
            f.seek(sector * SECTOR)
            return f.read(nsect * SECTOR)

    def log(self) -> str:
        return "\n".join(r.text for r in self.kernel.log.records())


def boot(tmp_path: Path, *, size: int = IMAGE_BYTES, random_bytes: int = IMAGE_BYTES, read_only: bool = False,
         mem: int = 128 << 20) -> Machine:
    image = tmp_path / "sda.img"
    data = os.urandom(random_bytes)
    with open(image, "wb") as f:
        f.write(data)
        f.truncate(size)
    k = Kernel(KernelConfig(image=image, controller="ahci", mem=mem, cpus=2, read_only=read_only))
    return Machine(k, image, data)


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    m = boot(tmp_path)
    try:
        yield m
    finally:
        m.kernel.close()


# ---------------------------------------------------------------------------------------------
# Probe


def test_probe_registers_sda_with_what_identify_said(machine: Machine) -> None:
    disk, driver = machine.disk, machine.driver
    assert (disk.name, disk.major, disk.first_minor, disk.minors) == ("sda", 8, 0, 16)
    assert disk.whole.devt == (8, 0)
    assert disk.nr_sects == IMAGE_BYTES // SECTOR
    assert disk.transport == "sata"
    assert disk.model == MODEL and disk.serial.startswith("RNX") and disk.firmware == "0.1"
    assert not disk.read_only
    limits = disk.queue.limits
    assert (limits.logical_block_size, limits.physical_block_size) == (512, 512)
    assert limits.max_hw_sectors_kb == 32767 and limits.max_sectors_kb == 1280
    assert limits.rotational == 0  # IDENTIFY word 217 = 1: a solid-state disk
    assert limits.write_cache == "write back"  # word 85 bit 5
    assert limits.queue_depth == 31 and driver.depth == 31 and driver.ncq
    assert limits.discard_max_hw_bytes == 65535 * 64 * 512 and limits.discard_granularity == 512
    assert limits.write_zeroes_max_bytes == limits.discard_max_hw_bytes  # word 69: zeros after TRIM
    assert disk.queue.scheduler == "mq-deadline"


def test_probe_follows_libahci_and_logs_like_linux(machine: Machine) -> None:
    log = machine.log()
    for line in ("ahci 0000:00:1f.2: AHCI 0001.0301 32 slots 1 ports 6 Gbps 0x1 impl SATA mode",
                 "ata1: SATA link up 1.5 Gbps (SStatus 113 SControl 300)",
                 f"ata1.00: ATA-10: {MODEL}, 0.1, max UDMA/133",
                 f"ata1.00: {IMAGE_BYTES // SECTOR} sectors, multi 16: LBA48 NCQ (depth 31/32)",
                 "ata1.00: configured for UDMA/133",
                 f"scsi 0:0:0:0: Direct-Access     ATA      {MODEL} 0.1  PQ: 0 ANSI: 5",
                 f"sd 0:0:0:0: [sda] {IMAGE_BYTES // SECTOR} 512-byte logical blocks: (33.6 MB/32.0 MiB)",
                 "sd 0:0:0:0: [sda] Write cache: enabled, read cache: enabled, doesn't support DPO or FUA"):
        assert line in log.splitlines(), line
    hba = machine.driver.hba
    assert not hba.rejected, "the driver made a register access the HBA ignored"
    port = L.PORT_BASE
    cmd = hba.mmio_read(port + L.PxCMD, 4)
    assert cmd & (L.PxCMD_ST | L.PxCMD_CR | L.PxCMD_FRE | L.PxCMD_FR) == (
        L.PxCMD_ST | L.PxCMD_CR | L.PxCMD_FRE | L.PxCMD_FR)
    assert hba.mmio_read(L.GHC, 4) & (L.GHC_AE | L.GHC_IE) == L.GHC_AE | L.GHC_IE
    assert hba.mmio_read(port + L.PxSERR, 4) == 0 and hba.mmio_read(port + L.PxIS, 4) == 0
    clb = hba.mmio_read(port + L.PxCLB, 4) | hba.mmio_read(port + L.PxCLBU, 4) << 32
    fb = hba.mmio_read(port + L.PxFB, 4) | hba.mmio_read(port + L.PxFBU, 4) << 32
    assert clb % 1024 == 0 and fb % 256 == 0 and clb == machine.driver.mem


def test_interrupts_are_counted_on_the_ahci_line(machine: Machine) -> None:
    lines = [line for line in machine.kernel.irqs.lines.values() if line.name == "ahci[0000:00:1f.2]"]
    assert len(lines) == 1 and lines[0].chip == "PCI-MSI" and lines[0].hwirq == "512000-edge"
    before = sum(lines[0].counts)
    machine.submit(ReqOp.READ, 0, 8, machine.segments(4096))
    assert sum(lines[0].counts) == before + 1
    text = machine.kernel.irqs.render(machine.kernel.cpus.online, machine.kernel.timer_ticks())
    assert "PCI-MSI  512000-edge    ahci[0000:00:1f.2]" in text


# ---------------------------------------------------------------------------------------------
# Data path


@pytest.mark.parametrize("scatter", [False, True])
@pytest.mark.parametrize("sector,nsect", [(0, 1), (1, 7), (7, 9), (100, 8), (4095, 255), (33, 256), (257, 257),
                                          (2048, 1024), (9, 2560), (12345, 4096), (0, 16384),
                                          (IMAGE_BYTES // SECTOR - 3, 3)])
def test_reads_of_many_sizes_equal_the_image(machine: Machine, sector: int, nsect: int, scatter: bool) -> None:
    segments = machine.segments(nsect * SECTOR, scatter=scatter)
    machine.submit(ReqOp.READ, sector, nsect, segments)
    assert machine.ram(segments) == machine.data[sector * SECTOR : (sector + nsect) * SECTOR]


def test_reads_through_the_page_cache_equal_the_image(machine: Machine) -> None:
    mapping = machine.kernel.bdev_mappings["sda"]
    for offset, size in ((0, 1), (4095, 2), (1 << 20, 1 << 20), (IMAGE_BYTES - 5000, 5000), (12345, 777777)):
        assert mapping.read(offset, size) == machine.data[offset : offset + size]


@pytest.mark.parametrize("sector,nsect", [(0, 8), (3, 1), (1000, 300), (5000, 2048)])
def test_writes_land_in_the_image(machine: Machine, sector: int, nsect: int) -> None:
    payload = os.urandom(nsect * SECTOR)
    segments = machine.segments(len(payload), scatter=True)
    machine.fill(segments, payload)
    machine.submit(ReqOp.WRITE, sector, nsect, segments)
    assert machine.image_bytes(sector, nsect) == payload
    assert machine.image_bytes(sector + nsect, 8) == machine.data[(sector + nsect) * SECTOR :][: 8 * SECTOR]
    back = machine.segments(len(payload))
    machine.submit(ReqOp.READ, sector, nsect, back)
    assert machine.ram(back) == payload


def test_ncq_is_used_with_pxsact_set_before_pxci(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    hba = machine.driver.hba
    writes: list[tuple[int, int]] = []
    real_write = hba.mmio_write

    def spy(offset: int, size: int, value: int) -> None:
        writes.append((offset, value))
        real_write(offset, size, value)

    monkeypatch.setattr(hba, "mmio_write", spy)
    counts = machine.driver.counts
    reads, writes_before = counts["READ FPDMA QUEUED"], counts["WRITE FPDMA QUEUED"]
    segments = machine.segments(8192)
    machine.submit(ReqOp.READ, 64, 16, segments)
    machine.submit(ReqOp.WRITE, 64, 16, segments)
    assert counts["READ FPDMA QUEUED"] == reads + 1 and counts["WRITE FPDMA QUEUED"] == writes_before + 1
    port = L.PORT_BASE
    issued = [(off, v) for off, v in writes if off in (port + L.PxSACT, port + L.PxCI)]
    assert [off for off, _ in issued] == [port + L.PxSACT, port + L.PxCI] * 2
    assert issued[0][1] == issued[1][1] and bin(issued[0][1]).count("1") == 1
    assert issued[0][1] != issued[2][1]  # tags go round, as blk-mq hands them out
    assert all(v < 1 << 31 for _, v in issued)  # tag 31 is the internal slot, never an NCQ tag


@pytest.mark.parametrize("sector,nsect,command", [(8, 8, "READ DMA"), (8, 256, "READ DMA"),
                                                  (8, 257, "READ DMA EXT"), (100, 4096, "READ DMA EXT")])
def test_without_ncq_reads_use_read_dma_or_its_ext_form(machine: Machine, sector: int, nsect: int,
                                                        command: str) -> None:
    machine.driver.ncq = False
    before = machine.driver.counts[command]
    segments = machine.segments(nsect * SECTOR, scatter=True)
    machine.submit(ReqOp.READ, sector, nsect, segments)
    assert machine.driver.counts[command] > before
    assert machine.ram(segments) == machine.data[sector * SECTOR : (sector + nsect) * SECTOR]
    payload = os.urandom(nsect * SECTOR)
    machine.fill(segments, payload)
    machine.submit(ReqOp.WRITE, sector, nsect, segments)
    assert machine.image_bytes(sector, nsect) == payload


def test_flush_sends_flush_cache_ext_and_reaches_the_image(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    image = machine.kernel.image
    assert image is not None
    flushes: list[int] = []
    real_flush = image.flush
    monkeypatch.setattr(image, "flush", lambda: (flushes.append(1), real_flush())[1])
    before = machine.driver.counts["FLUSH CACHE EXT"]
    machine.submit(ReqOp.FLUSH, 0, 0)
    assert machine.driver.counts["FLUSH CACHE EXT"] == before + 1 and flushes == [1]


def test_discard_trims_and_reads_back_zeros(machine: Machine) -> None:
    before = machine.driver.counts["DATA SET MANAGEMENT"]
    machine.submit(ReqOp.DISCARD, 1000, 3000)
    assert machine.driver.counts["DATA SET MANAGEMENT"] == before + 1
    assert machine.image_bytes(1000, 3000) == bytes(3000 * SECTOR)
    assert machine.image_bytes(999, 1) == machine.data[999 * SECTOR : 1000 * SECTOR]
    assert machine.image_bytes(4000, 1) == machine.data[4000 * SECTOR : 4001 * SECTOR]
    segments = machine.segments(3002 * SECTOR)
    machine.submit(ReqOp.READ, 999, 3002, segments)
    assert machine.ram(segments) == machine.data[999 * SECTOR : 1000 * SECTOR] + bytes(3000 * SECTOR) + \
        machine.data[4000 * SECTOR : 4001 * SECTOR]


def test_write_zeroes_is_a_trim_when_the_disk_reads_zeros_after_trim(machine: Machine) -> None:
    before = machine.driver.counts["DATA SET MANAGEMENT"]
    machine.submit(ReqOp.WRITE_ZEROES, 50, 10)
    assert machine.driver.counts["DATA SET MANAGEMENT"] == before + 1
    assert machine.image_bytes(50, 10) == bytes(10 * SECTOR)


def test_write_zeroes_without_zeros_after_trim_is_not_supported(machine: Machine) -> None:
    driver = machine.driver
    assert driver.identity is not None
    driver.identity = dataclasses.replace(driver.identity, zero_after_trim=False)
    with pytest.raises(KernelError) as info:
        machine.execute(ReqOp.WRITE_ZEROES, 50, 10)
    assert info.value.errno == errno.EOPNOTSUPP
    assert machine.image_bytes(50, 10) == machine.data[50 * SECTOR : 60 * SECTOR]


def test_a_discard_larger_than_one_dsm_block_takes_several_commands(tmp_path: Path) -> None:
    m = boot(tmp_path, size=4 << 30, random_bytes=1 << 20)
    try:
        before = m.driver.counts["DATA SET MANAGEMENT"]
        nsect = 65535 * 64 + 100  # one block holds 64 ranges of 65535 sectors
        m.submit(ReqOp.DISCARD, 2048, nsect)
        assert m.driver.counts["DATA SET MANAGEMENT"] == before + 2
        assert m.image_bytes(0, 2048) == m.data[: 2048 * SECTOR]
    finally:
        m.kernel.close()


# ---------------------------------------------------------------------------------------------
# Errors and recovery


@pytest.mark.parametrize("ncq", [True, False])
def test_an_out_of_range_request_fails_with_eio_and_the_port_recovers(machine: Machine, ncq: bool) -> None:
    machine.driver.ncq = ncq
    end = machine.disk.nr_sects
    segments = machine.segments(16 * SECTOR)
    with pytest.raises(AtaError) as info:
        machine.execute(ReqOp.READ, end - 8, 16, segments)
    assert info.value.errno == errno.EIO
    assert "IDNF" in str(info.value)
    log = machine.log()
    assert "ata1.00: error: { IDNF ABRT }" in log and "ata1: EH complete" in log
    # libata retries anything but a media error from the fs stack, and sd 5 times: 6 attempts, 6 EH reports
    name = "READ FPDMA QUEUED" if ncq else "READ DMA"
    assert log.count(f"ata1.00: failed command: {name}") == 6
    assert "sd 0:0:0:0: [sda] tag#0 Sense Key : Illegal Request [current] " in log.splitlines()
    if ncq:
        assert machine.driver.counts["READ LOG EXT"] == 6  # each time the failed tag comes from the NCQ error log
    machine.submit(ReqOp.READ, end - 16, 16, segments)
    assert machine.ram(segments) == machine.data[(end - 16) * SECTOR : end * SECTOR]
    payload = os.urandom(16 * SECTOR)
    machine.fill(segments, payload)
    machine.submit(ReqOp.WRITE, 0, 16, segments)
    assert machine.image_bytes(0, 16) == payload


def test_the_block_layer_refuses_beyond_the_end_before_the_driver(machine: Machine) -> None:
    requests = machine.driver.counts["requests"]
    with pytest.raises(KernelError) as info:
        machine.submit(ReqOp.READ, machine.disk.nr_sects, 8, machine.segments(4096))
    assert info.value.errno == errno.EIO
    assert machine.driver.counts["requests"] == requests


def test_a_bad_dma_address_is_a_host_bus_error_then_a_comreset(machine: Machine) -> None:
    outside = machine.kernel.mm.ram.size + PAGE_SIZE
    with pytest.raises(AtaError) as info:
        machine.execute(ReqOp.READ, 0, 8, [(outside, 4096)])
    assert info.value.errno == errno.EIO and "host bus error" in str(info.value)
    log = machine.log().splitlines()
    # boot, then a hard reset by EH for each of the 6 attempts sd makes (a host bus error is retried)
    assert log.count("ata1: SATA link up 1.5 Gbps (SStatus 113 SControl 300)") == 7
    assert log.count("ata1: hard resetting link") == 6
    assert machine.driver.counts["IDENTIFY DEVICE"] == 7  # revalidated after each reset
    segments = machine.segments(4096)
    machine.submit(ReqOp.READ, 8, 8, segments)
    assert machine.ram(segments) == machine.data[8 * SECTOR : 16 * SECTOR]


def test_a_write_to_a_read_only_medium_is_erofs(tmp_path: Path) -> None:
    m = boot(tmp_path, read_only=True)
    try:
        assert m.disk.read_only
        assert "sd 0:0:0:0: [sda] Write Protect is on" in m.log()
        segments = m.segments(4096)
        with pytest.raises(KernelError) as info:  # the block layer refuses first
            m.submit(ReqOp.WRITE, 0, 8, segments)
        assert info.value.errno == errno.EROFS
        with pytest.raises(AtaError) as info:  # and the disk's ABRT of a write maps the same way
            m.execute(ReqOp.WRITE, 0, 8, segments)
        assert info.value.errno == errno.EROFS
        m.submit(ReqOp.READ, 0, 8, segments)
        assert m.ram(segments) == m.data[:4096]
    finally:
        m.kernel.close()


def test_odd_buffers_cannot_be_described_by_a_prdt(machine: Machine) -> None:
    (addr, _), = machine.segments(4096)
    with pytest.raises(KernelError) as info:
        machine.execute(ReqOp.READ, 0, 1, [(addr + 1, 511), (addr + 1024, 1)])
    assert info.value.errno == errno.EINVAL


# ---------------------------------------------------------------------------------------------
# PRDT building and splitting


def test_build_prds_merges_contiguous_segments_and_splits_at_4_mib() -> None:
    assert build_prds([(0x1000, 0x1000), (0x2000, 0x1000), (0x5000, 0x800)]) == [(0x1000, 0x2000), (0x5000, 0x800)]
    big = build_prds([(0x100000, 9 << 20)])
    assert big == [(0x100000, PRD_MAX_BYTES), (0x100000 + PRD_MAX_BYTES, PRD_MAX_BYTES),
                   (0x100000 + 2 * PRD_MAX_BYTES, 1 << 20)]
    merged = build_prds([(0, 3 << 20), (3 << 20, 3 << 20)])  # contiguous, then cut at the PRD limit
    assert merged == [(0, PRD_MAX_BYTES), (PRD_MAX_BYTES, 2 << 20)]
    with pytest.raises(KernelError):
        build_prds([(0x1001, 512)])


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 3000).map(lambda n: 2 * n), min_size=1, max_size=60),
       gaps=st.lists(st.booleans(), min_size=60, max_size=60), max_prds=st.integers(1, 8),
       max_blocks=st.integers(1, 20))
def test_split_prds_keeps_the_bytes_in_order_in_whole_blocks(lengths: list[int], gaps: list[bool], max_prds: int,
                                                              max_blocks: int) -> None:
    block = 512
    total = sum(lengths)
    lengths[-1] += -total % block  # a request is whole blocks
    prds, addr = [], 0x10000
    for length, gap in zip(lengths, gaps, strict=False):
        prds.append((addr, length))
        addr += length + (4096 if gap else 0)
    try:
        chunks = split_prds(prds, block, max_prds, max_blocks * block)
    except KernelError as e:  # only when one block is spread over more PRDs than a command holds
        assert e.errno == errno.EINVAL
        return
    flat = [(a + i, 1) for chunk in chunks for a, n in chunk for i in range(0, n, 2)]
    expected = [(a + i, 1) for a, n in prds for i in range(0, n, 2)]
    assert flat == expected
    for chunk in chunks:
        size = sum(n for _, n in chunk)
        assert size % block == 0 and 0 < size <= max_blocks * block and len(chunk) <= max_prds


def test_a_long_scattered_request_becomes_several_ncq_commands(machine: Machine,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    driver = machine.driver
    prepared: list[tuple[int, int]] = []
    real_prep = driver._prep

    def spy(tag: int, command: object) -> None:
        prepared.append((tag, len(command.prds)))  # type: ignore[attr-defined]
        real_prep(tag, command)  # type: ignore[arg-type]

    monkeypatch.setattr(driver, "_prep", spy)
    pages = PRDS_PER_TABLE + 100
    segments = machine.segments(pages * PAGE_SIZE, scatter=True)
    machine.execute(ReqOp.READ, 16, pages * 8, segments)
    assert [n for _, n in prepared] == [PRDS_PER_TABLE, 100]
    assert len({tag for tag, _ in prepared}) == 2  # two tags, issued together
    assert machine.ram(segments) == machine.data[16 * SECTOR : (16 + pages * 8) * SECTOR]


def test_an_ncq_error_fails_its_tag_and_the_innocent_tags_go_again(machine: Machine) -> None:
    """ata_eh_analyze_ncq_error: log 10h names the failed tag; the device aborted the others, which are retried."""
    pages = PRDS_PER_TABLE + 100
    segments = machine.segments(pages * PAGE_SIZE, scatter=True)
    bad = 16 + 8 * 10  # in the first of the two commands
    machine.driver.hba.badblocks.set(bad, 1)
    counts = machine.driver.counts
    before = counts["READ FPDMA QUEUED"]  # the partition scan's reads at boot
    with pytest.raises(AtaError) as info:
        machine.execute(ReqOp.READ, 16, pages * 8, segments)
    assert info.value.errno == errno.ENODATA and info.value.bad_lba == bad and not info.value.retry
    assert counts["READ FPDMA QUEUED"] - before == 3  # 2 issued, then the innocent one again
    assert counts["READ LOG EXT"] == 1
    second = segments[PRDS_PER_TABLE:]
    start = 16 + PRDS_PER_TABLE * 8
    assert machine.ram(second) == machine.data[start * SECTOR : (start + 100 * 8) * SECTOR]
    log = machine.log().splitlines()
    assert log.count("ata1.00: failed command: READ FPDMA QUEUED") == 1  # only the culprit is reported
    assert any(line.endswith("Emask 0x409 (media error) <F>") for line in log)
    assert "sd 0:0:0:0: [sda] tag#0 Add. Sense: Unrecovered read error - auto reallocate failed" in log


def test_a_large_contiguous_segment_takes_several_prds(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = machine.driver
    prepared: list[list[tuple[int, int]]] = []
    real_prep = driver._prep
    monkeypatch.setattr(driver, "_prep", lambda tag, cmd: (prepared.append(list(cmd.prds)), real_prep(tag, cmd)))
    nbytes = 9 << 20
    pfns = machine.pages(nbytes // PAGE_SIZE)
    assert pfns == list(range(pfns[0], pfns[0] + len(pfns)))
    segments = [(pfns[0] << PAGE_SHIFT, nbytes)]
    machine.execute(ReqOp.READ, 0, nbytes // SECTOR, segments)
    assert [n for _, n in prepared[0]] == [PRD_MAX_BYTES, PRD_MAX_BYTES, 1 << 20]
    assert machine.ram(segments) == machine.data[:nbytes]


# ---------------------------------------------------------------------------------------------
# sysfs


def sys_node(machine: Machine, path: str, *, follow: bool = True) -> GenDir | GenFile | GenSymlink:
    """The sysfs node at `path`, following symlinks on the way (and at the end if `follow`)."""
    root = machine.kernel.sysfs.root
    parts = path.split("/")
    done: list[str] = []
    node: GenDir | GenFile | GenSymlink = root
    while parts:
        part = parts.pop(0)
        assert isinstance(node, GenDir), path
        child = node.lookup(part.encode(), ROOT_CRED)
        assert isinstance(child, GenDir | GenFile | GenSymlink), path
        if isinstance(child, GenSymlink) and (parts or follow):
            target = posixpath.normpath(posixpath.join("/".join(done), child.readlink().decode()))
            parts = target.split("/") + parts
            done, node = [], root
            continue
        done.append(part)
        node = child
    return node


def sys_read(machine: Machine, path: str) -> str:
    node = sys_node(machine, path)
    assert isinstance(node, GenFile), path
    return node.show()


def test_sysfs_has_the_scsi_layout_lsblk_reads(machine: Machine) -> None:
    sdev = "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0"
    assert sys_read(machine, f"{sdev}/vendor") == "ATA     \n"
    assert sys_read(machine, f"{sdev}/model") == f"{MODEL}\n"
    assert sys_read(machine, f"{sdev}/rev") == "0.1 \n"
    assert sys_read(machine, f"{sdev}/type") == "0\n"
    assert sys_read(machine, f"{sdev}/state") == "running\n"
    assert sys_read(machine, f"{sdev}/queue_depth") == "31\n"
    assert sys_read(machine, f"{sdev}/scsi_level") == "6\n"
    subsystem = sys_node(machine, f"{sdev}/subsystem", follow=False)
    assert isinstance(subsystem, GenSymlink) and subsystem.readlink().endswith(b"bus/scsi")
    device = sys_node(machine, f"{sdev}/block/sda/device", follow=False)
    assert isinstance(device, GenSymlink) and device.readlink() == b"../../../0:0:0:0"
    assert sys_read(machine, "class/scsi_host/host0/proc_name") == "ahci\n"
    host_link = sys_node(machine, "class/scsi_host/host0", follow=False)
    assert isinstance(host_link, GenSymlink)
    assert host_link.readlink() == b"../../devices/pci0000:00/0000:00:1f.2/ata1/host0/scsi_host/host0"
    pci = "devices/pci0000:00/0000:00:1f.2"
    assert (sys_read(machine, f"{pci}/vendor"), sys_read(machine, f"{pci}/device"),
            sys_read(machine, f"{pci}/class")) == ("0x8086\n", "0x2922\n", "0x010601\n")
    assert sys_read(machine, "class/ata_port/ata1/port_no") == "1\n"
    assert sys_read(machine, "block/sda/dev") == "8:0\n"
    words = sys_read(machine, "class/ata_device/dev1.0/id").split()
    assert len(words) == 256 and int(words[217], 16) == 1


def test_cache_type_turns_the_write_cache_off_and_on(machine: Machine) -> None:
    store = sys_node(machine, "class/scsi_disk/0:0:0:0/cache_type")
    assert isinstance(store, GenFile) and store.store is not None
    assert store.show() == "write back\n"
    store.store("write through\n")
    assert machine.disk.queue.limits.write_cache == "write through" and store.show() == "write through\n"
    assert machine.driver.identity is not None and not machine.driver.identity.write_cache
    store.store("write back")
    assert machine.disk.queue.limits.write_cache == "write back"
    with pytest.raises(KernelError) as info:
        store.store("sometimes")
    assert info.value.errno == errno.EINVAL
