"""robosuite 1.5 tasks as data: the `robosuite` family's suite, step limits, instructions, cameras.

Known without importing robosuite, so specs validate on a driver that has robosuite 1.4 (LIBERO).
Task ids are positions in the suite's tuple: append new tasks at the end, never reorder (episode
keys and seeds use the id).

Step limits follow robomimic's evaluation horizons (lift, can, square: 400; tool_hang: 700); robosuite
itself has none. Each trial's initial state is drawn by the task's own randomisation (object
placement, cube sizes, robot joint noise) from the episode seed alone (see envs/robosuite15.py).
"""
from __future__ import annotations

from dataclasses import dataclass

TABLE_CAMERAS = ("agentview", "frontview", "birdview", "sideview")  # robosuite's table/pegs arenas
BINS_CAMERAS = ("agentview", "frontview", "birdview")  # the bins arena (PickPlace*) has no sideview
ROBOT_CAMERAS = ("robot0_eye_in_hand", "robot0_robotview")  # on the Panda
DEFAULT_CAMERAS = ("agentview", "robot0_eye_in_hand")  # LIBERO's pair: primary + wrist


@dataclass(frozen=True)
class RobosuiteTask:
    """One robosuite 1.5 task: `robosuite.make(env_name, robots="Panda", ...)`."""

    name: str  # the name users write in specs (env.tasks)
    env_name: str  # robosuite's registered environment name
    max_steps: int  # policy steps after the wait steps
    instruction: str  # Observation.instruction (robosuite tasks have no language of their own)
    cameras: tuple[str, ...]  # cameras this task can render


@dataclass(frozen=True)
class RobosuiteSuite:
    name: str
    tasks: tuple[RobosuiteTask, ...]

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)


SINGLE_ARM = RobosuiteSuite(
    "single_arm",
    tuple(
        RobosuiteTask(name, env, steps, text, arena + ROBOT_CAMERAS)
        for name, env, steps, text, arena in (
            ("Lift", "Lift", 400, "lift the red cube", TABLE_CAMERAS),
            ("Stack", "Stack", 400, "stack the red cube on the green cube", TABLE_CAMERAS),
            ("PickPlaceCan", "PickPlaceCan", 400, "put the can into its bin", BINS_CAMERAS),
            ("NutAssemblySquare", "NutAssemblySquare", 400, "fit the square nut onto the square peg", TABLE_CAMERAS),
            ("Door", "Door", 400, "open the door", TABLE_CAMERAS),
            ("ToolHang", "ToolHang", 700, "hang the tool on the stand", TABLE_CAMERAS),
        )
    ),
)

ROBOSUITE_SUITES: dict[str, RobosuiteSuite] = {s.name: s for s in (SINGLE_ARM,)}
DEFAULT_SUITE = SINGLE_ARM.name
ROBOT = "Panda"
ACTION_DIM = 7  # OSC_POSE delta (3 position + 3 axis-angle rotation) + gripper, each in [-1, 1]
WAIT_STEPS = 10  # as LIBERO: objects settle under the dummy action before the policy acts
DUMMY_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # no motion, gripper open
