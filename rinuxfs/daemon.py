"""The daemon: serves a booted kernel through FUSE until it is unmounted or signalled.

Life cycle: `serve()` mounts (pyfuse3.init), reports readiness, runs the trio
loop with pyfuse3's request workers, a signal watcher and the kernel's
workqueue worker in one nursery, and
on the way out always flushes the kernel to the image, unmounts if the mount
is still ours, and releases the kernel. SIGTERM, SIGINT and SIGHUP end it
cleanly; so does `fusermount3 -u` (the request loop then returns by itself).
If that last writeback fails, `serve` raises DaemonError once all is released.

A user (not root) mounts as libfuse lets users mount, through the set-uid
fusermount3. What needs host root is skipped with a log line (the bdi
readahead) or left to /etc/fuse.conf (allow_other); the machine itself shows
its root's files as the user's (fuse.IdMap), so dev/, sys/ and proc/kmsg work.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from rinuxfs.errors import KernelError
from rinuxfs.fuse import IdMap, RinuxOperations
from rinuxfs.kernel import Kernel

log = logging.getLogger("rinuxfs")


def mount_options(allow_other: bool) -> list[str]:
    options = ["fsname=rinuxfs", "subtype=rinuxfs", "default_permissions"]
    if allow_other:
        options.append("allow_other")
    return options


def may_allow_other() -> bool:
    """allow_other needs root, or user_allow_other in /etc/fuse.conf."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/etc/fuse.conf") as f:
            return any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def mounts_at(path: Path) -> list[list[str]]:
    """The /proc/self/mountinfo lines, split into fields, of the mounts at `path`, the last mounted last."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040 is a space
            if point == str(path):
                mounts.append(fields)
    return mounts


READ_AHEAD_KB = 1024  # FUSE's max request size (max_pages 256): one READ per MiB of readahead


def tune_readahead(mountpoint: Path) -> str:
    """Raise the host bdi readahead of our FUSE connection from 128 KiB to 1 MiB.

    pyfuse3 cannot set max_readahead at INIT, so buffered sequential reads
    would arrive as 128 KiB requests, each paying a full round trip. The host
    caps the bdi readahead when it processes our INIT reply, so this must run
    after INIT (see `after_init` in `serve`).
    """
    devs = [fields[2] for fields in mounts_at(mountpoint)]
    if not devs:
        return "mount not found in mountinfo"
    if os.geteuid() != 0:
        return f"read_ahead_kb of bdi {devs[-1]} left at the host's 128: raising it needs root"
    try:
        with open(f"/sys/class/bdi/{devs[-1]}/read_ahead_kb", "w") as f:
            f.write(f"{READ_AHEAD_KB}\n")
    except OSError as e:
        return f"cannot set read_ahead_kb: {e.strerror}"
    return f"read_ahead_kb {READ_AHEAD_KB} on bdi {devs[-1]}"


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class DaemonError(Exception):
    """The daemon served, but could not finish cleanly (data written through the mount did not reach the image)."""


def _panic(reason: str) -> None:
    """panic(): the machine stops dead. Nothing is flushed; the mount is left for `rinuxfs umount` to clear."""
    log.critical("Kernel panic - not syncing: %s", reason)
    os._exit(1)


def serve(kernel: Kernel, mountpoint: Path, on_ready: Callable[[], None]) -> None:
    kernel.on_panic = _panic
    # A signal can come as soon as the mount is announced, before trio listens: keep it for later.
    early: list[int] = []
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda s, _frame: early.append(s))
    ops = RinuxOperations(kernel, IdMap(os.getuid(), os.getgid()))
    pyfuse3.init(ops, str(mountpoint), mount_options(may_allow_other()))
    kernel.log.info(f"rinuxfs: mounted on {mountpoint}")
    if kernel.config.mem_prealloc:
        kernel.mm.ram.prealloc(lambda: kernel.log.info("rinuxfs: RAM populated"))
    on_ready()
    stopped_by_signal = False
    ended_by_host = False

    async def run() -> None:
        nonlocal stopped_by_signal, ended_by_host
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            if early:  # the receiver is open now, so nothing can slip between this check and it
                kernel.log.info(f"rinuxfs: {signal.Signals(early[0]).name} received, unmounting")
                stopped_by_signal = True
                return
            async with trio.open_nursery() as nursery:

                async def watch_signals() -> None:
                    nonlocal stopped_by_signal
                    async for signum in signals:
                        kernel.log.info(f"rinuxfs: {signal.Signals(signum).name} received, unmounting")
                        stopped_by_signal = True
                        pyfuse3.terminate()
                        return

                async def after_init() -> None:
                    # A stat from a worker thread returns only once the host has our INIT reply.
                    # Abandoned on cancel: once the request loop has stopped this stat never gets an answer.
                    await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
                    kernel.log.info(f"rinuxfs: {tune_readahead(mountpoint)}")

                nursery.start_soon(watch_signals)
                nursery.start_soon(after_init)
                kernel.start(nursery)  # kswapd and the flusher: cancelled with the nursery at the end
                nursery.start_soon(kernel.workqueue.worker)  # the kworker: deferred driver work between requests
                # The boot's objects never die: out of the collector's sight. Requests make many
                # short-lived containers (swap entries, page lists); a larger first generation keeps
                # the collector from sweeping a millions-strong heap every few hundred of them.
                gc.freeze()
                gc.set_threshold(20_000, 20, 20)
                # One request at a time: no handler awaits, so more workers would overlap nothing, and
                # the kernel's state is only ever seen between two requests, never in the middle of one.
                await pyfuse3.main(min_tasks=1, max_tasks=1)
                ended_by_host = not stopped_by_signal  # fusermount3 -u: the mount is already gone
                nursery.cancel_scope.cancel()

    lost = ""
    try:
        trio.run(run)
    finally:
        try:
            kernel.sync()
        except KernelError as e:  # a disk that fails its last writeback (an image cut under us): finish, then say so
            lost = f"writeback at unmount failed: {e.args[0] if e.args else e}"
            kernel.log.err(f"rinuxfs: {lost}")
        finally:
            pyfuse3.close(unmount=not ended_by_host)
            kernel.log.info("rinuxfs: unmounted")
            kernel.close()
    if lost:
        raise DaemonError(lost)
