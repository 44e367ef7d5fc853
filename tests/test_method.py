"""AUMethod under a real Trainer on a tiny SynthAU set: losses, metrics, tables, predictions."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn

from au_lightning.data import AUDataModule
from au_lightning.losses import masked_bce, positive_weights
from au_lightning.method import AUMethod, PredictionWriter

AUS = [1, 2, 6, 12]


def test_masked_bce_ignores_unknowns_by_hand() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    target = torch.tensor([[1, -1], [0, 1]])
    # known: (0.0 -> 1), (-1.0 -> 0), (3.0 -> 1): mean of log(1+e^-0), log(1+e^-1), log(1+e^-3)
    expected = (np.log(2) + np.log1p(np.exp(-1)) + np.log1p(np.exp(-3))) / 3
    assert masked_bce(logits, target).item() == pytest.approx(expected, rel=1e-6)
    changed = logits.clone()
    changed[0, 1] = -50.0  # an unknown entry's logit does not matter
    assert masked_bce(changed, target).item() == pytest.approx(expected, rel=1e-6)
    weighted = masked_bce(logits, target, torch.tensor([2.0, 1.0]))
    expected_w = (2 * np.log(2) + np.log1p(np.exp(-1)) + np.log1p(np.exp(-3))) / 3
    assert weighted.item() == pytest.approx(expected_w, rel=1e-6)
    assert masked_bce(logits, torch.full_like(target, -1)).item() == 0.0


def test_positive_weights() -> None:
    occ = torch.tensor([[1, 0, -1], [0, 0, -1], [0, 0, -1], [0, 1, -1]])
    np.testing.assert_allclose(positive_weights(occ, max_weight=10), [3.0, 3.0, 10.0])


class Linear(AUMethod):
    """A linear AU detector on raw pixels (for tests)."""

    def __init__(self, aus: list[int] = AUS, lr: float = 0.05, pos_weight: bool = True) -> None:
        super().__init__(aus=aus, lr=lr, pos_weight=pos_weight)
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(192, len(aus)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


@pytest.fixture
def datamodule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AUDataModule:
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(tmp_path / "cache"))
    synth = {"subjects": 6, "videos": 1, "frames": 12, "size": 32, "seed": 1, "workers": 1}
    return AUDataModule(dataset="bp4d", synth=synth, aus=AUS, protocol="bp4d_3fold",
                        fold="part1", image_size=32, crop_size=28, batch_size=8)  # fmt: skip


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)  # fmt: skip


def test_fit_test_writes_tables_equal_to_an_independent_f1(datamodule, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Linear()
    run = trainer(tmp_path, enable_checkpointing=False)
    run.fit(model, datamodule=datamodule)
    assert float(model.pos_weight[AUS.index(6)]) != 1.0  # set from training base rates
    logged = run.test(model, datamodule=datamodule, verbose=False)[0]
    assert {"test/f1_mean", "test/f1_AU12", "test/auc_AU1", "test/loss"} <= set(logged)
    # independent check: sklearn F1 on the test frames from the model's own probabilities
    model.eval()
    probs, targets = [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            probs.append(torch.sigmoid(model(batch["image"])))
            targets.append(batch["occurrence"])
    p, t = torch.cat(probs).numpy(), torch.cat(targets).numpy()
    j = AUS.index(12)
    known = t[:, j] >= 0
    reference = f1_score(t[known, j], p[known, j] > 0.5, zero_division=0)
    assert logged["test/f1_AU12"] == pytest.approx(reference, abs=1e-6)
    table = (tmp_path / "test_results.csv").read_text().splitlines()
    assert table[0] == "AU,F1,accuracy,AUC" and table[-1].startswith("mean,")
    row = dict(zip(["AU", "F1"], table[1 + j].split(",")[:2], strict=True))
    assert row["AU"] == "AU12" and float(row["F1"]) == pytest.approx(100 * reference, abs=0.051)
    assert (tmp_path / "test_results.md").read_text().startswith("| AU | F1 |")
    assert (tmp_path / "test_f1.png").stat().st_size > 1000


def test_predict_writes_csv_rows_of_the_test_index(datamodule, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Linear()
    run = trainer(tmp_path, enable_checkpointing=False, callbacks=[PredictionWriter("pred.csv")])
    run.predict(model, datamodule=datamodule, return_predictions=False)
    with open(tmp_path / "pred.csv") as f:
        rows = list(csv.DictReader(f))
    index = datamodule.test_index
    assert len(rows) == len(datamodule.test_rows)
    assert [r["path"] for r in rows] == index.path[datamodule.test_rows].tolist()
    assert {r["subject"] for r in rows} == set(index.subject[datamodule.test_rows])
    for r in rows[:5]:
        for au in AUS:
            assert int(r[f"AU{au}"]) == int(float(r[f"p_AU{au}"]) > 0.5)


def test_checkpoint_hyperparameters_load_with_weights_only(datamodule, tmp_path: Path) -> None:
    model = Linear(aus=AUS, lr=0.01)
    run = trainer(tmp_path, enable_checkpointing=False, limit_train_batches=1,
                  limit_val_batches=1)  # fmt: skip
    run.fit(model, datamodule=datamodule)
    run.save_checkpoint(tmp_path / "m.ckpt")
    checkpoint = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"] == {
        "aus": AUS,
        "lr": 0.01,
        "pos_weight": True,
        "_class_path": "tests.test_method.Linear",  # for LightningCLI's --ckpt_path
    }
    restored = Linear.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    torch.testing.assert_close(restored.net[2].weight, model.net[2].weight)


def test_aus_must_match_the_data(datamodule, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"model outputs AUs \[1, 2\] but the data has AUs"):
        trainer(tmp_path, enable_checkpointing=False).fit(Linear(aus=[1, 2]), datamodule=datamodule)


def test_thresholds_one_per_au_or_a_scalar() -> None:
    assert Linear(aus=[1, 2]).thresholds == [0.5, 0.5]
    with pytest.raises(ValueError, match="one value per AU"):
        AUMethod(aus=[1, 2], thresholds=[0.3])
