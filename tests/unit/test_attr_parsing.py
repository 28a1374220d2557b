"""How sysctl and sysfs values are parsed: Linux's rules, not Python's int().

The expected results of the sysctl cases were taken from a Linux 6.18 kernel (writes to
/proc/sys/vm/watermark_scale_factor and nr_hugepages, range 1-3000 and 0-ULONG_MAX).
"""

from __future__ import annotations

import errno

import pytest

from rinuxfs.errors import KernelError
from rinuxfs.fs.procfs import pid_of_name
from rinuxfs.fs.procfs_mm import ULONG_MAX, parse_ints, proc_numbuf_int
from rinuxfs.lib.kstrtox import kstrtoull, simple_strtoull, sscanf_int
from rinuxfs.mm.mm_sysfs import kstrtoul


@pytest.mark.parametrize(("text", "value"), [
    ("5", 5), (" 5 ", 5), ("5\n", 5), ("\t5", 5), ("0x10", 16), ("010", 8), ("5\n6", 5), ("3000", 3000),
])
def test_sysctl_numbers_linux_takes(text: str, value: int) -> None:
    assert parse_ints(text, 1, 1, 3000) == [value]


@pytest.mark.parametrize("text", [
    "garbage", "1_000", "١٢", "²", "-1", "+5", "0", "-0", "08", "0x", "5x", "  ", "\t\n", "",
    "99999999999999999999", "0000000000000000000001", "9" * 4096, "\udcff\udcfe",
])
def test_sysctl_numbers_linux_refuses(text: str) -> None:
    with pytest.raises(KernelError) as e:
        parse_ints(text, 1, 1, 3000)
    assert e.value.errno == errno.EINVAL


def test_sysctl_vectors_and_unsigned_longs() -> None:
    assert parse_ints("256 256 32 0", 4, -(1 << 31), (1 << 31) - 1) == [256, 256, 32, 0]
    assert parse_ints("-5 7", 4, -(1 << 31), (1 << 31) - 1) == [-5, 7]
    assert parse_ints(str(ULONG_MAX), 1, 0, ULONG_MAX) == [ULONG_MAX]
    for text, count in (("-1", 1), (str(ULONG_MAX + 1), 1), ("1 x", 2)):
        with pytest.raises(KernelError):
            parse_ints(text, count, 0, ULONG_MAX)


def test_kstrtoul_is_ascii_and_bounded() -> None:
    assert kstrtoul("12\n") == 12
    for text in ("²", "١٢", "1_0", " 1", "-1", ""):
        with pytest.raises(KernelError) as e:
            kstrtoul(text)
        assert e.value.errno == errno.EINVAL, text
    # A page of digits is ERANGE at once, without converting thousands of digits (Python refuses > 4300).
    with pytest.raises(KernelError) as e:
        kstrtoull("9" * 100_000)
    assert e.value.errno == errno.ERANGE
    assert kstrtoull("0" * 5000 + "7") == 7


@pytest.mark.parametrize(("name", "pid"), [("1", 1), ("4194304", 4194304), ("01", None), ("١", None),
                                           ("+1", None), ("", None), ("4194305", None), ("1 ", None)])
def test_proc_pid_names_are_ascii_without_leading_zero(name: str, pid: int | None) -> None:
    assert pid_of_name(name) == pid


@pytest.mark.parametrize(("data", "value", "used"), [
    (b"12ab", 12, 2), (b"0x1fz", 0, 1), (b" 1", 0, 0), (b"+1", 0, 0), (b"-1", 0, 0), ("١٢".encode(), 0, 0),
    (b"", 0, 0), (b"18446744073709551616", 0, 20), (b"9" * 100_000, (1 << 64) - 1, 100_000),
])
def test_simple_strtoull_takes_leading_ascii_digits_and_wraps(data: bytes, value: int, used: int) -> None:
    assert simple_strtoull(data, 10) == (value, used)


def test_simple_strtoull_bases() -> None:
    assert simple_strtoull(b"0x1fz", 0) == (31, 4)
    assert simple_strtoull(b"0x1f", 16) == (31, 4)
    assert simple_strtoull(b"017", 0) == (15, 3)
    assert simple_strtoull(b"1" + b"0" * 16, 16) == (0, 17)  # 16**16 is 2**64: wrapped to 0


@pytest.mark.parametrize(("data", "value"), [
    (b"garbage", None), (b"1_000", 1), ("١٢".encode(), None), ("²".encode(), None), (b"0x", 0), (b" ", None),
    (b"\n", None), (b"-1", -1), (b"+1", None), (b"- 1", None), (b"\t\v 7\n", 7), (b"\xa07", 7),
    (b"2147483648", -(1 << 31)), (b"4294967296", 0), (b"9" * 4096, -1), (b"-99999999999999999999999", 159383553),
])
def test_sscanf_d_is_vsscanf(data: bytes, value: int | None) -> None:
    assert sscanf_int(data) == value


@pytest.mark.parametrize(("text", "value"), [
    ("-1", -1), (" -17\n", -17), ("0x0f", 15), ("\udca0 3 \t", 3), ("1" + " " * 20 + "x", 1),
])
def test_proc_numbers_of_oom_adj_take_twelve_bytes_stripped(text: str, value: int) -> None:
    # "\udca0" is the byte 0xA0 as written (surrogateescape), a blank to lib/ctype.c; U+00A0 is two bytes, not one.
    assert proc_numbuf_int(text) == value


@pytest.mark.parametrize(("text", "err"), [
    (" ", errno.EINVAL), ("\n", errno.EINVAL), ("1 2", errno.EINVAL), ("5\n6", errno.EINVAL), ("١", errno.EINVAL),
    ("\xa0 3", errno.EINVAL),
    ("-99999999999999999999999", errno.ERANGE), ("9" * 4096, errno.ERANGE), ("2147483648", errno.ERANGE),
])
def test_proc_numbers_of_oom_adj_refused(text: str, err: int) -> None:
    with pytest.raises(KernelError) as e:
        proc_numbuf_int(text)
    assert e.value.errno == err
