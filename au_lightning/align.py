"""Face detection and 5-point alignment: the preprocessing of Ji et al. 2020, Sec. 3.2.

Before AU detection, Ji et al. detect the face and its five landmarks (eye centres, nose
tip, mouth corners) with MTCNN (Zhang, Zhang, Li & Qiao 2016, "Joint Face Detection and
Alignment Using Multitask Cascaded Convolutional Networks") and align the face to a fixed
template. Here the detector is facenet-pytorch's MTCNN (the ``align`` extra, its weights in
the wheel: no download), the template the ArcFace/InsightFace 5-point template, and the
alignment the least-squares similarity transform of Umeyama 1991 ("Least-squares estimation
of transformation parameters between two point patterns").

``au-lightning align SRC DST`` (:mod:`au_lightning.cli`) runs :func:`align_folder`.

Coordinates are pixel coordinates with pixel centres at integers (OpenCV's and MTCNN's
convention): the top-left pixel is centred at (0, 0) and covers [-0.5, 0.5)².
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from au_lightning.data.formats.images import IMAGE_EXTENSIONS, image_files
from au_lightning.errors import ConfigError

__all__ = [
    "ARCFACE_TEMPLATE",
    "FACES_HEADER",
    "LANDMARKS",
    "NO_FACE_HEADER",
    "AlignReport",
    "align_folder",
    "face_template",
    "similarity_transform",
    "warp_face",
]

#: the 5 points (left eye, right eye, nose tip, left mouth corner, right mouth corner; left
#: and right as seen in the image) of a 112 x 112 face crop of ArcFace/InsightFace
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
TEMPLATE_SIZE = 112
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
FACES_HEADER = (
    "path",
    "source",
    "confidence",
    "x1",
    "y1",
    "x2",
    "y2",
    *(f"{name}_{axis}" for name in LANDMARKS for axis in "xy"),
)
NO_FACE_HEADER = ("source", "reason")
MISSING_EXTRA = 'face alignment needs the align extra: pip install -e ".[align]"'


@dataclass
class AlignReport:
    """What :func:`align_folder` did: ``faces`` images aligned (listed in ``table``,
    ``DST/faces.csv``); the source images (relative to SRC) with no face of enough
    confidence and those that could not be read (both in ``DST/no_face.csv``)."""

    faces: int
    no_face: list[str]
    unreadable: list[str]
    table: Path


def face_template(size: int = TEMPLATE_SIZE, margin: float = 0.0) -> np.ndarray:
    """The ArcFace 5-point template (5, 2) for a ``size`` x ``size`` crop:

        template = c + (1 - margin) * (ARCFACE_TEMPLATE * size / 112 - c),  c = (size/2, size/2)

    ``margin = 0`` is the ArcFace crop scaled to ``size``; ``margin = 0.2`` shrinks the face
    to 80% of it around the crop centre ``c``, keeping more of the head (forehead, chin).
    """
    if size < 1:
        raise ConfigError(f"size={size}; expected a positive number of pixels")
    if not 0.0 <= margin < 1.0:
        raise ConfigError(f"margin={margin}; expected a fraction in [0, 1)")
    centre = np.array([size / 2, size / 2])
    return centre + (1.0 - margin) * (ARCFACE_TEMPLATE * size / TEMPLATE_SIZE - centre)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 matrix ``[s R | t]`` of the similarity (rotation R, uniform scale s > 0,
    translation t; never a reflection) minimizing ``sum_i |s R src_i + t - dst_i|²``.

    Umeyama 1991, Eqs. (40)-(42): with the centred point sets, ``Σ = dst_cᵀ src_c / n = U D
    Vᵀ`` (SVD), ``S = diag(1, sign(det U det V))``, ``R = U S Vᵀ``, ``s = tr(D S) / σ²_src``
    and ``t = μ_dst - s R μ_src``. Taking the sign from ``det U det V`` rather than ``det Σ``
    also covers collinear points (Umeyama's Eq. (43), rank Σ = 1).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(
            f"expected two (n, 2) point sets with n >= 2, got {src.shape} and {dst.shape}"
        )
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c**2).sum() / len(src)
    if var_src <= np.finfo(np.float64).tiny:
        raise ValueError("the source points all coincide; no similarity transform fits them")
    u, d, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    signs = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ np.diag(signs) @ vt
    scale = (d * signs).sum() / var_src
    translation = mu_dst - scale * rotation @ mu_src
    return np.hstack([scale * rotation, translation[:, None]])


def _pil_affine(matrix: np.ndarray) -> tuple[float, ...]:
    """PIL's ``Image.transform(AFFINE)`` coefficients for the forward map ``matrix``
    (input -> output, integer-centred pixels): PIL takes the inverse map (output -> input)
    and its pixel ``i`` is centred at ``i + 0.5``, so both maps get a half-pixel shift."""
    linear = np.linalg.inv(matrix[:, :2])
    offset = -linear @ matrix[:, 2] + 0.5 - 0.5 * linear.sum(axis=1)
    return (*linear[0], offset[0], *linear[1], offset[1])


def warp_face(
    image: np.ndarray, landmarks: np.ndarray, size: int = TEMPLATE_SIZE, margin: float = 0.0
) -> np.ndarray:
    """The ``size`` x ``size`` x 3 uint8 crop of ``image`` (H x W x 3 uint8) whose 5
    ``landmarks`` (order of :data:`ARCFACE_TEMPLATE`, image pixels) are moved as close as a
    similarity allows onto :func:`face_template` ``(size, margin)``; bilinear sampling
    (PIL), black outside the image."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    matrix = similarity_transform(np.asarray(landmarks), face_template(size, margin))
    warped = Image.fromarray(image).transform(
        (size, size),
        Image.Transform.AFFINE,
        _pil_affine(matrix),
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(warped)


def _image_paths(src: Path, extensions: Sequence[str]) -> list[Path]:
    """The images under ``src`` (recursively), relative to it, in sorted order."""
    found = image_files(src, extensions)
    if not found:
        raise ConfigError(f"{src}: no images with extensions {', '.join(sorted(extensions))}")
    return [Path(rel) for rel in found]


def _check_folders(src: Path, dst: Path, images: list[Path], overwrite: bool) -> None:
    """Refuse a DST that would mix with other files, be read as input, or two images that
    would be written to the same aligned file."""
    if dst.exists() and not dst.is_dir():
        raise ConfigError(f"{dst} is a file; align writes into a new or empty folder")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise ConfigError(
            f"{dst} is not empty; align writes into a new or empty folder (overwrite=True "
            "/ --overwrite true writes into it anyway)"
        )
    if dst.resolve().is_relative_to(src.resolve()):
        raise ConfigError(f"{dst} is inside {src}; a later run would align the aligned faces")
    outputs: dict[Path, Path] = {}
    for rel in images:
        other = outputs.setdefault(rel.with_suffix(".png"), rel)
        if other != rel:
            raise ConfigError(
                f"{src / other} and {src / rel} would both be aligned to "
                f"{dst / rel.with_suffix('.png')}; rename one"
            )


def _read_rgb(path: Path) -> np.ndarray:
    """The image as H x W x 3 uint8 RGB, upright (its EXIF orientation applied)."""
    with Image.open(path) as opened:
        return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))


