"""MBR and EBR: the on-disk layouts, Linux's msdos parser, and a builder.

The layouts are declared once with construct and serve both directions:
`msdos_partition` parses with them and `build_mbr`/`build_msdos` build with
them. Parsing follows `block/partitions/msdos.c` (Linux 6.1; storage.md §2.2):

* the AIX "IBMA" check comes first, then 0x55AA at byte 510 is required;
* every slot's boot indicator must be 0x00 or 0x80, except that a FAT boot
  sector in its place is a table with no partitions (a "superfloppy");
* any 0xEE slot makes the disk GPT's: this parser declines it;
* slots 1-4 keep their numbers; an extended slot (0x05, 0x0F, 0x85) is
  registered as 2 sectors and its EBR chain gives logicals 5, 6, ... in chain
  order, stopping after 100 links without a data partition or at slot 255.

The second pass, for BSD/Solaris/Minix/UnixWare sub-labels, reads each such
partition's label sector as Linux does (so a 0x82 swap partition past the end
of the disk sets access_beyond_eod, as it does on Linux) but does not parse a
label it finds: it says so in a debug line. A plain Linux disk never has one
(a swap partition's 0x82 probe finds no VTOC).
`msdos_partition` never raises: it returns 1 (mine), 0 (not mine, with the
reason in `state.why["dos"]`) or -1 (sector 0 unreadable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from construct import Array, BitsInteger, BitStruct, Bytes, Const, Int8ul, Int16ul, Int32ul, Struct

from rinuxfs.block.partitions.check import SECTOR_SIZE, ParsedPartitions, Partition
from rinuxfs.block.partitions.types import (
    DOS_EXTENDED_PARTITION,
    EFI_PMBR_OSTYPE_EFI_GPT,
    LINUX_DATA_PARTITION,
    LINUX_LVM_PARTITION,
    LINUX_RAID_PARTITION,
    LINUX_SWAP_PARTITION,
    is_extended,
)

# --- layouts ----------------------------------------------------------------------------------

# A CHS address, 3 bytes. Linux ignores CHS; the builders fill it from the LBA with
# libfdisk's 255-head, 63-sector geometry so that our tables equal sfdisk's byte for byte.
Chs = BitStruct(
    "head" / BitsInteger(8),  # byte 0
    "cylinder_high" / BitsInteger(2),  # byte 1, bits 7-6: cylinder bits 9-8
    "sector" / BitsInteger(6),  # byte 1, bits 5-0: sector, counted from 1
    "cylinder_low" / BitsInteger(8),  # byte 2: cylinder bits 7-0
)

# struct msdos_partition (include/linux/msdos_partition.h): one 16-byte slot.
PartitionEntry = Struct(
    "boot_ind" / Int8ul,  # 0x00  0x80 = active; anything but 0x00/0x80 means "not a partition table"
    "start_chs" / Chs,  # 0x01
    "sys_ind" / Int8ul,  # 0x04  type (types.MBR_TYPES)
    "end_chs" / Chs,  # 0x05
    "start_sect" / Int32ul,  # 0x08  first logical block (LBA)
    "nr_sects" / Int32ul,  # 0x0C  length in logical blocks
)
PartitionSlots = Array(4, PartitionEntry)
SLOTS_OFFSET = 0x1BE
MBR_SIGNATURE = b"\x55\xaa"

# The master boot record, LBA 0.
Mbr = Struct(
    "bootcode" / Bytes(440),  # 0x000
    "disk_signature" / Int32ul,  # 0x1B8  the disk identifier; PARTUUIDs are "%08x-%02x" of it
    "copy_protect" / Int16ul,  # 0x1BC  0x5A5A marks a copy-protected disk; otherwise 0
    "partitions" / PartitionSlots,  # 0x1BE  slots 1-4
    "signature" / Const(MBR_SIGNATURE),  # 0x1FE
)

# An extended boot record: an MBR-shaped sector in front of each logical partition.
Ebr = Struct(
    "unused" / Bytes(446),  # 0x000  no boot code and no disk signature here
    # 0x1BE  [0] the data partition, start relative to this EBR;
    #        [1] the link to the next EBR, start relative to the outermost extended partition;
    #        [2], [3] unused (OS/2 and DR-DOS bend these rules; the parser copes as Linux does).
    "partitions" / PartitionSlots,
    "signature" / Const(MBR_SIGNATURE),  # 0x1FE  without it the chain ends
)

# The head of struct fat_boot_sector (include/uapi/linux/msdos_fs.h): just what the
# superfloppy test in msdos_partition() looks at.
FatBootSectorHead = Struct(
    "ignored" / Bytes(3),  # 0x00  jump
    "system_id" / Bytes(8),  # 0x03
    "sector_size" / Int16ul,  # 0x0B
    "sec_per_clus" / Int8ul,  # 0x0D
    "reserved" / Int16ul,  # 0x0E  reserved sectors: a FAT has at least one
    "fats" / Int8ul,  # 0x10
    "dir_entries" / Int16ul,  # 0x11
    "sectors" / Int16ul,  # 0x13
    "media" / Int8ul,  # 0x15
)

AIX_LABEL_MAGIC = b"\xc9\xc2\xd4\xc1"  # EBCDIC "IBMA"
MINIX_PARTITION = 0x81


def _bsd_label(d: bytes) -> bool:
    return d[:4] == b"\x57\x45\x56\x82"  # BSD_DISKMAGIC 0x82564557: d_magic


def _solaris_vtoc(d: bytes) -> bool:
    return d[12:16] == b"\xee\xde\x0d\x60"  # SOLARIS_X86_VTOC_SANE 0x600DDEEE: v_sanity, after v_bootinfo[3]


def _unixware_label(d: bytes) -> bool:
    return d[4:8] == b"\x0d\x60\x5e\xca"  # UNIXWARE_DISKMAGIC 0xCA5E600D: d_magic, after d_type


def _minix_table(d: bytes) -> bool:
    return d[510:512] == MBR_SIGNATURE and d[SLOTS_OFFSET + 4] == MINIX_PARTITION


# msdos.c subtypes[]: the second pass's sub-labels, by type: (name, sector read relative to the
# partition's start, the magic test of that sector).
SUBLABELS: dict[int, tuple[str, int, Callable[[bytes], bool]]] = {
    0xA5: ("bsd", 1, _bsd_label),  # FREEBSD_PARTITION
    0xA9: ("netbsd", 1, _bsd_label),
    0xA6: ("openbsd", 1, _bsd_label),
    MINIX_PARTITION: ("minix", 0, _minix_table),
    0x63: ("unixware", 29, _unixware_label),
    0x82: ("solaris", 1, _solaris_vtoc),  # SOLARIS_X86_PARTITION, which is also Linux swap
    0xBF: ("solaris", 1, _solaris_vtoc),  # NEW_SOLARIS_X86_PARTITION
}
DM6_PARTITION = 0x54
EZD_PARTITION = 0x55
MAX_EMPTY_LINKS = 100  # parse_extended: "++loopct > 100" ends a chain that yields nothing


def fat_valid_media(media: int) -> bool:
    return media >= 0xF8 or media == 0xF0


def slots(sector: bytes) -> list[dict[str, int]]:
    """The four slots of an MBR or EBR sector, whatever its signature says."""
    return list(PartitionSlots.parse(sector[SLOTS_OFFSET:SLOTS_OFFSET + PartitionSlots.sizeof()]))


# --- parsing (msdos.c) --------------------------------------------------------------------------


def aix_magic_present(state: ParsedPartitions, data: bytes) -> bool:
    """msdos.c aix_magic_present: an "IBMA" disk without Linux slots and with an LVM record."""
    if data[:4] != AIX_LABEL_MAGIC:
        return False
    linux = {LINUX_SWAP_PARTITION, LINUX_RAID_PARTITION, LINUX_DATA_PARTITION, LINUX_LVM_PARTITION}
    if any(p.sys_ind in linux or is_extended(p.sys_ind) for p in slots(data)):
        return False
    d = state.read_part_sector(7)
    return d is not None and d[:4] == b"_LVM"


def msdos_partition(state: ParsedPartitions) -> int:
    ssz = state.sector_size // SECTOR_SIZE
    data = state.read_part_sector(0)
    if data is None:
        state.decline("dos", "sector 0 cannot be read")
        return -1
    # Note order! Some AIX disks have no 55aa.
    if aix_magic_present(state, data):
        state.pp_buf += " [AIX]"
        return state.decline("dos", "an AIX disk (IBMA magic, LVM record)")
    if data[510:512] != MBR_SIGNATURE:
        return state.decline("dos", f"no 0x55AA signature at byte 510 of sector 0 (found {data[510:512].hex()})")
    mbr = Mbr.parse(data)

    for slot, p in enumerate(mbr.partitions, 1):
        if p.boot_ind not in (0x00, 0x80):
            fb = FatBootSectorHead.parse(data)
            if slot == 1 and fb.reserved and fb.fats and fat_valid_media(fb.media):
                # A FAT filesystem on the whole disk: a table with no partitions.
                state.label = "dos"
                state.superfloppy = True
                state.debug(f"{state.disk_name}: FAT boot sector without a partition table")
                return 1
            return state.decline("dos", f"slot {slot} has boot indicator 0x{p.boot_ind:02x}, neither 0x00 nor 0x80:"
                                        " sector 0 is not a partition table")
    for slot, p in enumerate(mbr.partitions, 1):
        if p.sys_ind == EFI_PMBR_OSTYPE_EFI_GPT:
            return state.decline("dos", f"slot {slot} has type 0xEE (GPT protective): the disk is left to the GPT"
                                        " parser")

    disksig = mbr.disk_signature
    state.label = "dos"
    state.disk_id = f"0x{disksig:08x}"
    state.next = 5
    for slot, p in enumerate(mbr.partitions, 1):
        start = p.start_sect * ssz
        size = p.nr_sects * ssz
        if not size:
            continue
        meta = Partition(number=slot, start=start, size=size, table_start=p.start_sect, table_size=p.nr_sects,
                         sys_ind=p.sys_ind, bootable=p.boot_ind == 0x80)
        if is_extended(p.sys_ind):
            # Registered small, so nobody mkfs'es the container, but with room for LILO.
            state.put_partition(slot, start, min(size, max(ssz, 2)), meta)
            state.pp_buf += " <"
            parse_extended(state, start, size, disksig)
            state.pp_buf += " >"
            continue
        state.put_partition(slot, start, size, replace(meta, uuid=f"{disksig:08x}-{slot:02x}",
                                                       raid=p.sys_ind == LINUX_RAID_PARTITION))
        if p.sys_ind == DM6_PARTITION:
            state.pp_buf += "[DM]"
        if p.sys_ind == EZD_PARTITION:
            state.pp_buf += "[EZD]"
    for slot, p in enumerate(mbr.partitions, 1):  # second pass
        sublabel = SUBLABELS.get(p.sys_ind) if p.nr_sects else None
        if sublabel is not None:
            name, where, found = sublabel
            d = state.read_part_sector(p.start_sect * ssz + where)
            if d is not None and found(d):
                state.debug(f"{state.disk_name}: p{slot} holds a {name} label: sub-labels are not parsed")
    return 1


def parse_extended(state: ParsedPartitions, first_sector: int, first_size: int, disksig: int) -> None:
    """Walk an EBR chain (msdos.c parse_extended); all sector values in 512-byte units."""
    ssz = state.sector_size // SECTOR_SIZE
    this_sector, this_size = first_sector, first_size
    loopct = 0  # links followed without finding a data partition
    while True:
        loopct += 1
        if loopct > MAX_EMPTY_LINKS:
            state.debug(f"{state.disk_name}: EBR chain: {MAX_EMPTY_LINKS} links without a data partition, stopped")
            return
        if state.next == state.limit:
            return
        data = state.read_part_sector(this_sector)
        if data is None or data[510:512] != MBR_SIGNATURE:
            return
        entries = Ebr.parse(data).partitions

        # First the data partition(s). Usually only entry 0; OS/2 uses all four.
        for i, p in enumerate(entries):
            if not p.nr_sects or is_extended(p.sys_ind):
                continue
            offs = p.start_sect * ssz
            size = p.nr_sects * ssz
            nxt = this_sector + offs
            if i >= 2:  # entries 3 and 4 sometimes hold garbage: keep them only inside this link
                if offs + size > this_size:
                    continue
                if nxt < first_sector:
                    continue
                if nxt + size > first_sector + first_size:
                    continue
            meta = Partition(number=state.next, start=nxt, size=size, table_start=nxt // ssz,
                             table_size=p.nr_sects, sys_ind=p.sys_ind, bootable=p.boot_ind == 0x80,
                             uuid=f"{disksig:08x}-{state.next:02x}", raid=p.sys_ind == LINUX_RAID_PARTITION)
            state.put_partition(state.next, nxt, size, meta)
            loopct = 0
            state.next += 1
            if state.next == state.limit:
                return

        # Then the first link, relative to the outermost extended partition.
        link = next((p for p in entries if p.nr_sects and is_extended(p.sys_ind)), None)
        if link is None:
            return
        this_sector = first_sector + link.start_sect * ssz
        this_size = link.nr_sects * ssz


# --- building ------------------------------------------------------------------------------------

HEADS, SECTORS_PER_TRACK = 255, 63


def lba_to_chs(lba: int) -> dict[str, int]:
    """CHS as libfdisk writes it: 255/63 geometry, saturating at cylinder 1023 (FE FF FF)."""
    cylinder = lba // (HEADS * SECTORS_PER_TRACK)
    head = (lba // SECTORS_PER_TRACK) % HEADS
    sector = lba % SECTORS_PER_TRACK + 1
    if cylinder > 1023:
        cylinder, head, sector = 1023, HEADS - 1, SECTORS_PER_TRACK
    return {"head": head, "cylinder_high": cylinder >> 8, "sector": sector, "cylinder_low": cylinder & 0xFF}


@dataclass(frozen=True)
class MbrPartition:
    """A primary slot to write: absolute LBA and length in logical blocks."""

    start: int
    size: int
    sys_ind: int
    bootable: bool = False


@dataclass(frozen=True)
class LogicalPartition:
    """A logical partition to write, with the LBA of the EBR in front of it."""

    ebr: int
    start: int
    size: int
    sys_ind: int
    bootable: bool = False


ZERO_CHS = {"head": 0, "cylinder_high": 0, "sector": 0, "cylinder_low": 0}
EMPTY_ENTRY = {"boot_ind": 0, "start_chs": ZERO_CHS, "sys_ind": 0, "end_chs": ZERO_CHS, "start_sect": 0, "nr_sects": 0}


def _entry(p: MbrPartition | None, relative_to: int = 0) -> dict[str, object]:
    if p is None:
        return EMPTY_ENTRY
    if p.size <= 0 or p.start < relative_to:
        raise ValueError(f"bad MBR entry {p}")
    if p.start - relative_to > 0xFFFFFFFF or p.size > 0xFFFFFFFF:
        raise ValueError(f"MBR entry {p} does not fit 32-bit LBAs (disks over 2 TiB need GPT)")
    return {"boot_ind": 0x80 if p.bootable else 0, "start_chs": lba_to_chs(p.start), "sys_ind": p.sys_ind,
            "end_chs": lba_to_chs(p.start + p.size - 1), "start_sect": p.start - relative_to, "nr_sects": p.size}


def build_mbr(disk_signature: int, primaries: Sequence[MbrPartition | None], bootcode: bytes = b"") -> bytes:
    """Sector 0 with up to four slots (None leaves a slot empty, keeping the numbering)."""
    if len(primaries) > 4 or len(bootcode) > 440:
        raise ValueError("an MBR has 4 slots and 440 bytes of boot code")
    entries = [_entry(p) for p in primaries] + [EMPTY_ENTRY] * (4 - len(primaries))
    return Mbr.build({"bootcode": bootcode.ljust(440, b"\0"), "disk_signature": disk_signature, "copy_protect": 0,
                      "partitions": entries})


def build_ebr(data: MbrPartition | None, link: MbrPartition | None, extended_start: int, ebr_lba: int) -> bytes:
    """One EBR: the data entry relative to the EBR, the link relative to the extended partition."""
    return Ebr.build({"unused": bytes(446),
                      "partitions": [_entry(data, ebr_lba), _entry(link, extended_start), EMPTY_ENTRY, EMPTY_ENTRY]})


def build_msdos(disk_signature: int, primaries: Sequence[MbrPartition | None],
                logicals: Sequence[LogicalPartition] = ()) -> list[tuple[int, bytes]]:
    """(LBA, sector) writes for an MBR and, if a slot is extended, its EBR chain."""
    writes = [(0, build_mbr(disk_signature, primaries))]
    extended = next((p for p in primaries if p is not None and is_extended(p.sys_ind)), None)
    if extended is None:
        if logicals:
            raise ValueError("logical partitions need an extended slot")
        return writes
    ext_end = extended.start + extended.size
    if not logicals:
        writes.append((extended.start, build_ebr(None, None, extended.start, extended.start)))
    for i, lp in enumerate(logicals):
        if not (extended.start <= lp.ebr < lp.start and lp.start + lp.size <= ext_end):
            raise ValueError(f"logical partition {lp} is not inside the extended partition {extended}")
        link = None
        if i + 1 < len(logicals):
            nxt = logicals[i + 1]
            link = MbrPartition(nxt.ebr, nxt.start + nxt.size - nxt.ebr, DOS_EXTENDED_PARTITION)
        data = MbrPartition(lp.start, lp.size, lp.sys_ind, lp.bootable)
        writes.append((lp.ebr, build_ebr(data, link, extended.start, lp.ebr)))
    return writes
