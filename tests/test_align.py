"""Face detection and 5-point alignment (au_lightning.align, Ji et al. Sec. 3.2): the
Umeyama similarity against scikit-image and exact cases, the warp against painted landmarks
and OpenCV, and MTCNN on a real photo (scikit-image's astronaut) through the CLI."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from au_lightning.align import (
    ARCFACE_TEMPLATE,
    FACES_HEADER,
    LANDMARKS,
    NO_FACE_HEADER,
    AlignReport,
    align_folder,
    face_template,
    similarity_transform,
    warp_face,
)
from au_lightning.errors import ConfigError

#: source landmarks for the synthetic tests: a face about twice the template's size, turned
#: by 20 degrees and off-centre in a 320 x 300 image
ROTATION = np.deg2rad(20.0)
SCALE = 2.1
SHIFT = np.array([40.0, 25.0])


def _similarity(angle: float, scale: float, shift: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.hstack([scale * np.array([[c, -s], [s, c]]), shift[:, None]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


# -- similarity_transform ----------------------------------------------------------------------


def test_exact_similarity_is_recovered() -> None:
    src = np.random.default_rng(0).uniform(-50, 150, size=(7, 2))
    matrix = _similarity(np.deg2rad(-37.0), 0.63, np.array([12.5, -140.25]))
    np.testing.assert_allclose(similarity_transform(src, _apply(matrix, src)), matrix, atol=1e-10)
    np.testing.assert_allclose(similarity_transform(src, src), np.eye(2, 3), atol=1e-10)


def test_two_points_determine_the_similarity() -> None:
    src = np.array([[0.0, 0.0], [1.0, 0.0]])
    dst = np.array([[3.0, 4.0], [3.0, 6.0]])  # rotated by +90 degrees, scaled by 2
    expected = np.array([[0.0, -2.0, 3.0], [2.0, 0.0, 4.0]])
    np.testing.assert_allclose(similarity_transform(src, dst), expected, atol=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_least_squares_matches_skimage(seed: int) -> None:
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 200, size=(5, 2))
    dst = _apply(_similarity(rng.uniform(-3, 3), rng.uniform(0.2, 3), rng.normal(0, 50, 2)), src)
    dst += rng.normal(0, 4.0, dst.shape)  # not exactly a similarity: a least-squares fit
    if hasattr(transform.SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        reference = transform.SimilarityTransform.from_estimate(src, dst)
    else:
        reference = transform.SimilarityTransform()
        assert reference.estimate(src, dst)
    np.testing.assert_allclose(similarity_transform(src, dst), reference.params[:2], atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_never_a_reflection(seed: int) -> None:
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 100, size=(5, 2))
    mirrored = src * [-1.0, 1.0] + rng.normal(0, 1.0, src.shape)  # best fit is a reflection
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0
    rotation = matrix[:, :2] / np.sqrt(np.linalg.det(matrix[:, :2]))
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(2), atol=1e-10)


def test_bad_point_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        similarity_transform(np.ones((5, 2)), np.ones((4, 2)))


# -- template and warp -------------------------------------------------------------------------


def test_template_scale_and_margin() -> None:
    np.testing.assert_array_equal(face_template(112), ARCFACE_TEMPLATE)
    np.testing.assert_allclose(face_template(224), ARCFACE_TEMPLATE * 2)
    shrunk = face_template(112, margin=0.25)
    np.testing.assert_allclose(shrunk - 56.0, 0.75 * (ARCFACE_TEMPLATE - 56.0))
    for margin in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="margin"):
            face_template(112, margin)


def _painted(landmarks: np.ndarray, shape: tuple[int, int] = (300, 320)) -> np.ndarray:
    """A black image with a Gaussian blob (sigma 2.5 px) centred on each landmark."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blobs = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5**2)) for x, y in landmarks)
    gray = np.clip(255 * blobs, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _blob_centres(image: np.ndarray, near: np.ndarray, radius: int = 7) -> np.ndarray:
    """The intensity-weighted centre of the image within ``radius`` of each point."""
    gray = image[..., 0].astype(np.float64)
    yy, xx = np.mgrid[: gray.shape[0], : gray.shape[1]]
    centres = []
    for x, y in near:
        weights = gray * (((xx - x) ** 2 + (yy - y) ** 2) <= radius**2)
        centres.append([(weights * xx).sum() / weights.sum(), (weights * yy).sum() / weights.sum()])
    return np.array(centres)


@pytest.mark.parametrize(("size", "margin"), [(112, 0.0), (96, 0.2)])
def test_warp_puts_landmarks_on_the_template(size: int, margin: float) -> None:
    landmarks = _apply(_similarity(ROTATION, SCALE, SHIFT), ARCFACE_TEMPLATE)
    warped = warp_face(_painted(landmarks), landmarks, size, margin)
    assert warped.shape == (size, size, 3) and warped.dtype == np.uint8
    template = face_template(size, margin)
    # a half-pixel slip (PIL's pixel-centre convention) would be 0.25 px at this scale
    np.testing.assert_allclose(_blob_centres(warped, template), template, atol=0.1)


def test_warp_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (300, 320, 3), dtype=np.uint8), (0, 0), 2)
    landmarks = _apply(_similarity(ROTATION, SCALE, SHIFT), ARCFACE_TEMPLATE)
    landmarks += rng.normal(0, 2.0, landmarks.shape)
    matrix = similarity_transform(landmarks, face_template(112))
    reference = cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR)
    difference = np.abs(warp_face(image, landmarks).astype(int) - reference.astype(int))
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 3


