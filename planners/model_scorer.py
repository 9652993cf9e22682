"""The `model` scorer of best_of_n: a world-model ensemble x a value ensemble per proposal (REFERENCE.md §3).

For each proposal (an action chunk for the current observation):

    futures  f = 1..F   imagine(obs, chunk, seed_f, num_steps=future_steps[f])      (reference: 1/3/5)
    values   v = 1..V   value(obs, chunk, future_f, seed_fv, num_steps=value_steps[v])  (reference: 1..5)
    score  = aggregate(the F x V values)

Aggregations (values are in [0, 1]):
    average        the mean of the F x V values.
    lcb            mean - std (population std): prefers proposals the ensemble agrees on.
    success_vote   the fraction of values above `success_threshold` (default 0.5): each ensemble
                   member votes "this proposal succeeds" or not; the proposal with the most votes
                   wins. Ties (common: the score moves in steps of 1/(F x V)) go to the lowest
                   index, i.e. to proposal 0 = the base proposal with keep_base.
    majority_mean  if at least half of the values exceed 0.05, the mean of those values, else 0.

Search depth d > 1: each proposal is followed, in imagination, by d - 1 more chunks. The world model
imagines the state after the chunk (one pass, with future_steps[0] steps); that predicted future
(proprio + decoded camera images, with the instruction) becomes the current observation; the acting
policy predicts the next chunk from it; after d chunks the ensembles above score the last imagined
state. So depth d looks d chunks ahead along the policy's own continuation of each proposal (N x d
world-model passes, not N^d). It needs a world model that returns future images
(cosmos: `return_future_images = true` in the planning policy's options).

Seeds: every pass draws its noise from a seed derived from the proposal's seed (platform/seeds.py),
so a score never depends on which replica ran it or on its batch-mates (deterministic serving).
Calls are grouped by step count (one imagine call per future member for all N proposals, one value
call per value member for all N x F futures), so with replicas each call fans out and batches.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.planners.best_of_n import Scored
from robofleet.planners.contract import PlanningError
from robofleet.planners.options import ModelScorerOptions
from robofleet.planners.retry import retry_once
from robofleet.platform.seeds import proposal_seed, query_seed
from robofleet.policies.contract import Policy, Prediction

# Sub-streams of a proposal's seed (proposal_seed(seed, k) used as a generic SeedSequence child).
_FUTURE_STREAM, _VALUE_STREAM, _DEPTH_STREAM = 1, 2, 3
MAJORITY_FLOOR = 0.05  # majority_mean: a value above it counts as a "success-ish" vote


def aggregate(values: np.ndarray, how: str, success_threshold: float = 0.5) -> float:
    """One score from an ensemble of values (any shape, each in [0, 1]); see the module docstring."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        raise ValueError("cannot aggregate an empty ensemble")
    if how == "average":
        return float(flat.mean())
    if how == "lcb":
        return float(flat.mean() - flat.std())
    if how == "success_vote":
        return float(np.mean(flat > success_threshold))
    if how == "majority_mean":
        above = flat[flat > MAJORITY_FLOOR]
        return float(above.mean()) if 2 * above.size >= flat.size else 0.0
    raise ValueError(f"unknown aggregation {how!r}")


def imagined_observation(current: Observation, future: Prediction) -> Observation:
    """The predicted state after a chunk as an Observation the policy can act on (search depth > 1)."""
    if future.future_images is None or future.future_proprio is None:
        raise PlanningError("search_depth > 1 needs a world model that returns future images and proprio "
                            "(cosmos: set return_future_images = true in the planning policy's options)")
    return Observation(images=dict(future.future_images), proprio=np.asarray(future.future_proprio, dtype=np.float32),
                       instruction=current.instruction)


