"""Fuzz target: hostile partition tables through `rinuxfs.block.partitions.probe`.

A case is a `FuzzDisk`: a capacity, a logical block size, the `force_gpt`
switch and a sparse map of the sectors that hold something (everything else
reads as zeros), plus pages whose read fails. Cases come from three
strategies: GPTs built field by field (every header field sane, absurd or
random; CRCs right by default, so that a bad field is not caught by its CRC;
backup headers, entry arrays of any size and place, entries overlapping, out
of order, ending before they start or past the disk; protective MBRs that
lie), MBRs with EBR chains (loops, links outside the extended partition or the
disk, garbage in slots 3 and 4, DR-DOS order, AIX and FAT superfloppy
sectors), and plain garbage.

`check_partitions(disk)` scans the disk and checks:
- probe returns (never raises) and reads only sectors inside the disk, a
  bounded number of them; probing twice gives the same result;
- the registered partitions lie inside the disk with distinct numbers;
- everything equals what Linux's own scan gives (`linux_partitions`, with
  rinuxfs's documented deviations): the outcome (table, none, I/O error),
  the label, each partition's number, start, size, PARTUUID, PARTNAME and
  RAID flag, and the kernel log lines, in order.
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from fuzzing.linux_partitions import GPT_ENTRY, GPT_HEADER, LINUX_RAID_GUID, MBR_SLOT, U64, linux_scan
from rinuxfs.block.partitions import ScanResult, probe
from rinuxfs.mkdisk import format_sfdisk_json, format_sfdisk_list

SECTOR = 512
ZERO = bytes(SECTOR)
MAX_SECTORS_READ = 1 << 16  # 32 MiB: the most a scan may touch (a 4 MiB entry array, twice, and EBR chains)
LINUX_FS_GUID = bytes.fromhex("af3dc60f838472478e793d69d8477de4")  # 0FC63DAF-8483-4772-8E79-3D69D8477DE4, on disk

# Lines rinuxfs adds to Linux's (at KERN_DEBUG, to say why a scan found nothing or stopped early).
RINUXFS_ONLY_LINES = re.compile(
    r"^\S+: (read of sectors \d+\+\d+ failed: |EBR chain: |FAT boot sector without |p\d+ holds an? \w+ label: )")


@dataclass(repr=False)
class FuzzDisk:
    nr_lbas: int
    lbs: int = 512
    force_gpt: bool = False
    name: str = "sda"
    sectors: dict[int, bytes] = field(default_factory=dict)  # 512-byte sector number -> its bytes
    bad_pages: frozenset[int] = frozenset()  # 4 KiB pages whose read fails (EIO)
    reads: int = 0  # sectors read so far

    @property
    def capacity(self) -> int:
        return self.nr_lbas * self.lbs // SECTOR

    @property
    def last_lba(self) -> int:
        return self.nr_lbas - 1

    # --- building ------------------------------------------------------------------------------

    def put(self, byte_offset: int, data: bytes) -> None:
        """Write bytes anywhere inside the disk (what lies beyond the end is dropped)."""
        end = min(byte_offset + len(data), self.capacity * SECTOR)
        pos = byte_offset
        while pos < end:
            n, off = divmod(pos, SECTOR)
            chunk = data[pos - byte_offset:pos - byte_offset + min(SECTOR - off, end - pos)]
            old = self.sectors.get(n, ZERO)
            self.sectors[n] = old[:off] + chunk + old[off + len(chunk):]
            pos += len(chunk)

    def put_lba(self, lba: int, data: bytes) -> None:
        if 0 <= lba < self.nr_lbas:
            self.put(lba * self.lbs, data)

    def get(self, byte_offset: int, length: int) -> bytes:
        out = bytearray()
        pos = byte_offset
        while len(out) < length:
            n, off = divmod(pos, SECTOR)
            take = min(SECTOR - off, length - len(out))
            out += self.sectors.get(n, ZERO)[off:off + take] if n < self.capacity else bytes(take)
            pos += take
        return bytes(out)

    # --- reading (rinuxfs's callback and the oracle's page cache) -----------------------------

    def read(self, first: int, count: int) -> bytes:
        assert count > 0 and 0 <= first and first + count <= self.capacity, f"read of {first}+{count} outside the disk"
        self.reads += count
        assert self.reads <= MAX_SECTORS_READ, "the scan reads without end"
        if any(n >> 3 in self.bad_pages for n in range(first, first + count)):
            raise OSError(errno.EIO, "Input/output error")
        return b"".join(self.sectors.get(n, ZERO) for n in range(first, first + count))

    def page(self, index: int) -> bytes | None:
        if index in self.bad_pages:
            return None
        first = index * 8
        return b"".join(self.sectors.get(n, ZERO) for n in range(first, min(first + 8, self.capacity)))

    def write_image(self, path: Path) -> None:
        """The disk as a sparse image file (for `rinuxfs inspect` and `mount`)."""
        with open(path, "wb") as f:
            f.truncate(self.capacity * SECTOR)
            for n, data in self.sectors.items():
                os.pwrite(f.fileno(), data, n * SECTOR)

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:  # what hypothesis prints for a failing case
        printer.text(repr(self))  # type: ignore[attr-defined]

    def __repr__(self) -> str:  # evaluable again (scripts/fuzz --replay), the zeros left out
        used = {n: d.rstrip(b"\0").hex() for n, d in sorted(self.sectors.items()) if d.strip(b"\0")}
        sectors = ", ".join(f"{n}: bytes.fromhex({h!r}).ljust({SECTOR}, bytes(1))" for n, h in used.items())
        return (f"FuzzDisk(nr_lbas={self.nr_lbas}, lbs={self.lbs}, force_gpt={self.force_gpt}, name={self.name!r},"
                f" bad_pages=frozenset({sorted(self.bad_pages)}), sectors={{{sectors}}})")


# --- strategies ------------------------------------------------------------------------------------

u32s = st.integers(0, 0xFFFFFFFF)
u64s = st.integers(0, U64)


GPT_FAULTS = ("signature", "revision", "header_size", "reserved1", "my_lba", "alternate_lba", "first_usable_lba",
              "last_usable_lba", "sizeof_partition_entry", "num_partition_entries", "partition_entry_lba",
              "header_crc", "entries_crc", "header_tail", "pmbr", "backup", "backup_lba", "backup_fields")
faults_of = st.sets(st.sampled_from(GPT_FAULTS), max_size=3)  # a few at a time: the others stay sane


def pick(draw: st.DrawFn, faults: set[str], name: str, sane: int, absurd: list[int], bits: int = 64) -> int:
    """The sane value unless `name` is one of the case's faults: then an absurd value, or anything."""
    if name not in faults:
        return sane
    if draw(st.integers(0, 3)):
        return draw(st.sampled_from(absurd)) & ((1 << bits) - 1)
    return draw(st.integers(0, (1 << bits) - 1))


