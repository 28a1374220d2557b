"""What mm shows in sysfs: the hugetlb pools (mm/hugetlb_sysfs.c) and the THP controls (mm/huge_memory.c).

Contract:
- `register_mm_sysfs(core, mm)` registers kernel/mm/hugepages/hugepages-<size>kB/ for each pool
  size and kernel/mm/transparent_hugepage/ under the driver core; values are read from the
  memory manager at each read.
- `add_hstate_attrs(kobj, pools, h, nid)` gives one pool's files to a directory: the global set,
  or a node's (nr_hugepages, free_hugepages, surplus_hugepages) when `nid` is given. The node
  devices (drivers/base/node.py) call it for nodeN/hugepages/.
- Writes parse as the kernel's handlers do: kstrtoul base 10 for pool sizes (EINVAL for a word
  or a sign, ERANGE past 64 bits), one word of the list for a THP mode (EINVAL otherwise).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from rinuxfs.drivers.base import DriverCore, Kobject, Show, Store, const, kobject_create
from rinuxfs.errors import KernelError
from rinuxfs.lib.kstrtox import kstrtoull
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.hugetlb import HState, HugetlbPools

ULONG_MAX = (1 << 64) - 1
THP_ENABLED = ("always", "madvise", "never")
THP_DEFRAG = ("always", "defer", "defer+madvise", "madvise", "never")
THP_SHMEM = ("always", "within_size", "advise", "never", "deny", "force")


def kstrtoul(text: str) -> int:
    """kstrtoul base 10: lib/kstrtox's rules (ASCII digits only; str.isdigit takes "²" and "١")."""
    return kstrtoull(text, 10)


def _choice(current: Callable[[], str], choices: tuple[str, ...]) -> Show:
    return lambda: " ".join(f"[{c}]" if c == current() else c for c in choices) + "\n"


def _set_choice(obj: object, field: str, choices: tuple[str, ...]) -> Store:
    def store(text: str) -> None:
        value = text.strip()
        if value not in choices:
            raise KernelError(errno.EINVAL, f"{value!r} is not one of {', '.join(choices)}")
        setattr(obj, field, value)

    return store


def register_mm_sysfs(core: DriverCore, mm: MemoryManager) -> None:
    hugepages = kobject_create("hugepages", core.mm_kobj)
    for h in mm.hugetlb.hstates:
        add_hstate_attrs(kobject_create(h.name, hugepages), mm.hugetlb, h, None)
    thp = kobject_create("transparent_hugepage", core.mm_kobj)
    thp.add_attr("enabled", _choice(lambda: mm.thp_enabled, THP_ENABLED),
                 _set_choice(mm, "thp_enabled", THP_ENABLED))
    thp.add_attr("defrag", _choice(lambda: mm.thp_defrag, THP_DEFRAG), _set_choice(mm, "thp_defrag", THP_DEFRAG))
    thp.add_attr("shmem_enabled", _choice(lambda: mm.thp_shmem_enabled, THP_SHMEM),
                 _set_choice(mm, "thp_shmem_enabled", THP_SHMEM))
    thp.add_attr("hpage_pmd_size", const(f"{2 << 20}\n"))


def add_hstate_attrs(d: Kobject, pools: HugetlbPools, h: HState, nid: int | None) -> None:
    def nr_hugepages() -> str:
        return f"{h.nr_huge_pages if nid is None else h.nr_huge_pages_node[nid]}\n"

    def set_nr_hugepages(text: str) -> None:
        pools.set_max_huge_pages(h, kstrtoul(text), nid)

    d.add_attr("nr_hugepages", nr_hugepages, set_nr_hugepages)
    d.add_attr("free_hugepages", lambda: f"{h.free_huge_pages if nid is None else h.free_huge_pages_node[nid]}\n")
    d.add_attr("surplus_hugepages",
               lambda: f"{h.surplus_huge_pages if nid is None else h.surplus_huge_pages_node[nid]}\n")
    if nid is not None:
        return
    d.add_attr("nr_hugepages_mempolicy", nr_hugepages, set_nr_hugepages)
    d.add_attr("nr_overcommit_hugepages", lambda: f"{h.nr_overcommit_huge_pages}\n",
               lambda text: setattr(h, "nr_overcommit_huge_pages", kstrtoul(text)))
    d.add_attr("resv_hugepages", lambda: f"{h.resv_huge_pages}\n")
    if h.order > 9:
        d.add_attr("demote", const(""), lambda text: None if pools.demote(h, kstrtoul(text)) else None, mode=0o200)
        d.add_attr("demote_size", const("2048kB\n"))
