"""The memory views of procfs: buddyinfo, pagetypeinfo, zoneinfo, and the vm sysctls of /proc/sys/vm.

Formats are mm/vmstat.c's (frag_show_print, pagetypeinfo_show*,
zoneinfo_show_print) and kernel/sysctl.c's; each renderer reads the memory
manager when called and keeps nothing. Sysctl writes parse as proc_dointvec /
proc_doulongvec do: whitespace-separated integers, whitespace alone changes
nothing, anything else or a value out of the table's range is EINVAL.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from rinuxfs.errors import KernelError
from rinuxfs.fs.kernfs import GenDir
from rinuxfs.lib.kstrtox import kstrtoint, strstrip
from rinuxfs.mm.buddy import MIGRATE_TYPES, NR_PAGE_ORDERS, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.page_alloc import (
    MAX_NR_ZONES,
    MIN_PERCPU_PAGELIST_HIGH_FRACTION,
    WMARK_HIGH,
    WMARK_LOW,
    WMARK_MIN,
    WMARK_PROMO,
    stat_threshold,
    zone_batchsize,
)
from rinuxfs.mm.vmstat import NODE_STAT_ITEMS, NUMA_EVENTS, node_stat_value, zone_stat_values
from rinuxfs.sched import Task

if TYPE_CHECKING:
    from rinuxfs.kernel import Kernel

INT_MAX = (1 << 31) - 1
UINT_MAX = (1 << 32) - 1
ULONG_MAX = (1 << 64) - 1
# --- buddyinfo, pagetypeinfo ---------------------------------------------------------------


def render_buddyinfo(mm: MemoryManager) -> str:
    lines = []
    for zone in mm.allocator.populated_zones():
        counts = [sum(col) for col in zip(*zone.buddy.counts(), strict=True)]
        lines.append(f"Node {zone.nid}, zone {zone.name:>8} " + "".join(f"{c:6d} " for c in counts) + "\n")
    return "".join(lines)


def render_pagetypeinfo(mm: MemoryManager) -> str:
    zones = mm.allocator.populated_zones()
    out = [f"Page block order: {PAGEBLOCK_ORDER}\n", f"Pages per block:  {PAGEBLOCK_NR_PAGES}\n", "\n"]
    out.append("Free pages count per migrate type at order " + "".join(f"{o:6d} " for o in range(NR_PAGE_ORDERS))
               + "\n")
    for zone in zones:
        for mt, row in enumerate(zone.buddy.counts()):
            out.append(f"Node {zone.nid:4d}, zone {zone.name:>8}, type {MIGRATE_TYPES[mt]:>12} "
                       + "".join(f"{c:6d} " for c in row) + "\n")
    out.append("\nNumber of blocks type     " + "".join(f"{name:>12} " for name in MIGRATE_TYPES) + "\n")
    for zone in zones:
        out.append(f"Node {zone.nid}, zone {zone.name:>8} "
                   + "".join(f"{c:12d} " for c in zone.buddy.pageblock_counts()) + "\n")
    return "".join(out)


# --- zoneinfo and the node views -------------------------------------------------------------


def render_zoneinfo(mm: MemoryManager, online_cpus: list[int]) -> str:
    out: list[str] = []
    for node in mm.allocator.nodes:
        first_populated = next((z for z in node.zones if z.populated), None)
        node_cpus = len(node.cpus)
        for zone in node.zones:
            out.append(f"Node {node.nid}, zone {zone.name:>8}")
            if zone is first_populated:
                out.append("\n  per-node stats")
                out += [f"\n      {name:<12} {node_stat_value(mm, node, name)}" for name in NODE_STAT_ITEMS]
            w = zone.watermark
            out.append(f"\n  pages free     {zone.nr_free}\n        boost    0\n        min      {w[WMARK_MIN]}"
                       f"\n        low      {w[WMARK_LOW]}\n        high     {w[WMARK_HIGH]}"
                       f"\n        promo    {w[WMARK_PROMO]}\n        spanned  {zone.spanned}"
                       f"\n        present  {zone.present}\n        managed  {zone.managed}\n        cma      0")
            out.append("\n        protection: (" + ", ".join(map(str, zone.lowmem_reserve)) + ")")
            if not zone.populated:
                out.append("\n")
                continue
            out += [f"\n      {name:<12} {value}" for name, value in zone_stat_values(mm, zone).items()]
            out += [f"\n      {name:<12} {zone.stat[name]}" for name in NUMA_EVENTS]
            batch = zone_batchsize(zone.managed)
            split = node_cpus or len(online_cpus) or 1
            high_min = max(w[WMARK_LOW] // split, batch << 2)
            high_max = max(zone.managed // MIN_PERCPU_PAGELIST_HIGH_FRACTION // split, batch << 2)
            threshold = stat_threshold(zone.managed, len(online_cpus))
            out.append("\n  pagesets")
            for cpu in online_cpus:
                # No per-CPU free lists here: every free frame is on the buddy lists, so count (and the
                # high mark it decays to when idle) is 0.
                out.append(f"\n    cpu: {cpu}\n              count:    0\n              high:     0"
                           f"\n              batch:    {batch}\n              high_min: {high_min}"
                           f"\n              high_max: {high_max}\n  vm stats threshold: {threshold}")
            out.append(f"\n  node_unreclaimable:  0\n  start_pfn:           {zone.start_pfn}\n")
    return "".join(out)


def _set_pair(t: object, field: str, other: str, value: int, *, only_if_changed: bool = False) -> None:
    """A _ratio and its _bytes (or _kbytes) partner are one setting in two units: a write to either
    clears the other (dirty_ratio_handler and dirty_bytes_handler only when the value changed).
    A byte count of more than UINT_MAX pages is ERANGE, as the dirty limits are kept in 32 bits."""
    if field.endswith("_bytes") and -(-value // 4096) > UINT_MAX:
        raise KernelError(errno.ERANGE, f"{field}: more than {UINT_MAX} pages")
    changed = getattr(t, field) != value
    setattr(t, field, value)
    if changed or not only_if_changed:
        setattr(t, other, 0)


# --- /proc/<pid> memory files and /proc/pressure ---------------------------------------------


def render_pid_vm(k: Kernel, t: Task) -> str:
    """The Vm* lines of /proc/<pid>/status, from what is charged to the task (none for a kernel thread)."""
    if t.kthread:
        return ""
    rss, swap = k.oom.charged(t.pid)
    kb = 4
    rows = (("VmPeak", rss + swap), ("VmSize", rss + swap), ("VmLck", 0), ("VmPin", 0), ("VmHWM", rss),
            ("VmRSS", rss), ("RssAnon", 0), ("RssFile", 0), ("RssShmem", rss), ("VmData", 0), ("VmStk", 0),
            ("VmExe", 0), ("VmLib", 0), ("VmPTE", 0), ("VmSwap", swap))
    return "".join(f"{name}:\t{pages * kb:8d} kB\n" for name, pages in rows) + "HugetlbPages:\t       0 kB\n"


def render_pid_statm(k: Kernel, t: Task) -> str:
    """/proc/<pid>/statm: size resident shared text lib data dt, in pages."""
    rss, swap = k.oom.charged(t.pid) if not t.kthread else (0, 0)
    return f"{rss + swap} {rss} {rss} 0 0 0 0\n"


OOM_ADJUST_MIN, OOM_ADJUST_MAX, OOM_DISABLE = -16, 15, -17
PROC_NUMBUF = 13


def proc_numbuf_int(text: str) -> int:
    """What oom_adj_write and oom_score_adj_write parse: the first PROC_NUMBUF - 1 bytes, strstrip, kstrtoint base 0."""
    return kstrtoint(strstrip(text.encode(errors="surrogateescape")[:PROC_NUMBUF - 1])
                     .decode(errors="surrogateescape"), 0)


def add_pid_mm_files(d: GenDir, k: Kernel, task: Callable[[], Task]) -> None:
    def set_adj(value: int) -> None:
        """__set_oom_adj(legacy=true): lowering the task's oom_score_adj needs CAP_SYS_RESOURCE."""
        t = task()
        if value < t.oom_score_adj and k.current.uid != 0:
            raise KernelError(errno.EACCES, "lowering oom_score_adj needs CAP_SYS_RESOURCE")
        if not k.oom_adj_warned:
            k.oom_adj_warned = True
            k.log.warn(f"{t.comm} ({t.pid}): /proc/{t.pid}/oom_adj is deprecated, please use "
                       f"/proc/{t.pid}/oom_score_adj instead.")
        t.oom_score_adj = value

    def show_adj() -> str:
        adj = task().oom_score_adj
        return f"{OOM_ADJUST_MAX if adj == 1000 else int(adj * -OOM_DISABLE / 1000)}\n"

    def store_adj(text: str) -> None:
        """oom_adj_write: -17..15 scaled to oom_score_adj (C division: -1 is -58, which reads back as 0)."""
        value = proc_numbuf_int(text)
        if not OOM_DISABLE <= value <= OOM_ADJUST_MAX:
            raise KernelError(errno.EINVAL, "oom_adj is -17..15")
        set_adj(1000 if value == OOM_ADJUST_MAX else int(value * 1000 / -OOM_DISABLE))

    d.file("oom_score", lambda: f"{k.oom.oom_score(task())}\n")
    d.file("oom_adj", show_adj, store_adj)


