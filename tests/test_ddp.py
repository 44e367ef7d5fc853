"""Every plugin under real DDP: 2 CPU processes (gloo, ``ddp_spawn``) against 1 process on
the same data (see tests/ddp.py for how the reference is built). Each test checks that the
ranks end with the same weights, that the 2-rank fit equals the reference (exactly, up to
float summation order, where the method allows it; within a stated tolerance where its
per-batch coupling makes 2 x B a different run from 1 x 2B), and that 2-process testing
scores every test item exactly once: its metrics and the table rank 0 writes equal one
process's on the same weights."""

from __future__ import annotations

import csv
import pickle
import signal
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from au_baseline import Baseline
from au_hybrid import Hybrid
from au_lightning.data import (
    AUDataModule,
    AuxiliaryDataModule,
    EpisodeDataModule,
    SequenceDataModule,
)
from au_lightning.distributed import SpooledSpawnLauncher, spool_spawn_results
from au_mal import MAL
from au_maml import MAML
from au_renet import RENet
from au_transfer import Transfer
from tests.ddp import (
    RankState,
    RankZeroStatistics,
    assert_scores_close,
    load_rank_states,
    trainer,
)
from tests.mal_data import TINY_DATA as MAL_DATA

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed missing"
)

SYNTH = {"subjects": 6, "videos": 1, "frames": 16, "size": 32, "seed": 3, "workers": 1}
#: subjects with enough frames of every AU for few-shot tasks
EPISODE_SYNTH = {"subjects": 5, "videos": 1, "frames": 40, "size": 32, "seed": 0, "workers": 1}
HYBRID_SYNTH = {"subjects": 6, "videos": 2, "frames": 16, "size": 32, "workers": 1}
STEPS = 4
#: float summation order differs between DDP's all-reduce and the reference's accumulation
WEIGHT_ATOL = 1e-5


def frame_data(**options) -> AUDataModule:
    """Frames of the BP4D layout, fold part1, no random crop or flip (both runs must see
    the same pixels); validation subjects held out."""
    settings = dict(dataset="bp4d", synth=SYNTH, aus="bp4d", protocol="bp4d_3fold",
                    fold="part1", image_size=28, crop_size=28, flip=False, batch_size=4,
                    val_strategy="subjects", seed=0)  # fmt: skip
    return AUDataModule(**(settings | options))


def read_table(path: Path) -> dict[str, list[str]]:
    with path.open() as f:
        return {row[0]: row[1:] for row in csv.reader(f)}


def fit_both(model_factory, data_factory, tmp_path: Path, reference_batches=None, **fit_options):
    """The 1-process reference (accumulating 2 batches) and the 2-rank run from the same
    initial weights; returns (reference model, DDP model, the DDP ranks' states, the
    initial state)."""
    torch.manual_seed(0)
    reference = model_factory()
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    ddp = type(reference)(**reference.hparams)
    ddp.load_state_dict(initial)
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single_dir.mkdir(), ddp_dir.mkdir()
    steps = {"max_steps": STEPS} if reference_batches is None else {}
    reference_options = fit_options | (
        {} if reference_batches is None else {"limit_train_batches": reference_batches}
    )
    trainer(single_dir, 1, [RankZeroStatistics()], accumulate_grad_batches=2, **steps,
            **reference_options).fit(reference, datamodule=data_factory())  # fmt: skip
    trainer(ddp_dir, 2, [RankState(ddp_dir)], **steps, **fit_options).fit(
        ddp, datamodule=data_factory()
    )
    return reference, ddp, load_rank_states(ddp_dir, 2), initial


def assert_ranks_equal_reference(reference: L.LightningModule, ranks: list[dict]) -> None:
    """Both ranks hold the same parameters, and rank 0's state equals the reference's up to
    summation order. (Each rank's BN running statistics follow its own last batch, rank 0's
    are kept; ``num_batches_tracked`` counts the reference's micro-batches, twice the
    steps.)"""
    expected = reference.state_dict()
    parameters = {name for name, _ in reference.named_parameters()}
    for name, value in ranks[0].items():
        if name in parameters:
            assert torch.equal(value, ranks[1][name]), name
        if not name.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, expected[name], atol=WEIGHT_ATOL, rtol=1e-4)


