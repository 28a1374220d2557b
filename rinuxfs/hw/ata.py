"""ATA device facts for the simulated SATA disk: task-file bits, opcodes, IDENTIFY DEVICE and the GP logs.

Contract: `identify_device(...)` returns the 512-byte IDENTIFY DEVICE page of a disk of a given
capacity (ACS-3 §7.12.7), with the word-255 integrity checksum filled in, so `hdparm --Istdin`
and Linux's `ata_dev_configure` accept it. `gp_log_directory()` and `ncq_error_log(...)` build the
two General Purpose logs the disk answers READ LOG EXT for (ACS-3 §9.2 and §9.13). Nothing here
does I/O or knows about AHCI: the HBA model in `ahci.py` executes the commands and moves the bytes.

Rules: every page layout is declared once with `construct`, top to bottom in word order, next to
its spec section. Pages are built rarely (at IDENTIFY or READ LOG time), so construct's speed does
not matter here. Word values follow what Linux reads (`include/linux/ata.h` ATA_ID_*), checked
against QEMU's `ide_identify` where QEMU models the same word.
"""

from __future__ import annotations

from array import array
from typing import Any

from construct import (
    Adapter,
    Array,
    BitsInteger,
    BitStruct,
    Bytes,
    Flag,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Padding,
    Struct,
)

SECTOR_SIZE = 512
NCQ_DEPTH = 32
MAX_DSM_BLOCKS = 8  # IDENTIFY word 105: 512-byte blocks of LBA range entries one DSM command may carry
DSM_RANGES_PER_BLOCK = SECTOR_SIZE // 8
LBA28_LIMIT = 0x0FFFFFFF

# Status register (ACS-3 §6.2, Linux ATA_BUSY …)
ATA_ERR = 0x01  # an error; the error register says which
ATA_DRQ = 0x08
ATA_DSC = 0x10  # "device seek complete", obsolete but every drive and QEMU still report it
ATA_DF = 0x20  # device fault
ATA_DRDY = 0x40
ATA_BSY = 0x80
STATUS_OK = ATA_DRDY | ATA_DSC  # 0x50
STATUS_ERROR = ATA_DRDY | ATA_DSC | ATA_ERR  # 0x51

# Error register (ACS-3 §6.3)
ATA_AMNF = 0x01  # also "diagnostic passed" in a signature FIS
ATA_ABRT = 0x04
ATA_IDNF = 0x10  # address not found: LBA out of range; Linux → ILLEGAL REQUEST / 21h
ATA_UNC = 0x40  # uncorrectable data

# Opcodes (ACS-3 §7; Linux include/linux/ata.h ATA_CMD_*)
ATA_CMD_DSM = 0x06
ATA_CMD_READ_EXT = 0x25  # READ DMA EXT
ATA_CMD_READ_LOG_EXT = 0x2F
ATA_CMD_WRITE_EXT = 0x35  # WRITE DMA EXT
ATA_CMD_FPDMA_READ = 0x60
ATA_CMD_FPDMA_WRITE = 0x61
ATA_CMD_READ = 0xC8  # READ DMA (LBA28): Linux uses it when the LBA and count fit in 28 bits
ATA_CMD_WRITE = 0xCA  # WRITE DMA (LBA28)
ATA_CMD_STANDBYNOW1 = 0xE0
ATA_CMD_IDLEIMMEDIATE = 0xE1
ATA_CMD_CHK_POWER = 0xE5
ATA_CMD_FLUSH = 0xE7
ATA_CMD_FLUSH_EXT = 0xEA
ATA_CMD_ID_ATA = 0xEC
ATA_CMD_SET_FEATURES = 0xEF

# SET FEATURES subcommands (ACS-3 §7.45, features register)
SETFEATURES_WC_ON = 0x02
SETFEATURES_XFER = 0x03
SETFEATURES_RA_OFF = 0x55
SETFEATURES_DEFAULTS_OFF = 0x66
SETFEATURES_WC_OFF = 0x82
SETFEATURES_RA_ON = 0xAA
SETFEATURES_DEFAULTS_ON = 0xCC

DSM_TRIM = 0x01  # features bit 0 of DATA SET MANAGEMENT

# General Purpose logs this disk has (ACS-3 §9.1 table A.2)
LOG_DIRECTORY = 0x00
LOG_NCQ_ERROR = 0x10