def _pick_face(
    detection: tuple[Any, Any, Any], min_confidence: float, largest: bool
) -> tuple[float, np.ndarray, np.ndarray] | str:
    """``(confidence, box (4,), landmarks (5, 2))`` of the chosen face among MTCNN's
    ``detect(..., landmarks=True)`` output, or why there is none."""
    boxes, probs, points = detection
    if boxes is None:
        return "no face"
    boxes = np.asarray(boxes, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    keep = np.flatnonzero(probs >= min_confidence)
    if len(keep) == 0:
        return f"below min_confidence: best {probs.max():.6f} < {min_confidence:g}"
    if largest:
        areas = (boxes[keep, 2] - boxes[keep, 0]) * (boxes[keep, 3] - boxes[keep, 1])
        best = keep[np.argmax(areas)]
    else:
        best = keep[np.argmax(probs[keep])]
    return float(probs[best]), boxes[best], points[best]


def _write_csv(path: Path, header: Sequence[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def align_folder(
    src: str | Path,
    dst: str | Path,
    size: int = TEMPLATE_SIZE,
    margin: float = 0.0,
    min_confidence: float = 0.9,
    device: str = "cpu",
    largest: bool = True,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    overwrite: bool = False,
    progress: bool = True,
) -> AlignReport:
    """Detect (MTCNN, Zhang et al. 2016) and align (5 points, Umeyama similarity) one face
    in every image under ``src``, as Ji et al. 2020 Sec. 3.2 do before AU detection.

    Each image ``src/REL`` becomes ``dst/REL`` with a ``.png`` suffix, ``size`` x ``size``
    RGB, its face's landmarks on :func:`face_template` ``(size, margin)``. ``dst/faces.csv``
    has one row per aligned face (:data:`FACES_HEADER`: the aligned image relative to
    ``dst``, the source relative to ``src``, MTCNN's probability, the box and the 5
    landmarks in source-image pixels); ``dst/no_face.csv`` (:data:`NO_FACE_HEADER`) has one
    row per image not aligned, with the reason (``no face``, ``below min_confidence: best P
    < T``, ``unreadable: ERROR``), so no image is dropped silently.

    Args:
        src: folder of images, read recursively in sorted order (upright: EXIF orientation
            applied; coordinates are of the upright image).
        dst: new or empty output folder (not inside ``src``).
        size: side of the aligned images in pixels.
        margin: fraction by which the template shrinks toward the crop centre, keeping more
            of the head (:func:`face_template`).
        min_confidence: faces with a lower MTCNN probability are ignored.
        device: torch device for MTCNN.
        largest: of several faces of at least ``min_confidence``, align the one with the
            largest box (the subject nearest the camera); else the most confident one.
        extensions: file suffixes read as images (case-insensitive).
        overwrite: write into a non-empty ``dst`` (files of the same name are replaced).
        progress: show a progress bar.
    """
    try:
        from facenet_pytorch import MTCNN
    except ImportError as err:
        raise ConfigError(MISSING_EXTRA) from err
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder (SRC, the images to align)")
    if not 0.0 <= min_confidence <= 1.0:
        raise ConfigError(f"min_confidence={min_confidence}; expected a probability in [0, 1]")
    face_template(size, margin)  # checks both before any work
    images = _image_paths(src, extensions)
    _check_folders(src, dst, images, overwrite)
    dst.mkdir(parents=True, exist_ok=True)
    mtcnn = MTCNN(keep_all=True, device=device)
    faces: list[list[str]] = []
    missing: list[list[str]] = []
    no_face: list[str] = []
    unreadable: list[str] = []
    for rel in tqdm(images, desc="align", unit="image", disable=not progress):
        source = rel.as_posix()
        try:
            image = _read_rgb(src / rel)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            unreadable.append(source)
            missing.append([source, f"unreadable: {err}"])
            continue
        detection = mtcnn.detect(Image.fromarray(image), landmarks=True)
        picked = _pick_face(detection, min_confidence, largest)
        if isinstance(picked, str):
            no_face.append(source)
            missing.append([source, picked])
            continue
        confidence, box, landmarks = picked
        out = rel.with_suffix(".png")
        (dst / out).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(warp_face(image, landmarks, size, margin)).save(dst / out)
        coords = [f"{v:.2f}" for v in (*box, *landmarks.ravel())]
        faces.append([out.as_posix(), source, f"{confidence:.6f}", *coords])
    _write_csv(dst / "faces.csv", FACES_HEADER, faces)
    _write_csv(dst / "no_face.csv", NO_FACE_HEADER, missing)
    return AlignReport(len(faces), no_face, unreadable, dst / "faces.csv")
