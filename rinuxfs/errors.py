"""Kernel errors: an exception that carries an errno.

Raised where the fault is detected; mapped to a FUSE errno once, in fuse.py,
and to a one-line message once, in cli.py.
"""

from __future__ import annotations

import errno
import os


class KernelError(Exception):
    """A failure with a Linux errno, like a negative return from a kernel function."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or os.strerror(err))
        self.errno = err

    @property
    def name(self) -> str:
        return errno.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        return f"{self.args[0]} ({self.name})"
