"""The driver core on its own: kobjects, attributes, groups, links, devices, buses, classes, debugfs.

Paths and link targets are those Linux's drivers/base makes for the same registrations; the
renderer (fs/sysfs.py) is tested through a mount elsewhere.
"""

from __future__ import annotations

import errno

import pytest

from rinuxfs.drivers.base import (
    Device,
    DriverCore,
    Kobject,
    Link,
    debugfs_create_dir,
    debugfs_create_file,
    debugfs_remove,
    device_register,
    device_unregister,
    kobject_create,
    kobject_del,
    sysfs_create_link,
)
from rinuxfs.errors import KernelError


def tree(kobj: Kobject, prefix: str = "") -> dict[str, str]:
    """Every entry below `kobj` as path -> kind (dir, file, or the link's target path)."""
    rows: dict[str, str] = {}
    for name, entry in kobj.entries.items():
        path = f"{prefix}{name}"
        if isinstance(entry, Kobject):
            rows[path] = "dir"
            rows.update(tree(entry, path + "/"))
        elif isinstance(entry, Link):
            rows[path] = "-> " + entry.target.path
        else:
            rows[path] = "file"
    return rows


def test_the_well_known_roots() -> None:
    core = DriverCore()
    assert list(core.root.entries) == ["block", "bus", "class", "dev", "devices", "firmware", "fs", "kernel",
                                       "module", "power"]
    assert core.mm_kobj.path == "kernel/mm" and core.system.path == "devices/system"
    assert core.dev_block.path == "dev/block" and core.dev_char.path == "dev/char"
    assert core.find("kernel/debug") is not None and core.find("kernel/nothing") is None


def test_attributes_groups_and_name_clashes() -> None:
    core = DriverCore()
    kobj = kobject_create("thing", core.kernel_kobj)
    value = {"n": 1}

    def store(text: str) -> None:
        value["n"] = int(text)

    ro = kobj.add_attr("ro", lambda: "x\n")
    rw = kobj.add_attr("rw", lambda: f"{value['n']}\n", store)
    secret = kobj.add_attr("secret", lambda: "s\n", mode=0o400)
    assert (ro.mode, rw.mode, secret.mode) == (0o444, 0o644, 0o400)
    assert rw.store is not None
    rw.store("5")
    assert rw.show() == "5\n"
    group = kobj.add_group("queue")
    group.add_attr("depth", lambda: "32\n")
    assert group.path == "kernel/thing/queue"
    for clash in (lambda: kobj.add_attr("ro", lambda: ""), lambda: kobj.add_group("queue"),
                  lambda: kobject_create("rw", kobj), lambda: sysfs_create_link(kobj, "secret", core.devices)):
        with pytest.raises(KernelError) as e:
            clash()
        assert e.value.errno == errno.EEXIST
    kobj.remove("ro")
    kobj.remove("queue")
    assert list(kobj.entries) == ["rw", "secret"] and not group.is_live()


def test_deleting_a_kobject_takes_its_subtree_out() -> None:
    core = DriverCore()
    a = kobject_create("a", core.kernel_kobj)
    b = kobject_create("b", a)
    assert b.is_live()
    kobject_del(a)
    assert not a.is_live() and not b.is_live()
    assert "a" not in core.kernel_kobj.entries
    with pytest.raises(KernelError) as e:
        Kobject("no/slash")
    assert e.value.errno == errno.EINVAL


def _nvme_like(core: DriverCore) -> tuple[Device, Device, Device]:
    pci_bus = core.bus_register("pci")
    host = device_register(Device("pci0000:00", core.devices))
    pci = device_register(Device("0000:00:04.0", host, bus=pci_bus, driver=pci_bus.driver_register("nvme")))
    ctrl = device_register(Device("nvme0", pci, cls=core.class_register("nvme"), devt=(240, 0)))
    disk = device_register(Device("nvme0n1", ctrl, cls=core.class_register("block", block=True), devt=(259, 0),
                                  devtype="disk", uevent=lambda: ["DISKSEQ=1"]))
    return pci, ctrl, disk