def build_proc_pressure(d: GenDir, k: Kernel) -> None:
    for resource in ("cpu", "io", "memory"):
        d.file(resource, lambda r=resource: k.psi.render(r), mode=0o444)


# --- sysctl parsing ---------------------------------------------------------------------------


def parse_ints(text: str, count: int, lo: int, hi: int) -> list[int]:
    """proc_dointvec_minmax / proc_doulongvec_minmax: 1 to `count` integers in [lo, hi], else EINVAL.

    proc_get_long's rules, not Python's: blanks (isspace) between numbers, an optional '-', then
    digits in base 0 ("0x10" is 16, "010" is 8), ending at a blank or the end; no '+', no '_', no
    other digits than ASCII, at most 20 characters a number. What follows the last number the
    file takes is ignored, as Linux ignores it (a write of "5\n6" sets 5).
    """
    values, error = parse_int_prefix(text, count, lo, hi)
    if error is not None:
        raise error
    return values


def parse_int_prefix(text: str, count: int, lo: int, hi: int) -> tuple[list[int], KernelError | None]:
    """The numbers parse_ints takes before the first bad one, and the error that one is (None if none).

    A vector sysctl stores each value as it is parsed, so the ones before a bad one are kept.
    """
    data = text.encode(errors="surrogateescape")
    values: list[int] = []
    pos = 0
    try:
        while len(values) < count:
            while pos < len(data) and data[pos] in _SPACES:
                pos += 1
            if pos == len(data):
                break
            value, pos = _proc_get_long(data, pos)
            if not lo <= value <= hi:
                raise KernelError(errno.EINVAL, f"{value} is out of range [{lo}, {hi}]")
            values.append(value)
        if not values:
            raise KernelError(errno.EINVAL, "no number")
    except KernelError as e:
        return values, e
    return values, None


