"""The plain multi-label CNN baseline: the "ResNet18", "ResNet-50", "STL" and "ANet" rows of
the papers' tables.

- Yang & Yin, *RE-Net* (Tables 1-3, Sec. 4.2): ResNet-18, Adam with learning rate 1e-4,
  256x256 faces randomly cropped to 224x224 with horizontal flips; the network RE-Net
  reduces to when its AU-specific BN has scale 1 and bias 0.
- Li & Shan, *Meta Auxiliary Learning* (Sec. 4.2): the single-task (STL) row, a 34-layer
  ResNet with one fully connected AU classifier on its 512-D feature.
- Ji et al., *multiple transfer and multi-label balanced training* (Table 1): ResNet-18/50/152
  backbones compared under one protocol.
- Chu, De la Torre & Cohn (Sec. 3.1): ANet, the multi-label AlexNet, trained with the
  multi-label cross-entropy of Eq. (1).

Every variant is one logit per AU trained with the masked multi-label BCE (unknown labels
do not count), optionally weighting positives by the training base rates.
"""

from au_baseline.module import Baseline
from au_baseline.net import BACKBONES, BaselineNet

__all__ = ["BACKBONES", "Baseline", "BaselineNet"]
