"""Kobjects: the named directories of the device tree, with their attributes, groups and links.

Contract:
- A Kobject has a name and, once added, a parent. `entries` maps each name in its directory
  to what /sys shows there: a child Kobject (a directory), an AttributeGroup (a directory of
  attributes that belongs to its kobject, like `queue/` or `power/`), an Attribute (a file) or
  a Link (a symlink to another kobject). A name is unique within a directory: adding a second
  entry of that name is EEXIST, as sysfs_create_file says.
- `kobject_add(kobj, parent)` puts a kobject in its parent's directory; from then on the tree
  shows it with everything it holds, whenever that was added (before or after). `kobject_del`
  takes it out again: it and all below it disappear at once (lookups give ENOENT, files still
  open give ENODEV). A deleted kobject is not added again; make a new one.
- An Attribute is a `show()` returning the whole text and, if writable, a `store(text)` that
  receives the text written and raises KernelError(EINVAL or ERANGE) for a bad value. Its mode
  is 0644 with a store and 0444 without, unless given.
- A Link names its target kobject, not a path: the text of the symlink is computed from where
  both sit when it is read (sysfs_create_link).
- `kobject_uevent` counts an event on the root (the uevent_seqnum /sys/kernel shows) and tells
  the root's listeners. Every removal of a name from a directory (kobject_del, `remove`,
  sysfs_remove_link) tells the root's `removal_listeners` (the directory, the name), so a view
  that handed the name out can take it back at once, as kernfs's dentries go with their node.
- Nothing here knows a filesystem: fs/sysfs.py renders this tree. The tree holds only what was
  registered, so its size follows the devices, never the machine's configuration.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field

from rinuxfs.errors import KernelError

Show = Callable[[], str]
Store = Callable[[str], None]
UeventListener = Callable[[str, "Kobject"], None]
RemovalListener = Callable[["Kobject", str], None]


@dataclass(eq=False)
class Attribute:
    """A file of a kobject's directory (struct attribute with its show/store)."""

    name: str
    show: Show
    store: Store | None = None
    mode: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.mode < 0:
            self.mode = 0o644 if self.store is not None else 0o444


@dataclass(eq=False)
class Link:
    """A symlink in a kobject's directory to another kobject (sysfs_create_link)."""

    name: str
    target: Kobject


def const(text: str) -> Show:
    """A show callback for an attribute whose text never changes."""
    return lambda: text


class Kobject:
    def __init__(self, name: str) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise KernelError(errno.EINVAL, f"bad kobject name {name!r}")
        self.name = name
        self.parent: Kobject | None = None
        self.entries: dict[str, Kobject | Attribute | Link] = {}
        self.in_sysfs = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} /sys/{self.path}>"

    @property
    def path(self) -> str:
        """Where it sits below /sys: "devices/system/cpu" ("" for the root)."""
        names: list[str] = []
        node: Kobject | None = self
        while node is not None and node.parent is not None:
            names.append(node.name)
            node = node.parent
        return "/".join(reversed(names))

    def is_live(self) -> bool:
        """True while it and every ancestor up to the root are in the tree."""
        node: Kobject = self
        while node.parent is not None:
            if not node.in_sysfs:
                return False
            node = node.parent
        return node.in_sysfs

    def root(self) -> Kobject:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    # --- what a directory holds ----------------------------------------------------------

    def add_attr(self, name: str, show: Show, store: Store | None = None, mode: int | None = None) -> Attribute:
        """sysfs_create_file: a file `name` rendered by `show`, written through `store`."""
        attribute = Attribute(name, show, store, -1 if mode is None else mode)
        self._add_entry(name, attribute)
        return attribute

    def add_group(self, name: str) -> AttributeGroup:
        """sysfs_create_group with a name: the subdirectory `name` for attributes of this kobject."""
        group = AttributeGroup(name)
        kobject_add(group, self)
        return group

    def remove(self, name: str) -> None:
        """sysfs_remove_file / sysfs_remove_group / sysfs_remove_link: nothing happens if absent."""
        entry = self.entries.get(name)
        if isinstance(entry, Kobject):
            kobject_del(entry)
        elif self.entries.pop(name, None) is not None:
            _entry_removed(self, name)

    def _add_entry(self, name: str, entry: Kobject | Attribute | Link) -> None:
        if name in self.entries:
            raise KernelError(errno.EEXIST, f"/sys/{self.path}/{name} already exists")
        self.entries[name] = entry


class AttributeGroup(Kobject):
    """A named group of a kobject's attributes: a directory without a kobject of its own in Linux."""


class KobjectRoot(Kobject):
    """The top of the tree (/sys itself): always live, and where uevents are counted."""

    def __init__(self) -> None:
        super().__init__("sys")
        self.in_sysfs = True
        self.uevent_seqnum = 0
        self.uevent_listeners: list[UeventListener] = []
        self.removal_listeners: list[RemovalListener] = []


def _entry_removed(directory: Kobject, name: str) -> None:
    root = directory.root()
    if isinstance(root, KobjectRoot):
        for listener in list(root.removal_listeners):
            listener(directory, name)


def kobject_add(kobj: Kobject, parent: Kobject) -> Kobject:
    """Put `kobj` in `parent`'s directory (EEXIST if the name is taken there)."""
    if kobj.parent is not None or kobj.in_sysfs:
        raise KernelError(errno.EBUSY, f"{kobj!r} was added before")
    parent._add_entry(kobj.name, kobj)
    kobj.parent = parent
    kobj.in_sysfs = True
    return kobj


def kobject_create(name: str, parent: Kobject) -> Kobject:
    """kobject_create_and_add: a plain directory `name` in `parent`."""
    return kobject_add(Kobject(name), parent)


def kobject_del(kobj: Kobject) -> None:
    """Take `kobj`, and with it everything below, out of the tree."""
    parent = kobj.parent
    if parent is not None and parent.entries.get(kobj.name) is kobj:
        del parent.entries[kobj.name]
        _entry_removed(parent, kobj.name)
    kobj.in_sysfs = False


def kobject_uevent(kobj: Kobject, action: str) -> None:
    """Count a uevent (add, remove, change, …) for `kobj` and tell the root's listeners."""
    root = kobj.root()
    if isinstance(root, KobjectRoot):
        root.uevent_seqnum += 1
        for listener in list(root.uevent_listeners):
            listener(action, kobj)


def sysfs_create_link(kobj: Kobject, name: str, target: Kobject) -> Link:
    """A symlink `name` in `kobj`'s directory to `target` (EEXIST if the name is taken)."""
    link = Link(name, target)
    kobj._add_entry(name, link)
    return link


def sysfs_remove_link(kobj: Kobject, name: str) -> None:
    if isinstance(kobj.entries.get(name), Link):
        del kobj.entries[name]
        _entry_removed(kobj, name)
