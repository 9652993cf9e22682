"""The Policy contract: a batch of Observations and seeds in, a batch of Predictions out."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from robofleet.envs.contract import Observation


@dataclass(frozen=True)
class Prediction:
    """What a policy predicts for one observation.

    actions: float32 (K, d_act) action chunk in env units (LIBERO: d_act = 7, delta EEF pose
        + gripper in [-1, 1]). The env worker executes the first `open_loop_steps` rows.
    future_proprio: optional float32 (P,) predicted proprio after the chunk.
    future_images: optional camera name -> uint8 (H, W, 3) predicted images after the chunk.
    value: optional float in [0, 1], the predicted success-probability-like value of the future.
    stats: small JSON-able facts about how it was produced (timings, batch size, ...).
    """

    actions: np.ndarray
    future_proprio: np.ndarray | None = None
    future_images: Mapping[str, np.ndarray] | None = None
    value: float | None = None
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyContext:
    """What a policy's validator may know of the run it is asked to serve, given by the platform
    (platform/policy_context.py builds it from the spec and the env families). Policies never read a
    run spec or an env adapter: this is the seam.

    name, options: the `[policy]` table (options without `name` / `open_loop_steps`).
    family, suite: the env family and suite; task_ids: the spec's tasks, in order; task_names: their
        names where known without the simulator (robosuite, robocasa), else ().
    render_cameras: the env workers render camera images. replicas: `[serving] replicas`.
    workers_have_torch: the family's env workers run in a Python environment with torch (policies
        that need torch must otherwise be served from replicas).
    instructions: () -> the tasks' language instructions ([] where the env draws them per episode).
    goals: () -> task id -> (task name, its goal conditions as "Predicate arg ..." strings) (LIBERO's
        BDDL goal_state; {} elsewhere).
    Errors name spec keys ("policy.<option>", "env.tasks", "serving.replicas") as users write them.
    """

    name: str
    options: Mapping[str, Any]
    family: str
    suite: str
    task_ids: tuple[int, ...]
    task_names: tuple[str, ...]
    render_cameras: bool = True
    replicas: int = 0
    workers_have_torch: bool = True
    instructions: Callable[[], list[str]] = list
    goals: Callable[[], dict[int, tuple[str, list[str]]]] = dict

    def for_policy(self, name: str, options: Mapping[str, Any]) -> "PolicyContext":
        """The same run seen by another policy (a wrapper's base policy)."""
        return replace(self, name=name, options=options)


@dataclass(frozen=True)
class PreparedObservation(Observation):
    """An Observation whose per-observation CPU work a client already did (a policy's `request_preparer`).

    images: whatever the preparer produces (Cosmos: camera role -> uint8 (S, S, 3) model input).
    prepared_by: the preparer (comparable with ==); a policy refuses observations prepared differently.
    """

    prepared_by: Any = None


class Policy(Protocol):
    """A policy. `predict` is batched; each request carries its own seed so that its result never
    depends on its batch-mates (the seed is derived from the episode id, see platform/seeds.py).

    A request's result must not depend on its batch-mates. A policy whose batched kernels make it
    depend on them in floating point (a network: cuBLAS picks GEMM kernels and K-splits by shape and
    tile position) offers `batch_invariant(rows) -> Policy`, the same policy in a form whose results
    are bitwise independent of batch-mates and batch size (`rows`: the call size to pad to where only
    a fixed shape is invariant); served deterministically (`[serving] deterministic`), replicas use it.

    Optional capabilities, each looked up with getattr:
    - `request_preparer`: a picklable, torch-free callable Observation -> PreparedObservation doing
      the per-observation CPU work (image decoding, resizing). Replica clients run it in the env
      workers before sending; the policy must give identical results for raw and prepared observations.
    - `warm_up(batch_sizes=None) -> seconds`: compile / record what the given batch sizes need; the
      host of the policy (a replica, an env worker) calls it once before the first request.
    - `imagine` / `value` (world models, planners/model_scorer.py), with `per_request_steps = True`
      when they take one denoising step count per request.
    """

    chunk_size: int

    def predict(self, observations: Sequence[Observation], seeds: Sequence[int]) -> list[Prediction]:
        """observations[i] with seeds[i] -> Prediction i."""

    def reset(self) -> None:
        """Forget per-episode memory (scripted phase machines etc.). Called at every episode start."""


class StepwiseExpert:
    """Base of the scripted experts: one action per observation from `plan`, as chunks of one action.

    Subclasses implement plan(obs) -> (action float32 (d_act,), JSON-able stats). Seeds are ignored
    and no per-episode state is kept.
    """

    chunk_size = 1

    def plan(self, obs: Observation) -> tuple[np.ndarray, Mapping[str, Any]]:
        raise NotImplementedError

    def predict(self, observations: Sequence[Observation], seeds: Sequence[int]) -> list[Prediction]:
        """observations[i] -> Prediction with actions (1, d_act) float32; seeds are ignored."""
        predictions = []
        for obs in observations:
            action, stats = self.plan(obs)
            predictions.append(Prediction(actions=action[None, :], stats=stats))
        return predictions

    def reset(self) -> None:
        """Nothing to forget: the expert keeps no per-episode state."""
