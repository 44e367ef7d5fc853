"""The analyses of the learned representation (Chu, De la Torre & Cohn, Sec. 4.3).

- Subject invariance (Eq. 2, Fig. 4): the frames of each subject are one distribution; the
  subject's mean feature vector, squeezed by a logistic and normalised to sum 1, is compared
  with every other subject's by the Jensen-Shannon divergence, and the divergences of each
  subject to all others are summed (:func:`subject_divergence`).
- The t-SNE embedding of frames (Fig. 3), coloured by one AU and by subject identity
  (:func:`tsne_embedding`, :func:`tsne_figure`).

The features are whatever representation is studied: HOG (:func:`au_hybrid.svm.hog_features`),
a face descriptor, or the fc7 features of a network trained on the other dataset (the
paper's cross-dataset protocol). scikit-learn is needed only for t-SNE and is imported lazily.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "FIG4_OFFSET",
    "SubjectDivergence",
    "fig4_scores",
    "format_fig4",
    "js_divergence",
    "median_scale",
    "subject_distributions",
    "subject_divergence",
    "subject_means",
    "tsne_embedding",
    "tsne_figure",
    "tsne_figure_size",
]

_INSTALL = "pip install 'au-lightning[hybrid]'"

#: the factor inside the logarithm of Fig. 4's normalisation, log(d x 1e6) (see fig4_scores)
FIG4_OFFSET = 1e6


def _features(features: Any, name: str = "features") -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"{name}: expected a non-empty (N, D) array of feature vectors, got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return array


def _subjects(subjects: Any, n: int) -> tuple[list[str], np.ndarray]:
    """The subjects' names (sorted, as ``np.unique`` sorts them) and each row's subject code."""
    values = np.asarray(subjects)
    if values.ndim != 1 or len(values) != n:
        raise ValueError(
            f"subjects: expected one subject per feature row, shape ({n},), got {values.shape}"
        )
    if values.dtype == object:
        values = values.astype(str)
    unique, codes = np.unique(values, return_inverse=True)
    return [str(s) for s in unique], codes.reshape(-1)


def subject_means(features: np.ndarray, subjects: np.ndarray) -> tuple[list[str], np.ndarray]:
    """μ_s, the mean feature vector of each subject's frames (Sec. 4.3), as ``(names,
    means)``: the subjects sorted as ``np.unique`` sorts them, ``means`` of shape (S, D)."""
    x = _features(features)
    names, codes = _subjects(subjects, len(x))
    sums = np.zeros((len(names), x.shape[1]))
    np.add.at(sums, codes, x)
    return names, sums / np.bincount(codes, minlength=len(names))[:, None]


def median_scale(means: np.ndarray) -> float:
    """m, the scale of the logistic σ(a) = 1 / (1 + exp(-a / m)) (Sec. 4.3, "m is median of
    μ_s as the median heuristic").

    The rule: m is the median of all S x D entries of the subject means ``means`` (one m for
    every subject, so that all subjects are squeezed alike and remain comparable). A scale
    must be positive: when that median is 0 or negative (e.g. zero-centred features, or
    sparse ReLU features with most subject means exactly 0), m is instead the median of the
    absolute values of the non-zero entries; when every entry is 0, m = 1 (every subject is
    then the uniform distribution, whatever m).
    """
    values = np.asarray(means, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("median_scale: expected at least one subject mean entry, got none")
    m = float(np.median(values))
    if m > 0:
        return m
    nonzero = np.abs(values[values != 0])
    return float(np.median(nonzero)) if nonzero.size else 1.0


def subject_distributions(
    features: np.ndarray, subjects: np.ndarray, *, scale: float | None = None
) -> tuple[list[str], np.ndarray]:
    """Each subject's frames as one discrete distribution (Sec. 4.3, before Eq. 2).

    ``features`` (N, D), ``subjects`` (N,) the subject of each row. The mean vector μ_s of
    each subject is squeezed elementwise by the logistic σ(a) = 1 / (1 + exp(-a / m)), with m
    from :func:`median_scale` (or ``scale``, when given), and normalised to sum 1, so that
    μ_s >= 0 and ||μ_s||_1 = 1. Returns the subject names (sorted) and the (S, D)
    distributions, one row per subject. Computed in log space, so no entry underflows to 0.
    """
    names, means = subject_means(features, subjects)
    return names, _squeeze(means, scale)[0]


def _squeeze(means: np.ndarray, scale: float | None) -> tuple[np.ndarray, float]:
    """σ(μ_s / m) normalised to sum 1 per row, and the m used."""
    m = median_scale(means) if scale is None else float(scale)
    if not m > 0 or not math.isfinite(m):
        raise ValueError(f"subject_distributions: expected a positive finite scale, got {m}")
    log_sigma = -np.logaddexp(0.0, -means / m)  # log σ(μ / m)
    weights = np.exp(log_sigma - log_sigma.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True), m


def _kl_terms(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """p log(p / m) elementwise, with 0 log 0 = 0 (``m`` > 0 wherever ``p`` > 0)."""
    positive = p > 0
    safe_p = np.where(positive, p, 1.0)
    safe_m = np.where(positive, m, 1.0)
    return np.where(positive, p * np.log(safe_p / safe_m), 0.0)


def _js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = 0.5 * (p + q)
    js = 0.5 * _kl_terms(p, m).sum(axis=-1) + 0.5 * _kl_terms(q, m).sum(axis=-1)
    return np.maximum(js, 0.0)


def _distribution(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D distribution, got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{name}: expected finite non-negative probabilities")
    if not math.isclose(float(array.sum()), 1.0, rel_tol=1e-6, abs_tol=1e-9):
        raise ValueError(f"{name}: expected probabilities summing to 1, got {array.sum():.6g}")
    return array


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """D(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q) / 2 (Eq. 2): the Jensen-Shannon
    divergence of two discrete distributions, natural log (so 0 <= D <= log 2), 0 log 0 = 0.

    ``p`` and ``q`` are 1-D, of one length, non-negative and summing to 1. This is the
    square of ``scipy.spatial.distance.jensenshannon(p, q)``, which returns the distance.
    """
    p, q = _distribution(p, "p"), _distribution(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"js_divergence: p and q differ in length: {p.shape} vs {q.shape}")
    return float(_js_rows(p, q))


@dataclass(frozen=True, eq=False)
class SubjectDivergence:
    """Subject invariance of a representation (Sec. 4.3, Eq. 2, Fig. 4).

    ``subjects`` the S subject names; ``pairwise`` (S, S) the JS divergence D(μ_p, μ_q) of
    Eq. (2), symmetric with a zero diagonal; ``per_subject`` (S,) Σ_{q≠p} D(μ_p, μ_q), the
    quantity whose statistics over subjects Fig. 4 shows; ``scale`` the logistic's m.
    Lower means the representation depends less on who the subject is.
    """

    subjects: list[str]
    pairwise: np.ndarray
    per_subject: np.ndarray
    scale: float

    @property
    def mean(self) -> float:
        """The mean over subjects of ``per_subject`` (raw, not Fig. 4's log scale)."""
        return float(self.per_subject.mean())

    @property
    def std(self) -> float:
        """The standard deviation over subjects of ``per_subject`` (population, ddof 0)."""
        return float(self.per_subject.std())


def subject_divergence(
    features: np.ndarray, subjects: np.ndarray, *, scale: float | None = None
) -> SubjectDivergence:
    """The subject-invariance statistics of Fig. 4 (Sec. 4.3, Eq. 2).

    Each subject's frames become one distribution (:func:`subject_distributions`), every
    pair of subjects is compared by the JS divergence (:func:`js_divergence`) and each
    subject's divergences to all the others are summed. Needs at least two subjects.
    """
    names, means = subject_means(features, subjects)
    dists, m = _squeeze(means, scale)
    if len(names) < 2:
        raise ValueError(
            f"subject_divergence: expected frames of at least 2 subjects, got {len(names)}"
        )
    size = len(names)
    pairwise = np.zeros((size, size))
    for p in range(size - 1):  # one row at a time: S x D memory, not S x S x D
        row = _js_rows(dists[p][None, :], dists[p + 1 :])
        pairwise[p, p + 1 :] = row
        pairwise[p + 1 :, p] = row
    return SubjectDivergence(names, pairwise, pairwise.sum(axis=1), m)


def fig4_scores(per_subject: np.ndarray, base: float = math.e) -> np.ndarray:
    """Fig. 4's normalisation of the summed divergences d, read as log(d x 1e6).

    The caption's "normalized by log(d) x 1e6" cannot be meant literally: d < 1 makes
    log(d) negative, while the figure reports positive values of a few units (5.38 ± .40
    for shape features on BP4D, 0.89 ± .13 for fc7 on GFT). We read it as log(d x 10^6),
    a log scale that spreads the small divergences of near-uniform distributions over many
    dimensions. The base of the logarithm is not stated; natural log by default (as in
    Eq. 2), ``base=10`` for the other reading. This is an interpretation: the raw sums
    (:attr:`SubjectDivergence.per_subject`) are what the paper defines; compare values on
    this scale with the paper's only as a trend. A divergence of 0 maps to -inf.
    """
    d = np.asarray(per_subject, dtype=np.float64)
    if (d < 0).any() or not np.isfinite(d).all():
        raise ValueError("fig4_scores: expected finite non-negative summed divergences")
    if not base > 0 or base == 1:
        raise ValueError(f"fig4_scores: expected a logarithm base > 0 and != 1, got {base}")
    with np.errstate(divide="ignore"):
        return np.log(d * FIG4_OFFSET) / math.log(base)


def format_fig4(result: SubjectDivergence, base: float = math.e) -> str:
    """One cell of Fig. 4: mean ± std over subjects of :func:`fig4_scores`, written as the
    paper writes it ("3.58±.09"; population std)."""
    scores = fig4_scores(result.per_subject, base)
    mean, std = float(scores.mean()), float(scores.std())
    spread = f"{std:.2f}"
    if spread.startswith("0."):
        spread = spread[1:]
    return f"{mean:.2f}±{spread}"


# --- t-SNE (Fig. 3) -------------------------------------------------------------------------


def tsne_embedding(
    features: np.ndarray,
    seed: int = 0,
    perplexity: float = 30.0,
    *,
    threads: int | None = None,
) -> np.ndarray:
    """The 2-D t-SNE embedding of frames (Fig. 3), ``sklearn.manifold.TSNE`` (Barnes-Hut,
    PCA initialisation, learning rate "auto") with random state ``seed``: the same seed
    gives the same embedding.

    t-SNE needs the perplexity below the number of frames N: with few frames it is clipped
    to N - 1 (fewer than 2 frames is an error). Features of one dimension use random
    initialisation (PCA to 2-D needs 2). ``threads`` caps the OpenMP threads of the
    gradient (``threadpoolctl``); on a machine shared with other work, ``threads=1`` avoids
    oversubscription, which can make even a small embedding take seconds. Barnes-Hut t-SNE
    grows as N log N and takes minutes on tens of thousands of frames: for a whole dataset
    (BP4D's ~140k frames) embed a per-subject subsample. Returns (N, 2).
    """
    try:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"tsne_embedding needs scikit-learn: {_INSTALL}") from err
    x = _features(features)
    if len(x) < 2:
        raise ValueError(f"tsne_embedding: expected at least 2 frames, got {len(x)}")
    if not perplexity > 0:
        raise ValueError(f"tsne_embedding: expected a positive perplexity, got {perplexity}")
    tsne = TSNE(
        n_components=2,
        perplexity=min(float(perplexity), len(x) - 1.0),
        init="pca" if x.shape[1] >= 2 else "random",
        learning_rate="auto",
        random_state=seed,
    )
    with threadpool_limits(limits=threads):
        return np.asarray(tsne.fit_transform(x), dtype=np.float64)


#: the figure's geometry (pixels): each panel's plotting square, margins, legend rows
_PANEL, _MARGIN, _TITLE, _ROW = 400, 16, 22, 14
_AU_LEGEND, _SUBJECT_COLUMN = 150, 110
_ROWS_PER_COLUMN = _PANEL // _ROW

#: present, absent, unknown
_AU_COLOURS = ((200, 50, 50), (70, 110, 180), (200, 200, 200))


def tsne_figure_size(n_subjects: int) -> tuple[int, int]:
    """(width, height) in pixels of :func:`tsne_figure`'s PNG for ``n_subjects`` subjects:
    two 400-pixel panels, the AU legend and one subject legend column per 28 subjects."""
    columns = max(1, math.ceil(n_subjects / _ROWS_PER_COLUMN))
    width = 3 * _MARGIN + 2 * (_PANEL + 8) + _AU_LEGEND + columns * _SUBJECT_COLUMN
    return width, _MARGIN + _TITLE + _PANEL + _MARGIN


def _subject_colour(i: int) -> tuple[int, int, int]:
    """A distinct colour for subject ``i``: golden-ratio steps of hue, alternating value
    and saturation so that neighbouring hues also differ in shade."""
    hue = (i * 0.618033988749895) % 1.0
    saturation = 0.85 if i % 2 == 0 else 0.55
    value = 0.9 if (i // 2) % 2 == 0 else 0.65
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(255 * r), round(255 * g), round(255 * b)


def _legend_entry(draw: ImageDraw.ImageDraw, x: int, y: int, colour: Any, text: str) -> None:
    draw.rectangle([x, y + 2, x + 9, y + 11], fill=colour)
    draw.text((x + 14, y), text, fill="black")


def tsne_figure(
    features: np.ndarray,
    au_present: np.ndarray,
    subjects: np.ndarray,
    path: Path,
    au_name: str = "AU12",
    seed: int = 0,
    *,
    threads: int | None = None,
) -> Path:
    """Fig. 3 for one representation: the t-SNE embedding of the frames (:func:`tsne_embedding`)
    drawn twice with PIL, coloured by one AU (left: present red, absent blue, unknown grey;
    the present drawn last, on top) and by subject identity (right: a colour per subject,
    drawn in a seeded random order so that no subject systematically covers another, with
    a legend). Both panels share one equal-aspect scale.

    ``au_present`` (N,) in {1, 0, -1} (-1 unknown); ``subjects`` (N,); ``seed`` and
    ``threads`` as in :func:`tsne_embedding`. Writes a PNG of :func:`tsne_figure_size`
    pixels and returns ``path``.
    """
    x = _features(features)
    labels = np.asarray(au_present)
    if labels.shape != (len(x),):
        raise ValueError(
            f"au_present: expected one label per feature row, shape ({len(x)},), got {labels.shape}"
        )
    if not np.isin(labels, (-1, 0, 1)).all():
        raise ValueError("au_present: expected values in {1 (present), 0 (absent), -1 (unknown)}")
    names, codes = _subjects(subjects, len(x))
    points = tsne_embedding(x, seed=seed, threads=threads)

    lo = points.min(axis=0)
    span = float((points.max(axis=0) - lo).max()) or 1.0
    centre_offset = (span - (points.max(axis=0) - lo)) / 2  # centre the shorter axis
    unit = (points - lo + centre_offset) / span  # in [0, 1], equal aspect
    inner = _PANEL * 0.9
    pad = (_PANEL - inner) / 2
    radius = 3 if len(x) <= 500 else 2 if len(x) <= 5000 else 1

    image = Image.new("RGB", tsne_figure_size(len(names)), "white")
    draw = ImageDraw.Draw(image)
    top = _MARGIN + _TITLE
    left_au = _MARGIN
    left_subject = _MARGIN + _PANEL + 8 + _AU_LEGEND + _MARGIN

    def dot(left: int, row: int, colour: tuple[int, int, int]) -> None:
        cx = left + pad + unit[row, 0] * inner
        cy = top + pad + (1 - unit[row, 1]) * inner
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)

    for left, title in (
        (left_au, f"t-SNE, coloured by {au_name}"),
        (left_subject, "t-SNE, coloured by subject"),
    ):
        draw.text((left, _MARGIN), title, fill="black")
        draw.rectangle([left, top, left + _PANEL, top + _PANEL], outline=(160, 160, 160))

    for value, colour in zip((-1, 0, 1), _AU_COLOURS[::-1], strict=True):
        for row in np.flatnonzero(labels == value):
            dot(left_au, int(row), colour)
    legend_x = left_au + _PANEL + 8
    for i, (value, word) in enumerate(((1, "present"), (0, "absent"), (-1, "unknown"))):
        count = int((labels == value).sum())
        text = f"{au_name} {word} ({count})"
        _legend_entry(draw, legend_x, top + _ROW * i, _AU_COLOURS[i], text)

    colours = [_subject_colour(i) for i in range(len(names))]
    for row in np.random.default_rng(seed).permutation(len(x)):
        dot(left_subject, int(row), colours[codes[row]])
    legend_x = left_subject + _PANEL + 8
    for i, name in enumerate(names):
        column, line = divmod(i, _ROWS_PER_COLUMN)
        label = name if len(name) <= 14 else name[:12] + ".."
        x0 = legend_x + column * _SUBJECT_COLUMN
        _legend_entry(draw, x0, top + _ROW * line, colours[i], label)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
