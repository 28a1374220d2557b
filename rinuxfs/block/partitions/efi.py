"""GPT: the on-disk layouts, Linux's efi parser, and a builder.

The protective MBR (efi.h `legacy_mbr`, the same layout as `msdos.Mbr`), the
GPT header and the GPT entry are declared once with construct and used both
to parse (`efi_partition`) and to build (`build_gpt`). Parsing follows
`block/partitions/efi.c` (Linux 6.1; storage.md §2.3):

* without force_gpt, sector 0 must be a protective MBR: 0x55AA and a 0xEE
  slot starting at LBA 1 (other used slots make it "hybrid", still fine);
* the primary header at LBA 1 must pass every check of `is_gpt_valid`
  (signature, 92 <= header_size <= block size, header CRC32, my_lba, usable
  range inside the disk, 128-byte entries, array size, entry-array CRC32);
* the alternate header is read at the primary's alternate_lba; the one at
  the last LBA is tried only with force_gpt, so by default a corrupt primary
  means no GPT at all (and the msdos parser declines the 0xEE disk too);
* entry i becomes partition i+1 (gaps kept) unless its type GUID is zero or
  it starts or ends past the last LBA; at most 255 entries are looked at.

`efi_partition` never raises on disk contents: it returns 1, or 0 with the
reason in `state.why["gpt"]`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from construct import Adapter, Array, Bytes, Const, ConstructError, Container, Int16ul, Int32ul, Int64ul, Struct

from rinuxfs.block.partitions.check import SECTOR_SIZE, ParsedPartitions, Partition
from rinuxfs.block.partitions.msdos import MBR_SIGNATURE, ZERO_CHS, Mbr, slots
from rinuxfs.block.partitions.types import EFI_PMBR_OSTYPE_EFI_GPT, LINUX_RAID, NULL_GUID

GPT_HEADER_SIGNATURE = b"EFI PART"  # 0x5452415020494645 as a little-endian u64
GPT_HEADER_REVISION_V1 = 0x00010000
GPT_PRIMARY_PARTITION_TABLE_LBA = 1
GPT_MBR_PROTECTIVE, GPT_MBR_HYBRID = 1, 2
GPT_DEFAULT_ENTRIES = 128
KMALLOC_MAX_SIZE = 4 << 20  # x86-64: the largest entry array the kernel will allocate
U64 = (1 << 64) - 1


class GuidAdapter(Adapter):
    """EFI_GUID: the first three fields little-endian, the last two as written ("mixed-endian")."""

    def _decode(self, obj: bytes, context: Any, path: str) -> UUID:
        return UUID(bytes_le=obj)

    def _encode(self, obj: UUID, context: Any, path: str) -> bytes:
        return obj.bytes_le


Guid = GuidAdapter(Bytes(16))

# gpt_header (efi.h; UEFI 2.x §5.3.2, spec text unchecked). 92 bytes; the rest of the block is reserved.
GptHeader = Struct(
    "signature" / Const(GPT_HEADER_SIGNATURE),  # 0x00
    "revision" / Int32ul,  # 0x08  1.0 = 0x00010000; Linux does not check it
    "header_size" / Int32ul,  # 0x0C  92 .. logical block size; the CRC covers all of it
    "header_crc32" / Int32ul,  # 0x10  CRC32 of header_size bytes, taken with this field zero
    "reserved1" / Int32ul,  # 0x14
    "my_lba" / Int64ul,  # 0x18  the LBA of this header
    "alternate_lba" / Int64ul,  # 0x20  the LBA of the other header
    "first_usable_lba" / Int64ul,  # 0x28
    "last_usable_lba" / Int64ul,  # 0x30
    "disk_guid" / Guid,  # 0x38
    "partition_entry_lba" / Int64ul,  # 0x48  2 for the primary array, last LBA - 32 for the backup
    "num_partition_entries" / Int32ul,  # 0x50
    "sizeof_partition_entry" / Int32ul,  # 0x54  Linux accepts exactly 128
    "partition_entry_array_crc32" / Int32ul,  # 0x58  CRC32 of num * size bytes of entries
)
GPT_HEADER_SIZE = GptHeader.sizeof()  # 92
HEADER_CRC_OFFSET = 16

# gpt_entry (efi.h; UEFI 2.x §5.3.3). 128 bytes.
GptEntry = Struct(
    "partition_type_guid" / Guid,  # 0x00  all zero = unused slot
    "unique_partition_guid" / Guid,  # 0x10  PARTUUID
    "starting_lba" / Int64ul,  # 0x20
    "ending_lba" / Int64ul,  # 0x28  inclusive
    "attributes" / Int64ul,  # 0x30  bit 0 required, 1 no block I/O protocol, 2 legacy BIOS bootable, 48-63 type's own
    "partition_name" / Array(36, Int16ul),  # 0x38  UTF-16LE code units, NUL-padded: PARTNAME
)
GPT_ENTRY_SIZE = GptEntry.sizeof()  # 128


def efi_crc32(data: bytes) -> int:
    """efi_crc32 = crc32(~0, buf) ^ ~0: exactly zlib's CRC-32."""
    return zlib.crc32(data) & 0xFFFFFFFF


