"""Hostile partition tables: a bounded, derandomized sample of the fuzzer, and what it found.

The sample compares `probe` with `fuzzing.linux_partitions`, Linux's scan
transcribed from block/partitions/{core,efi,msdos}.c, on generated GPT, MBR
and garbage disks (`scripts/fuzz --target partitions` runs the same check
for as long as one likes). The regression tests below pin each defect the
fuzzer found, with the kernel's own wording.
"""

from __future__ import annotations

from fuzzing.linux_partitions import linux_scan
from fuzzing.partitions import FuzzDisk, check_partitions, disks, gpt_entry, header_bytes, mbr_sector, mbr_slot
from hypothesis import HealthCheck, given, settings

from rinuxfs.block.partitions import probe
from rinuxfs.printk import KERN_DEBUG, KERN_INFO, KERN_WARNING

SAMPLE = settings(max_examples=800, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
LINUX_FS = bytes.fromhex("af3dc60f838472478e793d69d8477de4")


@SAMPLE
@given(disks())
def test_hostile_tables_scan_as_linux_scans_them(disk: FuzzDisk) -> None:
    check_partitions(disk)


def gpt(disk: FuzzDisk, entries: dict[int, bytes], **fields: int) -> FuzzDisk:
    """A GPT with 128 entries at LBA 2, its primary header's fields changed by `fields` (CRCs kept right)."""
    import zlib

    last, lbs = disk.last_lba, disk.lbs
    array = bytearray(128 * 128)
    for i, raw in entries.items():
        array[i * 128:(i + 1) * 128] = raw
    blocks = len(array) // lbs
    header = {"signature": 0x5452415020494645, "revision": 0x10000, "header_size": 92, "header_crc32": 0,
              "reserved1": 0, "my_lba": 1, "alternate_lba": last, "first_usable_lba": 2 + blocks,
              "last_usable_lba": last - 1 - blocks, "disk_guid": b"\x11" * 16, "partition_entry_lba": 2,
              "num_partition_entries": 128, "sizeof_partition_entry": 128,
              "partition_entry_array_crc32": zlib.crc32(array)}
    backup = dict(header, my_lba=last, alternate_lba=1, partition_entry_lba=last - blocks)
    disk.put_lba(0, mbr_sector([mbr_slot(0, 0xEE, 1, min(disk.capacity - 1, 0xFFFFFFFF))]))
    disk.put_lba(2, bytes(array))
    disk.put_lba(last - blocks, bytes(array))
    disk.put_lba(last, header_bytes(backup, lbs, b"", True))
    disk.put_lba(1, header_bytes(dict(header, **fields), lbs, b"", True))
    return disk


def scan(disk: FuzzDisk):  # type: ignore[no-untyped-def]
    result = probe(disk.read, disk.capacity, disk.lbs, force_gpt=disk.force_gpt, disk_name=disk.name)
    assert result.messages == tuple(linux_scan(disk, truncate_wrapped=True).messages) or any(
        "sub-labels are not parsed" in t for _, t in result.messages)
    return result


def test_signature_message_has_no_space_after_the_colon() -> None:
    result = scan(gpt(FuzzDisk(4096), {}, signature=0xFFFFFFFFFFFFFFFF))
    assert (KERN_DEBUG, "GUID Partition Table Header signature is wrong:-1 != 6075990659671082565") in result.messages


def test_u64_fields_print_as_lld_in_compare_gpts() -> None:
    """With force_gpt and a primary whose alternate_lba is absurd, the backup is read at the last LBA."""
    disk = FuzzDisk(4096, force_gpt=True)
    result = scan(gpt(disk, {}, alternate_lba=2**64 - 1))
    assert result.table is not None
    warnings = [text for level, text in result.messages if level == KERN_WARNING]
    assert "GPT:Primary header alternate_lba != Alt. header my_lba" in warnings
    assert "GPT:-1 != 4095" in warnings


def test_checks_linux_fails_silently_leave_no_log_line() -> None:
    """An alternate_lba past the disk is read as nothing: no pr_debug, only the 'Alternate GPT' warning."""
    result = scan(gpt(FuzzDisk(4096), {}, alternate_lba=10**9))
    assert result.table is not None
    assert [t for _, t in result.messages if t.startswith("GPT: no header")] == []
    assert (KERN_WARNING, "Alternate GPT is invalid, using primary GPT.") in result.messages


def test_entry_size_message_is_the_kernels() -> None:
    result = scan(gpt(FuzzDisk(4096), {}, sizeof_partition_entry=256))
    assert (KERN_DEBUG, "GUID Partition Entry Size check failed.") in result.messages


def test_pmbr_size_note_truncates_the_disk_size_to_32_bits_like_min_t() -> None:
    disk = FuzzDisk((1 << 32) + 5)
    disk.put_lba(0, mbr_sector([mbr_slot(0, 0xEE, 1, 1000)]))
    result = scan(disk)
    assert (KERN_DEBUG, "GPT: mbr size in lba (1000) different than whole disk (4).") in result.messages


def test_reversed_entry_on_4kn_wraps_in_u64_and_is_cut_at_the_end() -> None:
    """end < start: size = end - start + 1 wraps in u64, and so does size * 8 on a 4Kn disk."""
    disk = gpt(FuzzDisk(4096, lbs=4096), {0: gpt_entry(LINUX_FS, b"\x01" * 16, 100, 50, 0, bytes(72))})
    result = scan(disk)
    assert result.table is not None and [(p.start, p.size) for p in result.table.partitions] == [(800, 32768 - 800)]
    size = ((50 - 100 + 1) & (2**64 - 1)) * 8 & (2**64 - 1)
    assert (KERN_WARNING, f"sda: p1 size {size} extends beyond EOD, truncated") in result.messages


def test_swap_partition_past_the_end_is_probed_for_a_solaris_vtoc_like_linux() -> None:
    """msdos.c's second pass reads sector 1 of every 0x82 partition: past the end, that is a beyond-EOD read."""
    disk = FuzzDisk(2048)
    disk.put_lba(0, mbr_sector([mbr_slot(0, 0x83, 2048, 1000), mbr_slot(0, 0x82, 2047, 8)]))
    result = scan(disk)
    assert result.table is not None
    assert result.messages == ((KERN_INFO, " sda: sda1 sda2"),
                               (KERN_WARNING, "sda: partition table partially beyond EOD, truncated"),
                               (KERN_WARNING, "sda: p1 start 2048 is beyond EOD, truncated"),
                               (KERN_WARNING, "sda: p2 size 8 extends beyond EOD, truncated"))


def test_a_sub_label_found_is_named_in_a_debug_line() -> None:
    disk = FuzzDisk(4096)
    disk.put_lba(0, mbr_sector([mbr_slot(0, 0xA5, 64, 1000)]))
    disk.put(65 * 512, b"\x57\x45\x56\x82")  # BSD_DISKMAGIC
    result = scan(disk)
    assert (KERN_DEBUG, "sda: p1 holds a bsd label: sub-labels are not parsed") in result.messages


def test_the_oracle_reads_a_plain_table_as_linux_prints_it() -> None:
    """The reference itself, on a table whose kernel log line is known (storage.md §2.2 worked example shape)."""
    disk = FuzzDisk(131072)
    disk.put_lba(0, mbr_sector([mbr_slot(0x80, 0x83, 2048, 32768), mbr_slot(0, 0x82, 34816, 16384),
                                mbr_slot(0, 0x05, 51200, 79872)]))
    disk.put_lba(51200, mbr_sector([mbr_slot(0, 0x83, 2048, 24576), mbr_slot(0, 0x05, 26624, 53248)]))
    disk.put_lba(77824, mbr_sector([mbr_slot(0, 0x82, 2048, 51200)]))
    ref = linux_scan(disk)
    assert ref.messages == [(KERN_INFO, " sda: sda1 sda2 sda3 < sda5 sda6 >")]
    assert {n: (p.start, p.size) for n, p in ref.parts.items()} == {
        1: (2048, 32768), 2: (34816, 16384), 3: (51200, 2), 5: (53248, 24576), 6: (79872, 51200)}
    check_partitions(disk)
