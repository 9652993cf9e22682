"""LIBERO tasks read from the installed benchmark: instructions and BDDL goal conditions.

Importing libero is slow (it loads robosuite) and needs its config and assets: only the checks that
read files (`check_files`) call these, on the driver, before Ray starts.
"""
from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Sequence

from robofleet.envs.libero_setup import prepare_libero


def load_suite(suite: str) -> Any:
    """LIBERO's benchmark object of `suite` (its tasks, BDDL files, init states), without the
    "[info] using task orders" line libero prints for every suite it builds."""
    prepare_libero()
    from libero.libero import benchmark  # noqa: PLC0415 - after prepare_libero()

    with contextlib.redirect_stdout(io.StringIO()):
        return benchmark.get_benchmark_dict()[suite]()


def instructions(suite: str, task_ids: Sequence[int]) -> list[str]:
    """The language instruction of each task, in order."""
    tasks = load_suite(suite)
    return [tasks.get_task(t).language for t in task_ids]


def goal_conditions(suite: str, task_ids: Sequence[int]) -> dict[int, tuple[str, list[str]]]:
    """task id -> (task name, its BDDL goal conditions as "Predicate arg ..." strings)."""
    tasks = load_suite(suite)
    from libero.libero import get_libero_path
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    goals = {}
    for task_id in task_ids:
        task = tasks.get_task(task_id)
        problem = robosuite_parse_problem(os.path.join(get_libero_path("bddl_files"), task.problem_folder,
                                                       task.bddl_file))
        goals[task_id] = (task.name, [" ".join(map(str, g)) for g in problem["goal_state"]])
    return goals
