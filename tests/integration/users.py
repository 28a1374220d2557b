"""Running test code as an unprivileged user: nobody (65534), which every Debian system has.

`as_nobody` forks the test process and drops to nobody in the child, which hands back a
picklable result. The child is the test interpreter itself, already loaded: an exec would
need a Python every user may run, and this machine's interpreter lives under /root (0700).
Modules the child imports after dropping privileges must be importable by nobody, so
`preload` imports them while still root. `setpriv` runs a real tool as nobody instead.
"""

from __future__ import annotations

import errno
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

NOBODY = 65534
NOGROUP = 65534


def as_nobody(cwd: Path, fn: Callable[[], Any], *, groups: Iterable[int] = (), env: dict[str, str] | None = None,
              preload: Iterable[str] = ()) -> Any:
    """Run `fn` in a child as uid/gid 65534 (with `groups` as supplementary groups) inside `cwd`; its result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            for module in preload:
                __import__(module)
            os.chdir(cwd)  # as root: pytest's temporary directories are 0700, and a cwd is not checked again
            if env is not None:
                os.environ.clear()
                os.environ.update(env)
            os.setgroups(list(groups))
            os.setgid(NOGROUP)
            os.setuid(NOBODY)
            os.umask(0o022)
            result: object = fn()
        except BaseException as e:  # noqa: BLE001 - hand every failure to the parent
            result = RuntimeError(f"child failed: {e!r}")
        try:
            data = pickle.dumps(result)
            os.write(write_end, len(data).to_bytes(8, "little") + data)
        finally:
            os._exit(0)
    os.close(write_end)
    # A length first: a daemon the child started holds a copy of the pipe, so it never reads as ended.
    with os.fdopen(read_end, "rb") as pipe:
        size = int.from_bytes(pipe.read(8), "little")
        data = pipe.read(size)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result = pickle.loads(data)
    if isinstance(result, BaseException):
        raise result
    return result


def outcome(fn: Callable[[], object]) -> str:
    """'ok' or the errno name: what a check returns across the fork."""
    try:
        fn()
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    return "ok"


def setpriv(*cmd: str) -> list[str]:
    """`cmd` run as nobody, without supplementary groups."""
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOGROUP}", "--clear-groups", *cmd]
