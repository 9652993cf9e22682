"""Policy names whose implementation depends on the env family: one registry name, one factory per family.

- `scripted`: the privileged expert of each family: LIBERO pick-and-place (policies/scripted.py),
  robosuite's Lift (policies/scripted_lift.py). RoboCasa has none.
- `cosmos`: Cosmos Policy with the latent layout the family's observations fit. robosuite-1.5 tasks
  use RoboCasa's (11 latent frames: proprio 9, wrist + two third-person cameras, 7-dim actions):
  same simulator generation, proprio and arm action; map their cameras to the layout's roles with
  the `cameras` option, e.g. `cameras = { wrist = "robot0_eye_in_hand", left = "agentview",
  right = "frontview" }` (and render those three: env.cameras).

  The env workers of those families run in the robosuite-1.5 environment, which has no torch, so
  Cosmos runs in PolicyReplicas ([serving] replicas >= 1) and its answers travel to the workers:
  CosmosPrediction is defined in policies/prediction.py, which loads without torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any, Mapping

from robofleet.platform.errors import SpecError

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
    from robofleet.policies.cosmos.factory import make_cosmos as make

    return make(options, COSMOS_LAYOUT.get(env_family, env_family))
