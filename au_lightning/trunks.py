"""Pretrained trunks for SynthAU studies: the stand-in for ImageNet or face-recognition weights.

MAL (Li & Shan Sec. 4.2) starts its BP4D network from ImageNet and its DISFA one from BP4D;
Ji et al. start from face-recognition and expression views; RE-Net's ResNet-18 is ImageNet's.
No such weights can be downloaded here, so a study starts from a ResNet trained on a SynthAU
population whose identities are disjoint from the study's (another ``seed``), either on that
population's AU labels (``task="aus"``, as MAL initialises DISFA from BP4D) or on a generic
pretext, its subjects' identities (``task="identity"``, Ji et al.'s face view).

A trunk is keyed by its whole specification and cached under
``$AU_LIGHTNING_CACHE/trunks/<key>.pt`` as a plain torchvision state_dict, so any
``pretrained:`` option (``resnet_backbone(pretrained=path)``) loads it. Training is seeded:
each step's rows and augmentation seed are drawn up front, and its batch is loaded under that
seed in whichever process loads it, so the same specification gives the same trunk with any
number of loader ``workers``, on the same machine, device and thread count (kernels round
differently elsewhere; the cache key does not record the device).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from au_lightning.data.cache import cache_dir
from au_lightning.data.datasets import FrameDataset
from au_lightning.data.formats import read_dataset
from au_lightning.data.image_cache import find_image_cache
from au_lightning.data.synth import ensure_synthau
from au_lightning.data.transforms import train_transform
from au_lightning.errors import ConfigError
from au_lightning.losses import masked_bce
from au_lightning.nn.resnet import resnet_backbone

__all__ = ["TrunkSpec", "TrunkTask", "ensure_synth_trunk"]

logger = logging.getLogger(__name__)

TrunkTask = Literal["aus", "identity"]
#: bump when the training recipe changes, so old cached trunks are not reused
VERSION = 1


@dataclass(frozen=True)
class TrunkSpec:
    """What a pretrained SynthAU trunk is trained on, and how.

    Args:
        population: the ``ensure_synthau`` parameters of the pretraining population (BP4D
            layout). Its ``seed`` must differ from every study set's, so that no study
            identity is seen in pretraining.
        task: ``aus`` (masked BCE on the population's 12 BP4D AUs) or ``identity``
            (cross-entropy over its subjects).
        depth: the ResNet depth (torchvision ResNet-``depth``).
        steps, batch_size, lr: Adam steps, batch size and learning rate.
        image_size, crop_size: the resize and random crop (with flips) of the inputs.
        seed: the seed of initialisation and batch order.
        withheld_aus: AU numbers whose labels the ``aus`` task never reads (masked as
            unknown): the trunk of a new-AU study (Yang & Yin Table 6), whose RE-Net must
            meet the AU without labels, so its initialisation may not have learnt it either.
    """

    population: dict[str, int] = field(
        default_factory=lambda: {
            "subjects": 41,
            "videos": 4,
            "frames": 60,
            "size": 64,
            "seed": 1000,
        }
    )
    task: TrunkTask = "aus"
    depth: int = 18
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    image_size: int = 64
    crop_size: int = 56
    seed: int = 0
    withheld_aus: tuple[int, ...] = ()

    def key(self) -> str:
        fields = asdict(self)
        if not self.withheld_aus:
            del fields["withheld_aus"]  # the keys of trunks from before the field stay valid
        text = json.dumps({"version": VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_synth_trunk(
    spec: TrunkSpec | None = None,
    directory: str | Path | None = None,
    device: str = "cpu",
    workers: int = 0,
) -> Path:
    """The path of the trunk of ``spec`` (default :class:`TrunkSpec`), trained on first use,
    on ``device`` with ``workers`` data-loader processes (neither changes the batches).

    The file is a torchvision ResNet state_dict without ``fc``; ``<key>.json`` beside it
    records the specification, the training time and the last 100 steps' mean loss. It is
    written to a temporary file and renamed into place, so concurrent runs never read half a
    file.
    """
    spec = spec or TrunkSpec()
    if spec.task not in ("aus", "identity"):
        raise ConfigError(f"trunk task {spec.task!r}; expected 'aus' or 'identity'")
    if spec.withheld_aus and spec.task != "aus":
        raise ConfigError(f"trunk withheld_aus {list(spec.withheld_aus)} need the task 'aus'")
    base = Path(directory) if directory is not None else cache_dir() / "trunks"
    final = base / f"resnet{spec.depth}-{spec.task}-{spec.key()}.pt"
    if final.is_file():
        return final
    base.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    state, loss = _train(spec, torch.device(device), workers)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}-", dir=base)
    os.close(fd)
    torch.save(state, tmp)
    info = {**asdict(spec), "seconds": round(time.perf_counter() - start, 1), "final_loss": loss}
    final.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True))
    os.replace(tmp, final)
    logger.info("trained %s in %.0f s (final loss %.3f)", final.name, info["seconds"], loss)
    return final


class _StepBatches(torch.utils.data.Dataset):
    """Step ``k``'s batch: its ``rows[k]`` loaded in order under ``seeds[k]``, the same in
    the main process and in any loader worker."""

    def __init__(self, dataset: FrameDataset, rows: np.ndarray, seeds: list[int]) -> None:
        self.dataset, self.rows, self.seeds = dataset, rows, seeds
        self.subject_code = dataset.index.subject_code.astype(np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(self.seeds[step])
        items = [self.dataset[int(r)] for r in self.rows[step]]
        return {
            "image": torch.stack([item["image"] for item in items]),
            "occurrence": torch.stack([item["occurrence"] for item in items]).long(),
            "subject": torch.from_numpy(self.subject_code[self.rows[step]]),
        }


def _train(
    spec: TrunkSpec, device: torch.device, workers: int
) -> tuple[dict[str, torch.Tensor], float]:
    generator = torch.Generator().manual_seed(spec.seed)
    torch.manual_seed(spec.seed)
    root = ensure_synthau("bp4d", progress=False, **spec.population)
    index = read_dataset("bp4d", root)
    withheld = _withheld_columns(index.aus, spec.withheld_aus)
    # the decoded image cache, where one was built at this size: the same pixels, no decoding
    images = find_image_cache(index, spec.image_size)
    transform = train_transform(spec.image_size, spec.crop_size)
    dataset = FrameDataset(index, transform=transform, images=images)
    trunk, features = resnet_backbone(spec.depth)
    outputs = len(index.aus) if spec.task == "aus" else len(index.subject_names)
    head = nn.Linear(features, outputs)
    model = nn.Sequential(trunk, head).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    rng = np.random.default_rng(spec.seed)
    # each step draws its rows, then its augmentation seed, as the steps once did in turn
    rows = np.stack([rng.choice(len(dataset), spec.batch_size, replace=False)
                     for _ in range(spec.steps)])  # fmt: skip
    seeds = [int(torch.randint(2**31, (1,), generator=generator)) for _ in range(spec.steps)]
    loader = torch.utils.data.DataLoader(
        _StepBatches(dataset, rows, seeds),
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    losses: list[float] = []
    for step, batch in enumerate(loader, start=1):
        logits = model(batch["image"].to(device, non_blocking=True))
        if spec.task == "aus":
            occurrence = batch["occurrence"].to(device)
            occurrence[:, withheld] = -1
            loss = masked_bce(logits, occurrence)
        else:
            loss = F.cross_entropy(logits, batch["subject"].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 250 == 0:
            logger.info("trunk step %d/%d: loss %.3f", step, spec.steps, np.mean(losses[-250:]))
    state = {k: v.detach().cpu().clone() for k, v in trunk.state_dict().items()}
    return state, float(np.mean(losses[-100:]))


def _withheld_columns(aus: tuple[int, ...], withheld: tuple[int, ...]) -> list[int]:
    """The label columns of the ``withheld`` AU numbers among the population's ``aus``."""
    unknown = [a for a in withheld if a not in aus]
    if unknown:
        raise ConfigError(
            f"trunk withheld_aus {unknown} are not among the population's AUs {list(aus)}"
        )
    return [aus.index(a) for a in withheld]
