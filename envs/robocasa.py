"""RoboCasa kitchens (robosuite 1.5 + robocasa) behind the Env contract, with RoboCasa's evaluation
protocol (envs/robocasa_tasks.py: tasks, step limits, scenes by trial, wait steps, action padding).

As in the reference evaluation, every episode builds a fresh kitchen: the scene (layout, style) is
fixed at construction (`layout_and_style_ids` holds the trial's one pair) and RoboCasa draws the
rest (objects, their placement, the robot's spot) from the env seed: `reset`'s seed, the scene seed of
platform/protocol.py (the reference's `seed * trial * 256`, or the episode seed). So an episode
depends on (task, trial, seed) only, never on what its worker ran before. `reset` is then
a single `env.reset()`, the instruction is the episode's `ep_meta["lang"]` (it names the sampled
object), and 10 all-zero wait steps follow.

RoboCasa is not on PyPI and its kitchen assets (~10 GB) come from outside: `require_robocasa()`
raises RoboCasaSetupError with the install steps when either is missing. Runs only in the
robosuite-1.5 environment (envs/families.py). Create it inside the worker process.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from robofleet.envs.contract import Observation, check_action
from robofleet.envs.robocasa_tasks import (
    BODY_PART_ORDERING,
    CAMERAS,
    IMAGE_SIZE,
    OBJ_INSTANCE_SPLIT,
    POLICY_ACTION_DIM,
    ROBOCASA_SUITES,
    ROBOT,
    WAIT_STEPS,
    pad_action,
    scene_for_trial,
    wait_action,
)
from robofleet.envs.robosuite15 import RobosuiteSimEnv, robosuite_observation
from robofleet.platform.errors import RobofleetError

log = logging.getLogger(__name__)

ASSET_MARKERS = ("textures", "fixtures", "objects/objaverse")  # under robocasa/models/assets
INSTALL_STEPS = (
    "RoboCasa is not on PyPI; install it into the robosuite-1.5 environment (.venv-rs15, built by "
    "`bash setup.sh`, which already holds robosuite 1.5.2, mujoco==3.3.1 and numpy==2.2.5, the versions "
    "RoboCasa's robosuite-1.5 release asserts):\n"
    "  git clone https://github.com/robocasa/robocasa\n"
    "  .venv-rs15/bin/pip install --no-deps -e robocasa   # --no-deps: keep those pins (robosuite's mink pin "
    "wants numpy<2)\n"
    "  .venv-rs15/bin/pip install h5py lxml   # then whatever else of robocasa/setup.py `import robocasa` asks for\n"
    "  .venv-rs15/bin/python robocasa/robocasa/scripts/download_kitchen_assets.py   # ~10 GB of kitchens\n"
    "  .venv-rs15/bin/python robocasa/robocasa/scripts/setup_macros.py"
)


class RoboCasaSetupError(RobofleetError):
    """robocasa or its kitchen assets are missing from the robosuite-1.5 environment."""


def require_robocasa() -> Path:
    """robocasa's package directory, checked for its kitchen assets; RoboCasaSetupError says how to install."""
    spec = importlib.util.find_spec("robocasa")
    if spec is None or not spec.submodule_search_locations:
        raise RoboCasaSetupError(f"the `robocasa` package is not installed in this Python environment. {INSTALL_STEPS}")
    package = Path(list(spec.submodule_search_locations)[0])
    missing = [m for m in ASSET_MARKERS if not (package / "models" / "assets" / m).is_dir()]
    if missing:
        raise RoboCasaSetupError(f"robocasa is installed at {package} but its kitchen assets are missing "
                                 f"(models/assets/{', models/assets/'.join(missing)}). {INSTALL_STEPS}")
    return package


def pandaomron_controller_config() -> dict[str, Any]:
    """robosuite 1.5's PandaOmron controller (OSC_POSE arm, mobile base) with RoboCasa's action layout:
    [arm 6, gripper 1, base 3, torso 1, mode 1] = 12 values."""
    from robosuite.controllers import load_composite_controller_config

    config = load_composite_controller_config(controller=None, robot="PandaOmron")
    config.setdefault("composite_controller_specific_configs", {})["body_part_ordering"] = list(BODY_PART_ORDERING)
    return config


