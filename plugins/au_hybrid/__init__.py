"""The hybrid CNN + LSTM network for multi-label AU detection, with multi-label sampling.

Wen-Sheng Chu, Fernando De la Torre and Jeffrey F. Cohn, *Learning facial action units with
spatiotemporal cues and multi-label sampling* (Image and Vision Computing 81, 2019).

- :class:`SpatialCNN` (Sec. 3.1): ANet, the multi-label AlexNet trained with Eq. (1), or a
  ResNet; its L2-normalised fc7 feature is the spatial representation.
- :class:`TemporalLSTM` (Sec. 3.2): three stacked LSTMs of 256 cells on the PCA-reduced
  features (:class:`au_lightning.nn.PCA`), trained with the max-margin loss
  (:func:`au_lightning.max_margin_loss`, λ = 0.5).
- :class:`FusionNet` (Sec. 3.3): two shared fully connected layers over the stacked
  L2-normalised CNN and LSTM scores of each frame.
- :class:`Hybrid`: the three stages in one ``fit`` on a
  :class:`au_lightning.data.SequenceDataModule` (windows of one video, Sec. 4.2), tested with
  frame F1 and event F1 for every head (Tables 1/2).
- Sec. 5's multi-label stratification and MOMU sampling are the data module's samplers
  (``sampler: stratified | momu``, :mod:`au_lightning.data.sampling`).
- Sec. 4.3's subject-invariance (JS divergence, Eq. 2) and t-SNE: :mod:`au_hybrid.analysis`;
  the HOG + linear SVM row: :mod:`au_hybrid.svm` (extra ``hybrid``); Sec. 6's AU
  visualization: ``au-lightning visualize``.
"""

from au_hybrid.module import STAGES, FrameFeatures, Hybrid, Stage
from au_hybrid.net import BACKBONES, FusionNet, HybridNet, SpatialCNN, TemporalLSTM
from au_hybrid.results import HEADS, Head, event_scores, hybrid_table

__all__ = [
    "BACKBONES",
    "HEADS",
    "STAGES",
    "FrameFeatures",
    "FusionNet",
    "Head",
    "Hybrid",
    "HybridNet",
    "SpatialCNN",
    "Stage",
    "TemporalLSTM",
    "event_scores",
    "hybrid_table",
]
