"""What each AU model "wants to see": the visualization of Chu, De la Torre & Cohn, Sec. 6.

For every AU ℓ, gradient ascent on the input image solves their Eq. (3),

    I* = argmax_I  A_ℓ(I) - Ω(I),

with A_ℓ the ℓ-th output unit (the logit, before the sigmoid) and Ω, as in the paper, the
regularization of Yosinski et al. 2015 ("Understanding Neural Networks Through Deep
Visualization") applied as operations on the image after each gradient step: L2 decay,
Gaussian blur and clipping of the pixels with small norm (the order of Yosinski et al.'s
code). Any AU method works: a module whose ``forward(images (B, 3, H, W))`` returns logits
``(B, L)``.

``au-lightning visualize --ckpt_path PATH`` (:mod:`au_lightning.cli`) runs it on a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from jsonargparse.typing import import_object
from PIL import Image, ImageDraw
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from au_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from au_lightning.errors import ConfigError

__all__ = ["au_visualizations", "load_method", "to_uint8", "write_visualizations"]

#: standard deviation of the random zero-centred start image, in the model's input space
#: (Yosinski et al. start from N(0, 10) on the 0..255 scale around the data mean: about 0.17
#: after ImageNet normalization)
INIT_STD = 0.1


def au_visualizations(
    model: nn.Module,
    num_aus: int,
    size: int,
    steps: int = 200,
    lr: float = 0.05,
    l2_decay: float = 0.01,
    blur_sigma: float = 0.5,
    blur_every: int = 4,
    clip_percentile: float = 20.0,
    seed: int = 0,
) -> Tensor:
    """One image per AU maximizing that AU's logit minus Ω (Chu et al. Eq. (3), Sec. 6).

    The ``num_aus`` images are optimized together as one batch, image ℓ for logit ℓ (the
    objective is the sum over ℓ of ``logits[ℓ, ℓ]``), from a seeded random zero-centred
    start (N(0, 0.1²) per value). Each step then:

    1. ascends the gradient: ``I += lr * g / mean|g|``, the gradient of each image scaled to
       a mean absolute value of 1, so ``lr`` is the mean change of a value per step in the
       model's input space whatever the scale of the method's logits;
    2. L2 decay: ``I *= 1 - l2_decay``;
    3. every ``blur_every`` steps (from the first), a Gaussian blur of ``blur_sigma``;
    4. the ``clip_percentile`` % of the pixels with the smallest norm over the 3 channels are
       set to 0.

    ``l2_decay=0``, ``blur_sigma=0`` (or ``blur_every=0``) and ``clip_percentile=0`` turn
    the operations off. The paper runs 10,000 iterations; the default here is a practical
    200 (about half a minute on a 2-core CPU for the 12 AUs of a ResNet-18 at 28 px; the
    cost grows with the image area): the logits rise most in the first steps, so raise
    ``steps`` for converged images. The regularization defaults are within the settings of
    Yosinski et al. (decay 0.01 as their code's default, a blur of 0.5 px every 4 steps,
    the 20 % smallest pixels clipped).

    Args:
        model: the AU model; evaluated in eval mode, its parameters unchanged and given no
            gradient, its train/eval modes restored afterwards.
        num_aus: the number of its outputs (``len(method.aus)``).
        size: the side of the square images, as the model was trained on (the crop size).
        steps: gradient steps (the paper: 10,000).
        lr: the mean absolute change of a value per step (the normalized gradient's step).
        l2_decay: L2 decay, ``I *= 1 - l2_decay`` after each step (0: none).
        blur_sigma: the Gaussian blur's standard deviation in pixels (0: no blur).
        blur_every: blur every this many steps (0: no blur).
        clip_percentile: the percentage of pixels, those of smallest norm over the
            channels, set to 0 after each step (0: none).
        seed: of the start image (a generator of its own; the global RNG is not touched).

    Returns:
        ``(num_aus, 3, size, size)`` images in the model's input space (normalized, as
        the data transforms give them; :func:`to_uint8` for viewing), on the CPU.
    """
    if num_aus < 1 or size < 1 or steps < 0:
        raise ConfigError(
            f"need num_aus >= 1, size >= 1 and steps >= 0, got {num_aus}, {size} and {steps}"
        )
    if not 0 <= clip_percentile <= 100:
        raise ConfigError(f"clip_percentile must be in [0, 100], got {clip_percentile}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(seed)
    images = INIT_STD * torch.randn(num_aus, 3, size, size, generator=generator)
    images = images.to(device, dtype)
    kernel = min(2 * math.ceil(3 * blur_sigma) + 1, 2 * size - 1)  # reflect padding < size
    clipped = round(clip_percentile / 100 * size * size)
    index = torch.arange(num_aus, device=device)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for step in range(steps):
                images.requires_grad_(True)
                logits = model(images)
                if logits.shape != (num_aus, num_aus):
                    raise ConfigError(
                        f"the model gives logits of shape {tuple(logits.shape)} for {num_aus} "
                        f"images; expected ({num_aus}, {num_aus}), one per AU"
                    )
                (grad,) = torch.autograd.grad(logits[index, index].sum(), images)
                with torch.no_grad():
                    scale = grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
                    images = images.detach() + lr * grad / scale
                    images = images * (1 - l2_decay)
                    if blur_sigma > 0 and blur_every > 0 and step % blur_every == 0:
                        images = gaussian_blur(images, [kernel, kernel], [blur_sigma] * 2)
                    if clipped:
                        norms = images.norm(dim=1).flatten(1)  # (L, H*W)
                        small = norms.topk(clipped, dim=1, largest=False).indices
                        keep = torch.ones_like(norms).scatter_(1, small, 0.0)
                        images = images * keep.view(num_aus, 1, size, size)
    finally:
        for module, training in modes.items():
            module.train(training)
    return images.detach().cpu()


def to_uint8(
    images: Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    percentile: float = 1.0,
) -> np.ndarray:
    """``(L, 3, H, W)`` images in the model's input space as ``(L, H, W, 3)`` uint8 RGB.

    The normalization ``(x - mean) / std`` of the data transforms is undone, then each image
    is stretched on its own: its ``percentile`` and ``100 - percentile`` percentiles (over
    all its values, so the channels keep their balance) become 0 and 255, values beyond
    them are clipped. A constant image is mid grey.
    """
    x = images.detach().cpu().double().numpy()
    x = x * np.asarray(std).reshape(1, 3, 1, 1) + np.asarray(mean).reshape(1, 3, 1, 1)
    flat = x.reshape(len(x), -1)
    lo = np.percentile(flat, percentile, axis=1).reshape(-1, 1, 1, 1)
    hi = np.percentile(flat, 100 - percentile, axis=1).reshape(-1, 1, 1, 1)
    span = hi - lo
    scaled = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1), 0.5)
    out = np.rint(255 * np.clip(scaled, 0, 1)).astype(np.uint8)
    return out.transpose(0, 2, 3, 1)


def load_method(ckpt_path: str | Path) -> L.LightningModule:
    """The AU method of a checkpoint, on the CPU: its class from the checkpoint's
    ``hyper_parameters["_class_path"]`` (written by :class:`au_lightning.AUMethod`), then
    ``load_from_checkpoint``. A missing file is a FileNotFoundError, a file that is not such
    a checkpoint (or whose class cannot be imported) a ConfigError, each naming the file."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise ConfigError(f"{path} is not a readable checkpoint: {err}") from err
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
    if not isinstance(class_path, str):
        raise ConfigError(
            f"{path} is not a checkpoint of an au-lightning method: it has no "
            "hyper_parameters['_class_path'] naming the method's class"
        )
    try:
        cls = import_object(class_path)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"{path}: cannot import its method class {class_path}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise ConfigError(f"{path}: its class {class_path} is not a LightningModule")
    return cls.load_from_checkpoint(path, map_location="cpu")


