"""The partition scan, mkdisk and inspect against util-linux and gdisk on real image files.

Images are built by sfdisk/sgdisk/mkswap (no root, no loop devices) and read
by our parser, or built by `rinuxfs mkdisk` and read by sfdisk, partx and
blkid. Where the kernel and util-linux disagree (storage.md §2.6) the test
states the kernel's answer explicitly instead of trusting the tool.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from rinuxfs.block.partitions import Partition, PartitionTable
from rinuxfs.block.partitions.types import GPT_TYPES, MBR_TYPES
from rinuxfs.cli import UsageError
from rinuxfs.mkdisk import plan_layout, probe_image
from rinuxfs.mm.swap_header import build_swap_header, check_swap_area, parse_swap_header
from tests.integration.storage_helpers import MBR_SCRIPT, layout

MIB = 1 << 20
RINUXFS = [sys.executable, "-m", "rinuxfs"]
ENV = {**os.environ, "LC_ALL": "C"}

GPT_SCRIPT = layout("tests-mkdisk-gpt")
OUT_OF_ORDER_SCRIPT = layout("tests-order")


def run(*cmd: str, cwd: Path | None = None, stdin: str | None = None, check: bool = True,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True, check=check, env=ENV,
                          timeout=60)


def rinuxfs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(*RINUXFS, *args, cwd=cwd, check=False)


def sfdisk_image(path: Path, script: str, size: int = 64 * MIB) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path), stdin=script)
    return path


def sfdisk_json(path: Path, cwd: Path) -> dict[str, Any]:
    table: dict[str, Any] = json.loads(run("sfdisk", "--json", path.name, cwd=cwd).stdout)["partitiontable"]
    return table


def partx(path: Path) -> list[dict[str, str]]:
    out = run("partx", "-P", "-o", "NR,START,END,SECTORS,NAME,UUID,TYPE", str(path)).stdout
    return [dict(field.split("=", 1) for field in shlex.split(line)) for line in out.splitlines()]


def part(table: PartitionTable, number: int) -> Partition:
    p = table.partition(number)
    assert p is not None, f"no partition {number}"
    return p


def table_of(path: Path, *, force_gpt: bool = False) -> PartitionTable:
    result, _ = probe_image(path, force_gpt=force_gpt)
    assert result.table is not None, result.reason
    return result.table


def number_of(node: str, device: str) -> int:
    return int(node[len(device):].lstrip("p"))


def assert_matches_sfdisk(table: PartitionTable, sf: dict[str, Any], device: str) -> None:
    """Field by field: label, id, usable range, and every partition sfdisk lists."""
    assert (table.label, table.disk_id, table.sector_size) == (sf["label"], sf["id"], sf["sectorsize"])
    if table.label == "gpt":
        assert (table.first_usable_lba, table.last_usable_lba) == (sf["firstlba"], sf["lastlba"])
    theirs = {number_of(p["node"], device): p for p in sf["partitions"]}
    assert sorted(theirs) == [p.number for p in table.partitions]
    for p in table.partitions:
        q = theirs[p.number]
        assert (p.table_start, p.table_size, p.type) == (q["start"], q["size"], q["type"])
        assert p.bootable == q.get("bootable", False)
        if table.label == "gpt":
            assert (p.uuid.upper(), p.name) == (q["uuid"], q.get("name", ""))
            assert (p.start, p.size) == (p.table_start, p.table_size)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory of tool-made images, built once for the module."""
    d = tmp_path_factory.mktemp("images")
    sfdisk_image(d / "gpt.img", GPT_SCRIPT)
    sfdisk_image(d / "mbr.img", MBR_SCRIPT)
    sfdisk_image(d / "order.img", OUT_OF_ORDER_SCRIPT)
    shutil.copy(d / "gpt.img", d / "hybrid.img")
    run("sgdisk", "--hybrid=1:EE", str(d / "hybrid.img"))
    for label in ("gpt", "dos"):
        result = rinuxfs("mkdisk", f"mk-{label}.img", "--label", label, "--size", "256M", cwd=d)
        assert result.returncode == 0, result.stderr
    return d


# --- our parser on tool-made tables ------------------------------------------------------------------


def test_gpt_with_gaps_names_and_attrs_matches_sfdisk_and_partx(images: Path) -> None:
    table = table_of(images / "gpt.img")
    assert [p.number for p in table.partitions] == [1, 2, 4, 7]
    assert_matches_sfdisk(table, sfdisk_json(images / "gpt.img", images), "gpt.img")
    assert part(table, 4).attributes == 1 | 1 << 60
    rows = partx(images / "gpt.img")
    assert [(int(r["NR"]), int(r["START"]), int(r["END"]), int(r["SECTORS"]), r["NAME"], r["UUID"], r["TYPE"])
            for r in rows] == [(p.number, p.start, p.end, p.size, p.volname, p.uuid, str(p.type_guid))
                               for p in table.partitions]


