"""Charges: which task pays for which tmpfs page and swap slot, as the memory cgroup charges shmem.

Contract:
- `charge(pid, pfns)` charges new pages to a task (MM_SHMEMPAGES / RssShmem); `uncharge(pfns)`
  takes the charge of pages being freed back from whoever holds it.
- `to_swap(pfns, slots)` moves the charge of pages going to swap onto their slots (VmSwap,
  MM_SWAPENTS) and `from_swap(slots, pfns)` moves it back when they return; `uncharge_swap`
  drops the charge of slots being freed.
- A task that has exited keeps nothing: its charges stay counted under its pid until the pages
  go, but it is no longer in the task table, so the OOM killer never sees it.
Per-page ownership lives in the struct pages (memmap.memcg) and per-slot ownership in `slots`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import repeat

from rinuxfs.mm.memmap import MemMap
from rinuxfs.mm.swapfile import SwapEntry


class Charges:
    def __init__(self, memmap: MemMap) -> None:
        self.memmap = memmap
        self.rss_shmem: Counter[int] = Counter()
        self.swapents: Counter[int] = Counter()
        self.slots: dict[SwapEntry, int] = {}  # swap entry -> pid charged for it

    def charge(self, pid: int, pfns: list[int]) -> None:
        if pfns:
            self.memmap.set_memcg(pfns, pid)
            self.rss_shmem[pid] += len(pfns)

    def charge_run(self, pid: int, pfn: int, count: int) -> None:
        """charge for `count` consecutive frames from `pfn`."""
        self.memmap.set_memcg_run(pfn, count, pid)
        self.rss_shmem[pid] += count

    def uncharge(self, pfns: list[int]) -> None:
        for pid, n in Counter(self.memmap.memcg(pfns)).items():
            self._drop(self.rss_shmem, pid, n)

    def to_swap(self, pfns: list[int], slots: list[SwapEntry]) -> None:
        owners = self.memmap.memcg(pfns)
        counts = Counter(owners)
        if len(counts) == 1:  # the usual batch: one owner's pages
            self.slots.update(dict.fromkeys(slots, owners[0]))
        else:
            self.slots.update(zip(slots, owners, strict=True))
        for pid, n in counts.items():
            self._drop(self.rss_shmem, pid, n)
            self.swapents[pid] += n

    def from_swap(self, slots: Sequence[SwapEntry], pfns: list[int]) -> None:
        if not slots:
            return
        owners = list(map(self.slots.pop, slots, repeat(0, len(slots))))
        by_pid: dict[int, list[int]]
        if owners.count(owners[0]) == len(owners):  # the usual batch: one owner's pages
            by_pid = {owners[0]: pfns}
        else:
            by_pid = {}
            for pid, pfn in zip(owners, pfns, strict=True):
                by_pid.setdefault(pid, []).append(pfn)
        for pid, group in by_pid.items():
            self.memmap.set_memcg(group, pid)
            self._drop(self.swapents, pid, len(group))
            self.rss_shmem[pid] += len(group)

    def uncharge_swap(self, slots: Sequence[SwapEntry]) -> None:
        for pid, n in Counter(self.slots.pop(slot, 0) for slot in slots).items():
            self._drop(self.swapents, pid, n)

    @staticmethod
    def _drop(counter: Counter[int], pid: int, n: int) -> None:
        counter[pid] -= n
        if counter[pid] <= 0:
            del counter[pid]
