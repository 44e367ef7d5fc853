"""MAML for fast adaptation of facial AU detection to new subjects and new AUs.

Mihee Lee, Ognjen Rudovic, Vladimir Pavlovic and Maja Pantic, *Fast Adaptation of Deep
Models for Facial Action Unit Detection Using Model-Agnostic Meta-Learning* (2019), after
Finn, Abbeel and Levine, *Model-Agnostic Meta-Learning* (ICML 2017).

- A task is a (subject, AU) pair (Sec. 4.1.3) with balanced few-shot sets (Sec. 4.1.4);
  the episodes come from :class:`au_lightning.data.EpisodeDataModule`.
- :class:`Conv4` (Sec. 3.1): one binary detector for any AU and any subject.
- :class:`MAML` (Alg. 1, Eq. 1-3): per-task inner steps, a meta-update on the query losses,
  through :class:`au_lightning.InnerLoop` (``higher`` or ``torch.func``).
- :class:`MAMLBaseline` (Sec. 3.3): the same detector trained on "any AU present" frames.
- Both are evaluated by adapting to each test task's K-shot set and scoring a balanced
  10+/10- set after every step (Sec. 4.2.2): Tables 1-3, Figs. 11 and 14.
"""

from au_maml.module import MAML, AdaptiveDetector, MAMLBaseline, any_au_present, binary_bce
from au_maml.net import FILTERS, Conv4

__all__ = [
    "FILTERS",
    "MAML",
    "AdaptiveDetector",
    "Conv4",
    "MAMLBaseline",
    "any_au_present",
    "binary_bce",
]
