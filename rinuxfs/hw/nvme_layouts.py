"""NVMe in-memory layouts, declared once with construct (NVMe Base 1.4; storage.md §1.2).

Each layout reads top to bottom like the spec's figure: offset order, field
names from the spec, reserved areas as Padding. They serve both directions:
the controller model builds Identify pages and logs with them, and tests (or a
host driver) parse and build SQEs/CQEs with them.

The two per-I/O layouts (SQE, CQE) also have a `struct` twin, because
interpreted construct costs ~10 µs per small struct (storage.md §4.3) and the
model decodes one SQE and encodes one CQE per command. The twins sit right
under their construct declaration and a test checks they agree byte for byte.
"""

from __future__ import annotations

import struct
from typing import Any

from construct import (
    Adapter,
    Array,
    Bytes,
    BytesInteger,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Padding,
    Struct,
)

PAGE_4K = 4096
IDENTIFY_SIZE = 4096  # every Identify data structure is 4 KiB (§5.15.2)


class SpacePadded(Adapter):  # type: ignore[misc]
    """An ASCII string padded with spaces, not NULs, as the SN/MN/FR fields require (§5.15.2.2)."""

    def __init__(self, length: int) -> None:
        super().__init__(Bytes(length))
        self.length = length

    def _decode(self, obj: bytes, context: Any, path: Any) -> str:
        return obj.decode("ascii").rstrip(" ")

    def _encode(self, obj: str, context: Any, path: Any) -> bytes:
        raw = obj.encode("ascii")
        if len(raw) > self.length:
            raise ValueError(f"{obj!r} is longer than {self.length} bytes")
        return raw.ljust(self.length, b" ")


Int128ul = BytesInteger(16, swapped=True)  # the SMART counters are 128-bit little-endian

# --- §4.2 Submission Queue Entry (Figure 105, 64 bytes) ---------------------------------

SubmissionQueueEntry = Struct(
    "opcode" / Int8ul,
    "flags" / Int8ul,  # FUSE [1:0], PSDT [7:6]
    "cid" / Int16ul,
    "nsid" / Int32ul,
    "cdw2" / Int32ul,
    "cdw3" / Int32ul,
    "mptr" / Int64ul,
    "prp1" / Int64ul,  # DPTR, as PRP entry 1 …
    "prp2" / Int64ul,  # … and PRP entry 2 or a PRP list pointer
    "cdw10" / Int32ul,
    "cdw11" / Int32ul,
    "cdw12" / Int32ul,
    "cdw13" / Int32ul,
    "cdw14" / Int32ul,
    "cdw15" / Int32ul,
)
SQE_SIZE = 64
# Hot-path twin of SubmissionQueueEntry: opcode, flags, cid, nsid, (cdw2, cdw3, mptr skipped), prp1, prp2, cdw10-15.
SQE_STRUCT = struct.Struct("<BBHI16xQQ6I")

# --- §4.6 Completion Queue Entry (Figure 121, 16 bytes) ---------------------------------

CompletionQueueEntry = Struct(
    "dw0" / Int32ul,  # command specific result
    "dw1" / Int32ul,
    "sqhd" / Int16ul,
    "sqid" / Int16ul,
    "cid" / Int16ul,
    "status" / Int16ul,  # phase tag bit 0, status field [15:1] (§4.6.1)
)
CQE_SIZE = 16
# Hot-path twin of CompletionQueueEntry.
CQE_STRUCT = struct.Struct("<IIHHHH")

# --- §6.7 Dataset Management range (Figure 364, 16 bytes) ------------------------------

DsmRange = Struct(
    "cattr" / Int32ul,  # context attributes
    "nlb" / Int32ul,  # length in logical blocks: a count, not 0's based
    "slba" / Int64ul,
)
DSM_RANGE_SIZE = 16

# --- §5.15.2.1 Power State Descriptor (Figure 248, 32 bytes) ----------------------------

PowerStateDescriptor = Struct(
    "mp" / Int16ul,  # maximum power, centiwatts
    Padding(1),
    "flags" / Int8ul,  # MXPS bit 0, NOPS bit 1
    "enlat" / Int32ul,
    "exlat" / Int32ul,
    "rrt" / Int8ul,
    "rrl" / Int8ul,
    "rwt" / Int8ul,
    "rwl" / Int8ul,
    "idlp" / Int16ul,
    "ips" / Int8ul,
    Padding(1),
    "actp" / Int16ul,
    "apw_aps" / Int8ul,
    Padding(9),
)

# --- §5.15.2.2 Identify Controller data structure (Figure 247, CNS 01h) ------------------

