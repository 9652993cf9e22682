"""The Env contract: what every simulator family speaks (Observation in, action out).

Gymnasium-shaped but smaller: `reset(episode) -> Observation`, `step(action) -> Step`,
`get_state()/set_state()` for planners that need to rewind the simulator, `close()`.
Adapters per family live beside this module; behaviour is added by wrapping, not by flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import numpy as np

from robofleet.platform.errors import EpisodeError


# Each family's cameras by role: role -> the `Observation.images` key its adapter fills. Policies speak
# roles ("wrist", "primary", ...) and look the keys up here, so a model never hard-codes an env's
# camera names. "aloha" is served only (no simulator here): its keys are the reference deploy's image names.
CAMERA_KEYS: Mapping[str, Mapping[str, str]] = {
    "libero": {"primary": "agentview", "wrist": "robot0_eye_in_hand"},
    "robocasa": {"left": "robot0_agentview_left", "right": "robot0_agentview_right", "wrist": "robot0_eye_in_hand"},
    "aloha": {"top": "cam_high", "left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist"},
}


@dataclass(frozen=True)
class Observation:
    """One observation of one robot.

    images: camera name -> uint8 array (H, W, 3), upright (row 0 is the top of the picture).
        Empty when the env runs without cameras (`render_cameras = false`).
    proprio: float32 (P,) robot state; LIBERO: gripper qpos (2) + eef pos (3, metres)
        + eef quaternion (4, xyzw) = 9 values.
    instruction: the task's natural-language instruction.
    privileged: simulator ground truth a privileged (scripted) policy may read, e.g. object poses
        `"<object>_pos"` (3,) in metres and the task's goal predicates `"goal"`. Learned policies
        must not read it.
    """

    images: Mapping[str, np.ndarray]
    proprio: np.ndarray
    instruction: str
    privileged: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """What `Env.step` returns: the next observation and whether the task succeeded (the episode's end)."""

    obs: Observation
    success: bool
    info: Mapping[str, Any] = field(default_factory=dict)


class Env(Protocol):
    """A simulator of one family, created inside its worker process."""

    family: str  # the env family's registry name ("libero", "robosuite", "robocasa")
    action_dim: int
    max_steps: int

    def reset(self, task_id: int, trial: int, seed: int) -> Observation:
        """Start trial `trial` of task `task_id` from the suite's fixed init state; settle it."""

    def step(self, action: np.ndarray, render: bool = True) -> Step:
        """Apply one action, shape (action_dim,) float in env units.

        render=False: nobody will look at this step's images, so the env may skip rendering them
        (Observation.images is then empty); the physics must be the same either way.
        """

    def get_state(self) -> np.ndarray:
        """The full simulator state as a flat float64 vector (restorable with set_state)."""

    def set_state(self, state: np.ndarray) -> Observation:
        """Restore a state from get_state(); returns the observation there."""

    def close(self) -> None:
        """Free the simulator and its render context."""

    # Optional: `snapshot() -> Any` and `restore(snapshot)`: what stepping on reads beyond get_state()
    # (planners/simulator_state.py uses them so that the oracle's playouts restore exactly).


def check_action(action: Any, dim: int) -> np.ndarray:
    """An action as every adapter takes it: a finite float64 (dim,) array, or EpisodeError naming what is wrong."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (dim,):
        raise EpisodeError(f"action must have shape ({dim},), got {action.shape}")
    if not np.all(np.isfinite(action)):
        raise EpisodeError(f"non-finite action {action.tolist()}")
    return action
