"""The partition layouts and the kernel-faithful scan, on disks held in memory.

Expected values come from Linux's block/partitions/{efi,msdos,core}.c as
storage.md §2 describes them, not from util-linux (tests/integration does that).
"""

from __future__ import annotations

import errno
import struct
import zlib
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rinuxfs.block.partitions import Partition, PartitionTable, ScanResult, probe, scan
from rinuxfs.block.partitions.efi import (
    GPT_ENTRY_SIZE,
    GptEntry,
    GptHeader,
    GptPartition,
    build_gpt,
    build_protective_mbr,
    header_crc32,
    utf16_le_to_7bit,
)
from rinuxfs.block.partitions.msdos import (
    Ebr,
    LogicalPartition,
    Mbr,
    MbrPartition,
    PartitionEntry,
    build_ebr,
    build_mbr,
    build_msdos,
    lba_to_chs,
)
from rinuxfs.block.partitions.types import (
    EFI_SYSTEM,
    LINUX_FILESYSTEM,
    LINUX_RAID,
    LINUX_SWAP,
    MICROSOFT_BASIC_DATA,
)
from rinuxfs.printk import KERN_DEBUG, KERN_INFO, KERN_WARNING

MIB = 2048  # sectors
DISK_GUID = UUID("01234567-89AB-CDEF-0123-456789ABCDEF")


def guid(n: int) -> UUID:
    return UUID(f"11111111-0000-4000-8000-{n:012x}")


class Disk:
    """A disk in memory, addressed in 512-byte sectors like read_part_sector."""

    def __init__(self, nr_sectors: int, lbs: int = 512) -> None:
        self.data = bytearray(nr_sectors * 512)
        self.lbs = lbs
        self.reads: list[tuple[int, int]] = []

    @property
    def nr_sectors(self) -> int:
        return len(self.data) // 512

    def write(self, lba: int, data: bytes) -> None:
        assert lba * self.lbs + len(data) <= len(self.data), "a write past the end would grow the disk"
        self.data[lba * self.lbs:lba * self.lbs + len(data)] = data

    def write_all(self, writes: list[tuple[int, bytes]]) -> Disk:
        for lba, data in writes:
            self.write(lba, data)
        return self

    def block(self, lba: int) -> bytes:
        return bytes(self.data[lba * self.lbs:(lba + 1) * self.lbs])

    def read(self, first: int, count: int) -> bytes:
        self.reads.append((first, count))
        return bytes(self.data[first * 512:(first + count) * 512])

    def probe(self, **kw: bool) -> ScanResult:
        return probe(self.read, self.nr_sectors, self.lbs, disk_name="sda", **kw)

    def table(self, **kw: bool) -> PartitionTable:
        result = self.probe(**kw)
        assert result.table is not None, result.reason
        return result.table


def part(table: PartitionTable, number: int) -> Partition:
    p = table.partition(number)
    assert p is not None, f"no partition {number}"
    return p


def numbers(table: PartitionTable) -> list[int]:
    return [p.number for p in table.partitions]


def spans(table: PartitionTable) -> list[tuple[int, int, int]]:
    return [(p.number, p.start, p.size) for p in table.partitions]


def std_gpt_parts() -> list[GptPartition]:
    """storage.md §3.2's layout, with p3 moved to slot 4 to leave a gap."""
    return [GptPartition(1, 2048, 34815, EFI_SYSTEM, guid(1), "EFI"),
            GptPartition(2, 34816, 67583, LINUX_SWAP, guid(2), "swap"),
            GptPartition(4, 67584, 129023, LINUX_FILESYSTEM, guid(3), "root")]


def gpt_disk(nr_sectors: int = 64 * MIB, parts: list[GptPartition] | None = None, **kw: int) -> Disk:
    return Disk(nr_sectors).write_all(build_gpt(nr_sectors, std_gpt_parts() if parts is None else parts, DISK_GUID,
                                                first_usable_lba=2048, **kw))


def rewrite_header(disk: Disk, lba: int, *, fix_crc: bool = True, tail: bytes = b"", **changes: int) -> None:
    """Change fields of the header at `lba`, then (by default) make its CRC right again."""
    block = bytearray(disk.block(lba))
    fields = GptHeader.parse(bytes(block))
    fields.update(changes)
    raw = GptHeader.build(fields)
    block[:len(raw)] = raw
    block[len(raw):len(raw) + len(tail)] = tail
    if fix_crc:
        size = min(fields.header_size, len(block))
        block[16:20] = struct.pack("<I", header_crc32(bytes(block), size))
    disk.write(lba, bytes(block))


def refresh_entries_crc(disk: Disk, header_lbas: tuple[int, ...] = (1,)) -> None:
    for lba in header_lbas:
        h = GptHeader.parse(disk.block(lba))
        raw = bytes(disk.data[h.partition_entry_lba * 512:][:h.num_partition_entries * GPT_ENTRY_SIZE])
        rewrite_header(disk, lba, partition_entry_array_crc32=zlib.crc32(raw))