def kitchen_kwargs(task: str, trial: int, seed: int, image_size: int = IMAGE_SIZE,
                   cameras: Sequence[str] = CAMERAS, render_cameras: bool = True) -> dict[str, Any]:
    """`robosuite.make` arguments of one protocol episode (the reference evaluation's, minus the
    controller config, which needs robosuite): robot, cameras, object split, the trial's scene, seed."""
    return {
        "env_name": task,
        "robots": ROBOT,
        "camera_names": list(cameras) if render_cameras else list(CAMERAS[:1]),
        "camera_widths": image_size,
        "camera_heights": image_size,
        "has_renderer": False,
        "has_offscreen_renderer": render_cameras,
        "use_camera_obs": render_cameras,
        "camera_depths": False,
        "ignore_done": True,
        "use_object_obs": True,
        "seed": int(seed),
        "obj_instance_split": OBJ_INSTANCE_SPLIT,
        "generative_textures": None,
        "randomize_cameras": False,
        "layout_and_style_ids": (scene_for_trial(trial),),
        "translucent_robot": False,
    }


def make_kitchen(**kwargs: Any) -> Any:
    """A RoboCasa kitchen env from kitchen_kwargs() (imports robocasa, which registers its tasks)."""
    require_robocasa()
    import robocasa  # noqa: F401 - registers the kitchen environments and the PandaMobile alias
    import robosuite

    return robosuite.make(controller_configs=pandaomron_controller_config(), **kwargs)


class RoboCasaEnv(RobosuiteSimEnv):
    """RoboCasa atomic tasks with the reference protocol; a new kitchen per episode.

    Args:
        suite: a key of ROBOCASA_SUITES ("atomic").
        image_size: camera side in pixels (protocol: 224).
        render_cameras: False renders nothing (Observation.images empty).
        cameras: cameras to render (protocol: CAMERAS).
        max_steps: policy steps per episode; None = the task's limit.
        make: builds the simulator from kitchen_kwargs(); default make_kitchen. Tests pass a
            robosuite-1.5 stand-in to exercise everything but the kitchen.
    """

    family = "robocasa"
    action_dim = POLICY_ACTION_DIM

    def __init__(self, suite: str, image_size: int = IMAGE_SIZE, render_cameras: bool = True,
                 cameras: Sequence[str] = CAMERAS, max_steps: int | None = None, wait_steps: int = WAIT_STEPS,
                 make: Callable[..., Any] | None = None):
        if make is None:
            require_robocasa()  # at worker setup: a missing install fails the run before any episode
        self.tasks = ROBOCASA_SUITES[suite]
        self.image_size = image_size
        self.render_cameras = render_cameras
        self.cameras = tuple(cameras) if render_cameras else ()
        self.wait_steps = wait_steps
        self._max_steps = max_steps
        self.max_steps = max_steps or max(t.max_steps for t in self.tasks)
        self._make = make or make_kitchen
        self._env = None
        self._extra: dict[str, Any] = {}
        self._instruction = ""

    def task_name(self, task_id: int) -> str:
        return self.tasks[task_id].name

    def reset(self, task_id: int, trial: int, seed: int) -> Observation:
        """A fresh kitchen for (task, trial, seed): the trial's scene, RoboCasa's draws from `seed`, wait steps."""
        self.close()
        task = self.tasks[task_id]
        kwargs = kitchen_kwargs(task.name, trial, seed, self.image_size, self.cameras or CAMERAS, self.render_cameras)
        self._env = self._make(**kwargs)
        self.max_steps = self._max_steps or task.max_steps
        raw = self._env.reset()
        meta = self._env.get_ep_meta() if callable(getattr(self._env, "get_ep_meta", None)) else {}
        self._instruction = str(meta.get("lang", "")) or task.name
        layout, style = kwargs["layout_and_style_ids"][0]
        self._extra = {"task": task.name, "layout_id": layout, "style_id": style}
        for _ in range(self.wait_steps):
            raw, _, _, _ = self._env.step(wait_action())
        return self._observation(raw)

    def _robot_action(self, action: np.ndarray) -> np.ndarray:
        """action: (7,) arm + gripper in [-1, 1]; padded to the robot's 12 (base still, arm mode)."""
        return pad_action(check_action(action, POLICY_ACTION_DIM))

    def _observation(self, raw: Mapping[str, Any]) -> Observation:
        return robosuite_observation(raw, self.cameras, self._instruction, self._extra)
