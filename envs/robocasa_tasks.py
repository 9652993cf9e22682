"""RoboCasa's evaluation protocol as data and pure functions (REFERENCE.md §1), no robocasa needed.

- 24 atomic tasks, each with its step limit (RoboCasa v0.1's dataset horizons, which the Cosmos
  Policy evaluation uses as max steps: 300 .. 1000, most 500).
- Robot PandaMobile (PandaOmron) with the OSC_POSE arm, object instance split "B" (held-out objects),
  cameras robot0_agentview_left / robot0_agentview_right / robot0_eye_in_hand at 224 x 224.
- Kitchen scene (layout, style) of trial t: SCENES[(t // 10) % 5] — 10 trials per scene.
- 10 wait steps with the all-zero 12-dim action before the policy acts.
- A 7-dim policy action (arm 6 + gripper 1) is padded with [0, 0, 0, 0, -1] to the robot's 12 dims:
  RoboCasa orders PandaOmron's parts [right arm 6, right gripper 1, base 3, torso 1] plus the mode
  flag (-1: arm mode, the base holds still).
- Success: `env._check_success()` after each step.

Known without importing robocasa, so specs validate (and these facts are tested) anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robofleet.envs.contract import CAMERA_KEYS


@dataclass(frozen=True)
class RoboCasaTask:
    name: str  # RoboCasa's environment name (robosuite.make(name, ...))
    max_steps: int  # policy steps after the wait steps
    group: str  # the kitchen skill family, for tables


ATOMIC_TASKS: tuple[RoboCasaTask, ...] = tuple(
    RoboCasaTask(name, steps, group)
    for group, entries in (
        ("pick_and_place", (("PnPCounterToCab", 500), ("PnPCabToCounter", 500), ("PnPCounterToSink", 700),
                            ("PnPSinkToCounter", 500), ("PnPCounterToMicrowave", 600), ("PnPMicrowaveToCounter", 500),
                            ("PnPCounterToStove", 500), ("PnPStoveToCounter", 500))),
        ("doors", (("OpenSingleDoor", 500), ("CloseSingleDoor", 500), ("OpenDoubleDoor", 1000),
                   ("CloseDoubleDoor", 700))),
        ("drawers", (("OpenDrawer", 500), ("CloseDrawer", 500))),
        ("sink", (("TurnOnSinkFaucet", 500), ("TurnOffSinkFaucet", 500), ("TurnSinkSpout", 500))),
        ("stove", (("TurnOnStove", 500), ("TurnOffStove", 500))),
        ("coffee", (("CoffeeSetupMug", 600), ("CoffeeServeMug", 600), ("CoffeePressButton", 300))),
        ("microwave", (("TurnOnMicrowave", 500), ("TurnOffMicrowave", 500))),
    )
    for name, steps in entries
)

SUITE = "atomic"  # the robocasa family's one suite (RoboCasa also has composite tasks: not here)
ROBOCASA_SUITES: dict[str, tuple[RoboCasaTask, ...]] = {SUITE: ATOMIC_TASKS}
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in ATOMIC_TASKS)

ROBOT = "PandaMobile"  # RoboCasa's alias of robosuite's PandaOmron
OBJ_INSTANCE_SPLIT = "B"  # held-out object instances
SCENES: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (4, 4), (6, 9), (7, 10))  # (layout id, style id)
TRIALS_PER_SCENE = 10
CAMERAS = tuple(CAMERA_KEYS["robocasa"][role] for role in ("left", "right", "wrist"))  # the protocol's three
OTHER_CAMERAS = ("robot0_agentview_center", "robot0_frontview")  # RoboCasa's other robot-mounted views
IMAGE_SIZE = 224
WAIT_STEPS = 10
POLICY_ACTION_DIM = 7  # arm (OSC_POSE delta: 3 position + 3 rotation) + gripper
ROBOT_ACTION_DIM = 12
BASE_PADDING = (0.0, 0.0, 0.0, 0.0, -1.0)  # base velocity x, y, yaw; torso; mode (-1 = arm mode)
BODY_PART_ORDERING = ("right", "right_gripper", "base", "torso")  # RoboCasa's PandaOmron action layout


def scene_for_trial(trial: int) -> tuple[int, int]:
    """(layout id, style id) of trial `trial`: trials 0-9 the first scene, 10-19 the second, ..., 50 the first."""
    if trial < 0:
        raise ValueError(f"trial must be >= 0, got {trial}")
    return SCENES[(trial // TRIALS_PER_SCENE) % len(SCENES)]


def pad_action(action: np.ndarray) -> np.ndarray:
    """A policy action (7,) -> the robot's action (12,) float64: arm + gripper, then BASE_PADDING."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (POLICY_ACTION_DIM,):
        raise ValueError(f"a RoboCasa policy action has {POLICY_ACTION_DIM} values, got shape {action.shape}")
    return np.concatenate([action, BASE_PADDING])


def wait_action() -> np.ndarray:
    """The all-zero robot action (12,) of the wait steps (as the reference evaluation: zeros of the action spec)."""
    return np.zeros(ROBOT_ACTION_DIM, dtype=np.float64)