_SPACES = b" \t\n\v\f\r"
_TMPBUFLEN = 22


def _proc_get_long(data: bytes, pos: int) -> tuple[int, int]:
    """proc_get_long: one number at `pos` (kernel/sysctl.c); the value and where it ends."""
    word = data[pos : pos + _TMPBUFLEN - 1]
    neg = word[:1] == b"-" and len(data) - pos > 1
    body = word[1:] if neg else word
    if not body[:1].isdigit():
        raise KernelError(errno.EINVAL, "not a number")
    if body[:2].lower() == b"0x" and body[2:3] and body[2:3] in b"0123456789abcdefABCDEF":
        digits, base, skip = b"0123456789abcdefABCDEF", 16, 2
    elif body[:1] == b"0":
        digits, base, skip = b"01234567", 8, 0
    else:
        digits, base, skip = b"0123456789", 10, 0
    n = skip
    while n < len(body) and body[n] in digits:
        n += 1
    magnitude = int(body[skip:n], base)
    used = n + (1 if neg else 0)
    if magnitude > ULONG_MAX or used == _TMPBUFLEN - 1:
        raise KernelError(errno.EINVAL, "number too long")
    end = pos + used
    if end < len(data) and data[end] not in b" \t\n":
        raise KernelError(errno.EINVAL, "not a number")
    return (-magnitude if neg else magnitude), end


def _int_sysctl(d: GenDir, name: str, show: Callable[[], int], store: Callable[[int], None],
                lo: int, hi: int) -> None:
    def write(text: str) -> None:
        store(parse_ints(text, 1, lo, hi)[0])

    d.file(name, lambda: f"{show()}\n", write)


