"""The hybrid plugin (Chu, De la Torre & Cohn): max-margin loss, PCA, the three networks and
the staged fit on SynthAU windows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from au_hybrid import FusionNet, Hybrid, SpatialCNN, TemporalLSTM, hybrid_table
from au_hybrid.module import FusionSet
from au_hybrid.results import moving_average
from au_lightning import max_margin_loss
from au_lightning.cli import main
from au_lightning.data import SequenceDataModule, active_aus_per_frame, sequence_windows
from au_lightning.nn import PCA, ANet

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = [
    "--data.init_args.synth={subjects: 6, videos: 2, frames: 16, size: 32, workers: 1}",
    "--data.image_size=32",
    "--data.crop_size=28",
    "--data.batch_size=16",
    "--data.window=8",
    "--data.stride=4",
    "--data.burn_in=2",
    "--data.sequences_per_batch=4",
    "--model.backbone=resnet18",
    "--model.pca_components=16",
    "--model.lstm_hidden=8",
    "--model.fusion_hidden=8",
    "--model.cnn_optimizer=adam",
    "--trainer.enable_progress_bar=false",
    "--trainer.default_root_dir=runs",
]


# -- the max-margin loss (Sec. 3.2) ----------------------------------------------------------


def test_max_margin_loss_and_gradient_by_hand() -> None:
    # frame 1: y = (+1, -1, 0); frame 2: y = (-1, 0, 0) -> n0 = 2 and 1
    target = torch.tensor([[1, 0, -1], [0, -1, -1]])
    scores = torch.tensor([[0.2, -0.9, 0.7], [0.6, 0.1, -0.3]], requires_grad=True)
    loss = max_margin_loss(scores, target, margin=0.5)
    # frame 1: max(0, .5 - .2) + max(0, .5 - .9) = .3, / 2; frame 2: max(0, .5 + .6) = 1.1
    assert loss.item() == pytest.approx((0.3 / 2 + 1.1) / 2)
    loss.backward()
    # dL/dŷ_i = -y_i / n0 where y_i ŷ_i < λ, else 0; averaged over the 2 frames
    expected = torch.tensor([[-1 / 2, 0.0, 0.0], [1.0, 0.0, 0.0]]) / 2
    torch.testing.assert_close(scores.grad, expected)


def test_max_margin_loss_ignores_missing_labels_and_masked_frames() -> None:
    torch.manual_seed(0)
    target = torch.randint(-1, 2, (4, 6, 5))
    target[0, 0] = -1  # a frame with no known label
    scores = torch.rand(4, 6, 5) * 2 - 1
    mask = torch.rand(4, 6) > 0.3
    loss = max_margin_loss(scores, target, 0.5, mask)
    # anything at a missing label or a masked frame changes nothing
    moved = scores.clone()
    moved[target == -1] = torch.rand(int((target == -1).sum())) * 2 - 1
    moved[~mask] = 0.123
    assert max_margin_loss(moved, target, 0.5, mask).item() == pytest.approx(loss.item())
    scores.requires_grad_(True)
    max_margin_loss(scores, target, 0.5, mask).backward()
    assert (scores.grad[target == -1] == 0).all() and (scores.grad[~mask] == 0).all()
    # the mean is over counted frames with a known label: the all-unknown frame is not one
    counted = mask & (target >= 0).any(-1)
    y = torch.where(target == 1, 1.0, -1.0).where(target >= 0, 0.0)
    per_frame = ((0.5 - y * scores.detach()).clamp(min=0) * (y != 0)).sum(-1) / (y != 0).sum(-1)
    assert loss.item() == pytest.approx(per_frame[counted].mean().item())
    nothing = torch.full((2, 3), -1)
    assert max_margin_loss(torch.zeros(2, 3), nothing).item() == 0.0


# -- PCA (Sec. 3.2, "Practical issues") ------------------------------------------------------


def test_pca_keeps_the_stated_energy_with_the_fewest_components() -> None:
    torch.manual_seed(0)
    features = torch.randn(300, 40) * torch.linspace(3, 0.1, 40)  # decaying variances
    centred = (features - features.mean(0)).double().numpy()
    eigen = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1]
    energy = np.cumsum(eigen) / eigen.sum()
    for target in (0.5, 0.9, 0.98):
        pca = PCA(40, 30).fit(features, energy=target)
        k = int(pca.num_components)
        assert energy[k - 1] >= target > (energy[k - 2] if k > 1 else 0)
        assert float(pca.explained_energy) == pytest.approx(energy[k - 1], rel=1e-6)
        out = pca(features)
        assert out.shape == (300, 30) and (out[:, k:] == 0).all()
    # without a target: max_components, and the projection is sklearn's up to sign
    sklearn = pytest.importorskip("sklearn.decomposition")
    ours = PCA(40, 10).fit(features)(features).double().numpy()
    theirs = sklearn.PCA(10).fit_transform(features.double().numpy())
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-4)
    with pytest.raises(RuntimeError, match="not fitted"):
        PCA(40, 10)(features)


def test_standardised_pca_gives_unit_sd_components_saved_as_buffers() -> None:
    """The hybrid's deviation: each component scaled to SD 1 on the fitted features."""
    torch.manual_seed(0)
    features = (torch.randn(400, 64) * torch.linspace(0.01, 0.001, 64)).softmax(1)
    pca = PCA(64, 20).fit(features, standardize=True)
    out = pca(features)
    torch.testing.assert_close(out.mean(0), torch.zeros(20), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(0), torch.ones(20), atol=1e-4, rtol=0)
    raw = PCA(64, 20).fit(features)(features)
    assert raw.std(0).max() < 0.05  # what the LSTMs saw before
    torch.testing.assert_close(out * pca.scale, raw, atol=1e-5, rtol=1e-4)
    sklearn = pytest.importorskip("sklearn.decomposition")
    theirs = sklearn.PCA(20, whiten=True).fit_transform(features.double().numpy())
    np.testing.assert_allclose(np.abs(out.double().numpy()), np.abs(theirs), atol=2e-3)
    # saved with the model (Hybrid: net.pca.scale), and loaded back
    state = pca.state_dict()
    assert "scale" in state and not torch.equal(state["scale"], torch.ones(20))
    again = PCA(64, 20)
    again.load_state_dict(state)
    torch.testing.assert_close(again(features), out)
    # a state from before the option projects as before (scale 1)
    old = PCA(64, 20)
    old.load_state_dict({k: v for k, v in PCA(64, 20).fit(features).state_dict().items()
                         if k != "scale"})  # fmt: skip
    torch.testing.assert_close(old(features), raw)
    assert "net.pca.scale" in Hybrid(aus=[1], backbone="resnet18", pca_components=8).state_dict()
    assert Hybrid(aus=[1], backbone="resnet18", pca_components=8).hparams.pca_standardize


