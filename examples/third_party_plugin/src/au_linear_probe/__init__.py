"""A linear AU probe on pooled pixels: an example method plugin in its own distribution.

The method is a linear classifier probe (Alain & Bengio, *Understanding intermediate layers
using linear classifier probes*, arXiv:1610.01644, 2016) put directly on average-pooled
pixels: one logit per AU, trained with au-lightning's masked multi-label BCE. It is a floor
for the real methods (anything that learns features should beat it) and a template for a
third party's plugin: ``net.py`` holds the pure ``nn.Module``, ``module.py`` the
``AUMethod``, and ``pyproject.toml`` registers it under ``au_lightning.methods``.
"""

from au_linear_probe.module import LinearProbe
from au_linear_probe.net import LinearProbeNet

__all__ = ["LinearProbe", "LinearProbeNet"]
