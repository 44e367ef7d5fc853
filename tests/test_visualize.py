"""The AU visualization of Chu et al. Sec. 6 (Eq. 3): gradient ascent with Yosinski et al.'s
regularization on a hand-built model whose best images are known, and ``au-lightning
visualize`` on the checkpoint of a tiny fit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from au_lightning import (
    ConfigError,
    au_visualizations,
    load_method,
    to_uint8,
    write_visualizations,
)
from au_lightning.cli import main
from tests.test_cli import DATA, TRAINER, plugin  # noqa: F401 (a fixture, used by name)

SIZE = 32


class Halves(nn.Module):
    """AU 0's logit: the mean of the red channel in the image's top half minus that in its
    bottom half; AU 1's the reverse. A dropout (identity in eval mode) and the modes seen by
    ``forward`` show that the model is evaluated in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        self.dropout = nn.Dropout(0.5)
        self.seen_training: set[bool] = set()

    def forward(self, images: Tensor) -> Tensor:
        self.seen_training.add(self.training)
        red = self.dropout(images[:, 0])
        half = red.shape[1] // 2
        diff = red[:, :half].mean(dim=(1, 2)) - red[:, half:].mean(dim=(1, 2))
        return self.gain * torch.stack([diff, -diff], dim=1)


def _visualize(model: nn.Module | None = None, steps: int = 60, **options: float) -> Tensor:
    return au_visualizations(model or Halves(), num_aus=2, size=SIZE, steps=steps, **options)


def _zero_fraction(images: Tensor) -> Tensor:
    """Per image, the fraction of its pixels whose norm over the channels is 0."""
    return (images.norm(dim=1) == 0).flatten(1).float().mean(dim=1)


def test_each_image_raises_its_own_logit_with_the_expected_pattern() -> None:
    model = Halves()
    start = au_visualizations(model, 2, SIZE, steps=0)
    images = _visualize(model)
    with torch.no_grad():
        before, after = model(start).diagonal(), model(images).diagonal()
    assert before.abs().max() < 0.1, "the start image is zero-centred noise"
    assert (after > before + 2.0).all(), (before, after)
    half = SIZE // 2
    red = images[:, 0]
    assert red[0, :half].mean() > red[0, half:].mean() + 2.0  # AU 0: bright red top half
    assert red[1, half:].mean() > red[1, :half].mean() + 2.0  # AU 1: the reverse
    shown = to_uint8(images).astype(float)  # (L, H, W, 3) RGB as saved
    assert shown[0, :half, :, 0].mean() > shown[0, half:, :, 0].mean() + 100
    assert shown[1, half:, :, 0].mean() > shown[1, :half, :, 0].mean() + 100


def test_model_parameters_and_modes_are_left_as_they_were() -> None:
    model = Halves()
    model.train()
    model.dropout.eval()  # modes differing between modules are restored module by module
    _visualize(model)
    assert model.seen_training == {False}, "the model should be evaluated in eval mode"
    assert model.training and not model.dropout.training
    assert model.gain.item() == 1.0 and model.gain.grad is None and model.gain.requires_grad


def test_seeded_start() -> None:
    assert torch.equal(_visualize(steps=3, seed=3), _visualize(steps=3, seed=3))
    assert not torch.allclose(_visualize(steps=3, seed=3), _visualize(steps=3, seed=4))


def test_l2_decay_blur_and_clipping_regularize_as_said() -> None:
    plain = {"blur_sigma": 0.0, "clip_percentile": 0.0}
    weak, strong = _visualize(l2_decay=0.01, **plain), _visualize(l2_decay=0.1, **plain)
    assert (strong.flatten(1).norm(dim=1) < 0.5 * weak.flatten(1).norm(dim=1)).all()

    def roughness(images: Tensor) -> float:
        # mean |difference| of horizontally neighbouring pixels: the best images are constant
        # along rows, so this is the high-frequency noise left (vertical differences would
        # count the edge between the halves too, whose total variation a blur keeps)
        return float((images[..., 1:] - images[..., :-1]).abs().mean())

    sharp = _visualize(clip_percentile=0.0, blur_sigma=0.0)
    blurred = _visualize(clip_percentile=0.0, blur_sigma=1.0, blur_every=1)
    assert roughness(blurred) < 0.5 * roughness(sharp)

    assert (_zero_fraction(sharp) == 0).all()
    clipped = _visualize(clip_percentile=50.0, blur_sigma=0.0)
    assert ((_zero_fraction(clipped) - 0.5).abs() < 0.02).all(), _zero_fraction(clipped)
    assert (clipped.flatten(1).norm(dim=1) > 1.0).all(), "the large half is kept"


def test_logits_of_another_shape_are_an_error() -> None:
    with pytest.raises(ConfigError, match=r"logits of shape \(3, 2\).*expected \(3, 3\)"):
        au_visualizations(Halves(), num_aus=3, size=8, steps=1)


def test_to_uint8_stretches_each_image() -> None:
    images = torch.stack([torch.linspace(-1, 1, 3 * 8 * 8).view(3, 8, 8), torch.zeros(3, 8, 8)])
    out = to_uint8(images, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0))
    assert out.shape == (2, 8, 8, 3) and out.dtype == np.uint8
    assert out[0].min() == 0 and out[0].max() == 255
    assert (out[1] == 128).all(), "a constant image is mid grey"


def test_write_visualizations_checks_its_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 AUs need"):
        write_visualizations(np.zeros((2, 8, 8, 3), np.uint8), [1, 2, 4], tmp_path)


def test_load_method_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.ckpt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_method(missing)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"aus": [1]}}, foreign)
    with pytest.raises(ConfigError, match=re.escape(str(foreign)) + ".*_class_path"):
        load_method(foreign)


LAST = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {filename: last}
"""


@pytest.mark.usefixtures("plugin")  # in a fresh folder, with LinearAU of an installed plugin
def test_cli_writes_one_image_per_au_of_the_checkpoint(capsys) -> None:
    Path("last.yaml").write_text(LAST)
    main(["fit", "--config=last.yaml", "--model", "lin", *DATA, *TRAINER,
          "--trainer.default_root_dir=runs"])  # fmt: skip
    (ckpt,) = Path("runs").rglob("last.ckpt")
    aus = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["aus"]
    assert aus == [1, 2, 12]
    capsys.readouterr()

    main(["visualize", "--ckpt_path", str(ckpt), "--out", "out", "--size", "64", "--steps", "5"])
    names = [f"AU{au}.png" for au in aus]
    assert sorted(p.name for p in Path("out").iterdir()) == sorted([*names, "aus.png"])
    for name in names:
        assert Image.open(Path("out") / name).size == (64, 64)
    width, height = Image.open("out/aus.png").size
    assert width >= 3 * 64 and height >= 64
    printed = capsys.readouterr().out
    assert all(str(Path("out") / name) in printed for name in [*names, "aus.png"])

    # --ckpt_path last of --root; the size defaults to the checkpoint's data crop_size (28)
    main(["visualize", "--ckpt_path", "last", "--root", "runs", "--out", "out28", "--steps", "1"])
    assert Image.open("out28/AU12.png").size == (28, 28)


def test_cli_names_a_missing_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "gone.ckpt"
    with pytest.raises(SystemExit, match=f"checkpoint not found: {re.escape(str(missing))}"):
        main(["visualize", "--ckpt_path", str(missing)])
    with pytest.raises(SystemExit, match=r"--ckpt_path best: no best checkpoint .*empty"):
        main(["visualize", "--ckpt_path", "best", "--root", str(tmp_path / "empty")])
