"""Where RE-Net's prediction of a new AU comes from (Yang & Yin Sec. 4.6, Table 6).

A run of ``renet-without-AU<n>`` (``bench/study.py --claims renet-new-au``) never reads AU n's
labels; its prediction of AU n is Eq. 5's mixture of the other AUs' γ, β (and output rows)
by AU n's row of ω. This script takes each seed's best checkpoint, predicts the test
subjects (``au-lightning predict``), and prints, for AU n on those subjects, the AUC of

- ``own``: AU n's output;
- ``ω · logits``: the ω-weighted sum of the other AUs' logits: what Eq. 5 composes when the
  AU-specific BN parameters differ little, as they do in the study;
- ``ω · labels``: the same weights on the other AUs' true labels: what the graph could carry
  with perfect detectors of the other AUs;

with the correlation of ``own`` and ``ω · logits`` over the frames. ``own`` equal to
``ω · logits`` rules Eq. 5's transfer in; ``ω · labels`` far above both says the other AUs'
detectors, not the graph, are what limits it. ``--edges`` adds, per seed, each other AU's
weight in AU n's row of ω and the AUC for AU n of its label and of its prediction: where
the two disagree, the detector does not carry the co-occurrence the graph was built from.

    python bench/renet_new_au.py --au 23 --seeds 0 1 2 [--edges]   # after the study's runs
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from study import BUDGETS, newest, tested_split

from au_renet import read_relation

WRITER = """
trainer:
  callbacks:
    - class_path: au_lightning.PredictionWriter
      init_args: {output: predictions.csv}
"""


def predict(run: Path, out: Path) -> Path:
    """The test split's predictions of ``run``'s best checkpoint, written under ``out``."""
    from au_lightning.cli import main

    checkpoint = newest(run, "best.ckpt")
    writer = out / "writer.yaml"
    writer.write_text(WRITER)
    main(["predict", "--config", str(checkpoint.parents[1] / "config.yaml"), "--config",
          str(writer), f"--ckpt_path={checkpoint}", f"--trainer.default_root_dir={out}",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    return newest(out, "predictions.csv")


def scores(
    predictions: Path, relation: Path, labels: dict[str, np.ndarray]
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """The AUs of ``predictions`` (a ``PredictionWriter`` CSV), ω for them from ``relation``,
    the predicted probabilities (frames x AUs) and the frames' labels (-1 unknown)."""
    with open(predictions) as f:
        rows = list(csv.DictReader(f))
    aus = [int(name.removeprefix("p_AU")) for name in rows[0] if name.startswith("p_AU")]
    p = np.array([[float(r[f"p_AU{a}"]) for a in aus] for r in rows])
    y = np.stack([labels[r["path"]] for r in rows]).astype(float)
    return aus, read_relation(relation, aus), p, y


def transfer_row(
    aus: list[int], omega: np.ndarray, p: np.ndarray, y: np.ndarray, au: int
) -> tuple[float, float, float, float]:
    """AUCs of AU ``au``'s output, of ``ω · logits`` and of ``ω · labels``, and their
    correlation, over the frames whose AU ``au`` label is known."""
    p = p.clip(1e-6, 1 - 1e-6)
    logits = np.log(p / (1 - p))
    c = aus.index(au)
    others = [j for j in range(len(aus)) if j != c]
    known = y[:, c] >= 0
    composed = logits[:, others] @ omega[c, others]
    oracle = y[:, others].clip(0) @ omega[c, others]  # an unknown label counts as absent
    target = y[known, c]
    return (
        float(roc_auc_score(target, p[known, c])),
        float(roc_auc_score(target, composed[known])),
        float(roc_auc_score(target, oracle[known])),
        float(np.corrcoef(logits[:, c], composed)[0, 1]),
    )


def edge_rows(
    aus: list[int], omega: np.ndarray, p: np.ndarray, y: np.ndarray, au: int
) -> list[tuple[int, float, float, float]]:
    """For each other AU j: ω's weight (au, j), and the AUC for AU ``au`` of j's label (an
    unknown one counting as absent) and of j's predicted probability."""
    c = aus.index(au)
    known = y[:, c] >= 0
    target = y[known, c]
    return [
        (aus[j], float(omega[c, j]), float(roc_auc_score(target, y[known, j].clip(0))),
         float(roc_auc_score(target, p[known, j])))
        for j in range(len(aus)) if j != c
    ]  # fmt: skip


def edge_table(seed: int, rows: list[tuple[int, float, float, float]], au: int) -> list[str]:
    head = f"| seed {seed}: AU | ω | label's AUC for AU{au} | prediction's AUC for AU{au} |"
    lines = ["", head, "|---|---|---|---|"]
    return lines + [f"| AU{j} | {w:+.2f} | {a:.3f} | {b:.3f} |" for j, w, a, b in rows]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--au", type=int, default=23)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", default="cpu", choices=list(BUDGETS))
    parser.add_argument("--runs", type=Path, default=Path("runs/study"))
    parser.add_argument("--edges", action="store_true", help="each edge's AUCs, per seed")
    args = parser.parse_args(argv)
    data = tested_split(args.budget)
    labels = {str(data.index.path[r]): data.index.occurrence[r] for r in data.test_rows}
    lines = [f"| seed | AU{args.au} own | ω · logits | ω · labels | corr(own, ω · logits) |"]
    lines.append("|---|---|---|---|---|")
    edges = []
    for seed in args.seeds:
        run = args.runs / args.budget / f"renet-without-AU{args.au}" / f"seed{seed}"
        with tempfile.TemporaryDirectory() as out:
            frames = scores(predict(run, Path(out)), newest(run, "relation.csv"), labels)
        row = transfer_row(*frames, args.au)
        if args.edges:
            edges += edge_table(seed, edge_rows(*frames, args.au), args.au)
        lines.append(f"| {seed} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    text = "\n".join(lines + edges)
    print(text)
    return text


if __name__ == "__main__":
    main()
