"""Install a fake distribution (a .dist-info with entry points, plus modules) on sys.path."""

from __future__ import annotations

from pathlib import Path

import pytest


def install_distribution(
    site: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    version: str,
    entry_points: str,
    modules: dict[str, str],
) -> Path:
    """Write ``<name>-<version>.dist-info`` (METADATA, entry_points.txt) and the given
    modules into ``site`` and put it first on sys.path, as an installed package would be."""
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(entry_points)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))
    return site
