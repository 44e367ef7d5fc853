"""Losses for multi-label AU targets with unknown labels, and their imbalance weights."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "SelectiveTarget",
    "masked_bce",
    "max_margin_loss",
    "positive_weights",
    "selective_weights",
]

#: the share selective learning weights each batch toward: ``data``, the training set's base
#: rate (Ji et al. Sec. 3.4, "the true distribution"), or ``balanced``, 0.5 (Hand et al.)
SelectiveTarget = Literal["data", "balanced"]


def masked_bce(
    logits: Tensor,
    target: Tensor,
    pos_weight: Tensor | None = None,
    weight: Tensor | None = None,
    per_sample: bool = False,
) -> Tensor:
    """Mean binary cross-entropy over the known labels only (``target`` -1 is unknown).

    ``pos_weight`` (L,) multiplies the positive term per AU, as in
    ``torch.nn.BCEWithLogitsLoss``; ``weight`` (B, L) multiplies each label's term (the w of
    Ji et al. Eq. 1). The mean is over the known labels. With no known label in the batch
    the loss is 0 (and still connected to ``logits``, so a backward pass is harmless).

    ``per_sample``: instead, each sample's sum over its known labels, shape (B,): the
    per-sample multi-label loss L_i of Li & Shan Eq. 1 (a sample with no known label: 0).
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    if weight is not None and weight.shape != logits.shape:
        raise ValueError(f"weight {tuple(weight.shape)} and logits {tuple(logits.shape)} differ")
    known = target >= 0
    if per_sample:
        # unknown entries are zeroed before the loss, so nothing there reaches a gradient
        loss = F.binary_cross_entropy_with_logits(
            logits.where(known, 0.0),
            target.clamp(min=0).to(logits.dtype),
            pos_weight=None if pos_weight is None else pos_weight.to(logits),
            reduction="none",
        )
        if weight is not None:
            loss = loss * weight.to(loss).where(known, 0.0)
        return loss.where(known, 0.0).sum(1)
    if not known.any():
        return logits.sum() * 0.0
    pos = None if pos_weight is None else pos_weight.to(logits).expand_as(logits)[known]
    loss = F.binary_cross_entropy_with_logits(
        logits[known], target[known].to(logits.dtype), pos_weight=pos, reduction="none"
    )
    if weight is not None:
        loss = loss * weight.to(loss)[known]
    return loss.mean()


def max_margin_loss(
    scores: Tensor, target: Tensor, margin: float = 0.5, frame_mask: Tensor | None = None
) -> Tensor:
    """The multi-label max-margin loss of Chu et al. (Sec. 3.2), averaged over frames.

    For one frame with labels y in {-1, 0, +1}^L (absent, missing, present) and scores
    ŷ in [-1, 1]^L (the LSTMs' tanh outputs), L_M(y, ŷ) = (1/n_0) Σ_i max(0, λ - y_i ŷ_i),
    n_0 the number of non-zero y_i; λ = ``margin`` (0.5 in the paper). ``target`` is in this
    project's convention (1 present, 0 absent, -1 unknown), so a missing label (y_i = 0)
    contributes nothing, not even the constant λ. The gradient is ∂L_M/∂ŷ_i = -y_i/n_0
    where y_i ŷ_i < λ and 0 elsewhere (the paper's text writes "< 1" there; with λ = 0.5
    the hinge above is the loss it defines, so its gradient switches at λ).

    ``scores`` and ``target`` are ``(..., L)``; ``frame_mask`` ``(...)`` keeps the frames
    that count (False for the burn-in frames of a window). The result is the mean of L_M
    over counted frames that have a known label (0, still connected to ``scores``, if none).
    """
    if scores.shape != target.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and target {tuple(target.shape)} differ")
    y = torch.where(target == 1, 1.0, torch.where(target == 0, -1.0, 0.0)).to(scores)
    n0 = (y != 0).sum(-1)
    per_frame = (margin - y * scores).clamp(min=0).where(y != 0, 0.0).sum(-1)
    counted = n0 > 0
    if frame_mask is not None:
        if frame_mask.shape != scores.shape[:-1]:
            raise ValueError(
                f"frame_mask {tuple(frame_mask.shape)} must have shape {tuple(scores.shape[:-1])}"
            )
        counted = counted & frame_mask.bool()
    if not counted.any():
        return scores.sum() * 0.0
    return (per_frame[counted] / n0[counted]).mean()


def positive_weights(rate: Tensor, max_weight: float = 20.0) -> Tensor:
    """Per-AU ``(1 - p) / p`` from the base rates p (``au_lightning.data.positive_rates``),
    clipped to ``max_weight`` (an AU with no known positive gets ``max_weight``)."""
    return ((1 - rate) / rate.clamp(min=1e-12)).clamp(max=max_weight)


def selective_weights(target: Tensor, rate: Tensor, goal: SelectiveTarget = "data") -> Tensor:
    """Selective-learning weights (Hand et al. 2018), the w of Ji et al. 2020 Eq. 1 (Sec. 3.4).

    Per AU, the batch's positive share among its known labels b = n+ / (n+ + n-) is
    compared with the target share t:

    * b > t (positives over-represented): negatives get n+ (1 - t) / (n- t), positives 1;
    * b < t (under-represented): positives get n- t / (n+ (1 - t)), negatives 1;
    * b = t, or one class absent from the batch: every label 1.

    Either way the weighted positive share of the batch equals t. Unknown labels get 0.

    ``goal`` chooses t. ``data`` (the default, Ji et al.'s reading: "the whole distribution
    of labels ... calculating all the labels across the database", "the true distribution")
    takes t = ``rate``, the training set's base rate per AU. Each batch is then weighted back
    to the base rates, which undoes the oversampling of an MLROS batch. ``balanced`` takes
    t = 0.5 for every AU (``rate`` is unused), the balanced target of Hand et al., so that
    each batch's positives and negatives weigh alike.
    Returns ``(B, L)`` float weights for ``target`` ``(B, L)`` in {-1, 0, 1}.
    """
    if goal not in ("data", "balanced"):
        raise ValueError(f"selective target must be data or balanced, got {goal!r}")
    known = target >= 0
    pos = (target == 1).sum(0).to(torch.float32)
    neg = (target == 0).sum(0).to(torch.float32)
    t = torch.full_like(pos, 0.5) if goal == "balanced" else rate.to(pos).clamp(1e-6, 1 - 1e-6)
    both = (pos > 0) & (neg > 0)
    share = pos / (pos + neg).clamp(min=1)
    ones = torch.ones_like(pos)
    w_neg = torch.where(both & (share > t), pos * (1 - t) / (neg.clamp(min=1) * t), ones)
    w_pos = torch.where(both & (share < t), neg * t / (pos.clamp(min=1) * (1 - t)), ones)
    weights = torch.where(target == 1, w_pos, w_neg)
    return weights * known
