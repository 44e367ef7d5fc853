"""The house rule on plugin imports, checked by AST over every plugin package's source.

A plugin imports the standard library, third-party packages, its own package, and from
au_lightning only the public API: ``au_lightning`` and its subpackages (folders with an
``__init__.py``) and the names their ``__all__`` export. Never a plain module of the core
(``au_lightning.method``), a ``_private`` name, or another plugin.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIRS = (ROOT / "plugins", ROOT / "examples" / "third_party_plugin" / "src")
CORE = "au_lightning"


def plugin_packages(dirs: tuple[Path, ...] = PLUGIN_DIRS) -> dict[str, Path]:
    """Every plugin package (a folder with an ``__init__.py``) under ``dirs``, by name."""
    return {p.parent.name: p.parent for d in dirs for p in sorted(d.glob("*/__init__.py"))}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _public_package(dotted: str) -> ModuleType | None:
    """``au_lightning`` or one of its public subpackages, imported; None for anything else
    (a plain module, a private or missing name)."""
    parts = dotted.split(".")
    if parts[0] != CORE or any(_private(p) for p in parts):
        return None
    try:
        spec = importlib.util.find_spec(dotted)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.submodule_search_locations is None:
        return None
    return importlib.import_module(dotted)


def _exports(module: ModuleType) -> set[str]:
    return set(getattr(module, "__all__", ()))


def _check_name(package: str, name: str) -> str | None:
    """Why ``from package import name`` breaks the rule (``package`` is public), or None."""
    if name == "*" or (name.startswith("__") and name.endswith("__")):
        return None
    if _private(name):
        return f"{name!r} is private"
    if name in _exports(_public_package(package)) or _public_package(f"{package}.{name}"):
        return None
    return f"{name!r} is not in {package}.__all__"


def import_violations(source: str, filename: str, own: str, plugins: set[str]) -> list[str]:
    """The imports in ``source`` that break the plugin import rule, as ``file:line: import:
    reason``. ``own`` is the plugin's package name, ``plugins`` every plugin package's name.

    Also checked: ``importlib.import_module("...")`` with a literal name, and attribute
    access through a name bound by ``import au_lightning[.sub] [as x]`` (``x.method``).
    """
    tree = ast.parse(source, filename)
    bound: dict[str, str] = {}  # local name -> au_lightning package it is bound to
    found: list[str] = []

    def report(node: ast.AST, reason: str | None) -> None:
        if reason:
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}: {reason}")

    def module_reason(dotted: str) -> str | None:
        top = dotted.split(".")[0]
        if top in plugins and top != own:
            return f"imports another plugin ({top})"
        if top == CORE and _public_package(dotted) is None:
            private = next((p for p in dotted.split(".") if _private(p)), None)
            if private:
                return f"{private!r} is private"
            return f"{dotted} is not au_lightning or a subpackage of it (public API only)"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                reason = module_reason(alias.name)
                report(node, reason)
                if not reason and alias.name.split(".")[0] == CORE:
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound[CORE] = CORE
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            reason = module_reason(node.module)
            report(node, reason)
            if not reason and node.module.split(".")[0] == CORE:
                for alias in node.names:
                    report(node, _check_name(node.module, alias.name))
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            report(node, module_reason(node.args[0].value))

    def package_of(expr: ast.expr) -> str | None:
        """The au_lightning package an expression names (``au_lightning.data``), or None."""
        if isinstance(expr, ast.Name):
            return bound.get(expr.id)
        if isinstance(expr, ast.Attribute) and (base := package_of(expr.value)):
            return f"{base}.{expr.attr}" if _public_package(f"{base}.{expr.attr}") else None
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (base := package_of(node.value)):
            report(node, _check_name(base, node.attr))
    return found


def _sources(packages: dict[str, Path]) -> Iterator[tuple[str, Path]]:
    for name, folder in packages.items():
        for file in sorted(folder.rglob("*.py")):
            yield name, file


def test_plugins_import_only_the_public_api() -> None:
    packages = plugin_packages()
    assert {"au_baseline", "au_linear_probe"} <= set(packages), packages
    violations = [
        v
        for own, file in _sources(packages)
        for v in import_violations(
            file.read_text(), str(file.relative_to(ROOT)), own, set(packages)
        )
    ]
    assert not violations, "plugins must import only au_lightning's public API:\n" + "\n".join(
        violations
    )


ALLOWED = """
import os
import torch
from torch import nn
import au_lightning
import au_lightning.data
import au_lightning.data.formats as formats
from au_lightning import AUMethod, __version__, data, registry
from au_lightning.data import FrameIndex, resolve_aus
from au_lightning.data.formats import read_table
from au_lightning.data import formats as fmt
from au_lightning.nn import MultiLabelHead
from mine import net
from mine.net import Net
from . import net
from .net import Net
x = au_lightning.data.FrameIndex
y = formats.read_table
importlib.import_module("au_lightning.nn")
"""

VIOLATIONS = {
    "import au_lightning.method": "not au_lightning or a subpackage",
    "from au_lightning.method import AUMethod": "not au_lightning or a subpackage",
    "from au_lightning.data.index import FrameIndex": "not au_lightning or a subpackage",
    "from au_lightning import method": "'method' is not in au_lightning.__all__",
    "from au_lightning.data import occurrence_from_intensity": "not in au_lightning.data.__all__",
    "from au_lightning.data.formats import _common": "'_common' is private",
    "import au_lightning.data.formats._common": "'_common' is private",
    "from au_lightning import _hidden": "'_hidden' is private",
    "import au_baseline": "another plugin (au_baseline)",
    "from au_baseline.net import BaselineNet": "another plugin (au_baseline)",
    "import au_lightning\nau_lightning.method.AUMethod": "'method' is not in au_lightning.__all__",
    "import au_lightning.data as d\nd.index.FrameIndex": "'index' is not in au_lightning.data",
    "importlib.import_module('au_lightning.cli')": "not au_lightning or a subpackage",
}


@pytest.mark.parametrize("line", VIOLATIONS)
def test_the_checker_catches_each_kind_of_violation(tmp_path: Path, line: str) -> None:
    file = tmp_path / "mine" / "module.py"
    file.parent.mkdir()
    file.write_text(ALLOWED + line + "\n")
    found = import_violations(file.read_text(), str(file), "mine", {"mine", "au_baseline"})
    last = len((ALLOWED + line).splitlines())
    assert len(found) == 1, found
    assert found[0].startswith(f"{file}:{last}: ") and VIOLATIONS[line] in found[0], found


def test_the_checker_allows_the_public_api_and_the_own_package(tmp_path: Path) -> None:
    assert import_violations(ALLOWED, "allowed.py", "mine", {"mine", "au_baseline"}) == []
    (tmp_path / "au_a").mkdir()
    (tmp_path / "au_a" / "__init__.py").write_text("import au_b\n")
    (tmp_path / "notes").mkdir()
    packages = plugin_packages((tmp_path,))
    assert set(packages) == {"au_a"}
    file = packages["au_a"] / "__init__.py"
    assert import_violations(file.read_text(), "x.py", "au_a", {"au_a", "au_b"}) == [
        "x.py:1: import au_b: imports another plugin (au_b)"
    ]
