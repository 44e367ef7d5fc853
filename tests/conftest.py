"""Fixtures shared by test modules."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One SynthAU/index cache (``AU_LIGHTNING_CACHE``) for a test module, so its tiny
    SynthAU set is generated once and every test of the module reads it."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AU_LIGHTNING_CACHE", str(path))
        yield path


@pytest.fixture
def workdir(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh folder with the module's cache, under the CLI's program name (not
    pytest's arguments), as the CLI tests drive ``main([...])``."""
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(cache))
    monkeypatch.setattr(sys, "argv", ["au-lightning"])
    monkeypatch.chdir(tmp_path)
    return tmp_path
