"""The `model` scorer of best_of_n: a world-model ensemble x a value ensemble per proposal (REFERENCE.md §3).

For each proposal i (an action chunk for the current observation, made with seed s_i):

    futures  f = 1..F   imagine(obs, proposal_i, seed_if, num_steps=future_steps[f])      (reference: 1/3/5)
    values   v = 1..V   value(obs, chunk_i, future_if, seed_ifv, num_steps=value_steps[v])  (reference: 1..5)
    score  = aggregate(the F x V values)

With `ranking = "policy_value"` there are no further passes: a proposal's score is the value its own
policy pass predicted (the reference's best-of-N without autoregressive flags).

Conditioning (NVIDIA's get_future_state_prediction / get_value_prediction): a proposal that carries
its latent sample (Cosmos with return_latents; the planner registry turns that on through the policy's
`with_settings`, in-process and through replicas alike) is handed to the world model whole, so the
world-model pass conditions on the action pass's own sample and each value pass on its world-model
sample: nothing is re-encoded or re-injected. Under protocol "reference" that is required; under
"robofleet" proposals without latents (a policy without with_settings) fall back to injecting the
chunk into the encoded observation.

Aggregations (values are in [0, 1]; the score is clamped to [0, 1] as the reference does):
    average        the mean of the F x V values.
    lcb            mean - sample std (N - 1; 0 for a single value): prefers proposals the ensemble
                   agrees on. When every bound is below 0 all scores tie at 0 and proposal 0 is kept.
    success_vote   the fraction of values above `success_threshold` (default 0.05, the reference's).
    majority_mean  if at least half of the values exceed 0.05, the mean of those values, else 0.
Ties go to the lowest index (best_of_n.choose), as the reference's max() over proposals.

Step counts: under protocol "reference" a step count is NVIDIA's `num_steps` (2 = ONE network
evaluation, sampler.reference_evaluations); under "robofleet" it is the number of evaluations.

Seeds: under "reference" future member f of proposal i uses s_i + f and value member v uses s_i + v
(for every future: cosmos_utils.py seeds both ensembles `seed + i` from the proposal's seed). Under
"robofleet" every pass draws from a SeedSequence child of s_i (platform/seeds.py). Either way a score
never depends on which replica ran it or on its batch-mates (deterministic serving).

Batching: with a world model that takes a step count per request (`per_request_steps`: Cosmos in
process, and replica clients, whose replicas batch mixed step counts), each stage is ONE call: all
N x F world-model passes together, then all N x F x V value passes, members leaving the sampler's
batch after their last evaluation (on replicas: the stage fans out over them and batches there).
Otherwise (`stage_batching=False`) there is one call per ensemble member, as before.

Search depth d > 1: each proposal is followed, in imagination, by d - 1 more chunks. The world model
imagines the state after the chunk (one pass, with future_steps[0] steps); that predicted future
(proprio + decoded camera images, with the instruction) becomes the current observation; the acting
policy predicts the next chunk from it; after d chunks the ensembles above score the last imagined
state. So depth d looks d chunks ahead along the policy's own continuation of each proposal (N x d
world-model passes, not N^d). It needs a world model that returns future images
(cosmos: `return_future_images = true` in the planning policy's options). It is robofleet's own
look-ahead (the reference re-arranges latents instead) and derives its seeds as under "robofleet".
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.planners.best_of_n import Scored
from robofleet.planners.contract import PlanningError
from robofleet.planners.options import SUCCESS_THRESHOLD, ModelScorerOptions
from robofleet.planners.retry import retry_once
from robofleet.platform.seeds import proposal_seed, query_seed
from robofleet.policies.contract import Policy, Prediction

# Sub-streams of a proposal's seed (proposal_seed(seed, k) used as a generic SeedSequence child).
_FUTURE_STREAM, _VALUE_STREAM, _DEPTH_STREAM = 1, 2, 3
MAJORITY_FLOOR = SUCCESS_THRESHOLD  # majority_mean: a value above it counts as a "success-ish" vote


def aggregate(values: np.ndarray, how: str, success_threshold: float = SUCCESS_THRESHOLD) -> float:
    """One score in [0, 1] from an ensemble of values (any shape, each in [0, 1]); see the module docstring."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        raise ValueError("cannot aggregate an empty ensemble")
    if how == "average":
        score = flat.mean()
    elif how == "lcb":
        score = flat.mean() - (flat.std(ddof=1) if flat.size > 1 else 0.0)
    elif how == "success_vote":
        score = np.mean(flat > success_threshold)
    elif how == "majority_mean":
        above = flat[flat > MAJORITY_FLOOR]
        score = above.mean() if 2 * above.size >= flat.size else 0.0
    else:
        raise ValueError(f"unknown aggregation {how!r}")
    return float(np.clip(score, 0.0, 1.0))


