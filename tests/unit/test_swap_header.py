"""The swap header: mkswap's bytes (mm.md §1.1) and swapon's checks (mm.md §1.2)."""

from __future__ import annotations

import errno
import struct
from uuid import UUID

import pytest

from rinuxfs.errors import KernelError
from rinuxfs.mm.swap_header import (
    build_swap_header,
    check_swap_area,
    max_swap_badpages,
    parse_swap_header,
    swap_header_layout,
)

MIB = 1 << 20
SAMPLE_UUID = UUID("01234567-89ab-cdef-0123-456789abcdef")


def test_matches_the_mkswap_sample_hexdump() -> None:
    """samples/mkswap_1MiB_hexdump.txt: `mkswap -L rinuxswap -U 01234567-...` on a 1 MiB file."""
    page = build_swap_header(MIB, uuid=SAMPLE_UUID, label="rinuxswap")
    expected = bytearray(4096)
    expected[0x400:0x430] = bytes.fromhex("01000000 ff000000 00000000 01234567"  # version, last_page, nr_bad
                                          "89abcdef 01234567 89abcdef 72696e75"  # uuid, "rinu"
                                          "78737761 70000000 00000000 00000000")  # "xswap"
    expected[0xFF6:] = b"SWAPSPACE2"
    assert page == bytes(expected)


def test_layout_puts_the_magic_in_the_last_10_bytes_of_any_page_size() -> None:
    assert swap_header_layout(4096).sizeof() == 4096
    page = build_swap_header(MIB, page_size=16384)
    assert len(page) == 16384 and page[0x3FF6:] == b"SWAPSPACE2"
    assert struct.unpack_from("<I", page, 0x404)[0] == 0x3F  # 1 MiB / 16 KiB - 1
    assert max_swap_badpages(4096) == 637


def test_round_trip() -> None:
    page = build_swap_header(4 * MIB, uuid=SAMPLE_UUID, label="swap0", badpages=[3, 7])
    header = parse_swap_header(page)
    assert (header.version, header.last_page, header.nr_badpages, header.uuid, header.label, header.badpages) == \
           (1, 1023, 2, SAMPLE_UUID, "swap0", (3, 7))
    area = check_swap_area(page, 4 * MIB)
    assert (area.maxpages, area.pages, area.bad) == (1024, 1021, frozenset({0, 3, 7}))


def test_label_is_cut_to_16_bytes_like_mkswap() -> None:
    assert parse_swap_header(build_swap_header(MIB, label="a-very-long-swap-label")).label == "a-very-long-swap"


def test_mkswap_minimum_is_10_pages() -> None:
    build_swap_header(40 * 1024)
    with pytest.raises(ValueError, match="at least 40 KiB"):
        build_swap_header(36 * 1024)


def patched(page: bytes, offset: int, value: bytes) -> bytes:
    return page[:offset] + value + page[offset + len(value):]


@pytest.mark.parametrize(("offset", "value", "message"), [
    (0xFF6, b"SWAP-SPACE", "Unable to find swap-space signature"),  # the v0 magic is refused too
    (0xFF6, bytes(10), "Unable to find swap-space signature"),
    (0x400, struct.pack("<I", 2), "Unable to handle swap header version 2"),
    (0x404, struct.pack("<I", 0), "Empty swap-file"),
    (0x404, struct.pack("<I", 256), "Swap area shorter than signature indicates"),
])
def test_swapon_rejects_with_the_kernels_message(offset: int, value: bytes, message: str) -> None:
    page = patched(build_swap_header(MIB), offset, value)
    with pytest.raises(KernelError) as e:
        check_swap_area(page, MIB)
    assert e.value.errno == errno.EINVAL and e.value.args[0] == message


def test_byte_swapped_header_is_accepted() -> None:
    page = bytearray(build_swap_header(MIB, badpages=[5]))
    for offset in (0x400, 0x404, 0x408, 0x600):
        page[offset:offset + 4] = page[offset:offset + 4][::-1]
    area = check_swap_area(bytes(page), MIB)
    assert area.header.byteswapped and area.header.last_page == 255 and area.bad == {0, 5}


def test_bad_pages_rules() -> None:
    with pytest.raises(KernelError, match="swap file cannot list bad pages"):
        check_swap_area(build_swap_header(MIB, badpages=[5]), MIB, regular_file=True)
    page = build_swap_header(MIB, badpages=[5])
    with pytest.raises(KernelError, match="outside 1..255"):
        check_swap_area(patched(page, 0x600, struct.pack("<I", 0)), MIB)
    with pytest.raises(KernelError, match="outside 1..255"):
        check_swap_area(patched(page, 0x600, struct.pack("<I", 256)), MIB)
    with pytest.raises(KernelError, match="more than 637"):
        check_swap_area(patched(page, 0x408, struct.pack("<I", 638)), MIB)
    all_bad = build_swap_header(40 * 1024, badpages=list(range(1, 10)))
    with pytest.raises(KernelError, match="Empty swap-file"):
        check_swap_area(all_bad, 40 * 1024)


def test_oversized_area_is_truncated_with_a_warning() -> None:
    area = check_swap_area(build_swap_header(4 * MIB), 4 * MIB, max_pages=512)
    assert area.maxpages == 512 and area.pages == 511
    assert area.warnings == ("Truncating oversized swap area, only using 2048k out of 4092k",)


def test_a_larger_area_than_the_header_says_is_fine() -> None:
    assert check_swap_area(build_swap_header(MIB), 8 * MIB).maxpages == 256
