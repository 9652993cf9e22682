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
    """prediction: what to execute. stats: JSON-able plan facts (N, scores, chosen index, latency s).
    proposals: every proposal considered, in order (best_of_n; empty otherwise), for callers that
    report them (`robofleet serve`'s return_all_query_results); the episode loop ignores them."""

    prediction: Prediction
    stats: Mapping[str, Any] = field(default_factory=dict)
    proposals: tuple[Prediction, ...] = ()


class Planner(Protocol):
    def decide(self, obs: Observation, seed: int) -> Decision:
        """Choose an action chunk for `obs`; all randomness derives from `seed`."""

    def reset(self) -> None:
        """Called at the start of every episode."""
