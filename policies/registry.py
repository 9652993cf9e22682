"""Policies by name: built-ins here, third-party ones through the `robofleet.policies` entry point group.

A factory takes the spec's `[policy]` options (a dict, already TOML-parsed) and the env family
name, validates the options (raising `SpecError` that names the key) and returns a Policy.
Factories import their heavy dependencies lazily so that `robofleet --help` stays fast.

A policy may also declare a validator, `validate(context: PolicyContext, check_files: bool) -> None`
(policies/contract.py: what the policy may know of the run), run on
the driver before Ray starts: with `check_files=False` whenever a spec is validated (options, the
tasks the policy supports: no file system, no heavy imports), with `check_files=True` by the runner
just before it starts Ray (checkpoints and other files exist and are readable; no weights loaded).
Built-ins are listed in BUILTIN_VALIDATORS; a third-party factory declares one as its `validate`
attribute.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping

from robofleet.policies.contract import Policy, PolicyContext

PolicyFactory = Callable[[Mapping[str, Any], str], Policy]
PolicyValidator = Callable[[PolicyContext, bool], None]

# name -> "module:function"; resolved on first use.
BUILTIN_POLICIES: dict[str, str] = {
    "zero": "robofleet.policies.simple:make_zero",
    "random": "robofleet.policies.simple:make_random",
    "scripted": "robofleet.policies.by_family:make_scripted",  # LIBERO expert / robosuite Lift expert
    "cosmos": "robofleet.policies.by_family:make_cosmos",  # robosuite family -> RoboCasa's layout
    "noisy": "robofleet.policies.noisy:make_noisy",
    "remote": "robofleet.policies.remote.policy:make_remote",  # a served policy: openpi WebSocket or POST /act
}


# name -> "module:function" of the policy's validator (see the module docstring).
BUILTIN_VALIDATORS: dict[str, str] = {
    "zero": f"{__name__}:validate_by_building",
    "random": f"{__name__}:validate_by_building",
    "scripted": "robofleet.policies.by_family:validate_scripted",
    "noisy": "robofleet.policies.noisy:validate_noisy",
    "cosmos": "robofleet.policies.cosmos.validate:validate_cosmos",
    "remote": "robofleet.policies.remote.policy:validate_remote",
}


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


def validate_policy(context: PolicyContext, check_files: bool = False) -> None:
    """Run the policy's validator; SpecError (or CheckpointError for files) names the problem and the fix."""
    validator = policy_validator(context.name)
    if validator is not None:
        validator(context, check_files)


def validate_by_building(context: PolicyContext, check_files: bool) -> None:
    """For policies that are cheap to build (no model, no files): building them validates their options."""
    make_policy(context.name, context.options, context.family)
