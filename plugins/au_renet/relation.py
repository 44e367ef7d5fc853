"""The AU relation graph of RE-Net (Yang & Yin, Sec. 3.3): Pearson correlations of the
training labels, used as the edge weights ω of Eq. 5."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from au_lightning import ConfigError

__all__ = ["check_relation", "label_correlation"]

logger = logging.getLogger(__name__)

#: Eq. 5 divides by a row sum of ω; below this the mixed parameters blow up
MIN_ROW_SUM = 0.1


def label_correlation(labels: np.ndarray, aus: Sequence[int]) -> np.ndarray:
    """ω: the ``(C, C)`` Pearson correlation coefficients of the label columns (Sec. 3.3),
    with ω_cc = 1 (Eq. 5).

    ``labels`` are ``(N, C)`` occurrence (0/1) or intensity (0..5) values with -1 unknown;
    each pair of AUs is correlated over the rows where both are known. A pair with fewer
    than two such rows, or where either AU is constant there, has no defined correlation:
    its ω is 0 (no edge), and a warning names the AUs.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(aus):
        raise ValueError(f"labels of shape {labels.shape} do not have one column per AU {aus}")
    num = len(aus)
    omega = np.eye(num)
    undefined = []
    for i in range(num):
        for j in range(i + 1, num):
            both = (labels[:, i] >= 0) & (labels[:, j] >= 0)
            a, b = labels[both, i].astype(np.float64), labels[both, j].astype(np.float64)
            if len(a) < 2 or a.std() == 0 or b.std() == 0:
                undefined.append(f"AU{aus[i]}-AU{aus[j]}")
                continue
            omega[i, j] = omega[j, i] = np.corrcoef(a, b)[0, 1]
    if undefined:
        logger.warning(
            "no correlation defined for %s (constant or unknown labels in the training split); "
            "these pairs get no edge (omega 0)",
            ", ".join(undefined),
        )
    return omega


def check_relation(omega: np.ndarray, aus: Sequence[int]) -> None:
    """Raise when a row of ω sums to less than :data:`MIN_ROW_SUM`: Eq. 5 divides the mixed
    γ and β of that AU by the sum, so the AU's parameters would explode or flip sign."""
    sums = np.asarray(omega).sum(1)
    bad = [f"AU{a} ({s:.3f})" for a, s in zip(aus, sums, strict=True) if s < MIN_ROW_SUM]
    if bad:
        raise ConfigError(
            f"the AU relation rows of {', '.join(bad)} sum to less than {MIN_ROW_SUM}; Eq. 5 "
            "divides by this sum. Use model.graph learnable, or other AUs"
        )
