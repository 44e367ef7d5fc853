"""RE-Net: AU relations embedded in AU-specific batch norm, for AU occurrence and intensity.

Huiyuan Yang and Lijun Yin, *RE-Net: A Relation Embedded Deep Model for AU Occurrence and
Intensity Estimation* (ACCV 2020).

AU detection is cast as domain adaptation with one domain per AU: the convolutions and the
output layer are shared by all AUs (θ_s), every BN layer has per-AU statistics and per-AU
scale and bias (θ_c = (γ_c, β_c), Eq. 3), and the scale and bias each AU uses are mixed over
all AUs with the AU relation graph as weights (Eq. 4-5).

- :func:`label_correlation` (Sec. 3.3): ω, the Pearson correlations of the training labels.
- :class:`AUSpecificBatchNorm` (Eq. 3-5) and :class:`AURelationGraph` (fixed, or learnable
  as "Ours+learnable" in Table 7).
- :class:`RelationEmbeddedResNet` (Sec. 4.3): a torchvision ResNet with every BN replaced,
  running any set of AUs in one batched pass.
- :class:`RENet` (Sec. 3.4, 4.4, 4.6): the two training strategies, all-AU inference, the
  relation heatmap (Fig. 2) and new-AU recognition (Table 6);
  :class:`RENetIntensity` (Sec. 4.5): six intensity levels per AU, ICC(3,1) and MAE.
"""

from au_renet.module import RENet, RENetIntensity
from au_renet.net import (
    BACKBONES,
    HEADS,
    AURelationGraph,
    AUSpecificBatchNorm,
    PerAUOutput,
    RelationEmbeddedResNet,
    mix_parameters,
)
from au_renet.relation import check_relation, label_correlation, read_relation

__all__ = [
    "BACKBONES",
    "HEADS",
    "AURelationGraph",
    "AUSpecificBatchNorm",
    "PerAUOutput",
    "RENet",
    "RENetIntensity",
    "RelationEmbeddedResNet",
    "check_relation",
    "label_correlation",
    "mix_parameters",
    "read_relation",
]
