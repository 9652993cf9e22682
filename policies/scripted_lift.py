"""Privileged scripted expert for robosuite's Lift: reads the cube's position, emits delta-EEF actions.

Task Description:
    Lift the red cube off the table. The expert moves the open gripper above the cube, descends
    until the cube sits between the fingertips, closes the gripper and lifts. It never rotates the
    hand (rotation actions are 0): the cube is 4-4.4 cm wide and the open Panda gripper 8 cm, so a
    grasp across the cube works at any of its yaws.

    `predict` is a pure function of the observation, as the LIBERO expert's: the phase is re-derived
    every step from the eef position, the finger gap and the cube's position, so a slipped grasp is
    simply retried. Seeds are ignored (deterministic expert).

    phases: approach (to `approach_height` above the cube, gripper opening) -> open (wait above the
    cube until the fingers are open) -> descend -> grasp (close, holding still) -> lift (up, closed).

Randomizations:
    None of its own; the cube's placement, size and yaw come from the episode seed (envs/robosuite15.py).

Success Conditions:
    robosuite's: the cube's bottom more than 4 cm above the table (`Lift._check_success()`).

Supported:
    env family "robosuite", task Lift (observations with `cube_pos`); anything else raises
    UnsupportedTaskError at predict time, naming the task.

Example:
    policy = make_scripted_lift({"speed": 1.0}, "robosuite")
    prediction = policy.predict([obs], [0])[0]   # prediction.actions: (1, 7) float32
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.platform.config_fields import from_table, number, setting
from robofleet.platform.errors import RobofleetError, SpecError
from robofleet.policies.contract import StepwiseExpert

ACTION_DIM = 7
OPEN, CLOSE = -1.0, 1.0
FULL_OPEN = 0.078  # m: finger gap of the open Panda gripper (robot0_gripper_qpos[0] - [1])
GRIPPED_GAP = 0.07  # m: fingers closed at least this far ...
STILL = 0.01  # m/s: ... and no longer moving (stopped on the cube: 4-4.4 cm, up to 6.2 cm across its diagonal)
EMPTY_GAP = 0.01  # m: fingers closed on nothing
ALIGNED_XY = 0.008  # m: horizontal distance eef-cube within which the hand is "above the cube"
AT_GRASP_Z = 0.012  # m: vertical distance eef-cube within which the cube is between the fingertips


class UnsupportedTaskError(RobofleetError):
    """The scripted Lift expert got an observation of another task."""


def _float_within(value: Any, key: str, **bounds: Any) -> float:
    """A number ("must be a number, got ..."), then its bounds checked on the float (the text shows 2 as 2.0)."""
    return number(number(value, key), key, **bounds)


@dataclass(frozen=True)
class LiftConfig:
    """Tunables of the scripted Lift expert (the `[policy]` table's options)."""

    # cap on |position action| in (0, 1]; 1.0 = up to 5 cm of OSC goal offset per step
    speed: float = setting(1.0, _float_within, above=0, maximum=1, message="must be in (0, 1], got {value}")
    # position action per metre of error (before the cap)
    gain: float = setting(10.0, _float_within, above=0, message="must be > 0, got {value}")
    # m above the cube's centre where the descent starts
    approach_height: float = setting(0.06, _float_within, minimum=0.02, maximum=0.3,
                                     message="must be in [0.02, 0.3] m, got {value}")
    # m below the cube's centre the fingertips' centre aims at
    grasp_depth: float = setting(0.0, _float_within, minimum=-0.02, maximum=0.02,
                                 message="must be in [-0.02, 0.02] m, got {value}")

    @staticmethod
    def from_options(options: Mapping[str, Any]) -> "LiftConfig":
        """Validate `[policy]` options; SpecError names the key, the value and what is allowed."""
        return from_table(LiftConfig, options, "policy.",
                          unknown="unknown option for the scripted Lift expert; allowed: {allowed}")


def plan_step(obs: Observation, config: LiftConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """One action (7,) float32 for `obs` and the phase that produced it.

    Reads privileged `cube_pos` (3,), `robot0_eef_pos` (3,) in metres (world frame, which is the
    OSC controller's frame for the fixed Panda), `robot0_gripper_qpos` (2,, m) and
    `robot0_gripper_qvel` (2,, m/s).
    """
    p = obs.privileged
    task = p.get("task", "?")
    if "cube_pos" not in p or task not in ("Lift", "?"):
        raise UnsupportedTaskError(f"the scripted Lift expert supports robosuite's Lift only; got task {task!r}")
    eef = np.asarray(p["robot0_eef_pos"], dtype=np.float64)
    grasp_point = np.asarray(p["cube_pos"], dtype=np.float64) - [0.0, 0.0, config.grasp_depth]
    qpos = np.asarray(p["robot0_gripper_qpos"], dtype=np.float64)
    gap = float(qpos[0] - qpos[1])
    qvel = np.asarray(p.get("robot0_gripper_qvel", np.zeros(2)), dtype=np.float64)
    gripped = EMPTY_GAP < gap < GRIPPED_GAP and float(np.max(np.abs(qvel))) < STILL
    offset = grasp_point - eef
    aligned = float(np.linalg.norm(offset[:2])) < ALIGNED_XY
    at_grasp = aligned and abs(offset[2]) < AT_GRASP_Z

    if at_grasp and gripped:
        phase, target, gripper = "lift", eef + [0.0, 0.0, 0.1], CLOSE
    elif at_grasp:
        phase, target, gripper = "grasp", grasp_point, CLOSE
    elif not aligned:
        above = grasp_point + [0.0, 0.0, config.approach_height]
        # Rise before moving sideways when below the approach height (never drag the fingers across the cube).
        low = eef[2] < above[2] - 0.02 and float(np.linalg.norm(offset[:2])) > 2 * ALIGNED_XY
        phase, target, gripper = "approach", (np.array([eef[0], eef[1], above[2]]) if low else above), OPEN
    elif gap < FULL_OPEN - 0.006:
        phase, target, gripper = "open", np.array([grasp_point[0], grasp_point[1], eef[2]]), OPEN
    else:
        phase, target, gripper = "descend", grasp_point, OPEN

    action = np.zeros(ACTION_DIM, dtype=np.float32)
    action[:3] = np.clip((target - eef) * config.gain, -config.speed, config.speed)
    action[6] = gripper
    return action, {"phase": phase}


class ScriptedLift(StepwiseExpert):
    """The scripted Lift expert as a Policy: chunks of one action."""

    def __init__(self, config: LiftConfig):
        self.config = config

    def plan(self, obs: Observation) -> tuple[np.ndarray, dict[str, Any]]:
        return plan_step(obs, self.config)


def make_scripted_lift(options: Mapping[str, Any], env_family: str) -> ScriptedLift:
    """Registry factory (through policies/by_family.py's "scripted"): validate options, build the expert."""
    if env_family != "robosuite":
        raise SpecError("env.family", f"the scripted Lift expert runs on env family 'robosuite', not {env_family!r}")
    return ScriptedLift(LiftConfig.from_options(options))
