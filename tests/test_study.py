"""The study runner's reading of run outputs and its claim rows (bench/study.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import study


def write_metrics(runs: Path, name: str, values: dict[int, dict[str, float]]) -> None:
    for seed, metrics in values.items():
        directory = runs / "cpu" / name / f"seed{seed}"
        directory.mkdir(parents=True)
        (directory / "metrics.json").write_text(json.dumps({**metrics, "seconds": 60.0}))


def test_read_detection_takes_f1_at_05_and_at_tuned_thresholds(tmp_path: Path) -> None:
    run = tmp_path / "lightning_logs" / "version_1"
    run.mkdir(parents=True)
    (run / "test_results.csv").write_text(
        "AU,F1,accuracy,AUC,F1 untuned,threshold\n"
        "AU2,40.0,90.0,80.0,20.0,0.3\n"
        "AU15,60.0,80.0,70.0,30.0,0.2\n"
        "AU1,50.0,85.0,75.0,70.0,0.5\n"
        "mean,50.0,85.0,75.0,40.0,\n"
    )
    m = study.read_detection(tmp_path)
    assert m["f1"] == pytest.approx(0.40) and m["f1_tuned"] == pytest.approx(0.50)
    assert m["auc"] == pytest.approx(0.75) and m["auc_AU15"] == pytest.approx(0.70)
    # the minority AUs present (2 and 15) at 0.5: (0.20 + 0.30) / 2
    assert m["f1_minority"] == pytest.approx(0.25)


def test_claim_rows_pair_by_seed_and_give_verdicts(tmp_path: Path) -> None:
    write_metrics(tmp_path, "renet", {0: {"f1": 0.50}, 1: {"f1": 0.52}, 2: {"f1": 0.48}})
    write_metrics(
        tmp_path, "resnet18", {0: {"f1": 0.40}, 1: {"f1": 0.43}, 2: {"f1": 0.37}, 3: {"f1": 0.9}}
    )
    claim = study.Claim("p", "RE-Net > ResNet-18", "renet", "resnet18", "f1")
    header, row = study.claim_rows([claim], [0, 1, 2, 3], "cpu", tmp_path, "cmd")
    # seed 3 has no RE-Net run: pairs are seeds 0-2, differences 0.10, 0.09, 0.11
    assert header[4].startswith("difference") and row[5] == "3"
    assert row[2:4] == ["50.0", "40.0"] and row[4].startswith("+10.0 [")
    assert row[6] == "holds"


def test_claim_rows_compare_two_metrics_of_the_same_runs(tmp_path: Path) -> None:
    runs = {0: {"f1": 0.4, "f1_tuned": 0.35}, 1: {"f1": 0.5, "f1_tuned": 0.45}}
    runs[2] = {"f1": 0.45, "f1_tuned": 0.41}
    write_metrics(tmp_path, "transfer-balanced", runs)
    claim = study.Claim(
        "p", "t", "transfer-balanced", "transfer-balanced", "f1_tuned", theirs_metric="f1"
    )
    _, row = study.claim_rows([claim], [0, 1, 2], "cpu", tmp_path, "cmd")
    assert row[6] == "fails"  # -5, -5, -4


def test_claim_without_runs_is_reported_not_run(tmp_path: Path) -> None:
    claim = study.Claim("p", "t", "mal", "mtl", "f1")
    _, row = study.claim_rows([claim], [0, 1, 2], "cpu", tmp_path, "cmd")
    assert row[4] == row[6] == "not run"


def test_read_hybrid_takes_every_heads_mean_row_from_the_plugins_table(tmp_path: Path) -> None:
    from au_hybrid.results import hybrid_table

    scores = {}
    for i, head in enumerate(("cnn", "cnn_smoothed", "lstm", "fused")):
        for metric, base in (("f1", 0.30), ("event_f1", 0.10), ("auc", 0.60)):
            scores[f"{head}/{metric}_AU1"] = base + i / 100
            scores[f"{head}/{metric}_mean"] = base + i / 100 + 0.005
    run = tmp_path / "lightning_logs" / "version_1"
    run.mkdir(parents=True)
    rows = hybrid_table(scores, [1])
    (run / "test_results.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    m = study.read_hybrid(tmp_path)
    assert m["event_f1_cnn"] == pytest.approx(0.105, abs=1e-3)  # the Avg row, not AU1's
    assert m["f1_fused"] == pytest.approx(0.335, abs=1e-3)
    assert m["auc_lstm"] == pytest.approx(0.625, abs=1e-3)
    assert m["event_f1_cnn_smoothed"] == pytest.approx(0.115, abs=1e-3)
    assert len(m) == 12


def test_parallel_jobs_come_set_and_trunk_first_then_whole_groups(tmp_path: Path) -> None:
    write_metrics(tmp_path / "x", "resnet18", {1: {"f1": 0.5}})  # in another budget: no effect
    done = tmp_path / "paper" / "maml" / "seed1"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    groups = [["resnet18", "resnet18-scratch"], ["maml", "resnet18"]]
    jobs = study.study_jobs(groups, [0, 1], "paper", tmp_path, lanes=4)
    names = [j.name for j in jobs]
    assert names == [
        "synth-population", "synth-detection", "synth-fewshot", "trunk-aus",
        "resnet18:0", "resnet18-scratch:0", "resnet18:1", "resnet18-scratch:1",
        "maml:0",  # maml:1 is done; resnet18 is queued once per seed
    ]  # fmt: skip
    by_name = {j.name: j for j in jobs}
    assert by_name["trunk-aus"].needs == ("synth-population",)
    assert by_name["resnet18:0"].needs == ("synth-detection", "trunk-aus")
    assert by_name["resnet18-scratch:0"].needs == ("synth-detection",)
    assert by_name["maml:0"].needs == ("synth-fewshot",)
    # the paper budget decodes the sets its runs read at 256 px once; MAML reads 32 px
    assert "--cache-images" in by_name["synth-detection"].command
    assert "--cache-images" not in by_name["synth-fewshot"].command
    assert by_name["resnet18:0"].command[-2:] == ["--run", "resnet18:0"]
    assert by_name["resnet18:0"].env == {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 4))}


def test_a_run_in_the_archive_is_not_trained_again(tmp_path: Path, monkeypatch) -> None:
    import au_lightning.cli

    def refuse(argv):
        raise AssertionError(f"trained again: {argv}")

    monkeypatch.setattr(au_lightning.cli, "main", refuse)
    write_metrics(tmp_path / "archive", "stl", {1: {"f1": 0.3}})
    metrics = study.train("stl", 1, "cpu", tmp_path / "runs", tmp_path / "archive")
    assert metrics["f1"] == 0.3
    jobs = study.study_jobs([["stl"]], [0, 1], "cpu", tmp_path / "runs", 2, tmp_path / "archive")
    assert [j.name for j in jobs if ":" in j.name] == ["stl:0"]
    assert "--archive" in jobs[-1].command


def test_paper_budget_runs_on_the_gpu_from_a_gpu_trained_trunk(tmp_path: Path, monkeypatch):
    asked = []

    def trunk(spec, device="cpu", workers=0):
        asked.append((spec, device, workers))
        return tmp_path / "trunk.pt"

    monkeypatch.setattr(study, "ensure_synth_trunk", trunk)
    budget = study.BUDGETS["paper"]
    options = study.run_options("renet", 0, budget, tmp_path, tmp_path / "o.yaml")
    assert {"--trainer.accelerator=gpu", "--trainer.precision=bf16-mixed"} <= set(options)
    assert {"--data.image_size=256", "--data.crop_size=224", "--trainer.max_epochs=20"} <= set(
        options
    )
    assert f"--model.pretrained={tmp_path / 'trunk.pt'}" in options
    ((spec, device, workers),) = asked
    assert (spec.task, spec.image_size, spec.crop_size, device, workers) == (
        "aus", 256, 224, "cuda", 8
    )  # fmt: skip
    # MAML keeps its 64-px set and trains from scratch: no trunk
    options = study.run_options("maml", 0, budget, tmp_path, tmp_path / "o.yaml")
    assert len(asked) == 1 and '"size": 64' in next(o for o in options if "synth" in o)
    # the smoke budget's batch limits come last, after the variant's own options
    smoke = study.run_options("resnet18-scratch", 0, study.BUDGETS["smoke"], tmp_path, tmp_path)
    assert smoke[-3:] == list(study.BUDGETS["smoke"].extra)
    assert "--trainer.accelerator=gpu" not in smoke


def test_new_au_runs_start_from_a_trunk_that_never_read_the_aus_labels(tmp_path: Path, monkeypatch):
    asked = []

    def trunk(spec, device="cpu", workers=0):
        asked.append(spec)
        return tmp_path / f"trunk{len(asked)}.pt"

    monkeypatch.setattr(study, "ensure_synth_trunk", trunk)
    budget = study.BUDGETS["cpu"]
    renet = study.run_options("renet-without-AU23", 0, budget, tmp_path, tmp_path / "o.yaml")
    study.run_options("resnet18", 0, budget, tmp_path, tmp_path / "o.yaml")
    assert [(s.task, s.withheld_aus) for s in asked] == [("aus", (23,)), ("aus", ())]
    assert asked[0].population == asked[1].population  # the same identities, one AU less
    assert {"--model.unseen_aus=[23]", "--model.unseen_relation=labels"} <= set(renet)
    jobs = study.study_jobs([["renet-without-AU23", "resnet18-AU23-trunk"]], [0], "cpu",
                            tmp_path, lanes=2)  # fmt: skip
    by_name = {j.name: j for j in jobs}
    assert by_name["trunk-aus-without-AU23"].command[-2:] == ["--trunk", "aus-without-AU23"]
    assert by_name["resnet18-AU23-trunk:0"].needs == ("synth-detection", "trunk-aus-without-AU23")


def test_mean_auc_without_one_au(tmp_path: Path) -> None:
    metrics = {"auc_AU1": 0.9, "auc_AU2": 0.7, "auc_AU23": 0.1, "auc": 0.567, "f1_AU1": 0.3}
    assert study.metric_value(metrics, "auc_without_AU23") == pytest.approx(0.8)
    assert study.metric_value(metrics, "auc_AU23") == 0.1
    assert study.metric_value(metrics, "auc_without_AU9") == pytest.approx(1.7 / 3)


def test_new_au_transfer_row_by_hand(tmp_path: Path) -> None:
    """bench/renet_new_au.py: AU23's output is exactly Eq. 5's ω-weighted sum of the other
    AUs' logits here, so its AUC equals that sum's and their correlation is 1; the label
    column is worked by hand; a frame whose AU23 label is unknown is left out."""
    import numpy as np
    import renet_new_au

    (tmp_path / "relation.csv").write_text(
        "AU,AU1,AU2,AU23\nAU1,1,0,0.5\nAU2,0,1,-0.25\nAU23,0.5,-0.25,1\n"
    )
    logits = {1: [2.0, -1.0, -2.0, -2.0, 1.0], 2: [-1.0, 1.5, 0.0, 0.5, 2.0]}
    logits[23] = [0.5 * a - 0.25 * b for a, b in zip(logits[1], logits[2], strict=True)]
    labels = {  # AU1, AU2, AU23 of each frame; the last frame's AU23 is unknown
        "a": [1, 0, 1], "b": [0, 1, 0], "c": [0, 0, 1], "d": [0, 0, 0], "e": [1, 1, -1],
    }  # fmt: skip
    lines = ["path,p_AU1,p_AU2,p_AU23"]
    for i, path in enumerate(labels):
        probs = [1 / (1 + np.exp(-logits[au][i])) for au in (1, 2, 23)]
        lines.append(",".join([path, *(f"{q:.12f}" for q in probs)]))
    (tmp_path / "predictions.csv").write_text("\n".join(lines) + "\n")
    frames = renet_new_au.scores(
        tmp_path / "predictions.csv",
        tmp_path / "relation.csv",
        {k: np.array(v, dtype=np.int8) for k, v in labels.items()},
    )
    own, composed, oracle, corr = renet_new_au.transfer_row(*frames, 23)
    # AU23 positives a, c; negatives b, d. Logits: a 1.25, c -1, b -0.875, d -1.125: 3 / 4
    assert own == composed == 0.75
    # ω · labels: a 0.5, c 0, b -0.25, d 0: pairs (a>b, a>d, c>b, c=d) = 3.5 / 4
    assert oracle == pytest.approx(0.875)
    assert corr == pytest.approx(1.0)
    # per edge: AU1's label ranks AU23 at (a 1, c 0 | b 0, d 0) = 3 / 4; AU2's prediction
    # (logits a -1, c 0 | b 1.5, d 0.5) ranks every negative above every positive: 0
    au1, au2 = renet_new_au.edge_rows(*frames, 23)
    assert au1[:3] == (1, 0.5, 0.75) and au2[:2] == (2, -0.25) and au2[3] == 0.0
