"""The swap area header (`union swap_header`, include/linux/swap.h): build it, check it.

`build_swap_header` returns page 0 of a swap area byte for byte as util-linux
2.38 mkswap writes it (mm.md §1.1): version 1, last_page, bad pages, the UUID
as raw bytes in string order, a NUL-padded label of at most 16 bytes, and
"SWAPSPACE2" in the last 10 bytes of the page; the boot bits stay zero.

`parse_swap_header` and `check_swap_area` do what swapon(2) does with that
page (`read_swap_header` and `setup_swap_map_and_extents`, mm/swapfile.c;
mm.md §1.2). They raise KernelError(EINVAL) carrying the kernel's own log line
("Unable to find swap-space signature", "Empty swap-file", ...) as message;
warnings that do not stop swapon come back in `SwapArea.warnings`.

The layout is one construct declaration, parametrised by page size and byte
order because both change where and how the fields sit.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID, uuid4

from construct import Array, Bytes, Const, Int32ub, Int32ul, Padding, Struct

from rinuxfs.errors import KernelError

SWAP_MAGIC = b"SWAPSPACE2"
SWAP_HEADER_VERSION = 1
BOOTBITS = 1024
BADPAGES_OFFSET = 0x600
LABEL_SIZE = 16
MIN_SWAP_PAGES = 10  # mkswap: "swap space needs to be at least 40 KiB" with 4 KiB pages
PAGE_SIZE = 4096


def max_swap_badpages(page_size: int) -> int:
    """MAX_SWAP_BADPAGES: the bad-page list runs from 0x600 to the magic (637 with 4 KiB pages)."""
    return (page_size - len(SWAP_MAGIC) - BADPAGES_OFFSET) // 4


@functools.cache
def swap_header_layout(page_size: int = PAGE_SIZE, big_endian: bool = False) -> Struct:
    """One page of swap header. The fields are in the CPU's byte order; swapon also takes a byte-swapped one."""
    if page_size < 2 * BADPAGES_OFFSET or page_size & (page_size - 1):
        raise ValueError(f"page size {page_size} is not a power of two of at least 3 KiB")
    u32 = Int32ub if big_endian else Int32ul
    nr_bad = max_swap_badpages(page_size)
    return Struct(
        "bootbits" / Bytes(BOOTBITS),  # 0x000  room for a boot sector or disklabel; mkswap leaves zeros
        "version" / u32,  # 0x400  must be 1
        "last_page" / u32,  # 0x404  index of the last usable page: area size / page size - 1
        "nr_badpages" / u32,  # 0x408
        "sws_uuid" / Bytes(16),  # 0x40C  raw, in the order of the UUID string
        "sws_volume" / Bytes(LABEL_SIZE),  # 0x41C  label, NUL-padded
        # 0x42C  blkid reports UUID/LABEL only while padding[32] and padding[33] are 0
        "padding" / Array(117, u32),
        "badpages" / Array(nr_bad, u32),  # 0x600  the first nr_badpages entries are bad page indices
        Padding(page_size - len(SWAP_MAGIC) - BADPAGES_OFFSET - 4 * nr_bad),
        "magic" / Const(SWAP_MAGIC),  # page_size - 10
    )


@dataclass(frozen=True)
class SwapHeader:
    page_size: int
    version: int
    last_page: int
    nr_badpages: int
    uuid: UUID
    label: str
    badpages: tuple[int, ...]
    byteswapped: bool = False  # written on a machine of the other endianness


@dataclass(frozen=True)
class SwapArea:
    """What swapon makes of a valid header: the swap_map size and its usable pages."""

    header: SwapHeader
    maxpages: int  # swap_map entries, page 0 (the header) included
    pages: int  # usable pages: maxpages - 1 - bad pages
    bad: frozenset[int]  # pages marked SWAP_MAP_BAD; page 0 always is
    warnings: tuple[str, ...] = ()


