"""The `best_of_n` planner: N proposals from one batched policy call, each scored, the best executed.

    proposals  seeds[i] = proposal_seed(query_seed, i)     (keep_base: seeds[0] = query_seed itself,
               one policy.predict call with N requests      so proposal 0 is exactly direct's chunk)
               protocol "reference": seeds[i] = query_seed + i (run_libero_eval.py / the parallel
               worker: proposal i is seeded cfg.seed + i; proposal 0 is direct's chunk)
    scores     the scorer: `model` (planners/model_scorer.py) or `oracle` (planners/oracle.py)
    chosen     argmax of the scores; ties go to the lowest index (so proposal 0 is kept unless
               another proposal is strictly better)

With [serving] replicas the one predict call fans out over the replicas (ReplicaClient sends every
request before awaiting any) and batches with other workers' requests.

No silent loss: the proposal call, and each scoring call, is retried once after an infrastructure
failure (a dead replica has been failed over by then; planners/retry.py); an error of the policy's
code, or a second failure, raises PlanningError with its cause, which the episode loop records as
the episode's error. A decision's stats always hold N scores.

Decision.stats (kept per query in the episode row's `plan_stats`):
    n, scores (N floats), chosen, latency_s, scorer, proposal_retries, and the scorer's extras
    (model: aggregation, future/value steps, values N x F x V, search_depth; oracle: success_step,
    plan_steps, horizon, sim_steps).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.planners.contract import Decision, PlanningError
from robofleet.planners.retry import retry_once
from robofleet.platform.seeds import proposal_seed
from robofleet.policies.contract import Policy, Prediction


@dataclass(frozen=True)
class Scored:
    """What a scorer returns for N proposals.

    scores: N floats, higher is better. extras: JSON-able facts for the plan stats.
    plans: optional, per proposal the action sequence (P, d_act) to execute if it is chosen
        (the oracle's extended proposals); None = execute the proposal's own chunk.
    """

    scores: list[float]
    extras: Mapping[str, Any] = field(default_factory=dict)
    plans: list[np.ndarray] | None = None


class Scorer(Protocol):
    name: str

    def score(self, obs: Observation, proposals: Sequence[Prediction], seeds: Sequence[int]) -> Scored:
        """Score proposals[i] (made with seeds[i]) for `obs`; the simulator, if used, is left as found."""

    def reset(self) -> None:
        """Called at the start of every episode."""


def choose(scores: Sequence[float]) -> int:
    """Index of the best score; ties go to the lowest index. PlanningError on a non-finite score."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise PlanningError(f"cannot choose among scores {list(scores)}")
    return int(np.argmax(values))  # numpy returns the first maximum


class BestOfN:
    """Best-of-N planning over `policy`'s proposals (see module docstring).

    n: proposals per query (>= 1). keep_base: proposal 0 uses the query seed itself (direct's chunk).
    protocol: "reference" (proposal i seeded seed + i) or "robofleet" (SeedSequence children).
    """

    def __init__(self, policy: Policy, scorer: Scorer, n: int, keep_base: bool = False, protocol: str = "robofleet"):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.policy = policy
        self.scorer = scorer
        self.n = n
        self.keep_base = keep_base
        self.protocol = protocol

    def proposal_seeds(self, seed: int) -> list[int]:
        """The N proposal seeds of a query seed."""
        if self.protocol == "reference":
            return [int(seed) + i for i in range(self.n)]
        seeds = [proposal_seed(seed, i) for i in range(self.n)]
        if self.keep_base:
            seeds[0] = int(seed)
        return seeds

    def decide(self, obs: Observation, seed: int) -> Decision:
        start = time.perf_counter()
        seeds = self.proposal_seeds(seed)
        proposals, proposal_retries = retry_once(f"{self.n} proposals", lambda: self._propose(obs, seeds))
        scored = self.scorer.score(obs, proposals, seeds)
        if len(scored.scores) != self.n:
            raise PlanningError(f"scorer {self.scorer.name!r} returned {len(scored.scores)} scores for {self.n} proposals")
        chosen = choose(scored.scores)
        prediction = proposals[chosen]
        if scored.plans is not None:
            prediction = replace(prediction, actions=scored.plans[chosen])
        stats: dict[str, Any] = {
            "n": self.n,
            "scores": [float(s) for s in scored.scores],
            "chosen": chosen,
            "latency_s": time.perf_counter() - start,
            "scorer": self.scorer.name,
            "proposal_retries": proposal_retries,
            **scored.extras,
        }
        return Decision(prediction=prediction, stats=stats, proposals=tuple(proposals))

    def _propose(self, obs: Observation, seeds: list[int]) -> list[Prediction]:
        proposals = list(self.policy.predict([obs] * self.n, seeds))
        if len(proposals) != self.n:
            raise PlanningError(f"policy returned {len(proposals)} proposals for {self.n} requests")
        for i, p in enumerate(proposals):
            shape = np.shape(p.actions)
            if len(shape) != 2 or shape[0] < 1:
                raise PlanningError(f"proposal {i} has an action chunk of shape {shape}; expected (K>=1, d_act)")
        return proposals

    def reset(self) -> None:
        self.policy.reset()
        self.scorer.reset()
