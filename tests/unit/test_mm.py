"""The page allocator and address spaces, without FUSE: frames, watermarks, and file pages against a model."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rinuxfs.errors import KernelError
from rinuxfs.hw.ram import PAGE_SIZE
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.filemap import AddressSpace
from rinuxfs.mm.page_alloc import PageAllocator

SHMEM = ("nr_shmem", "nr_file_pages", "nr_inactive_anon")


class Quota:
    def __init__(self, pages: int) -> None:
        self.limit, self.used = pages, 0

    def charge(self, pages: int) -> None:
        if self.used + pages > self.limit:
            raise KernelError(errno.ENOSPC)
        self.used += pages

    def uncharge(self, pages: int) -> None:
        self.used -= pages


@pytest.fixture(scope="module")
def mm() -> MemoryManager:
    return MemoryManager(64 << 20, 2)


def test_zones_of_a_small_machine() -> None:
    a = PageAllocator((256 << 20) // PAGE_SIZE)
    dma, dma32, normal = a.zones[:3]
    assert (dma.start_pfn, dma.spanned) == (0, 4096)
    assert dma32.start_pfn == 4096 and dma32.spanned == 65536 - 4096
    assert normal.spanned == 0 and normal.managed == 0
    assert a.totalram_pages == a.nr_free_pages == 65536 - a.reserved_pages
    assert 0 < dma.wmark_min < dma.wmark_low < dma.wmark_high
    # lowmem_reserve as Linux computes it: DMA protects managed(DMA32)/256 against DMA32 allocations
    assert dma.lowmem_reserve[1] == dma32.managed // 256


def test_allocation_prefers_high_zones_and_is_contiguous() -> None:
    a = PageAllocator((64 << 20) // PAGE_SIZE)
    pfns = a.alloc_pages(100)
    assert all(a.zone_of(p).name == "DMA32" for p in pfns)
    assert pfns == list(range(pfns[0], pfns[0] + 100)), "consecutive allocations are physically contiguous"
    free_before = a.nr_free_pages
    a.free_pages(pfns)
    assert a.nr_free_pages == free_before + 100


def test_allocator_keeps_the_min_watermark_and_says_enomem() -> None:
    a = PageAllocator((32 << 20) // PAGE_SIZE)
    floor = sum(z.wmark_min + z.lowmem_reserve[1] for z in a.zones[:2])
    with pytest.raises(KernelError) as e:
        a.alloc_pages(a.nr_free_pages)
    assert e.value.errno == errno.ENOMEM
    got = a.alloc_pages(a.nr_free_pages - floor)
    assert len(got) == a.totalram_pages - floor
    with pytest.raises(KernelError):
        a.alloc_pages(1)


def test_meminfo_is_consistent(mm: MemoryManager) -> None:
    info = mm.meminfo()
    assert info["MemAvailable"] <= info["MemTotal"]
    assert info["Slab"] == info["SReclaimable"] + info["SUnreclaim"]
    assert info["MemTotal"] == mm.allocator.totalram_pages * 4
    assert info["MemTotal"] < 64 << 10, "the kernel reserves part of RAM"


def test_file_pages_are_counted_and_given_back(mm: MemoryManager) -> None:
    space = AddressSpace(mm, Quota(10_000), SHMEM)
    free = mm.allocator.nr_free_pages
    space.write(0, b"x" * (4 * PAGE_SIZE + 1))
    assert space.nrpages == 5
    assert mm.allocator.nr_free_pages == free - 5
    assert mm.meminfo()["Shmem"] >= 5 * 4
    space.release()
    assert mm.allocator.nr_free_pages == free


def test_quota_refusal_changes_nothing(mm: MemoryManager) -> None:
    quota = Quota(2)
    space = AddressSpace(mm, quota, SHMEM)
    free = mm.allocator.nr_free_pages
    with pytest.raises(KernelError) as e:
        space.write(0, b"y" * (3 * PAGE_SIZE))
    assert e.value.errno == errno.ENOSPC
    assert space.nrpages == 0 and quota.used == 0 and mm.allocator.nr_free_pages == free


def test_huge_offsets_allocate_only_what_is_touched(mm: MemoryManager) -> None:
    space = AddressSpace(mm, Quota(10), SHMEM)
    space.write(1 << 50, b"end")
    assert space.nrpages == 1
    assert space.read((1 << 50) - 2, 5) == b"\0\0end"
    space.truncate(10)
    assert space.nrpages == 0
    space.release()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 6 * PAGE_SIZE), st.binary(min_size=1, max_size=3 * PAGE_SIZE)),
        st.tuples(st.just("truncate"), st.integers(0, 8 * PAGE_SIZE), st.just(b"")),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_address_space_matches_a_bytearray(operations: list[tuple[str, int, bytes]]) -> None:
    """Any sequence of writes and truncates reads back like a plain byte array, holes as zeros."""
    mm = _shared_mm()
    space = AddressSpace(mm, Quota(1000), SHMEM)
    model = bytearray()
    try:
        for op, offset, data in operations:
            if op == "write":
                if len(model) < offset:
                    model.extend(bytes(offset - len(model)))
                model[offset : offset + len(data)] = data
                space.write(offset, data)
            else:
                del model[offset:]
                model.extend(bytes(offset - len(model)))
                space.truncate(offset)
            assert space.read(0, len(model)) == bytes(model)
            assert all(index * PAGE_SIZE < max(len(model), 1) for index in space.pages)
    finally:
        space.release()


_MM: list[MemoryManager] = []


def _shared_mm() -> MemoryManager:
    if not _MM:
        _MM.append(MemoryManager(32 << 20, 1))
    return _MM[0]