def test_devices_land_where_linux_puts_them_with_their_links() -> None:
    core = DriverCore()
    before = tree(core.root)
    pci, ctrl, disk = _nvme_like(core)
    assert pci.path == "devices/pci0000:00/0000:00:04.0"
    assert ctrl.path == "devices/pci0000:00/0000:00:04.0/nvme/nvme0"  # the class glue directory
    assert disk.path == ctrl.path + "/nvme0n1"  # a class device under a class device: no glue
    rows = tree(core.root)
    assert rows["bus/pci/devices/0000:00:04.0"] == "-> " + pci.path
    assert rows["bus/pci/drivers/nvme/0000:00:04.0"] == "-> " + pci.path
    assert rows[pci.path + "/driver"] == "-> bus/pci/drivers/nvme"
    assert rows[pci.path + "/subsystem"] == "-> bus/pci"
    assert rows["class/nvme/nvme0"] == "-> " + ctrl.path
    assert rows[ctrl.path + "/device"] == "-> " + pci.path
    assert rows[ctrl.path + "/subsystem"] == "-> class/nvme"
    assert rows["dev/char/240:0"] == "-> " + ctrl.path
    assert rows["dev/block/259:0"] == "-> " + disk.path
    assert rows[disk.path + "/device"] == "-> " + ctrl.path
    assert rows[disk.path + "/power/control"] == "file"
    assert disk.render_uevent() == "MAJOR=259\nMINOR=0\nDEVNAME=nvme0n1\nDEVTYPE=disk\nDISKSEQ=1\n"
    assert pci.render_uevent() == "DRIVER=nvme\n"
    dev_attr = disk.entries["dev"]
    assert not isinstance(dev_attr, Kobject | Link) and dev_attr.show() == "259:0\n"
    seq = core.uevent_seqnum
    assert seq == 4  # one "add" per device

    for dev in (disk, ctrl, pci):
        device_unregister(dev)
    assert core.uevent_seqnum == seq + 3
    host = core.find("devices/pci0000:00")
    assert isinstance(host, Device)
    device_unregister(host)
    after = tree(core.root)
    # Only what registration itself keeps is left: the bus, its driver and the classes.
    assert set(after) - set(before) == {"bus/pci", "bus/pci/devices", "bus/pci/drivers", "bus/pci/drivers/nvme",
                                        "class/nvme", "class/block"}
    assert not disk.is_live() and not ctrl.is_live()


def test_a_partition_has_no_device_link_and_a_glue_dir_goes_with_its_last_device() -> None:
    core = DriverCore()
    block = core.class_register("block", block=True)
    scsi = core.bus_register("scsi")
    sdev = device_register(Device("0:0:0:0", core.devices, bus=scsi))
    sda = device_register(Device("sda", sdev, cls=block, devt=(8, 0), devtype="disk"))
    sda1 = device_register(Device("sda1", sda, cls=block, devt=(8, 1), devtype="partition"))
    assert sda.path == "devices/0:0:0:0/block/sda" and sda1.path == "devices/0:0:0:0/block/sda/sda1"
    assert "device" in sda.entries and "device" not in sda1.entries
    device_unregister(sda1)
    device_unregister(sda)
    assert "block" not in sdev.entries  # the glue directory left with sda
    assert set(core.dev_block.entries) == set() and set(block.entries) == set()


def test_uevent_store_takes_actions_only() -> None:
    core = DriverCore()
    dev = device_register(Device("x", core.devices))
    seq = core.uevent_seqnum
    dev.store_uevent("change\n")
    assert core.uevent_seqnum == seq + 1
    with pytest.raises(KernelError) as e:
        dev.store_uevent("explode")
    assert e.value.errno == errno.EINVAL


def test_power_control_accepts_auto_and_on() -> None:
    core = DriverCore()
    dev = device_register(Device("x", core.devices))
    power = dev.entries["power"]
    assert isinstance(power, Kobject)
    control = power.entries["control"]
    assert not isinstance(control, Kobject | Link) and control.store is not None
    control.store("on\n")
    assert control.show() == "on\n"
    with pytest.raises(KernelError) as e:
        control.store("off")
    assert e.value.errno == errno.EINVAL


def test_debugfs_tree() -> None:
    core = DriverCore()
    d = debugfs_create_dir("fail_make_request", core.debugfs)
    f = debugfs_create_file("probability", 0o600, d, lambda: "0\n")
    assert f.is_live() and d.is_live()
    with pytest.raises(KernelError) as e:
        debugfs_create_file("probability", 0o600, d, lambda: "")
    assert e.value.errno == errno.EEXIST
    debugfs_remove(d)
    assert not d.is_live() and not f.is_live() and not core.debugfs.entries


def test_every_removal_tells_the_roots_listeners_the_directory_and_the_name() -> None:
    """What a view needs to take a name back from the host at once (a device deleted, then found again)."""
    core = DriverCore()
    heard: list[tuple[str, str]] = []
    core.root.removal_listeners.append(lambda directory, name: heard.append((directory.path, name)))
    block = core.class_register("block", block=True)
    sdev = device_register(Device("0:0:0:0", core.devices))
    sda = device_register(Device("sda", sdev, cls=block, devt=(8, 0), devtype="disk"))
    sda.add_attr("size", lambda: "0\n")
    sda.remove("size")
    sda.remove("size")  # absent: nothing to tell
    device_unregister(sda)
    assert heard == [("devices/0:0:0:0/block/sda", "size"), ("dev/block", "8:0"), ("class/block", "sda"),
                     ("devices/0:0:0:0/block", "sda"), ("devices/0:0:0:0", "block")]
    debug: list[tuple[str, str]] = []
    core.debugfs.removal_listeners.append(lambda directory, name: debug.append((directory.name, name)))
    d = debugfs_create_dir("nvme0n1", core.debugfs)
    fault = debugfs_create_dir("fault_inject", d)
    debugfs_remove(debugfs_create_file("status", 0o600, fault, lambda: "0x0001\n"))
    debugfs_remove(d)
    assert debug == [("fault_inject", "status"), ("", "nvme0n1")]