def test_mbr_with_extended_and_logicals_matches_sfdisk_and_partx(images: Path) -> None:
    table = table_of(images / "mbr.img")
    assert_matches_sfdisk(table, sfdisk_json(images / "mbr.img", images), "mbr.img")
    rows = {int(r["NR"]): r for r in partx(images / "mbr.img")}
    assert sorted(rows) == [1, 2, 3, 5, 6]
    for p in table.partitions:
        r = rows[p.number]
        assert (int(r["START"]), int(r["SECTORS"]), r["TYPE"]) == (p.table_start, p.table_size, f"0x{p.sys_ind:x}")
        if p.number != 3:
            assert (p.start, p.size, p.uuid) == (int(r["START"]), int(r["SECTORS"]), r["UUID"])
    # Where the kernel differs from libblkid: the extended container is registered as
    # 2 sectors and carries no PARTUUID (partx shows its full size and deadbeef-03).
    ext = part(table, 3)
    assert (ext.size, ext.uuid, rows[3]["UUID"]) == (2, "", "deadbeef-03")


def test_hybrid_mbr_from_sgdisk_is_gpt(images: Path) -> None:
    table = table_of(images / "hybrid.img")
    assert (table.label, table.pmbr) == ("gpt", "hybrid")
    assert_matches_sfdisk(table, sfdisk_json(images / "hybrid.img", images), "hybrid.img")
    slot1 = (images / "hybrid.img").read_bytes()[0x1BE:0x1CE]
    assert slot1[4] == 0xEF  # sgdisk really wrote a hybrid: the ESP is an MBR partition too


@pytest.mark.parametrize("image", ["gpt.img", "mbr.img", "order.img", "hybrid.img", "mk-gpt.img", "mk-dos.img"])
def test_inspect_prints_what_sfdisk_prints(images: Path, image: str) -> None:
    for args in ((), ("--json",)):
        ours = rinuxfs("inspect", image, *args, cwd=images)
        assert ours.returncode == 0, ours.stderr
        assert ours.stdout == run("sfdisk", "--json" if args else "-l", image, cwd=images).stdout
    absolute = str(images / image)  # a device name wider than the Device column's width hint
    assert rinuxfs("inspect", absolute, cwd=images).stdout == run("sfdisk", "-l", absolute).stdout


@pytest.mark.parametrize("size", [40 * 1024, MIB + 8192, 16 * MIB])  # p2 is 16 MiB
def test_mkswap_at_an_offset_reads_back_and_equals_our_header(tmp_path: Path, size: int) -> None:
    image = sfdisk_image(tmp_path / "disk.img", GPT_SCRIPT)
    swap_uuid = UUID("11111111-2222-3333-4444-555555555555")
    swap_file = tmp_path / "swap.part"
    with open(swap_file, "wb") as f:
        f.truncate(size)
    run("mkswap", "-L", "swap0", "-U", str(swap_uuid), str(swap_file))
    offset = part(table_of(image), 2).start * 512
    with open(image, "r+b") as f:  # what `dd conv=notrunc` does: mkswap 2.38 has no --offset
        f.seek(offset)
        f.write(swap_file.read_bytes())
    with open(image, "rb") as f:
        f.seek(offset)
        page = f.read(4096)
    assert page == build_swap_header(size, uuid=swap_uuid, label="swap0")
    header = parse_swap_header(page)
    blkid = dict(line.split("=", 1) for line in run("blkid", "-p", "-o", "export", "-O", str(offset), "-S",
                                                    str(size), str(image)).stdout.splitlines())
    assert (blkid["TYPE"], blkid["UUID"], blkid["LABEL"], blkid["VERSION"]) == \
           ("swap", str(header.uuid), header.label, str(header.version))
    assert check_swap_area(page, 16 * MIB).pages == size // 4096 - 1


# --- mkdisk read by the tools --------------------------------------------------------------------------


