"""RAF-DB-style expression images: prototypical AU combinations, and ambiguous samples.

A clear sample shows its expression's prototype (the episode table of ``dynamics``, with
neutral showing no AU) with varied intensities, and has a high annotator consistency
(0.75-1.0). An ambiguous sample's label comes from a non-AU cue tied to the label (gaze, head
pose, a hand-like occluder), while its AUs are a weak version of another expression's
prototype; it has a low consistency (0.2-0.5). MAL's learned sample weights should find them.
"""

from __future__ import annotations

import numpy as np

from au_lightning.data.formats import RAFDB_EXPRESSIONS
from au_lightning.data.synth.dynamics import EXPRESSION_EPISODES
from au_lightning.data.synth.face import Nuisance

__all__ = ["LABEL_CUES", "PROTOTYPES", "sample_expression_image"]

#: RAF-DB expression name -> the AUs of its prototype (neutral: none)
PROTOTYPES: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    name: EXPRESSION_EPISODES.get(name, ((), (), ())) for name in RAFDB_EXPRESSIONS
}

#: the non-AU cue that carries the label of an ambiguous sample
LABEL_CUES: dict[str, dict[str, float]] = {
    "surprise": {"pitch": -0.15},
    "fear": {"gaze": -0.9},
    "disgust": {"yaw": 0.15},
    "happiness": {"rotation": 8.0},
    "sadness": {"pitch": 0.15},
    "anger": {"gaze": 0.9},
    "neutral": {"hand": 0.7},
}


def _prototype(name: str, rng: np.random.Generator, strength: tuple[float, float]) -> dict:
    always, maybe, one_of = PROTOTYPES[name]
    aus = list(always) + [a for a in maybe if rng.random() < 0.5]
    if one_of:
        aus.append(int(rng.choice(one_of)))
    return {au: float(rng.uniform(*strength)) for au in aus}


def sample_expression_image(
    rng: np.random.Generator, ambiguous: bool
) -> tuple[int, dict[int, float], Nuisance, float]:
    """(label code into RAFDB_EXPRESSIONS, AU intensities, nuisance, consistency)."""
    label = int(rng.integers(len(RAFDB_EXPRESSIONS)))
    name = RAFDB_EXPRESSIONS[label]
    base = {
        "rotation": float(rng.normal(0, 2.5)),
        "dx": float(rng.normal(0, 0.015)),
        "dy": float(rng.normal(0, 0.015)),
        "scale": float(rng.uniform(0.96, 1.04)),
        "light_angle": float(rng.uniform(0, 2 * np.pi)),
        "light_strength": float(rng.uniform(0.05, 0.35)),
        "noise": float(rng.uniform(2, 6)),
        "blur": float(rng.uniform(0, 0.8)),
        "gaze": float(rng.normal(0, 0.15)),
    }
    if not ambiguous:
        return label, _prototype(name, rng, (2.0, 5.0)), Nuisance(**base), rng.uniform(0.75, 1)
    others = [e for e in RAFDB_EXPRESSIONS if e != name]
    shown = others[int(rng.integers(len(others)))]
    base.update(LABEL_CUES[name])
    return label, _prototype(shown, rng, (0.8, 2.5)), Nuisance(**base), rng.uniform(0.2, 0.5)