def evaluate_both(
    model: L.LightningModule, data_factory, tmp_path: Path, **options
) -> dict[str, float]:
    """Test ``model`` in 1 and in 2 processes; the metrics and rank 0's table agree (same
    weights: only the sharding differs). Returns the 1-process metrics."""
    single_dir, ddp_dir = tmp_path / "test_single", tmp_path / "test_ddp"
    single_dir.mkdir(parents=True), ddp_dir.mkdir()
    (single,) = trainer(single_dir, 1, **options).test(model, datamodule=data_factory())
    (ddp,) = trainer(ddp_dir, 2, **options).test(model, datamodule=data_factory())
    assert_scores_close(ddp, single, atol=1e-6)
    assert read_table(ddp_dir / "test_results.csv") == read_table(single_dir / "test_results.csv")
    return single


class SGDBaseline(Baseline):
    """The baseline with plain SGD: equal gradients give equal weights (Adam's g / sqrt(g^2)
    turns the float noise of a near-zero gradient into a full step)."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_baseline_two_ranks_equal_one_process(cache: Path, tmp_path: Path) -> None:
    def model() -> SGDBaseline:
        return SGDBaseline(aus="bp4d", in_size=28)

    reference, ddp, ranks, initial = fit_both(model, frame_data, tmp_path, limit_val_batches=0)
    assert_ranks_equal_reference(reference, ranks)
    head = "net.head.linear.weight"
    assert not torch.allclose(ranks[0][head], initial[head].double())
    evaluate_both(ddp, frame_data, tmp_path)


class SGDRENet(RENet):
    """RE-Net with plain SGD (see :class:`SGDBaseline`)."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_renet_two_ranks_equal_one_process(cache: Path, tmp_path: Path) -> None:
    # every AU in every batch (the random AU of strategy "random" is drawn per rank); 4 AUs,
    # as each AU is a pass of the batch
    aus = [1, 2, 4, 12]

    def model() -> SGDRENet:
        return SGDRENet(aus=aus, strategy="all")

    data = partial(frame_data, aus=aus)
    reference, ddp, ranks, initial = fit_both(model, data, tmp_path, limit_val_batches=0)
    assert_ranks_equal_reference(reference, ranks)
    gamma = "net.backbone.bn1.weight"  # the first AU-specific BN's γ, one row per AU
    assert not torch.allclose(ranks[0][gamma], initial[gamma].double())
    evaluate_both(ddp, data, tmp_path)


def test_transfer_with_mlros_and_thresholds_two_ranks_equal_one_process(
    cache: Path, tmp_path: Path
) -> None:
    """The paper's SGD with momentum, MLROS batches, selective learning, and thresholds
    searched on the validation subjects (sharded across the ranks, gathered by the search)."""

    def model() -> Transfer:
        return Transfer(aus="bp4d", backbone="resnet18", pooling="avg", in_size=28,
                        threshold_search=True)  # fmt: skip

    def data() -> AUDataModule:
        return frame_data(sampler="mlros", sampler_options={"percentage": 25})

    # one epoch of 3 steps (6 batches in the reference), then validation tunes thresholds
    reference, ddp, ranks, initial = fit_both(
        model, data, tmp_path, max_epochs=1, limit_train_batches=3, reference_batches=6
    )
    assert_ranks_equal_reference(reference, ranks)
    assert not torch.equal(ranks[0]["tuned_thresholds"], initial["tuned_thresholds"].double())
    scores = evaluate_both(ddp, data, tmp_path)
    assert "test/score_mean" in scores and "test/untuned/f1_mean" in scores


