"""Multiple transfer learning and multi-label balanced training (Ji et al., CVPRW 2020).

Sijie Ji, Kai Wang, Xiaojiang Peng, Jianfei Yang, Zhaoyang Zeng, Yu Qiao: "Multiple Transfer
Learning and Multi-label Balanced Training Strategies for Facial AU Detection In the Wild",
the SIAT-NTU entry of the EmotioNet Challenge 2020. The pipeline (Fig. 1):

1. MTCNN face detection and 5-point alignment (Sec. 3.2): ``au-lightning align``
   (:mod:`au_lightning.align`).
2. Multi-view features (Sec. 3.3): one backbone per view, each pre-trained on a face-level
   task (:class:`TransferPretrain` on :class:`au_lightning.data.PretextDataModule`:
   identity classification for the face view, expression recognition for the emotion view)
   and then fine-tuned on AU detection (:class:`Transfer`). Backbones: torchvision
   ResNet-18/50/152 and ArcFace's IR-152 (the paper's), with the 7x7 average pooling
   removed as an option (Sec. 4.4.1).
3. Balanced training (Sec. 3.4): MLROS batches (``data.sampler: mlros``) and the
   selective-learning weighted BCE of Eq. 1 (``loss_weights: selective``).
4. Ensemble (Sec. 3.5): :class:`TransferEnsemble` averages the views' probabilities.
5. Soft thresholds (Sec. 3.6): per-AU thresholds searched on the validation split.

Results are reported as accuracy, F1 and their mean, the final score (Sec. 4.3).
"""

from au_transfer.ensemble import TransferEnsemble
from au_transfer.module import Transfer, TransferPretrain
from au_transfer.net import BACKBONES, Backbone, ViewNet

__all__ = ["BACKBONES", "Backbone", "Transfer", "TransferEnsemble", "TransferPretrain", "ViewNet"]