def test_pca_keeps_no_more_components_than_the_data_rank() -> None:
    features = torch.randn(5, 20)
    pca = PCA(20, 16).fit(features)
    assert int(pca.num_components) == 4  # 5 centred points span 4 dimensions
    assert float(pca.explained_energy) == pytest.approx(1.0)


# -- the networks ----------------------------------------------------------------------------


def test_anet_cnn_gives_normalized_fc7_and_the_logits_of_anet() -> None:
    torch.manual_seed(0)
    cnn = SpatialCNN(3, "anet", in_size=64).eval()
    anet = ANet(3, in_size=64).eval()
    anet.load_state_dict(
        {
            **{f"conv.{k}": v for k, v in cnn.body[0].state_dict().items()},
            **{f"fc.{k}": v for k, v in cnn.body[3].state_dict().items()},
            **{f"classifier.{k}": v for k, v in cnn.head.state_dict().items()},
        }
    )
    images = torch.randn(2, 3, 64, 64)
    features, logits = cnn(images)
    torch.testing.assert_close(logits, anet(images))
    torch.testing.assert_close(features, anet.features(images, normalize=True))
    assert features.shape == (2, 4096)


def test_anet_he_initialisation_keeps_the_logits_in_a_sane_range() -> None:
    """ANet has no batch normalisation: under PyTorch's default initialisation the signal
    dies out before the logits; He's (the default) keeps it."""
    images = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    sd = {}
    for init in ("he", "pytorch"):
        torch.manual_seed(0)
        with torch.no_grad():
            sd[init] = float(ANet(12, in_size=64, init=init).eval()(images).std())
    assert 0.3 < sd["he"] < 3.0
    assert sd["pytorch"] < 0.05
    torch.manual_seed(0)
    default = ANet(12, in_size=64)
    assert default.fc[4].bias.abs().max() == 0  # He: zero biases
    fan_in = default.fc[4].weight.shape[1]
    he_std = (2 / fan_in) ** 0.5
    assert float(default.fc[4].weight.detach().std()) == pytest.approx(he_std, rel=0.02)
    cnn = SpatialCNN(3, "anet", in_size=64, anet_init="pytorch")
    assert cnn.head.bias.abs().max() > 0  # PyTorch's default: uniform biases
    assert Hybrid(aus=[1], pca_components=8, in_size=64).hparams.anet_init == "he"


