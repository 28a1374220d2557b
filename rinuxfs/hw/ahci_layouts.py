"""AHCI 1.3.1 and SATA layouts: register map, in-memory structures and FIS, declared once.

Each structure is a `construct` declaration, read top to bottom like the spec's table, with the
spec section beside it. The HBA model's per-command hot path cannot afford construct (≈10-20 µs a
parse), so each hot structure also has a `struct.Struct` twin named after it; the twins are the
same layout in struct notation and `tests/unit/test_ahci_model.py` builds both and compares them.
Register offsets and bits are plain integers: masks and shifts are clearer than bit structs there.
"""

from __future__ import annotations

import struct

from construct import (
    BitsInteger,
    BitStruct,
    Bytes,
    ByteSwapped,
    Flag,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Padding,
    Struct,
)

from rinuxfs.hw.ata import DEVICE_TASK_FILE

# ---------------------------------------------------------------------------------------------
# Generic host control registers (AHCI 1.3.1 §3.1), offsets into ABAR
CAP = 0x00
GHC = 0x04
IS = 0x08
PI = 0x0C
VS = 0x10
CCC_CTL = 0x14
CCC_PORTS = 0x18
EM_LOC = 0x1C
EM_CTL = 0x20
CAP2 = 0x24
BOHC = 0x28

PORT_BASE = 0x100  # port n's registers start at 0x100 + n * 0x80 (§3.3)
PORT_STRIDE = 0x80
ABAR_SIZE = PORT_BASE + PORT_STRIDE  # one port implemented

# CAP bits (§3.1.1)
CAP_NP_SHIFT = 0  # number of ports - 1
CAP_NCS_SHIFT = 8  # number of command slots - 1
CAP_SAM = 1 << 18  # AHCI-only: GHC.AE is read-only 1
CAP_ISS_SHIFT = 20  # interface speed support: 1 Gen1, 2 Gen2, 3 Gen3
CAP_SNCQ = 1 << 30
CAP_S64A = 1 << 31

# GHC bits (§3.1.2)
GHC_HR = 1 << 0
GHC_IE = 1 << 1
GHC_AE = 1 << 31

AHCI_VERSION_1_3_1 = 0x00010301

# Port registers (§3.3), offsets from the port base
PxCLB = 0x00
PxCLBU = 0x04
PxFB = 0x08
PxFBU = 0x0C
PxIS = 0x10
PxIE = 0x14
PxCMD = 0x18
PxTFD = 0x20
PxSIG = 0x24
PxSSTS = 0x28
PxSCTL = 0x2C
PxSERR = 0x30
PxSACT = 0x34
PxCI = 0x38
PxSNTF = 0x3C
PxFBS = 0x40
PxDEVSLP = 0x44

# PxIS / PxIE bits (§3.3.5, §3.3.6); Linux ahci.h PORT_IRQ_* in brackets
PxIS_DHRS = 1 << 0  # D2H Register FIS with I set [D2H_REG_FIS]
PxIS_PSS = 1 << 1  # PIO Setup FIS with I set [PIOS_FIS]
PxIS_DSS = 1 << 2  # DMA Setup FIS [DMAS_FIS]
PxIS_SDBS = 1 << 3  # Set Device Bits FIS with I set [SDB_FIS]
PxIS_UFS = 1 << 4  # unknown FIS (read-only: mirrors PxSERR.DIAG.F)
PxIS_DPS = 1 << 5  # a PRD with its I bit finished [SG_DONE]
PxIS_PCS = 1 << 6  # port connect change (read-only: mirrors PxSERR.DIAG.X) [CONNECT]
PxIS_DMPS = 1 << 7
PxIS_PRCS = 1 << 22  # PhyRdy change (read-only: mirrors PxSERR.DIAG.N) [PHYRDY]
PxIS_IPMS = 1 << 23
PxIS_OFS = 1 << 24  # overflow: the device moved more data than the PRDT describes [OVERFLOW]
PxIS_INFS = 1 << 26
PxIS_IFS = 1 << 27
PxIS_HBDS = 1 << 28  # host bus data error: a data buffer could not be read or written [HBUS_DATA_ERR]
PxIS_HBFS = 1 << 29  # host bus fatal error: a bad command list / table / FIS pointer [HBUS_ERR]
PxIS_TFES = 1 << 30  # task file error: the device reported ERR [TF_ERR]
PxIS_CPDS = 1 << 31
PxIS_MIRRORS = PxIS_UFS | PxIS_PCS | PxIS_PRCS
PxIS_IMPLEMENTED = 0x7DC000FF & ~PxIS_DMPS  # no mechanical presence switch, no cold presence detect
PxIS_FATAL = PxIS_HBFS | PxIS_HBDS | PxIS_IFS | PxIS_OFS | PxIS_TFES

