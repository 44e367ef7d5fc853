"""The random states a run consumes (torch, CUDA, numpy, Python), in checkpoint-safe form.

Lightning checkpoints hold no random state, so a resumed run would shuffle, crop, flip and
drop out differently from an uninterrupted one. :class:`au_lightning.AUMethod` stores these
states with every checkpoint and puts them back when training resumes.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_states", "restore_rng_states"]


def capture_rng_states() -> dict[str, Any]:
    """The current states, as tensors, numbers and tuples only (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the states captured by :func:`capture_rng_states`."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