class ModelScorer:
    """Scores proposals with `world_model.imagine` and `world_model.value` (see module docstring).

    acting: the policy that made the proposals (predicts the continuation chunks at depth > 1).
    world_model: a policy offering imagine/value (the acting policy itself, or a planning checkpoint).
    """

    name = "model"

    def __init__(self, acting: Policy, world_model: Any, options: ModelScorerOptions, search_depth: int = 1):
        for method in ("imagine", "value"):
            if not callable(getattr(world_model, method, None)):
                raise PlanningError(f"scorer 'model' needs a world model with {method}(); "
                                    f"{type(world_model).__name__} has none (set planner.planning_policy)")
        self.acting = acting
        self.world_model = world_model
        self.options = options
        self.search_depth = search_depth

    def reset(self) -> None:
        if self.world_model is not self.acting:
            self.world_model.reset()

    def score(self, obs: Observation, proposals: Sequence[Prediction], seeds: Sequence[int]) -> Scored:
        """One score per proposal; extras: aggregation, step counts, values (N x F x V), depth, retries."""
        n = len(proposals)
        opts = self.options
        retries = 0
        states = [obs] * n
        chunks = [np.asarray(p.actions) for p in proposals]
        for level in range(1, self.search_depth):
            level_seeds = [proposal_seed(proposal_seed(s, _DEPTH_STREAM), level) for s in seeds]
            futures, r1 = retry_once(f"imagine at depth {level} for {n} proposals", lambda: self._imagine(
                states, chunks, level_seeds, opts.future_steps[0]))
            states = [imagined_observation(state, future) for state, future in zip(states, futures)]
            next_seeds = [query_seed(s, level) for s in level_seeds]
            continued, r2 = retry_once(f"policy continuation at depth {level + 1}", lambda: self.acting.predict(
                states, next_seeds))
            chunks = [np.asarray(p.actions) for p in continued]
            retries += r1 + r2

        futures_by_member = []
        for f, steps in enumerate(opts.future_steps):
            member_seeds = [proposal_seed(proposal_seed(s, _FUTURE_STREAM), f) for s in seeds]
            futures, r = retry_once(f"imagine (future member {f}, {steps} steps) for {n} proposals",
                                    lambda: self._imagine(states, chunks, member_seeds, steps))
            futures_by_member.append(futures)
            retries += r
        # One value call per value member, over all N x F (proposal, future) pairs, proposal-major.
        pairs = [(i, f) for i in range(n) for f in range(len(opts.future_steps))]
        values = np.zeros((n, len(opts.future_steps), len(opts.value_steps)))
        for v, steps in enumerate(opts.value_steps):
            value_seeds = [proposal_seed(proposal_seed(proposal_seed(seeds[i], _VALUE_STREAM), f), v) for i, f in pairs]
            got, r = retry_once(f"value (member {v}, {steps} steps) for {len(pairs)} futures", lambda: self._value(
                [states[i] for i, _ in pairs], [chunks[i] for i, _ in pairs],
                [futures_by_member[f][i] for i, f in pairs], value_seeds, steps))
            for (i, f), value in zip(pairs, got):
                values[i, f, v] = value
            retries += r
        scores = [aggregate(values[i], opts.aggregation, opts.success_threshold) for i in range(n)]
        extras = {
            "aggregation": opts.aggregation,
            "future_steps": list(opts.future_steps),
            "value_steps": list(opts.value_steps),
            "search_depth": self.search_depth,
            "values": values.tolist(),
            "scorer_retries": retries,
        }
        return Scored(scores, extras)

    def _imagine(self, states: list[Observation], chunks: list[np.ndarray], seeds: list[int], steps: int) -> list[Prediction]:
        futures = list(self.world_model.imagine(states, chunks, seeds, num_steps=steps))
        if len(futures) != len(states):
            raise PlanningError(f"world model returned {len(futures)} futures for {len(states)} requests")
        return futures

    def _value(self, states: list[Observation], chunks: list[np.ndarray], futures: list[Prediction], seeds: list[int],
               steps: int) -> list[float]:
        values = [float(v) for v in self.world_model.value(states, chunks, futures, seeds, num_steps=steps)]
        if len(values) != len(states):
            raise PlanningError(f"value function returned {len(values)} values for {len(states)} requests")
        if not all(np.isfinite(values)):
            raise PlanningError(f"value function returned non-finite values {values}")
        return values