# --- layouts -------------------------------------------------------------------------------------


def test_layout_sizes_match_the_c_structs() -> None:
    assert PartitionEntry.sizeof() == 16
    assert Mbr.sizeof() == 512 and Ebr.sizeof() == 512
    assert GptHeader.sizeof() == 92
    assert GptEntry.sizeof() == 128


def test_mbr_fields_sit_at_their_offsets() -> None:
    sector = build_mbr(0xDEADBEEF, [None, MbrPartition(0x01020304, 0x0A0B0C0D, 0x83, bootable=True)])
    assert sector[0x1B8:0x1BC] == b"\xef\xbe\xad\xde"
    slot2 = sector[0x1CE:0x1DE]
    assert slot2[0] == 0x80 and slot2[4] == 0x83
    assert slot2[8:12] == b"\x04\x03\x02\x01" and slot2[12:16] == b"\x0d\x0c\x0b\x0a"  # little-endian, not Int32ub
    assert sector[0x1BE:0x1CE] == bytes(16)
    assert sector[510:] == b"\x55\xaa"


def test_chs_is_libfdisks_255_63_geometry_and_saturates() -> None:
    # Bytes from an sfdisk-made image: LBA 2048 is 20 21 00, 34815 is 2a 28 02.
    assert build_mbr(0, [MbrPartition(2048, 32768, 0x83)])[0x1BF:0x1C6] == bytes.fromhex("202100832a2802")
    assert lba_to_chs(41943039) == {"head": 254, "cylinder_high": 3, "sector": 63, "cylinder_low": 255}


def test_gpt_header_fields_sit_at_their_offsets() -> None:
    header = gpt_disk().block(1)
    assert header[:8] == b"EFI PART" and header[8:12] == b"\x00\x00\x01\x00" and header[12:16] == b"\x5c\0\0\0"
    assert struct.unpack_from("<QQQQ", header, 0x18) == (1, 64 * MIB - 1, 2048, 64 * MIB - 34)
    assert header[0x38:0x48] == DISK_GUID.bytes_le
    assert struct.unpack_from("<QIII", header, 0x48)[:3] == (2, 128, 128)
    assert header[92:] == bytes(512 - 92)


def test_guids_are_mixed_endian_on_disk() -> None:
    entry = gpt_disk().block(2)[:GPT_ENTRY_SIZE]
    assert entry[:16] == bytes.fromhex("28732ac11ff8d211ba4b00a0c93ec93b")  # EFI System, as sfdisk writes it
    parsed = GptEntry.parse(entry)
    assert parsed.partition_type_guid == EFI_SYSTEM and parsed.unique_partition_guid == guid(1)


def test_protective_mbr_is_libfdisks() -> None:
    pmbr = build_protective_mbr(131072)
    assert pmbr[0x1BE:0x1CE] == bytes.fromhex("00000200eeffffff01000000ffff0100")
    assert pmbr[:0x1BE] == bytes(0x1BE) and pmbr[510:] == b"\x55\xaa"
    assert build_protective_mbr(1 << 40)[0x1CA:0x1CE] == b"\xff\xff\xff\xff"  # capped at 2 TiB


# --- GPT -----------------------------------------------------------------------------------------


