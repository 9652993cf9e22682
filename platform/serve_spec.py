"""Specs `robofleet serve` accepts: any run spec, or one for an env family that is only served (ALOHA).

A served-only family has no simulator in robofleet (its robots are real), so its `[env]` table holds
the family alone; the other tables are a run spec's, validated by the same code (platform/spec.py):

    seed = 195                      # the seed of requests that carry none ("seed" key)
    protocol = "reference"          # default: a served best-of-N seeds proposal i with seed + i (aloha/deploy.py)
    [env]
    family = "aloha"
    [policy]
    name = "cosmos"                 # the ALOHA layout: 11 latent frames, chunk 50, cameras cam_high +
    checkpoint = "nvidia/Cosmos-Policy-ALOHA-Predict2-2B"   # cam_left_wrist + cam_right_wrist
    [planner]
    name = "best_of_n"
    n = 8
    [serving]
    replicas = 0                    # 0: the policy in the server's process; N: N PolicyReplica actors

    load_serve_spec("aloha.toml") -> RunSpec      # env.family "aloha", suite "", no tasks
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from robofleet.platform.config_fields import check_keys
from robofleet.platform.errors import SpecError
from robofleet.platform.spec import RUN_SPEC_KEYS, EnvSpec, RunSpec, assemble_run_spec, read_spec_toml, spec_from_dict
from robofleet.policies.contract import PolicyContext
from robofleet.policies.remote.adapters import SERVED_ONLY_FAMILIES

SERVE_KEYS = tuple(key for key in RUN_SPEC_KEYS if key != "run")  # a served-only family has no env workers


def serve_spec_from_dict(data: Mapping[str, Any]) -> RunSpec:
    """A run spec (platform/spec.py), or for a served-only family the same tables with `[env] family` only.
    SpecError names the first bad key."""
    env = data.get("env")
    family = env.get("family") if isinstance(env, Mapping) else None
    if family not in SERVED_ONLY_FAMILIES:
        return spec_from_dict(data)
    check_keys(data, SERVE_KEYS, "")
    for key in env:
        if key != "family":
            raise SpecError(f"env.{key}", f"env family {family!r} is only served (robofleet has no simulator of it): "
                                          "its [env] table holds `family` alone")
    # no [run] (SERVE_KEYS refused it): its defaults, as a run spec without one has
    spec = assemble_run_spec(data, EnvSpec(family=family, suite="", tasks=(), trials=0))
    validate_served_policy(spec, check_files=False)
    return spec


def load_serve_spec(path: str | Path) -> RunSpec:
    """Read and validate a TOML spec file for `robofleet serve`."""
    return serve_spec_from_dict(read_spec_toml(path))


def served_policy_context(spec: RunSpec) -> PolicyContext:
    """What the policy's validator is told about a served-only family: the family, no tasks; the policy runs in
    the server's Python (or its replicas), which has torch."""
    return PolicyContext(name=spec.policy.name, options=spec.policy.options, family=spec.env.family, suite="",
                         task_ids=(), task_names=(), render_cameras=True, replicas=spec.serving.replicas,
                         workers_have_torch=True)


def validate_served_policy(spec: RunSpec, check_files: bool) -> None:
    """The policy's validator (policies/registry.py) for a served spec; with check_files the driver-side file
    checks too (as `robofleet run` does before Ray starts)."""
    from robofleet.platform.policy_context import validate_spec_policy
    from robofleet.policies.registry import validate_policy

    if spec.env.family in SERVED_ONLY_FAMILIES:
        validate_policy(served_policy_context(spec), check_files)
    else:
        validate_spec_policy(spec, check_files)
