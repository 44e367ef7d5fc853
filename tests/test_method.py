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

from au_lightning.data import AUDataModule, positive_rates
from au_lightning.losses import masked_bce, positive_weights, selective_weights
from au_lightning.method import AUMethod, PredictionWriter
from au_lightning.metrics import search_thresholds

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
    per_label = torch.tensor([[3.0, 7.0], [0.5, 1.0]])  # the unknown entry's 7 is unused
    expected_l = (3 * np.log(2) + 0.5 * np.log1p(np.exp(-1)) + np.log1p(np.exp(-3))) / 3
    assert masked_bce(logits, target, weight=per_label).item() == pytest.approx(expected_l)


def test_selective_weights_by_hand() -> None:
    # AU0: 3 of 4 known positive, target 0.25 -> positives over-represented: negatives get
    #   n+ (1 - t) / (n- t) = 3 * 0.75 / (1 * 0.25) = 9.
    # AU1: 1 of 4 positive, target 0.5 -> under-represented: the positive gets
    #   n- t / (n+ (1 - t)) = 3 * 0.5 / (1 * 0.5) = 3.
    # AU2: batch share 0.5 equals the target: all 1. AU3: no positive in the batch: all 1.
    target = torch.tensor(
        [[1, 1, 1, 0], [1, 0, 0, 0], [1, 0, 1, -1], [0, 0, 0, 0], [-1, -1, -1, 0]]
    )
    rate = torch.tensor([0.25, 0.5, 0.5, 0.1])
    weights = selective_weights(target, rate)
    expected = torch.tensor(
        [[1, 3, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [9, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.float32
    )
    torch.testing.assert_close(weights, expected)
    for j in range(2):  # the weighted positive share of the batch equals the target
        known = target[:, j] >= 0
        share = (weights[:, j] * (target[:, j] == 1))[known].sum() / weights[known, j].sum()
        assert float(share) == pytest.approx(float(rate[j]))


def test_positive_weights() -> None:
    occ = np.array([[1, 0, -1], [0, 0, -1], [0, 0, -1], [0, 1, -1]])
    np.testing.assert_allclose(positive_rates(occ), [0.25, 0.25, np.nan])  # -1 never counts
    rates = torch.tensor([0.25, 0.25, 0.0])
    np.testing.assert_allclose(positive_weights(rates, max_weight=10), [3.0, 3.0, 10.0])


class Linear(AUMethod):
    """A linear AU detector on raw pixels (for tests)."""

    def __init__(
        self,
        aus: list[int] = AUS,
        lr: float = 0.05,
        loss_weights: str = "positive",
        threshold_search: bool = False,
    ) -> None:
        super().__init__(aus, lr=lr, loss_weights=loss_weights, threshold_search=threshold_search)
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
    train = datamodule.index.occurrence[datamodule.train_rows]
    expected = [(train[:, j] == 1).sum() / (train[:, j] >= 0).sum() for j in range(len(AUS))]
    np.testing.assert_allclose(model.base_rate, expected, rtol=1e-6)  # the training split's
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
        "loss_weights": "positive",
        "threshold_search": False,
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


def _probs_and_targets(model: AUMethod, loader) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    probs, targets = [], []
    with torch.no_grad():
        for batch in loader:
            probs.append(torch.sigmoid(model(batch["image"])))
            targets.append(batch["occurrence"])
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def test_thresholds_tuned_on_validation_are_saved_and_used(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(tmp_path / "cache"))
    synth = {"subjects": 6, "videos": 2, "frames": 24, "size": 32, "seed": 1, "workers": 1}
    datamodule = AUDataModule(dataset="bp4d", synth=synth, aus=AUS, protocol="bp4d_3fold",
                              fold="part1", image_size=32, crop_size=28, batch_size=16,
                              val_strategy="frames", val_fraction=0.3)  # fmt: skip
    torch.manual_seed(0)
    model = Linear(threshold_search=True)
    writer = PredictionWriter("pred.csv")
    run = trainer(tmp_path, enable_checkpointing=False, callbacks=[writer])
    run.fit(model, datamodule=datamodule)
    val_probs, val_targets = _probs_and_targets(model, datamodule.val_dataloader())
    expected, _ = search_thresholds(torch.from_numpy(val_probs), torch.from_numpy(val_targets))
    np.testing.assert_allclose(model.thresholds, expected.numpy(), rtol=1e-6)
    assert all(t != 0.5 for t in model.thresholds)  # every AU has positives in validation
    run.save_checkpoint(tmp_path / "m.ckpt")
    restored = Linear.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert restored.thresholds == model.thresholds

    logged = run.test(restored, datamodule=datamodule, verbose=False)[0]
    probs, targets = _probs_and_targets(restored, datamodule.test_dataloader())
    for j, au in enumerate(AUS):
        known = targets[:, j] >= 0
        tuned = f1_score(targets[known, j], probs[known, j] > expected[j].item(), zero_division=0)
        at_half = f1_score(targets[known, j], probs[known, j] > 0.5, zero_division=0)
        assert logged[f"test/f1_AU{au}"] == pytest.approx(tuned, abs=1e-6)
        assert logged[f"test/untuned/f1_AU{au}"] == pytest.approx(at_half, abs=1e-6)
    with open(tmp_path / "test_results.csv") as f:
        table = list(csv.DictReader(f))
    assert float(table[0]["threshold"]) == pytest.approx(restored.thresholds[0], abs=5e-4)
    assert float(table[-1]["F1 untuned"]) == pytest.approx(
        100 * logged["test/untuned/f1_mean"], abs=0.051
    )

    run.predict(restored, datamodule=datamodule, return_predictions=False)
    with open(tmp_path / "pred.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for au, threshold in zip(AUS, restored.thresholds, strict=True):
            assert (
                int(r[f"AU{au}"]) == int(float(r[f"p_AU{au}"]) > threshold)
                or abs(
                    float(r[f"p_AU{au}"]) - threshold  # the CSV rounds to 5 decimals
                )
                < 1e-5
            )


def test_threshold_search_needs_a_validation_split(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(tmp_path / "cache"))
    synth = {"subjects": 6, "videos": 1, "frames": 12, "size": 32, "seed": 1, "workers": 1}
    dm = AUDataModule(dataset="bp4d", synth=synth, aus=AUS, protocol="bp4d_3fold",
                      fold="part1", image_size=32, crop_size=28, val_strategy="none")  # fmt: skip
    with pytest.raises(ValueError, match="threshold_search tunes thresholds on the validation"):
        trainer(tmp_path, enable_checkpointing=False).fit(Linear(threshold_search=True), dm)


def test_masked_bce_per_sample_sums_each_samples_known_labels_by_hand() -> None:
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -3.0], [4.0, -2.0, 0.25]])
    target = torch.tensor([[1, 0, -1], [-1, -1, -1], [0, 1, 1]])
    pos_weight = torch.tensor([2.0, 3.0, 0.5])
    weight = torch.tensor([[1.5, 0.5, 9.0], [4.0, 4.0, 4.0], [2.0, 1.0, 0.25]])

    def term(x: float, z: int, pw: float = 1.0, w: float = 1.0) -> float:
        p = 1 / (1 + np.exp(-x))
        return -w * (pw * z * np.log(p) + (1 - z) * np.log(1 - p))

    def by_hand(pw: list[float], w: list[list[float]]) -> list[float]:
        return [
            sum(
                term(logits[i, j].item(), int(target[i, j]), pw[j], w[i][j])
                for j in range(3)
                if target[i, j] >= 0
            )
            for i in range(3)
        ]

    ones = [[1.0] * 3] * 3
    for pw, w, kwargs in [
        ([1.0] * 3, ones, {}),
        (pos_weight.tolist(), ones, {"pos_weight": pos_weight}),
        (pos_weight.tolist(), weight.tolist(), {"pos_weight": pos_weight, "weight": weight}),
    ]:
        losses = masked_bce(logits, target, per_sample=True, **kwargs)
        assert losses.shape == (3,)
        np.testing.assert_allclose(losses.numpy(), by_hand(pw, w), rtol=1e-6)
        assert losses[1].item() == 0.0  # every label unknown
        # the mean over known labels is the per-sample total over the number of known labels
        mean = masked_bce(logits, target, **kwargs)
        assert losses.sum().item() / 5 == pytest.approx(mean.item(), rel=1e-6)
    # an unknown label's logit does not matter, nor gets a gradient
    changed = logits.clone().requires_grad_()
    with torch.no_grad():
        changed[0, 2] = -40.0
        changed[1] = torch.tensor([30.0, -30.0, 7.0])
    losses = masked_bce(changed, target, pos_weight, weight, per_sample=True)
    np.testing.assert_allclose(
        losses.detach().numpy(), by_hand(pos_weight.tolist(), weight.tolist()), rtol=1e-6
    )
    (grad,) = torch.autograd.grad(losses.sum(), changed)
    assert (grad[target < 0] == 0).all() and (grad[target >= 0] != 0).all()
