"""The oracle of the partition fuzzer: Linux's partition scan, transcribed from its C source.

Written straight from block/partitions/core.c (check_partition,
blk_add_partitions, blk_add_partition, read_part_sector), efi.c and msdos.c of
Linux 6.18, with plain ints, `struct` and explicit u32/u64 wrap-around. It
shares no code with `rinuxfs.block.partitions` (which parses with construct),
so the fuzzer compares two independent readings of the same C: partitions,
their metadata and every log line Linux prints (pr_debug included).

What it leaves out, as rinuxfs does: the BSD/Solaris/Minix/UnixWare
sub-labels of the msdos second pass are probed (the read of their label
sector, which sets access_beyond_eod past the end, is kept) but not parsed;
a case whose label sector carries one of their magics is marked
`sublabel` and its partitions are not compared.

The disk is anything with `capacity` (512-byte sectors), `lbs`, `force_gpt`,
`name` and `page(index) -> bytes | None` (a 4 KiB page of the block device's
page cache, cut at the capacity; None when reading it fails).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1
KERN_ERR, KERN_WARNING, KERN_INFO, KERN_DEBUG = 3, 4, 6, 7
DISK_MAX_PARTS = 256
KMALLOC_MAX_SIZE = 4 << 20
GPT_HEADER_SIGNATURE = 0x5452415020494645
GPT_MBR_PROTECTIVE, GPT_MBR_HYBRID = 1, 2
GPT_HEADER = struct.Struct("<QIIIIQQQQ16sQIII")  # struct gpt_header, 92 bytes
GPT_ENTRY = struct.Struct("<16s16sQQQ72s")  # gpt_entry, 128 bytes
MBR_SLOT = struct.Struct("<B3sB3sII")  # struct msdos_partition
LINUX_RAID_GUID = UUID("A19D880F-05FC-4D3B-A006-743F0F84911E").bytes_le
EXTENDED = (0x05, 0x0F, 0x85)
LINUX_SWAP, LINUX_DATA, LINUX_LVM, LINUX_RAID = 0x82, 0x83, 0x8E, 0xFD
DM6_PARTITION, EZD_PARTITION = 0x54, 0x55
# msdos.c subtypes[]: type -> (sector probed, relative to the partition start; magic test)
SUBLABELS = {0xA5: 1, 0xA9: 1, 0xA6: 1, 0x81: 0, 0x63: 29, 0x82: 1, 0xBF: 1}


class Disk(Protocol):
    capacity: int
    lbs: int
    force_gpt: bool
    name: str

    def page(self, index: int) -> bytes | None: ...


@dataclass
class Part:
    start: int
    size: int
    uuid: str = ""
    volname: str = ""
    raid: bool = False


@dataclass
class LinuxScan:
    outcome: str  # "table" (a parser said yes), "none" (nobody did), "error" (the scan failed: -EIO)
    label: str = ""  # "gpt" or "dos" for a table
    parts: dict[int, Part] = field(default_factory=dict)  # what blk_add_partition registers
    messages: list[tuple[int, str]] = field(default_factory=list)
    wrapped: set[int] = field(default_factory=set)  # partitions whose from + size wrapped around u64
    sublabel: bool = False  # a BSD/Solaris/Minix/UnixWare label was found (not parsed)


def lld(value: int) -> int:
    """A u64 printed with %lld."""
    value &= U64
    return value - (1 << 64) if value >> 63 else value


class _State:
    """struct parsed_partitions and read_part_sector."""

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        self.parts: dict[int, Part] = {}
        self.limit = DISK_MAX_PARTS
        self.next = 0
        self.access_beyond_eod = False
        self.name = "p" if disk.name[-1:].isdigit() else disk.name
        self.pp_buf = f" {disk.name}:"
        self.messages: list[tuple[int, str]] = []
        self.sublabel = False
        self._pages: dict[int, bytes | None] = {}

    def read_part_sector(self, n: int) -> bytes | None:
        if n >= self.disk.capacity:
            self.access_beyond_eod = True
            return None
        index = n >> 3
        if index not in self._pages:
            self._pages[index] = self.disk.page(index)
        page = self._pages[index]
        if page is None:
            return None
        return page[(n & 7) * 512:(n & 7) * 512 + 512]

    def put_partition(self, n: int, start: int, size: int) -> None:
        if n < self.limit:
            self.parts[n] = Part(start & U64, size & U64)
            self.pp_buf += f" {self.name}{n}"

    def log(self, level: int, text: str) -> None:
        self.messages.append((level, text))


# --- efi.c --------------------------------------------------------------------------------------


def _last_lba(state: _State) -> int:
    return (state.disk.capacity * 512 // state.disk.lbs - 1) & U64


def _read_lba(state: _State, lba: int, count: int) -> bytes:
    if lba > _last_lba(state):
        return b""
    n = lba * (state.disk.lbs // 512)
    out = b""
    while count:
        data = state.read_part_sector(n)
        n += 1
        if data is None:
            break
        copied = min(512, count)
        out += data[:copied]
        count -= copied
    return out


def _is_pmbr_valid(mbr: bytes, total_sectors: int, state: _State) -> int:
    if mbr[510:512] != b"\x55\xaa":
        return 0
    slots = [MBR_SLOT.unpack_from(mbr, 0x1BE + 16 * i) for i in range(4)]
    part = next((i for i, s in enumerate(slots) if s[2] == 0xEE and s[4] == 1), None)
    if part is None:
        return 0
    ret = GPT_MBR_PROTECTIVE
    if any(s[2] not in (0xEE, 0) for s in slots):
        ret = GPT_MBR_HYBRID
    if ret == GPT_MBR_PROTECTIVE:
        sz = slots[part][5]
        if sz != ((total_sectors & U32) - 1) & U32 and sz != 0xFFFFFFFF:
            state.log(KERN_DEBUG, f"GPT: mbr size in lba ({sz}) different than whole disk"
                                  f" ({min((total_sectors - 1) & U32, 0xFFFFFFFF)}).")
    return ret


def _is_gpt_valid(state: _State, lba: int) -> tuple[tuple, bytes] | None:
    lbs = state.disk.lbs
    raw = _read_lba(state, lba, lbs)
    if len(raw) < lbs:
        return None
    h = GPT_HEADER.unpack_from(raw)
    (sig, _rev, header_size, crc_field, _res, my_lba, _alt, first, last, _guid, entry_lba, num, size, array_crc) = h
    if sig != GPT_HEADER_SIGNATURE:
        state.log(KERN_DEBUG, f"GUID Partition Table Header signature is wrong:{lld(sig)} != {GPT_HEADER_SIGNATURE}")
        return None
    if header_size > lbs:
        state.log(KERN_DEBUG, f"GUID Partition Table Header size is too large: {header_size} > {lbs}")
        return None
    if header_size < 92:
        state.log(KERN_DEBUG, f"GUID Partition Table Header size is too small: {header_size} < 92")
        return None
    crc = zlib.crc32(raw[:16] + b"\0\0\0\0" + raw[20:header_size])
    if crc != crc_field:
        state.log(KERN_DEBUG, f"GUID Partition Table Header CRC is wrong: {crc:x} != {crc_field:x}")
        return None
    if my_lba != lba:
        state.log(KERN_DEBUG, f"GPT my_lba incorrect: {lld(my_lba)} != {lld(lba)}")
        return None
    lastlba = _last_lba(state)
    if first > lastlba:
        state.log(KERN_DEBUG, f"GPT: first_usable_lba incorrect: {lld(first)} > {lld(lastlba)}")
        return None
    if last > lastlba:
        state.log(KERN_DEBUG, f"GPT: last_usable_lba incorrect: {lld(last)} > {lld(lastlba)}")
        return None
    if last < first:
        state.log(KERN_DEBUG, f"GPT: last_usable_lba incorrect: {lld(last)} > {lld(first)}")
        return None
    if size != 128:
        state.log(KERN_DEBUG, "GUID Partition Entry Size check failed.")
        return None
    pt_size = num * size
    if pt_size > KMALLOC_MAX_SIZE:
        state.log(KERN_DEBUG, f"GUID Partition Table is too large: {pt_size} > {KMALLOC_MAX_SIZE} bytes")
        return None
    if not pt_size:
        return None
    ptes = _read_lba(state, entry_lba, pt_size)
    if len(ptes) < pt_size:
        return None
    if zlib.crc32(ptes) != array_crc:
        state.log(KERN_DEBUG, "GUID Partition Entry Array CRC check failed.")
        return None
    return h, ptes


def _compare_gpts(state: _State, p: tuple, a: tuple, lastlba: int) -> None:
    warn = state.log
    errors = 0
    for mine, theirs, text in ((p[5], a[6], "GPT:Primary header LBA != Alt. header alternate_lba"),
                               (p[6], a[5], "GPT:Primary header alternate_lba != Alt. header my_lba"),
                               (p[7], a[7], "GPT:first_usable_lbas don't match."),
                               (p[8], a[8], "GPT:last_usable_lbas don't match.")):
        if mine != theirs:
            warn(KERN_WARNING, text)
            warn(KERN_WARNING, f"GPT:{lld(mine)} != {lld(theirs)}")
            errors += 1
    if p[9] != a[9]:
        warn(KERN_WARNING, "GPT:disk_guids don't match.")
        errors += 1
    for i, text in ((11, "num_partition_entries don't match"), (12, "sizeof_partition_entry values don't match"),
                    (13, "partition_entry_array_crc32 values don't match")):
        if p[i] != a[i]:
            warn(KERN_WARNING, f"GPT:{text}: 0x{p[i]:x} != 0x{a[i]:x}")
            errors += 1
    if p[6] != lastlba:
        warn(KERN_WARNING, "GPT:Primary header thinks Alt. header is not at the end of the disk.")
        warn(KERN_WARNING, f"GPT:{lld(p[6])} != {lld(lastlba)}")
        errors += 1
    if a[5] != lastlba:
        warn(KERN_WARNING, "GPT:Alternate GPT header not at the end of the disk.")
        warn(KERN_WARNING, f"GPT:{lld(a[5])} != {lld(lastlba)}")
        errors += 1
    if errors:
        warn(KERN_WARNING, "GPT: Use GNU Parted to correct GPT errors.")


def _find_valid_gpt(state: _State) -> tuple[tuple, bytes] | None:
    lastlba = _last_lba(state)
    if not state.disk.force_gpt:
        mbr = _read_lba(state, 0, 512).ljust(512, b"\0")  # legacymbr is kzalloc'ed
        good_pmbr = _is_pmbr_valid(mbr, state.disk.capacity, state)
        if not good_pmbr:
            return None
        state.log(KERN_DEBUG, f"Device has a {'protective' if good_pmbr == GPT_MBR_PROTECTIVE else 'hybrid'} MBR")
    pgpt = _is_gpt_valid(state, 1)
    agpt = _is_gpt_valid(state, pgpt[0][6]) if pgpt else None
    if agpt is None and state.disk.force_gpt:
        agpt = _is_gpt_valid(state, lastlba)
    if pgpt is None and agpt is None:
        return None
    if pgpt is not None and agpt is not None:
        _compare_gpts(state, pgpt[0], agpt[0], lastlba)
    if pgpt is not None:
        if agpt is None:
            state.log(KERN_WARNING, "Alternate GPT is invalid, using primary GPT.")
        return pgpt
    state.log(KERN_WARNING, "Primary GPT is invalid, using alternate GPT.")
    return agpt


def _utf16_le_to_7bit(raw: bytes) -> str:
    out = []
    for (unit,) in struct.iter_unpack("<H", raw[:72]):
        c = unit & 0x7F
        if c and not 0x20 <= c < 0x7F:
            c = ord("!")
        out.append(c)
    text = bytes(out)
    return text[:text.index(0)].decode() if 0 in text else text.decode()


def efi_partition(state: _State) -> int:
    found = _find_valid_gpt(state)
    if found is None:
        return 0
    header, ptes = found
    state.log(KERN_DEBUG, "GUID Partition Table is valid!  Yea!")
    ssz = state.disk.lbs // 512
    lastlba = _last_lba(state)
    i = 0
    while i < header[11] and i < state.limit - 1:
        type_guid, unique, start, end, _attrs, name = GPT_ENTRY.unpack_from(ptes, i * 128)
        size = (end - start + 1) & U64
        if type_guid != bytes(16) and start <= lastlba and end <= lastlba:
            state.put_partition(i + 1, start * ssz, size * ssz)
            state.parts[i + 1].raid = type_guid == LINUX_RAID_GUID
            state.parts[i + 1].uuid = str(UUID(bytes_le=unique))
            state.parts[i + 1].volname = _utf16_le_to_7bit(name)
        i += 1
    state.pp_buf += "\n"
    return 1


# --- msdos.c -------------------------------------------------------------------------------------


def _slots(data: bytes) -> list[tuple[int, ...]]:
    return [MBR_SLOT.unpack_from(data, 0x1BE + 16 * i) for i in range(4)]  # boot, chs, sys, chs, start, nr


def _aix_magic_present(state: _State, data: bytes) -> bool:
    if data[:4] != b"\xc9\xc2\xd4\xc1":
        return False
    for s in _slots(data):
        if s[2] in (LINUX_SWAP, LINUX_RAID, LINUX_DATA, LINUX_LVM) or s[2] in EXTENDED:
            return False
    d = state.read_part_sector(7)
    return d is not None and d[:4] == b"_LVM"


def _set_info(state: _State, slot: int, disksig: int) -> None:
    state.parts[slot].uuid = f"{disksig:08x}-{slot:02x}"


def _parse_extended(state: _State, first_sector: int, first_size: int, disksig: int) -> None:
    sector_size = state.disk.lbs // 512
    this_sector, this_size = first_sector, first_size
    loopct = 0
    while True:
        loopct += 1
        if loopct > 100:
            return
        if state.next == state.limit:
            return
        data = state.read_part_sector(this_sector)
        if data is None or data[510:512] != b"\x55\xaa":
            return
        slots = _slots(data)
        for i, s in enumerate(slots):
            if not s[5] or s[2] in EXTENDED:
                continue
            offs = s[4] * sector_size
            size = s[5] * sector_size
            nxt = this_sector + offs
            if i >= 2:
                if offs + size > this_size:
                    continue
                if nxt < first_sector:
                    continue
                if nxt + size > first_sector + first_size:
                    continue
            state.put_partition(state.next, nxt, size)
            _set_info(state, state.next, disksig)
            state.parts[state.next].raid = s[2] == LINUX_RAID
            loopct = 0
            state.next += 1
            if state.next == state.limit:
                return
        link = next((s for s in slots if s[5] and s[2] in EXTENDED), None)
        if link is None:
            return
        this_sector = first_sector + link[4] * sector_size
        this_size = link[5] * sector_size


def _probe_sublabel(state: _State, kind: int, offset: int) -> None:
    """The second pass: read the sub-label's sector and look for its magic (parsing it is left out)."""
    data = state.read_part_sector(offset + SUBLABELS[kind])
    if data is None:
        return
    magic = struct.unpack_from("<I", data)[0]
    if kind in (0xA5, 0xA9, 0xA6):
        found = magic == 0x82564557  # BSD_DISKMAGIC
    elif kind in (0x82, 0xBF):
        found = struct.unpack_from("<I", data, 12)[0] == 0x600DDEEE  # v_sanity, after v_bootinfo[3]
    elif kind == 0x63:
        found = struct.unpack_from("<I", data, 4)[0] == 0xCA5E600D  # d_magic, after d_type
    else:
        found = data[510:512] == b"\x55\xaa" and _slots(data)[0][2] == 0x81
    state.sublabel |= found


