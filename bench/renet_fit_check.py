"""How fast RE-Net fits its training frames, against the ResNet-18 baseline: train on 256
fixed training frames of SynthAU fold part1 (32-px crops, batches of 32, Adam) and print
the macro AUC on those same frames, with the running BN statistics (eval mode), with each
batch's own statistics, and with every AU's statistics re-estimated on the frames.

    python bench/renet_fit_check.py --method baseline --steps 240
    python bench/renet_fit_check.py --method renet --strategy random --steps 240
    python bench/renet_fit_check.py --method renet --strategy all --steps 240

A diagnostic for ``docs/results/renet.md``: it separates "cannot fit" from "does not
generalise" in a minute's to an hour's compute (``--threads`` changes the numbers: the
runs are not bit-identical across thread counts).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torchmetrics.functional.classification import multilabel_auroc

from au_baseline import Baseline
from au_lightning.data import AUDataModule, FrameDataset
from au_renet import RENet

SYNTH = {"subjects": 12, "videos": 4, "frames": 120, "size": 112, "seed": 0}


def training_frames(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random training frames of fold part1 (eval transform) and their labels."""
    data = AUDataModule(dataset="bp4d", synth=SYNTH, aus="bp4d", protocol="bp4d_3fold",
                        fold="part1", image_size=36, crop_size=32)  # fmt: skip
    data.setup("fit")
    rows = np.random.default_rng(0).choice(data.train_rows, count, replace=False)
    frames = FrameDataset(data.index, rows, data.eval_transform)
    items = [frames[i] for i in range(len(frames))]
    return torch.stack([i["image"] for i in items]), torch.stack([i["occurrence"] for i in items])


def auc(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    scores = multilabel_auroc(
        probabilities, labels.long(), num_labels=labels.shape[1], average="macro", ignore_index=-1
    )
    return float(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=["baseline", "renet"], default="renet")
    parser.add_argument("--strategy", choices=["random", "all"], default="random")
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, labels = training_frames(args.frames)
    if args.method == "renet":
        model = RENet(strategy=args.strategy, lr=args.lr)
    else:
        model = Baseline(lr=args.lr)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for _ in range(args.steps):
        batch = torch.randint(args.frames, (32,))
        if args.method == "renet":
            loss = model.pass_loss({"image": images[batch], "occurrence": labels[batch]})
        else:
            loss = model.training_loss({"occurrence": labels[batch]}, model(images[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    chunks = images.split(64)
    with torch.no_grad():
        model.eval()
        running = auc(torch.cat([model(x) for x in chunks]).sigmoid(), labels)
        model.train()
        batch_statistics = auc(torch.cat([model(x) for x in chunks]).sigmoid(), labels)
        recalibrated = float("nan")
        if args.method == "renet":
            model.net.estimate_statistics(chunks, list(range(len(model.aus))))
            model.eval()
            recalibrated = auc(torch.cat([model(x) for x in chunks]).sigmoid(), labels)
    name = args.method + (f" ({args.strategy})" if args.method == "renet" else "")
    print("| method | steps | lr | train AUC, running stats | batch stats | re-estimated |")
    print("|---|---|---|---|---|---|")
    print(f"| {name} | {args.steps} | {args.lr:g} | {running:.3f} | {batch_statistics:.3f} "
          f"| {recalibrated:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
