"""How fast RE-Net fits its training frames, against the ResNet-18 baseline: train on 256
fixed training frames of SynthAU fold part1 (32-px crops, batches of 32, Adam) and print
the macro AUC on those same frames, with the running BN statistics (eval mode), with each
batch's own statistics, and with every AU's statistics re-estimated on the frames, and the
mean correlation between the AUs' outputs over the frames (near 1: the AUs run one
detector). RE-Net's ω is built from the training split's labels as ``RENet.setup`` builds
it at the start of fitting (:meth:`RENet.set_training_relation`).

    python bench/renet_fit_check.py                                  # the README's table
    python bench/renet_fit_check.py --variants renet:per_au:all --steps 80     # one row

A variant is ``baseline`` or ``renet:<head>:<strategy>`` (head ``per_au`` or ``shared``,
strategy ``all`` or ``random``). ``--steps`` is the number of steps of the baseline and of
``strategy all``; ``strategy random`` gets ``--steps`` times the number of AUs, the same
number of AU-passes (one AU for one batch), i.e. equal compute, unless ``--random-steps``
says otherwise. On 1 thread of this 2-core machine (shared with another job) an all-AU step
took about 3.4 s and a one-AU step 0.5 s: the default table is about 30 minutes, one
``strategy all`` row at 80 steps about 4.5.

A diagnostic for ``docs/results/renet.md`` and ``plugins/au_renet/README.md``: it separates
"cannot fit" from "does not generalise" (``--threads`` changes the numbers: the runs are not
bit-identical across thread counts).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torchmetrics.functional.classification import multilabel_auroc

from au_baseline import Baseline
from au_lightning.data import AUDataModule, FrameDataset
from au_renet import RENet

SYNTH = {"subjects": 12, "videos": 4, "frames": 120, "size": 112, "seed": 0}
DEFAULT_VARIANTS = [
    "baseline",
    "renet:shared:all",
    "renet:per_au:all",
    "renet:shared:random",
    "renet:per_au:random",
]


def training_frames(count: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``count`` random training frames of fold part1 (eval transform), their labels, and
    the labels of the whole training split (what ω is computed from)."""
    data = AUDataModule(dataset="bp4d", synth=SYNTH, aus="bp4d", protocol="bp4d_3fold",
                        fold="part1", image_size=36, crop_size=32)  # fmt: skip
    data.setup("fit")
    rows = np.random.default_rng(0).choice(data.train_rows, count, replace=False)
    frames = FrameDataset(data.index, rows, data.eval_transform)
    items = [frames[i] for i in range(len(frames))]
    images = torch.stack([i["image"] for i in items])
    labels = torch.stack([i["occurrence"] for i in items])
    return images, labels, data.index.occurrence[data.train_rows]


def auc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    scores = multilabel_auroc(
        logits.sigmoid(), labels.long(), num_labels=labels.shape[1], average="macro",
        ignore_index=-1,
    )  # fmt: skip
    return float(scores)


def label_correlation_mean(labels: np.ndarray) -> float:
    """The mean off-diagonal Pearson correlation of the label columns (N, C) over the
    pairs where it is defined, each over the rows where both labels are known."""
    pairs = []
    for i in range(labels.shape[1]):
        for j in range(i + 1, labels.shape[1]):
            both = (labels[:, i] >= 0) & (labels[:, j] >= 0)
            a, b = labels[both, i].astype(float), labels[both, j].astype(float)
            if len(a) > 1 and a.std() > 0 and b.std() > 0:
                pairs.append(np.corrcoef(a, b)[0, 1])
    return float(np.mean(pairs))


def output_correlation(logits: torch.Tensor) -> float:
    """The mean off-diagonal correlation of the AUs' logits over the frames."""
    corr = np.corrcoef(logits.double().numpy().T)
    return float(corr[~np.eye(len(corr), dtype=bool)].mean())


def fit(variant: str, args: argparse.Namespace, data: tuple) -> dict[str, object]:
    images, labels, split_labels = data
    method, head, strategy = ([*variant.split(":"), None, None])[:3]
    torch.manual_seed(0)
    if method == "renet":
        model = RENet(strategy=strategy, head=head, lr=args.lr)
        model.set_training_relation(split_labels)  # what setup("fit") does: ω (Eq. 5)
        if strategy == "all":
            passes_per_step, steps = len(model.seen), args.steps
        else:  # equal AU-passes unless told
            passes_per_step, steps = 1, args.random_steps or args.steps * len(model.seen)
    elif method == "baseline":
        model, passes_per_step, steps = Baseline(lr=args.lr), 1, args.steps
    else:
        raise SystemExit(f"unknown variant {variant!r}: baseline or renet:<head>:<strategy>")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for _ in range(steps):
        batch = torch.randint(args.frames, (32,), generator=batches)
        if method == "renet":
            loss = model.pass_loss({"image": images[batch], "occurrence": labels[batch]})
        else:
            loss = model.training_loss({"occurrence": labels[batch]}, model(images[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    chunks = images.split(64)
    with torch.no_grad():
        model.eval()
        logits = torch.cat([model(x) for x in chunks])
        running = auc(logits, labels)
        model.train()
        batch_statistics = auc(torch.cat([model(x) for x in chunks]), labels)
        recalibrated = float("nan")
        if method == "renet":
            model.net.estimate_statistics(chunks, list(range(len(model.aus))))
            model.eval()
            recalibrated = auc(torch.cat([model(x) for x in chunks]), labels)
    return {"variant": variant, "steps": steps, "passes": steps * passes_per_step,
            "running": running, "batch": batch_statistics, "recalibrated": recalibrated,
            "correlation": output_correlation(logits), "seconds": seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--random-steps", type=int, default=None,
                        help="steps of strategy random (default: --steps x 12 AUs)")  # fmt: skip
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = training_frames(args.frames)
    print(f"labels of the {args.frames} frames: mean pairwise correlation "
          f"{label_correlation_mean(data[1].numpy()):.3f}", flush=True)  # fmt: skip
    print("| variant | steps | passes | train AUC, running stats | batch stats "
          "| re-estimated | output corr | seconds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for variant in args.variants:
        r = fit(variant, args, data)
        print(f"| {r['variant']} | {r['steps']} | {r['passes']} | {r['running']:.3f} "
              f"| {r['batch']:.3f} | {r['recalibrated']:.3f} | {r['correlation']:.2f} "
              f"| {r['seconds']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
