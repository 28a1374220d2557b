"""blk_status_t: how a bio or request ends, and the errno each status becomes (block/blk-core.c blk_errors[]).

Contract: a driver that fails a request raises `BlkError(status, …)` with the sector where the
failure sits (blk_rq_pos at failure time: sd completes the sectors before a bad LBA first, NVMe
fails the whole request). Its errno is blk_status_to_errno's, which is what O_DIRECT callers
see; the page cache turns every device error into EIO, as filemap does. The queue prints
blk_print_req_error's line for it unless `quiet` (RQF_QUIET, or a dead disk: GD_DEAD).
"""

from __future__ import annotations

import errno
from enum import IntEnum

from rinuxfs.errors import KernelError


class BlkStatus(IntEnum):
    """blk_status_t values of Linux 6.18 (include/linux/blk_types.h)."""

    OK = 0
    NOTSUPP = 1
    TIMEOUT = 2
    NOSPC = 3
    TRANSPORT = 4
    TARGET = 5
    RESV_CONFLICT = 6
    MEDIUM = 7
    PROTECTION = 8
    RESOURCE = 9
    IOERR = 10
    DM_REQUEUE = 11
    AGAIN = 12
    DEV_RESOURCE = 13
    ZONE_OPEN_RESOURCE = 14
    ZONE_ACTIVE_RESOURCE = 15
    OFFLINE = 16
    DURATION_LIMIT = 17
    INVAL = 19


# blk_errors[]: the errno and the name blk_print_req_error starts its line with.
BLK_ERRORS: dict[BlkStatus, tuple[int, str]] = {
    BlkStatus.OK: (0, ""),
    BlkStatus.NOTSUPP: (errno.EOPNOTSUPP, "operation not supported"),
    BlkStatus.TIMEOUT: (errno.ETIMEDOUT, "timeout"),
    BlkStatus.NOSPC: (errno.ENOSPC, "critical space allocation"),
    BlkStatus.TRANSPORT: (errno.ENOLINK, "recoverable transport"),
    BlkStatus.TARGET: (errno.EREMOTEIO, "critical target"),
    BlkStatus.RESV_CONFLICT: (errno.EBADE, "reservation conflict"),
    BlkStatus.MEDIUM: (errno.ENODATA, "critical medium"),
    BlkStatus.PROTECTION: (errno.EILSEQ, "protection"),
    BlkStatus.RESOURCE: (errno.ENOMEM, "kernel resource"),
    BlkStatus.IOERR: (errno.EIO, "I/O"),
    BlkStatus.DM_REQUEUE: (errno.EREMCHG, "dm internal retry"),
    BlkStatus.AGAIN: (errno.EAGAIN, "nonblocking retry"),
    BlkStatus.DEV_RESOURCE: (errno.EBUSY, "device resource"),
    BlkStatus.ZONE_OPEN_RESOURCE: (errno.ETOOMANYREFS, "open zones exceeded"),
    BlkStatus.ZONE_ACTIVE_RESOURCE: (errno.EOVERFLOW, "active zones exceeded"),
    BlkStatus.OFFLINE: (errno.ENODEV, "device offline"),
    BlkStatus.DURATION_LIMIT: (errno.ETIME, "duration limit exceeded"),
    BlkStatus.INVAL: (errno.EINVAL, "invalid"),
}


def blk_status_to_errno(status: BlkStatus) -> int:
    return BLK_ERRORS[status][0]


class BlkError(KernelError):
    """A bio or request that ended with `status`; `sector` is where it failed (None: its first sector)."""

    def __init__(self, status: BlkStatus, message: str, *, sector: int | None = None, quiet: bool = False,
                 err: int | None = None) -> None:
        super().__init__(blk_status_to_errno(status) if err is None else err, message)
        self.status = status
        self.sector = sector
        self.quiet = quiet
