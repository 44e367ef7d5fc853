"""The AU relation graph of RE-Net (Yang & Yin, Sec. 3.3): Pearson correlations of the
training labels, used as the edge weights ω of Eq. 5."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from au_lightning import ConfigError

__all__ = ["check_relation", "label_correlation", "read_relation"]

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


def read_relation(path: Path, aus: Sequence[int]) -> np.ndarray:
    """ω ``(C, C)`` for ``aus`` from a relation CSV as :meth:`RENet.write_relation` writes
    it (``relation.csv``: a header ``AU,AU1,AU2,...`` and one row ``AU<n>,...`` per AU), in
    the order of ``aus``; the file may hold more AUs. Raises a ``ConfigError`` naming the
    AUs it lacks."""
    try:
        with Path(path).open(newline="") as f:
            rows = list(csv.reader(f))
        columns = [int(name.removeprefix("AU")) for name in rows[0][1:]]
        table = {int(r[0].removeprefix("AU")): [float(v) for v in r[1:]] for r in rows[1:]}
    except (OSError, ValueError, IndexError) as err:
        raise ConfigError(f"{path} is not a relation CSV (AU,AU1,AU2,... rows): {err}") from err
    missing = [a for a in aus if a not in columns or a not in table]
    if missing:
        raise ConfigError(f"the relation CSV {path} has no row or column for AUs {missing}")
    return np.array([[table[a][columns.index(b)] for b in aus] for a in aus])
