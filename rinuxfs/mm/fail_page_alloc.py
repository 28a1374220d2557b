"""mm/fail_page_alloc.c: page allocations that fail on purpose, to exercise every ENOMEM path.

Contract: `FailPageAlloc(attr)` is the capability, with Linux's extra knobs and defaults:
ignore-gfp-wait Y (allocations that may sleep in direct reclaim never fail), ignore-gfp-highmem Y,
min-order 1 (order-0 allocations never fail). `should_fail_alloc_page(order, pages)` is the hook
the memory manager calls (MemoryManager.should_fail_alloc_page): once per allocation call, the
fault attribute's `space` consumed by the call's pages. `debugfs(parent)` adds the directory
fail_page_alloc/ with the generic files and the three of its own (mode 0600).

How the simulated kernel's allocations look to the gfp checks: every one may sleep (none is made
in atomic context: the interrupt handlers allocate nothing), so each carries __GFP_DIRECT_RECLAIM
and ignore-gfp-wait Y exempts them all, as it exempts nearly every allocation on Linux. None
carries __GFP_HIGHMEM (the callers do not say; tmpfs pages would on Linux), so ignore-gfp-highmem
is kept and shown but exempts nothing; nothing asks for __GFP_NOFAIL or __GFP_NOWARN.
"""

from __future__ import annotations

from rinuxfs.drivers.base.debugfs import DebugfsDir, debugfs_create_file, fault_create_debugfs_attr
from rinuxfs.lib.fault_inject import FaultAttr, debugfs_bool, debugfs_u32

_STACK = ("should_fail_alloc_page", "prepare_alloc_pages", "__alloc_pages_noprof", "alloc_pages_mpol_noprof")


class FailPageAlloc:
    def __init__(self, attr: FaultAttr) -> None:
        self.attr = attr
        self.ignore_gfp_wait = True  # ignore_gfp_reclaim in the source
        self.ignore_gfp_highmem = True
        self.min_order = 1

    def should_fail_alloc_page(self, order: int, pages: int) -> bool:
        if order < self.min_order or self.ignore_gfp_wait:  # every allocation here may enter direct reclaim
            return False
        return self.attr.should_fail(pages, stack=_STACK)

    def debugfs(self, parent: DebugfsDir) -> DebugfsDir:
        directory = fault_create_debugfs_attr("fail_page_alloc", parent, self.attr)
        debugfs_create_file("ignore-gfp-wait", 0o600, directory, *debugfs_bool(self, "ignore_gfp_wait"))
        debugfs_create_file("ignore-gfp-highmem", 0o600, directory, *debugfs_bool(self, "ignore_gfp_highmem"))
        debugfs_create_file("min-order", 0o600, directory, *debugfs_u32(self, "min_order"))
        return directory