# PxCMD bits (§3.3.7)
PxCMD_ST = 1 << 0
PxCMD_SUD = 1 << 1  # read-only 1: CAP.SSS = 0 (no staggered spin-up)
PxCMD_POD = 1 << 2  # read-only 1: no cold presence detect
PxCMD_CLO = 1 << 3
PxCMD_FRE = 1 << 4
PxCMD_CCS_SHIFT = 8
PxCMD_CCS_MASK = 0x1F << PxCMD_CCS_SHIFT
PxCMD_FR = 1 << 14
PxCMD_CR = 1 << 15
PxCMD_ICC_MASK = 0xF << 28

# PxSSTS / PxSCTL fields (§3.3.10, §3.3.11)
SSTS_LINK_UP = 0x113  # DET 3 (device present, phy up) | SPD 1 (Gen1) | IPM 1 (active)
SCTL_DET_MASK = 0xF
SCTL_DET_COMRESET = 1
SCTL_DET_OFFLINE = 4

# PxSERR bits (§3.3.12)
SERR_ERR_E = 1 << 11  # internal error
SERR_DIAG_N = 1 << 16  # PhyRdy change
SERR_DIAG_F = 1 << 25  # unknown FIS type
SERR_DIAG_X = 1 << 26  # exchanged: a COMINIT was received (link came up)
SERR_IMPLEMENTED = 0x07FF0F03

SIG_ATA = 0x00000101
SIG_NONE = 0xFFFFFFFF
TFD_NO_DEVICE = 0x7F  # what PxTFD reads before the device's first D2H FIS (QEMU ahci_reset_port)

NR_SLOTS = 32

# ---------------------------------------------------------------------------------------------
# Command list: 32 headers of 32 bytes, 1 KiB aligned (§4.2.2)
CommandHeader = Struct(
    "flags"
    / ByteSwapped(
        BitStruct(  # DW0[15:0], most significant bit first
            "pmp" / BitsInteger(4),  # 15:12 port multiplier port
            Padding(1),  # 11
            "c" / Flag,  # 10 clear busy upon R_OK
            "b" / Flag,  # 9 BIST
            "r" / Flag,  # 8 reset
            "p" / Flag,  # 7 prefetchable
            "w" / Flag,  # 6 write (host to device)
            "a" / Flag,  # 5 ATAPI
            "cfl" / BitsInteger(5),  # 4:0 command FIS length in dwords
        )
    ),
    "prdtl" / Int16ul,  # DW0[31:16] PRDT entries
    "prdbc" / Int32ul,  # DW1 bytes transferred, written by the HBA
    "ctba" / Int64ul,  # DW2-3 command table base (128 B aligned; bits 6:0 reserved)
    Padding(16),  # DW4-7
)
COMMAND_HEADER = struct.Struct("<HHIQ")  # twin of CommandHeader without the padding: flags, prdtl, prdbc, ctba
COMMAND_HEADER_SIZE = 32
CMDH_CFL_MASK = 0x1F
CMDH_A = 1 << 5
CMDH_W = 1 << 6
CMDH_R = 1 << 8
CMDH_C = 1 << 10
CMDH_PRDBC_OFFSET = 4

# Command table (§4.2.3): CFIS, ATAPI command, then the PRDT at 0x80
CommandTable = Struct(
    "cfis" / Bytes(64),
    "acmd" / Bytes(16),
    Padding(48),
)
CT_PRDT_OFFSET = 0x80
CT_ALIGN = 128

# Physical Region Descriptor (§4.2.3.3)
PrdEntry = Struct(
    "dba" / Int64ul,  # data base address; bit 0 reserved (word aligned)
    Padding(4),
    "dw3"
    / ByteSwapped(
        BitStruct(
            "i" / Flag,  # 31 interrupt on completion → PxIS.DPS
            Padding(9),  # 30:22
            "dbc" / BitsInteger(22),  # 21:0 byte count, 0's based (max 4 MiB)
        )
    ),
)
PRD_ENTRY = struct.Struct("<Q4xI")  # twin of PrdEntry: dba, dw3
PRD_SIZE = 16
PRD_I = 1 << 31
PRD_DBC_MASK = 0x3FFFFF

