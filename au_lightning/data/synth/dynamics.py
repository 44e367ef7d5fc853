"""AU timelines of SynthAU videos: expression episodes, isolated AUs, nuisance trajectories.

Co-occurrence comes from expression episodes (the table of issue #3):

| expression | AUs |
|---|---|
| happiness | 6+12 (+25) |
| sadness | 1+4+15 (+17) |
| surprise | 1+2+5 + 25 or 26 |
| anger | 4+5+7+23 |
| disgust | 9+10 (+17) |
| fear | 1+2+4+5+20+25 |

Isolated AUs occur too (speech-like 25, 10, 14, 17, 24 ...). Every event has an onset, an apex
plateau and an offset (smoothstep envelopes); AUs of one episode start with small lags. AU12
and AU15 are anatomically antagonistic: an event that would make them co-occur is rejected
with probability ``exclusion``. The rates are set so that base rates are skewed like BP4D's
(the majority AU has roughly ten times the positives of the minority).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from au_lightning.data.synth.face import SYNTH_AUS, Nuisance

__all__ = [
    "EXPRESSION_EPISODES",
    "ISOLATED_RATES",
    "NUISANCE_FIELDS",
    "au_timeline",
    "nuisance_array",
    "nuisance_track",
]

#: expression -> (AUs always present, AUs present with probability 0.5, one-of group)
EXPRESSION_EPISODES: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "happiness": ((6, 12), (25,), ()),
    "sadness": ((1, 4, 15), (17,), ()),
    "surprise": ((1, 2, 5), (), (25, 26)),
    "anger": ((4, 5, 7, 23), (), ()),
    "disgust": ((9, 10), (17,), ()),
    "fear": ((1, 2, 4, 5, 20, 25), (), ()),
}
#: expected episodes per 100 frames
EPISODE_RATES: dict[str, float] = {
    "happiness": 1.6,
    "sadness": 0.35,
    "surprise": 0.35,
    "anger": 0.25,
    "disgust": 0.25,
    "fear": 0.12,
}
#: expected isolated events per 100 frames
ISOLATED_RATES: dict[int, float] = {
    1: 0.15, 2: 0.1, 4: 0.25, 5: 0.05, 6: 0.2, 7: 0.9, 9: 0.02, 10: 0.7,
    12: 0.3, 14: 0.7, 15: 0.2, 17: 0.5, 20: 0.12, 23: 0.3, 24: 0.45, 25: 0.9, 26: 0.15,
}  # fmt: skip
ANTAGONISTS = ((12, 15),)
NUISANCE_FIELDS = ("rotation", "dx", "dy", "scale", "yaw", "pitch", "light_angle", "gaze")
_COLUMN = {au: j for j, au in enumerate(SYNTH_AUS)}


def _envelope(length: int, rng: np.random.Generator) -> np.ndarray:
    """Onset (smooth rise), apex plateau, offset (smooth fall), peak 1."""
    onset = max(2, int(length * rng.uniform(0.15, 0.35)))
    offset = max(2, int(length * rng.uniform(0.2, 0.4)))
    apex = max(1, length - onset - offset)
    rise = np.linspace(0, 1, onset, endpoint=False)
    fall = np.linspace(1, 0, offset + 1)[1:]
    shape = np.concatenate([rise, np.ones(apex), fall])
    return shape * shape * (3 - 2 * shape)


def _place(
    timeline: np.ndarray, aus: list[int], start: int, length: int, rng: np.random.Generator
) -> None:
    for au in aus:
        lag = int(rng.integers(0, 4))
        peak = rng.uniform(1.2, 5.0)
        env = peak * _envelope(length, rng) * rng.uniform(0.9, 1.1, size=length).clip(0, 1)
        lo = start + lag
        hi = min(len(timeline), lo + length)
        if hi > lo:
            col = _COLUMN[au]
            timeline[lo:hi, col] = np.maximum(timeline[lo:hi, col], env[: hi - lo])


def _conflicts(timeline: np.ndarray, aus: list[int], start: int, length: int) -> bool:
    window = timeline[max(0, start - 2) : start + length + 6]
    for a, b in ANTAGONISTS:
        if a in aus and (window[:, _COLUMN[b]] >= 0.5).any():
            return True
        if b in aus and (window[:, _COLUMN[a]] >= 0.5).any():
            return True
    return False


def au_timeline(
    n_frames: int,
    rng: np.random.Generator,
    *,
    episode_rates: Mapping[str, float] = EPISODE_RATES,
    isolated_rates: Mapping[int, float] = ISOLATED_RATES,
    exclusion: float = 0.95,
) -> np.ndarray:
    """Float intensities (n_frames, 17) in [0, 5] for the AUs of ``SYNTH_AUS``."""
    timeline = np.zeros((n_frames, len(SYNTH_AUS)))
    events: list[tuple[list[int], int]] = []
    for name, rate in episode_rates.items():
        always, maybe, one_of = EXPRESSION_EPISODES[name]
        for _ in range(rng.poisson(rate * n_frames / 100)):
            aus = list(always) + [a for a in maybe if rng.random() < 0.5]
            if one_of:
                aus.append(int(rng.choice(one_of)))
            events.append((aus, int(rng.integers(25, 70))))
    for au, rate in isolated_rates.items():
        for _ in range(rng.poisson(rate * n_frames / 100)):
            events.append(([au], int(rng.integers(10, 40))))
    for i in rng.permutation(len(events)):
        aus, length = events[i]
        start = int(rng.integers(-length // 2, n_frames))
        if _conflicts(timeline, aus, start, length) and rng.random() < exclusion:
            continue
        _place(timeline, aus, max(start, 0), length - max(0, -start), rng)
    return timeline.clip(0, 5)


def _smooth(n: int, rng: np.random.Generator, periods: tuple[float, float]) -> np.ndarray:
    """A smooth signal in about [-1, 1]: three sinusoids with random periods and phases."""
    t = np.arange(n)
    signal = np.zeros(n)
    for _ in range(3):
        period = rng.uniform(*periods)
        signal += np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return signal / 3


def nuisance_track(n_frames: int, rng: np.random.Generator) -> list[Nuisance]:
    """Per-frame nuisance that changes smoothly in time; light, noise and blur per video."""
    light_angle = rng.uniform(0, 2 * np.pi)
    light_strength = rng.uniform(0.05, 0.35)
    noise = rng.uniform(2, 6)
    blur = rng.uniform(0, 0.8)
    tracks = {
        "rotation": 5.0 * _smooth(n_frames, rng, (60, 240)),
        "dx": 0.025 * _smooth(n_frames, rng, (60, 240)),
        "dy": 0.025 * _smooth(n_frames, rng, (60, 240)),
        "scale": 1 + 0.035 * _smooth(n_frames, rng, (80, 300)),
        "yaw": 0.12 * _smooth(n_frames, rng, (60, 240)),
        "pitch": 0.1 * _smooth(n_frames, rng, (60, 240)),
        "light_angle": light_angle + 0.3 * _smooth(n_frames, rng, (200, 600)),
        "gaze": 0.3 * _smooth(n_frames, rng, (30, 120)),
    }
    return [
        Nuisance(
            **{k: float(v[i]) for k, v in tracks.items()},
            light_strength=light_strength,
            noise=noise,
            blur=blur,
        )
        for i in range(n_frames)
    ]


def nuisance_array(track: list[Nuisance]) -> np.ndarray:
    """(T, len(NUISANCE_FIELDS)) float array of a track, e.g. for head-pose labels."""
    return np.array([[getattr(n, f) for f in NUISANCE_FIELDS] for n in track])
