"""Baseline policies that need no model: `zero` (hold still) and `random` (uniform actions).

Both return chunks of `chunk_size` actions of dimension 7 (LIBERO's delta EEF pose + gripper).
`random` draws from the request's seed, so its episodes are reproducible whatever the worker count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.platform.config_fields import INTEGER_IN_RANGE, from_table, integer, setting
from robofleet.platform.seeds import generator
from robofleet.policies.contract import Prediction

ACTION_DIM = 7


@dataclass(frozen=True)
class ChunkOptions:
    """The [policy] options of `zero` and `random`."""

    chunk_size: int = setting(8, integer, minimum=1, message=INTEGER_IN_RANGE)  # actions per chunk


def _chunk_size(options: Mapping[str, Any], name: str) -> int:
    unknown = f"unknown option for policy {name!r}; allowed: {{allowed}}"
    return from_table(ChunkOptions, options, "policy.", unknown=unknown).chunk_size


class ZeroPolicy:
    """No motion, gripper open: the floor of every success table."""

    def __init__(self, chunk_size: int):
        self.chunk_size = chunk_size

    def predict(self, observations: Sequence[Observation], seeds: Sequence[int]) -> list[Prediction]:
        action = np.zeros((self.chunk_size, ACTION_DIM), dtype=np.float32)
        action[:, -1] = -1.0
        return [Prediction(actions=action.copy()) for _ in observations]

    def reset(self) -> None:
        pass


class RandomPolicy:
    """Uniform actions in [-1, 1]^7, drawn from each request's own seed."""

    def __init__(self, chunk_size: int):
        self.chunk_size = chunk_size

    def predict(self, observations: Sequence[Observation], seeds: Sequence[int]) -> list[Prediction]:
        return [
            Prediction(actions=generator(seed).uniform(-1.0, 1.0, (self.chunk_size, ACTION_DIM)).astype(np.float32))
            for seed in seeds
        ]

    def reset(self) -> None:
        pass


def make_zero(options: Mapping[str, Any], env_family: str) -> ZeroPolicy:
    return ZeroPolicy(_chunk_size(options, "zero"))


def make_random(options: Mapping[str, Any], env_family: str) -> RandomPolicy:
    return RandomPolicy(_chunk_size(options, "random"))
