"""Access checks on the rootfs tmpfs for a non-root caller (nobody, 65534), as Linux tmpfs makes them.

The mount uses default_permissions and allow_other: the host kernel checks
modes against the ids and modes the daemon reports, so what is tested here is
that the daemon keeps owners, modes and the sticky/set-group-ID rules right.

The unprivileged side runs in a forked child that enters the test directory
while still root and then drops to nobody: pytest's temporary directories are
0700, and a working directory is not checked again once entered.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import Mounted, module_mount
from tests.integration.users import NOBODY, as_nobody, outcome

mnt = module_mount()


@pytest.fixture
def d(mnt: Mounted, request: pytest.FixtureRequest) -> Path:
    """A directory of the test's own under /tmp, sticky and world-writable like /tmp itself."""
    path = mnt.path / "tmp" / request.node.name[:200]
    path.mkdir()
    os.chmod(path, 0o1777)
    return path


def root_file(path: Path, mode: int, data: bytes = b"root") -> None:
    path.write_bytes(data)
    os.chmod(path, mode)


def read(name: str) -> bytes:
    with open(name, "rb") as f:
        return f.read()


def append(name: str) -> None:
    with open(name, "ab") as f:
        f.write(b"+")


# --- mode bits ---------------------------------------------------------------------------


def test_mode_bits_decide_read_and_write(d: Path) -> None:
    root_file(d / "secret", 0o600)
    root_file(d / "public", 0o644)
    root_file(d / "shared", 0o666)
    root_file(d / "group", 0o660)
    os.chown(d / "group", 0, NOBODY)
    root_file(d / "others-only", 0o607)
    os.chown(d / "others-only", 0, NOBODY)  # the group class applies first, and it has no bits

    def child() -> dict[str, object]:
        return {
            "read secret": outcome(lambda: read("secret")),
            "write secret": outcome(lambda: append("secret")),
            "read public": outcome(lambda: read("public")),
            "write public": outcome(lambda: append("public")),
            "write shared": outcome(lambda: append("shared")),
            "write group": outcome(lambda: append("group")),
            "read others-only": outcome(lambda: read("others-only")),
            "truncate public": outcome(lambda: os.truncate("public", 0)),
        }

    assert as_nobody(d, child) == {
        "read secret": "EACCES",
        "write secret": "EACCES",
        "read public": "ok",
        "write public": "EACCES",
        "write shared": "ok",
        "write group": "ok",
        "read others-only": "EACCES",
        "truncate public": "EACCES",
    }
    assert (d / "secret").read_bytes() == b"root", "root reads a 0600 root file"
    assert (d / "shared").read_bytes() == b"root+" and (d / "group").read_bytes() == b"root+"
    assert (d / "public").read_bytes() == b"root"


def test_directory_bits_decide_create_and_search(d: Path) -> None:
    for name, mode in (("closed", 0o755), ("nosearch", 0o766), ("open", 0o777)):
        os.mkdir(d / name)
        os.chmod(d / name, mode)
        root_file(d / name / "f", 0o644)

    def child() -> dict[str, object]:
        return {
            "create in 0755": outcome(lambda: open("closed/new", "wb").close()),
            "mkdir in 0755": outcome(lambda: os.mkdir("closed/sub")),
            "unlink in 0755": outcome(lambda: os.unlink("closed/f")),
            "list 0766": outcome(lambda: os.listdir("nosearch")),
            "stat in 0766": outcome(lambda: os.stat("nosearch/f")),
            "unlink in 0777": outcome(lambda: os.unlink("open/f")),
            "create in 0777": outcome(lambda: open("open/new", "wb").close()),
        }

    assert as_nobody(d, child) == {
        "create in 0755": "EACCES",
        "mkdir in 0755": "EACCES",
        "unlink in 0755": "EACCES",
        "list 0766": "ok",
        "stat in 0766": "EACCES",
        "unlink in 0777": "ok",  # no sticky bit: write permission on the directory is enough
        "create in 0777": "ok",
    }
    assert os.listdir(d / "closed") == ["f"]
    assert os.listdir(d / "open") == ["new"]


# --- /tmp and the sticky bit -------------------------------------------------------------


def test_nobody_creates_in_tmp_and_owns_the_file(mnt: Mounted) -> None:
    tmp = mnt.path / "tmp"
    st = os.stat(tmp)
    assert stat.S_IMODE(st.st_mode) == 0o1777 and st.st_uid == 0

    def child() -> dict[str, object]:
        with open("nobody-was-here", "wb") as f:
            f.write(b"mine")
        os.mkdir("nobody-dir")
        st = os.stat("nobody-was-here")
        return {"ids": (st.st_uid, st.st_gid), "mode": stat.S_IMODE(st.st_mode), "data": read("nobody-was-here")}

    try:
        assert as_nobody(tmp, child) == {"ids": (NOBODY, NOBODY), "mode": 0o644, "data": b"mine"}
        assert os.stat(tmp / "nobody-dir").st_uid == NOBODY
    finally:
        (tmp / "nobody-was-here").unlink(missing_ok=True)
        if (tmp / "nobody-dir").exists():
            os.rmdir(tmp / "nobody-dir")