def layout_by_sfdisk(tmp_path: Path, size: int, label: str) -> list[tuple[int, int, int]]:
    """(number, start, sectors) that sfdisk gives the README's layout on a blank disk of `size` bytes.

    The rules (README, `mkdisk`): an ESP of 100 MiB (1/8 of disks under 800 MiB), swap 1/8 of
    the disk (at most 1 GiB), a Linux partition over the rest; sfdisk does the alignment.
    """
    esp = 100 if size >= 800 * MIB else size // 8 // MIB
    swap = min(size // 8 // MIB, 1024)
    script = f"label: {label}\n1 : size={esp}MiB, type=uefi\n2 : size={swap}MiB, type=swap\n3 : type=linux\n"
    ref = sfdisk_image(tmp_path / f"ref-{label}.img", script, size)
    return [(number_of(p["node"], ref.name), p["start"], p["size"]) for p in sfdisk_json(ref, tmp_path)["partitions"]]


@pytest.mark.parametrize("label", ["gpt", "dos"])
def test_mkdisk_image_reads_back_in_sfdisk_partx_and_blkid(images: Path, tmp_path: Path, label: str) -> None:
    name = f"mk-{label}.img"
    image = images / name
    layout = layout_by_sfdisk(tmp_path, 256 * MIB, label)
    sf = sfdisk_json(image, images)
    assert sf["label"] == label
    assert [(number_of(p["node"], name), p["start"], p["size"]) for p in sf["partitions"]] == layout
    types = {"gpt": ["C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
                     "0FC63DAF-8483-4772-8E79-3D69D8477DE4"], "dos": ["ef", "82", "83"]}[label]
    assert [p["type"] for p in sf["partitions"]] == types
    if label == "gpt":
        assert [p["name"] for p in sf["partitions"]] == ["EFI System Partition", "swap", "root"]
        uuids = {p["uuid"] for p in sf["partitions"]} | {sf["id"]}
        assert len(uuids) == 4 and all(UUID(u).version == 4 for u in uuids)
        assert (sf["firstlba"], sf["lastlba"]) == (2048, 256 * 2048 - 34)
    assert_matches_sfdisk(table_of(image), sf, name)
    verify = run("sfdisk", "--verify", str(image))
    assert "No errors detected." in verify.stdout
    if label == "gpt":
        assert "No problems found." in run("sgdisk", "-v", str(image)).stdout
    assert [(int(r["NR"]), int(r["START"]), int(r["SECTORS"])) for r in partx(image)] == layout
    _, swap_start, swap_size = layout[1]
    blkid = run("blkid", "-p", "-o", "export", "--offset", str(swap_start * 512), "--size", str(swap_size * 512),
                str(image)).stdout
    assert "TYPE=swap" in blkid.splitlines() and "LABEL=swap" in blkid.splitlines()
    assert f'PTTYPE="{label}"' in run("blkid", "-p", str(image)).stdout
    assert os.stat(image).st_blocks * 512 < 4 * MIB  # sparse


def test_the_demo_disk_is_what_disks_demo_sfdisk_describes(tmp_path: Path) -> None:
    """`rinuxfs mkdisk` with its defaults (scripts/demo's disk) against sfdisk given disks/demo.sfdisk."""
    assert rinuxfs("mkdisk", "demo.img", cwd=tmp_path).returncode == 0
    ref = sfdisk_image(tmp_path / "ref.img", layout("demo"), 1 << 30)

    def rows(image: Path) -> list[tuple[int, int, int, str, str]]:
        return [(number_of(p["node"], image.name), p["start"], p["size"], p["type"], p["name"])
                for p in sfdisk_json(image, tmp_path)["partitions"]]

    assert rows(tmp_path / "demo.img") == rows(ref)


@pytest.mark.parametrize("label", ["gpt", "dos"])
def test_mkdisk_tables_are_byte_identical_to_sfdisks(images: Path, tmp_path: Path, label: str) -> None:
    """Replay `sfdisk -d` of our image into a blank one: sfdisk writes the very same sectors."""
    ours = images / f"mk-{label}.img"
    theirs = tmp_path / "replay.img"
    dump = run("sfdisk", "-d", str(ours)).stdout.replace(str(ours), str(theirs))
    sfdisk_image(theirs, dump, 256 * MIB)
    a, b = ours.read_bytes(), theirs.read_bytes()
    assert a[:34 * 512] == b[:34 * 512]
    assert a[-33 * 512:] == b[-33 * 512:]


def test_corrupt_primary_gpt_is_no_table_unless_forced(images: Path, tmp_path: Path) -> None:
    image = tmp_path / "badprimary.img"
    shutil.copy(images / "gpt.img", image)
    with open(image, "r+b") as f:
        f.seek(512 + 16)
        f.write(bytes(4))  # zero the primary header's CRC
    result, _ = probe_image(image)
    assert result.table is None
    assert "Header CRC is wrong" in result.reason and "force_gpt" in result.reason
    forced = table_of(image, force_gpt=True)
    assert forced.gpt_header == "alternate"
    # sfdisk falls back on the backup by itself: with force_gpt we agree with it.
    assert_matches_sfdisk(forced, sfdisk_json(image, tmp_path), image.name)
    out = rinuxfs("inspect", image.name, cwd=tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Header CRC is wrong" in out.stderr and "Traceback" not in out.stderr


def test_cyclic_ebr_chain_follows_the_kernel_not_partx(images: Path, tmp_path: Path) -> None:
    image = tmp_path / "loop.img"
    shutil.copy(images / "mbr.img", image)
    with open(image, "r+b") as f:  # storage.md §3.4: the last EBR links back to the first
        f.seek(77824 * 512 + 0x1CE + 4)
        f.write(b"\x05")
        f.seek(77824 * 512 + 0x1CE + 8)
        f.write(b"\x00\x00\x00\x00\x00\x38\x01\x00")
    assert [int(r["NR"]) for r in partx(image)] == [1, 2, 3, 5, 6]  # libblkid detects the loop
    assert [p.number for p in table_of(image).partitions] == [1, 2, 3, *range(5, 256)]  # the kernel does not


# --- refusals and clear errors ---------------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()[:64 * 1024]).hexdigest()


def test_mkdisk_refuses_to_overwrite_without_force(images: Path, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    shutil.copy(images / "gpt.img", image)
    before = digest(image)
    out = rinuxfs("mkdisk", str(image), "--size", "64M", cwd=tmp_path)
    assert out.returncode == 1 and "already exists; use --force" in out.stderr and "Traceback" not in out.stderr
    assert digest(image) == before
    out = rinuxfs("mkdisk", str(image), "--size", "64M", "--force", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert table_of(image).disk_id != "01234567-89AB-CDEF-0123-456789ABCDEF"
    assert [f.name for f in tmp_path.iterdir()] == ["disk.img"]  # no temporary file left behind


@pytest.mark.parametrize(("args", "message"), [
    (("--size", "4M"), "too small for the layout"),
    (("--size", "4M", "--label", "dos"), None),
    (("--size", "5M"), None),
    (("--size", "1000"), "not a positive multiple of 512"),
    (("--size", "3T", "--label", "dos"), "dos label addresses at most 2 TiB"),
])
def test_mkdisk_sizes(tmp_path: Path, args: tuple[str, ...], message: str | None) -> None:
    out = rinuxfs("mkdisk", "small.img", *args, cwd=tmp_path)
    if message is None:
        assert out.returncode == 0, out.stderr
        assert len(table_of(tmp_path / "small.img").partitions) == 3
        return
    assert out.returncode == 1 and message in out.stderr and out.stderr.count("\n") == 1
    assert not (tmp_path / "small.img").exists()


def test_mkdisk_into_a_missing_directory(tmp_path: Path) -> None:
    out = rinuxfs("mkdisk", "nowhere/disk.img", cwd=tmp_path)
    assert out.returncode == 1 and "no such directory" in out.stderr and "Traceback" not in out.stderr


def test_inspect_errors_are_one_clear_line(images: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.img").touch()
    (tmp_path / "garbage.img").write_bytes(os.urandom(MIB))
    (tmp_path / "short.img").write_bytes((images / "gpt.img").read_bytes()[:1000])
    (tmp_path / "dir.img").mkdir()
    expected = {"missing.img": "no such disk image", "dir.img": "is a directory", "empty.img": "the file is 0 bytes",
                "garbage.img": "no partition table", "short.img": "no header can be read at LBA 1"}
    for name, message in expected.items():
        out = rinuxfs("inspect", name, cwd=tmp_path)
        assert out.returncode == 1, name
        assert message in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr


# --- tables the code shares with the tools ---------------------------------------------------------------


def test_type_names_are_sfdisks() -> None:
    gpt = dict(line.split(None, 1) for line in run("sfdisk", "-T", "--label", "gpt").stdout.splitlines()[2:])
    assert {str(k).upper(): v for k, v in GPT_TYPES.items()} == {k.upper(): v for k, v in gpt.items()}
    dos = dict(line.split(None, 1) for line in run("sfdisk", "-T", "--label", "dos").stdout.splitlines()[2:])
    assert MBR_TYPES == {int(k, 16): v for k, v in dos.items()}


def test_layout_rules() -> None:
    esp, swap, root = plan_layout(1 << 30, "gpt")
    assert (esp.start, esp.size, swap.size, root.start + root.size) == (2048, 100 * 2048, 128 * 2048, 2095104)
    esp, swap, root = plan_layout(64 * MIB, "dos")
    assert (esp.size, swap.size, root.start + root.size) == (8 * 2048, 8 * 2048, 64 * 2048)
    with pytest.raises(UsageError, match="needs at least 5 MiB"):
        plan_layout(4 * MIB, "gpt")
