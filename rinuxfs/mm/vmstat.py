"""The counters of /proc/vmstat, in the order mm/vmstat.c prints them on 6.18.

Gauges come from the memory manager's node counters and zones; events from
its event counters. A name the model does not track yet prints 0, as a
kernel built without that feature would leave it.
"""

from __future__ import annotations

from collections import Counter

from rinuxfs.mm.buddy import NR_PAGE_ORDERS, PAGEBLOCK_ORDER
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.page_alloc import Node, Zone
from rinuxfs.mm.writeback import dirty_limits

VMSTAT_ITEMS = (
    "nr_free_pages",
    "nr_free_pages_blocks",
    "nr_zone_inactive_anon",
    "nr_zone_active_anon",
    "nr_zone_inactive_file",
    "nr_zone_active_file",
    "nr_zone_unevictable",
    "nr_zone_write_pending",
    "nr_mlock",
    "nr_zspages",
    "nr_free_cma",
    "numa_hit",
    "numa_miss",
    "numa_foreign",
    "numa_interleave",
    "numa_local",
    "numa_other",
    "nr_inactive_anon",
    "nr_active_anon",
    "nr_inactive_file",
    "nr_active_file",
    "nr_unevictable",
    "nr_slab_reclaimable",
    "nr_slab_unreclaimable",
    "nr_isolated_anon",
    "nr_isolated_file",
    "workingset_nodes",
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_activate_anon",
    "workingset_activate_file",
    "workingset_restore_anon",
    "workingset_restore_file",
    "workingset_nodereclaim",
    "nr_anon_pages",
    "nr_mapped",
    "nr_file_pages",
    "nr_dirty",
    "nr_writeback",
    "nr_shmem",
    "nr_shmem_hugepages",
    "nr_shmem_pmdmapped",
    "nr_file_hugepages",
    "nr_file_pmdmapped",
    "nr_anon_transparent_hugepages",
    "nr_vmscan_write",
    "nr_vmscan_immediate_reclaim",
    "nr_dirtied",
    "nr_written",
    "nr_throttled_written",
    "nr_kernel_misc_reclaimable",
    "nr_foll_pin_acquired",
    "nr_foll_pin_released",
    "nr_kernel_stack",
    "nr_page_table_pages",
    "nr_sec_page_table_pages",
    "nr_iommu_pages",
    "nr_swapcached",
    "pgpromote_success",
    "pgpromote_candidate",
    "pgpromote_candidate_nrl",
    "pgdemote_kswapd",
    "pgdemote_direct",
    "pgdemote_khugepaged",
    "pgdemote_proactive",
    "nr_hugetlb",
    "nr_balloon_pages",
    "nr_kernel_file_pages",
    "nr_dirty_threshold",
    "nr_dirty_background_threshold",
    "nr_memmap_pages",
    "nr_memmap_boot_pages",
    "pgpgin",
    "pgpgout",
    "pswpin",
    "pswpout",
    "pgalloc_dma",
    "pgalloc_dma32",
    "pgalloc_normal",
    "pgalloc_movable",
    "pgalloc_device",
    "allocstall_dma",
    "allocstall_dma32",
    "allocstall_normal",
    "allocstall_movable",
    "allocstall_device",
    "pgskip_dma",
    "pgskip_dma32",
    "pgskip_normal",
    "pgskip_movable",
    "pgskip_device",
    "pgfree",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pgfault",
    "pgmajfault",
    "pglazyfreed",
    "pgrefill",
    "pgreuse",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgsteal_khugepaged",
    "pgsteal_proactive",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgscan_khugepaged",
    "pgscan_proactive",
    "pgscan_direct_throttle",
    "pgscan_anon",
    "pgscan_file",
    "pgsteal_anon",
    "pgsteal_file",
    "zone_reclaim_success",
    "zone_reclaim_failed",
    "pginodesteal",
    "slabs_scanned",
    "kswapd_inodesteal",
    "kswapd_low_wmark_hit_quickly",
    "kswapd_high_wmark_hit_quickly",
    "pageoutrun",
    "pgrotated",
    "drop_pagecache",
    "drop_slab",
    "oom_kill",
    "numa_pte_updates",
    "numa_huge_pte_updates",
    "numa_hint_faults",
    "numa_hint_faults_local",
    "numa_pages_migrated",
    "pgmigrate_success",
    "pgmigrate_fail",
    "thp_migration_success",
    "thp_migration_fail",
    "thp_migration_split",
    "compact_migrate_scanned",
    "compact_free_scanned",
    "compact_isolated",
    "compact_stall",
    "compact_fail",
    "compact_success",
    "compact_daemon_wake",
    "compact_daemon_migrate_scanned",
    "compact_daemon_free_scanned",
    "htlb_buddy_alloc_success",
    "htlb_buddy_alloc_fail",
    "unevictable_pgs_culled",
    "unevictable_pgs_scanned",
    "unevictable_pgs_rescued",
    "unevictable_pgs_mlocked",
    "unevictable_pgs_munlocked",
    "unevictable_pgs_cleared",
    "unevictable_pgs_stranded",
    "thp_fault_alloc",
    "thp_fault_fallback",
    "thp_fault_fallback_charge",
    "thp_collapse_alloc",
    "thp_collapse_alloc_failed",
    "thp_file_alloc",
    "thp_file_fallback",
    "thp_file_fallback_charge",
    "thp_file_mapped",
    "thp_split_page",
    "thp_split_page_failed",
    "thp_deferred_split_page",
    "thp_underused_split_page",
    "thp_split_pmd",
    "thp_scan_exceed_none_pte",
    "thp_scan_exceed_swap_pte",
    "thp_scan_exceed_share_pte",
    "thp_split_pud",
    "thp_zero_page_alloc",
    "thp_zero_page_alloc_failed",
    "thp_swpout",
    "thp_swpout_fallback",
    "balloon_inflate",
    "balloon_deflate",
    "balloon_migrate",
    "swap_ra",
    "swap_ra_hit",
    "swpin_zero",
    "swpout_zero",
    "ksm_swpin_copy",
    "cow_ksm",
    "zswpin",
    "zswpout",
    "zswpwb",
    "direct_map_level2_splits",
    "direct_map_level3_splits",
    "direct_map_level2_collapses",
    "direct_map_level3_collapses",
    "nr_unstable",
)

