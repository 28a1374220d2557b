"""lib/kstrtox.c: the numbers and booleans written to sysfs, procfs and debugfs attributes.

Linux's rules, which differ from Python's int(): an optional '+' (and '-' for the signed
forms), digits in the base (base 0 reads a "0x" prefix as hex and a leading "0" as octal), then
at most one newline and nothing else; no spaces, no underscores. A malformed text is EINVAL, a
number that does not fit the type is ERANGE: callers that want EINVAL for both (queue_var_store)
catch and convert.

The older, lax parsers of lib/vsprintf.c that some stores still call are here too, on the bytes
written: `simple_strtoull` (leading digits, nothing skipped, 0 if none, wraps past 64 bits) and
`sscanf_int` (vsscanf's "%d": blanks skipped, an optional '-', None if no digit follows).
Only ASCII counts as a digit or a blank (lib/ctype.c), never what Python's str methods accept.
"""

from __future__ import annotations

import errno

from rinuxfs.errors import KernelError

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
S32_MAX = (1 << 31) - 1
S64_MAX = (1 << 63) - 1
KERNEL_SPACES = b" \t\n\v\f\r\xa0"  # isspace() of lib/ctype.c: the C blanks, and 0xA0 (Latin-1's NBSP)

_DIGITS = "0123456789abcdef"


def _radix(body: str, base: int) -> tuple[str, int]:
    """_parse_integer_fixup_radix: the digits left and the base they are in."""
    low = body[:2].lower()
    if base in (0, 16) and low == "0x" and len(body) > 2 and body[2].lower() in _DIGITS:
        return body[2:], 16
    if base == 0:
        return body, 8 if body.startswith("0") else 10
    return body, base


def kstrtoull(text: str, base: int = 0) -> int:
    """An unsigned 64-bit number (kstrtoull)."""
    body = text[1:] if text.startswith("+") else text
    body = body[:-1] if body.endswith("\n") else body
    digits, radix = _radix(body, base)
    if not digits or any(_DIGITS.find(c.lower()) not in range(radix) for c in digits):
        raise KernelError(errno.EINVAL, f"not a number: {text!r}")
    if len(digits.lstrip("0")) > 64:  # more digits than any u64 has in any base: no need to convert them
        raise KernelError(errno.ERANGE, f"{text[:32]!r}… does not fit in 64 bits")
    value = int(digits, radix)
    if value > U64_MAX:
        raise KernelError(errno.ERANGE, f"{text!r} does not fit in 64 bits")
    return value


def kstrtoll(text: str, base: int = 0) -> int:
    """A signed 64-bit number (kstrtoll)."""
    if text.startswith("-"):
        magnitude = kstrtoull(text[1:], base) if not text[1:].startswith("+") else _invalid(text)
        if magnitude > S64_MAX + 1:
            raise KernelError(errno.ERANGE, f"{text!r} does not fit in 64 bits")
        return -magnitude
    value = kstrtoull(text, base)
    if value > S64_MAX:
        raise KernelError(errno.ERANGE, f"{text!r} does not fit in 64 bits")
    return value


def kstrtouint(text: str, base: int = 0) -> int:
    """An unsigned 32-bit number (kstrtouint, kstrtou32)."""
    value = kstrtoull(text, base)
    if value > U32_MAX:
        raise KernelError(errno.ERANGE, f"{text!r} does not fit in 32 bits")
    return value


def kstrtoint(text: str, base: int = 0) -> int:
    """A signed 32-bit number (kstrtoint, kstrtos32)."""
    value = kstrtoll(text, base)
    if not -S32_MAX - 1 <= value <= S32_MAX:
        raise KernelError(errno.ERANGE, f"{text!r} does not fit in 32 bits")
    return value


def _invalid(text: str) -> int:
    raise KernelError(errno.EINVAL, f"not a number: {text!r}")


def parse_bool(text: str) -> bool:
    """A boolean: 1/0, y/n, yes/no, on/off, true/false (any case), one trailing newline allowed.

    Stricter than kstrtobool, which decides on the first characters alone ("10" is true there):
    a value that is not one of these words is EINVAL, so a typo is not taken for a yes.
    """
    value = text[:-1] if text.endswith("\n") else text
    low = value.lower()
    if low in ("1", "y", "yes", "on", "true"):
        return True
    if low in ("0", "n", "no", "off", "false"):
        return False
    raise KernelError(errno.EINVAL, f"not a boolean: {value!r}")


def kstrtobool(text: str) -> bool:
    """kstrtobool, as debugfs bools parse: the first character decides (y/Y/t/T/1, n/N/f/F/0), "on"/"off".

    Laxer than parse_bool on purpose: "yes please" is true here, as it is for Linux.
    """
    first, second = text[:1], text[1:2]
    if first and first in "yYtT1":
        return True
    if first and first in "nNfF0":
        return False
    if first in ("o", "O") and second and second in "nNfF":
        return second in "nN"
    raise KernelError(errno.EINVAL, f"not a boolean: {text!r}")


def s32(value: int) -> int:
    """What a C int keeps of a wider value: its low 32 bits, signed."""
    value &= U32_MAX
    return value - (1 << 32) if value >> 31 else value


def strstrip(data: bytes) -> bytes:
    """strstrip: the bytes without the blanks (isspace) around them."""
    return data.strip(KERNEL_SPACES)


def simple_strtoull(data: bytes, base: int = 10) -> tuple[int, int]:
    """simple_strtoull: the number `data` starts with, and how many bytes it took.

    Nothing is skipped before it (no blanks, no sign); base 0 and 16 take a "0x" prefix. No digit
    is 0, not an error, and a value past 64 bits wraps: simple_strntoull drops the overflow flag of
    _parse_integer_limit (its FIXME), which goes on multiplying.
    """
    body, radix = _radix(data.decode("latin-1"), base)  # one character a byte: no other script's digits
    n = 0
    while n < len(body) and _DIGITS.find(body[n].lower()) in range(radix):
        n += 1
    # Modulo 2**64 only the last 64 digits count (8, 10 and 16 are even: radix**64 is a multiple of 2**64),
    # so a page of digits costs no big-number conversion.
    value = int(body[max(0, n - 64) : n], radix) & U64_MAX if n else 0
    return value, len(data) - len(body) + n


def sscanf_int(data: bytes) -> int | None:
    """vsscanf(data, "%d"): the int it stores, or None when nothing converts (sscanf returns 0).

    Blanks first, then an optional '-' that a digit must follow; the digits go through
    simple_strntoll, so a number too long for an int keeps its low 32 bits.
    """
    rest = data.lstrip(KERNEL_SPACES)
    negative = rest[:1] == b"-"
    if negative:
        rest = rest[1:]
    if not rest[:1].isdigit():  # bytes.isdigit: ASCII digits only
        return None
    value, _ = simple_strtoull(rest, 10)
    return s32(-value if negative else value)