IdentifyController = Struct(
    "vid" / Int16ul,  # 0
    "ssvid" / Int16ul,  # 2
    "sn" / SpacePadded(20),  # 4
    "mn" / SpacePadded(40),  # 24
    "fr" / SpacePadded(8),  # 64
    "rab" / Int8ul,  # 72
    "ieee" / Bytes(3),  # 73
    "cmic" / Int8ul,  # 76
    "mdts" / Int8ul,  # 77: max transfer = 2^MDTS × CAP.MPSMIN page; 0 = no limit
    "cntlid" / Int16ul,  # 78
    "ver" / Int32ul,  # 80
    "rtd3r" / Int32ul,  # 84
    "rtd3e" / Int32ul,  # 88
    "oaes" / Int32ul,  # 92
    "ctratt" / Int32ul,  # 96
    "rrls" / Int16ul,  # 100
    Padding(9),  # 102
    "cntrltype" / Int8ul,  # 111: 1 = I/O controller
    "fguid" / Bytes(16),  # 112
    "crdt1" / Int16ul,  # 128
    "crdt2" / Int16ul,  # 130
    "crdt3" / Int16ul,  # 132
    Padding(106),  # 134
    Padding(16),  # 240: NVMe-MI
    "oacs" / Int16ul,  # 256
    "acl" / Int8ul,  # 258
    "aerl" / Int8ul,  # 259
    "frmw" / Int8ul,  # 260
    "lpa" / Int8ul,  # 261
    "elpe" / Int8ul,  # 262
    "npss" / Int8ul,  # 263
    "avscc" / Int8ul,  # 264
    "apsta" / Int8ul,  # 265
    "wctemp" / Int16ul,  # 266
    "cctemp" / Int16ul,  # 268
    "mtfa" / Int16ul,  # 270
    "hmpre" / Int32ul,  # 272
    "hmmin" / Int32ul,  # 276
    "tnvmcap" / Int128ul,  # 280
    "unvmcap" / Int128ul,  # 296
    "rpmbs" / Int32ul,  # 312
    "edstt" / Int16ul,  # 316
    "dsto" / Int8ul,  # 318
    "fwug" / Int8ul,  # 319
    "kas" / Int16ul,  # 320
    "hctma" / Int16ul,  # 322
    "mntmt" / Int16ul,  # 324
    "mxtmt" / Int16ul,  # 326
    "sanicap" / Int32ul,  # 328
    "hmminds" / Int32ul,  # 332
    "hmmaxd" / Int16ul,  # 336
    "nsetidmax" / Int16ul,  # 338
    "endgidmax" / Int16ul,  # 340
    "anatt" / Int8ul,  # 342
    "anacap" / Int8ul,  # 343
    "anagrpmax" / Int32ul,  # 344
    "nanagrpid" / Int32ul,  # 348
    "pels" / Int32ul,  # 352
    Padding(156),  # 356
    "sqes" / Int8ul,  # 512: max [7:4], min [3:0], log2 bytes
    "cqes" / Int8ul,  # 513
    "maxcmd" / Int16ul,  # 514
    "nn" / Int32ul,  # 516
    "oncs" / Int16ul,  # 520: bit 2 DSM, bit 3 Write Zeroes
    "fuses" / Int16ul,  # 522
    "fna" / Int8ul,  # 524
    "vwc" / Int8ul,  # 525: bit 0 present, [2:1] = 11b broadcast Flush supported
    "awun" / Int16ul,  # 526
    "awupf" / Int16ul,  # 528
    "nvscc" / Int8ul,  # 530
    "nwpc" / Int8ul,  # 531
    "acwu" / Int16ul,  # 532
    Padding(2),  # 534
    "sgls" / Int32ul,  # 536: 0 = PRPs only
    "mnan" / Int32ul,  # 540
    Padding(224),  # 544
    "subnqn" / Bytes(256),  # 768: NUL-padded UTF-8
    Padding(768),  # 1024
    Padding(256),  # 1792: NVMe over Fabrics
    "psd" / Array(32, PowerStateDescriptor),  # 2048
    "vs" / Bytes(1024),  # 3072
)

# --- §5.15.2.1 LBA Format and Identify Namespace (Figures 245, 246, CNS 00h) ---------------

LbaFormat = Struct(
    "ms" / Int16ul,  # metadata bytes per LBA
    "lbads" / Int8ul,  # log2(LBA data size)
    "rp" / Int8ul,  # relative performance [1:0]
)