def test_lstm_is_initialised_in_the_paper_range_bounded_and_causal() -> None:
    torch.manual_seed(0)
    lstm = TemporalLSTM(10, 4, hidden=16, layers=3).eval()
    assert all(p.abs().max() <= 0.08 for p in lstm.parameters())
    assert lstm.lstm.num_layers == 3 and lstm.lstm.dropout == 0.5
    x = torch.randn(2, 12, 10) * 10
    out = lstm(x)
    assert out.shape == (2, 12, 4) and out.abs().max() <= 1
    changed = x.clone()
    changed[:, 7:] = torch.randn(2, 5, 10)
    # a frame's score depends on the frames up to it, not on later ones
    torch.testing.assert_close(lstm(changed)[:, :7], out[:, :7])
    assert not torch.allclose(lstm(changed)[:, 7:], out[:, 7:])


def test_fusion_sees_l2_normalised_scores() -> None:
    torch.manual_seed(0)
    fusion = FusionNet(4, hidden=8)
    spatial, temporal = torch.randn(3, 4), torch.rand(3, 4) * 2 - 1
    out = fusion(spatial, temporal)
    torch.testing.assert_close(fusion(spatial * 7.5, temporal * 0.2), out)
    assert not torch.allclose(fusion(spatial, -temporal), out)


def test_moving_average_by_hand_at_the_video_boundaries() -> None:
    probs = torch.tensor([[0.0, 1.0], [0.3, 1.0], [0.6, 0.0], [0.9, 0.0], [0.3, 1.0]])
    # 3 frames: the first and last frames average the 2 frames that exist
    expected = torch.tensor(
        [
            [(0.0 + 0.3) / 2, 1.0],
            [(0.0 + 0.3 + 0.6) / 3, 2 / 3],
            [(0.3 + 0.6 + 0.9) / 3, 1 / 3],
            [(0.6 + 0.9 + 0.3) / 3, 1 / 3],
            [(0.9 + 0.3) / 2, 0.5],
        ]
    )
    torch.testing.assert_close(moving_average(probs, 3), expected)
    # 5 frames: frame 0 averages 0..2, frame 1 averages 0..3, frame 2 all five
    five = moving_average(probs, 5)[:, 0]
    torch.testing.assert_close(five[:3], torch.tensor([0.9 / 3, 1.8 / 4, 2.1 / 5]))
    torch.testing.assert_close(moving_average(probs, 1), probs)
    # a video shorter than the window: every frame averages the whole video
    torch.testing.assert_close(moving_average(probs[:2], 9), probs[:2].mean(0).expand(2, -1))
    with pytest.raises(ValueError, match="odd"):
        moving_average(probs, 4)
    assert Hybrid(aus=[1], backbone="resnet18", pca_components=8).hparams.smooth_frames == 9


