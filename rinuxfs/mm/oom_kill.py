"""The OOM killer (mm/oom_kill.c): when reclaim and swap cannot make room, a task dies so the machine lives.

Contract:
- `out_of_memory(nr_pages)` is called by an allocation that failed after reclaim. It returns True
  when it killed a task other than the allocating one (the allocation may be retried) and False
  when the allocation must fail with ENOMEM: --oom errno, no eligible task, or the allocating
  task itself was the victim (its pending request fails; SIGKILL ends it anyway).
- Eligible: a host process the machine has seen, with something charged to it (tmpfs pages in
  RAM or in swap; killing a task that holds nothing would free nothing), oom_score_adj above
  -1000, not already killed. Never init, the kernel threads, or the daemon itself.
- Badness is oom_badness(): charged pages + swap entries + page-table pages, plus
  oom_score_adj × totalpages / 1000, totalpages being RAM + swap (CONSTRAINT_NONE). The task of
  highest badness dies by a real SIGKILL, unless vm.oom_kill_allocating_task picks the
  allocating task; vm.panic_on_oom (1 or 2: a global OOM is all this machine has) panics instead.
- The kernel log gets Linux's report: the invoking line, the stack, Mem-Info with the zones and
  their buddy lists, the task table (6.18 columns), `oom-kill:constraint=…` and
  `Out of memory: Killed process N (comm) total-vm:… anon-rss:… file-rss:… shmem-rss:…`; vmstat
  oom_kill counts it.
Tasks have no address space here: what a task holds is what is charged to it, so its total-vm
and rss are its charged pages (all shmem), and its page tables are empty.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from rinuxfs.mm.buddy import MIGRATE_TYPES
from rinuxfs.mm.page_alloc import WMARK_HIGH, WMARK_LOW, WMARK_MIN
from rinuxfs.mm.vmscan import MAX_RECLAIM_RETRIES
from rinuxfs.printk import KERN_ERR, KERN_INFO, KERN_WARNING, KernelLog

if TYPE_CHECKING:
    from rinuxfs.mm.core import MemoryManager

OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX = -1000, 1000
GFP_HIGHUSER_MOVABLE = "0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP)"
_MT_LETTERS = "UMEHI"  # buddy list letters show_migration_types prints: Unmovable, Movable, rEclaimable, …


class TaskLike(Protocol):
    pid: int
    comm: str
    uid: int
    kthread: bool
    host: bool
    oom_score_adj: int
    oom_killed: bool


class OomKiller:
    def __init__(self, mm: MemoryManager, log: KernelLog, tasks: Callable[[], list[TaskLike]],
                 current: Callable[[], TaskLike | None], panic: Callable[[str], None], mode: str = "kill",
                 kill: Callable[[int], None] = lambda pid: os.kill(pid, signal.SIGKILL)) -> None:
        self.mm = mm
        self.log = log
        self.tasks = tasks
        self.current = current
        self.panic = panic
        self.mode = mode
        self.kill = kill

    # --- scoring -------------------------------------------------------------------------

    def totalpages(self) -> int:
        return self.mm.allocator.totalram_pages + self.mm.swap.total_pages

    def charged(self, pid: int) -> tuple[int, int]:
        """(pages in RAM, pages in swap) charged to a task."""
        return self.mm.charges.rss_shmem[pid], self.mm.charges.swapents[pid]

    def badness(self, task: TaskLike) -> int | None:
        """oom_badness; None for a task the killer must never pick (LONG_MIN)."""
        if task.kthread or task.pid == 1 or not task.host or task.pid == os.getpid():
            return None
        if task.oom_score_adj == OOM_SCORE_ADJ_MIN or task.oom_killed:
            return None
        rss, swap = self.charged(task.pid)
        points = rss + swap
        return points + task.oom_score_adj * (self.totalpages() // 1000)

    def oom_score(self, task: TaskLike) -> int:
        """/proc/<pid>/oom_score."""
        points = self.badness(task)
        if points is None:
            return 0
        return max(0, (1000 + points * 1000 // max(1, self.totalpages())) * 2 // 3)

    # --- the killing ---------------------------------------------------------------------

    def out_of_memory(self, nr_pages: int) -> bool:
        if self.mode == "errno":
            self.log.printk(KERN_WARNING, f"rinuxfs: out of memory for {nr_pages} pages: failing the request "
                                          "(--oom errno)")
            return False
        current = self.current()
        panic_on_oom = self.mm.tunables.panic_on_oom
        if panic_on_oom:
            self.dump_header(current, None)
            kind = "compulsory" if panic_on_oom == 2 else "system-wide"
            self.panic(f"Out of memory: {kind} panic_on_oom is enabled")
            return False
        victim: TaskLike | None = None
        if self.mm.tunables.oom_kill_allocating_task and current is not None and current.host \
                and not current.kthread and current.oom_score_adj != OOM_SCORE_ADJ_MIN and not current.oom_killed:
            victim = current
        else:
            victim = self.select_bad_process()
        if victim is None:
            self.dump_header(current, None)
            self.log.printk(KERN_WARNING, "Out of memory and no killable processes...")
            return False
        self.dump_header(current, victim)
        self._kill(victim)
        return current is None or victim.pid != current.pid

    def select_bad_process(self) -> TaskLike | None:
        chosen, chosen_points = None, None
        for task in self.tasks():
            points = self.badness(task)
            if points is None or not sum(self.charged(task.pid)):
                continue
            if chosen_points is None or points > chosen_points:
                chosen, chosen_points = task, points
        return chosen

    def _kill(self, victim: TaskLike) -> None:
        rss, swap = self.charged(victim.pid)
        kb = 4
        self.log.printk(KERN_INFO, "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed="
                        f"{self._mems_allowed()},global_oom,task_memcg=/,task={victim.comm},pid={victim.pid},"
                        f"uid={victim.uid}")
        victim.oom_killed = True
        self.mm.events["oom_kill"] += 1
        try:
            self.kill(victim.pid)
        except ProcessLookupError:
            pass
        self.log.printk(KERN_ERR, f"Out of memory: Killed process {victim.pid} ({victim.comm}) "
                        f"total-vm:{(rss + swap) * kb}kB, anon-rss:0kB, file-rss:0kB, shmem-rss:{rss * kb}kB, "
                        f"UID:{victim.uid} pgtables:0kB oom_score_adj:{victim.oom_score_adj}")

    def _mems_allowed(self) -> str:
        nodes = [n.nid for n in self.mm.allocator.nodes]
        return f"0-{nodes[-1]}" if len(nodes) > 1 else "0"

    # --- the report ----------------------------------------------------------------------

    def dump_header(self, current: TaskLike | None, victim: TaskLike | None) -> None:
        log = self.log
        comm = current.comm if current is not None else "kworker"
        pid = current.pid if current is not None else 0
        adj = current.oom_score_adj if current is not None else 0
        log.printk(KERN_WARNING, f"{comm} invoked oom-killer: gfp_mask={GFP_HIGHUSER_MOVABLE}, order=0, "
                                 f"oom_score_adj={adj}")
        cpu = self.mm.current_cpu()
        log.printk(KERN_WARNING, f"CPU: {cpu} PID: {pid} Comm: {comm} Not tainted 6.18.0-rinuxfs #1")
        log.printk(KERN_WARNING, "Hardware name: rinuxfs simulated machine")
        for line in ("Call Trace:", " <TASK>", " dump_stack_lvl", " dump_header", " out_of_memory",
                     " __alloc_pages_slowpath", " __alloc_pages", " shmem_alloc_folio", " shmem_get_folio_gfp",
                     " shmem_write_begin", " generic_perform_write", " shmem_file_write_iter", " vfs_write",
                     " ksys_write", " do_syscall_64", " entry_SYSCALL_64_after_hwframe", " </TASK>"):
            log.printk(KERN_WARNING, line)
        self._show_mem()
        if self.mm.tunables.oom_dump_tasks:
            self._dump_tasks()

    def _show_mem(self) -> None:
        mm, log = self.mm, self.log
        n = mm.total
        a = mm.allocator
        free = a.nr_free_pages
        log.printk(KERN_WARNING, "Mem-Info:")
        for line in (f"active_anon:{n['nr_active_anon']} inactive_anon:{n['nr_inactive_anon']} isolated_anon:0",
                     f" active_file:{n['nr_active_file']} inactive_file:{n['nr_inactive_file']} isolated_file:0",
                     f" unevictable:{n['nr_unevictable']} dirty:{n['nr_dirty']} writeback:{n['nr_writeback']}",
                     f" slab_reclaimable:{n['nr_slab_reclaimable_pages']} "
                     f"slab_unreclaimable:{n['nr_slab_unreclaimable_pages']}",
                     f" mapped:0 shmem:{n['nr_shmem']} pagetables:{n['nr_page_table_pages']}",
                     " sec_pagetables:0 bounce:0", " kernel_misc_reclaimable:0",
                     f" free:{free} free_pcp:0 free_cma:0"):
            log.printk(KERN_WARNING, line)
        for node in a.nodes:
            s = node.stat
            stuck = mm.reclaimer.kswapd_failures[node.nid] >= MAX_RECLAIM_RETRIES
            log.printk(KERN_WARNING, f"Node {node.nid} active_anon:{s['nr_active_anon'] * 4}kB "
                       f"inactive_anon:{s['nr_inactive_anon'] * 4}kB active_file:{s['nr_active_file'] * 4}kB "
                       f"inactive_file:{s['nr_inactive_file'] * 4}kB unevictable:{s['nr_unevictable'] * 4}kB "
                       f"isolated(anon):0kB isolated(file):0kB mapped:0kB dirty:{s['nr_dirty'] * 4}kB "
                       f"writeback:{s['nr_writeback'] * 4}kB shmem:{s['nr_shmem'] * 4}kB shmem_thp:0kB "
                       f"shmem_pmdmapped:0kB anon_thp:0kB writeback_tmp:0kB "
                       f"kernel_stack:{mm.kernel_stack_kb if node.nid == 0 else 0}kB "
                       f"pagetables:{s['nr_page_table_pages'] * 4}kB sec_pagetables:0kB "
                       f"all_unreclaimable? {'yes' if stuck else 'no'}")
        for zone in a.populated_zones():
            w = zone.watermark
            lru = mm.zone_lru_counts(zone)
            log.printk(KERN_WARNING, f"Node {zone.nid} {zone.name} free:{zone.nr_free * 4}kB boost:0kB "
                       f"min:{w[WMARK_MIN] * 4}kB low:{w[WMARK_LOW] * 4}kB high:{w[WMARK_HIGH] * 4}kB "
                       f"reserved_highatomic:0KB active_anon:{lru[1] * 4}kB inactive_anon:{lru[0] * 4}kB "
                       f"active_file:{lru[3] * 4}kB inactive_file:{lru[2] * 4}kB unevictable:{lru[4] * 4}kB "
                       f"writepending:{(zone.stat['nr_dirty'] + zone.stat['nr_writeback']) * 4}kB "
                       f"present:{zone.present * 4}kB managed:{zone.managed * 4}kB mlocked:0kB bounce:0kB "
                       f"free_pcp:0kB local_pcp:0kB free_cma:0kB")
            log.printk(KERN_WARNING, "lowmem_reserve[]: " + " ".join(map(str, zone.lowmem_reserve)))
        for zone in a.populated_zones():
            counts = zone.buddy.counts()
            parts = []
            for order in range(len(counts[0])):
                total = sum(row[order] for row in counts)
                types = "".join(_MT_LETTERS[mt] for mt in range(len(MIGRATE_TYPES)) if counts[mt][order])
                parts.append(f"{total}*{4 << order}kB" + (f" ({types})" if types else ""))
            log.printk(KERN_WARNING, f"Node {zone.nid} {zone.name}: " + " ".join(parts)
                       + f" = {zone.nr_free * 4}kB")
        for node in a.nodes:
            for h in mm.hugetlb.hstates[::-1]:
                log.printk(KERN_WARNING, f"Node {node.nid} hugepages_total={h.nr_huge_pages_node[node.nid]} "
                           f"hugepages_free={h.free_huge_pages_node[node.nid]} "
                           f"hugepages_surp={h.surplus_huge_pages_node[node.nid]} hugepages_size={h.size_kb}kB")
        log.printk(KERN_WARNING, f"{n['nr_file_pages']} total pagecache pages")
        log.printk(KERN_WARNING, f"{n['nr_swapcached']} pages in swap cache")
        log.printk(KERN_WARNING, f"Free swap  = {mm.swap.free_pages * 4}kB")
        log.printk(KERN_WARNING, f"Total swap = {mm.swap.total_pages * 4}kB")
        present = sum(node.present for node in a.nodes)
        log.printk(KERN_WARNING, f"{present} pages RAM")
        log.printk(KERN_WARNING, "0 pages HighMem/MovableOnly")
        log.printk(KERN_WARNING, f"{present - a.totalram_pages} pages reserved")
        log.printk(KERN_WARNING, "0 pages hwpoisoned")

    def _dump_tasks(self) -> None:
        log = self.log
        log.printk(KERN_INFO, "Tasks state (memory values in pages):")
        log.printk(KERN_INFO, "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes "
                              "swapents oom_score_adj name")
        for t in self.tasks():
            if t.kthread or t.pid == 1 or not t.host:
                continue
            rss, swap = self.charged(t.pid)
            log.printk(KERN_INFO, f"[{t.pid:7d}] {t.uid:5d} {t.pid:5d} {rss + swap:8d} {rss:8d} {0:8d} {0:8d} "
                                  f"{rss:9d} {0:8d} {swap:8d}         {t.oom_score_adj:5d} {t.comm}")