def test_gpt_round_trip_keeps_numbers_gaps_names_and_uuids() -> None:
    table = gpt_disk().table()
    assert (table.label, table.disk_id, table.first_usable_lba, table.last_usable_lba) == \
           ("gpt", "01234567-89AB-CDEF-0123-456789ABCDEF", 2048, 131038)
    assert (table.gpt_header, table.pmbr) == ("primary", "protective")
    assert spans(table) == [(1, 2048, 32768), (2, 34816, 32768), (4, 67584, 61440)]
    p4 = part(table, 4)
    assert (p4.type, p4.type_name, p4.uuid, p4.name, p4.volname) == (
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem", str(guid(3)), "root", "root")


def test_header_crc_is_crc32_with_the_field_zeroed() -> None:
    header = gpt_disk().block(1)
    assert struct.unpack_from("<I", header, 16)[0] == zlib.crc32(header[:16] + bytes(4) + header[20:92])


def test_entry_array_crc_covers_the_array() -> None:
    disk = gpt_disk()
    h = GptHeader.parse(disk.block(1))
    assert h.partition_entry_array_crc32 == zlib.crc32(bytes(disk.data[1024:1024 + 128 * 128]))


def test_built_entry_array_parses_and_rebuilds_to_the_same_bytes() -> None:
    disk = gpt_disk()
    raw = bytes(disk.data[1024:1024 + 128 * 128])
    for i in range(128):
        chunk = raw[i * 128:(i + 1) * 128]
        assert GptEntry.build(GptEntry.parse(chunk)) == chunk


def test_corrupt_primary_crc_means_no_table_unless_forced() -> None:
    disk = gpt_disk()
    disk.data[512 + 16] ^= 0xFF
    result = disk.probe()
    assert result.table is None and result.error == 0
    assert "Header CRC is wrong" in result.reason
    assert "valid backup header is at LBA 131071" in result.reason
    assert "dos: slot 1 has type 0xEE" in result.reason  # msdos leaves the disk to GPT
    forced = disk.table(force_gpt=True)
    assert forced.gpt_header == "alternate" and forced.pmbr == ""
    assert spans(forced) == [(1, 2048, 32768), (2, 34816, 32768), (4, 67584, 61440)]
    assert (KERN_WARNING, "Primary GPT is invalid, using alternate GPT.") in disk.probe(force_gpt=True).messages


def test_corrupt_backup_keeps_the_primary_with_a_warning() -> None:
    disk = gpt_disk()
    disk.data[(64 * MIB - 1) * 512 + 16] ^= 0xFF
    result = disk.probe()
    assert result.table is not None and result.table.gpt_header == "primary"
    assert (KERN_WARNING, "Alternate GPT is invalid, using primary GPT.") in result.messages


def test_forced_scan_without_any_valid_header_explains_both() -> None:
    disk = gpt_disk()
    disk.data[512 + 16] ^= 0xFF
    disk.data[(64 * MIB - 1) * 512 + 16] ^= 0xFF
    result = disk.probe(force_gpt=True)
    assert result.table is None
    assert "backup header at LBA 131071 is invalid too" in result.reason


HEADER_FAULTS: dict[str, tuple[dict[str, int], str]] = {
    "revision (not checked)": ({"revision": 1}, ""),
    "header_size small": ({"header_size": 91}, "Header size is too small: 91 < 92"),
    "header_size large": ({"header_size": 513}, "Header size is too large: 513 > 512"),
    "my_lba": ({"my_lba": 2}, "GPT my_lba incorrect: 2 != 1"),
    "first > last lba": ({"first_usable_lba": 131072}, "first_usable_lba incorrect: 131072 > 131071"),
    "last > last lba": ({"last_usable_lba": 131072}, "last_usable_lba incorrect: 131072 > 131071"),
    "last < first": ({"first_usable_lba": 5000, "last_usable_lba": 4000}, "last_usable_lba incorrect: 4000 > 5000"),
    "entry size": ({"sizeof_partition_entry": 256}, "GUID Partition Entry Size check failed."),
    "no entries": ({"num_partition_entries": 0}, "no partition entries"),
    "huge array": ({"num_partition_entries": 32769}, "Table is too large: 4194432 > 4194304"),
    "entry crc": ({"partition_entry_array_crc32": 1}, "Entry Array CRC check failed"),
    "entries beyond the disk": ({"partition_entry_lba": 131060}, "cannot be read in full"),
    "u64 values print as %lld": ({"first_usable_lba": 2**64 - 1}, "first_usable_lba incorrect: -1 > 131071"),
}
# efi.c fails these without a pr_debug line: alloc_read_gpt_entries returns NULL for an empty or
# unreadable array. The reason still says why; the kernel log says nothing, as Linux's.
SILENT_FAULTS = {"no entries", "entries beyond the disk"}


@pytest.mark.parametrize("fault", HEADER_FAULTS)
def test_each_primary_header_check_rejects_the_table(fault: str) -> None:
    changes, message = HEADER_FAULTS[fault]
    disk = gpt_disk()
    rewrite_header(disk, 1, **changes)
    result = disk.probe()
    if not message:
        assert result.table is not None
        return
    assert result.table is None
    assert message in result.reason
    logged = any(message in text for level, text in result.messages if level == KERN_DEBUG)
    assert logged == (fault not in SILENT_FAULTS)


def test_bad_signature_is_reported_with_both_values() -> None:
    disk = gpt_disk()
    disk.data[512:520] = b"EFI PARX"
    assert "signature is wrong" in disk.probe().reason


def test_header_size_above_92_is_covered_by_the_crc() -> None:
    disk = gpt_disk()
    rewrite_header(disk, 1, header_size=200, tail=b"\x01" * 20)
    assert disk.probe().table is not None
    disk.data[512 + 150] ^= 1  # inside header_size: the CRC no longer matches
    assert "CRC is wrong" in disk.probe().reason
    disk.data[512 + 150] ^= 1
    disk.data[512 + 300] ^= 1  # beyond header_size: not covered
    assert disk.probe().table is not None


def test_grown_disk_reads_the_alternate_where_the_primary_says() -> None:
    disk = gpt_disk()
    disk.data.extend(bytes(16 * MIB * 512))
    result = disk.probe()
    assert result.table is not None and result.table.gpt_header == "primary"
    warnings = [text for level, text in result.messages if level == KERN_WARNING]
    assert "GPT:Primary header thinks Alt. header is not at the end of the disk." in warnings
    assert "GPT:131071 != 163839" in warnings and warnings[-1] == "GPT: Use GNU Parted to correct GPT errors."


def test_shrunk_disk_below_last_usable_has_no_table() -> None:
    disk = gpt_disk()
    del disk.data[60 * MIB * 512:]
    result = disk.probe()
    assert result.table is None
    assert "last_usable_lba incorrect: 131038 > 122879" in result.reason


def test_disk_guid_mismatch_between_headers_only_warns() -> None:
    disk = gpt_disk()
    rewrite_header(disk, 64 * MIB - 1, disk_guid=guid(9))
    result = disk.probe()
    assert result.table is not None and result.table.disk_id == str(DISK_GUID).upper()
    assert (KERN_WARNING, "GPT:disk_guids don't match.") in result.messages


# --- protective MBR --------------------------------------------------------------------------------


def test_pmbr_slot_can_be_any_of_the_four() -> None:
    disk = gpt_disk()
    disk.write(0, build_mbr(0, [None, None, MbrPartition(1, 64 * MIB - 1, 0xEE)]))
    assert disk.table().pmbr == "protective"


def test_pmbr_starting_elsewhere_than_lba1_rejects_gpt() -> None:
    disk = gpt_disk()
    disk.data[0x1BE + 8] = 2
    result = disk.probe()
    assert result.table is None
    assert "gpt: bad protective MBR: the 0xEE slot 1 starts at LBA 2, not at 1" in result.reason
    assert disk.table(force_gpt=True).label == "gpt"  # the gpt parameter skips the PMBR check


def test_hybrid_mbr_is_accepted_and_gpt_wins() -> None:
    disk = gpt_disk()
    disk.write(0, build_mbr(0, [MbrPartition(2048, 32768, 0xEF), MbrPartition(1, 2047, 0xEE)]))
    table = disk.table()
    assert (table.label, table.pmbr) == ("gpt", "hybrid")
    assert numbers(table) == [1, 2, 4]


def test_pmbr_size_mismatch_is_only_a_debug_line() -> None:
    disk = gpt_disk()
    disk.write(0, build_mbr(0, [MbrPartition(1, 1000, 0xEE)]))
    result = disk.probe()
    assert result.table is not None
    assert (KERN_DEBUG, "GPT: mbr size in lba (1000) different than whole disk (131071).") in result.messages


def test_missing_pmbr_rejects_gpt_and_msdos() -> None:
    disk = gpt_disk()
    disk.data[:512] = bytes(512)
    result = disk.probe()
    assert result.table is None
    assert result.reason.startswith("gpt: no protective MBR")
    assert "dos: no 0x55AA signature" in result.reason


def test_mbr_disk_with_stale_gpt_headers_is_msdos() -> None:
    disk = gpt_disk()
    disk.write(0, build_mbr(0xCAFE, [MbrPartition(2048, 4096, 0x83)]))
    table = disk.table()
    assert table.label == "dos" and spans(table) == [(1, 2048, 4096)]
    assert table.partitions[0].uuid == "0000cafe-01"


# --- GPT entries -------------------------------------------------------------------------------------


def test_entry_index_is_the_partition_number() -> None:
    parts = [GptPartition(5, 2048, 4095, LINUX_FILESYSTEM, guid(5)),
             GptPartition(128, 4096, 6143, LINUX_FILESYSTEM, guid(128))]
    table = gpt_disk(parts=parts).table()
    assert numbers(table) == [5, 128]


def patch_entry(disk: Disk, index: int, **changes: int) -> None:
    """Change GPT entry `index` in both arrays and fix both headers' CRCs."""
    for array_lba in (2, 64 * MIB - 33):
        offset = array_lba * 512 + index * GPT_ENTRY_SIZE
        entry = GptEntry.parse(bytes(disk.data[offset:offset + GPT_ENTRY_SIZE]))
        entry.update(changes)
        disk.data[offset:offset + GPT_ENTRY_SIZE] = GptEntry.build(entry)
    refresh_entries_crc(disk, (1, 64 * MIB - 1))


def test_entries_ending_past_the_disk_are_skipped_and_usable_range_is_not_enforced() -> None:
    disk = gpt_disk(parts=[GptPartition(1, 2048, 4095, LINUX_FILESYSTEM, guid(1)),
                           GptPartition(2, 4096, 6143, LINUX_FILESYSTEM, guid(2))])
    patch_entry(disk, 0, starting_lba=40)  # before first_usable_lba: Linux does not mind
    patch_entry(disk, 1, ending_lba=64 * MIB)  # one past the last LBA: is_pte_valid drops it
    assert spans(disk.table()) == [(1, 40, 4056)]


def test_end_before_start_wraps_and_is_truncated_at_the_end_of_the_disk() -> None:
    disk = gpt_disk(parts=[GptPartition(1, 2048, 4095, LINUX_FILESYSTEM, guid(1))])
    patch_entry(disk, 0, ending_lba=100)
    result = disk.probe()
    assert result.table is not None
    assert spans(result.table) == [(1, 2048, 64 * MIB - 2048)]
    assert any("p1 size" in text and "extends beyond EOD, truncated" in text for _, text in result.messages)


def test_end_just_before_start_gives_size_zero_and_no_partition() -> None:
    disk = gpt_disk(parts=[GptPartition(1, 2048, 4095, LINUX_FILESYSTEM, guid(1))])
    patch_entry(disk, 0, ending_lba=2047)
    assert disk.table().partitions == ()


def test_only_the_first_255_entries_are_looked_at() -> None:
    parts = [GptPartition(255, 2048, 4095, LINUX_FILESYSTEM, guid(1)),
             GptPartition(256, 4096, 6143, LINUX_FILESYSTEM, guid(2)),
             GptPartition(300, 6144, 8191, LINUX_FILESYSTEM, guid(3))]
    disk = Disk(64 * MIB).write_all(build_gpt(64 * MIB, parts, DISK_GUID, num_entries=512))
    assert numbers(disk.table()) == [255]


def test_names_are_squashed_to_7_bits_for_partname() -> None:
    assert utf16_le_to_7bit([ord(c) for c in "root"] + [0] * 32) == "root"
    # Low 7 bits of each unit: a tab is not printable, é (0xE9) becomes 'i', € (0x20AC) becomes ','.
    assert utf16_le_to_7bit([ord("a"), 0x09, 0xE9, 0x20AC, ord("b")]) == "a!i,b"
    assert utf16_le_to_7bit([ord("x")] * 36) == "x" * 36  # no NUL: all 36 units
    assert utf16_le_to_7bit([ord("a"), 0x100, ord("b")]) == "a"  # low 7 bits zero end the C string


def test_unicode_names_round_trip_and_raid_is_flagged() -> None:
    parts = [GptPartition(1, 2048, 4095, LINUX_RAID, guid(1), "données"),
             GptPartition(2, 4096, 6143, MICROSOFT_BASIC_DATA, guid(2), "x" * 36)]
    table = gpt_disk(parts=parts).table()
    p1, p2 = table.partitions
    assert (p1.name, p1.volname, p1.raid) == ("données", "donnies", True)
    assert (p2.name, p2.volname, p2.raid, p2.type_name) == ("x" * 36, "x" * 36, False, "Microsoft basic data")


def test_builder_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="outside the usable"):
        build_gpt(64 * MIB, [GptPartition(1, 2048, 64 * MIB, LINUX_FILESYSTEM, guid(1))], DISK_GUID)
    with pytest.raises(ValueError, match="distinct"):
        build_gpt(64 * MIB, [GptPartition(1, 40, 50, EFI_SYSTEM, guid(1)),
                             GptPartition(1, 60, 70, EFI_SYSTEM, guid(2))], DISK_GUID)
    with pytest.raises(ValueError, match="36 UTF-16"):
        build_gpt(64 * MIB, [GptPartition(1, 40, 50, EFI_SYSTEM, guid(1), "y" * 37)], DISK_GUID)


