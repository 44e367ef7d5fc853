"""Losses for multi-label AU targets with unknown labels."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["masked_bce", "positive_weights"]


def masked_bce(logits: Tensor, target: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy over the known labels only (``target`` -1 is unknown).

    ``pos_weight`` (L,) multiplies the positive term per AU, as in
    ``torch.nn.BCEWithLogitsLoss``. With no known label in the batch the loss is 0 (and still
    connected to ``logits``, so a backward pass is harmless).
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    known = target >= 0
    weight = None if pos_weight is None else pos_weight.to(logits).expand_as(logits)[known]
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(
        logits[known], target[known].to(logits.dtype), pos_weight=weight
    )


def positive_weights(occurrence: Tensor, max_weight: float = 20.0) -> Tensor:
    """Per-AU ``(1 - p) / p`` from the known labels' positive rate p, clipped to
    ``max_weight`` (an AU with no known positive gets ``max_weight``)."""
    known = (occurrence >= 0).sum(0).clamp(min=1)
    p = (occurrence == 1).sum(0) / known
    return ((1 - p) / p.clamp(min=1e-12)).clamp(max=max_weight).to(torch.float32)