def network_evaluations(steps: int, protocol: str) -> int:
    """Network evaluations of a pass with `steps` under `protocol` (reference: 2 means one)."""
    return 1 if protocol == "reference" and steps == 2 else int(steps)


def imagined_observation(current: Observation, future: Prediction) -> Observation:
    """The predicted state after a chunk as an Observation the policy can act on (search depth > 1)."""
    if future.future_images is None or future.future_proprio is None:
        raise PlanningError("search_depth > 1 needs a world model that returns future images and proprio "
                            "(cosmos: set return_future_images = true in the planning policy's options)")
    return Observation(images=dict(future.future_images), proprio=np.asarray(future.future_proprio, dtype=np.float32),
                       instruction=current.instruction)


def accepts_value_masking(world_model: Any) -> bool:
    """Whether world_model.value takes `mask_current_state_action` (Cosmos in process and replica clients do)."""
    value = getattr(world_model, "value", None)
    return callable(value) and "mask_current_state_action" in inspect.signature(value).parameters


class ModelScorer:
    """Scores proposals with `world_model.imagine` and `world_model.value` (see module docstring).

    acting: the policy that made the proposals (predicts the continuation chunks at depth > 1).
    world_model: a policy offering imagine/value (the acting policy itself, or a planning checkpoint).
    protocol: "reference" or "robofleet" (seeds, step-count meaning, conditioning requirement).
    stage_batching: run each stage as one call when the world model takes per-request step counts;
        False keeps one call per ensemble member (benchmarks compare the two).
    """

    name = "model"

    def __init__(self, acting: Policy, world_model: Any, options: ModelScorerOptions, search_depth: int = 1,
                 protocol: str = "robofleet", stage_batching: bool = True):
        if options.ranking == "ensemble":
            for method in ("imagine", "value"):
                if not callable(getattr(world_model, method, None)):
                    raise PlanningError(f"scorer 'model' needs a world model with {method}(); "
                                        f"{type(world_model).__name__} has none (set planner.planning_policy)")
        if options.mask_current_state_action and not accepts_value_masking(world_model):
            raise PlanningError(f"mask_current_state_action needs a world model whose value() takes it; "
                                f"{type(world_model).__name__}'s does not")
        self.acting = acting
        self.world_model = world_model
        self.options = options
        self.search_depth = search_depth
        self.protocol = protocol
        self.stage_batching = stage_batching and bool(getattr(world_model, "per_request_steps", False))

    def reset(self) -> None:
        if self.world_model is not self.acting:
            self.world_model.reset()

    def score(self, obs: Observation, proposals: Sequence[Prediction], seeds: Sequence[int]) -> Scored:
        """One score per proposal; extras: ranking, aggregation, step counts, values (N x F x V), depth, retries."""
        if self.options.ranking == "policy_value":
            return self._policy_values(proposals)
        n = len(proposals)
        opts = self.options
        retries = 0
        states = [obs] * n
        given: list[Any] = list(proposals)  # what conditions the world model: the proposal (its latents) or its chunk
        chunks = [np.asarray(p.actions) for p in proposals]
        for level in range(1, self.search_depth):
            level_seeds = [proposal_seed(proposal_seed(s, _DEPTH_STREAM), level) for s in seeds]
            futures, r1 = retry_once(f"imagine at depth {level} for {n} proposals", lambda: self._imagine(
                states, self._conditioning(given, chunks), level_seeds, [opts.future_steps[0]] * n))
            states = [imagined_observation(state, future) for state, future in zip(states, futures)]
            next_seeds = [query_seed(s, level) for s in level_seeds]
            continued, r2 = retry_once(f"policy continuation at depth {level + 1}", lambda: self.acting.predict(
                states, next_seeds))
            given = list(continued)
            chunks = [np.asarray(p.actions) for p in continued]
            retries += r1 + r2
        conditioning = self._conditioning(given, chunks)

        num_f, num_v = len(opts.future_steps), len(opts.value_steps)
        pairs = [(i, f) for i in range(n) for f in range(num_f)]  # proposal-major
        future_seeds = {(i, f): self._member_seed(seeds[i], _FUTURE_STREAM, f) for i, f in pairs}
        futures: dict[tuple[int, int], Prediction] = {}
        if self.stage_batching:
            got, r = retry_once(f"imagine ({num_f} future members) for {n} proposals", lambda: self._imagine(
                [states[i] for i, _ in pairs], [conditioning[i] for i, _ in pairs],
                [future_seeds[p] for p in pairs], [opts.future_steps[f] for _, f in pairs]))
            futures.update(zip(pairs, got))
            retries += r
        else:
            for f, steps in enumerate(opts.future_steps):
                got, r = retry_once(f"imagine (future member {f}, {steps} steps) for {n} proposals",
                                    lambda: self._imagine(states, conditioning, [future_seeds[i, f] for i in range(n)],
                                                          [steps] * n))
                futures.update(((i, f), future) for i, future in enumerate(got))
                retries += r

        triples = [(i, f, v) for i, f in pairs for v in range(num_v)]
        value_seeds = {(i, f, v): self._value_seed(seeds[i], f, v) for i, f, v in triples}
        values = np.zeros((n, num_f, num_v))
        members = [triples] if self.stage_batching else [[t for t in triples if t[2] == v] for v in range(num_v)]
        for group in members:
            label = (f"value ({num_v} members)" if self.stage_batching
                     else f"value (member {group[0][2]}, {opts.value_steps[group[0][2]]} steps)")
            got, r = retry_once(f"{label} for {len(pairs)} futures", lambda group=group: self._value(
                [states[i] for i, _, _ in group], [chunks[i] for i, _, _ in group],
                [futures[i, f] for i, f, _ in group], [value_seeds[t] for t in group],
                [opts.value_steps[v] for _, _, v in group]))
            for (i, f, v), value in zip(group, got):
                values[i, f, v] = value
            retries += r
        scores = [aggregate(values[i], opts.aggregation, opts.success_threshold) for i in range(n)]
        extras = {
            "ranking": opts.ranking,
            "aggregation": opts.aggregation,
            "future_steps": list(opts.future_steps),
            "value_steps": list(opts.value_steps),
            "network_evaluations": self._evaluations_per_proposal(),
            "conditioned_on": "generated_latent" if conditioning is given else "encoded_observation",
            "search_depth": self.search_depth,
            "values": values.tolist(),
            "scorer_retries": retries,
        }
        return Scored(scores, extras)

    # -- pieces ----------------------------------------------------------------------------------
    def _policy_values(self, proposals: Sequence[Prediction]) -> Scored:
        values = [p.value for p in proposals]
        if any(v is None for v in values) or not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
            raise PlanningError(f"ranking 'policy_value' needs a finite value with every proposal; got {values} "
                                "(a policy that predicts V with its action, such as cosmos)")
        scores = [float(np.clip(v, 0.0, 1.0)) for v in values]
        return Scored(scores, {"ranking": "policy_value", "values": scores, "scorer_retries": 0})

    def _conditioning(self, given: list[Any], chunks: list[np.ndarray]) -> list[Any]:
        """The proposals themselves when all carry their latent sample, else their chunks (robofleet only)."""
        if given and all(getattr(p, "latents", None) is not None for p in given):
            return given
        if self.protocol == "reference":
            raise PlanningError("protocol 'reference' conditions the world model on the action pass's latent "
                                "sample, but the proposals carry none: the acting policy must attach it (Cosmos: "
                                "return_latents = true in [policy], which the planner sets itself through "
                                "with_settings), or use protocol = \"robofleet\"")
        return chunks

    def _member_seed(self, seed: int, stream: int, member: int) -> int:
        if self.protocol == "reference":
            return int(seed) + member
        return proposal_seed(proposal_seed(seed, stream), member)

    def _value_seed(self, seed: int, future: int, member: int) -> int:
        if self.protocol == "reference":
            return int(seed) + member  # the same value seeds for every future sample
        return proposal_seed(proposal_seed(proposal_seed(seed, _VALUE_STREAM), future), member)

    def _evaluations_per_proposal(self) -> int:
        opts = self.options
        futures = sum(network_evaluations(s, self.protocol) for s in opts.future_steps)
        values = sum(network_evaluations(s, self.protocol) for s in opts.value_steps)
        return futures + len(opts.future_steps) * values

    def _steps_argument(self, steps: list[int]) -> int | list[int]:
        """Network evaluations per request: a list when the world model batches mixed counts, else one int."""
        evaluations = [network_evaluations(s, self.protocol) for s in steps]
        if self.stage_batching:
            return evaluations
        if len(set(evaluations)) != 1:
            raise PlanningError(f"one call needs one step count, got {sorted(set(evaluations))}")
        return evaluations[0]

    def _imagine(self, states: list[Observation], conditioning: list[Any], seeds: list[int],
                 steps: list[int]) -> list[Prediction]:
        futures = list(self.world_model.imagine(states, conditioning, seeds, num_steps=self._steps_argument(steps)))
        if len(futures) != len(states):
            raise PlanningError(f"world model returned {len(futures)} futures for {len(states)} requests")
        return futures

    def _value(self, states: list[Observation], chunks: list[np.ndarray], futures: list[Prediction], seeds: list[int],
               steps: list[int]) -> list[float]:
        kwargs: dict[str, Any] = {"num_steps": self._steps_argument(steps)}
        if self.options.mask_current_state_action:
            kwargs["mask_current_state_action"] = True
        values = [float(v) for v in self.world_model.value(states, chunks, futures, seeds, **kwargs)]
        if len(values) != len(states):
            raise PlanningError(f"value function returned {len(values)} values for {len(states)} requests")
        if not all(np.isfinite(values)):
            raise PlanningError(f"value function returned non-finite values {values}")
        return values
