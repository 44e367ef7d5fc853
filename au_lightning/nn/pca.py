"""PCA as a module: fitted once on training features, then a fixed linear map."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PCA"]


class PCA(nn.Module):
    """Principal component projection ``(x - mean) @ components.T / scale`` with the fit in
    buffers, so it is saved with a checkpoint.

    Chu et al. (Sec. 3.2, "Practical issues") reduce the 4096-D fc7 features to 1024-D by PCA
    fitted on the training features ("preserving 98% energy") before the LSTMs. Energy is the
    share of the total variance (the sum of the covariance eigenvalues) that the kept
    components carry.

    ``fit(..., standardize=True)`` also divides each component by its standard deviation
    on the fitted features (``scale``; 1 otherwise), so that every output has mean 0 and
    SD 1 on them: PCA whitening, as scikit-learn's ``PCA(whiten=True)``. The paper does not
    whiten; the hybrid model does by default (a documented deviation), because L2-normalised
    4096-D fc7 features have per-component SDs of about 0.005.

    Args:
        in_features: input dimension.
        max_components: the most components kept (1024 in the paper); the output dimension,
            fixed before fitting so that later layers can be built. When ``energy`` needs
            fewer, the rest of the output is zero.
    """

    def __init__(self, in_features: int, max_components: int) -> None:
        super().__init__()
        if not 1 <= max_components <= in_features:
            raise ValueError(
                f"max_components must be in [1, in_features={in_features}], got {max_components}"
            )
        self.in_features = in_features
        self.max_components = max_components
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("components", torch.zeros(max_components, in_features))
        self.register_buffer("explained_energy", torch.tensor(0.0))
        self.register_buffer("num_components", torch.tensor(0))
        self.register_buffer("scale", torch.ones(max_components))
        self.register_load_state_dict_pre_hook(PCA._unit_scale_if_missing)

    @staticmethod
    def _unit_scale_if_missing(
        module: nn.Module, state: dict[str, Tensor], prefix: str, *args: object
    ) -> None:
        """A checkpoint written before ``scale`` existed projects without standardising."""
        if f"{prefix}components" in state and f"{prefix}scale" not in state:
            state[f"{prefix}scale"] = torch.ones(len(state[f"{prefix}components"]))

    @property
    def fitted(self) -> bool:
        return int(self.num_components) > 0

    @torch.no_grad()
    def fit(self, features: Tensor, energy: float | None = None, standardize: bool = False) -> PCA:
        """Fit on ``features`` (N, in_features): keep the fewest leading components whose
        energy reaches ``energy`` (None: ``max_components``), at most ``max_components`` and
        at most the rank of the centred data; with ``standardize``, scale each kept
        component to SD 1 (with N - 1, as ``Tensor.std``) on ``features``."""
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"PCA.fit needs features of shape (N, {self.in_features}), got "
                f"{tuple(features.shape)}"
            )
        if energy is not None and not 0 < energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {energy}")
        x = features.detach().double()
        mean = x.mean(0)
        # the right singular vectors of the centred data are the covariance eigenvectors
        _, singular, vh = torch.linalg.svd(x - mean, full_matrices=False)
        variance = singular**2
        total = variance.sum()
        if total <= 0:
            raise ValueError("PCA.fit: the features have zero variance")
        cumulative = torch.cumsum(variance, 0) / total
        rank = int((singular > singular[0] * 1e-10).sum())
        keep = min(self.max_components, rank)
        if energy is not None:
            # the first k whose cumulative energy reaches the target (float tolerance)
            keep = min(keep, int((cumulative < energy - 1e-12).sum()) + 1)
        self.mean.copy_(mean.float())
        self.components.zero_()
        self.components[:keep].copy_(vh[:keep].float())
        self.explained_energy.fill_(float(cumulative[keep - 1]))
        self.num_components.fill_(keep)
        self.scale.fill_(1.0)
        if standardize:
            # a component's SD is its singular value / sqrt(N - 1); N = 1 leaves scale 1
            sd = singular[:keep] / max(len(x) - 1, 1) ** 0.5
            self.scale[:keep].copy_(sd.clamp(min=1e-12).float())
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Projections ``(..., max_components)`` of ``x`` ``(..., in_features)``."""
        if not self.fitted:
            raise RuntimeError("PCA is not fitted: call fit(training_features) first")
        return (x - self.mean) @ self.components.T / self.scale
