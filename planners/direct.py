"""The `direct` planner: ask the policy once and execute its chunk."""
from __future__ import annotations

import time

from robofleet.envs.contract import Observation
from robofleet.planners.contract import Decision
from robofleet.policies.contract import Policy


class Direct:
    """Execute the policy's predicted chunk as is."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def decide(self, obs: Observation, seed: int) -> Decision:
        start = time.perf_counter()
        prediction = self.policy.predict([obs], [seed])[0]
        return Decision(prediction=prediction, stats={"latency_s": time.perf_counter() - start})

    def reset(self) -> None:
        self.policy.reset()
