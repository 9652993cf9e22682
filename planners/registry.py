"""Planners by name: options validated on the driver, planners built inside each EnvWorker."""
from __future__ import annotations

from typing import Any, Mapping

from robofleet.envs.contract import Env
from robofleet.planners.contract import Planner
from robofleet.planners.direct import Direct
from robofleet.platform.errors import SpecError
from robofleet.policies.contract import Policy

PLANNERS = ("direct",)


def validate_planner_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check a planner's options (the `[planner]` table minus `name`); SpecError names the bad key."""
    if name == "direct":
        for key in options:
            raise SpecError(f"planner.{key}", "unknown key; planner 'direct' takes no options")
        return {}
    raise SpecError("planner.name", f"unknown value {name!r}; allowed: {', '.join(PLANNERS)}")


def make_planner(name: str, options: Mapping[str, Any], policy: Policy, env: Env) -> Planner:
    """Wrap `policy` in the named planner. `env` is the worker's simulator (for simulator-oracle scoring)."""
    if name == "direct":
        return Direct(policy)
    raise KeyError(name)
