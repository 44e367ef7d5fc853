"""The example third-party plugin is found through its own distribution metadata and trains.

The ``.dist-info`` is written from ``examples/third_party_plugin/pyproject.toml`` itself, so
a wrong entry point there (group, name or ``module:attr``) fails this test.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from au_lightning.cli import main
from tests.distributions import install_distribution

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "third_party_plugin"
PROJECT = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
METHODS = PROJECT["entry-points"]["au_lightning.methods"]

TINY = [
    "--data.synth={subjects: 6, videos: 1, frames: 8, size: 32, seed: 1, workers: 1}",
    "--data.image_size=32",
    "--data.crop_size=28",
    "--data.batch_size=8",
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.default_root_dir=runs",
]


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example distribution installed on a temporary path: its metadata and entry points
    from its pyproject.toml, its package copied from ``src``; run from ``tmp_path``.

    The package is copied rather than ``src`` put on sys.path, so that the metadata of an
    earlier ``pip install -e`` (an ``.egg-info`` left in ``src``) cannot stand in for ours."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "src" / "au_linear_probe", site / "au_linear_probe")
    entry_points = "[au_lightning.methods]\n" + "".join(
        f"{name} = {value}\n" for name, value in METHODS.items()
    )
    install_distribution(site, monkeypatch, PROJECT["name"], PROJECT["version"], entry_points, {})
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for module in [m for m in sys.modules if m.split(".")[0] == "au_linear_probe"]:
        del sys.modules[module]


def test_the_example_registers_one_method() -> None:
    assert METHODS == {"linear-probe": "au_linear_probe:LinearProbe"}
    assert "au-lightning" in PROJECT["dependencies"][0]


def test_plugins_lists_the_example_with_its_distribution(example: Path, capsys) -> None:
    main(["plugins"])
    out = capsys.readouterr().out
    line = next((ln for ln in out.splitlines() if ln.strip().startswith("linear-probe ")), None)
    assert line is not None, out
    assert "au_linear_probe.LinearProbe" in line
    assert f"{PROJECT['name']} {PROJECT['version']}" in line
    assert "A linear AU probe on average-pooled pixels" in line
    assert "FAILED" not in out


def test_the_example_config_trains_and_leaves_a_checkpoint(example: Path) -> None:
    main(["fit", "--config", str(EXAMPLE / "configs" / "linear_probe.yaml"), *TINY])
    checkpoints = sorted(Path("runs").rglob("*.ckpt"))
    assert {c.name for c in checkpoints} == {"best.ckpt", "last.ckpt"}, checkpoints
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["grid"] == 8
    assert state["state_dict"]["net.linear.weight"].shape == (12, 3 * 8 * 8)
