"""AUDataModule: reader -> fold -> batches, under a real Lightning Trainer."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from au_lightning.data import AUDataModule, DatasetFormatError, ImageReadError, SplitError
from tests.layouts import write_bp4d_occ, write_disfa, write_image

SUBJECTS = ["F001", "F002", "F003", "M001", "M002", "M009"]


@pytest.fixture
def bp4d(tmp_path: Path) -> Path:
    root = tmp_path / "bp4d"
    for k, subject in enumerate(SUBJECTS):
        rows = {f: ({1: 1, 12: 9} if f % 2 else {2: 1}) for f in range(1, 5 + k)}
        write_bp4d_occ(root, subject, "T1", rows, digits=3 if subject == "M009" else 4)
    for png in root.glob("*/T1/*.jpg"):
        write_image(png, size=40)
    return root


def make(root: Path, tmp_path: Path, **kwargs) -> AUDataModule:
    options = dict(
        dataset="bp4d", root=str(root), image_size=36, crop_size=32, batch_size=4, cache=False
    )
    options.update(kwargs)
    return AUDataModule(**options)


def test_batches_are_dicts_of_tensors(bp4d: Path, tmp_path: Path) -> None:
    dm = make(bp4d, tmp_path, aus=[1, 2, 12])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["occurrence"].shape == (4, 3) and batch["occurrence"].dtype == torch.int8
    for occ, row in zip(batch["occurrence"], batch["index"].tolist(), strict=True):
        assert occ.tolist() == dm.index.occurrence[row].tolist()
        if dm.index.frame[row] % 2:
            assert occ.tolist() == [1, 0, -1]  # BP4D 9 arrives as -1
    assert set(batch["subject"]) <= set(SUBJECTS)
    assert "intensity" not in batch


def test_train_val_test_are_subject_exclusive(bp4d: Path, tmp_path: Path) -> None:
    dm = make(bp4d, tmp_path, protocol="kfold", num_folds=3, fold=1, val_fraction=0.25)
    dm.setup("fit")
    ix = dm.index
    sides = [set(ix.subject[rows]) for rows in (dm.train_rows, dm.val_rows, dm.test_rows)]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert len(dm.train_rows) + len(dm.val_rows) + len(dm.test_rows) == len(ix)
    assert {s for rows in sides for s in rows} == set(SUBJECTS)
    test_subjects = {s for b in dm.test_dataloader() for s in b["subject"]}
    assert test_subjects == sides[2]


def test_frames_validation_reserve_and_loso(bp4d: Path, tmp_path: Path) -> None:
    dm = make(bp4d, tmp_path, protocol="loso", fold="M009", val_strategy="frames", val_fraction=0.2)
    dm.setup("fit")
    assert set(dm.index.subject[dm.test_rows]) == {"M009"}
    assert set(dm.index.subject[dm.val_rows]) == set(SUBJECTS) - {"M009"}
    assert not set(dm.val_rows) & set(dm.train_rows)


def test_cross_dataset_protocol(bp4d: Path, tmp_path: Path) -> None:
    disfa = tmp_path / "disfa"
    write_disfa(disfa, "SN001", {au: [0, 2, 1] for au in (1, 2, 4, 6, 12)})
    for png in disfa.glob("SN001/*.png"):
        write_image(png, size=40)
    dm = make(
        bp4d,
        tmp_path,
        aus=[1, 2, 12],
        protocol="cross",
        test_dataset="disfa",
        test_root=str(disfa),
        test_reader_options={"intensity_threshold": ">=2", "aus": [1, 2, 4, 6, 12]},
    )
    dm.setup("test")
    assert dm.fold.name == "bp4d->disfa"
    batch = next(iter(dm.test_dataloader()))
    assert batch["occurrence"].tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert batch["intensity"][:, 0].tolist() == [0, 2, 1]
    assert len(dm.train_rows) + len(dm.val_rows) == len(dm.index)


def test_user_errors_are_clear(bp4d: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"bp4d dataset root .*nowhere.* does not exist"):
        make(tmp_path / "nowhere", tmp_path).setup("fit")
    with pytest.raises(DatasetFormatError, match=r"F001_T1\.csv:1: no column for AU 100"):
        make(bp4d, tmp_path, aus=[1, 100]).setup("fit")
    uncoded = tmp_path / "uncoded"
    for subject in ("F001", "F002"):
        write_bp4d_occ(uncoded, subject, "T1", {1: {9: 9}, 2: {9: 9}})  # AU9 never coded
    with pytest.raises(ValueError, match="AU 9 has no known label in the bp4d data"):
        make(uncoded, tmp_path, aus=[1, 9]).setup("fit")
    with pytest.raises(ValueError, match=r"fold 3 out of range: this protocol has 3 folds"):
        make(bp4d, tmp_path, fold=3).setup("fit")
    with pytest.raises(ValueError, match="unknown sampler 'momo'; known: random, stratified, mo"):
        make(bp4d, tmp_path, sampler="momo")
    with pytest.raises(ValueError, match=r"momu sampler has no option size \(its options: samp"):
        make(bp4d, tmp_path, sampler="momu", sampler_options={"size": 4})
    write_bp4d_occ(bp4d, "F099", "T1", {1: {}})  # not in the published lists
    with pytest.raises(SplitError, match=r"fold 'part1' does not place subject\(s\) F099"):
        make(bp4d, tmp_path, protocol="bp4d_3fold").setup("fit")


def test_corrupt_image_names_the_file(bp4d: Path, tmp_path: Path) -> None:
    dm = make(bp4d, tmp_path, protocol="loso", fold="F001", val_strategy="none")
    dm.setup("test")
    (bp4d / "F001" / "T1" / "0002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match=r"F001/T1/0002\.jpg: image cannot be decoded"):
        list(dm.test_dataloader())


def test_published_parts_with_a_trainer(tmp_path: Path) -> None:
    root = tmp_path / "bp4d"
    subjects = ["F001", "M007", "M011", "F003", "F007", "M009"]  # two from each published part
    for subject in subjects:
        write_bp4d_occ(
            root, subject, "T1", {1: {1: 1}, 2: {}}, digits=3 if subject == "M009" else 4
        )
    dm = make(root, tmp_path, protocol="bp4d_3fold", fold="part3", batch_size=2)

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3 * 32 * 32, 12)
            self.seen: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}

        def step(self, batch, stage):
            self.seen[stage].update(batch["subject"])
            logits = self.layer(batch["image"].flatten(1))
            target = batch["occurrence"].float()
            known = target >= 0
            return torch.nn.functional.binary_cross_entropy_with_logits(
                logits[known], target[known]
            )

        def training_step(self, batch, _):
            return self.step(batch, "train")

        def validation_step(self, batch, _):
            self.step(batch, "val")

        def test_step(self, batch, _):
            self.step(batch, "test")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Recorder()
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    assert model.seen["test"] == {"F007", "M009"}
    assert model.seen["train"] | model.seen["val"] == {"F001", "M007", "M011", "F003"}
    assert len(model.seen["val"]) == 1
    assert np.isin(dm.test_rows, dm.train_rows).sum() == 0


def test_synth_option_generates_on_first_use(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(tmp_path / "cache"))
    synth = {"subjects": 6, "videos": 1, "frames": 8, "size": 40, "seed": 2, "workers": 1}
    dm = AUDataModule(dataset="bp4d", synth=synth, protocol="bp4d_3fold", fold="part2",
                      image_size=36, crop_size=32, batch_size=4)  # fmt: skip
    dm.setup("fit")
    generated = list((tmp_path / "cache" / "synthau").iterdir())
    assert len(generated) == 1 and (generated[0] / "synthau.json").is_file()
    assert set(dm.index.subject[dm.test_rows]) == {"M011", "F003"}  # part2 of the published list
    assert next(iter(dm.test_dataloader()))["image"].shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="give root or synth, not both"):
        AUDataModule(dataset="bp4d", root=str(tmp_path), synth=synth)


@pytest.mark.parametrize("sampler", ["momu", "stratified"])
def test_trainer_gets_the_samplers_plan_of_each_epoch(
    bp4d: Path, tmp_path: Path, sampler: str
) -> None:
    dm = make(bp4d, tmp_path, aus=[1, 2], val_strategy="none", sampler=sampler)

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)
            self.rows: dict[int, list[list[int]]] = {}

        def training_step(self, batch, _):
            self.rows.setdefault(self.current_epoch, []).append(batch["index"].tolist())
            return self.layer(torch.ones(1, 1)).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Recorder()
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    batch_sampler = trainer.train_dataloader.batch_sampler
    for epoch in (0, 1):  # Lightning set the epoch; positions map to the training rows
        plan = [dm.train_rows[b].tolist() for b in batch_sampler.plan(epoch)]
        assert model.rows[epoch] == plan
    assert model.rows[0] != model.rows[1]


def test_verify_images_lists_every_unreadable_frame(bp4d: Path, tmp_path: Path) -> None:
    """Issue 23 item 11: verify_images decodes every frame at setup, in worker processes."""
    bad = [bp4d / "F001" / "T1" / "0002.jpg", bp4d / "M009" / "T1" / "003.jpg"]
    for file in bad:
        file.write_bytes(b"not a jpeg")
    dm = make(bp4d, tmp_path, protocol="loso", fold="F001", num_workers=2, verify_images=True)
    with pytest.raises(ImageReadError) as raised:
        dm.setup("fit")
    message = str(raised.value)
    assert message.startswith("2 of the ")
    for file in bad:
        assert f"{file}: image cannot be decoded" in message
    unchecked = make(bp4d, tmp_path, protocol="loso", fold="F001")
    unchecked.setup("fit")  # off by default: the bad frames fail only when loaded
