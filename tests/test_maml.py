"""The MAML plugin (Lee et al. 2019): the paper's network, the meta-update of Alg. 1 against
an independent double loop, evaluation by adaptation, the baseline, and the shipped
configs through the CLI on a tiny SynthAU set."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.func import functional_call

from au_lightning import ConfigError, InnerLoop
from au_lightning.cli import main
from au_lightning.data import EpisodeDataModule
from au_maml import MAML, Conv4, MAMLBaseline, any_au_present, binary_bce

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SYNTH = {"subjects": 5, "videos": 1, "frames": 40, "size": 32, "seed": 0, "workers": 1}
TINY_DATA = {
    "dataset": "bp4d", "synth": SYNTH, "aus": "bp4d", "protocol": "loso", "fold": 0,
    "val_fraction": 0.25, "image_size": 16, "crop_size": 16, "tasks_per_batch": 4,
    "train_shots": 2, "shots": [1, 2], "query_shots": 2, "repeats": 3, "val_repeats": 1,
    "meta_batches": 2,
}  # fmt: skip
TINY_CLI = [
    "--data.init_args.synth={subjects: 5, videos: 1, frames: 40, size: 32, seed: 0, workers: 1}",
    "--data.val_fraction=0.25", "--data.image_size=16", "--data.crop_size=16",
    "--model.image_size=16", "--data.tasks_per_batch=4", "--data.train_shots=2",
    "--data.shots=[1, 2]", "--data.query_shots=2", "--data.repeats=3", "--data.val_repeats=1",
    "--data.meta_batches=2", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]  # fmt: skip


def _trainer(root: Path, **kwargs) -> L.Trainer:
    options = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False,
               "default_root_dir": root, "inference_mode": False}  # fmt: skip
    return L.Trainer(**(options | kwargs))


def test_conv4_is_the_network_of_section_3_1() -> None:
    net = Conv4(64)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 48, 32, 16]
    assert all(c.kernel_size == (5, 5) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 4
    assert net.fc.in_features == 16 * 4 * 4 and net.fc.out_features == 1
    assert net(torch.randn(3, 3, 64, 64)).shape == (3,)
    with pytest.raises(ConfigError, match="multiple of 16"):
        Conv4(40)


def test_the_baseline_labels_any_au_present() -> None:
    occurrence = torch.tensor([[1, 0, -1], [0, 0, 0], [0, -1, 0], [-1, 1, 1]])
    positive, known = any_au_present(occurrence)
    assert positive.tolist() == [True, False, False, True]
    assert known.tolist() == [True, True, False, True]  # unknown and none present: left out


class SGDMAML(MAML):
    """MAML whose outer update is plain SGD with learning rate 1: θ moves by -gradient."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def _double_loop_gradient(net: Conv4, batch: dict, alpha: float) -> dict[str, torch.Tensor]:
    """Alg. 1 lines 6-11 written out: θ_i = θ - α ∇L(θ; D[tr]), the mean query loss of θ_i,
    its gradient w.r.t. θ (second order), batch-norm statistics of each batch."""
    params = dict(net.named_parameters())
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    losses = []
    for sx, sy, qx, qy in zip(batch["support_image"], batch["support_label"],
                              batch["query_image"], batch["query_label"], strict=True):  # fmt: skip
        inner = F.binary_cross_entropy_with_logits(functional_call(net, (params, buffers), sx), sy)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        fast = {k: p - alpha * g for (k, p), g in zip(params.items(), grads, strict=True)}
        losses.append(
            F.binary_cross_entropy_with_logits(functional_call(net, (fast, buffers), qx), qy)
        )
    total = torch.stack(losses).mean()
    return dict(zip(params, torch.autograd.grad(total, list(params.values())), strict=True))


@pytest.mark.parametrize("backend", ["higher", "func"])
def test_a_training_step_is_the_meta_update_of_algorithm_1(
    backend: str, cache: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = SGDMAML(image_size=16, inner_lr=0.1, inner_optimizer="sgd", backend=backend,
                    eval_bn="running")  # fmt: skip
    data = EpisodeDataModule(**TINY_DATA)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    before = {k: v.detach().clone() for k, v in model.net.named_parameters()}
    model.net.train()
    expected = _double_loop_gradient(model.net, batch, alpha=0.1)
    _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, datamodule=data)
    for name, p in model.net.named_parameters():
        torch.testing.assert_close(before[name] - p.detach(), expected[name], atol=1e-5, rtol=1e-4)
    # the meta-batch's support images moved the running statistics, from θ (not from θ_i)
    assert not torch.equal(model.net.encoder[1].running_mean, torch.zeros(64))


