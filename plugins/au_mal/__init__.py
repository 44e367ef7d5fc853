"""Meta Auxiliary Learning for facial AU detection, with facial-expression data.

Yong Li and Shiguang Shan, *Meta Auxiliary Learning for Facial Action Unit Detection*
(IEEE Transactions on Affective Computing, 2021).

- :class:`MultiTaskNet` (Sec. 3.2, 4.1.1): a ResNet backbone with an AU head (Eq. 1) and an
  FE head (Eq. 2); :class:`MetaWeightNet`: one zero-initialised FC layer and a sigmoid that
  weighs each sample from its feature (Eq. 4).
- :class:`MAL` (Alg. 1): meta-train (Eq. 5-6), meta-test on the reserved AU validation set
  (Eq. 7-8), base-learning with the updated weights (Eq. 9-11), weights normalised per batch
  (Sec. 4.1.2). The data come from :class:`MALDataModule`, an
  :class:`au_lightning.data.AuxiliaryDataModule` whose validation set (the checkpoint's
  selection) is disjoint from the meta-test reserve ψ learns from.
- :class:`STL` and :class:`MTL` (Sec. 4.3): the single-task and the 1:1 multi-task rows.
- The analyses of Sec. 4.4: the loss and mean-weight curves (Fig. 3/4) written by every
  model, and :class:`ExpressionWeightAnalysis`, the FE samples ranked by learned weight
  (Fig. 5) and the weight-consistency correlation (Fig. 6).
"""

from au_mal.analysis import ExpressionWeightAnalysis, weight_consistency_summary
from au_mal.curves import TrainingCurves
from au_mal.data import MALDataModule
from au_mal.module import MAL, MTL, STL, MultiTaskAU
from au_mal.net import BACKBONES, MetaWeightNet, MultiTaskNet, MultiTaskOutput, normalized_weights

__all__ = [
    "BACKBONES",
    "MAL",
    "MTL",
    "STL",
    "ExpressionWeightAnalysis",
    "MALDataModule",
    "MetaWeightNet",
    "MultiTaskAU",
    "MultiTaskNet",
    "MultiTaskOutput",
    "TrainingCurves",
    "normalized_weights",
    "weight_consistency_summary",
]