def write_visualizations(
    images: np.ndarray, aus: Sequence[int], out_dir: str | Path, columns: int = 8
) -> list[Path]:
    """``AU<n>.png`` for each AU and a contact sheet ``aus.png`` (the images in rows of
    ``columns``, each labelled with its AU) in ``out_dir``, from ``(L, H, W, 3)`` uint8
    images (:func:`to_uint8`) in the order of ``aus``; returns the paths, the sheet last."""
    if images.ndim != 4 or images.shape[3] != 3 or len(images) != len(aus):
        raise ValueError(
            f"write_visualizations: {len(aus)} AUs need ({len(aus)}, H, W, 3) images, "
            f"got shape {images.shape}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for au, image in zip(aus, images, strict=True):
        Image.fromarray(image).save(out / f"AU{au}.png")
        paths.append(out / f"AU{au}.png")
    height, width = images.shape[1:3]
    label, gap = 14, 4
    cell_w, cell_h = max(width, 40) + gap, height + label + gap
    cols = max(1, min(columns, len(aus)))
    rows = math.ceil(len(aus) / cols)
    sheet = Image.new("RGB", (gap + cols * cell_w, gap + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (au, image) in enumerate(zip(aus, images, strict=True)):
        x, y = gap + (i % cols) * cell_w, gap + (i // cols) * cell_h
        draw.text((x, y), f"AU{au}", fill="black")
        sheet.paste(Image.fromarray(image), (x, y + label))
    sheet.save(out / "aus.png")
    return [*paths, out / "aus.png"]
