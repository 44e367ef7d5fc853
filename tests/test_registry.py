"""Dataset formats are found through entry points, as a third party's would be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from au_lightning.data import cached_read, read_dataset
from au_lightning.registry import (
    DATASETS_GROUP,
    METHODS_GROUP,
    PluginLoadError,
    UnknownPluginError,
    describe,
    discover,
    load,
    resolve,
)
from tests.distributions import install_distribution

BUILT_IN = {"affectnet", "bp4d", "bp4dplus", "disfa", "emotionet", "rafdb", "table"}


def test_built_in_readers_are_registered_by_the_distribution() -> None:
    found = discover(DATASETS_GROUP)
    assert set(found) >= BUILT_IN
    for name in BUILT_IN:
        assert found[name].distribution == "au-lightning"
        assert found[name].value.startswith(f"au_lightning.data.formats.{name}:read_")


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution (a .dist-info with entry_points.txt) on a temporary path."""
    install_distribution(
        tmp_path / "site",
        monkeypatch,
        "my-au-formats",
        "1.2",
        "[au_lightning.datasets]\n"
        "lines = my_au_formats:read_lines\n"
        "broken = my_au_formats_broken:read\n",
        {
            "my_au_formats": "import numpy as np\n"
            "from au_lightning.data import FrameIndex\n"
            "def read_lines(root, aus=(12,)):\n"
            "    names = open(f'{root}/list.txt').read().split()\n"
            "    n = len(names)\n"
            "    return FrameIndex.from_columns(path=names, subject=names, video=names,\n"
            "        frame=np.zeros(n), aus=aus, occurrence=np.ones((n, len(aus))),"
            " dataset='lines')\n",
            "my_au_formats_broken": "import a_module_that_is_not_installed\n",
        },
    )
    return tmp_path


def test_third_party_format_is_discovered_and_read(third_party: Path) -> None:
    plugin = discover(DATASETS_GROUP)["lines"]
    assert (plugin.distribution, plugin.version) == ("my-au-formats", "1.2")
    (third_party / "list.txt").write_text("a.png b.png")
    index = read_dataset("lines", third_party)
    assert index.path.tolist() == ["a.png", "b.png"] and index.dataset == "lines"
    np.testing.assert_array_equal(index.occurrence, [[1], [1]])


def test_a_broken_plugin_is_reported_and_the_others_still_work(third_party: Path) -> None:
    with pytest.raises(PluginLoadError, match=r"'broken'.*my-au-formats.*a_module_that_is_not"):
        load(DATASETS_GROUP, "broken")
    assert callable(load(DATASETS_GROUP, "lines"))
    with pytest.raises(UnknownPluginError, match=r"known: .*broken.*lines"):
        load(DATASETS_GROUP, "linez")


@pytest.fixture
def method_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution registering two methods, one of which cannot be imported."""
    return install_distribution(
        tmp_path / "site",
        monkeypatch,
        "my-au-methods",
        "0.3",
        "[au_lightning.methods]\ntoy = my_au_methods:ToyMethod\nbad = my_au_methods_bad:Bad\n",
        {
            "my_au_methods": 'class ToyMethod:\n    """A toy AU method.\n\n    More."""\n',
            "my_au_methods_bad": "raise RuntimeError('half-installed')\n",
        },
    )


def test_describe_lists_methods_and_reports_the_broken_one(method_plugins: Path) -> None:
    infos = {i.plugin.name: i for i in describe(METHODS_GROUP)}
    toy = infos["toy"]
    assert (toy.description, toy.error) == ("A toy AU method.", None)
    assert (toy.plugin.distribution, toy.plugin.version) == ("my-au-methods", "0.3")
    assert "half-installed" in infos["bad"].error and infos["bad"].description == ""


def test_resolve_by_name_class_name_or_class_path(method_plugins: Path) -> None:
    for spec in ("toy", "ToyMethod", "my_au_methods.ToyMethod", "my_au_methods:ToyMethod"):
        assert resolve(METHODS_GROUP, spec).class_path == "my_au_methods.ToyMethod"
    with pytest.raises(
        UnknownPluginError, match=r"unknown plugin 'Toy'; known: .*toy \(ToyMethod\)"
    ):
        resolve(METHODS_GROUP, "Toy")


def test_an_index_without_sources_is_read_afresh_not_cached(third_party: Path) -> None:
    root, cache = third_party / "lines", third_party / "cache"
    root.mkdir()
    (root / "list.txt").write_text("a b")
    assert len(cached_read("lines", root, directory=cache)) == 2
    (root / "list.txt").write_text("a b c")
    assert len(cached_read("lines", root, directory=cache)) == 3
    assert not list(cache.glob("*.npz"))