def msdos_partition(state: _State) -> int:
    sector_size = state.disk.lbs // 512
    data = state.read_part_sector(0)
    if data is None:
        return -1
    if _aix_magic_present(state, data):
        state.pp_buf += " [AIX]"
        return 0
    if data[510:512] != b"\x55\xaa":
        return 0
    slots = _slots(data)
    for slot, s in enumerate(slots, 1):
        if s[0] not in (0, 0x80):
            reserved, fats = struct.unpack_from("<H", data, 0x0E)[0], data[0x10]
            media = data[0x15]
            if slot == 1 and reserved and fats and (media >= 0xF8 or media == 0xF0):
                state.pp_buf += "\n"
                return 1
            return 0
    if any(s[2] == 0xEE for s in slots):
        return 0
    disksig = struct.unpack_from("<I", data, 0x1B8)[0]
    state.next = 5
    for slot, s in enumerate(slots, 1):
        start = s[4] * sector_size
        size = s[5] * sector_size
        if not size:
            continue
        if s[2] in EXTENDED:
            state.put_partition(slot, start, min(size, max(sector_size, 2)))
            state.pp_buf += " <"
            _parse_extended(state, start, size, disksig)
            state.pp_buf += " >"
            continue
        state.put_partition(slot, start, size)
        _set_info(state, slot, disksig)
        state.parts[slot].raid = s[2] == LINUX_RAID
        if s[2] == DM6_PARTITION:
            state.pp_buf += "[DM]"
        if s[2] == EZD_PARTITION:
            state.pp_buf += "[EZD]"
    state.pp_buf += "\n"
    for s in slots:
        if s[5] and s[2] in SUBLABELS:
            _probe_sublabel(state, s[2], s[4] * sector_size)
    return 1