@pytest.fixture(scope="module")
def trained(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> MAML:
    torch.manual_seed(0)
    model = MAML(image_size=16, eval_bn="running")  # gathers running statistics too
    trainer = _trainer(tmp_path_factory.mktemp("run"), max_steps=2, limit_val_batches=0)
    trainer.fit(model, datamodule=EpisodeDataModule(**TINY_DATA))
    return model


@pytest.mark.parametrize("eval_bn", ["batch", "running"])
def test_evaluation_adapts_per_episode_and_leaves_the_meta_model_unchanged(
    trained: MAML, eval_bn: str, tmp_path: Path
) -> None:
    model, trainer = trained, _trainer(tmp_path)
    model.eval_bn = eval_bn
    state = {k: v.clone() for k, v in model.state_dict().items()}
    data = EpisodeDataModule(**TINY_DATA)
    [val] = trainer.validate(model, datamodule=data, verbose=False)
    [scores_1, _] = trainer.test(model, datamodule=data, verbose=False)
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    assert 0 <= val["val/acc_step0"] <= 1 and 0 <= val["val/acc"] <= 1
    assert {"test/acc_1shot", "test/acc_1shot_step0", "test/acc_2shot"} <= set(scores_1)
    records = list(csv.DictReader((Path(trainer.default_root_dir) / "adaptation.csv").open()))
    data.setup("test")
    tasks = {(str(s), int(a)) for s, a in data.test_dataloader()[0].dataset.tasks}
    assert {(r["subject"], int(r["au"])) for r in records} == tasks
    assert {r["shots"] for r in records} == {"1", "2"}
    assert {int(r["step"]) for r in records} == set(range(model.adapt_steps + 1))
    assert all(int(r["episodes"]) == TINY_DATA["repeats"] for r in records)
    table = (Path(trainer.default_root_dir) / "test_results.md").read_text()
    assert table.startswith("| AU | 1-shot | 2-shot |") and "| AVG |" in table


def test_running_statistics_need_training_with_them(cache: Path, tmp_path: Path) -> None:
    model = MAML(image_size=16)  # eval_bn: batch; no running statistics are gathered
    _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(
        model, datamodule=EpisodeDataModule(**TINY_DATA)
    )
    assert int(model.net.encoder[1].num_batches_tracked) == 0
    model.eval_bn = "running"
    with pytest.raises(ConfigError, match="no running batch-norm statistics"):
        _trainer(tmp_path).validate(model, datamodule=EpisodeDataModule(**TINY_DATA))


def test_the_image_size_must_match_the_data(cache: Path, tmp_path: Path) -> None:
    data = EpisodeDataModule(**TINY_DATA)
    with pytest.raises(ConfigError, match=r"model\.image_size is 32 but data\.crop_size is 16"):
        _trainer(tmp_path, max_steps=1).fit(MAML(image_size=32), datamodule=data)


def test_the_baseline_needs_frames(cache: Path, tmp_path: Path) -> None:
    data = EpisodeDataModule(**TINY_DATA)
    with pytest.raises(ConfigError, match="train_on: frames"):
        _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(
            MAMLBaseline(image_size=16), datamodule=data
        )


def test_configs_fit_test_and_compare_through_the_cli(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("maml", "maml_baseline"):
        config = ["--config", str(CONFIGS / f"{name}.yaml"), *TINY_CLI]
        root = [f"--trainer.default_root_dir={workdir / name}"]
        main(["fit", *config, *root])
        main(["validate", *config, *root, "--ckpt_path=best"])  # adapts: inference mode off
        main(["test", *config, *root, "--ckpt_path=best"])
        printed = capsys.readouterr().out
        assert "| AU | 1-shot | 2-shot |" in printed
    runs = {
        name: next((workdir / name).rglob("adaptation.csv")).parent
        for name in ("maml_baseline", "maml")
    }
    main(["compare", str(runs["maml_baseline"]), str(runs["maml"]), "--out", "cmp"])
    table = (workdir / "cmp" / "comparison_results.md").read_text()
    assert table.startswith("| AU | 1-shot base | 1-shot ours | 2-shot base | 2-shot ours |")
    assert (workdir / "cmp" / "comparison_steps.png").is_file()


def test_compare_names_a_run_without_results(workdir: Path) -> None:
    with pytest.raises(SystemExit, match=r"no adaptation\.csv"):
        main(["compare", str(workdir), str(workdir)])


def test_cv_rotates_the_test_subject_and_joins_the_results(workdir: Path) -> None:
    three = "{subjects: 3, videos: 1, frames: 40, size: 32, seed: 0, workers: 1}"
    config = ["--config", str(CONFIGS / "maml.yaml"), *TINY_CLI]
    main(["cv", *config, f"--data.init_args.synth={three}", "--data.val_strategy=none",
          "--trainer.limit_val_batches=0", "--trainer.default_root_dir=cv_run"])  # fmt: skip
    rows = list(csv.DictReader((workdir / "cv_run" / "cv" / "adaptation.csv").open()))
    assert len({r["subject"] for r in rows}) == 3  # each subject tested once
    assert "| AVG |" in (workdir / "cv_run" / "cv" / "cv_results.md").read_text()


@pytest.mark.parametrize(
    ("name", "model", "expected"),
    [
        ("maml_paper", "au_maml.MAML", {"image_size": 64, "repeats": 500, "crop_size": 64}),
        ("maml_cross", "au_maml.MAML", {"protocol": "cross", "test_aus": "disfa8"}),
        ("maml_baseline", "au_maml.MAMLBaseline", {"train_on": "frames", "batch_size": 120}),
    ],
)
def test_the_shipped_configs_parse(
    name: str, model: str, expected: dict, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(CONFIGS / f"{name}.yaml"), "--print_config"])
    assert info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == model
    assert config["model"]["init_args"]["image_size"] == config["data"]["init_args"]["crop_size"]
    assert expected.items() <= (config["data"]["init_args"] | config["model"]["init_args"]).items()


def _hand_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float) -> dict:
    """θ − α∇θ L(θ; (x, y)) by hand (Alg. 1 line 8, Eq. 1), batch statistics of x."""
    params = dict(net.named_parameters())
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    loss = F.binary_cross_entropy_with_logits(functional_call(net, (params, buffers), x), y)
    grads = torch.autograd.grad(loss, list(params.values()))
    return {k: (p - alpha * g).detach() for (k, p), g in zip(params.items(), grads, strict=True)}


