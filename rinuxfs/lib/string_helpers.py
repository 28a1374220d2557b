"""lib/string_helpers.c: sizes for log lines."""

from __future__ import annotations


def string_get_size(size: int, blk_size: int, divisor: int) -> str:
    """string_get_size: "67.1 MB" (divisor 1000) or "64.0 MiB" (1024), 3 significant digits."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB") if divisor == 1000 else \
        ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    if not size or not blk_size:
        return "0 B"
    i = remainder = 0
    while blk_size >> 32:
        blk_size //= divisor
        i += 1
    while size >> 32:
        size //= divisor
        i += 1
    size *= blk_size
    while size >= divisor:
        size, remainder = divmod(size, divisor)
        i += 1
    digits, cap = 0, size  # how many decimals keep three significant digits
    while cap * 10 < 1000:
        cap *= 10
        digits += 1
    if divisor == 1024:
        remainder = remainder * 1000 >> 10
    remainder += (500, 50, 5)[digits] if digits < 3 else 0
    if remainder >= 1000:
        remainder -= 1000
        size += 1
    tail = f".{remainder:03d}"[:digits + 1] if digits else ""
    return f"{size}{tail} {units[i] if i < len(units) else 'UNK'}"