@st.composite
def geometry(draw: st.DrawFn, small: int = 1) -> FuzzDisk:
    lbs = draw(st.sampled_from([512, 512, 512, 4096]))
    nr_lbas = draw(st.one_of(st.integers(small, 80), st.integers(64, 3000),
                             st.sampled_from([0, 1, 2, 34, 67, 68, 2048, 1 << 20, (1 << 32) + 7, 1 << 40])))
    return FuzzDisk(nr_lbas, lbs, force_gpt=draw(st.booleans()), name=draw(st.sampled_from(["sda", "nvme0n1"])))


@st.composite
def lba_in(draw: st.DrawFn, disk: FuzzDisk, pool: list[int]) -> int:
    """An LBA that lands in interesting places: near the start, near the end, reused, or anywhere."""
    last = max(disk.last_lba, 0)
    return draw(st.one_of(st.integers(0, 40), st.integers(max(0, last - 40), last + 2), st.sampled_from(pool),
                          st.integers(0, last + 1), u64s))


def gpt_entry(type_guid: bytes, unique: bytes, start: int, end: int, attrs: int, name: bytes) -> bytes:
    return GPT_ENTRY.pack(type_guid, unique, start & U64, end & U64, attrs, name)


@st.composite
def gpt_entries(draw: st.DrawFn, disk: FuzzDisk, num: int) -> dict[int, bytes]:
    """Sparse entries: index -> 128 bytes, with overlapping, unordered, reversed and out-of-disk spans."""
    pool = [0, 1, 2, 34, 2048, disk.last_lba - 1, disk.last_lba, disk.last_lba + 1]
    entries: dict[int, bytes] = {}
    limit = max(1, min(num, 300))
    for _ in range(draw(st.integers(0, 6))):
        index = draw(st.one_of(st.integers(0, min(limit, 8) - 1), st.integers(0, limit - 1),
                               st.integers(min(254, limit - 1), min(256, limit - 1))))  # around the 255 cut
        start = draw(lba_in(disk, pool))
        end = draw(st.one_of(st.integers(start, start + 100), lba_in(disk, pool),
                             st.sampled_from([start - 1, start - 2, start + 0x10000])))
        pool += [start, end]
        kind = draw(st.sampled_from(["linux", "linux", "raid", "zero", "random"]))
        type_guid = {"linux": LINUX_FS_GUID, "raid": LINUX_RAID_GUID, "zero": bytes(16)}.get(kind) or draw(
            st.binary(min_size=16, max_size=16))
        name = draw(st.one_of(st.just("root".encode("utf-16-le")), st.binary(max_size=72),
                              st.text(max_size=36).map(lambda t: t.encode("utf-16-le", "surrogatepass")[:72])))
        entries[index] = gpt_entry(type_guid, draw(st.binary(min_size=16, max_size=16)), start, end,
                                   draw(st.sampled_from([0, 1, 4, U64])), name.ljust(72, b"\0")[:72])
    return entries