@pytest.mark.parametrize(
    ("cls", "config"), [(MAML, "maml"), (MAMLBaseline, "maml_baseline"), (MAML, None)]
)
def test_the_default_inner_step_is_plain_gradient_descent(cls: type, config: str | None) -> None:
    """The shipped defaults (and configs/maml*.yaml) adapt with θ − α∇L, Alg. 1 line 8: one
    step of the plugin's own adaptation, and for MAML its training inner loop, equal the
    step by hand (one Adam step would move every weight by about α instead)."""
    if config is None:
        model = cls(image_size=16)
    else:
        init = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())["model"]["init_args"]
        assert init["inner_optimizer"] == "sgd"
        model = cls(**(init | {"image_size": 16}))
    alpha = model.adaptation.lr
    assert model.adaptation.optimizer == "sgd" and alpha == float(model.adapt_lr)
    torch.manual_seed(0)
    sx, sy = torch.randn(10, 3, 16, 16), torch.tensor([1.0, 0.0] * 5)
    qx, qy = torch.randn(8, 3, 16, 16), torch.tensor([0.0, 1.0] * 4)
    model.net.train()
    fast = _hand_step(model.net, sx, sy, alpha)
    buffers = {k: v.clone() for k, v in model.net.named_buffers()}
    expected = functional_call(model.net, (fast, buffers), qx)
    _, adapted = model.adaptation.adaptation_curve(model.net, binary_bce, (sx, sy), qx, steps=1)
    torch.testing.assert_close(adapted, expected, atol=1e-5, rtol=1e-5)
    if cls is MAML:
        assert model.inner.optimizer == "sgd" and model.inner.steps == 1
        loss = model.inner.query_loss(model.net, binary_bce, (sx, sy), (qx, qy))
        torch.testing.assert_close(loss.detach(), binary_bce(expected, qy), atol=1e-6, rtol=1e-5)
    # Adam's first step is not this one: the test tells the two apart
    adam = InnerLoop(alpha, 1, "adam")
    _, moved = adam.adaptation_curve(model.net, binary_bce, (sx, sy), qx, steps=1)
    assert not torch.allclose(moved, expected, atol=1e-3)


def test_the_baseline_picks_its_adaptation_lr_on_validation(cache: Path, tmp_path: Path) -> None:
    """``adapt_lrs``: each candidate is scored on the validation episodes, the best (after
    ``adapt_steps`` steps) is kept in the checkpointed ``adapt_lr`` and test adapts with it."""
    torch.manual_seed(0)
    lrs = [1e-6, 0.1, 1.0]
    model = MAMLBaseline(image_size=16, adapt_lrs=lrs)
    data = EpisodeDataModule(**TINY_DATA)
    [val] = _trainer(tmp_path).validate(model, datamodule=data, verbose=False)
    scores = [val[f"val/acc_lr{a:g}"] for a in lrs]
    best = lrs[max(range(3), key=lambda i: (scores[i], -i))]
    assert val["val/adapt_lr"] == pytest.approx(best) and float(model.adapt_lr) == best
    assert val["val/acc"] == pytest.approx(max(scores))
    state = model.state_dict()
    assert float(state["adapt_lr"]) == best
    reloaded = MAMLBaseline(image_size=16, adapt_lrs=lrs)
    reloaded.load_state_dict(state)
    _trainer(tmp_path).test(reloaded, datamodule=data, verbose=False)
    assert reloaded.adaptation.lr == best
    with pytest.raises(ConfigError, match="adapt_lrs"):
        MAMLBaseline(adapt_lrs=[])
