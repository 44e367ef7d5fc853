"""The papers' published tables stored in the plugins, and their printing beside ours.

The stored numbers are checked against themselves: every per-AU row's mean is the
published mean within rounding (a transcription error of more than ~1.2 points in one of
12 AUs shows), except the rows the paper itself prints inconsistently, which say so and are
checked to differ; Ji et al.'s final score is (accuracy + F1) / 2. The printer is checked
on a hand-computed fixture, and the paper column appears only when dataset, protocol and
metric match.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from au_lightning import AdaptationRecord, published
from au_lightning.cli import _paper_beside_cv, main
from au_lightning.fewshot_results import write_adaptation_csv
from au_lightning.published import (
    CODED_AUS,
    Comparison,
    PublishedRow,
    PublishedTable,
    RowRef,
    fewshot_comparisons,
    paper_report,
    paper_rows,
    parse_table,
    published_tables,
    run_setting,
    score_comparisons,
    side_by_side,
)

TABLES = published_tables()
RENET = "Yang & Yin 2020 (RE-Net)"
MAL = "Li & Shan 2021 (MAL)"
HYBRID = "Chu et al. 2019 (hybrid CNN+LSTM)"
JI = "Ji et al. 2020 (multiple transfer, balanced training)"
MAML = "Lee et al. 2019 (MAML)"

#: the rows whose published mean is not the mean of their printed values, as the papers
#: print them (cited rows carried over from their own papers, and one of Chu et al.)
MEAN_DIFFERS = {
    (RENET, "Table 1", "LSVM [27]"),
    (RENET, "Table 1", "DRML[11]"),
    (RENET, "Table 1", "EAC-net[23]"),
    (RENET, "Table 2", "DRML [11]"),
    (RENET, "Table 2", "EAC-net [23]"),
    (MAL, "Table 1", "DRML [21]*"),
    (MAL, "Table 1", "EAC-Net [22]*"),
    (MAL, "Table 2", "DRML [21]*"),
    (MAL, "Table 2", "EAC-Net [22]*"),
    (MAL, "Table 2", "OFS-CNN [32]*"),
    (MAL, "Table 2", "TAE [36]*"),
    (HYBRID, "Table 4", "RS"),
}


def test_every_paper_is_stored_with_its_tables() -> None:
    stored = {(t.paper, t.table) for t in TABLES}
    assert {(RENET, f"Table {n}") for n in (1, 2, 3, 7)} <= stored
    assert {(MAL, f"Table {n}") for n in (1, 2, 3)} <= stored
    assert {(HYBRID, f"Table {n}") for n in (1, 2, 3, 4)} <= stored
    assert {(JI, f"Table {n}") for n in (1, 2)} <= stored
    assert {(MAML, f"Table {n}") for n in (1, 2, 3)} <= stored
    keys = [(t.paper, t.table, t.dataset, t.protocol, t.metric, t.shots) for t in TABLES]
    assert len(keys) == len(set(keys)), "a table block is stored twice"
    assert published_tables("renet") == [t for t in TABLES if t.paper == RENET]
    assert published_tables("au_maml") == [t for t in TABLES if t.paper == MAML]


def test_stored_means_match_the_published_means_within_rounding() -> None:
    differs = set()
    checked = 0
    for table in TABLES:
        # the mean of values rounded to d digits is within half a unit of the true mean,
        # and the published mean is rounded to d digits itself
        tolerance = 10.0**-table.decimals + 1e-9
        for row in table.rows:
            values = [v for v in row.values if v is not None]
            if not values or row.mean is None:
                continue
            deviation = abs(sum(values) / len(values) - row.mean)
            if row.mean_differs:
                differs.add((table.paper, table.table, row.method))
                assert deviation > tolerance, (table.cite, row.method, "is not off after all")
                assert "is not the mean" in row.note
            else:
                assert deviation <= tolerance, (table.paper, table.cite, row.method, deviation)
                checked += 1
    assert differs == MEAN_DIFFERS
    assert checked >= 90


def test_ji_final_score_is_the_mean_of_accuracy_and_f1() -> None:
    ji = [t for t in TABLES if t.paper == JI]
    for name in ("Table 1", "Table 2"):
        by_metric = {t.metric: t for t in ji if t.table == name}
        assert set(by_metric) == {"acc", "f1", "score"}
        for row in by_metric["score"].rows:
            acc, f1 = (by_metric[m].row(row.method).mean for m in ("acc", "f1"))
            assert row.mean == pytest.approx((acc + f1) / 2, abs=0.001), row.method


def test_every_tables_aus_are_aus_of_its_dataset() -> None:
    for table in TABLES:
        assert table.dataset in CODED_AUS, table.cite
        assert set(table.aus) <= set(CODED_AUS[table.dataset]), (table.paper, table.cite)
        assert len(set(table.aus)) == len(table.aus)
        for row in table.rows:
            for value in (*row.values, row.mean):
                assert value is None or 0 <= value <= table.scale, (table.cite, row.method)
    disfa = [t for t in TABLES if t.dataset == "disfa"]
    assert disfa and all(t.aus == (1, 2, 4, 6, 9, 12, 25, 26) for t in disfa)
    assert {t.min_intensity for t in disfa if t.paper == MAL} == {2}
    assert {t.min_intensity for t in disfa if t.paper in (RENET, MAML)} == {1}


def test_the_transcription_keeps_the_papers_cells() -> None:
    renet = {t.table: t for t in TABLES if t.paper == RENET}
    resnet = renet["Table 1"].row("ResNet18")
    assert resnet.values[:3] == (44.5, 45.1, 51.1) and resnet.mean == 59.6
    assert renet["Table 1"].row("JPML[10]").values[3] == 42.3  # printed "42.3."
    assert renet["Table 7"].row("Ours+ learnable").mean == 63.7
    mal = next(t for t in TABLES if t.paper == MAL and t.table == "Table 1")
    assert mal.row("gBN [6]*").values == (None,) * 12 and mal.row("gBN [6]*").mean == 57.0
    gft = next(t for t in TABLES if (t.paper, t.table, t.protocol) == (HYBRID, "Table 1", "3fold"))
    assert gft.row("CPM").values[gft.aus.index(4)] is None
    assert "no value printed for AU4" in gft.row("CPM").note
    sampling = next(t for t in TABLES if (t.paper, t.table) == (HYBRID, "Table 3"))
    assert sampling.row("RS").values[sampling.aus.index(4)] == 0.0  # printed "."
    assert sampling.row("RS").mean == 0.4  # printed ".4"
    maml = next(t for t in TABLES if (t.paper, t.table, t.shots) == (MAML, "Table 1", 5))
    assert maml.row("ours").mean == 0.76 and maml.row("base").values[0] == 0.59


def test_parse_table_refuses_a_row_of_the_wrong_length() -> None:
    fields = dict(paper="p", table="T", where="s", dataset="bp4d", protocol="3fold", metric="f1")
    with pytest.raises(ValueError, match="expected a name and 3 values"):
        parse_table("Method AU1 AU2 Avg\nA 1.0 2.0\n", **fields)
    with pytest.raises(ValueError, match="not in the table"):
        parse_table("Method AU1 Avg\nA 1.0 1.0\n", notes={"B": "x"}, **fields)


FIXTURE = PublishedTable(
    paper="P",
    table="Table 9",
    where="Sec. 1",
    dataset="bp4d",
    protocol="3fold",
    metric="f1",
    aus=(1, 2, 4),
    rows=(PublishedRow("Ours", (40.0, 60.0, None), 50.0),),
)


def test_side_by_side_gives_the_hand_computed_differences() -> None:
    ours = {1: 0.45, 2: 0.5, 4: 0.3}
    rows = side_by_side([Comparison("Ours", FIXTURE, FIXTURE.row("Ours"), ours)])
    assert rows == [
        ["AU", "Ours paper", "Ours ours", "Ours diff"],
        ["AU1", "40.0", "45.0", "+5.0"],
        ["AU2", "60.0", "50.0", "-10.0"],
        ["AU4", "", "30.0", ""],
        # the mean over the AUs both report (AU1, AU2): 50.0 and 47.5
        ["mean", "50.0*", "47.5*", "-2.5"],
    ]
    whole = dataclasses.replace(
        FIXTURE, aus=(1, 2), rows=(PublishedRow("Ours", (40.0, 60.0), 49.9),)
    )
    rows = side_by_side([Comparison("Ours", whole, whole.row("Ours"), {1: 0.45, 2: 0.5})])
    assert rows[-1] == ["mean", "49.9", "47.5", "-2.4"]  # the published mean when complete


def test_a_table_of_means_only_and_fractions() -> None:
    ji = next(t for t in TABLES if (t.paper, t.table, t.metric) == (JI, "Table 1", "f1"))
    c = Comparison("ResNet-18", ji, ji.row("ResNet-18"), {}, 0.4)
    assert side_by_side([c]) == [
        ["AU", "ResNet-18 paper", "ResNet-18 ours", "ResNet-18 diff"],
        ["mean", "0.364", "0.400", "+0.036"],
    ]


def test_run_setting_names_the_protocols_a_table_may_use() -> None:
    s = run_setting({"dataset": "bp4d", "protocol": "bp4d_3fold", "synth": {"seed": 0}})
    assert s.protocols == {"bp4d_3fold", "3fold"} and s.synthetic and s.dataset == "bp4d"
    assert run_setting({"dataset": "bp4d", "protocol": "kfold", "num_folds": 10}).protocols == {
        "10fold"
    }
    cross = run_setting(
        {"dataset": "bp4d", "protocol": "cross", "test_dataset": "disfa",
         "test_reader_options": {"intensity_threshold": ">0"}}
    )  # fmt: skip
    assert (cross.dataset, cross.protocols, cross.min_intensity) == ("disfa", {"cross:bp4d"}, 1)
    disfa = run_setting(
        {"dataset": "disfa", "protocol": "disfa_3fold",
         "reader_options": {"intensity_threshold": ">=2"}}
    )  # fmt: skip
    renet = next(t for t in TABLES if (t.paper, t.table) == (RENET, "Table 2"))
    mal = next(t for t in TABLES if (t.paper, t.table) == (MAL, "Table 2"))
    assert mal.mismatch(disfa) is None
    assert "intensity >= 2" in renet.mismatch(disfa)


def test_the_paper_column_appears_only_when_the_protocol_matches() -> None:
    refs = [RowRef("P", "Ours")]
    scores = {"f1_AU1": 0.45, "f1_AU2": 0.5, "f1_AU4": 0.3, "f1_mean": 0.4167}
    match = run_setting({"dataset": "bp4d", "protocol": "bp4d_3fold", "synth": {"seed": 0}})
    comparisons, skipped = score_comparisons(refs, match, scores, [FIXTURE])
    text = paper_report(comparisons, match, skipped)
    assert "| AU | Ours paper | Ours ours | Ours diff |" in text and "| AU1 | 40.0 | 45.0 |" in text
    assert "P, Table 9, Sec. 1" in text
    assert "SynthAU in the BP4D layout" in text and "shape" in text
    for other in (
        {"dataset": "bp4d", "protocol": "kfold", "num_folds": 5},
        {"dataset": "disfa", "protocol": "disfa_3fold"},
        {"dataset": "disfa", "protocol": "cross", "test_dataset": "bp4d"},
    ):
        setting = run_setting(other)
        comparisons, skipped = score_comparisons(refs, setting, scores, [FIXTURE])
        assert comparisons == []
        text = paper_report(comparisons, setting, skipped)
        assert "| AU |" not in text and "beside ours" not in text
    # the same dataset under another protocol says so (and real data has no SynthAU note)
    kfold = run_setting({"dataset": "bp4d", "protocol": "kfold", "num_folds": 5})
    comparisons, skipped = score_comparisons(refs, kfold, scores, [FIXTURE])
    text = paper_report(comparisons, kfold, skipped)
    assert "not compared" in text and "protocol 5fold, the table's is 3fold" in text
    assert "SynthAU" not in text
    # another metric than ours: nothing
    assert score_comparisons(refs, match, {"acc_AU1": 0.5}, [FIXTURE]) == ([], [])


def test_cv_prints_the_papers_resnet18_beside_the_baseline(tmp_path: Path) -> None:
    from au_baseline import Baseline

    model = Baseline(backbone="resnet18")
    fold = {f"f1_AU{a}": 0.5 for a in model.aus} | {"f1_mean": 0.5}
    synth = {"dataset": "bp4d", "protocol": "bp4d_3fold", "synth": {"seed": 0}}
    data = SimpleNamespace(hparams=synth)
    text = _paper_beside_cv(model, data, {"part1": fold, "part2": fold}, tmp_path)
    assert "Table 1, Sec. 4.4, row 'ResNet18'" in text
    assert "| AU1 | 44.5 | 50.0 | +5.5 |" in text and "| mean | 59.6 | 50.0 | -9.6 |" in text
    assert (tmp_path / "paper_results.md").is_file()
    assert "ResNet18 paper" in (tmp_path / "paper_results.csv").read_text()
    loso = SimpleNamespace(hparams={"dataset": "bp4d", "protocol": "loso"})
    text = _paper_beside_cv(model, loso, {"s": fold}, tmp_path / "loso")
    assert "| AU |" not in text and "the table's is 3fold" in text
    assert not (tmp_path / "loso" / "paper_results.md").exists()


def _fewshot_run(directory: Path, class_path: str, accuracy: dict[int, float], step: int) -> None:
    records = [
        AdaptationRecord(5, subject, au, s, accuracy[au] if s == step else 0.5, 10)
        for subject in ("F001", "F002")
        for au in accuracy
        for s in range(step + 1)
    ]
    write_adaptation_csv(records, directory / "adaptation.csv")
    config = {
        "model": {"class_path": class_path, "init_args": {"aus": "bp4d"}},
        "data": {"class_path": "au_lightning.data.EpisodeDataModule",
                 "init_args": {"dataset": "bp4d", "protocol": "loso", "synth": {"seed": 0}}},
    }  # fmt: skip
    (directory / "config.yaml").write_text(yaml.safe_dump(config))


def test_compare_prints_lee_et_al_beside_both_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    aus = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
    for name, class_path in (("base", "au_maml.MAMLBaseline"), ("ours", "au_maml.MAML")):
        (tmp_path / name).mkdir()
        _fewshot_run(tmp_path / name, class_path, {a: 0.7 for a in aus}, step=5)
    main(["compare", "base", "ours", "--out", "cmp"])
    out = capsys.readouterr().out
    assert "Lee et al. 2019 (MAML), Table 1, Sec. 4.3, row 'base'" in out
    assert "row 'ours'" in out and "accuracy on BP4D, loso, 5-shot after 5 steps" in out
    # Table 1, 5-shot: AU1 base 0.59, ours 0.71; AVG 0.64 and 0.76
    assert "| AU1 | 0.59 | 0.70 | +0.11 | 0.71 | 0.70 | -0.01 |" in out
    assert "| mean | 0.64 | 0.70 | +0.06 | 0.76 | 0.70 | -0.06 |" in out
    assert (tmp_path / "cmp" / "paper_results.md").is_file()


def test_fewshot_comparison_at_another_step_says_so() -> None:
    table = next(t for t in TABLES if (t.paper, t.table, t.shots) == (MAML, "Table 1", 5))
    records = [AdaptationRecord(5, "F001", 1, s, 0.6 + 0.1 * s, 3) for s in range(3)]
    setting = run_setting({"dataset": "bp4d", "protocol": "loso"})
    [c], _ = fewshot_comparisons({"MAML": ([RowRef(MAML, "ours")], setting, records)}, [table])
    assert c.ours == {1: pytest.approx(0.8)} and "ours after 2 steps, the paper's after 5" in c.note
    other = run_setting({"dataset": "bp4d", "protocol": "kfold"})
    runs = {"MAML": ([RowRef(MAML, "ours")], other, records)}
    assert fewshot_comparisons(runs, [table])[0] == []


def _has_row(ref: RowRef) -> bool:
    return any(
        t.paper == ref.paper and t.has_row(ref.method) and (not ref.tables or t.table in ref.tables)
        for t in TABLES
    )


def test_each_plugins_rows_name_stored_rows() -> None:
    from au_baseline import Baseline
    from au_hybrid import Hybrid
    from au_mal import MAL as MALMethod
    from au_mal import MTL, STL
    from au_maml import MAML as MAMLMethod
    from au_maml import MAMLBaseline
    from au_renet import RENet, RENetIntensity
    from au_transfer import Transfer

    data = {"dataset": "bp4d", "protocol": "bp4d_3fold", "sampler": "momu"}
    cases = {
        (Baseline, "resnet18"): ["ResNet18"],
        (Baseline, "resnet50"): ["ResNet-50 [55]"],
        (Baseline, "anet"): ["ANet"],
        (RENet, "fixed"): ["Ours"],
        (RENet, "learnable"): ["Ours+ learnable"],
        (Hybrid, "anet"): ["ANet", "Ours", "MOMU"],
        (MALMethod, ""): ["MAL(Ours)"],
        (MTL, ""): ["MTL"],
        (STL, ""): ["STL"],
        (MAMLMethod, ""): ["ours"],
        (MAMLBaseline, ""): ["base"],
        (Transfer, "resnet152"): ["ResNet-152"],
    }
    for (method, option), expected in cases.items():
        hparams = {"backbone": option, "graph": option, "pretrained": False}
        refs = paper_rows(method, hparams, data)
        assert [r.method for r in refs] == expected, method
        assert all(_has_row(r) for r in refs), refs
    assert paper_rows(RENetIntensity, {}, data) == []
    assert paper_rows(Baseline, {"backbone": "resnet18"}, {"sampler": "duplicate"}) == []
    assert paper_rows(Transfer, {"pretrained": "missing.ckpt"}, data) == []
    assert published.paper_rows(type("Other", (), {}), {}, data) == []


def test_a_published_row_is_frozen() -> None:
    with pytest.raises(AttributeError):
        FIXTURE.rows[0].mean = 1.0  # type: ignore[misc]
    assert not math.isnan(FIXTURE.row("Ours").mean)


def test_ji_et_al_means_beside_ours_one_column_group_per_metric() -> None:
    scores = {"acc_mean": 0.9, "f1_mean": 0.4, "score_mean": 0.65, "f1_AU1": 0.3}
    setting = run_setting({"dataset": "emotionet", "protocol": "kfold", "num_folds": 5})
    refs = [RowRef(JI, "ResNet-18", ("Table 1",))]
    comparisons, skipped = score_comparisons(refs, setting, scores)
    assert skipped == []
    rows = side_by_side(comparisons)
    assert rows[0][1::3] == [
        "ResNet-18 [Table 1, accuracy] paper",
        "ResNet-18 [Table 1, F1] paper",
        "ResNet-18 [Table 1, final score] paper",
    ]
    assert rows[1:] == [["mean", "0.901", "0.900", "-0.001", "0.364", "0.400", "+0.036",
                         "0.633", "0.650", "+0.017"]]  # fmt: skip
