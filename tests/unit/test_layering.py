"""Data flows one way: the lower layers never import the filesystems, the kernel or the FUSE side.

Read with `ast` from the source tree, every import of every module (inside functions and
TYPE_CHECKING blocks too, relative ones resolved), so a new upward import fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rinuxfs"
UPPER = ("rinuxfs.fs", "rinuxfs.kernel", "rinuxfs.ksysfs", "rinuxfs.fuse", "rinuxfs.daemon", "rinuxfs.cli")
LOWER = ("drivers", "block", "mm", "hw")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; `from a import b` gives a and a.b."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def upward(name: str) -> bool:
    return any(name == upper or name.startswith(upper + ".") for upper in UPPER)


def lower_modules() -> list[Path]:
    return sorted(p for layer in LOWER for p in (PACKAGE / layer).rglob("*.py"))


def test_the_scan_sees_the_lower_layers_and_resolves_imports() -> None:
    files = lower_modules()
    assert {p.relative_to(PACKAGE).parts[0] for p in files} == set(LOWER)
    assert PACKAGE / "drivers" / "base" / "core.py" in files
    rows = dict((name, line) for line, name in imports(PACKAGE / "drivers" / "base" / "__init__.py"))
    assert "rinuxfs.drivers.base.kobject.kobject_create" in rows
    assert upward("rinuxfs.fs.sysfs") and upward("rinuxfs.kernel") and not upward("rinuxfs.kernelish")


@pytest.mark.parametrize("path", lower_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_lower_layer_imports_fs_or_the_kernel(path: Path) -> None:
    bad = [f"line {line}: {name}" for line, name in imports(path) if upward(name)]
    assert not bad, f"{path.relative_to(PACKAGE)} imports an upper layer: {bad}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "lib").rglob("*.py")), ids=lambda p: p.name)
def test_lib_depends_on_nothing_but_errors(path: Path) -> None:
    bad = [name for _, name in imports(path)
           if name.startswith("rinuxfs") and not name.startswith(("rinuxfs.errors", "rinuxfs.lib"))]
    assert not bad, f"lib/{path.name} imports {bad}"
