"""Policy names whose implementation depends on the env family: one registry name, one factory per family.

- `scripted`: the privileged expert of each family: LIBERO pick-and-place (policies/scripted.py),
  robosuite's Lift (policies/scripted_lift.py). RoboCasa has none. `validate_scripted` (the
  registry's validator for `scripted`) refuses other families and tasks on the driver.
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
from robofleet.policies.contract import PolicyContext

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
    _check_scripted_family(env_family)
    return _factory(SCRIPTED[env_family])(options, env_family)


def _check_scripted_family(family: str) -> None:
    if family not in SCRIPTED:
        raise SpecError("policy.name", f"no scripted expert for env family {family!r}; "
                                       f"'scripted' exists for {', '.join(SCRIPTED)}")


def make_cosmos(options: Mapping[str, Any], env_family: str):
    """Registry factory of "cosmos": Cosmos Policy in the layout of the env family's observations."""
    from robofleet.policies.cosmos.factory import make_cosmos as make

    return make(options, COSMOS_LAYOUT.get(env_family, env_family))


# Tasks each family's scripted expert solves, where it does not cover the whole family
# (policies/scripted_lift.py: robosuite's Lift only). LIBERO's expert is checked by goal at predict time.
SCRIPTED_TASKS: dict[str, tuple[str, ...]] = {"robosuite": ("Lift",)}


def validate_scripted(context: PolicyContext, check_files: bool) -> None:
    """`scripted`: an expert exists for the env family and for every task of the spec; options are valid."""
    from robofleet.policies.registry import validate_by_building

    family = context.family
    _check_scripted_family(family)
    if family in SCRIPTED_TASKS:
        supported = SCRIPTED_TASKS[family]
        unsupported = [n for n in context.task_names if n not in supported]
        if unsupported:
            raise SpecError("env.tasks", f"policy 'scripted' has no expert for {family} task(s) {', '.join(unsupported)}; "
                                         f"it supports {', '.join(supported)}: set env.tasks = {list(supported)} or "
                                         "choose another policy")
    validate_by_building(context, check_files)
    if check_files and family == "libero":
        _check_libero_goal_predicates(context)


def _check_libero_goal_predicates(context: PolicyContext) -> None:
    """The LIBERO expert picks and places (goal predicates On / In): a task whose goal has another
    predicate (Open, TurnOn, ...) would only give error rows. The goals come from the tasks' BDDL files,
    read on the driver (the expert's finer limits, e.g. fixture targets, still show at predict time)."""
    from robofleet.policies.scripted import SUPPORTED_PREDICATES

    goals = context.goals()
    refused = []
    for task_id, (name, conditions) in sorted(goals.items()):
        other = [g for g in conditions if g.split(" ", 1)[0].lower() not in SUPPORTED_PREDICATES]
        if other:
            refused.append(f"{task_id} ({name}: ({'), ('.join(other)}))")
    if refused:
        raise SpecError("env.tasks", f"policy 'scripted' picks and places ({' / '.join(SUPPORTED_PREDICATES)} goals); "
                                     f"{context.suite} task(s) {'; '.join(refused)} need other skills: drop them "
                                     "from env.tasks or choose another policy")