IdentifyNamespace = Struct(
    "nsze" / Int64ul,  # 0
    "ncap" / Int64ul,  # 8
    "nuse" / Int64ul,  # 16
    "nsfeat" / Int8ul,  # 24
    "nlbaf" / Int8ul,  # 25: 0's based
    "flbas" / Int8ul,  # 26: [3:0] index into lbaf
    "mc" / Int8ul,  # 27
    "dpc" / Int8ul,  # 28
    "dps" / Int8ul,  # 29
    "nmic" / Int8ul,  # 30
    "rescap" / Int8ul,  # 31
    "fpi" / Int8ul,  # 32
    "dlfeat" / Int8ul,  # 33: [2:0] = 001b, deallocated blocks read as zeroes
    "nawun" / Int16ul,  # 34
    "nawupf" / Int16ul,  # 36
    "nacwu" / Int16ul,  # 38
    "nabsn" / Int16ul,  # 40
    "nabo" / Int16ul,  # 42
    "nabspf" / Int16ul,  # 44
    "noiob" / Int16ul,  # 46
    "nvmcap" / Int128ul,  # 48
    "npwg" / Int16ul,  # 64
    "npwa" / Int16ul,  # 66
    "npdg" / Int16ul,  # 68
    "npda" / Int16ul,  # 70
    "nows" / Int16ul,  # 72
    Padding(18),  # 74
    "anagrpid" / Int32ul,  # 92
    Padding(3),  # 96
    "nsattr" / Int8ul,  # 99: bit 0 namespace is write protected
    "nvmsetid" / Int16ul,  # 100
    "endgid" / Int16ul,  # 102
    "nguid" / Bytes(16),  # 104
    "eui64" / Bytes(8),  # 120
    "lbaf" / Array(16, LbaFormat),  # 128
    Padding(192),  # 192
    "vs" / Bytes(3712),  # 384
)

# --- §5.15.2.4 Namespace Identification Descriptor (Figure 250, CNS 03h) -----------------

NamespaceIdDescriptorHeader = Struct(
    "nidt" / Int8ul,  # 1 EUI64, 2 NGUID, 3 UUID
    "nidl" / Int8ul,  # length of the NID that follows
    Padding(2),
)
NIDT_UUID = 3

# --- §5.14.1.1 Error Information log entry (Figure 193, LID 01h) -------------------------

ErrorInformationEntry = Struct(
    "error_count" / Int64ul,
    "sqid" / Int16ul,
    "cid" / Int16ul,
    "status" / Int16ul,
    "parameter_error_location" / Int16ul,
    "lba" / Int64ul,
    "nsid" / Int32ul,
    "vs" / Int8ul,
    "trtype" / Int8ul,
    Padding(2),
    "csi" / Int64ul,
    "trtype_specific" / Int16ul,
    Padding(22),
)

# --- §5.14.1.2 SMART / Health Information log (Figure 194, LID 02h, 512 bytes) ------------

SmartLog = Struct(
    "critical_warning" / Int8ul,  # 0
    "composite_temperature" / Int16ul,  # 1: kelvin
    "available_spare" / Int8ul,  # 3: percent
    "available_spare_threshold" / Int8ul,  # 4
    "percentage_used" / Int8ul,  # 5
    "endurance_group_critical_warning" / Int8ul,  # 6
    Padding(25),  # 7
    "data_units_read" / Int128ul,  # 32: thousands of 512-byte units, rounded up
    "data_units_written" / Int128ul,  # 48
    "host_read_commands" / Int128ul,  # 64
    "host_write_commands" / Int128ul,  # 80
    "controller_busy_time" / Int128ul,  # 96: minutes
    "power_cycles" / Int128ul,  # 112
    "power_on_hours" / Int128ul,  # 128
    "unsafe_shutdowns" / Int128ul,  # 144
    "media_errors" / Int128ul,  # 160
    "num_err_log_entries" / Int128ul,  # 176
    "warning_temp_time" / Int32ul,  # 192: minutes
    "critical_comp_time" / Int32ul,  # 196
    "temperature_sensor" / Array(8, Int16ul),  # 200
    "thm_temp1_trans_count" / Int32ul,  # 216
    "thm_temp2_trans_count" / Int32ul,  # 220
    "thm_temp1_total_time" / Int32ul,  # 224
    "thm_temp2_total_time" / Int32ul,  # 228
    Padding(280),  # 232
)

# --- §5.14.1.3 Firmware Slot Information log (Figure 195, LID 03h, 512 bytes) -------------

FirmwareSlotLog = Struct(
    "afi" / Int8ul,  # active firmware info: [2:0] active slot
    Padding(7),
    "frs" / Array(7, Bytes(8)),  # revision per slot: space-padded ASCII, or all zeros for an empty slot
    Padding(448),
)
