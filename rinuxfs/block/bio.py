"""Bios and requests: what the page cache asks of a block device, and what a driver executes.

A bio names an operation, a start sector (512-byte units, always, as in
Linux) and the RAM it moves data to or from, as (physical address, length)
segments (bio_vec). A request is one or more bios merged because they are
adjacent and of the same kind; a driver turns a request into one command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from rinuxfs.block import stats
from rinuxfs.errors import KernelError

if TYPE_CHECKING:
    from rinuxfs.block.genhd import BlockDevice

SECTOR_SHIFT = 9
SECTOR_SIZE = 1 << SECTOR_SHIFT

# Request flags (enum req_flag_bits, above the 8 op bits), those the simulated kernel sets.
REQ_FAILFAST_DEV = 1 << 8
REQ_FAILFAST_TRANSPORT = 1 << 9
REQ_FAILFAST_DRIVER = 1 << 10
REQ_SYNC = 1 << 11
REQ_IDLE = 1 << 15
REQ_FUA = 1 << 17
REQ_RAHEAD = 1 << 19
REQ_FAILFAST_MASK = REQ_FAILFAST_DEV | REQ_FAILFAST_TRANSPORT | REQ_FAILFAST_DRIVER


class ReqOp(IntEnum):
    """enum req_op values (include/linux/blk_types.h)."""

    READ = 0
    WRITE = 1
    FLUSH = 2
    DISCARD = 3
    WRITE_ZEROES = 9

    @property
    def stat_group(self) -> int:
        return {ReqOp.READ: stats.READ, ReqOp.FLUSH: stats.FLUSH, ReqOp.DISCARD: stats.DISCARD}.get(self, stats.WRITE)

    @property
    def has_data(self) -> bool:
        return self in (ReqOp.READ, ReqOp.WRITE)


Segment = tuple[int, int]  # (physical address, length in bytes)


@dataclass(eq=False)
class Bio:
    op: ReqOp
    sector: int
    nr_sectors: int
    segments: list[Segment] = field(default_factory=list)
    bdev: BlockDevice | None = None  # the partition (or whole disk) it was submitted to, for its statistics
    fua: bool = False
    flags: int = 0  # REQ_* bits: REQ_RAHEAD for readahead, REQ_SYNC for O_DIRECT and fsync writeback
    error: KernelError | None = None  # how it ended, once its batch was submitted (bi_status)
    parent: Bio | None = None  # the bio this one was split from (bio_split)

    @property
    def end_sector(self) -> int:
        return self.sector + self.nr_sectors


@dataclass(eq=False)
class Request:
    op: ReqOp
    sector: int
    nr_sectors: int
    segments: list[Segment]
    bios: list[Bio]
    flags: int = 0  # the first bio's REQ_* bits, REQ_FUA for a bio with fua
    start_ns: int = field(default_factory=time.monotonic_ns)
    retries: int = 0  # times the driver requeued it (nvme_req(rq)->retries, scmd->retries)
    waited_ns: int = 0  # simulated time it spent in timeouts, which the clock skipped (see block/queue.py)

    @classmethod
    def from_bio(cls, bio: Bio) -> Request:
        flags = bio.flags | (REQ_FUA if bio.fua else 0)
        if flags & REQ_RAHEAD:  # blk_mq_bio_to_request: readahead is failfast, never retried by the driver
            flags |= REQ_FAILFAST_MASK
        return cls(bio.op, bio.sector, bio.nr_sectors, list(bio.segments), [bio], flags)

    @property
    def fua(self) -> bool:
        """Force Unit Access: REQ_FUA in the flags."""
        return bool(self.flags & REQ_FUA)

    @property
    def failfast(self) -> bool:
        """blk_noretry_request: any FAILFAST bit."""
        return bool(self.flags & REQ_FAILFAST_MASK)

    @property
    def end_sector(self) -> int:
        return self.sector + self.nr_sectors

    def can_append(self, bio: Bio, max_sectors: int) -> bool:
        """A back merge: same operation, same device, starts where this request ends, stays within the limit."""
        return (
            bio.op == self.op
            and bio.op != ReqOp.FLUSH
            and bio.sector == self.end_sector
            and bio.bdev is self.bios[0].bdev
            and bio.fua == self.fua
            and bio.flags == self.bios[0].flags
            and self.nr_sectors + bio.nr_sectors <= max_sectors
        )

    def append(self, bio: Bio) -> None:
        self.bios.append(bio)
        self.nr_sectors += bio.nr_sectors
        segs = self.segments
        for addr, length in bio.segments:
            if segs and segs[-1][0] + segs[-1][1] == addr:
                segs[-1] = (segs[-1][0], segs[-1][1] + length)  # physically contiguous: one segment
            else:
                segs.append((addr, length))