def test_the_smoothed_head_averages_within_each_test_video() -> None:
    """The model smooths each test batch, one whole video: never across two videos."""
    model = Hybrid(aus=[1, 2], backbone="resnet18", pca_components=8, smooth_frames=3)
    model.trained[:] = torch.tensor([True, False, False])
    logits = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.5, -1.0], [3.0, 3.0]])
    videos = {0: torch.tensor([[0, 1]]), 1: torch.tensor([[2, 3]])}

    def heads(split: str, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        cnn = logits[rows[0]][None]
        return {"cnn": cnn, "lstm": torch.zeros_like(cnn), "fused": torch.zeros_like(cnn)}

    model.heads = heads  # type: ignore[method-assign]
    for rows in videos.values():
        probs = model._window_heads({"rows": rows}, "test")
        assert set(probs) == {"cnn", "cnn_smoothed"}
        own = torch.sigmoid(logits[rows[0]])
        torch.testing.assert_close(probs["cnn_smoothed"], own.mean(0).expand(2, -1))
    with pytest.raises(Exception, match="odd number of frames"):
        Hybrid(aus=[1], backbone="resnet18", pca_components=8, smooth_frames=4)


def test_config_uses_the_papers_min_active_aus_and_keeps_only_active_windows(
    cache: Path,
) -> None:
    """Sec. 4.2: "we omitted training sequences with less than 1.5 active AUs per frame":
    a window's mean number of present AUs per frame, below 1.5, leaves it out."""
    config = yaml.safe_load((CONFIGS / "hybrid.yaml").read_text())["data"]["init_args"]
    assert config["min_active_aus"] == 1.5
    tiny = {"synth": {"subjects": 6, "videos": 2, "frames": 16, "size": 32, "workers": 1},
            "image_size": 32, "crop_size": 28, "window": 8, "stride": 4, "burn_in": 2}  # fmt: skip
    data = SequenceDataModule(**{**config, **tiny})
    data.setup()
    index, _ = data.split("train")
    every = sequence_windows(data.segments("train"), 8, 4)
    kept = data.train_windows()
    assert 0 < len(kept) < len(every)
    assert all(active_aus_per_frame(index.occurrence[w]) >= 1.5 for w in kept)
    left_out = [w for w in every if not any(np.array_equal(w, k) for k in kept)]
    assert all(active_aus_per_frame(index.occurrence[w]) < 1.5 for w in left_out)


def test_table_has_the_paper_columns_for_the_trained_heads() -> None:
    scores = {"cnn/f1_mean": 0.5, "cnn/f1_AU1": 0.25, "cnn/event_f1_AU1": 0.125}
    scores |= {"fused/f1_mean": 0.6, "fused/f1_AU1": 0.75}
    rows = hybrid_table(scores, [1])
    header = ["AU", "F1-frame ANet", "F1-frame Ours", "F1-event ANet", "F1-event Ours"]
    assert rows[0] == [*header, "AUC ANet", "AUC Ours"]
    assert rows[1][:4] == ["1", "25.0", "75.0", "12.5"] and rows[2][:3] == ["Avg", "50.0", "60.0"]


# -- the staged fit ---------------------------------------------------------------------------


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_config_trains_the_three_stages_and_tests_every_head(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--config", str(CONFIGS / "hybrid.yaml"), *TINY]
    stages = ["--model.cnn_epochs=1", "--model.lstm_epochs=1", "--model.fusion_epochs=1"]
    # record where the fusion's training inputs come from
    fusion_splits: set[str] = set()
    sets: list[tuple[np.ndarray, np.ndarray, FusionSet]] = []
    original_heads, original_set = Hybrid.heads, Hybrid.fusion_set

    def recording_heads(self: Hybrid, split: str, rows: torch.Tensor) -> dict:
        if self.trainer.training and self.stage == "fusion":
            fusion_splits.add(split)
        return original_heads(self, split, rows)

    def recording_set(self: Hybrid) -> FusionSet:
        held_out = original_set(self)
        index, train_rows = self.trainer.datamodule.split("train")
        sets.append((index.subject[held_out.rows], index.subject[train_rows], held_out))
        return held_out

    monkeypatch.setattr(Hybrid, "heads", recording_heads)
    monkeypatch.setattr(Hybrid, "fusion_set", recording_set)
    main(["fit", *args, *stages, "--trainer.max_epochs=3"])
    (last,) = workdir.rglob("last.ckpt")
    state = _state(last)
    assert state["trained"].tolist() == [True, True, True]
    assert int(state["net.pca.num_components"]) == 16
    scale = state["net.pca.scale"]  # standardised PCA (the default), saved in the checkpoint
    assert scale.shape == (16,) and (scale < 1).all() and (scale[:-1] >= scale[1:]).all()
    # the fusion trained on the validation subjects' outputs only: the CNN and the LSTMs
    # (trained on the training split's frames and windows) never saw those subjects
    assert sets and fusion_splits <= {"val"}
    for fusion_subjects, cnn_subjects, held_out in sets:
        assert len(fusion_subjects) == len(held_out.target) > 0
        assert not set(fusion_subjects) & set(cnn_subjects)
    metrics = (last.parents[1] / "metrics.csv").read_text()
    heads = ("val/cnn/f1_mean", "val/lstm/f1_mean", "val/fused/f1_mean")
    for key in (*heads, "train/lstm_loss_epoch"):
        assert key in metrics
    main(["test", *args, f"--ckpt_path={last}"])
    (table,) = workdir.rglob("test_results.md")
    text = table.read_text()
    for column in ("F1-frame ANet", "F1-frame LSTM", "F1-frame Ours", "F1-event Ours"):
        assert column in text
    assert "F1-frame ANet-MA" in text and "F1-event ANet-MA" in text  # the temporal control
    assert "| Avg |" in text

    # stage reuse: the CNN (and PCA) of that run, only the LSTMs and fusion trained
    reuse = ["--model.cnn_epochs=0", "--model.lstm_epochs=1", "--model.fusion_epochs=0"]
    root = "--trainer.default_root_dir=reuse"
    main(["fit", *args, *reuse, "--trainer.max_epochs=1", f"--model.init_from={last}", root])
    (again,) = (workdir / "reuse").rglob("last.ckpt")
    new = _state(again)
    for key in state:
        if key.startswith("net.cnn."):
            torch.testing.assert_close(new[key], state[key])
    assert not torch.equal(new["net.lstm.out.weight"], state["net.lstm.out.weight"])
    other = ["--model.pca_components=8", f"--model.init_from={last}", "--trainer.max_epochs=1"]
    with pytest.raises(SystemExit, match="not a checkpoint of a hybrid run with this model"):
        main(["fit", *args, *reuse, *other, "--trainer.default_root_dir=other"])


def test_each_stage_ends_with_the_weights_of_its_best_validation_epoch() -> None:
    model = Hybrid(aus=[1, 2], backbone="resnet18", pca_components=8, cnn_epochs=3)
    trainer = SimpleNamespace(current_epoch=0)
    model._trainer = trainer  # _keep_best reads only the epoch
    snapshots = []
    for epoch, f1 in enumerate([0.2, 0.5, 0.1]):
        trainer.current_epoch = epoch
        with torch.no_grad():
            model.net.cnn.head.linear.weight.fill_(float(epoch))
        snapshots.append(model.net.cnn.head.linear.weight.clone())
        model._keep_best("cnn", f1)
    torch.testing.assert_close(model.net.cnn.head.linear.weight, snapshots[1])


def test_stage_errors_name_the_options(workdir: Path) -> None:
    args = ["--config", str(CONFIGS / "hybrid.yaml"), *TINY]
    with pytest.raises(SystemExit, match="cnn_epochs \\+ lstm_epochs \\+ fusion_epochs = 3"):
        main(["fit", *args, "--model.cnn_epochs=1", "--model.lstm_epochs=1",
              "--model.fusion_epochs=1", "--trainer.max_epochs=2"])  # fmt: skip
    with pytest.raises(SystemExit, match="the fusion stage needs a trained lstm stage"):
        main(["fit", *args, "--model.cnn_epochs=1", "--model.lstm_epochs=0",
              "--model.fusion_epochs=1", "--trainer.max_epochs=2"])  # fmt: skip
    with pytest.raises(SystemExit, match="fusion_inputs 'validation' trains the fusion"):
        main(["fit", *args, "--model.cnn_epochs=1", "--model.lstm_epochs=1",
              "--model.fusion_epochs=1", "--trainer.max_epochs=3",
              "--data.val_strategy=none"])  # fmt: skip
    with pytest.raises(SystemExit, match="needs data of class"):
        main(["fit", *args[:2], "--data=au_lightning.data.AUDataModule", *TINY[:3]])
    assert isinstance(Hybrid(cnn_epochs=0, backbone="resnet18", pca_components=8), Hybrid)


def test_cv_report_is_the_mean_over_folds_of_every_head(tmp_path: Path) -> None:
    model = Hybrid(aus=[1, 2], backbone="resnet18", pca_components=8)
    per_fold = {
        "part1": {"cnn/f1_AU1": 0.2, "cnn/f1_mean": 0.3, "fused/f1_AU1": 0.4},
        "part2": {"cnn/f1_AU1": 0.6, "cnn/f1_mean": 0.5, "fused/f1_AU1": 0.8},
    }
    per_fold["part1"]["fused/f1_mean"] = per_fold["part2"]["fused/f1_mean"] = 0.5
    md = model.write_cv_report(per_fold, {}, tmp_path)
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| AU | F1-frame ANet | F1-frame Ours |")
    assert lines[2].startswith("| 1 | 40.0 | 60.0 |")
    assert lines[-1].startswith("| Avg | 40.0 | 50.0 |")


def test_the_configured_lstm_optimizer_learns_a_separable_sequence_task() -> None:
    """RMSProp as configured (Sec. 4.2 read for Caffe: decay 0.9, no momentum) fits labels
    that a feature's sign gives, with the max-margin loss."""
    torch.manual_seed(0)
    model = Hybrid(aus=[1], backbone="resnet18", pca_components=16, lstm_hidden=64)
    model.net.lstm = TemporalLSTM(16, 1, hidden=64, layers=3, dropout=0.0)
    optimizer = model.configure_optimizers()[1]
    assert optimizer.defaults["momentum"] == 0 and optimizer.defaults["alpha"] == 0.9

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(8, 24, 16)
        return x, (x[..., :1] > 0.8).long()

    for _ in range(150):
        x, y = batch()
        loss = max_margin_loss(model.net.lstm(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = batch()
    with torch.no_grad():
        scores = model.net.lstm.eval()(x)
    positive, negative = scores[y == 1], scores[y == 0]
    assert (positive[:, None] > negative[None, :]).float().mean() > 0.8  # AUC
