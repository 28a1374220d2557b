"""lib/bitmap-str.c: the two ways sysfs prints a set of CPUs (or nodes)."""

from __future__ import annotations

from collections.abc import Iterable


def cpu_list(cpus: Iterable[int]) -> str:
    """The cpulist format (bitmap_print_to_pagebuf with list): '0-3,5'."""
    ordered = sorted(cpus)
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def cpu_mask(cpus: Iterable[int], nbits: int) -> str:
    """The cpumask format: hex, in 32-bit groups separated by commas, as wide as nr_cpu_ids."""
    value = sum(1 << c for c in cpus)
    digits = max(1, (nbits + 3) // 4)
    text = format(value, f"0{digits}x")
    groups = []
    while text:
        groups.insert(0, text[-8:])
        text = text[:-8]
    return ",".join(groups)
