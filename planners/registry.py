"""Planners by name."""
from __future__ import annotations

from typing import Any, Mapping

from robofleet.planners.contract import Planner
from robofleet.planners.direct import Direct
from robofleet.policies.contract import Policy


def make_planner(name: str, options: Mapping[str, Any], policy: Policy) -> Planner:
    """Wrap `policy` in the named planner (names are validated by the spec first)."""
    if name == "direct":
        return Direct(policy)
    raise KeyError(name)
