"""The linear-SVM comparison rows (Chu, De la Torre & Cohn, Sec. 4.4, "Alternative methods").

- "SVM": HOG features of the face (:func:`hog_features`) and one linear SVM per AU
  (:class:`LinearSVMDetector`).
- "ANet^T": the same linear SVMs on the fc7 features of a CNN trained on the *other*
  dataset (the cross-dataset protocol); pass those features to :class:`LinearSVMDetector`.

The paper uses linear SVMs as the base classifier so that the score tells how linearly
separable each representation is; it gives no SVM settings. Here: ``sklearn.svm.LinearSVC``
with its defaults (squared hinge loss, L2 penalty, fitted intercept), cost ``C``, on
standardised features. scikit-image and scikit-learn are imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["LinearSVMDetector", "hog_features"]

_INSTALL = "pip install 'au-lightning[hybrid]'"


def _channels_last(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 (N, H, W, 3) from a numpy (N, H, W, 3) or torch (N, 3, H, W) uint8 batch."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise ValueError(f"hog_features: expected a uint8 tensor, got {images.dtype}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                "hog_features: expected a torch tensor of shape (N, 3, H, W), got "
                f"{tuple(images.shape)}"
            )
        return images.detach().cpu().permute(0, 2, 3, 1).numpy()
    if not isinstance(images, np.ndarray):
        raise TypeError(
            "hog_features: expected a uint8 numpy array (N, H, W, 3) or a uint8 torch tensor "
            f"(N, 3, H, W), got {type(images).__name__}"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"hog_features: expected a uint8 array, got {images.dtype}")
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(
            f"hog_features: expected a numpy array of shape (N, H, W, 3), got {images.shape}"
        )
    return images


def hog_features(
    images: np.ndarray | torch.Tensor,
    orientations: int = 9,
    pixels_per_cell: int = 8,
    cells_per_block: int = 2,
) -> np.ndarray:
    """HOG descriptors of face images, the features of the paper's "SVM" row (Sec. 4.4) and
    of its Sec. 4.3 comparison (Fig. 3, Fig. 4).

    ``images``: uint8 RGB, numpy (N, H, W, 3) or torch (N, 3, H, W). Each image is converted
    to grey (``skimage.color.rgb2gray``, ITU-R BT.709 weights, in [0, 1]) and described by
    ``skimage.feature.hog`` with square cells of ``pixels_per_cell`` pixels, square blocks of
    ``cells_per_block`` cells and L2-Hys block normalisation. Returns (N, D) float32; all
    images of a batch share one size, so D is the same for every row.
    """
    try:
        from skimage.color import rgb2gray
        from skimage.feature import hog
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"hog_features needs scikit-image: {_INSTALL}") from err
    batch = _channels_last(images)
    n, height, width = batch.shape[:3]
    if n == 0:
        raise ValueError("hog_features: expected at least one image, got an empty batch")
    for name, value in (
        ("orientations", orientations),
        ("pixels_per_cell", pixels_per_cell),
        ("cells_per_block", cells_per_block),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"hog_features: expected a positive integer {name}, got {value}")
    block = pixels_per_cell * cells_per_block
    if height < block or width < block:
        raise ValueError(
            f"hog_features: images of {height}x{width} pixels are smaller than one HOG block "
            f"({cells_per_block} cells of {pixels_per_cell} pixels = {block} pixels a side)"
        )

    def describe(image: np.ndarray) -> np.ndarray:
        return hog(
            rgb2gray(image),
            orientations=orientations,
            pixels_per_cell=(pixels_per_cell, pixels_per_cell),
            cells_per_block=(cells_per_block, cells_per_block),
            block_norm="L2-Hys",
            feature_vector=True,
        )

    first = describe(batch[0])
    out = np.empty((n, first.size), dtype=np.float32)
    out[0] = first
    for i in range(1, n):
        out[i] = describe(batch[i])
    return out


class LinearSVMDetector:
    """One linear SVM per AU on fixed features (Sec. 4.4): the "SVM" row on HOG features,
    the "ANet^T" row on fc7 features of a network trained on another dataset.

    ``fit(features, labels)`` trains, for each AU column, one ``sklearn.svm.LinearSVC``
    (cost ``C``, ``random_state=seed``, at most ``max_iter`` iterations) on the rows whose
    label for that AU is known: label -1 (unknown) is masked out, never taken as a negative.
    A linear SVM is sensitive to the scale of the features, so each AU's SVM sees features
    standardised to zero mean and unit variance over its own training rows (a constant
    feature is only centred); unknown rows therefore change neither the scaling nor the SVM.
    The standardisation is folded into the weights afterwards: ``coef_`` (L, D) and
    ``intercept_`` (L,) act on the raw features, score = coef_ · x + intercept_.

    ``aus``: the AU numbers of the label columns, only to name them in errors.
    """

    def __init__(
        self,
        C: float = 1.0,
        seed: int = 0,
        aus: Sequence[int] | None = None,
        max_iter: int = 10_000,
    ) -> None:
        if not C > 0:
            raise ValueError(f"LinearSVMDetector: expected a positive cost C, got {C}")
        if max_iter < 1:
            raise ValueError(f"LinearSVMDetector: expected max_iter >= 1, got {max_iter}")
        self.C = float(C)
        self.seed = int(seed)
        self.aus = None if aus is None else [int(a) for a in aus]
        self.max_iter = int(max_iter)
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None

    def _column(self, j: int) -> str:
        return f"AU column {j}" + (f" (AU{self.aus[j]})" if self.aus is not None else "")

    @staticmethod
    def _features(features: Any) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(
                f"LinearSVMDetector: expected non-empty (N, D) features, got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("LinearSVMDetector: expected finite features, got NaN or inf")
        return x

    def fit(self, features: np.ndarray, labels: np.ndarray) -> LinearSVMDetector:
        """Train one SVM per AU. ``features`` (N, D); ``labels`` (N, L) in {1 present,
        0 absent, -1 unknown}. Every AU needs both classes among its known labels; an AU
        that has only one raises a ValueError naming it, with its counts. Returns self."""
        try:
            from sklearn.svm import LinearSVC
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(f"LinearSVMDetector needs scikit-learn: {_INSTALL}") from err
        x = self._features(features)
        y = np.asarray(labels)
        if y.ndim != 2 or y.shape[0] != len(x) or y.shape[1] == 0:
            raise ValueError(
                f"LinearSVMDetector.fit: expected labels of shape ({len(x)}, L), one row per "
                f"feature row, got {y.shape}"
            )
        if not np.isin(y, (-1, 0, 1)).all():
            raise ValueError(
                "LinearSVMDetector.fit: expected labels in {1 (present), 0 (absent), -1 (unknown)}"
            )
        y = y.astype(np.int64)
        if self.aus is not None and len(self.aus) != y.shape[1]:
            raise ValueError(
                f"LinearSVMDetector.fit: {y.shape[1]} label columns but {len(self.aus)} aus "
                f"were given ({self.aus})"
            )
        for j in range(y.shape[1]):
            positive, negative = int((y[:, j] == 1).sum()), int((y[:, j] == 0).sum())
            if positive == 0 or negative == 0:
                raise ValueError(
                    f"LinearSVMDetector.fit: {self._column(j)} has only one class among its "
                    f"known training labels ({positive} present, {negative} absent, "
                    f"{int((y[:, j] == -1).sum())} unknown); a linear SVM needs both"
                )
        coef = np.empty((y.shape[1], x.shape[1]))
        intercept = np.empty(y.shape[1])
        for j in range(y.shape[1]):
            known = y[:, j] != -1
            rows = x[known]
            mean = rows.mean(axis=0)
            std = rows.std(axis=0)
            std[std == 0] = 1.0
            svm = LinearSVC(C=self.C, random_state=self.seed, max_iter=self.max_iter)
            svm.fit((rows - mean) / std, y[known, j])
            w = svm.coef_.ravel() / std
            coef[j] = w
            intercept[j] = float(svm.intercept_[0]) - float(w @ mean)
        self.coef_, self.intercept_ = coef, intercept
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """The SVM scores (N, L) of ``features`` (N, D): positive means the AU is present."""
        if self.coef_ is None or self.intercept_ is None:
            raise RuntimeError("LinearSVMDetector: call fit before decision_function/predict")
        x = self._features(features)
        if x.shape[1] != self.coef_.shape[1]:
            raise ValueError(
                f"LinearSVMDetector: expected features of dimension {self.coef_.shape[1]} "
                f"(as in fit), got {x.shape[1]}"
            )
        return x @ self.coef_.T + self.intercept_

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Binary AU predictions (N, L) in {0, 1}: 1 where the score is > 0."""
        return (self.decision_function(features) > 0).astype(np.int64)
