"""SynthAU subjects: identities, appearance and neutral biases.

A neutral bias is a resting face that looks like a slight AU (a mouth that seems to smile,
AU12, or to droop, AU15; a low brow, AU4; ...). It is rendered in every frame of the subject
and never labelled, so a generic detector errs per subject and personalization pays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from au_lightning.data.splits import PUBLISHED_PARTS
from au_lightning.data.synth.face import SubjectLook, sample_look
from au_lightning.errors import ConfigError

__all__ = ["BIAS_AUS", "SynthSubject", "layout_key", "make_subjects", "subject_names"]

#: AUs a resting face may resemble, and the range of the rendered offset (intensity units)
BIAS_AUS: dict[int, tuple[float, float]] = {
    12: (0.6, 1.3), 15: (0.6, 1.3), 4: (0.6, 1.3), 7: (0.5, 1.2),
    1: (0.5, 1.0), 17: (0.5, 1.0), 24: (0.5, 1.0), 14: (0.5, 1.0),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SynthSubject:
    """One synthetic person: a name in the layout's id style, a look, a neutral bias."""

    name: str
    look: SubjectLook
    bias: tuple[tuple[int, float], ...]


def _interleaved(parts: dict[str, tuple[str, ...]]) -> list[str]:
    """Subjects taken from the published parts in turn, so any prefix spreads over all parts
    (the default 12 BP4D-layout subjects are 4 of each part: ``bp4d_3fold`` works on them)."""
    columns = list(parts.values())
    return [col[i] for i in range(max(map(len, columns))) for col in columns if i < len(col)]


def subject_names(layout: str, n: int) -> list[str]:
    """``n`` subject ids in the style of ``layout``: BP4D and DISFA use their real ids."""
    pools = {
        "bp4d": _interleaved(PUBLISHED_PARTS["bp4d_3fold"]),
        "disfa": _interleaved(PUBLISHED_PARTS["disfa_3fold"]),
    }
    if layout in pools:
        if not 1 <= n <= len(pools[layout]):
            raise ConfigError(
                f"subjects={n}: the {layout} layout has 1 to {len(pools[layout])} subject ids"
            )
        return pools[layout][:n]
    if n < 1:
        raise ConfigError(f"subjects={n}; expected at least 1")
    return [f"S{i + 1:03d}" for i in range(n)]


def _bias(rng: np.random.Generator) -> tuple[tuple[int, float], ...]:
    if rng.random() < 0.2:
        return ()
    aus = rng.choice(list(BIAS_AUS), size=int(rng.integers(1, 3)), replace=False)
    if 12 in aus and 15 in aus:
        aus = aus[aus != 15]
    return tuple((int(a), float(rng.uniform(*BIAS_AUS[int(a)]))) for a in sorted(aus))


def layout_key(layout: str) -> int:
    """A layout's part of the random-stream keys, so two layouts never share people."""
    return sum(layout.encode())


def make_subjects(layout: str, n: int, seed: int) -> list[SynthSubject]:
    """Deterministic subjects; each draws from its own stream (seed, layout, index)."""
    subjects = []
    for i, name in enumerate(subject_names(layout, n)):
        rng = np.random.default_rng([seed, layout_key(layout), i])
        subjects.append(SynthSubject(name=name, look=sample_look(rng), bias=_bias(rng)))
    return subjects
