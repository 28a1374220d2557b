"""Interrupts: vectors the devices raise, the handlers drivers register, the counts /proc/interrupts shows.

Contract: a device model calls `raise_irq(vector)`; the chip counts it on the
CPU the vector is affine to and runs the handler at once (hard-IRQ context:
a handler must not block). A vector without a handler is counted as spurious
(the ERR row), as Linux counts unexpected interrupts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Handler = Callable[[], None]


@dataclass(eq=False)
class IrqLine:
    irq: int
    chip: str  # "PCI-MSIX-0000:00:04.0"
    hwirq: str  # "0-edge"
    name: str  # "nvme0q0"
    cpu: int
    handler: Handler
    counts: list[int] = field(default_factory=list)


class IrqChip:
    def __init__(self, nr_cpus: int) -> None:
        self.nr_cpus = nr_cpus
        self.lines: dict[int, IrqLine] = {}
        self._next_irq = 24  # the first vector above the legacy IO-APIC pins, as on x86
        self.spurious = 0

    def request_irq(self, chip: str, hwirq: int, name: str, cpu: int, handler: Handler) -> int:
        irq = self._next_irq
        self._next_irq += 1
        self.lines[irq] = IrqLine(irq, chip, f"{hwirq}-edge", name, cpu % self.nr_cpus, handler, [0] * self.nr_cpus)
        return irq

    def free_irq(self, irq: int) -> None:
        self.lines.pop(irq, None)

    def raise_irq(self, irq: int) -> None:
        line = self.lines.get(irq)
        if line is None:
            self.spurious += 1
            return
        line.counts[line.cpu] += 1
        line.handler()

    def total(self) -> int:
        return sum(sum(line.counts) for line in self.lines.values())

    def render(self, online: set[int], timer_counts: list[int], tlb_counts: list[int] | None = None) -> str:
        """/proc/interrupts (fs/proc/interrupts.c show_interrupts), for the online CPUs.

        The TLB row (arch_show_interrupts) counts shootdown IPIs each CPU received.
        """
        cpus = sorted(online)
        out = [" " * 4 + "".join(f"CPU{c:<8d}" for c in cpus).rstrip() + "\n"]
        out.append(f"{0:>3}: " + "".join(f"{timer_counts[c]:10d} " for c in cpus) + " IO-APIC    2-edge      timer\n")
        for irq in sorted(self.lines):
            line = self.lines[irq]
            counts = "".join(f"{line.counts[c]:10d} " for c in cpus)
            out.append(f"{irq:>3}: {counts} {line.chip:<8} {line.hwirq:<8}    {line.name}\n")
        if tlb_counts is not None:
            out.append("TLB: " + "".join(f"{tlb_counts[c]:10d} " for c in cpus) + "  TLB shootdowns\n")
        out.append(f"ERR: {self.spurious:10d}\n")
        return "".join(out)
