"""Each reader on a small fixture in its real layout: exact FrameIndex values and errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from au_lightning.data import (
    AU_SETS,
    DatasetFormatError,
    read_affectnet,
    read_bp4d,
    read_bp4dplus,
    read_dataset,
    read_disfa,
    read_emotionet,
    read_rafdb,
    read_table,
)
from au_lightning.registry import UnknownPluginError
from tests.layouts import (
    write_affectnet,
    write_bp4d_int,
    write_bp4d_occ,
    write_disfa,
    write_emotionet,
    write_image,
    write_rafdb,
)

BP4D12 = AU_SETS["bp4d"]


@pytest.fixture
def bp4d(tmp_path: Path) -> Path:
    write_bp4d_occ(tmp_path, "F001", "T1", {1: {1: 1, 12: 1}, 2: {12: 9, 2: 1}, 3: {24: 1}})
    write_bp4d_occ(tmp_path, "M009", "T2", {7: {4: 1, 15: 9}, 8: {}}, digits=3)
    return tmp_path


def test_bp4d_values(bp4d: Path) -> None:
    ix = read_bp4d(bp4d)
    assert ix.aus == BP4D12
    assert ix.path.tolist() == [
        "F001/T1/0001.jpg",
        "F001/T1/0002.jpg",
        "F001/T1/0003.jpg",
        "M009/T2/007.jpg",
        "M009/T2/008.jpg",
    ]
    assert ix.subject.tolist() == ["F001"] * 3 + ["M009"] * 2
    assert ix.video.tolist() == ["F001_T1"] * 3 + ["M009_T2"] * 2
    assert ix.frame.tolist() == [1, 2, 3, 7, 8]
    expected = np.zeros((5, 12), dtype=np.int8)
    col = {au: j for j, au in enumerate(BP4D12)}
    expected[0, [col[1], col[12]]] = 1
    expected[1, col[2]] = 1
    expected[1, col[12]] = -1  # BP4D's 9 is unknown, never 0
    expected[2, col[24]] = 1
    expected[3, col[4]] = 1
    expected[3, col[15]] = -1
    np.testing.assert_array_equal(ix.occurrence, expected)
    assert ix.occurrence.dtype == np.int8 and ix.intensity is None
    assert ix.root == str(bp4d)


def test_bp4d_intensity_joins_by_frame(bp4d: Path) -> None:
    write_bp4d_int(bp4d, "F001", "T1", 6, {1: 0, 2: 0, 3: 9})
    write_bp4d_int(bp4d, "F001", "T1", 12, {3: 0, 2: 9, 1: 2})  # rows in any order
    write_bp4d_int(bp4d, "M009", "T2", 6, {7: 0, 8: 0})
    write_bp4d_int(bp4d, "M009", "T2", 12, {8: 0, 7: 0})
    ix = read_bp4d(bp4d, aus=[6, 12, 1], intensity=True)
    np.testing.assert_array_equal(
        ix.intensity, [[0, 2, -1], [0, -1, -1], [-1, 0, -1], [0, 0, -1], [0, 0, -1]]
    )


def test_bp4d_intensity_must_cover_and_agree_with_occurrence(bp4d: Path) -> None:
    """Issue 23 item 5: a short AU_INT file, and intensity > 0 where AU_OCC says 0."""
    write_bp4d_int(bp4d, "M009", "T2", 6, {7: 0, 8: 0})
    write_bp4d_int(bp4d, "F001", "T1", 6, {1: 0, 3: 0})  # frame 2 missing
    with pytest.raises(
        DatasetFormatError,
        match=r"F001_T1_AU06\.csv: no row for 1 of the 3 frames of F001_T1\.csv \(first: frame 2\)",
    ):
        read_bp4d(bp4d, aus=[6], intensity=True)
    write_bp4d_int(bp4d, "F001", "T1", 6, {1: 0, 2: 0, 3: 4})
    with pytest.raises(
        DatasetFormatError,
        match=r"F001_T1_AU06\.csv:3: frame 3 has intensity 4 but occurrence 0 in F001_T1\.csv",
    ):
        read_bp4d(bp4d, aus=[6], intensity=True)


def test_bp4d_refuses_two_columns_for_one_au_and_notes_header_only_files(
    tmp_path: Path,
) -> None:
    header = ["frame", "AU1", "AU01", "AU2"]
    write_bp4d_occ(tmp_path / "two", "F082", "T6", {5: {1: 1}}, header=header)
    with pytest.raises(
        DatasetFormatError, match=r"F082_T6\.csv:1: header cells 'AU1' and 'AU01' both name AU 1"
    ):
        read_bp4dplus(tmp_path / "two", aus=[1, 2])
    root = tmp_path / "empty"
    write_bp4d_occ(root, "F001", "T1", {1: {1: 1}})
    write_bp4d_occ(root, "F001", "T2", {})
    ix = read_bp4d(root, aus=[1])
    assert len(ix) == 1
    assert "1 label files with a header and no frames: F001_T2.csv" in ix.summary()


def test_bp4d_selects_aus_in_requested_order(bp4d: Path) -> None:
    ix = read_bp4d(bp4d, aus=[24, 1])
    np.testing.assert_array_equal(ix.occurrence, [[0, 1], [0, 0], [1, 0], [0, 0], [0, 0]])


def test_bp4dplus_reads_columns_by_header_name(tmp_path: Path) -> None:
    header = ["frame", "AU12", "AU1", "AU 4", "AU02", "AU24"]
    write_bp4d_occ(tmp_path, "F082", "T6", {5: {12: 1, 1: 9}, 6: {24: 1, 2: 1}}, header=header)
    ix = read_bp4dplus(tmp_path, aus=[1, 2, 4, 12, 24])
    np.testing.assert_array_equal(ix.occurrence, [[-1, 0, 0, 1, 0], [0, 1, 0, 0, 1]])
    with pytest.raises(
        DatasetFormatError, match=r"F082_T6\.csv:1: no column for AU 6, 7, 10, 14, 15, 17, 23"
    ):
        read_bp4dplus(tmp_path)


def test_bp4d_missing_label_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"AU_OCC: folder not found"):
        read_bp4d(tmp_path)


def test_bp4d_wrong_column_count_names_line(bp4d: Path) -> None:
    file = bp4d / "AUCoding" / "AU_OCC" / "F001_T1.csv"
    lines = file.read_text().splitlines()
    lines[2] = lines[2] + ",0"
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"F001_T1\.csv:3: row has 101 columns"):
        read_bp4d(bp4d)


def test_bp4d_value_outside_allowed_set(bp4d: Path) -> None:
    write_bp4d_occ(bp4d, "F002", "T1", {1: {}, 2: {}, 3: {6: 2}})
    with pytest.raises(DatasetFormatError, match=r"F002_T1\.csv:4: column '6' holds 2"):
        read_bp4d(bp4d)


def test_bp4d_garbled_cell_and_file(bp4d: Path) -> None:
    file = bp4d / "AUCoding" / "AU_OCC" / "F001_T1.csv"
    file.write_text(file.read_text().replace("\n2,", "\n2x,", 1))
    with pytest.raises(DatasetFormatError, match=r"F001_T1\.csv:3: column 1 holds '2x'"):
        read_bp4d(bp4d)
    file.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetFormatError, match=r"F001_T1\.csv: not UTF-8"):
        read_bp4d(bp4d)


def test_bp4d_missing_image_error_and_skip(bp4d: Path, caplog) -> None:
    (bp4d / "M009" / "T2" / "008.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"M009_T2\.csv:3: labelled frame has no image"):
        read_bp4d(bp4d)
    with caplog.at_level(logging.WARNING, logger="au_lightning.data"):
        ix = read_bp4d(bp4d, on_missing_image="skip")
    assert ix.frame.tolist() == [1, 2, 3, 7]
    assert "skipped 1 labelled frames" in caplog.text and "M009_T2.csv:3" in caplog.text


def test_bp4d_duplicate_frame_and_ambiguous_image(bp4d: Path) -> None:
    write_image(bp4d / "F001" / "T1" / "001.jpg")
    with pytest.raises(DatasetFormatError, match=r"001\.jpg: frame 1 also has the image"):
        read_bp4d(bp4d)
    (bp4d / "F001" / "T1" / "001.jpg").unlink()
    file = bp4d / "AUCoding" / "AU_OCC" / "M009_T2.csv"
    file.write_text(file.read_text() + file.read_text().splitlines()[1] + "\n")
    with pytest.raises(DatasetFormatError, match=r"M009_T2\.csv:4: frame 7 appears twice"):
        read_bp4d(bp4d)


# -- DISFA ------------------------------------------------------------------------------------

DISFA_INTENSITY = {
    1: [0, 1, 2, 3],
    2: [0, 0, 0, 0],
    4: [5, 0, 0, 1],
    5: [0, 0, 0, 0],
    6: [0, 2, 2, 0],
    9: [0, 0, 0, 0],
    12: [1, 2, 3, 0],
    15: [0, 0, 0, 0],
    17: [0, 0, 0, 0],
    20: [0, 0, 0, 0],
    25: [2, 0, 0, 1],
    26: [0, 0, 4, 0],
}


@pytest.fixture
def disfa(tmp_path: Path) -> Path:
    write_disfa(tmp_path, "SN001", DISFA_INTENSITY)
    write_disfa(tmp_path, "SN002", {au: [v[0], v[3]] for au, v in DISFA_INTENSITY.items()})
    return tmp_path


def test_disfa_values_and_thresholds(disfa: Path) -> None:
    ix = read_disfa(disfa, intensity_threshold=">0")
    assert ix.aus == AU_SETS["disfa"]
    assert ix.path.tolist() == [f"SN001/{i}.png" for i in (1, 2, 3, 4)] + [
        "SN002/1.png",
        "SN002/2.png",
    ]
    assert ix.frame.tolist() == [1, 2, 3, 4, 1, 2]  # 1-based, as in the label files
    au1 = ix.aus.index(1)
    assert ix.intensity[:4, au1].tolist() == [0, 1, 2, 3]
    assert ix.occurrence[:4, au1].tolist() == [0, 1, 1, 1]
    strict = read_disfa(disfa, intensity_threshold=">=2")
    assert strict.occurrence[:4, au1].tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(strict.intensity, ix.intensity)


def test_disfa_8_aus_and_image_offset(tmp_path: Path) -> None:
    write_disfa(tmp_path, "SN003", DISFA_INTENSITY, first_image=0)  # 0-based extraction
    with pytest.raises(DatasetFormatError, match=r"SN003_au1\.txt:4: labelled frame has no"):
        read_disfa(tmp_path, intensity_threshold=">0")
    ix = read_disfa(tmp_path, intensity_threshold=">0", aus="disfa8", image_frame_offset=-1)
    assert ix.aus == (1, 2, 4, 6, 9, 12, 25, 26)
    assert ix.path.tolist() == [f"SN003/{i}.png" for i in (0, 1, 2, 3)]
    assert ix.frame.tolist() == [1, 2, 3, 4]
    assert ix.occurrence[:, ix.aus.index(26)].tolist() == [0, 0, 1, 0]


def test_disfa_threshold_is_required(disfa: Path) -> None:
    with pytest.raises(TypeError, match="intensity_threshold"):
        read_dataset("disfa", disfa)
    with pytest.raises(ValueError, match="intensity threshold 'high'"):
        read_disfa(disfa, intensity_threshold="high")


def test_disfa_errors_name_file_and_line(disfa: Path) -> None:
    file = disfa / "ActionUnit_Labels" / "SN002" / "SN002_au4.txt"
    file.write_text("1,5\n2,7\n")
    with pytest.raises(DatasetFormatError, match=r"SN002_au4\.txt:2: column 'intensity' holds 7"):
        read_disfa(disfa, intensity_threshold=">0")
    file.write_text("1,5\n3,1\n")
    with pytest.raises(DatasetFormatError, match=r"SN002_au4\.txt:2: frames differ"):
        read_disfa(disfa, intensity_threshold=">0")
    file.unlink()
    with pytest.raises(DatasetFormatError, match=r"SN002_au4\.txt: file not found"):
        read_disfa(disfa, intensity_threshold=">0")


def test_disfa_video_frames(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    from au_lightning.data import load_frame

    write_disfa(tmp_path, "SN001", {1: [0, 3, 0], 2: [1, 0, 0]}, images=False)
    video = tmp_path / "Videos_LeftCamera" / "LeftVideoSN001_comp.avi"
    video.parent.mkdir(parents=True)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for level in (0, 120, 240):  # position p is a flat frame of gray level 120 * p
        writer.write(np.full((32, 32, 3), level, dtype=np.uint8))
    writer.release()
    ix = read_disfa(tmp_path, intensity_threshold=">0", aus=[1, 2], frames="video")
    assert ix.path.tolist() == ["Videos_LeftCamera/LeftVideoSN001_comp.avi"] * 3
    assert ix.frame.tolist() == [1, 2, 3] and ix.extras["video_pos"].tolist() == [0, 1, 2]
    means = [float(load_frame(ix, r).float().mean()) for r in range(3)]
    assert means == pytest.approx([0, 120, 240], abs=6)


# -- EmotioNet, RAF-DB, AffectNet, table -------------------------------------------------------


def test_emotionet_manual_csv(tmp_path: Path) -> None:
    rows = [("http://a.org/x/img1.jpg", [1, 0, 999]), ("http://b.org/img2.jpg", [999, 1, 0])]
    write_emotionet(tmp_path, [1, 2, 26], rows)
    ix = read_emotionet(tmp_path)
    assert ix.aus == (1, 2, 26)
    assert ix.path.tolist() == ["img1.jpg", "img2.jpg"]
    np.testing.assert_array_equal(ix.occurrence, [[1, 0, -1], [-1, 1, 0]])  # 999 -> unknown
    assert ix.subjects == ["img1.jpg", "img2.jpg"]
    assert read_emotionet(tmp_path, aus=[26]).occurrence[:, 0].tolist() == [-1, 0]


def test_emotionet_bad_value(tmp_path: Path) -> None:
    write_emotionet(tmp_path, [1, 2], [("http://a/1.jpg", [1, 0]), ("http://a/2.jpg", [2, 0])])
    with pytest.raises(DatasetFormatError, match=r"manual_annotations\.csv:3: column \"'AU 1'\""):
        read_emotionet(tmp_path)


def test_rafdb_partitions_and_labels(tmp_path: Path) -> None:
    write_rafdb(tmp_path, [("train_00001.jpg", 5), ("test_0001.jpg", 1), ("train_00002.jpg", 7)])
    train = read_rafdb(tmp_path)
    assert train.path.tolist() == [
        "Image/aligned/train_00001_aligned.jpg",
        "Image/aligned/train_00002_aligned.jpg",
    ]
    assert train.expression.tolist() == [4, 6]
    assert [train.expression_names[c] for c in train.expression] == ["sadness", "neutral"]
    every = read_rafdb(tmp_path, partition="all")
    assert every.extras["partition"].tolist() == ["train", "test", "train"]
    assert read_rafdb(tmp_path, partition="test").expression.tolist() == [0]  # surprise


def test_rafdb_bad_label_line(tmp_path: Path) -> None:
    write_rafdb(tmp_path, [("train_00001.jpg", 5), ("train_00002.jpg", 8)])
    with pytest.raises(DatasetFormatError, match=r"list_patition_label\.txt:2: line"):
        read_rafdb(tmp_path)


def test_affectnet_excludes_classes_8_to_10(tmp_path: Path, caplog) -> None:
    rows = [("1/a.jpg", 1), ("1/b.jpg", 8), ("2/c.jpg", 7), ("2/d.jpg", 10), ("2/e.jpg", 0)]
    write_affectnet(tmp_path, "training.csv", rows)
    with caplog.at_level(logging.INFO, logger="au_lightning.data"):
        ix = read_affectnet(tmp_path)
    assert ix.path.tolist() == ["1/a.jpg", "2/c.jpg", "2/e.jpg"]
    assert [ix.expression_names[c] for c in ix.expression] == ["happy", "contempt", "neutral"]
    assert "excluded 2 images" in caplog.text
    write_affectnet(tmp_path, "validation.csv", [("3/f.jpg", 11)])
    with pytest.raises(DatasetFormatError, match=r"validation\.csv:2: column 'expression'"):
        read_affectnet(tmp_path, partition="val")


def test_table_unknowns_intensity_expression_weight(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / "img" / name)
    (tmp_path / "labels.csv").write_text(
        "path,subject,video,frame,AU1,AU12,AU12_int,expression,weight\n"
        "img/a.png,S1,S1_v,3,1,,4,2,0.5\n"
        "img/b.png,S1,S1_v,4,9,0,0,,1\n"
        "img/c.png,S2,S2_v,1,0,999,,-1,0.25\n"
    )
    ix = read_table(tmp_path)
    assert ix.aus == (1, 12)
    np.testing.assert_array_equal(ix.occurrence, [[1, -1], [-1, 0], [0, -1]])
    np.testing.assert_array_equal(ix.intensity, [[-1, 4], [-1, 0], [-1, -1]])
    assert ix.expression.tolist() == [2, -1, -1]
    assert ix.weight.tolist() == [0.5, 1.0, 0.25]
    assert ix.video.tolist() == ["S1_v", "S1_v", "S2_v"] and ix.frame.tolist() == [3, 4, 1]
    gft = read_table(tmp_path, aus=[12], unknown_values=(999,))
    with pytest.raises(DatasetFormatError, match=r"labels\.csv:3: column 'AU1' holds 9"):
        read_table(tmp_path, unknown_values=(999,))
    assert gft.occurrence[:, 0].tolist() == [-1, 0, -1]


def test_table_missing_column_and_short_row(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,subject,frame,AU1\nx.png,S1,1,0\n")
    with pytest.raises(DatasetFormatError, match=r"labels\.csv:1: no column 'video'"):
        read_table(tmp_path)
    (tmp_path / "labels.csv").write_text("path,subject,video,frame,AU1\nx.png,S1,v,1\n")
    with pytest.raises(DatasetFormatError, match=r"labels\.csv:2: row has 4 columns"):
        read_table(tmp_path)


def test_read_dataset_resolves_entry_points_and_reports_errors(bp4d: Path) -> None:
    assert len(read_dataset("bp4d", bp4d)) == 5
    with pytest.raises(UnknownPluginError, match=r"unknown dataset format 'bp5d'; known: .*bp4d"):
        read_dataset("bp5d", bp4d)
    with pytest.raises(TypeError, match=r"bp4d reader: .*'intensty'.*intensity"):
        read_dataset("bp4d", bp4d, intensty=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_dataset("bp4d", bp4d / "nope")


def test_rafdb_consistency_file_becomes_weight(tmp_path: Path) -> None:
    write_rafdb(tmp_path, [("train_00001.jpg", 5), ("train_00002.jpg", 7), ("test_0001.jpg", 1)])
    (tmp_path / "EmoLabel" / "consistency.txt").write_text(
        "train_00001.jpg 0.9\ntrain_00002.jpg 0.25\ntest_0001.jpg 1\n"
    )
    ix = read_rafdb(tmp_path, consistency_file="EmoLabel/consistency.txt")
    assert ix.weight.tolist() == pytest.approx([0.9, 0.25])
    (tmp_path / "EmoLabel" / "consistency.txt").write_text("train_00001.jpg 0.9\n")
    with pytest.raises(DatasetFormatError, match=r"consistency\.txt: no value for 'train_00002"):
        read_rafdb(tmp_path, consistency_file="EmoLabel/consistency.txt")
    (tmp_path / "EmoLabel" / "consistency.txt").write_text("train_00001.jpg 0.9\nx 1.5\n")
    with pytest.raises(DatasetFormatError, match=r"consistency\.txt:2: line 'x 1.5'"):
        read_rafdb(tmp_path, consistency_file="EmoLabel/consistency.txt")


# -- issue 23 item 5: strict readers ----------------------------------------------------------

TABLE_HEADER = "path,subject,video,frame,AU1,AU12,AU12_int,expression\n"


def _table(root: Path, *rows: str, header: str = TABLE_HEADER) -> None:
    for name in ("a.png", "b.png", "c.png"):
        write_image(root / name)
    (root / "labels.csv").write_text(header + "".join(f"{r}\n" for r in rows))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            ["a.png,S1,v,1,1,0,0,", "b.png,S1,v,2,0,1,3,", "a.png,S1,v,1,1,0,0,"],
            r"labels\.csv:4: row of video 'v' frame 1 is a duplicate of line 2",
        ),
        (
            ["a.png,S1,v,1,1,0,0,", "b.png,S1,v,1,0,1,3,"],
            r"labels\.csv:3: row of video 'v' frame 1 is the same frame as, with other labels",
        ),
        (["a.png,,v,1,1,0,0,"], r"labels\.csv:2: empty subject id"),
        (["a.png,S1,v,1,1,0,2,"], r"labels\.csv:2: AU12_int is 2 but AU12 is 0"),
        (
            ["a.png,S1,v,1,1,0,0,", "b.png,s1,w,1,1,0,0,"],
            r"the table subject ids 'S1' and 's1' differ only in case",
        ),
    ],
    ids=["duplicate", "conflict", "empty-subject", "intensity", "case"],
)
def test_table_refuses_what_it_cannot_read_safely(
    tmp_path: Path, rows: list[str], message: str
) -> None:
    _table(tmp_path, *rows)
    with pytest.raises(DatasetFormatError, match=message):
        read_dataset("table", tmp_path)


def test_table_two_columns_for_one_au(tmp_path: Path) -> None:
    _table(tmp_path, "a.png,S1,v,1,1,0", header="path,subject,video,frame,AU1,AU01\n")
    with pytest.raises(DatasetFormatError, match=r"header cells 'AU1' and 'AU01' both name AU 1"):
        read_table(tmp_path)


def test_table_unknown_values_leave_the_expression_column_alone(tmp_path: Path) -> None:
    _table(tmp_path, "a.png,S1,v,1,9,0,0,9", "b.png,S1,v,2,0,999,,6")
    ix = read_table(tmp_path)  # unknown_values (9, 999): AU cells only
    assert ix.occurrence.tolist() == [[-1, 0], [0, -1]]
    assert ix.expression.tolist() == [9, 6]


def test_rafdb_refuses_an_image_listed_twice(tmp_path: Path) -> None:
    write_rafdb(tmp_path, [("train_00001.jpg", 3), ("train_00002.jpg", 1)])
    labels = tmp_path / "EmoLabel" / "list_patition_label.txt"
    text = labels.read_text()
    labels.write_text(text + "train_00001.jpg 3\n")
    with pytest.raises(DatasetFormatError, match=r":3: train_00001\.jpg repeats line 1"):
        read_rafdb(tmp_path)
    labels.write_text(text + "train_00001.jpg 5\n")
    with pytest.raises(DatasetFormatError, match=r":3: train_00001\.jpg relabels line 1"):
        read_rafdb(tmp_path)


def test_a_16_bit_image_is_scaled_not_clipped(tmp_path: Path) -> None:
    from PIL import Image

    from au_lightning.data import load_frame

    grey = np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I")
    (tmp_path / "labels.csv").write_text("path,subject,video,frame,AU1\na.png,S1,v,1,0\n")
    image = load_frame(read_table(tmp_path), 0)
    assert image.dtype == torch.uint8 and image.shape == (3, 2, 2)
    assert image[0].tolist() == [[0, 100], [200, 255]] and (image[0] == image[2]).all()