def build_proc_sys_vm(vm: GenDir, k: Kernel) -> None:
    mm = k.mm
    a = mm.allocator
    hugetlb = mm.hugetlb

    def set_min_free_kbytes(value: int) -> None:
        a.min_free_kbytes = a.user_min_free_kbytes = value
        a.setup_watermarks()

    def set_scale_factor(value: int) -> None:
        a.watermark_scale_factor = value
        a.setup_watermarks()

    def set_lowmem_reserve_ratio(text: str) -> None:
        # lowmem_reserve_ratio_sysctl_handler ignores what proc_dointvec_minmax returns: the values before
        # a bad one are kept, and the write succeeds whatever it held (Linux 6.18 takes "garbage" silently).
        values, _ = parse_int_prefix(text, MAX_NR_ZONES, -INT_MAX - 1, INT_MAX)
        for i, value in enumerate(values):
            a.lowmem_reserve_ratio[i] = value if value >= 1 else 0
        a.setup_watermarks()

    def set_zonelist_order(text: str) -> None:
        if text[:1] not in ("d", "D", "n", "N"):
            k.log.warn(f"Ignoring unsupported numa_zonelist_order value:  {text.rstrip()}")
            raise KernelError(errno.EINVAL, "numa_zonelist_order is Node")

    t = mm.tunables
    for name, attr, lo, hi in (
        ("swappiness", "swappiness", 0, 200),
        ("page-cluster", "page_cluster", 0, 31),
        ("dirty_expire_centisecs", "dirty_expire_centisecs", 0, INT_MAX),
        ("overcommit_memory", "overcommit_memory", 0, 2),
        ("panic_on_oom", "panic_on_oom", 0, 2),
        ("oom_kill_allocating_task", "oom_kill_allocating_task", -INT_MAX - 1, INT_MAX),
        ("oom_dump_tasks", "oom_dump_tasks", -INT_MAX - 1, INT_MAX),
    ):
        _int_sysctl(vm, name, lambda f=attr: getattr(t, f), lambda v, f=attr: setattr(t, f, v), lo, hi)

    def set_dirty_writeback(value: int) -> None:
        t.dirty_writeback_centisecs = value
        mm.writeback_wakeup()  # dirty_writeback_centisecs_handler: the new period starts now

    _int_sysctl(vm, "dirty_writeback_centisecs", lambda: t.dirty_writeback_centisecs, set_dirty_writeback,
                0, INT_MAX)
    # The ratio/bytes pairs (page-writeback.c, util.c): minimums as Linux's tables (dirty_bytes_min
    # is two pages), each write clearing the partner.
    for field, other, lo, hi, only_if_changed in (
        ("dirty_ratio", "dirty_bytes", 0, 100, True),
        ("dirty_bytes", "dirty_ratio", 2 * 4096, ULONG_MAX, True),
        ("dirty_background_ratio", "dirty_background_bytes", 0, 100, False),
        ("dirty_background_bytes", "dirty_background_ratio", 1, ULONG_MAX, False),
        ("overcommit_ratio", "overcommit_kbytes", 0, INT_MAX, False),
        ("overcommit_kbytes", "overcommit_ratio", 0, ULONG_MAX, False),
    ):
        _int_sysctl(vm, field, lambda f=field: getattr(t, f),
                    lambda v, f=field, o=other, c=only_if_changed: _set_pair(t, f, o, v, only_if_changed=c), lo, hi)

    def drop_caches(text: str) -> None:
        mode = parse_ints(text, 1, 1, 4)[0]
        mm.reclaimer.drop_caches(mode)
        if not mode & 4 and not k.drop_caches_quiet:
            task = k.tasks.get(k.current_pid())
            comm = task.comm if task is not None else "?"
            k.log.info(f"{comm} ({k.current_pid()}): drop_caches: {mode}")
        k.drop_caches_quiet |= bool(mode & 4)

    vm.file("drop_caches", lambda: "", drop_caches, mode=0o200)
    _int_sysctl(vm, "min_free_kbytes", lambda: a.min_free_kbytes, set_min_free_kbytes, 0, INT_MAX)
    _int_sysctl(vm, "watermark_scale_factor", lambda: a.watermark_scale_factor, set_scale_factor, 1, 3000)
    vm.file("lowmem_reserve_ratio", lambda: "\t".join(map(str, a.lowmem_reserve_ratio)) + "\n",
            set_lowmem_reserve_ratio)
    h = hugetlb.default
    _int_sysctl(vm, "nr_hugepages", lambda: h.persistent, lambda v: hugetlb.set_max_huge_pages(h, v), 0, ULONG_MAX)
    _int_sysctl(vm, "nr_hugepages_mempolicy", lambda: h.persistent, lambda v: hugetlb.set_max_huge_pages(h, v),
                0, ULONG_MAX)
    _int_sysctl(vm, "nr_overcommit_hugepages", lambda: h.nr_overcommit_huge_pages,
                lambda v: setattr(h, "nr_overcommit_huge_pages", v), 0, ULONG_MAX)
    vm.file("numa_zonelist_order", lambda: "Node\n", set_zonelist_order)