def test_4kn_gpt_layout_and_512_byte_units() -> None:
    nr_blocks = 16384  # 64 MiB of 4 KiB blocks
    parts = [GptPartition(1, 256, 4351, EFI_SYSTEM, guid(1)), GptPartition(2, 4352, 8447, LINUX_SWAP, guid(2))]
    writes = build_gpt(nr_blocks, parts, DISK_GUID, lbs=4096)
    assert [lba for lba, _ in writes] == [0, 1, 2, nr_blocks - 5, nr_blocks - 1]
    assert GptHeader.parse(writes[1][1]).first_usable_lba == 6
    disk = Disk(nr_blocks * 8, lbs=4096).write_all(writes)
    table = disk.table()
    assert table.sector_size == 4096
    assert spans(table) == [(1, 2048, 32768), (2, 34816, 32768)]  # sysfs start/size: 512-byte units
    assert (table.partitions[0].table_start, table.partitions[0].table_size) == (256, 4096)
    # The same bytes seen as a 512-byte-sector disk: the header is not at LBA 1.
    assert probe(disk.read, disk.nr_sectors, 512).table is None


# --- msdos ---------------------------------------------------------------------------------------


def mbr_disk(primaries: list[MbrPartition | None], logicals: list[LogicalPartition] | None = None,
             nr_sectors: int = 64 * MIB, signature: int = 0xDEADBEEF, lbs: int = 512) -> Disk:
    return Disk(nr_sectors, lbs).write_all(build_msdos(signature, primaries, logicals or []))