# --- core.c -------------------------------------------------------------------------------------


def linux_scan(disk: Disk, *, truncate_wrapped: bool = False) -> LinuxScan:
    """bdev_disk_changed → blk_add_partitions → check_partition, then blk_add_partition for each slot.

    A GPT entry whose end lies before its start gets a size near 2^64; `from + size` then
    wraps in blk_add_partition and Linux registers that partition uncut (`wrapped`). With
    `truncate_wrapped` the end-of-device check is done without the wrap-around, which is
    what rinuxfs does (a documented deviation): the partition is cut at the end of the
    disk with the usual "extends beyond EOD, truncated" warning.
    """
    if not disk.capacity:
        return LinuxScan("none")
    state = _State(disk)
    res = err = 0
    label = ""
    for name, parser in (("gpt", efi_partition), ("dos", msdos_partition)):
        state.parts.clear()
        res = parser(state)
        if res < 0:
            err, res = res, 0
        if res:
            label = name
            break
    if res <= 0:
        if state.access_beyond_eod:
            err = -28  # -ENOSPC
        if err:
            state.log(KERN_INFO, state.pp_buf + " unable to read partition table")
            if err == -28:
                state.log(KERN_WARNING, f"{disk.name}: partition table beyond EOD, truncated")
            return LinuxScan("error", messages=state.messages)
        return LinuxScan("none", messages=state.messages)

    state.log(KERN_INFO, state.pp_buf.rstrip("\n"))
    if state.access_beyond_eod:
        state.log(KERN_WARNING, f"{disk.name}: partition table partially beyond EOD, truncated")
    scan = LinuxScan("table", label, messages=state.messages, sublabel=state.sublabel)
    capacity = disk.capacity
    for p in range(1, state.limit):
        part = state.parts.get(p)
        if part is None or not part.size:
            continue
        if part.start >= capacity:
            state.log(KERN_WARNING, f"{disk.name}: p{p} start {part.start} is beyond EOD, truncated")
            continue
        end = part.start + part.size
        if end > capacity and (truncate_wrapped or end & U64 > capacity):
            if end & U64 <= capacity:
                scan.wrapped.add(p)
            state.log(KERN_WARNING, f"{disk.name}: p{p} size {part.size} extends beyond EOD, truncated")
            part.size = capacity - part.start
        elif end > capacity:
            scan.wrapped.add(p)  # Linux registers a partition of ~2^64 sectors here
        scan.parts[p] = part
    return scan