def test_sticky_bit_protects_other_users_files(d: Path) -> None:
    root_file(d / "roots", 0o666)  # writable by all, yet not removable by them
    os.mkdir(d / "rootdir")
    os.chmod(d / "rootdir", 0o777)

    def child() -> dict[str, object]:
        with open("own", "wb"):
            pass
        return {
            "unlink root's": outcome(lambda: os.unlink("roots")),
            "rename root's": outcome(lambda: os.rename("roots", "moved")),
            "replace root's": outcome(lambda: os.rename("own", "roots")),
            "rmdir root's": outcome(lambda: os.rmdir("rootdir")),
            "write root's": outcome(lambda: append("roots")),
            "rename own": outcome(lambda: os.rename("own", "own2")),
            "unlink own": outcome(lambda: os.unlink("own2")),
        }

    assert as_nobody(d, child) == {
        "unlink root's": "EPERM",
        "rename root's": "EPERM",
        "replace root's": "EPERM",
        "rmdir root's": "EPERM",
        "write root's": "ok",
        "rename own": "ok",
        "unlink own": "ok",
    }
    assert sorted(os.listdir(d)) == ["rootdir", "roots"]
    # Root is not bound by the sticky bit.
    with open(d / "left-by-nobody", "wb"):
        pass
    os.chown(d / "left-by-nobody", NOBODY, NOBODY)
    os.unlink(d / "left-by-nobody")


# --- ownership and attributes ------------------------------------------------------------


def test_only_root_changes_owners(d: Path) -> None:
    root_file(d / "roots", 0o666)

    def child() -> dict[str, object]:
        with open("own", "wb"):
            pass
        return {
            "chown own to root": outcome(lambda: os.chown("own", 0, -1)),
            "chgrp own to root": outcome(lambda: os.chown("own", -1, 0)),
            "chown own to self": outcome(lambda: os.chown("own", NOBODY, NOBODY)),
            "chown root's": outcome(lambda: os.chown("roots", NOBODY, -1)),
            "chmod root's": outcome(lambda: os.chmod("roots", 0o777)),
            "chmod own": outcome(lambda: os.chmod("own", 0o4700)),
            "utime root's now": outcome(lambda: os.utime("roots")),
            "utime root's explicit": outcome(lambda: os.utime("roots", (1, 1))),
            "utime own explicit": outcome(lambda: os.utime("own", ns=(5, 7))),
        }

    assert as_nobody(d, child) == {
        "chown own to root": "EPERM",
        "chgrp own to root": "EPERM",  # nobody is not a member of group 0
        "chown own to self": "ok",
        "chown root's": "EPERM",
        "chmod root's": "EPERM",
        "chmod own": "ok",
        "utime root's now": "ok",  # write permission is enough to set the times to now
        "utime root's explicit": "EPERM",  # explicit times need ownership
        "utime own explicit": "ok",
    }
    st = os.stat(d / "own")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(st.st_mode) == 0o4700 and st.st_mtime_ns == 7
    assert stat.S_IMODE(os.stat(d / "roots").st_mode) == 0o666 and os.stat(d / "roots").st_uid == 0


def test_write_by_owner_clears_setuid(d: Path) -> None:
    def child() -> dict[str, object]:
        with open("prog", "wb"):
            pass
        os.chmod("prog", 0o4755)
        before = stat.S_IMODE(os.stat("prog").st_mode)
        append("prog")
        return {"before": before, "after": stat.S_IMODE(os.stat("prog").st_mode)}

    assert as_nobody(d, child) == {"before": 0o4755, "after": 0o755}
    assert stat.S_IMODE(os.stat(d / "prog").st_mode) == 0o755


def test_setgid_directory_passes_on_its_group(d: Path) -> None:
    shared = d / "shared"
    os.mkdir(shared)
    os.chown(shared, 0, 4242)
    os.chmod(shared, 0o2777)

    def child() -> dict[str, object]:
        with open("shared/f", "wb"):
            pass
        os.mkdir("shared/sub")
        f, sub = os.stat("shared/f"), os.stat("shared/sub")
        return {
            "file gid": f.st_gid,
            "file setgid": bool(f.st_mode & stat.S_ISGID),
            "subdir gid": sub.st_gid,
            "subdir setgid": bool(sub.st_mode & stat.S_ISGID),
        }

    assert as_nobody(d, child) == {"file gid": 4242, "file setgid": False, "subdir gid": 4242, "subdir setgid": True}
