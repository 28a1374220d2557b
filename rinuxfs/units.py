"""Sizes as people type them on a command line: 256M, 1G, 4096, 512K."""

from __future__ import annotations

import errno
import re

from rinuxfs.errors import KernelError

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from '256M', '1G', '4096' (binary multiples, as mount(8) and tmpfs size= use)."""
    match = _SIZE.match(text)
    if not match:
        raise KernelError(errno.EINVAL, f"bad size {text!r}: expected a number with an optional K, M, G or T suffix")
    return int(match.group(1)) * _SUFFIX[match.group(2).upper()]


def format_size(nbytes: int) -> str:
    for suffix in ("T", "G", "M", "K"):
        unit = _SUFFIX[suffix]
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)