def std_mbr_disk() -> Disk:
    """storage.md §3.3: 83 boot, 82, extended with 83 and 82 logicals."""
    return mbr_disk([MbrPartition(2048, 32768, 0x83, bootable=True), MbrPartition(34816, 16384, 0x82),
                     MbrPartition(51200, 79872, 0x05)],
                    [LogicalPartition(51200, 53248, 24576, 0x83), LogicalPartition(77824, 79872, 51200, 0x82)])


def test_mbr_with_extended_and_logicals_matches_the_worked_example() -> None:
    disk = std_mbr_disk()
    ebr = Ebr.parse(disk.block(51200)).partitions
    assert (ebr[0].start_sect, ebr[0].nr_sects) == (2048, 24576)  # relative to this EBR
    assert (ebr[1].sys_ind, ebr[1].start_sect, ebr[1].nr_sects) == (5, 26624, 53248)  # relative to the extended
    result = disk.probe()
    table = result.table
    assert table is not None and (table.label, table.disk_id) == ("dos", "0xdeadbeef")
    assert spans(table) == [(1, 2048, 32768), (2, 34816, 16384), (3, 51200, 2), (5, 53248, 24576),
                            (6, 79872, 51200)]
    ext = part(table, 3)
    assert ext.table_size == 79872 and ext.uuid == "" and ext.is_extended
    assert [p.uuid for p in table.partitions if p.number != 3] == ["deadbeef-01", "deadbeef-02", "deadbeef-05",
                                                                    "deadbeef-06"]
    assert table.partitions[0].bootable and not table.partitions[1].bootable
    assert (KERN_INFO, " sda: sda1 sda2 sda3 < sda5 sda6 >") in result.messages