# ---------------------------------------------------------------------------------------------
# Frame Information Structures (SATA 3.x §10.5; AHCI 1.3.1 §4.2.1 for where they land)
FIS_TYPE_REG_H2D = 0x27
FIS_TYPE_REG_D2H = 0x34
FIS_TYPE_DMA_SETUP = 0x41
FIS_TYPE_PIO_SETUP = 0x5F
FIS_TYPE_SDB = 0xA1

FisRegH2D = Struct(  # SATA §10.5.5
    "fis_type" / Int8ul,
    "flags" / BitStruct("c" / Flag, Padding(3), "pm_port" / BitsInteger(4)),  # C = 1 command, 0 device control
    "command" / Int8ul,
    "features" / Int8ul,
    "lba0" / Int8ul,
    "lba1" / Int8ul,
    "lba2" / Int8ul,
    "device" / Int8ul,
    "lba3" / Int8ul,
    "lba4" / Int8ul,
    "lba5" / Int8ul,
    "features_exp" / Int8ul,
    "count" / Int8ul,
    "count_exp" / Int8ul,
    "icc" / Int8ul,
    "control" / Int8ul,  # bit 2 SRST
    Padding(4),
)
FIS_REG_H2D = struct.Struct("<BBBB3sB3sBBBBB4x")  # twin of FisRegH2D (LBA bytes 0-2 and 3-5 as 3-byte strings)
H2D_C = 0x80
CONTROL_SRST = 0x04

FisRegD2H = Struct(  # SATA §10.5.6
    "fis_type" / Int8ul,
    "flags" / BitStruct(Padding(1), "i" / Flag, Padding(2), "pm_port" / BitsInteger(4)),
    *DEVICE_TASK_FILE,
    Padding(6),
)
FIS_REG_D2H = struct.Struct("<BBBB3sB3sxBB6x")  # twin of FisRegD2H
FIS_I = 0x40  # the interrupt bit, byte 1 bit 6, in every device-to-host FIS

FisPioSetup = Struct(  # SATA §10.5.11
    "fis_type" / Int8ul,
    "flags" / BitStruct(Padding(1), "i" / Flag, "d" / Flag, Padding(1), "pm_port" / BitsInteger(4)),  # D: 1 = to host
    *DEVICE_TASK_FILE,
    Padding(1),
    "e_status" / Int8ul,  # status at the end of the transfer: what PxTFD (and Linux) take
    "transfer_count" / Int16ul,
    Padding(2),
)
FIS_PIO_SETUP = struct.Struct("<BBBB3sB3sxBBxBH2x")  # twin of FisPioSetup
PIO_D_TO_HOST = 0x20

FisSetDeviceBits = Struct(  # SATA §10.5.7
    "fis_type" / Int8ul,
    "flags" / BitStruct("n" / Flag, "i" / Flag, Padding(2), "pm_port" / BitsInteger(4)),
    "status" / Int8ul,  # only bits 6:4 and 2:0 are carried; PxTFD keeps its BSY (7) and DRQ (3)
    "error" / Int8ul,
    "sactive" / Int32ul,  # NCQ tags completed by this FIS
)
FIS_SDB = struct.Struct("<BBBBI")  # twin of FisSetDeviceBits
SDB_STATUS_MASK = 0x77

# Received FIS area: 256 bytes, 256-byte aligned (§4.2.1)
ReceivedFis = Struct(
    "dsfis" / Bytes(28),  # 0x00 DMA Setup FIS
    Padding(4),
    "psfis" / Bytes(20),  # 0x20 PIO Setup FIS
    Padding(12),
    "rfis" / Bytes(20),  # 0x40 D2H Register FIS
    Padding(4),
    "sdbfis" / Bytes(8),  # 0x58 Set Device Bits FIS
    "ufis" / Bytes(64),  # 0x60 unknown FIS
    Padding(96),  # 0xA0-0xFF reserved
)
RX_FIS_SIZE = 256
RX_FIS_PIO_SETUP = 0x20
RX_FIS_D2H = 0x40
RX_FIS_SDB = 0x58

# DATA SET MANAGEMENT payload: 8-byte LBA range entries, 64 per 512-byte block (ACS-3 §7.5.3.2)
DsmRange = ByteSwapped(BitStruct("length" / BitsInteger(16), "lba" / BitsInteger(48)))
DSM_RANGE = struct.Struct("<Q")  # twin of DsmRange: lba in bits 47:0, length in 63:48
