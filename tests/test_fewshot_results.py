"""Few-shot evaluation: EpisodeAccuracy (the per-task, per-step accuracy behind Lee et al.'s
tables) and the tables and figures made from its records, against hand-worked numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from au_lightning import EpisodeAccuracy, fewshot_results
from au_lightning.fewshot_results import AdaptationRecord
from au_lightning.reports import PALETTE


def test_episode_accuracy_pools_episodes_per_task_and_step() -> None:
    metric = EpisodeAccuracy(num_tasks=3, steps=1)
    metric.update(torch.tensor([0, 1]), torch.tensor([[10, 15], [5, 5]]), 20)
    metric.update(torch.tensor([0]), torch.tensor([[12, 20]]), 20)
    accuracy = metric.compute()
    assert accuracy[0].tolist() == [22 / 40, 35 / 40]
    assert accuracy[1].tolist() == [5 / 20, 5 / 20]
    assert torch.isnan(accuracy[2]).all()  # no episode: unknown, not 0
    assert metric.episodes.tolist() == [2, 1, 0]


def test_episode_accuracy_rejects_a_wrong_shape_and_task() -> None:
    metric = EpisodeAccuracy(num_tasks=2, steps=2)
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        metric.update(torch.tensor([0]), torch.tensor([[1, 2]]), 4)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        metric.update(torch.tensor([2]), torch.tensor([[1, 2, 3]]), 4)


def _records(name_offset: float) -> list[AdaptationRecord]:
    """Two subjects x two AUs, 1 and 5 shots, steps 0..2; accuracy = a readable formula."""
    out = []
    for shots in (1, 5):
        for s, subject in enumerate(("F001", "M002")):
            for au in (1, 12):
                for step in range(3):
                    acc = 0.5 + name_offset + 0.01 * shots + 0.02 * step + 0.1 * s + au / 1000
                    out.append(AdaptationRecord(shots, subject, au, step, acc, 7))
    return out


def test_adaptation_table_is_tables_1_to_3_of_the_paper() -> None:
    base, ours = _records(0.0), _records(0.1)
    rows = fewshot_results.adaptation_table({"base": base, "ours": ours})
    assert rows[0] == ["AU", "1-shot base", "1-shot ours", "5-shot base", "5-shot ours"]
    # AU1, 1-shot, base, last step (2): mean over subjects of 0.5 + .01 + .04 + {0, .1} + .001
    assert rows[1][:2] == ["AU1", f"{0.5 + 0.01 + 0.04 + 0.05 + 0.001:.2f}"]
    au12_5shot_ours = 0.5 + 0.1 + 0.05 + 0.04 + 0.05 + 0.012
    assert rows[2] == ["AU12", *rows[2][1:4], f"{au12_5shot_ours:.2f}"]
    assert rows[-1][0] == "AVG" and len(rows) == 4
    at_step0 = fewshot_results.adaptation_table({"base": base}, step=0)
    assert at_step0[0] == ["AU", "1-shot", "5-shot"]
    assert at_step0[1][1] == f"{0.5 + 0.01 + 0.05 + 0.001:.2f}"


def test_curves_and_per_subject_means() -> None:
    records = _records(0.0)
    curve = fewshot_results.step_curve(records, 5)
    assert np.allclose(np.diff(curve), 0.02)
    subjects = fewshot_results.per_subject_accuracy(records, 1, 2)
    assert math.isclose(subjects["M002"] - subjects["F001"], 0.1)


def test_records_round_trip_through_the_csv(tmp_path: Path) -> None:
    accuracy = np.array([[0.5, 0.75], [np.nan, np.nan]])
    records = fewshot_results.adaptation_records(
        accuracy, [("F001", 1), ("F001", 2)], 5, np.array([4, 0])
    )
    assert records == [
        AdaptationRecord(5, "F001", 1, 0, 0.5, 4),
        AdaptationRecord(5, "F001", 1, 1, 0.75, 4),
    ]  # the task without episodes is left out
    path = fewshot_results.write_adaptation_csv(records, tmp_path / "adaptation.csv")
    assert fewshot_results.read_adaptation_csv(path) == records


def test_a_bad_csv_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "adaptation.csv"
    path.write_text("shots,subject,au,step,accuracy,episodes\n5,F001,1,0,0.5,4\n5,F001,x,0,1,4\n")
    with pytest.raises(ValueError, match=r"adaptation.csv, row 3"):
        fewshot_results.read_adaptation_csv(path)
    path.write_text("a,b\n")
    with pytest.raises(ValueError, match="expected the header"):
        fewshot_results.read_adaptation_csv(path)


def test_report_writes_the_table_and_both_figures(tmp_path: Path) -> None:
    paths = fewshot_results.write_adaptation_report(
        {"base": _records(0.0), "ours": _records(0.1)}, tmp_path, "cmp"
    )
    names = sorted(p.name for p in paths)
    assert names == [
        "cmp_results.csv", "cmp_results.md", "cmp_steps.png", "cmp_subjects.png"
    ]  # fmt: skip
    assert "| AVG |" in (tmp_path / "cmp_results.md").read_text()
    for figure in ("cmp_steps.png", "cmp_subjects.png"):
        colours = {c for _, c in Image.open(tmp_path / figure).convert("RGB").getcolors(1 << 16)}
        assert PALETTE[0] in colours and PALETTE[1] in colours  # one colour per run drawn