# Names whose value is another counter's, or derived.
_ALIASES = {
    "nr_zone_inactive_anon": "nr_inactive_anon",
    "nr_zone_active_anon": "nr_active_anon",
    "nr_zone_inactive_file": "nr_inactive_file",
    "nr_zone_active_file": "nr_active_file",
    "nr_zone_unevictable": "nr_unevictable",
    "nr_slab_reclaimable": "nr_slab_reclaimable_pages",
    "nr_slab_unreclaimable": "nr_slab_unreclaimable_pages",
}
THP_ITEMS = ("nr_shmem_hugepages", "nr_file_hugepages", "nr_anon_transparent_hugepages")
ZONE_EVENT_NAMES = ("dma", "dma32", "normal", "movable", "device")
NUMA_EVENTS = ("numa_hit", "numa_miss", "numa_foreign", "numa_interleave", "numa_local", "numa_other")


def free_pages_blocks(zones: list[Zone]) -> int:
    """Free pages in blocks of pageblock order or more (NR_FREE_PAGES_BLOCKS, 6.18)."""
    total = 0
    for zone in zones:
        for row in zone.buddy.counts():
            total += sum(row[o] << o for o in range(PAGEBLOCK_ORDER, NR_PAGE_ORDERS))
    return total


def vmstat(mm: MemoryManager) -> list[tuple[str, int]]:
    node, events, alloc = mm.total, mm.events, mm.allocator
    zones = list(alloc.zones())
    free = alloc.nr_free_pages
    bg, thresh = dirty_limits(mm)
    derived = {
        "nr_free_pages": free,
        "nr_free_pages_blocks": free_pages_blocks(zones),
        "nr_zone_write_pending": node["nr_dirty"] + node["nr_writeback"],
        "nr_kernel_stack": mm.kernel_stack_kb,
        "nr_dirty_threshold": thresh,
        "nr_dirty_background_threshold": bg,
        "nr_memmap_boot_pages": mm.memblock.reserved_pages("memmap"),
        "pgfree": sum(z.stat["pgfree"] for z in zones) + events["pgfree"],
    }
    for name in NUMA_EVENTS:
        derived[name] = sum(z.stat[name] for z in zones)
    for idx, zname in enumerate(ZONE_EVENT_NAMES):
        derived[f"pgalloc_{zname}"] = sum(z.stat["pgalloc"] for z in zones if z.idx == idx)
    for name, value in mm.hugetlb.events.items():
        derived[name] = value
    lru_events: Counter[str] = Counter()
    for lruvec in mm.lruvecs:
        lru_events.update(lruvec.events)
    rows = []
    for name in VMSTAT_ITEMS:
        if name in derived:
            value = derived[name]
        else:
            key = _ALIASES.get(name, name)
            value = node[key] if key in node else events[key] + lru_events[key]
        if name in THP_ITEMS:
            value //= 512  # vmstat_item_print_in_thp: these count huge pages, not base pages
        rows.append((name, max(0, value)))
    return rows


ZONE_STAT_ITEMS = VMSTAT_ITEMS[: VMSTAT_ITEMS.index("nr_free_cma") + 1]
NODE_STAT_ITEMS = VMSTAT_ITEMS[VMSTAT_ITEMS.index("nr_inactive_anon") : VMSTAT_ITEMS.index("nr_kernel_file_pages") + 1]
_ZONE_LRU = ("nr_zone_inactive_anon", "nr_zone_active_anon", "nr_zone_inactive_file", "nr_zone_active_file",
             "nr_zone_unevictable")  # in the order of the LRU lists


def node_stat_value(mm: MemoryManager, node: Node, name: str) -> int:
    if name == "nr_kernel_stack":
        return mm.kernel_stack_kb if node.nid == 0 else 0
    value = max(0, node.stat[_ALIASES.get(name, name)])
    return value // 512 if name in THP_ITEMS else value


def zone_stat_values(mm: MemoryManager, zone: Zone) -> dict[str, int]:
    """The ZONE_STAT_ITEMS of one zone, in order; its LRU lists are walked once."""
    stat = zone.stat
    values = {name: max(0, stat[name]) for name in ZONE_STAT_ITEMS}
    values.update(zip(_ZONE_LRU, mm.zone_lru_counts(zone), strict=True))
    values["nr_free_pages"] = zone.nr_free
    values["nr_free_pages_blocks"] = free_pages_blocks([zone])
    values["nr_zone_write_pending"] = stat["nr_dirty"] + stat["nr_writeback"]
    return values
