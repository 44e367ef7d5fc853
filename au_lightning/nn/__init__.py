"""Shared network backbones and heads: pure ``nn.Module``s, no training logic.

- ``ANet``: the multi-label AlexNet of Chu, De la Torre & Cohn (Sec. 3.1), with ``features``
  giving its fc7 representation.
- ``resnet_backbone``: a torchvision ResNet-18/34/50/101/152 feature extractor, random,
  ImageNet (hub cache first, offline-friendly) or loaded from a local file; global average
  pooling, or Ji et al.'s (Sec. 4.4.1) flattening output layer in its place.
- ``IRNet``, ``ir_backbone``: ArcFace's IR-50/100/152 (Deng et al. 2019), Ji et al.'s
  (Sec. 3.3) backbone, random or loaded from a local file.
- ``MultiLabelHead``: one logit per AU on top of a feature vector.
- ``PCA``: a principal component projection fitted on training features, kept in buffers.
"""

from au_lightning.nn.anet import ANet
from au_lightning.nn.irnet import IRNet, ir_backbone
from au_lightning.nn.pca import PCA
from au_lightning.nn.resnet import MultiLabelHead, resnet_backbone

__all__ = ["PCA", "ANet", "IRNet", "MultiLabelHead", "ir_backbone", "resnet_backbone"]
