"""The Planner contract: one observation and a seed in, the chunk to execute (and how it was chosen) out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from robofleet.envs.contract import Observation
from robofleet.platform.errors import RobofleetError
from robofleet.policies.contract import Prediction


class PlanningError(RobofleetError):
    """A planning step could not be completed (a proposal or its scoring failed twice, or the
    simulator could not be restored). Raised, never swallowed: the episode row records it with its cause."""


@dataclass(frozen=True)
class Decision:
    """prediction: what to execute. stats: JSON-able plan facts (N, scores, chosen index, latency s)."""

    prediction: Prediction
    stats: Mapping[str, Any] = field(default_factory=dict)


class Planner(Protocol):
    def decide(self, obs: Observation, seed: int) -> Decision:
        """Choose an action chunk for `obs`; all randomness derives from `seed`."""

    def reset(self) -> None:
        """Called at the start of every episode."""
