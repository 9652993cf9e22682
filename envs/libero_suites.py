"""LIBERO suites as data: task counts and the evaluation protocol's step limits (REFERENCE.md §1).

Known without importing libero, so specs validate in milliseconds on a driver without a simulator.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LiberoSuite:
    name: str
    n_tasks: int
    max_steps: int  # policy steps after the wait steps (the reference loops while t < max_steps + 10)


LIBERO_SUITES: dict[str, LiberoSuite] = {
    s.name: s
    for s in (
        LiberoSuite("libero_spatial", 10, 220),
        LiberoSuite("libero_object", 10, 280),
        LiberoSuite("libero_goal", 10, 300),
        LiberoSuite("libero_10", 10, 520),
        LiberoSuite("libero_90", 90, 400),
    )
}

WAIT_STEPS = 10  # "objects settle" steps with the dummy action before the policy acts
DUMMY_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # no motion, gripper open
TRIALS_PER_INIT_FILE = 50  # each task ships 50 fixed init states