def test_disk_names_ending_in_a_digit_get_p_in_the_log_line() -> None:
    disk = std_mbr_disk()
    result = probe(disk.read, disk.nr_sectors, disk_name="nvme0n1")
    assert (KERN_INFO, " nvme0n1: p1 p2 p3 < p5 p6 >") in result.messages


def test_slots_keep_their_position() -> None:
    table = mbr_disk([MbrPartition(2048, 2048, 0x83), None, MbrPartition(8192, 2048, 0x8E)]).table()
    assert numbers(table) == [1, 3]


def test_no_signature_means_no_table() -> None:
    disk = std_mbr_disk()
    disk.data[511] = 0
    result = disk.probe()
    assert result.table is None and "no 0x55AA signature" in result.reason


def test_bad_boot_indicator_rejects_the_sector() -> None:
    disk = std_mbr_disk()
    disk.data[0x1CE] = 0x12
    result = disk.probe()
    assert result.table is None
    assert "slot 2 has boot indicator 0x12" in result.reason


def test_fat_superfloppy_is_a_table_without_partitions() -> None:
    disk = Disk(4 * MIB)
    boot = bytearray(512)
    boot[0:3] = b"\xeb\x3c\x90"
    boot[0x0B:0x0D] = (512).to_bytes(2, "little")
    boot[0x0E] = 1  # reserved sectors
    boot[0x10] = 2  # FATs
    boot[0x15] = 0xF8  # media
    boot[0x1BE] = 0x29  # boot code bytes where slot 1's boot indicator would be
    boot[510:] = b"\x55\xaa"
    disk.write(0, bytes(boot))
    table = disk.table()
    assert table.superfloppy and table.partitions == ()
    boot[0x15] = 0x12  # not a FAT media byte: just not a table
    disk.write(0, bytes(boot))
    assert disk.probe().table is None


def test_any_0xee_slot_makes_msdos_decline() -> None:
    disk = mbr_disk([MbrPartition(2048, 2048, 0x83), None, None, MbrPartition(1, 100, 0xEE)])
    result = disk.probe()
    assert result.table is None and "dos: slot 4 has type 0xEE" in result.reason


@pytest.mark.parametrize("ext_type", [0x05, 0x0F, 0x85])
def test_all_extended_types_are_followed(ext_type: int) -> None:
    table = mbr_disk([MbrPartition(2048, 8192, ext_type)], [LogicalPartition(2048, 4096, 2048, 0x83)]).table()
    assert spans(table) == [(1, 2048, 2), (5, 4096, 2048)]


def test_two_extended_slots_continue_the_numbering() -> None:
    disk = mbr_disk([MbrPartition(2048, 8192, 0x05), MbrPartition(10240, 8192, 0x0F)],
                    [LogicalPartition(2048, 4096, 2048, 0x83)])
    disk.write(10240, build_ebr(MbrPartition(12288, 2048, 0x82), None, 10240, 10240))
    assert spans(disk.table()) == [(1, 2048, 2), (2, 10240, 2), (5, 4096, 2048), (6, 12288, 2048)]


def test_ebr_without_signature_ends_the_chain() -> None:
    disk = std_mbr_disk()
    disk.data[77824 * 512 + 510] = 0
    assert numbers(disk.table()) == [1, 2, 3, 5]


def test_link_beyond_the_disk_ends_the_chain_with_a_warning() -> None:
    disk = mbr_disk([MbrPartition(2048, 200000, 0x05)], [LogicalPartition(2048, 4096, 2048, 0x83)])
    disk.write(2048, build_ebr(MbrPartition(4096, 2048, 0x83), MbrPartition(180000, 100, 0x05), 2048, 2048))
    result = disk.probe()
    assert result.table is not None
    assert numbers(result.table) == [1, 5]
    assert (KERN_WARNING, "sda: partition table partially beyond EOD, truncated") in result.messages
    assert all(first + count <= disk.nr_sectors for first, count in disk.reads)  # never asked past the end