def header_bytes(fields: dict[str, int | bytes], lbs: int, tail: bytes, fix_crc: bool) -> bytes:
    order = ("signature", "revision", "header_size", "header_crc32", "reserved1", "my_lba", "alternate_lba",
             "first_usable_lba", "last_usable_lba", "disk_guid", "partition_entry_lba", "num_partition_entries",
             "sizeof_partition_entry", "partition_entry_array_crc32")
    values = [v if isinstance(v, bytes) else v & (U64 if code == "Q" else 0xFFFFFFFF)
              for v, code in zip((fields[k] for k in order), "QIIIIQQQQ-QIII", strict=True)]
    block = bytearray((GPT_HEADER.pack(*values) + tail).ljust(lbs, b"\0")[:lbs])
    if fix_crc:
        size = fields["header_size"]
        assert isinstance(size, int)
        block[16:20] = struct.pack("<I", zlib.crc32(bytes(block[:16]) + bytes(4) + bytes(block[20:min(size, lbs)])))
    return bytes(block)


def gpt_header(draw: st.DrawFn, faults: set[str], disk: FuzzDisk, my_lba: int, entry_lba: int,
               num: int) -> dict[str, int | bytes]:
    last = disk.last_lba
    blocks = -(-num * 128 // disk.lbs)
    return {
        "signature": pick(draw, faults, "signature", 0x5452415020494645, [0, 0x5452415020494646]),
        "revision": pick(draw, faults, "revision", 0x00010000, [0, 1], 32),
        "header_size": pick(draw, faults, "header_size", 92, [0, 91, 93, 200, disk.lbs, disk.lbs + 1, 0xFFFFFFFF], 32),
        "header_crc32": 0,
        "reserved1": pick(draw, faults, "reserved1", 0, [1], 32),
        "my_lba": pick(draw, faults, "my_lba", my_lba, [0, 1, 2, last, my_lba + 1, U64]),
        "alternate_lba": pick(draw, faults, "alternate_lba", last if my_lba == 1 else 1,
                              [0, 1, 2, last - 1, last, last + 1, U64]),
        "first_usable_lba": pick(draw, faults, "first_usable_lba", 2 + blocks, [0, 1, last, last + 1, U64]),
        "last_usable_lba": pick(draw, faults, "last_usable_lba", max(last - 1 - blocks, 0),
                                [0, 1, last, last + 1, U64]),
        "disk_guid": draw(st.sampled_from([b"\x11" * 16, b"\x22" * 16])),
        "partition_entry_lba": entry_lba,
        "num_partition_entries": num,
        "sizeof_partition_entry": pick(draw, faults, "sizeof_partition_entry", 128, [0, 64, 127, 129, 256, 0xFFFFFFFF],
                                       32),
        "partition_entry_array_crc32": 0,
    }


def array_bytes(entries: dict[int, bytes], num: int) -> bytes:
    array = bytearray(num * 128)
    for index, raw in entries.items():
        if index < num:
            array[index * 128:(index + 1) * 128] = raw
    return bytes(array)


@st.composite
def pmbr(draw: st.DrawFn, disk: FuzzDisk, faulty: bool) -> bytes:
    """Sector 0 of a GPT disk: protective, or else hybrid, lying about its size or start, or missing."""
    kind = draw(st.sampled_from(["hybrid", "lying", "elsewhere", "none", "nosig", "protective"])) if faulty \
        else "protective"
    if kind == "none":
        return ZERO
    slots = [(0, b"", 0, b"", 0, 0)] * 4
    ee = draw(st.integers(0, 3)) if faulty else 0
    size = min(disk.capacity - 1, 0xFFFFFFFF) & 0xFFFFFFFF if disk.capacity else 0
    if kind == "lying":
        size = draw(st.sampled_from([0, 1, 0xFFFFFFFF, size + 1, 12345]))
    slots[ee] = (0, b"", 0xEE, b"", 2 if kind == "elsewhere" else 1, size)
    if kind == "hybrid":
        slots[(ee + 1) % 4] = (0x80, b"", draw(st.sampled_from([0x83, 0xEF, 0x05, 0x07])), b"", 2048, 4096)
    raw = bytes(446) + b"".join(MBR_SLOT.pack(*s) for s in slots) + (b"\0\0" if kind == "nosig" else b"\x55\xaa")
    return raw


@st.composite
def gpt_disks(draw: st.DrawFn) -> FuzzDisk:
    disk = draw(geometry(small=2))
    faults = draw(faults_of)
    last = disk.last_lba
    num = pick(draw, faults, "num_partition_entries", draw(st.sampled_from([128, 128, 4, 255])),
               [0, 1, 256, 512, 32768, 32769, 0xFFFFFFFF], 32)
    size_ok = num * 128 <= 4 << 20
    blocks = -(-num * 128 // disk.lbs)
    entry_lba = pick(draw, faults, "partition_entry_lba", 2, [0, 1, 3, last - blocks, last - 1, last, last + 1, U64])
    entries = draw(gpt_entries(disk, num))
    disk.put_lba(0, draw(pmbr(disk, "pmbr" in faults)))
    array = array_bytes(entries, num) if size_ok else b""
    if array:
        disk.put_lba(entry_lba, array)
    primary = gpt_header(draw, faults, disk, 1, entry_lba, num)
    tail = draw(st.binary(min_size=1, max_size=64)) if "header_tail" in faults else b""
    fix_crc = "header_crc" not in faults
    if "backup" not in faults:  # a backup header, mirrored unless its own fields are faulty
        backup_at = pick(draw, faults, "backup_lba", last, [primary["alternate_lba"], last - 1, 1, 2])  # type: ignore
        backup_entries = pick(draw, faults, "backup_lba", last - blocks, [entry_lba, 2, last, U64])
        if array and backup_entries != entry_lba:
            disk.put_lba(backup_entries, array)
        backup = dict(primary, my_lba=backup_at, alternate_lba=1, partition_entry_lba=backup_entries)
        if "backup_fields" in faults:
            backup.update(gpt_header(draw, set(draw(faults_of)), disk, backup_at, backup_entries, num))
        backup["partition_entry_array_crc32"] = zlib.crc32(disk.get(backup_entries * disk.lbs, len(array))) \
            if array and backup_entries <= last else 0
        disk.put_lba(backup_at, header_bytes(backup, disk.lbs, tail, fix_crc))
    if array and entry_lba <= last:
        primary["partition_entry_array_crc32"] = zlib.crc32(disk.get(entry_lba * disk.lbs, len(array)))
    if "entries_crc" in faults:
        primary["partition_entry_array_crc32"] = draw(u32s)
    disk.put_lba(1, header_bytes(primary, disk.lbs, tail, fix_crc))
    flip(draw, disk)
    return disk


def flip(draw: st.DrawFn, disk: FuzzDisk) -> None:
    """Now and then, corrupt a few bytes of what was written, and maybe a whole page's readability."""
    if disk.sectors and draw(st.integers(0, 5)) == 0:
        for _ in range(draw(st.integers(1, 4))):
            n = draw(st.sampled_from(sorted(disk.sectors)))
            off, xor = draw(st.integers(0, SECTOR - 1)), draw(st.integers(1, 255))
            data = bytearray(disk.sectors[n])
            data[off] ^= xor
            disk.sectors[n] = bytes(data)
    if disk.capacity and draw(st.integers(0, 15)) == 0:
        pages = {0, (disk.capacity - 1) >> 3, *(n >> 3 for n in disk.sectors)}
        disk.bad_pages = frozenset(draw(st.sets(st.sampled_from(sorted(pages)), max_size=2)))


def mbr_slot(boot: int, kind: int, start: int, size: int) -> bytes:
    return MBR_SLOT.pack(boot, b"", kind, b"", start & 0xFFFFFFFF, size & 0xFFFFFFFF)


def mbr_sector(slots: list[bytes], head: bytes = b"", signature: bytes = b"\x55\xaa") -> bytes:
    return head.ljust(446, b"\0")[:446] + b"".join(slots).ljust(64, b"\0") + signature


slot_kinds = st.sampled_from([0x83, 0x83, 0x82, 0x05, 0x0F, 0x85, 0xFD, 0x07, 0x54, 0x55, 0x00, 0xA5, 0x81, 0x63, 0xBF])
mbr_kinds = st.one_of(slot_kinds, st.just(0xEE), st.integers(0, 255))


@st.composite
def msdos_disks(draw: st.DrawFn) -> FuzzDisk:
    disk = draw(geometry())
    last = max(disk.last_lba, 0)
    near = st.one_of(st.integers(0, 64), st.integers(max(0, last - 64), last + 64), st.integers(0, 0xFFFFFFFF))
    slots = []
    extended: list[tuple[int, int]] = []
    bad_boot = draw(st.integers(0, 7)) == 0  # a boot indicator other than 0x00/0x80: not a partition table
    for _ in range(4):
        kind = draw(mbr_kinds)
        start, size = draw(near), draw(st.one_of(st.integers(1, 2048), near))
        boot = draw(st.sampled_from([0, 0x80, 1, 0x7F] if bad_boot else [0, 0x80]))
        slots.append(mbr_slot(boot, kind, start, size))
        if kind in (0x05, 0x0F, 0x85):
            extended.append((start, size))
    head = draw(st.sampled_from([b"", b"", b"\xc9\xc2\xd4\xc1",  # AIX's IBMA
                                 b"\xeb\x3c\x90mkfs.fat\x00\x02\x04\x01\x00\x02\x00\x02\x00\x00\xf8"]))  # FAT
    disk.put_lba(0, mbr_sector(slots, head, draw(st.sampled_from([b"\x55\xaa"] * 6 + [b"\0\0"]))))
    if head.startswith(b"\xc9") and draw(st.booleans()):
        disk.put(7 * 512, b"_LVM")
    for ext_start, ext_size in extended[:2]:
        ebr_chain(draw, disk, ext_start, ext_size)
    flip(draw, disk)
    return disk


def ebr_chain(draw: st.DrawFn, disk: FuzzDisk, ext_start: int, ext_size: int) -> None:
    """EBRs inside (and around) an extended partition, linked in every wrong way too."""
    ssz = disk.lbs // SECTOR
    count = draw(st.integers(0, 8))
    rel = sorted(set(draw(st.lists(st.integers(0, max(ext_size, 1) + 4), min_size=count, max_size=count))))
    rel = [0, *[r for r in rel if r]] if count else []
    for i, r in enumerate(rel):
        data = mbr_slot(0, draw(slot_kinds), draw(st.integers(0, 70)), draw(st.integers(0, 300))) \
            if draw(st.integers(0, 4)) else bytes(16)
        target = draw(st.sampled_from(["next", "next", "next", "self", "first", "back", "outside", "beyond", "none"]))
        nxt = rel[i + 1] if i + 1 < len(rel) else None
        at = {"next": nxt, "self": r, "first": 0, "back": rel[max(i - 1, 0)], "outside": ext_size + 10,
              "beyond": (disk.capacity // ssz) + 5, "none": None}[target]
        link = mbr_slot(0, draw(st.sampled_from([0x05, 0x0F, 0x85])), at, draw(st.integers(1, 400))) \
            if at is not None else bytes(16)
        extra = [draw(st.binary(min_size=16, max_size=16)) for _ in range(2)] if draw(st.integers(0, 5)) == 0 \
            else [bytes(16), bytes(16)]
        entries = [link, data, *extra] if draw(st.integers(0, 7)) == 0 else [data, link, *extra]  # DR-DOS order
        signature = b"\x55\xaa" if draw(st.integers(0, 9)) else b"\xaa\x55"
        disk.put_lba(ext_start + r, mbr_sector(entries, b"", signature))


@st.composite
def garbage_disks(draw: st.DrawFn) -> FuzzDisk:
    disk = draw(geometry())
    last = max(disk.last_lba, 0)
    for _ in range(draw(st.integers(0, 5))):
        lba = draw(st.one_of(st.integers(0, 3), st.integers(max(0, last - 3), last), st.integers(0, last)))
        disk.put_lba(lba, draw(st.binary(max_size=disk.lbs)))
    if draw(st.booleans()):  # garbage that at least gets past the first signature checks
        disk.put(510, b"\x55\xaa")
    flip(draw, disk)
    return disk


def disks() -> st.SearchStrategy[FuzzDisk]:
    return st.one_of(gpt_disks(), msdos_disks(), garbage_disks())


# --- the check --------------------------------------------------------------------------------------


def check_partitions(disk: FuzzDisk) -> str:
    """Scan `disk`, check it as the module docstring says; return a label of what was found (for statistics)."""
    result = probe(disk.read, disk.capacity, disk.lbs, force_gpt=disk.force_gpt, disk_name=disk.name)
    assert isinstance(result, ScanResult)
    disk.reads = 0
    again = probe(disk.read, disk.capacity, disk.lbs, force_gpt=disk.force_gpt, disk_name=disk.name)
    assert again == result, "two scans of the same disk differ"
    check_table_invariants(disk, result)
    ref = linux_scan(disk, truncate_wrapped=True)
    ours = [(level, text) for level, text in result.messages if not RINUXFS_ONLY_LINES.match(text)]
    assert ours == ref.messages, f"log lines differ:\n  rinuxfs: {ours}\n  Linux:   {ref.messages}"
    if ref.outcome == "error":
        assert result.table is None and result.error == -errno.EIO, f"Linux fails the scan, rinuxfs: {result}"
        return "error"
    if ref.outcome == "none":
        assert result.table is None and not result.error and result.reason, f"Linux finds no table: {result}"
        return "none"
    assert result.table is not None, f"Linux finds a {ref.label} table, rinuxfs none: {result.reason}"
    assert result.table.label == ref.label
    if ref.sublabel:
        return f"{ref.label}+sublabel"
    got = {p.number: (p.start, p.size, p.uuid, p.volname, p.raid) for p in result.table.partitions}
    want = {n: (p.start, p.size, p.uuid, p.volname, p.raid) for n, p in ref.parts.items()}
    assert got == want, f"partitions differ:\n  rinuxfs: {got}\n  Linux:   {want}"
    return f"{ref.label}:{'many' if len(got) > 8 else len(got)}{'+wrapped' if ref.wrapped else ''}"


def check_table_invariants(disk: FuzzDisk, result: ScanResult) -> None:
    for level, text in result.messages:
        assert 0 <= level <= 7 and isinstance(text, str) and "\n" not in text
    if result.table is None:
        assert result.reason
        return
    # What `rinuxfs inspect` prints of the table: sfdisk -l's text and valid JSON.
    listing = format_sfdisk_list(result.table, "disk.img", disk.capacity * SECTOR)
    assert listing.startswith("Disk disk.img: ") and listing.endswith("\n")
    doc = json.loads(format_sfdisk_json(result.table, "disk.img"))
    assert len(doc["partitiontable"].get("partitions", [])) == len(result.table.partitions)
    numbers = [p.number for p in result.table.partitions]
    assert numbers == sorted(set(numbers)) and all(1 <= n <= 255 for n in numbers)
    for p in result.table.partitions:
        assert 0 <= p.start < disk.capacity and 0 < p.size and p.start + p.size <= disk.capacity, p
