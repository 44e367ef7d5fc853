"""Every shipped config survives the first thing users try (issue 23, item 10): a few steps
(``--trainer.max_steps 2``, which ends inside the first epoch, before any validation) and
``--trainer.fast_dev_run true``. Only the data is made tiny; the configs' methods, data
modules and callbacks (early stopping, checkpoints, analyses) are the shipped ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from au_lightning.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SYNTH = "{subjects: 6, videos: 1, frames: 48, size: 64, seed: 0, workers: 1}"
#: MAML's episodes need shots + query_shots positives and negatives of every AU in every
#: subject
LONGER = "{subjects: 6, videos: 3, frames: 60, size: 64, seed: 0, workers: 1}"
AUX = "{images: 60, size: 64, seed: 0, workers: 1}"
IMAGES = ["--data.image_size=64", "--data.crop_size=56"]
#: what a config needs besides the tiny SynthAU set: its other data sets made tiny too,
#: sizes the model is built for, and no pretext checkpoint (the transfer configs'
#: ``pretrained`` is a file that their pretext config writes first)
EXTRA: dict[str, list[str]] = {
    **{
        name: [f"--data.aux_synth={AUX}", "--data.aux_batch_size=16"]
        for name in ("mal", "mtl", "stl")
    },
    "maml_cross": [f"--data.test_synth={LONGER}"],
    # a fixed graph needs each row of the AU correlations to sum to 0.1 (Eq. 5 divides by
    # it), which 288 frames of all 12 AUs do not give: AUs that co-occur
    "renet": ["--model.aus=[1, 2, 6, 12]", "--data.aus=[1, 2, 6, 12]"],
    # ANet needs at least 63 px
    "hybrid": ["--data.crop_size=64", "--model.in_size=64"],
    "transfer": ["--model.in_size=56", "--model.pretrained=false"],
    "transfer_bp4d": ["--model.in_size=56", "--model.pretrained=false"],
    "transfer_pretrain_identity": ["--model.in_size=56"],
    "transfer_pretrain_expression": ["--model.in_size=56"],
}
NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml"))

pytestmark = pytest.mark.slow  # about 3 minutes on 2 cores, most of it MAML's


def tiny_data(name: str) -> list[str]:
    """The options that make config ``name``'s data tiny; MAML's configs keep their own
    image sizes (its Conv4's FC layer is built for them)."""
    if name == "transfer_pretrain_expression":  # an expression set: images, no subjects
        return [f"--data.synth={AUX}", *IMAGES, *EXTRA[name]]
    maml = name.startswith("maml")
    synth = LONGER if maml else SYNTH
    # MAML: one test and validation episode per task, not the configs' 20 and 4
    sizes = ["--data.repeats=1", "--data.val_repeats=1"] if maml else IMAGES
    return [f"--data.synth={synth}", *sizes, *EXTRA.get(name, [])]


def test_every_shipped_config_is_covered() -> None:
    assert len(NAMES) >= 16 and set(EXTRA) <= set(NAMES)


@pytest.mark.parametrize("how", ["--trainer.max_steps=2", "--trainer.fast_dev_run=true"])
@pytest.mark.parametrize("name", NAMES)
def test_a_smoke_run_of_every_config(name: str, how: str, workdir: Path) -> None:
    config = CONFIGS / f"{name}.yaml"
    main(["fit", "--config", str(config), *tiny_data(name), how,
          "--trainer.enable_progress_bar=false", "--trainer.default_root_dir=runs"])  # fmt: skip
    # fast_dev_run writes no checkpoint, by design; 2 steps leave the config's last.ckpt
    if how.endswith("max_steps=2") and "filename: last" in config.read_text():
        [last] = Path("runs").rglob("last.ckpt")
        assert torch.load(last, weights_only=True, mmap=True)["global_step"] == 2
