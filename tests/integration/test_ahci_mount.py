"""End to end over AHCI: `rinuxfs mount --controller ahci`, then real tools and syscalls on the mount.

The image comes from `rinuxfs mkdisk` with random bytes written into its first partition, so a
read through /dev/sda1 is checked against the image file itself; where the partitions are is
sfdisk's answer, not rinuxfs's. lsblk must see the disk as
Linux shows a SATA disk behind ahci: sda 8:0, TRAN sata, HCTL 0:0:0:0, the INQUIRY model.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import mount, rinuxfs
from tests.integration.storage_helpers import sfdisk_json

MIB = 1 << 20
SECTOR = 512


def ahci_interrupts(mountpoint: Path) -> int:
    for line in (mountpoint / "proc/interrupts").read_text().splitlines():
        if line.rstrip().endswith("ahci[0000:00:1f.2]"):
            fields = line.split()
            return sum(int(v) for v in fields[1:-3])
    raise AssertionError("no ahci line in /proc/interrupts")


def test_mount_over_ahci_shows_a_sata_disk_and_reads_the_image(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    rinuxfs("mkdisk", str(image), "--size", "64M")
    parts = [(p["start"], p["size"]) for p in sfdisk_json(image)["partitions"]]  # sfdisk is the oracle
    start, size = parts[0]
    payload = os.urandom(size * SECTOR)
    with open(image, "r+b") as f:
        f.seek(start * SECTOR)
        f.write(payload)

    with mount(image, tmp_path / "mnt", "--controller", "ahci") as m:
        before = ahci_interrupts(m.path)
        assert (m / "dev/sda1").read_bytes() == payload
        assert ahci_interrupts(m.path) > before  # the reads went to the disk, each completion an interrupt

        third_start, third_size = parts[2]
        with open(m / "dev/sda3", "rb") as f:
            f.seek(5 * MIB + 512)
            got = f.read(3 * MIB)
        with open(image, "rb") as f:
            f.seek(third_start * SECTOR + 5 * MIB + 512)
            assert got == f.read(3 * MIB)

        written = os.urandom(MIB)
        fd = os.open(m / "dev/sda3", os.O_WRONLY)
        try:
            os.pwrite(fd, written, 2 * MIB)
            os.fsync(fd)
        finally:
            os.close(fd)
        with open(image, "rb") as f:
            f.seek(third_start * SECTOR + 2 * MIB)
            assert f.read(MIB) == written

        assert (m / "sys/block/sda/device/model").read_text() == "rinuxfs SATA SSD\n"
        assert (m / "sys/class/scsi_host/host0/proc_name").read_text() == "ahci\n"
        assert os.readlink(m / "sys/block/sda/device") == "../../../0:0:0:0"

        out = subprocess.run(["lsblk", "--sysroot", str(m.path), "-J", "-b", "-o",
                              "NAME,MAJ:MIN,SIZE,TYPE,TRAN,HCTL,MODEL"],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        (disk,) = json.loads(out)["blockdevices"]
        assert (disk["name"], disk["maj:min"], disk["type"], disk["tran"], disk["hctl"], disk["model"]) == (
            "sda", "8:0", "disk", "sata", "0:0:0:0", "rinuxfs SATA SSD")
        assert int(disk["size"]) == 64 * MIB
        children = [(c["name"], c["maj:min"], c["type"], int(c["size"])) for c in disk["children"]]
        assert children == [(f"sda{i}", f"8:{i}", "part", n * SECTOR) for i, (_, n) in enumerate(parts, 1)]
