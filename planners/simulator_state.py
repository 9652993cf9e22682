"""Exact save/restore of a simulator for the oracle scorer: the env adapter's own snapshot.

`Env.get_state()` is the flat simulator state; an adapter that can restore more than that (what later
steps read: robosuite's gripper commands, observable clocks, solver warm start; envs/robosuite_snapshot.py)
offers `snapshot()` / `restore(snapshot)`. Every restore is checked: `get_state()` must then equal the
saved state bit for bit. An env without `snapshot` gets get_state/set_state only (`exact_restores`
says which; the oracle scorer warns once when it is built).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from robofleet.envs.contract import Env
from robofleet.planners.contract import PlanningError


@dataclass(frozen=True)
class SimulatorSnapshot:
    """state: env.get_state() (flat float64); extra: the adapter's own snapshot, or None (opaque)."""

    state: np.ndarray
    extra: Any


def exact_restores(env: Env) -> bool:
    """Whether the adapter offers its own snapshot/restore (else only get_state/set_state)."""
    return callable(getattr(env, "snapshot", None))


def capture(env: Env) -> SimulatorSnapshot:
    """Everything needed to continue from here exactly as if nothing had happened in between."""
    state = np.array(env.get_state(), dtype=np.float64, copy=True)
    return SimulatorSnapshot(state, env.snapshot() if exact_restores(env) else None)


def restore(env: Env, snapshot: SimulatorSnapshot) -> None:
    """Put the simulator back to `snapshot`; PlanningError unless get_state() then equals it bit for bit."""
    env.set_state(snapshot.state)
    if snapshot.extra is not None:
        env.restore(snapshot.extra)
    after = env.get_state()
    if not np.array_equal(after, snapshot.state):
        changed = int(np.sum(after != snapshot.state)) if after.shape == snapshot.state.shape else -1
        raise PlanningError(f"simulator restore is not exact: {changed} of {snapshot.state.size} state values differ")
