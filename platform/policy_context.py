"""What a policy's validator is told about a run (policies/contract.PolicyContext), built from the spec
and the env families: the one place where a policy's checks meet env knowledge."""
from __future__ import annotations

from functools import partial

from robofleet.platform.spec import RunSpec
from robofleet.policies.contract import PolicyContext


def _task_names(spec: RunSpec) -> tuple[str, ...]:
    if spec.env.family == "robosuite":
        from robofleet.envs.robosuite_tasks import ROBOSUITE_SUITES

        return tuple(ROBOSUITE_SUITES[spec.env.suite].tasks[t].name for t in spec.env.tasks)
    if spec.env.family == "robocasa":
        from robofleet.envs.robocasa_tasks import ROBOCASA_SUITES

        return tuple(ROBOCASA_SUITES[spec.env.suite][t].name for t in spec.env.tasks)
    return ()  # LIBERO's names live in its benchmark (a slow import): see `goals`


def _instructions(spec: RunSpec) -> list[str]:
    if spec.env.family == "libero":
        from robofleet.envs.libero_tasks import instructions

        return instructions(spec.env.suite, spec.env.tasks)
    if spec.env.family == "robosuite":
        from robofleet.envs.robosuite_tasks import ROBOSUITE_SUITES

        return [ROBOSUITE_SUITES[spec.env.suite].tasks[t].instruction for t in spec.env.tasks]
    return []  # robocasa: instructions are drawn per episode by the environment


def _goals(spec: RunSpec) -> dict[int, tuple[str, list[str]]]:
    if spec.env.family != "libero":
        return {}
    from robofleet.envs.libero_tasks import goal_conditions

    return goal_conditions(spec.env.suite, spec.env.tasks)


def _workers_have_torch(family: str) -> bool:
    from robofleet.envs.families import python_env

    return python_env(family).default_venv is None  # the driver's own Python has torch


def policy_context(spec: RunSpec) -> PolicyContext:
    """The PolicyContext of a spec's `[policy]`."""
    return PolicyContext(
        name=spec.policy.name, options=spec.policy.options, family=spec.env.family, suite=spec.env.suite,
        task_ids=tuple(spec.env.tasks), task_names=_task_names(spec), render_cameras=spec.env.render_cameras,
        replicas=spec.serving.replicas, workers_have_torch=_workers_have_torch(spec.env.family),
        instructions=partial(_instructions, spec), goals=partial(_goals, spec),
    )


def validate_spec_policy(spec: RunSpec, check_files: bool = False) -> None:
    """Run the spec's policy validator (policies/registry.py) with the spec's context."""
    from robofleet.policies.registry import validate_policy

    validate_policy(policy_context(spec), check_files)
