"""SynthAU generation: determinism, each writer read back by its reader, safe caching."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from au_lightning.cli import main
from au_lightning.data import (
    AU_SETS,
    read_bp4d,
    read_disfa,
    read_emotionet,
    read_rafdb,
    read_table,
    subject_folds,
)
from au_lightning.data.synth import (
    EMOTIONET_AUS,
    SYNTH_AUS,
    au_timeline,
    emotionet_labels,
    ensure_synthau,
    generate,
    make_subjects,
)

SMALL = dict(subjects=3, videos=2, frames=16, size=32, seed=5, progress=False)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    a = generate("bp4d", tmp_path / "a", workers=1, **SMALL)
    b = generate("bp4d", tmp_path / "b", workers=2, **SMALL)
    files_a, files_b = tree_bytes(a.root), tree_bytes(b.root)
    assert files_a.keys() == files_b.keys() and len(files_a) > 3 * 2 * 16
    assert files_a == files_b
    c = generate("bp4d", tmp_path / "c", workers=1, **{**SMALL, "seed": 6})
    label = "AUCoding/AU_OCC/F001_T1.csv"
    assert tree_bytes(c.root)[label] != files_a[label]


def ground_truth(videos, aus, *, by_name: bool = False):
    """Labels of the generated videos, in generation order or (as the BP4D and DISFA readers
    list label files) sorted by video name."""
    videos = sorted(videos, key=lambda v: v.video) if by_name else videos
    cols = [SYNTH_AUS.index(a) for a in aus]
    occ = np.concatenate([v.occurrence[:, cols] for v in videos])
    level = np.concatenate([v.intensity[:, cols] for v in videos])
    return occ, level


def test_bp4d_writer_read_back_equals_truth(tmp_path: Path) -> None:
    result = generate("bp4d", tmp_path / "bp4d", workers=1, **{**SMALL, "frames": 60})
    index = read_bp4d(result.root, aus=SYNTH_AUS, intensity=True)
    occ, level = ground_truth(result.videos, SYNTH_AUS, by_name=True)
    np.testing.assert_array_equal(index.occurrence, occ)
    assert (index.occurrence == -1).any(), "the BP4D layout should carry some 9s"
    coded = [SYNTH_AUS.index(a) for a in AU_SETS["bp4d_intensity"]]
    np.testing.assert_array_equal(index.intensity[:, coded], level[:, coded])
    assert (np.delete(index.intensity, coded, axis=1) == -1).all()
    assert index.subjects == ["F001", "F007", "M011"]  # one from each published part
    in_order = sorted(result.videos, key=lambda v: v.video)
    assert index.frame.tolist() == np.concatenate([v.frames for v in in_order]).tolist()
    assert {p.count("/") for p in index.path} == {2}


def test_disfa_writer_read_back_equals_truth(tmp_path: Path) -> None:
    result = generate("disfa", tmp_path / "disfa", workers=1, **SMALL)
    index = read_disfa(result.root, intensity_threshold=">0")
    _, level = ground_truth(result.videos, AU_SETS["disfa"], by_name=True)
    np.testing.assert_array_equal(index.intensity, level)
    assert index.subjects == ["SN002", "SN003", "SN013"]  # one from each published part
    assert index.frame.tolist()[:3] == [1, 2, 3] and len(index) == 3 * 2 * 16
    strict = read_disfa(result.root, intensity_threshold=">=2")
    np.testing.assert_array_equal(strict.occurrence, level >= 2)


def test_disfa_video_matches_frames(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    from au_lightning.data import load_frame

    result = generate("disfa", tmp_path / "disfa", workers=1, **{**SMALL, "subjects": 1})
    frames = read_disfa(result.root, intensity_threshold=">0")
    video = read_disfa(result.root, intensity_threshold=">0", frames="video")
    np.testing.assert_array_equal(video.intensity, frames.intensity)
    for row in (0, 17):
        a = load_frame(frames, row).float()
        b = load_frame(video, row).float()
        assert (a - b).abs().mean() < 12  # two lossy codecs of the same rendered frame


def test_table_and_emotionet_writers_read_back(tmp_path: Path) -> None:
    table = generate("table", tmp_path / "table", workers=1, **SMALL)
    index = read_table(table.root)
    occ, level = ground_truth(table.videos, SYNTH_AUS)
    assert index.aus == tuple(sorted(SYNTH_AUS))
    np.testing.assert_array_equal(index.occurrence, occ)
    np.testing.assert_array_equal(index.intensity, level)
    emo = generate("emotionet", tmp_path / "emo", workers=1, **{**SMALL, "frames": 40})
    index = read_emotionet(emo.root)
    assert index.aus == EMOTIONET_AUS and len(index) == 3 * 2 * 4  # every 10th frame
    truth = np.concatenate([emotionet_labels(v) for v in emo.videos])
    np.testing.assert_array_equal(index.occurrence, truth)


def test_rafdb_writer_and_ambiguous_samples(tmp_path: Path) -> None:
    result = generate("rafdb", tmp_path / "raf", workers=2, images=120, size=32, seed=1,
                      ambiguous_fraction=0.3, progress=False)  # fmt: skip
    every = read_rafdb(result.root, partition="all", consistency_file="EmoLabel/consistency.txt")
    assert len(every) == 120 and (every.extras["partition"] == "train").sum() == 96
    assert every.expression.tolist() == [label for _, label, _, _ in result.expressions]
    ambiguous = np.array([a for *_, a in result.expressions])
    assert 0.15 < ambiguous.mean() < 0.45
    assert every.weight[ambiguous].max() <= 0.5 < every.weight[~ambiguous].min()


def test_base_rates_are_skewed_and_exclusions_hold() -> None:
    timeline = np.concatenate([au_timeline(120, np.random.default_rng(i)) for i in range(60)])
    occ = np.floor(timeline + 0.5) >= 1
    rates = occ.mean(0)
    assert 6 <= rates.max() / rates.min() <= 20  # BP4D-like: majority ~10x the minority
    i12, i15, i6 = (SYNTH_AUS.index(a) for a in (12, 15, 6))
    both = (occ[:, i12] & occ[:, i15]).mean()
    assert both < 0.3 * rates[i12] * rates[i15]  # far rarer than if independent
    assert np.corrcoef(occ[:, i6], occ[:, i12])[0, 1] > 0.5  # happiness episodes: 6+12


def test_subjects_have_biases_and_published_ids() -> None:
    people = make_subjects("bp4d", 12, seed=0)
    assert [p.name for p in people][:3] == ["F001", "M011", "F007"]
    assert sum(bool(p.bias) for p in people) >= 6
    assert len({p.look for p in people}) == 12
    with pytest.raises(ValueError, match="subjects=50: the bp4d layout has 1 to 41 subject ids"):
        make_subjects("bp4d", 50, seed=0)


def _ensure(directory: str, queue) -> None:
    root = ensure_synthau("bp4d", directory=directory, progress=False, workers=1,
                          subjects=2, videos=1, frames=10, size=24, seed=3)  # fmt: skip
    queue.put(str(root))


def test_concurrent_generation_into_one_cache_is_safe(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    roots = {queue.get(timeout=5) for _ in procs}
    assert len(roots) == 1 and all(p.exitcode == 0 for p in procs)
    root = Path(roots.pop())
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no half-written leftovers
    index = read_bp4d(root)
    assert len(index) == 2 * 10
    again = ensure_synthau("bp4d", directory=tmp_path, progress=False, subjects=2, videos=1,
                           frames=10, size=24, seed=3)  # fmt: skip
    assert again == root


def test_cli_synth_writes_a_readable_set(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    main(["synth", "--layout", "bp4d", "--out", str(out), "--subjects", "3", "--videos", "1",
          "--frames", "12", "--size", "32", "--seed", "0", "--workers", "1",
          "--progress", "false"])  # fmt: skip
    assert f"written to {out}" in capsys.readouterr().out
    index = read_bp4d(out)
    assert len(index) == 36 and len(subject_folds(index, 3)) == 3
    with pytest.raises(SystemExit):
        main(["synth", "--layout", "bp5d", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"au-lightning: error: .*cli is not empty"):
        main(["synth", "--out", str(out), "--progress", "false"])
    with pytest.raises(SystemExit, match=r"error: subjects=0: the bp4d layout has 1 to 41"):
        main(["synth", "--out", str(tmp_path / "none"), "--subjects", "0"])
    assert not (tmp_path / "none").exists()


def _synth_into(out: str, seed: int, queue: multiprocessing.Queue) -> None:
    try:
        generate("bp4d", out, subjects=2, videos=1, frames=10, size=24, seed=seed, workers=1,
                 progress=False)  # fmt: skip
        queue.put((seed, "written"))
    except FileExistsError as err:
        queue.put((seed, str(err)))


def test_two_synth_runs_into_one_folder_never_mix(tmp_path: Path) -> None:
    """Issue 23 item 8: of two runs into one --out, one writes it whole, the other fails."""
    out = tmp_path / "out"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_synth_into, args=(str(out), s, queue)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = dict(queue.get(timeout=5) for _ in procs)
    [winner] = [seed for seed, outcome in outcomes.items() if outcome == "written"]
    [loser] = [outcome for outcome in outcomes.values() if outcome != "written"]
    assert str(out) in loser and ("not empty" in loser or "another run" in loser)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left
    reference = tmp_path.parent / f"{tmp_path.name}-reference"
    generate("bp4d", reference, subjects=2, videos=1, frames=10, size=24, seed=winner,
             workers=1, progress=False)  # fmt: skip
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (reference / f).read_bytes() for f in files)
