"""Fixtures shared by test modules."""

from __future__ import annotations

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