class AtaString(Adapter):  # type: ignore[misc]
    """An ATA string field: ASCII, space padded, each 16-bit word holding two characters high byte first.

    Stored little-endian, so each byte pair is swapped (ACS-3 §3.3.10, "ATA string convention").
    """

    def __init__(self, length: int) -> None:
        super().__init__(Bytes(length))
        self.length = length

    def _encode(self, obj: str, context: Any, path: Any) -> bytes:
        raw = obj.encode("ascii")
        if len(raw) > self.length:
            raise ValueError(f"ATA string {obj!r} is longer than {self.length} bytes")
        return _swap_pairs(raw.ljust(self.length, b" "))

    def _decode(self, obj: bytes, context: Any, path: Any) -> str:
        return _swap_pairs(obj).decode("ascii").rstrip(" ")


def _swap_pairs(raw: bytes) -> bytes:
    words = array("H", raw)
    words.byteswap()
    return words.tobytes()


# IDENTIFY DEVICE data (ACS-3 §7.12.7, table 45); one line per word or run of words.
IdentifyDevice = Struct(
    "general_config" / Int16ul,  # 0: bit 15 = 0 ATA device, bit 6 obsolete "fixed"
    "cylinders" / Int16ul,  # 1: obsolete CHS, still printed by hdparm
    "specific_config" / Int16ul,  # 2
    "heads" / Int16ul,  # 3
    Padding(4),  # 4-5: retired
    "sectors_per_track" / Int16ul,  # 6
    Padding(6),  # 7-9: CFA / retired
    "serial_number" / AtaString(20),  # 10-19
    Padding(6),  # 20-22: retired / obsolete
    "firmware_revision" / AtaString(8),  # 23-26
    "model_number" / AtaString(40),  # 27-46
    "max_multiple" / Int16ul,  # 47: 0x80nn, nn = max sectors per READ/WRITE MULTIPLE
    "trusted_computing" / Int16ul,  # 48
    "capabilities" / Int16ul,  # 49: bit 9 LBA, bit 8 DMA, bit 11 IORDY
    "capabilities2" / Int16ul,  # 50: bit 14 must be 1
    Padding(4),  # 51-52: obsolete PIO/DMA timing
    "field_validity" / Int16ul,  # 53: bit 2 word 88 valid, bit 1 words 64-70 valid, bit 0 words 54-58 valid
    "current_cylinders" / Int16ul,  # 54
    "current_heads" / Int16ul,  # 55
    "current_sectors_per_track" / Int16ul,  # 56
    "current_chs_capacity" / Int32ul,  # 57-58
    "multiple_setting" / Int16ul,  # 59
    "lba28_capacity" / Int32ul,  # 60-61: ATA_ID_LBA_CAPACITY
    Padding(2),  # 62: obsolete single-word DMA
    "multiword_dma" / Int16ul,  # 63
    "pio_modes" / Int16ul,  # 64: ATA_ID_PIO_MODES
    "min_mwdma_cycle" / Int16ul,  # 65
    "rec_mwdma_cycle" / Int16ul,  # 66
    "min_pio_cycle" / Int16ul,  # 67
    "min_pio_iordy_cycle" / Int16ul,  # 68
    "additional_supported" / Int16ul,  # 69: bit 14 deterministic read after TRIM, bit 5 reads zeros after TRIM
    Padding(2),  # 70
    Padding(8),  # 71-74: IDENTIFY PACKET DEVICE only
    "queue_depth" / Int16ul,  # 75: ATA_ID_QUEUE_DEPTH, depth - 1
    "sata_capabilities" / Int16ul,  # 76: bit 8 NCQ, bits 3:1 Gen3/Gen2/Gen1
    "sata_capabilities2" / Int16ul,  # 77: bits 3:1 current negotiated speed
    "sata_features_supported" / Int16ul,  # 78
    "sata_features_enabled" / Int16ul,  # 79
    "major_version" / Int16ul,  # 80: ATA_ID_MAJOR_VER, bit n = ATA-n (bit 8 ATA8-ACS, 9 ACS-2, 10 ACS-3)
    "minor_version" / Int16ul,  # 81
    "command_set_1" / Int16ul,  # 82: bit 14 NOP, bit 5 volatile write cache
    "command_set_2" / Int16ul,  # 83: bits 15:14 = 01, bit 13 FLUSH CACHE EXT, bit 12 FLUSH CACHE, bit 10 LBA48
    "command_set_ext" / Int16ul,  # 84: bits 15:14 = 01
    "cfs_enable_1" / Int16ul,  # 85: enabled copy of 82; bit 5 = write cache on (sysfs write_cache)
    "cfs_enable_2" / Int16ul,  # 86: enabled copy of 83
    "csf_default" / Int16ul,  # 87: bits 15:14 = 01
    "udma_modes" / Int16ul,  # 88: bits 6:0 supported, 14:8 selected
    "erase_time" / Int16ul,  # 89
    "enhanced_erase_time" / Int16ul,  # 90
    "apm_level" / Int16ul,  # 91
    "master_password_id" / Int16ul,  # 92
    "hw_reset_result" / Int16ul,  # 93: 0 on SATA (Linux ata_id_is_sata tests it)
    Padding(12),  # 94-99: AAM, streaming
    "lba48_capacity" / Int64ul,  # 100-103: ATA_ID_LBA_CAPACITY_2
    "stream_pio_time" / Int16ul,  # 104
    "max_dsm_blocks" / Int16ul,  # 105: ATA_ID_DATA_SET_MGMT limit
    "sector_size" / Int16ul,  # 106: bits 15:14 = 01; bit 12 words 117-118 valid; bit 13 + 3:0 physical/logical
    Padding(2),  # 107: inter-seek delay
    "world_wide_name" / Bytes(8),  # 108-111
    Padding(10),  # 112-116: reserved / obsolete
    "logical_sector_words" / Int32ul,  # 117-118: logical sector size in words when 106 bit 12
    "command_set_3" / Int16ul,  # 119: bits 15:14 = 01
    "cfs_enable_3" / Int16ul,  # 120: bits 15:14 = 01
    Padding(14),  # 121-127
    "security_status" / Int16ul,  # 128
    Padding(62),  # 129-159: vendor specific
    Padding(2),  # 160: CFA power mode (obsolete)
    Padding(14),  # 161-167
    "form_factor" / Int16ul,  # 168
    "dsm_support" / Int16ul,  # 169: ATA_ID_DATA_SET_MGMT, bit 0 TRIM
    "additional_product_id" / Bytes(8),  # 170-173
    Padding(4),  # 174-175
    "media_serial" / Bytes(60),  # 176-205
    "sct_command_transport" / Int16ul,  # 206
    Padding(4),  # 207-208
    "alignment" / Int16ul,  # 209: bits 15:14 = 01, logical sector offset within the physical sector
    Padding(14),  # 210-216: write-read-verify counts, obsolete NV cache
    "rotation_rate" / Int16ul,  # 217: ATA_ID_ROT_SPEED, 1 = non-rotating medium (sysfs rotational = 0)
    Padding(4),  # 218-219
    Padding(4),  # 220-221
    "transport_major" / Int16ul,  # 222: 0x1xxx = serial; bit 5 SATA 3.0 …
    "transport_minor" / Int16ul,  # 223
    Padding(12),  # 224-229
    "extended_sectors" / Int64ul,  # 230-233 (only meaningful with 69 bit 3; left 0)
    Padding(42),  # 234-254
    "integrity" / Int16ul,  # 255: 0xA5 in the low byte, the checksum in the high byte
)