def header_crc32(block: bytes, header_size: int) -> int:
    return efi_crc32(block[:HEADER_CRC_OFFSET] + bytes(4) + block[HEADER_CRC_OFFSET + 4:header_size])


def utf16_le_to_7bit(units: Sequence[int]) -> str:
    """efi.c utf16_le_to_7bit, as PARTNAME gets it: each code unit's low 7 bits, non-printables as '!'.

    Mainline masks with 0x7f (6.1 used 0xff, which let Latin-1 bytes through); the
    result is a C string, so it ends at the first unit whose low 7 bits are zero.
    """
    out = []
    for unit in units:
        c = unit & 0x7F
        if not c:
            break
        out.append(chr(c) if 0x20 <= c < 0x7F else "!")
    return "".join(out)


def decode_name(units: Sequence[int]) -> str:
    """The name as sfdisk shows it: UTF-16LE up to the first NUL unit."""
    end = next((i for i, u in enumerate(units) if u == 0), len(units))
    return struct.pack(f"<{end}H", *units[:end]).decode("utf-16-le", errors="replace")


def encode_name(name: str) -> list[int]:
    raw = name.encode("utf-16-le")
    if len(raw) > 72:
        raise ValueError(f"GPT partition name {name!r} is longer than 36 UTF-16 code units")
    return list(struct.unpack("<36H", raw.ljust(72, b"\0")))


# --- parsing (efi.c) ----------------------------------------------------------------------------


class _Invalid(Exception):
    """A header or entry array failed one of is_gpt_valid's checks.

    `logged` is False for the checks Linux fails without a word (a header or an
    entry array that cannot be read, an empty array): the reason still reaches
    `state.why`, but the kernel log gets only the pr_debug lines efi.c prints.
    """

    def __init__(self, text: str, *, logged: bool = True) -> None:
        super().__init__(text)
        self.logged = logged


def lld(value: int) -> int:
    """A u64 as efi.c prints it, through %lld: values of 2^63 and up come out negative."""
    value &= U64
    return value - (1 << 64) if value >> 63 else value


@dataclass(frozen=True)
class ValidGpt:
    lba: int
    header: Container
    ptes: bytes  # the raw entry array, num_partition_entries * 128 bytes


def last_lba(state: ParsedPartitions) -> int:
    return state.capacity * SECTOR_SIZE // state.sector_size - 1