def test_garbage_in_ebr_slots_3_and_4_is_checked_against_the_link() -> None:
    disk = mbr_disk([MbrPartition(2048, 8192, 0x05)], [LogicalPartition(2048, 4096, 2048, 0x83)])
    ebr = bytearray(disk.block(2048))
    # Slots 3/4 hold starts relative to this EBR (at 2048), like slot 1.
    inside = build_mbr(0, [MbrPartition(6144, 1024, 0x82)])[0x1BE:0x1CE]  # fits the link: kept
    outside = build_mbr(0, [MbrPartition(6144, 9000, 0x82)])[0x1BE:0x1CE]  # past this link: dropped
    ebr[0x1DE:0x1EE] = outside
    ebr[0x1EE:0x1FE] = inside
    disk.write(2048, bytes(ebr))
    assert spans(disk.table()) == [(1, 2048, 2), (5, 4096, 2048), (6, 8192, 1024)]


def test_dr_dos_order_with_the_link_first() -> None:
    disk = mbr_disk([MbrPartition(2048, 8192, 0x05)], [LogicalPartition(2048, 4096, 2048, 0x83),
                                                       LogicalPartition(6144, 8192, 2048, 0x82)])
    ebr = bytearray(disk.block(2048))
    ebr[0x1BE:0x1CE], ebr[0x1CE:0x1DE] = ebr[0x1CE:0x1DE], ebr[0x1BE:0x1CE]
    disk.write(2048, bytes(ebr))
    assert spans(disk.table()) == [(1, 2048, 2), (5, 4096, 2048), (6, 8192, 2048)]


def test_a_cycle_of_empty_links_stops_after_100() -> None:
    disk = mbr_disk([MbrPartition(2048, 8192, 0x05)])
    disk.write(2048, build_ebr(None, MbrPartition(2048, 8192, 0x05), 2048, 2048))  # links to itself
    result = disk.probe()
    assert result.table is not None and numbers(result.table) == [1]
    assert any("100 links without a data partition" in text for _, text in result.messages)


@pytest.mark.parametrize(("data_at", "found"), [(99, True), (100, False)])
def test_the_100_empty_links_limit_is_exact(data_at: int, found: bool) -> None:
    """EBR k (counting from 0) is read on pass k+1; pass 101 gives up before reading EBR 100."""
    ext_start, step, count = 2048, 8, 150
    disk = mbr_disk([MbrPartition(ext_start, step * count, 0x05)])
    for k in range(count):
        ebr = ext_start + k * step
        data = MbrPartition(ebr + 1, 4, 0x83) if k == data_at else None
        link = MbrPartition(ebr + step, step, 0x05) if k + 1 < count else None
        disk.write(ebr, build_ebr(data, link, ext_start, ebr))
    table = disk.table()
    assert numbers(table) == ([1, 5] if found else [1])


def test_a_cycle_with_data_partitions_runs_to_slot_255() -> None:
    disk = std_mbr_disk()
    ebr = bytearray(disk.block(77824))  # storage.md §3.4: the last EBR links back to the first
    ebr[0x1CE:0x1DE] = build_ebr(None, MbrPartition(51200, 79872, 0x05), 51200, 51200)[0x1CE:0x1DE]
    disk.write(77824, bytes(ebr))
    table = disk.table()
    assert numbers(table) == [1, 2, 3, *range(5, 256)]
    assert part(table, 255).start == 53248


def test_partitions_past_the_end_are_skipped_or_truncated() -> None:
    disk = mbr_disk([MbrPartition(2048, 2048, 0x83), MbrPartition(64 * MIB, 10, 0x83),
                     MbrPartition(64 * MIB - 100, 1000, 0x83), MbrPartition(0, 10, 0x83)])
    result = disk.probe()
    assert result.table is not None
    # A start of 0 is registered: msdos.c and blk_add_partition only drop size 0.
    assert spans(result.table) == [(1, 2048, 2048), (3, 64 * MIB - 100, 100), (4, 0, 10)]
    warnings = [text for level, text in result.messages if level == KERN_WARNING]
    assert warnings == ["sda: p2 start 131072 is beyond EOD, truncated",
                        "sda: p3 size 1000 extends beyond EOD, truncated"]


def test_4k_msdos_scales_and_registers_the_extended_as_one_block() -> None:
    disk = mbr_disk([MbrPartition(256, 1024, 0x83), MbrPartition(2048, 1024, 0x05)],
                    [LogicalPartition(2048, 2304, 256, 0x82)], nr_sectors=32 * MIB, lbs=4096)
    table = disk.table()
    assert spans(table) == [(1, 2048, 8192), (2, 16384, 8), (5, 18432, 2048)]


def test_reads_are_whole_pages_each_read_once() -> None:
    disk = gpt_disk()
    assert disk.table()
    assert all(first % 8 == 0 and count == 8 for first, count in disk.reads)
    assert len(set(disk.reads)) == len(disk.reads)
    # PMBR/header/entries (pages 0-32), the backup entries and header (the last 5 pages).
    assert sorted(first for first, _ in disk.reads) == [0, 8, 16, 24, 32, *range(131032, 131072, 8)]


