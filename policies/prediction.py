"""Prediction classes that carry a model's internal sample, defined without torch so they load anywhere.

Predictions travel by pickle from policy replicas (driver environment, torch) to env workers, some of
which run in the robosuite-1.5 environment that has no torch (envs/families.py). Unpickling imports
the class's module, so a prediction class must live in a module that imports only numpy and the
contracts: this one. The policy that makes them (policies/cosmos/policy.py) imports them from here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robofleet.policies.contract import Prediction


@dataclass(frozen=True)
class CosmosPrediction(Prediction):
    """A Prediction plus the latent sample its future state and value were read from.

    latents: float32 (16, T, h, w) normalised latents (~450 KB at 224 px for LIBERO). `value()`
        reuses their future-state frames instead of re-encoding decoded images.
    """

    latents: np.ndarray | None = None
