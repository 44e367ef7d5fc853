"""Entry-point discovery for methods and dataset formats.

Discovery (reading distribution metadata) is kept apart from loading (importing the object),
as in flake8's plugin finder: listing plugins never imports them, loading imports only the one
asked for, and a plugin that fails to import is reported with its error.
"""

from __future__ import annotations

import dataclasses
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = [
    "DATASETS_GROUP",
    "METHODS_GROUP",
    "Plugin",
    "PluginInfo",
    "PluginLoadError",
    "UnknownPluginError",
    "describe",
    "discover",
    "load",
    "resolve",
]

METHODS_GROUP = "au_lightning.methods"
DATASETS_GROUP = "au_lightning.datasets"


class UnknownPluginError(LookupError):
    """No plugin of that name is registered; the message lists the known names."""


class PluginLoadError(ImportError):
    """A registered plugin failed to import; the message carries the plugin's own error."""


@dataclasses.dataclass(frozen=True)
class Plugin:
    """A registered entry point, not yet imported."""

    name: str
    group: str
    value: str
    distribution: str | None
    version: str | None

    @property
    def entry_point(self) -> EntryPoint:
        return EntryPoint(self.name, self.value, self.group)

    @property
    def class_path(self) -> str:
        """``module.attr`` of the entry point's ``module:attr`` value."""
        return self.value.replace(":", ".")

    @property
    def class_name(self) -> str:
        return self.value.rsplit(":", 1)[-1].rsplit(".", 1)[-1]


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """A plugin as ``au-lightning plugins`` lists it; ``error`` is set if it failed to import."""

    plugin: Plugin
    description: str
    error: str | None = None


def discover(group: str) -> dict[str, Plugin]:
    """All plugins registered under ``group``, by name, without importing any of them."""
    found: dict[str, Plugin] = {}
    for ep in entry_points(group=group):
        dist = getattr(ep, "dist", None)
        found.setdefault(
            ep.name,
            Plugin(
                name=ep.name,
                group=group,
                value=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            ),
        )
    return found


def load(group: str, name: str) -> Any:
    """Import and return the object registered as ``name`` in ``group``."""
    plugins = discover(group)
    if name not in plugins:
        known = ", ".join(sorted(plugins)) or "none"
        kind = "dataset format" if group == DATASETS_GROUP else "plugin"
        raise UnknownPluginError(f"unknown {kind} {name!r}; known: {known}")
    plugin = plugins[name]
    try:
        return plugin.entry_point.load()
    except Exception as err:
        raise PluginLoadError(
            f"{plugin.group} plugin {name!r} ({plugin.value}, from "
            f"{plugin.distribution or 'unknown distribution'}) failed to import: "
            f"{type(err).__name__}: {err}"
        ) from err


def describe(group: str) -> list[PluginInfo]:
    """Every plugin of ``group`` with the first line of its docstring, importing each one; a
    plugin that fails to import is listed with its error, and the others are unaffected."""
    infos = []
    for name, plugin in sorted(discover(group).items()):
        try:
            obj = load(group, name)
        except PluginLoadError as err:
            infos.append(PluginInfo(plugin, "", str(err.__cause__ or err)))
            continue
        doc = (getattr(obj, "__doc__", None) or "").strip()
        infos.append(PluginInfo(plugin, doc.splitlines()[0] if doc else ""))
    return infos


def resolve(group: str, spec: str) -> Plugin:
    """The plugin named by its entry-point name (``maml``), its class name (``MAML``) or its
    full class path (``au_maml.MAML``); anything else lists the known names."""
    plugins = discover(group)
    if spec in plugins:
        return plugins[spec]
    for plugin in plugins.values():
        if spec in (plugin.class_name, plugin.class_path, plugin.value):
            return plugin
    known = ", ".join(f"{p.name} ({p.class_name})" for p in plugins.values()) or "none"
    raise UnknownPluginError(f"unknown plugin {spec!r}; known: {known}")
