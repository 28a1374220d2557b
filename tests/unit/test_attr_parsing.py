"""How sysctl and sysfs values are parsed: Linux's rules, not Python's int().

The expected results of the sysctl cases were taken from a Linux 6.18 kernel (writes to
/proc/sys/vm/watermark_scale_factor and nr_hugepages, range 1-3000 and 0-ULONG_MAX).
"""

from __future__ import annotations

import errno

import pytest

from rinuxfs.errors import KernelError
from rinuxfs.fs.procfs import pid_of_name
from rinuxfs.fs.procfs_mm import ULONG_MAX, parse_ints
from rinuxfs.lib.kstrtox import kstrtoull
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