# -- align_folder on real photos (MTCNN) -------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SRC: the astronaut (a face) in a subfolder, a plain grey image (no face), a corrupt
    .jpg and a text file (not an image)."""
    data = pytest.importorskip("skimage.data")
    src = tmp_path_factory.mktemp("photos")
    (src / "people").mkdir()
    Image.fromarray(data.astronaut()).save(src / "people" / "astronaut.jpg", quality=95)
    Image.new("RGB", (256, 256), (128, 128, 128)).save(src / "grey.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "notes.txt").write_text("not an image\n")
    return src


@pytest.fixture(scope="module")
def mtcnn() -> object:
    """One MTCNN for the module (re-detection on the aligned crops)."""
    facenet = pytest.importorskip("facenet_pytorch")
    return facenet.MTCNN(keep_all=True, device="cpu")


@pytest.fixture(scope="module")
def aligned(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AlignReport]:
    pytest.importorskip("facenet_pytorch")
    dst = tmp_path_factory.mktemp("aligned") / "out"
    return dst, align_folder(photos, dst, size=112, progress=False)


def test_astronaut_is_aligned(aligned: tuple[Path, AlignReport], photos: Path) -> None:
    dst, report = aligned
    assert report == AlignReport(1, ["grey.png"], ["broken.jpg"], dst / "faces.csv")
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.png")) == [
        "people/astronaut.png"
    ]
    with Image.open(dst / "people" / "astronaut.png") as face:
        assert (face.size, face.mode) == ((112, 112), "RGB")

    with (dst / "faces.csv").open(newline="") as file:
        assert tuple(next(csv.reader(file))) == FACES_HEADER
    (row,) = _read_csv(dst / "faces.csv")
    assert (row["path"], row["source"]) == ("people/astronaut.png", "people/astronaut.jpg")
    assert float(row["confidence"]) > 0.9
    x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
    width, height = Image.open(photos / "people" / "astronaut.jpg").size
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    for eye in ("left_eye", "right_eye"):
        x, y = float(row[f"{eye}_x"]), float(row[f"{eye}_y"])
        assert x1 < x < x2 and y1 < y < (y1 + y2) / 2
    assert float(row["left_eye_x"]) < float(row["right_eye_x"])
    assert float(row["mouth_left_x"]) < float(row["mouth_right_x"])
    assert float(row["nose_y"]) < float(row["mouth_left_y"])


def test_images_without_a_face_are_listed(aligned: tuple[Path, AlignReport]) -> None:
    dst, _ = aligned
    with (dst / "no_face.csv").open(newline="") as file:
        assert tuple(next(csv.reader(file))) == NO_FACE_HEADER
    reasons = {row["source"]: row["reason"] for row in _read_csv(dst / "no_face.csv")}
    assert set(reasons) == {"broken.jpg", "grey.png"}  # notes.txt is not an image
    assert reasons["grey.png"] == "no face"
    assert reasons["broken.jpg"].startswith("unreadable: ")


def test_aligned_landmarks_lie_on_the_template(
    aligned: tuple[Path, AlignReport], mtcnn: object
) -> None:
    """MTCNN re-run on the aligned crop finds the landmarks where the similarity put them
    (the warp is right), and so near the template; not on it: no similarity maps this face's
    5 points exactly onto ArcFace's (the fit leaves about 7 px at the mouth corners)."""
    dst, _ = aligned
    (row,) = _read_csv(dst / "faces.csv")
    source = np.array([[float(row[f"{name}_{axis}"]) for axis in "xy"] for name in LANDMARKS])
    mapped = _apply(similarity_transform(source, ARCFACE_TEMPLATE), source)
    with Image.open(dst / "people" / "astronaut.png") as face:
        _, probs, points = mtcnn.detect(face.convert("RGB"), landmarks=True)
    assert probs is not None and len(probs) == 1 and probs[0] > 0.9
    found = np.asarray(points[0], dtype=float)
    assert np.linalg.norm(found - mapped, axis=1).max() < 2.5
    to_template = np.linalg.norm(found - ARCFACE_TEMPLATE, axis=1)
    assert to_template[:2].max() < 4.0 and to_template.max() < 8.0, to_template


