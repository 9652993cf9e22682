"""Policies by name: built-ins here, third-party ones through the `robofleet.policies` entry point group.

A factory takes the spec's `[policy]` options (a dict, already TOML-parsed) and the env family
name, validates the options (raising `SpecError` that names the key) and returns a Policy.
Factories import their heavy dependencies lazily so that `robofleet --help` stays fast.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping

from robofleet.policies.contract import Policy

PolicyFactory = Callable[[Mapping[str, Any], str], Policy]

# name -> "module:function"; resolved on first use.
BUILTIN_POLICIES: dict[str, str] = {
    "zero": "robofleet.policies.simple:make_zero",
    "random": "robofleet.policies.simple:make_random",
    "scripted": "robofleet.policies.by_family:make_scripted",  # LIBERO expert / robosuite Lift expert
    "cosmos": "robofleet.policies.by_family:make_cosmos",  # robosuite family -> RoboCasa's layout
    "noisy": "robofleet.policies.noisy:make_noisy",
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