def read_lba(state: ParsedPartitions, lba: int, count: int) -> bytes:
    """efi.c read_lba: `count` bytes from logical block `lba`, cut short at the first unreadable sector."""
    if lba > last_lba(state):
        return b""
    n = lba * (state.sector_size // SECTOR_SIZE)
    out = bytearray()
    while len(out) < count:
        data = state.read_part_sector(n)
        if data is None:
            break
        out += data[:count - len(out)]
        n += 1
    return bytes(out)


def is_pmbr_valid(mbr: bytes, total_sectors: int) -> tuple[int, str, str]:
    """(GPT_MBR_PROTECTIVE | GPT_MBR_HYBRID | 0, why not, debug note) for sector 0."""
    if mbr[510:512] != MBR_SIGNATURE:
        return 0, "no protective MBR: sector 0 has no 0x55AA signature", ""
    entries = slots(mbr)
    part = next((i for i, p in enumerate(entries)
                 if p.sys_ind == EFI_PMBR_OSTYPE_EFI_GPT and p.start_sect == GPT_PRIMARY_PARTITION_TABLE_LBA), None)
    if part is None:
        ee = next((i for i, p in enumerate(entries) if p.sys_ind == EFI_PMBR_OSTYPE_EFI_GPT), None)
        if ee is None:
            return 0, "no protective MBR: no slot of type 0xEE in sector 0", ""
        return 0, (f"bad protective MBR: the 0xEE slot {ee + 1} starts at LBA {entries[ee].start_sect},"
                   " not at 1"), ""
    if any(p.sys_ind not in (EFI_PMBR_OSTYPE_EFI_GPT, 0) for p in entries):
        return GPT_MBR_HYBRID, "", ""
    # Protective MBRs cover min(disk, 2 TiB); a different size only earns a debug line, so
    # that an image dd'ed onto a bigger disk still works.
    sz = entries[part].nr_sects
    note = ""
    if sz != ((total_sectors & 0xFFFFFFFF) - 1) & 0xFFFFFFFF and sz != 0xFFFFFFFF:
        # min_t(uint32_t, ...) casts before it compares: past 2 TiB the disk size shows truncated to 32 bits.
        note = f"GPT: mbr size in lba ({sz}) different than whole disk ({(total_sectors - 1) & 0xFFFFFFFF})."
    return GPT_MBR_PROTECTIVE, "", note


def _check_gpt(state: ParsedPartitions, lba: int) -> ValidGpt:
    lbs = state.sector_size
    block = read_lba(state, lba, lbs)
    if len(block) < lbs:
        raise _Invalid(f"GPT: no header can be read at LBA {lba} (the disk's last LBA is {last_lba(state)})",
                       logged=False)
    try:
        gpt = GptHeader.parse(block)
    except ConstructError:
        found = int.from_bytes(block[:8], "little", signed=True)
        expected = int.from_bytes(GPT_HEADER_SIGNATURE, "little", signed=True)
        raise _Invalid(f"GUID Partition Table Header signature is wrong:{found} != {expected}") from None
    if gpt.header_size > lbs:
        raise _Invalid(f"GUID Partition Table Header size is too large: {gpt.header_size} > {lbs}")
    if gpt.header_size < GPT_HEADER_SIZE:
        raise _Invalid(f"GUID Partition Table Header size is too small: {gpt.header_size} < {GPT_HEADER_SIZE}")
    crc = header_crc32(block, gpt.header_size)
    if crc != gpt.header_crc32:
        raise _Invalid(f"GUID Partition Table Header CRC is wrong: {crc:x} != {gpt.header_crc32:x}")
    if gpt.my_lba != lba:
        raise _Invalid(f"GPT my_lba incorrect: {lld(gpt.my_lba)} != {lld(lba)}")
    lastlba = last_lba(state)
    if gpt.first_usable_lba > lastlba:
        raise _Invalid(f"GPT: first_usable_lba incorrect: {lld(gpt.first_usable_lba)} > {lld(lastlba)}")
    if gpt.last_usable_lba > lastlba:
        raise _Invalid(f"GPT: last_usable_lba incorrect: {lld(gpt.last_usable_lba)} > {lld(lastlba)}")
    if gpt.last_usable_lba < gpt.first_usable_lba:
        raise _Invalid(f"GPT: last_usable_lba incorrect: {lld(gpt.last_usable_lba)} > {lld(gpt.first_usable_lba)}")
    if gpt.sizeof_partition_entry != GPT_ENTRY_SIZE:
        raise _Invalid("GUID Partition Entry Size check failed.")
    pt_size = gpt.num_partition_entries * gpt.sizeof_partition_entry
    if pt_size > KMALLOC_MAX_SIZE:
        raise _Invalid(f"GUID Partition Table is too large: {pt_size} > {KMALLOC_MAX_SIZE} bytes")
    if not pt_size:
        raise _Invalid("GPT: the header lists no partition entries", logged=False)
    ptes = read_lba(state, gpt.partition_entry_lba, pt_size)
    if len(ptes) < pt_size:
        raise _Invalid(f"GPT: the partition entry array at LBA {gpt.partition_entry_lba} cannot be read in full",
                       logged=False)
    if efi_crc32(ptes) != gpt.partition_entry_array_crc32:
        raise _Invalid("GUID Partition Entry Array CRC check failed.")
    return ValidGpt(lba, gpt, ptes)


def is_gpt_valid(state: ParsedPartitions, lba: int) -> tuple[ValidGpt | None, str]:
    try:
        return _check_gpt(state, lba), ""
    except _Invalid as e:
        if e.logged:
            state.debug(str(e))
        return None, str(e)


def compare_gpts(state: ParsedPartitions, pgpt: Container, agpt: Container, lastlba: int) -> None:
    """efi.c compare_gpts: disagreements between the two headers are only warnings."""
    checks = [
        (pgpt.my_lba, agpt.alternate_lba, "GPT:Primary header LBA != Alt. header alternate_lba"),
        (pgpt.alternate_lba, agpt.my_lba, "GPT:Primary header alternate_lba != Alt. header my_lba"),
        (pgpt.first_usable_lba, agpt.first_usable_lba, "GPT:first_usable_lbas don't match."),
        (pgpt.last_usable_lba, agpt.last_usable_lba, "GPT:last_usable_lbas don't match."),
    ]
    errors = 0
    for mine, theirs, text in checks:
        if mine != theirs:
            state.warn(text)
            state.warn(f"GPT:{lld(mine)} != {lld(theirs)}")
            errors += 1
    if pgpt.disk_guid != agpt.disk_guid:
        state.warn("GPT:disk_guids don't match.")
        errors += 1
    for field, text in (("num_partition_entries", "num_partition_entries don't match"),
                        ("sizeof_partition_entry", "sizeof_partition_entry values don't match"),
                        ("partition_entry_array_crc32", "partition_entry_array_crc32 values don't match")):
        if pgpt[field] != agpt[field]:
            state.warn(f"GPT:{text}: 0x{pgpt[field]:x} != 0x{agpt[field]:x}")
            errors += 1
    if pgpt.alternate_lba != lastlba:
        state.warn("GPT:Primary header thinks Alt. header is not at the end of the disk.")
        state.warn(f"GPT:{lld(pgpt.alternate_lba)} != {lld(lastlba)}")
        errors += 1
    if agpt.my_lba != lastlba:
        state.warn("GPT:Alternate GPT header not at the end of the disk.")
        state.warn(f"GPT:{lld(agpt.my_lba)} != {lld(lastlba)}")
        errors += 1
    if errors:
        state.warn("GPT: Use GNU Parted to correct GPT errors.")


def _quiet_backup_check(state: ParsedPartitions, lba: int) -> bool:
    """Whether force_gpt would find a valid backup, without leaving a trace in the scan."""
    eod, messages = state.access_beyond_eod, len(state.messages)
    valid, _ = is_gpt_valid(state, lba)
    state.access_beyond_eod = eod
    del state.messages[messages:]
    return valid is not None


def find_valid_gpt(state: ParsedPartitions) -> ValidGpt | None:
    lastlba = last_lba(state)
    if not state.force_gpt:
        # legacymbr is kzalloc'ed: a sector that cannot be read compares as zeros.
        good_pmbr, why, note = is_pmbr_valid(read_lba(state, 0, SECTOR_SIZE).ljust(SECTOR_SIZE, b"\0"),
                                             state.capacity)
        if note:
            state.debug(note)
        if not good_pmbr:
            state.why["gpt"] = why
            return None
        state.pmbr = "protective" if good_pmbr == GPT_MBR_PROTECTIVE else "hybrid"
        state.debug(f"Device has a {state.pmbr} MBR")

    pgpt, pwhy = is_gpt_valid(state, GPT_PRIMARY_PARTITION_TABLE_LBA)
    agpt: ValidGpt | None = None
    if pgpt is not None:
        agpt, _ = is_gpt_valid(state, pgpt.header.alternate_lba)
    if agpt is None and state.force_gpt:
        agpt, _ = is_gpt_valid(state, lastlba)

    if pgpt is None and agpt is None:
        why = f"the primary GPT header is invalid: {pwhy}"
        if not state.force_gpt and lastlba > GPT_PRIMARY_PARTITION_TABLE_LBA:
            if _quiet_backup_check(state, lastlba):
                why += (f"; a valid backup header is at LBA {lastlba}, which Linux uses only with force_gpt"
                        " (the 'gpt' boot parameter; rinuxfs mount --force-gpt)")
        elif state.force_gpt:
            why += f"; the backup header at LBA {lastlba} is invalid too"
        state.why["gpt"] = why
        return None
    if pgpt is not None and agpt is not None:
        compare_gpts(state, pgpt.header, agpt.header, lastlba)
    if pgpt is not None:
        if agpt is None:
            state.warn("Alternate GPT is invalid, using primary GPT.")
        state.gpt_header = "primary"
        return pgpt
    assert agpt is not None
    state.warn("Primary GPT is invalid, using alternate GPT.")
    state.gpt_header = "alternate"
    return agpt


def efi_partition(state: ParsedPartitions) -> int:
    gpt = find_valid_gpt(state)
    if gpt is None:
        return 0
    state.debug("GUID Partition Table is valid!  Yea!")
    header = gpt.header
    ssz = state.sector_size // SECTOR_SIZE
    lastlba = last_lba(state)
    state.label = "gpt"
    state.disk_id = str(header.disk_guid).upper()
    state.first_usable_lba = header.first_usable_lba
    state.last_usable_lba = header.last_usable_lba
    for i in range(min(header.num_partition_entries, state.limit - 1)):
        raw = gpt.ptes[i * GPT_ENTRY_SIZE:(i + 1) * GPT_ENTRY_SIZE]
        if raw[:16] == NULL_GUID.bytes_le:  # is_pte_valid's first test, before paying for a parse
            continue
        pte = GptEntry.parse(raw)
        start = pte.starting_lba
        # u64 arithmetic: an end before the start wraps to a huge size, cut at EOD on registration.
        size = (pte.ending_lba - start + 1) & U64
        if start > lastlba or pte.ending_lba > lastlba:
            continue
        meta = Partition(number=i + 1, start=start * ssz, size=size * ssz, table_start=start, table_size=size,
                         uuid=str(pte.unique_partition_guid), volname=utf16_le_to_7bit(pte.partition_name),
                         raid=pte.partition_type_guid == LINUX_RAID, type_guid=pte.partition_type_guid,
                         name=decode_name(pte.partition_name), attributes=pte.attributes)
        state.put_partition(i + 1, start * ssz, (size * ssz) & U64, meta)  # sector_t arithmetic
    return 1


# --- building -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GptPartition:
    """An entry to write: `number` is its 1-based slot in the entry array."""

    number: int
    first_lba: int
    last_lba: int
    type_guid: UUID
    unique_guid: UUID
    name: str = ""
    attributes: int = 0


def entry_array_blocks(num_entries: int, lbs: int) -> int:
    return -(-num_entries * GPT_ENTRY_SIZE // lbs)


def build_protective_mbr(nr_lbas: int) -> bytes:
    """Sector 0 of a GPT disk as libfdisk writes it: one 0xEE slot from LBA 1 over the rest of the disk."""
    pmbr = {"boot_ind": 0, "start_chs": ZERO_CHS | {"sector": 2}, "sys_ind": EFI_PMBR_OSTYPE_EFI_GPT,
            "end_chs": {"head": 0xFF, "cylinder_high": 3, "sector": 0x3F, "cylinder_low": 0xFF},
            "start_sect": GPT_PRIMARY_PARTITION_TABLE_LBA, "nr_sects": min(nr_lbas - 1, 0xFFFFFFFF)}
    empty = {"boot_ind": 0, "start_chs": ZERO_CHS, "sys_ind": 0, "end_chs": ZERO_CHS, "start_sect": 0, "nr_sects": 0}
    return Mbr.build({"bootcode": bytes(440), "disk_signature": 0, "copy_protect": 0,
                      "partitions": [pmbr, empty, empty, empty]})


def build_entries(partitions: Sequence[GptPartition], num_entries: int) -> bytes:
    by_slot = {p.number: p for p in partitions}
    if len(by_slot) != len(partitions) or any(not 1 <= n <= num_entries for n in by_slot):
        raise ValueError(f"GPT partition numbers must be distinct and within 1..{num_entries}")
    empty = bytes(GPT_ENTRY_SIZE)
    out = []
    for n in range(1, num_entries + 1):
        p = by_slot.get(n)
        if p is None:
            out.append(empty)
            continue
        out.append(GptEntry.build({"partition_type_guid": p.type_guid, "unique_partition_guid": p.unique_guid,
                                   "starting_lba": p.first_lba, "ending_lba": p.last_lba,
                                   "attributes": p.attributes, "partition_name": encode_name(p.name)}))
    return b"".join(out)


def build_header(*, my_lba: int, alternate_lba: int, first_usable_lba: int, last_usable_lba: int, disk_guid: UUID,
                 partition_entry_lba: int, num_partition_entries: int, entries_crc32: int, lbs: int) -> bytes:
    """One header block (lbs bytes) with its CRC filled in."""
    fields = {"revision": GPT_HEADER_REVISION_V1, "header_size": GPT_HEADER_SIZE, "header_crc32": 0, "reserved1": 0,
              "my_lba": my_lba, "alternate_lba": alternate_lba, "first_usable_lba": first_usable_lba,
              "last_usable_lba": last_usable_lba, "disk_guid": disk_guid, "partition_entry_lba": partition_entry_lba,
              "num_partition_entries": num_partition_entries, "sizeof_partition_entry": GPT_ENTRY_SIZE,
              "partition_entry_array_crc32": entries_crc32}
    unsigned = GptHeader.build(fields)
    fields["header_crc32"] = header_crc32(unsigned, GPT_HEADER_SIZE)
    return GptHeader.build(fields).ljust(lbs, b"\0")


def build_gpt(nr_lbas: int, partitions: Sequence[GptPartition], disk_guid: UUID, *, lbs: int = SECTOR_SIZE,
              num_entries: int = GPT_DEFAULT_ENTRIES, first_usable_lba: int | None = None,
              last_usable_lba: int | None = None) -> list[tuple[int, bytes]]:
    """(LBA, data) writes for a whole GPT: protective MBR, both headers and both entry arrays.

    The primary array sits at LBA 2 and the backup right before the backup
    header in the last LBA, as every partitioner lays them out.
    """
    array_blocks = entry_array_blocks(num_entries, lbs)
    last = nr_lbas - 1
    first_usable = 2 + array_blocks if first_usable_lba is None else first_usable_lba
    last_usable = last - 1 - array_blocks if last_usable_lba is None else last_usable_lba
    if first_usable < 2 + array_blocks or last_usable > last - 1 - array_blocks or first_usable > last_usable:
        raise ValueError(f"a {nr_lbas}-block disk has no room for a GPT with {num_entries} entries"
                         f" and usable LBAs {first_usable}..{last_usable}")
    for p in partitions:
        if not first_usable <= p.first_lba <= p.last_lba <= last_usable:
            raise ValueError(f"GPT partition {p.number} ({p.first_lba}..{p.last_lba}) is outside the usable"
                             f" LBAs {first_usable}..{last_usable}")
    entries = build_entries(partitions, num_entries).ljust(array_blocks * lbs, b"\0")
    crc = efi_crc32(entries[:num_entries * GPT_ENTRY_SIZE])
    backup_array = last - array_blocks
    common = {"first_usable_lba": first_usable, "last_usable_lba": last_usable, "disk_guid": disk_guid,
              "num_partition_entries": num_entries, "entries_crc32": crc, "lbs": lbs}
    pmbr = build_protective_mbr(nr_lbas).ljust(lbs, b"\0")
    primary = build_header(my_lba=1, alternate_lba=last, partition_entry_lba=2, **common)
    backup = build_header(my_lba=last, alternate_lba=1, partition_entry_lba=backup_array, **common)
    return [(0, pmbr), (1, primary), (2, entries), (backup_array, entries), (last, backup)]
