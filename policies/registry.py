"""Policies by name: built-ins here, third-party ones through the `robofleet.policies` entry point group.

A factory takes the spec's `[policy]` options (a dict, already TOML-parsed) and the env family
name, validates the options (raising `SpecError` that names the key) and returns a Policy.
Factories import their heavy dependencies lazily so that `robofleet --help` stays fast.

A policy may also declare a validator, `validate(spec: RunSpec, check_files: bool) -> None`, run on
the driver before Ray starts: with `check_files=False` whenever a spec is validated (options, the
tasks the policy supports: no file system, no heavy imports), with `check_files=True` by the runner
just before it starts Ray (checkpoints and other files exist and are readable; no weights loaded).
Built-ins are listed in BUILTIN_VALIDATORS; a third-party factory declares one as its `validate`
attribute.
"""
from __future__ import annotations

from dataclasses import replace
from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, Mapping

from robofleet.platform.errors import SpecError
from robofleet.policies.contract import Policy

if TYPE_CHECKING:
    from robofleet.platform.spec import RunSpec

PolicyFactory = Callable[[Mapping[str, Any], str], Policy]
PolicyValidator = Callable[["RunSpec", bool], None]

# name -> "module:function"; resolved on first use.
BUILTIN_POLICIES: dict[str, str] = {
    "zero": "robofleet.policies.simple:make_zero",
    "random": "robofleet.policies.simple:make_random",
    "scripted": "robofleet.policies.by_family:make_scripted",  # LIBERO expert / robosuite Lift expert
    "cosmos": "robofleet.policies.by_family:make_cosmos",  # robosuite family -> RoboCasa's layout
    "noisy": "robofleet.policies.noisy:make_noisy",
}


# name -> "module:function" of the policy's validator (see the module docstring).
BUILTIN_VALIDATORS: dict[str, str] = {
    "zero": f"{__name__}:validate_by_building",
    "random": f"{__name__}:validate_by_building",
    "scripted": f"{__name__}:validate_scripted",
    "noisy": f"{__name__}:validate_noisy",
    "cosmos": "robofleet.policies.cosmos.validate:validate_cosmos",
}
# Tasks each family's scripted expert solves, where it does not cover the whole family
# (policies/scripted_lift.py: robosuite's Lift only). LIBERO's expert is checked by goal at predict time.
SCRIPTED_TASKS: dict[str, tuple[str, ...]] = {"robosuite": ("Lift",)}


def available_policies() -> list[str]:
    """All policy names: built-ins plus installed entry points."""
    names = set(BUILTIN_POLICIES)
    names.update(ep.name for ep in entry_points(group="robofleet.policies"))
    return sorted(names)


def _resolve(target: str) -> PolicyFactory:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def policy_factory(name: str) -> PolicyFactory:
    """The factory registered under `name`; KeyError if none (the spec validator checks names first)."""
    if name in BUILTIN_POLICIES:
        return _resolve(BUILTIN_POLICIES[name])
    for ep in entry_points(group="robofleet.policies"):
        if ep.name == name:
            return ep.load()
    raise KeyError(name)


def make_policy(name: str, options: Mapping[str, Any], env_family: str) -> Policy:
    """Build the named policy from its options."""
    return policy_factory(name)(options, env_family)


def policy_validator(name: str) -> PolicyValidator | None:
    """The validator of policy `name`, or None when it declares none."""
    if name in BUILTIN_VALIDATORS:
        return _resolve(BUILTIN_VALIDATORS[name])
    try:
        return getattr(policy_factory(name), "validate", None)
    except KeyError:
        return None


def validate_policy(spec: RunSpec, check_files: bool = False) -> None:
    """Run the spec's policy validator; SpecError (or CheckpointError for files) names the problem and the fix."""
    validator = policy_validator(spec.policy.name)
    if validator is not None:
        validator(spec, check_files)


def validate_by_building(spec: RunSpec, check_files: bool) -> None:
    """For policies that are cheap to build (no model, no files): building them validates their options."""
    make_policy(spec.policy.name, spec.policy.options, spec.env.family)


def validate_scripted(spec: RunSpec, check_files: bool) -> None:
    """`scripted`: an expert exists for the env family and for every task of the spec; options are valid."""
    from robofleet.policies.by_family import SCRIPTED

    family = spec.env.family
    if family not in SCRIPTED:
        raise SpecError("policy.name", f"no scripted expert for env family {family!r}; 'scripted' exists for "
                                       f"{', '.join(SCRIPTED)}")
    if family in SCRIPTED_TASKS:
        from robofleet.envs.robosuite_tasks import ROBOSUITE_SUITES

        names = [ROBOSUITE_SUITES[spec.env.suite].tasks[t].name for t in spec.env.tasks]
        supported = SCRIPTED_TASKS[family]
        unsupported = [n for n in names if n not in supported]
        if unsupported:
            raise SpecError("env.tasks", f"policy 'scripted' has no expert for {family} task(s) {', '.join(unsupported)}; "
                                         f"it supports {', '.join(supported)}: set env.tasks = {list(supported)} or "
                                         "choose another policy")
    validate_by_building(spec, check_files)
    if check_files and family == "libero":
        _check_libero_goal_predicates(spec)


def _check_libero_goal_predicates(spec: RunSpec) -> None:
    """The LIBERO expert picks and places (goal predicates On / In): a task whose goal has another
    predicate (Open, TurnOn, ...) would only give error rows. Read from the tasks' BDDL files on the
    driver (the expert's finer limits, e.g. fixture targets, still show at predict time)."""
    import os

    from robofleet.envs.libero_setup import prepare_libero
    from robofleet.policies.scripted import SUPPORTED_PREDICATES

    prepare_libero()
    from libero.libero import benchmark, get_libero_path  # noqa: PLC0415 - after prepare_libero()
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    suite = benchmark.get_benchmark_dict()[spec.env.suite]()
    refused = []
    for task_id in spec.env.tasks:
        task = suite.get_task(task_id)
        problem = robosuite_parse_problem(os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file))
        other = [" ".join(map(str, g)) for g in problem["goal_state"] if str(g[0]).lower() not in SUPPORTED_PREDICATES]
        if other:
            refused.append(f"{task_id} ({task.name}: ({'), ('.join(other)}))")
    if refused:
        raise SpecError("env.tasks", f"policy 'scripted' picks and places ({' / '.join(SUPPORTED_PREDICATES)} goals); "
                                     f"{spec.env.suite} task(s) {'; '.join(refused)} need other skills: drop them "
                                     "from env.tasks or choose another policy")


def validate_noisy(spec: RunSpec, check_files: bool) -> None:
    """`noisy`: its own options, then the wrapped policy's validator on `base_options`."""
    from robofleet.policies.noisy import NoisyConfig
    from robofleet.platform.spec import PolicySpec

    config = NoisyConfig.from_options(spec.policy.options)
    if config.base not in available_policies():
        raise SpecError("policy.base", f"unknown policy {config.base!r}; allowed: "
                                       f"{', '.join(n for n in available_policies() if n != 'noisy')}")
    base = replace(spec, policy=PolicySpec(name=config.base, options=config.base_options))
    try:
        validate_policy(base, check_files)
    except SpecError as exc:  # name the key where the user wrote it
        key = exc.key if not exc.key.startswith("policy.") else f"policy.base_options.{exc.key[len('policy.'):]}"
        raise SpecError(key, str(exc).split(": ", 1)[-1]) from exc