class SGDMAML(MAML):
    """MAML with SGD inner and outer steps (see :class:`SGDBaseline`)."""

    def __init__(self) -> None:
        super().__init__(image_size=16, inner_optimizer="sgd", inner_lr=0.1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_maml_adaptation_tests_every_episode_once(cache: Path, tmp_path: Path) -> None:
    """Training: tests/test_maml_ddp.py. Testing: each rank adapts to its share of the test
    episodes; the accuracies per step and the adaptation.csv rank 0 writes equal one
    process's."""
    data = partial(
        EpisodeDataModule, dataset="bp4d", synth=EPISODE_SYNTH, aus="bp4d", protocol="loso",
        val_strategy="none", image_size=16, crop_size=16, shots=[1, 2], query_shots=2,
        repeats=2, tasks_per_batch=4,
    )  # fmt: skip
    torch.manual_seed(0)
    model = SGDMAML()
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single_dir.mkdir(), ddp_dir.mkdir()
    # MAML adapts at test time, and in float32 (higher's inner loop)
    results = {}
    for name, devices, out in (("single", 1, single_dir), ("ddp", 2, ddp_dir)):
        per_loader = trainer(out, devices, precision="32-true", inference_mode=False).test(
            model, datamodule=data()
        )
        results[name] = {k: v for scores in per_loader for k, v in scores.items()}
    single, ddp = results["single"], results["ddp"]
    assert_scores_close(ddp, single, atol=1e-6)
    rows = (ddp_dir / "adaptation.csv").read_text().splitlines()
    assert sorted(rows) == sorted((single_dir / "adaptation.csv").read_text().splitlines())
    assert len(rows) > 1


def test_mal_ranks_share_theta_and_psi(cache: Path, tmp_path: Path) -> None:
    """MAL under DDP: θ goes through DDP's reducer, ψ (whose gradient comes from
    autograd.grad, which DDP never sees) is averaged by the plugin.

    Its sample weights are normalised over each rank's batch and every rank takes its
    virtual step on its own batch, so 2 ranks of B are not one process of 2B (and on this
    tiny reserve ψ's meta-gradient is large enough that the two runs part at once). So:
    (1) on sharded data both ranks end with the same θ and ψ, which fails if ψ is not
    synchronised; (2) with every rank given the same batches (Lightning's sampler off, our
    samplers then plan the whole epoch on each rank), 2 ranks end equal to one process:
    the synchronisation is a mean, nothing counted twice, ψ broadcast from the start."""
    # no random crop or flip: the spawned ranks' random streams are not the reference's
    data = partial(AuxiliaryDataModule, **(MAL_DATA | {"image_size": 16, "crop_size": 16,
                                                      "flip": False}))  # fmt: skip
    torch.manual_seed(0)
    reference = MAL(backbone="resnet18")
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    runs = {}
    for name, devices, options in (
        ("sharded", 2, {}),
        ("same_batches", 2, {"use_distributed_sampler": False}),
        ("single", 1, {}),
    ):
        model = MAL(**reference.hparams)
        model.load_state_dict(initial)
        out = tmp_path / name
        out.mkdir()
        trainer(out, devices, [RankState(out)], max_steps=STEPS, limit_val_batches=0,
                **options).fit(model, datamodule=data())  # fmt: skip
        runs[name] = load_rank_states(out, devices)
        if name == "sharded":
            sharded = model
    parameters = [name for name, _ in reference.named_parameters()]
    psi = [n for n in parameters if n.startswith("meta_net.")]
    for name in parameters:
        assert torch.equal(runs["sharded"][0][name], runs["sharded"][1][name]), name
        torch.testing.assert_close(
            runs["same_batches"][0][name], runs["single"][0][name], atol=WEIGHT_ATOL, rtol=1e-4
        )
    assert any(not torch.equal(runs["single"][0][n], initial[n].double()) for n in psi)
    assert (tmp_path / "sharded" / "training_curves.csv").is_file()  # rank 0's only
    evaluate_both(sharded, data, tmp_path)


def test_hybrid_stages_under_ddp(cache: Path, tmp_path: Path) -> None:
    """The hybrid's three stages under DDP, which must be told that each stage leaves the
    other stages' parameters unused. As for MAL (its steps are manual too): on sharded data
    both ranks end with the same CNN, PCA, LSTMs and fusion; given the same batches, 2 ranks
    end equal to one process; and testing whole videos on 2 ranks gives the frame and event
    F1 of one process."""
    data = partial(SequenceDataModule, dataset="bp4d", synth=HYBRID_SYNTH, aus="bp4d",
                   protocol="bp4d_3fold", fold="part1", image_size=28, crop_size=28,
                   flip=False, batch_size=4, window=8, stride=4, burn_in=2,
                   sequences_per_batch=2)  # fmt: skip
    torch.manual_seed(0)
    # with the cnn_smoothed control (smooth_frames 9) its test results are over 64 KiB,
    # which hung Lightning's own spawn launcher (au_lightning.distributed.SpooledSpawnLauncher)
    reference = Hybrid(aus="bp4d", backbone="resnet18", in_size=28, cnn_epochs=1, lstm_epochs=1,
                       fusion_epochs=1, cnn_optimizer="adam", pca_components=8, lstm_hidden=8,
                       fusion_hidden=8, lstm_dropout=0.0, smooth_frames=9)  # fmt: skip
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    runs = {}
    for name, devices, options in (
        ("sharded", 2, {"strategy": "ddp_spawn_find_unused_parameters_true"}),
        ("same_batches", 2, {"strategy": "ddp_spawn_find_unused_parameters_true",
                             "use_distributed_sampler": False}),
        ("single", 1, {}),
    ):  # fmt: skip
        model = Hybrid(**reference.hparams)
        model.load_state_dict(initial)
        out = tmp_path / name
        out.mkdir()
        trainer(out, devices, [RankState(out)], max_epochs=3, limit_train_batches=3,
                **options).fit(model, datamodule=data())  # fmt: skip
        runs[name] = load_rank_states(out, devices)
        if name == "sharded":
            sharded = model
    assert runs["sharded"][0]["trained"].all()
    for name, _ in reference.named_parameters():
        assert torch.equal(runs["sharded"][0][name], runs["sharded"][1][name]), name
    for name, value in runs["single"][0].items():
        if name.startswith("net."):
            torch.testing.assert_close(
                runs["same_batches"][0][name], value, atol=WEIGHT_ATOL, rtol=1e-4
            )
    assert torch.equal(runs["sharded"][0]["net.pca.mean"], runs["sharded"][1]["net.pca.mean"])
    evaluate_both(sharded, data, tmp_path)


class ManyScores(L.LightningModule):
    """Logs ``count`` test scores, more than Lightning's spawn launcher can return through
    its pipe (64 KiB pickled)."""

    def __init__(self, count: int = 3000) -> None:
        super().__init__()
        self.count = count
        self.layer = torch.nn.Linear(2, 1)

    def on_test_epoch_start(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64)

    def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.total = self.total + self.layer(batch[0]).sum()

    def on_test_epoch_end(self) -> None:
        total = self.all_gather(self.total).sum()  # one collective, not one per score
        self.log_dict({f"test/score{i}": total + i for i in range(self.count)})


def test_spawned_ranks_return_results_over_the_pipe_buffer(tmp_path: Path) -> None:
    """With Lightning's launcher, 2-rank ``ddp_spawn`` never returns once rank 0's result is
    over the 64 KiB pipe buffer (the hybrid's test with its cnn_smoothed control did). The
    project's launcher returns it: every score, equal to one process's. SIGALRM ends the
    test instead of hanging if it regresses."""
    torch.manual_seed(0)
    model = ManyScores()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 2, dtype=torch.float64)), batch_size=2
    )
    (single,) = trainer(tmp_path / "single", 1).test(model, loader, verbose=False)
    spawned = trainer(tmp_path / "ddp", 2)
    assert type(spawned.strategy.launcher) is SpooledSpawnLauncher
    assert len(pickle.dumps(single)) > 65_536  # the case Lightning's launcher hangs on

    def stop(signum: int, frame: object) -> None:
        for process in spawned.strategy.launcher.procs:
            process.kill()
        raise TimeoutError("2-rank test did not return in 300 s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(300)
    try:
        (ddp,) = spawned.test(model, loader, verbose=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert_scores_close(ddp, single, atol=1e-9)
    assert len(ddp) == model.count


def test_only_spawning_strategies_get_the_spooled_launcher(tmp_path: Path) -> None:
    script = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    before = script.strategy.launcher
    assert spool_spawn_results(script).strategy.launcher is before
    for strategy in ("ddp_spawn", "ddp_fork"):
        spawned = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, logger=False)
        launcher = spool_spawn_results(spawned).strategy.launcher
        assert type(launcher) is SpooledSpawnLauncher
        assert launcher._start_method == strategy.removeprefix("ddp_")