def identify_device(*, sectors: int, serial: str, model: str, firmware: str, write_cache: bool = True) -> bytes:
    """The IDENTIFY DEVICE page of a 512-byte-sector SATA SSD with `sectors` sectors, NCQ and TRIM."""
    cylinders = min(sectors // (16 * 63), 16383)
    page = IdentifyDevice.build(
        dict(
            general_config=0x0040,
            cylinders=cylinders,
            specific_config=0xC837,  # "device does not require SET FEATURES to spin up; IDENTIFY complete"
            heads=16,
            sectors_per_track=63,
            serial_number=serial,
            firmware_revision=firmware,
            model_number=model,
            max_multiple=0x8010,
            trusted_computing=0,
            capabilities=(1 << 11) | (1 << 9) | (1 << 8),
            capabilities2=0x4000,
            field_validity=0x0007,
            current_cylinders=cylinders,
            current_heads=16,
            current_sectors_per_track=63,
            current_chs_capacity=cylinders * 16 * 63,
            multiple_setting=0x0110,
            lba28_capacity=min(sectors, LBA28_LIMIT),
            multiword_dma=0x0007,
            pio_modes=0x0003,
            min_mwdma_cycle=120,
            rec_mwdma_cycle=120,
            min_pio_cycle=120,
            min_pio_iordy_cycle=120,
            additional_supported=(1 << 14) | (1 << 5),  # punched holes read back as zeros
            queue_depth=NCQ_DEPTH - 1,
            sata_capabilities=(1 << 8) | 0b1110,
            sata_capabilities2=1 << 1,  # negotiated Gen1, matching PxSSTS.SPD = 1
            sata_features_supported=0,
            sata_features_enabled=0,
            major_version=0x07F0,  # ATA/ATAPI-4 … ACS-3
            minor_version=0,
            command_set_1=(1 << 14) | (1 << 5),
            command_set_2=0x4000 | (1 << 13) | (1 << 12) | (1 << 10),
            command_set_ext=0x4000,
            cfs_enable_1=(1 << 14) | ((1 << 5) if write_cache else 0),
            cfs_enable_2=(1 << 13) | (1 << 12) | (1 << 10),
            csf_default=0x4000,
            udma_modes=0x407F,  # UDMA 0-6 supported, mode 6 selected
            erase_time=0,
            enhanced_erase_time=0,
            apm_level=0,
            master_password_id=0,
            hw_reset_result=0,
            lba48_capacity=sectors,
            stream_pio_time=0,
            max_dsm_blocks=MAX_DSM_BLOCKS,
            sector_size=0x4000,  # one 512-byte logical sector per physical sector
            world_wide_name=bytes(8),
            logical_sector_words=0,
            command_set_3=0x4000,
            cfs_enable_3=0x4000,
            security_status=0,
            form_factor=0,
            dsm_support=DSM_TRIM,
            additional_product_id=bytes(8),
            media_serial=bytes(60),
            sct_command_transport=0,
            alignment=0x4000,
            rotation_rate=1,
            transport_major=0x1000 | 0x3F,  # serial; ATA8-AST, SATA 1.0a, II ext, 2.5, 2.6, 3.0
            transport_minor=0,
            extended_sectors=0,
            integrity=0,
        )
    )
    return with_integrity_word(page)


def with_integrity_word(page: bytes) -> bytes:
    """Fill word 255: signature 0xA5, then the byte that makes all 512 bytes sum to 0 mod 256 (ACS-3 §7.12.7.91)."""
    body = page[:510] + b"\xa5"
    return body + bytes([-sum(body) & 0xFF])


# General Purpose Log Directory (ACS-3 §9.2): word n = number of pages of log n.
GpLogDirectory = Struct(
    "version" / Int16ul,  # 0x0001
    "pages" / Array(255, Int16ul),
)


def gp_log_directory() -> bytes:
    pages = [0] * 255
    pages[LOG_NCQ_ERROR - 1] = 1
    return GpLogDirectory.build(dict(version=1, pages=pages))


# The device's task file after a command, as every device-to-host FIS and the NCQ error
# log (ACS-3 §9.12) lay it out from byte 2: declared once, spliced into those layouts.
DEVICE_TASK_FILE = (
    "status" / Int8ul,
    "error" / Int8ul,
    "lba0" / Int8ul,
    "lba1" / Int8ul,
    "lba2" / Int8ul,
    "device" / Int8ul,
    "lba3" / Int8ul,
    "lba4" / Int8ul,
    "lba5" / Int8ul,
    Padding(1),
    "count" / Int8ul,
    "count_exp" / Int8ul,
)

# NCQ Command Error log, log 10h (ACS-3 §9.13): read by Linux's ata_eh_read_log_10h after an NCQ error.
NcqErrorLog = Struct(
    "flags"
    / BitStruct(
        "nq" / Flag,  # 1: the last failed command was not an NCQ command
        "unl" / Flag,  # unload aborted the queue
        Padding(1),
        "tag" / BitsInteger(5),
    ),
    Padding(1),
    *DEVICE_TASK_FILE,
    Padding(497),
    "checksum" / Int8ul,  # all 512 bytes sum to 0 mod 256
)


def ncq_error_log(*, queued: bool, tag: int, status: int, error: int, lba: int, count: int) -> bytes:
    page = NcqErrorLog.build(
        dict(
            flags=dict(nq=not queued, unl=False, tag=tag & 0x1F),
            status=status,
            error=error,
            lba0=lba & 0xFF,
            lba1=(lba >> 8) & 0xFF,
            lba2=(lba >> 16) & 0xFF,
            device=0x40,
            lba3=(lba >> 24) & 0xFF,
            lba4=(lba >> 32) & 0xFF,
            lba5=(lba >> 40) & 0xFF,
            count=count & 0xFF,
            count_exp=(count >> 8) & 0xFF,
            checksum=0,
        )
    )
    return page[:511] + bytes([-sum(page[:511]) & 0xFF])
