"""Every shipped config survives the first thing users try (issue 23, item 10): a few steps
(``--trainer.max_steps 2``, which ends inside the first epoch, before any validation) and
``--trainer.fast_dev_run true``. Only the data is made tiny; the configs' methods, data
modules and callbacks (early stopping, checkpoints, analyses) are the shipped ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from au_lightning.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SYNTH = "{subjects: 6, videos: 1, frames: 48, size: 64, seed: 0, workers: 1}"
IMAGES = ["--data.image_size=64", "--data.crop_size=56"]
TINY = [f"--data.synth={SYNTH}", *IMAGES]
#: what each config needs besides TINY: its other data sets made tiny, ``in_size`` at the
#: crop, and no pretext checkpoint (the transfer configs' ``pretrained`` is a file that
#: their pretext config writes first)
EXTRA: dict[str, list[str]] = {
    "mal": ["--data.aux_synth={images: 60, size: 64, seed: 0, workers: 1}"],
    "mtl": ["--data.aux_synth={images: 60, size: 64, seed: 0, workers: 1}"],
    "stl": ["--data.aux_synth={images: 60, size: 64, seed: 0, workers: 1}"],
    "maml_cross": [f"--data.test_synth={SYNTH}"],
    "hybrid": ["--model.in_size=56"],
    "transfer": ["--model.in_size=56", "--model.pretrained=false"],
    "transfer_bp4d": ["--model.in_size=56", "--model.pretrained=false"],
    "transfer_pretrain_identity": ["--model.in_size=56"],
}
#: an expression data set: no subjects, videos or frames
OWN_DATA: dict[str, list[str]] = {
    "transfer_pretrain_expression": [
        "--data.synth={images: 60, size: 64, seed: 0, workers: 1}",
        *IMAGES,
        "--model.in_size=56",
    ],
}
NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def test_every_shipped_config_is_covered() -> None:
    assert len(NAMES) >= 16 and set(EXTRA) | set(OWN_DATA) <= set(NAMES)


@pytest.mark.parametrize("how", ["--trainer.max_steps=2", "--trainer.fast_dev_run=true"])
@pytest.mark.parametrize("name", NAMES)
def test_a_smoke_run_of_every_config(name: str, how: str, workdir: Path) -> None:
    data = OWN_DATA.get(name, [*TINY, *EXTRA.get(name, [])])
    main(["fit", "--config", str(CONFIGS / f"{name}.yaml"), *data, how,
          "--trainer.enable_progress_bar=false", "--trainer.default_root_dir=runs"])  # fmt: skip
    written = list(Path("runs").rglob("*.ckpt"))
    if how.endswith("max_steps=2"):  # fast_dev_run writes no checkpoint, by design
        assert written, f"{name}: a fit of 2 steps should leave its last checkpoint"