def build_swap_header(area_size: int, *, page_size: int = PAGE_SIZE, uuid: UUID | None = None, label: str = "",
                      badpages: Sequence[int] = ()) -> bytes:
    """Page 0 for a swap area of `area_size` bytes, as mkswap writes it.

    Like mkswap, a label longer than 16 bytes is cut to 16 bytes.
    """
    pages = area_size // page_size
    if pages < MIN_SWAP_PAGES:
        raise ValueError(f"swap space needs to be at least {MIN_SWAP_PAGES * page_size // 1024} KiB")
    if pages - 1 > 0xFFFFFFFF:
        raise ValueError(f"a swap area of {pages} pages does not fit the header's 32-bit last_page")
    nr_bad = max_swap_badpages(page_size)
    if len(badpages) > nr_bad or any(not 0 < p < pages for p in badpages):
        raise ValueError(f"bad pages must be at most {nr_bad} page indices within 1..{pages - 1}")
    layout = swap_header_layout(page_size)
    return layout.build({
        "bootbits": bytes(BOOTBITS), "version": SWAP_HEADER_VERSION, "last_page": pages - 1,
        "nr_badpages": len(badpages), "sws_uuid": (uuid or uuid4()).bytes,
        "sws_volume": label.encode()[:LABEL_SIZE].ljust(LABEL_SIZE, b"\0"), "padding": [0] * 117,
        "badpages": list(badpages) + [0] * (nr_bad - len(badpages)),
    })


def _invalid(message: str) -> KernelError:
    return KernelError(errno.EINVAL, message)


def parse_swap_header(page: bytes, page_size: int = PAGE_SIZE) -> SwapHeader:
    """The header as read_swap_header() takes it: the magic, the endianness hack, the version."""
    page = bytes(page[:page_size]).ljust(page_size, b"\0")
    if page[page_size - len(SWAP_MAGIC):] != SWAP_MAGIC:
        raise _invalid("Unable to find swap-space signature")
    fields = swap_header_layout(page_size).parse(page)
    byteswapped = False
    if int.from_bytes(fields.version.to_bytes(4, "little"), "big") == SWAP_HEADER_VERSION:
        fields = swap_header_layout(page_size, big_endian=True).parse(page)
        byteswapped = True
        if fields.nr_badpages > max_swap_badpages(page_size):
            raise _invalid(f"swap header lists {fields.nr_badpages} bad pages,"
                           f" more than {max_swap_badpages(page_size)}")
    if fields.version != SWAP_HEADER_VERSION:
        raise _invalid(f"Unable to handle swap header version {fields.version}")
    return SwapHeader(
        page_size=page_size, version=fields.version, last_page=fields.last_page, nr_badpages=fields.nr_badpages,
        uuid=UUID(bytes=fields.sws_uuid),
        label=fields.sws_volume.split(b"\0", 1)[0].decode("utf-8", errors="replace"),
        badpages=tuple(fields.badpages[:min(fields.nr_badpages, len(fields.badpages))]), byteswapped=byteswapped)


def check_swap_area(page: bytes, area_size: int, *, page_size: int = PAGE_SIZE, regular_file: bool = False,
                    max_pages: int | None = None) -> SwapArea:
    """swapon's verdict on page 0 of an area of `area_size` bytes (a file's or a partition's size).

    `max_pages` is swapfile_maximum_size, the largest swap offset the
    architecture's swap PTEs can hold; None means no limit.
    """
    header = parse_swap_header(page, page_size)
    kib = page_size // 1024
    warnings = []
    last_page = header.last_page
    if not last_page:
        raise _invalid("Empty swap-file")
    maxpages = max_pages if max_pages is not None else last_page + 1
    if last_page > maxpages:
        warnings.append(f"Truncating oversized swap area, only using {maxpages * kib}k out of {last_page * kib}k")
    if maxpages > last_page:
        maxpages = last_page + 1
    area_pages = area_size // page_size
    if area_pages and maxpages > area_pages:
        raise _invalid("Swap area shorter than signature indicates")
    if header.nr_badpages and regular_file:
        raise _invalid("a swap file cannot list bad pages")
    if header.nr_badpages > max_swap_badpages(page_size):
        raise _invalid(f"swap header lists {header.nr_badpages} bad pages, more than {max_swap_badpages(page_size)}")
    bad = {0}
    good = maxpages - 1
    for page_nr in header.badpages:
        if page_nr == 0 or page_nr > last_page:
            raise _invalid(f"bad page {page_nr} is outside 1..{last_page}")
        if page_nr < maxpages:
            bad.add(page_nr)
            good -= 1  # per listed entry, duplicates included, as the kernel counts
    if good <= 0:
        raise _invalid("Empty swap-file")
    return SwapArea(header=header, maxpages=maxpages, pages=good, bad=frozenset(bad), warnings=tuple(warnings))