def test_unreadable_sector_0_is_an_io_error() -> None:
    def broken(first: int, count: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    result = probe(broken, 1000, disk_name="sdb")
    assert result.table is None and result.error == -errno.EIO
    assert (KERN_INFO, " sdb: unable to read partition table") in result.messages
    assert "dos: sector 0 cannot be read" in result.reason


def test_short_reads_are_missing_sectors() -> None:
    disk = std_mbr_disk()
    result = probe(lambda first, count: disk.read(first, count)[:100], disk.nr_sectors)
    assert result.table is None and result.error == -errno.EIO


def test_empty_disk_and_bad_arguments() -> None:
    assert probe(lambda f, c: b"", 0).reason.startswith("the disk is empty")
    with pytest.raises(ValueError):
        probe(lambda f, c: b"", 100, 1000)


def test_scan_logs_through_the_callback() -> None:
    lines: list[tuple[int, str]] = []
    assert scan(std_mbr_disk().read, 64 * MIB, disk_name="sdc", log=lambda lvl, text: lines.append((lvl, text)))
    assert (KERN_INFO, " sdc: sdc1 sdc2 sdc3 < sdc5 sdc6 >") in lines
    lines.clear()
    assert scan(Disk(100).read, 100, disk_name="sdd", log=lambda lvl, text: lines.append((lvl, text))) is None
    assert lines[-1][1].startswith("sdd: no partition table: gpt: no protective MBR")


# --- garbage never crashes -------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_invariants(result: ScanResult, nr_sectors: int) -> None:
    if result.table is None:
        assert result.reason
        return
    seen = set()
    for p in result.table.partitions:
        assert 1 <= p.number <= 255 and p.number not in seen
        seen.add(p.number)
        assert 0 <= p.start < nr_sectors and 0 < p.size and p.start + p.size <= nr_sectors


@FUZZ
@given(head=st.binary(min_size=0, max_size=34 * 512), tail=st.binary(max_size=2048),
       nr_sectors=st.integers(34, 300), lbs=st.sampled_from([512, 4096]), force=st.booleans())
def test_any_bytes_in_sectors_0_to_33_give_a_table_or_a_reason(head: bytes, tail: bytes, nr_sectors: int, lbs: int,
                                                               force: bool) -> None:
    data = bytearray(nr_sectors * 512)
    data[:len(head)] = head
    data[len(data) - len(tail):] = tail
    result = probe(lambda first, count: bytes(data[first * 512:(first + count) * 512]), nr_sectors, lbs,
                   force_gpt=force)
    check_invariants(result, nr_sectors)


@FUZZ
@given(entries=st.binary(min_size=128 * 4, max_size=128 * 4), slots=st.lists(st.integers(0, 127), max_size=4))
def test_random_entries_behind_a_valid_header_never_crash(entries: bytes, slots: list[int]) -> None:
    disk = gpt_disk(nr_sectors=8 * MIB, parts=[])
    array = bytearray(128 * 128)
    for i, slot in enumerate(slots):
        array[slot * 128:(slot + 1) * 128] = entries[i * 128:(i + 1) * 128]
    disk.data[1024:1024 + len(array)] = array
    refresh_entries_crc(disk)
    result = disk.probe()
    assert result.table is not None
    check_invariants(result, disk.nr_sectors)


entry_strategy = st.tuples(st.sampled_from([0, 0x80]), st.sampled_from([0, 0x05, 0x0F, 0x85, 0x83, 0x82, 0xFD, 7]),
                           st.integers(0, 3000), st.integers(0, 3000))


@FUZZ
@given(mbr=st.lists(entry_strategy, min_size=4, max_size=4),
       ebrs=st.dictionaries(st.integers(0, 2999), st.lists(entry_strategy, min_size=4, max_size=4), max_size=8))
def test_random_mbr_and_ebr_chains_never_crash(mbr: list[tuple[int, int, int, int]],
                                               ebrs: dict[int, list[tuple[int, int, int, int]]]) -> None:
    disk = Disk(3000)

    def sector(entries: list[tuple[int, int, int, int]]) -> bytes:
        raw = b"".join(struct.pack("<B3sB3sII", boot, b"", kind, b"", start, size)
                       for boot, kind, start, size in entries)
        return bytes(446) + raw + b"\x55\xaa"

    for lba, entries in ebrs.items():
        disk.write(lba, sector(entries))
    disk.write(0, sector(mbr))
    check_invariants(disk.probe(), disk.nr_sectors)


# --- the test helpers themselves ----------------------------------------------------------------------


def test_refresh_helpers_make_a_mutated_table_valid_again() -> None:
    disk = gpt_disk()
    disk.data[1024 + 0x38] = ord("Z")  # rename p1 without fixing the CRC
    assert "Entry Array CRC" in disk.probe().reason
    refresh_entries_crc(disk, (1, 64 * MIB - 1))
    assert disk.table().partitions[0].name == "ZFI"