def test_min_confidence_above_every_face(photos: Path, tmp_path: Path) -> None:
    pytest.importorskip("facenet_pytorch")
    report = align_folder(photos / "people", tmp_path / "out", min_confidence=1.0, progress=False)
    assert (report.faces, report.no_face) == (0, ["astronaut.jpg"])
    (row,) = _read_csv(tmp_path / "out" / "no_face.csv")
    assert re.fullmatch(r"below min_confidence: best 0\.99\d* < 1", row["reason"]), row["reason"]
    assert not list((tmp_path / "out").glob("*.png"))


def test_cli(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("facenet_pytorch")
    from au_lightning.cli import main

    dst = tmp_path / "cli"
    main(["align", str(photos), str(dst), "--size", "64", "--margin", "0.1", "--progress", "false"])
    out = capsys.readouterr().out
    assert "1 faces aligned (64 px)" in out and "1 without a face, 1 unreadable" in out
    assert str(dst / "faces.csv") in out
    with Image.open(dst / "people" / "astronaut.png") as face:
        assert face.size == (64, 64)
    with pytest.raises(SystemExit, match="is not empty"):
        main(["align", str(photos), str(dst)])


# -- bad input ---------------------------------------------------------------------------------


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    with pytest.raises(ConfigError, match=r"align extra: pip install -e \"\.\[align\]\""):
        align_folder(tmp_path, tmp_path / "out")


def test_bad_folders(photos: Path, tmp_path: Path) -> None:
    pytest.importorskip("facenet_pytorch")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        align_folder(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"notes\.txt"):
        align_folder(photos / "notes.txt", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty: no images with extensions \.bmp, \.jpeg"):
        align_folder(tmp_path / "empty", tmp_path / "out")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        align_folder(photos, full)
    with pytest.raises(ConfigError, match="inside"):
        align_folder(photos, photos / "aligned")
    same = tmp_path / "same"
    same.mkdir()
    for suffix in (".jpg", ".png"):
        Image.new("RGB", (8, 8)).save(same / f"a{suffix}")
    with pytest.raises(ConfigError, match="would both be aligned"):
        align_folder(same, tmp_path / "out")


def test_overwrite_writes_into_a_non_empty_folder(photos: Path, tmp_path: Path) -> None:
    pytest.importorskip("facenet_pytorch")
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    report = align_folder(photos / "people", dst, overwrite=True, progress=False)
    assert report.faces == 1 and (dst / "keep.txt").exists()
