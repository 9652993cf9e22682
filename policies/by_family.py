"""Policy names whose implementation depends on the env family: one registry name, one factory per family.

- `scripted`: the privileged expert of each family: LIBERO pick-and-place (policies/scripted.py),
  robosuite's Lift (policies/scripted_lift.py). RoboCasa has none.
- `cosmos`: Cosmos Policy with the latent layout the family's observations fit. robosuite-1.5 tasks
  use RoboCasa's (11 latent frames: proprio 9, wrist + two third-person cameras, 7-dim actions):
  same simulator generation, proprio and arm action; map their cameras to the layout's roles with
  the `cameras` option, e.g. `cameras = { wrist = "robot0_eye_in_hand", left = "agentview",
  right = "frontview" }` (and render those three: env.cameras).

  The env workers of those families run in the robosuite-1.5 environment, which has no torch, so
  Cosmos runs in PolicyReplicas ([serving] replicas >= 1) and its answers travel to the workers.
  A CosmosPrediction unpickles by importing policies/cosmos/policy.py, which imports torch; for
  these families the policy is wrapped (TorchFreePredictions) so that its predictions travel as
  PortablePrediction, defined here, and come back as CosmosPredictions for `value()`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from importlib import import_module
from typing import Any, Mapping, Sequence

import numpy as np

from robofleet.platform.errors import SpecError
from robofleet.policies.contract import Prediction

SCRIPTED: dict[str, str] = {
    "libero": "robofleet.policies.scripted:make_scripted",
    "robosuite": "robofleet.policies.scripted_lift:make_scripted_lift",
}
COSMOS_LAYOUT: dict[str, str] = {"robosuite": "robocasa"}  # env family -> cosmos layout family (default: itself)


def _factory(target: str):
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


def make_scripted(options: Mapping[str, Any], env_family: str):
    """Registry factory of "scripted": the env family's privileged expert."""
    if env_family not in SCRIPTED:
        raise SpecError("policy.name", f"no scripted expert for env family {env_family!r}; "
                                       f"'scripted' exists for {', '.join(SCRIPTED)}")
    return _factory(SCRIPTED[env_family])(options, env_family)


def make_cosmos(options: Mapping[str, Any], env_family: str):
    """Registry factory of "cosmos": Cosmos Policy in the layout of the env family's observations."""
    from robofleet.envs.families import DRIVER, FAMILY_PYTHON
    from robofleet.policies.cosmos.factory import make_cosmos as make

    policy = make(options, COSMOS_LAYOUT.get(env_family, env_family))
    workers_have_torch = FAMILY_PYTHON.get(env_family, DRIVER).default_venv is None
    return policy if workers_have_torch else TorchFreePredictions(policy)


@dataclass(frozen=True)
class PortablePrediction(Prediction):
    """A CosmosPrediction (a Prediction + its latent sample) as a class that loads without torch.

    latents: float32 (16, T, h, w) or None, as CosmosPrediction.latents.
    """

    latents: np.ndarray | None = None


class TorchFreePredictions:
    """A Cosmos policy whose predictions unpickle without torch; everything else is the policy's own."""

    def __init__(self, policy: Any):
        self.policy = policy

    def __getattr__(self, name: str) -> Any:  # layout, chunk_size, ...: the policy's
        if name == "policy":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.policy, name)

    def predict(self, observations: Sequence[Any], seeds: Sequence[int]) -> list[Prediction]:
        return [_portable(p) for p in self.policy.predict(observations, seeds)]

    def imagine(self, observations: Sequence[Any], actions: Sequence[np.ndarray], seeds: Sequence[int],
                num_steps: int | None = None) -> list[Prediction]:
        return [_portable(p) for p in self.policy.imagine(observations, actions, seeds, num_steps=num_steps)]

    def value(self, observations: Sequence[Any], actions: Sequence[np.ndarray], future: Sequence[Prediction],
              seeds: Sequence[int], num_steps: int | None = None) -> Any:
        from robofleet.policies.cosmos.policy import CosmosPrediction

        future = [CosmosPrediction(**_fields(f)) if isinstance(f, PortablePrediction) else f for f in future]
        return self.policy.value(observations, actions, future, seeds, num_steps=num_steps)

    def reset(self) -> None:
        self.policy.reset()


def _fields(prediction: Prediction) -> dict[str, Any]:
    return {f.name: getattr(prediction, f.name) for f in fields(prediction)}


def _portable(prediction: Prediction) -> Prediction:
    """The same prediction as a plain Prediction or a PortablePrediction (when it carries latents)."""
    if type(prediction) in (Prediction, PortablePrediction):
        return prediction
    base = {f.name: getattr(prediction, f.name) for f in fields(Prediction)}
    return PortablePrediction(**base, latents=getattr(prediction, "latents", None))
