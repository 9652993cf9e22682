"""robosuite 1.5 tasks (Lift, Stack, PickPlaceCan, Door, ...) behind the Env contract.

Runs only in the robosuite-1.5 Python environment (envs/families.py): the driver and LIBERO's
workers keep robosuite 1.4. Protocol, kept as close to LIBERO's as the simulator allows:

- Initial state of a trial: robosuite randomises it (object placement, cube sizes, the robot's joint
  noise) from `env.rng`. `reset` replaces that generator with one seeded by the episode seed alone
  (EpisodeSpec.seed, derived from the sweep seed and the episode key), so trial i starts from the
  same state on every worker, whatever it ran before. With hard resets (the default) the model is
  rebuilt from that seed, so this holds bit for bit; soft resets keep the objects' sizes of the
  first build (made with BUILD_SEED) and only re-place them.
- 10 wait steps with the dummy action [0,0,0,0,0,0,-1], then the policy acts for at most the
  task's step limit (envs/robosuite_tasks.py) or env.max_steps.
- Success: the task's `_check_success()` after each step (robosuite's own `done` is the horizon).
- Observations: the spec's cameras (default agentview + robot0_eye_in_hand) rendered at image_size
  and flipped upright with `np.flipud`, as LIBERO; proprio = gripper qpos (2) + eef pos (3) +
  eef quat (4, xyzw) = 9 values; privileged = every non-image observable (`cube_pos`, ...) + `task`.
- Actions: 7-dim OSC_POSE delta (robosuite's default Panda controller) + gripper, in [-1, 1].

Create it inside the worker process: EGL contexts do not survive a fork or pickling.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from robofleet.envs import robosuite_snapshot
from robofleet.envs.camera_gate import CameraGate
from robofleet.envs.contract import Observation, Step, check_action
from robofleet.envs.robosuite_tasks import (
    ACTION_DIM,
    DEFAULT_CAMERAS,
    DUMMY_ACTION,
    ROBOSUITE_SUITES,
    ROBOT,
    WAIT_STEPS,
)
from robofleet.platform.errors import EpisodeError

log = logging.getLogger(__name__)

PROPRIO_KEYS = ("robot0_gripper_qpos", "robot0_eef_pos", "robot0_eef_quat")
BUILD_SEED = 0  # seed of a freshly built model (what soft resets keep: object sizes, textures)


def robosuite_observation(raw: Mapping[str, Any], cameras: Sequence[str], instruction: str,
                          extra: Mapping[str, Any] | None = None) -> Observation:
    """A robosuite (>= 1.4) observation dict -> Observation.

    raw: robosuite's observations; images `<camera>_image` uint8 (H, W, 3) as rendered (upside down).
    cameras: the cameras to return (upright, keyed by camera name); [] for none.
    extra: more privileged facts (task name, ...).
    Returns images {camera: uint8 (H, W, 3)}, proprio float32 (9,) = gripper qpos (2) + eef pos (3, m)
    + eef quat (4, xyzw), privileged = every non-image observable (+ extra).
    """
    missing = [k for k in PROPRIO_KEYS if k not in raw]
    if missing:
        raise EpisodeError(f"the robot's observation lacks {missing}; observables: {sorted(raw)}")
    images = {}
    for cam in cameras:
        key = f"{cam}_image"
        if key not in raw:
            raise EpisodeError(f"camera {cam!r} was not rendered; image observables: "
                               f"{sorted(k for k in raw if k.endswith('_image'))}")
        images[cam] = np.ascontiguousarray(np.flipud(raw[key]))
    proprio = np.concatenate([np.asarray(raw[k], dtype=np.float32).reshape(-1) for k in PROPRIO_KEYS])
    privileged = {k: np.asarray(v) for k, v in raw.items() if not k.endswith("_image")}
    privileged.update(extra or {})
    return Observation(images=images, proprio=proprio, instruction=instruction, privileged=privileged)


def reseed(env: Any, seed: int) -> None:
    """Make the next `env.reset()` draw everything from `seed` (robosuite >= 1.5 draws from `env.rng`).

    The placement samplers keep a reference to the generator they were built with, so they (and
    the samplers nested in a SequentialCompositeSampler) get the new one too.
    """
    env.rng = np.random.default_rng(int(seed))
    samplers = [getattr(env, "placement_initializer", None)]
    while samplers:
        sampler = samplers.pop()
        if sampler is None:
            continue
        sampler.rng = env.rng
        samplers.extend(getattr(sampler, "samplers", {}).values())


class RobosuiteSimEnv:
    """The Env contract's step / state / close on a built robosuite-1.5 simulator (`self._env`),
    shared by the `robosuite` and `robocasa` adapters; each says how a policy action becomes the
    robot's (`_robot_action`) and how an observation is labelled (`_observation`)."""

    _env: Any = None
    _gate: CameraGate | None = None
    cameras: tuple[str, ...] = ()
    image_size: int = 256

    def _robot_action(self, action: np.ndarray) -> np.ndarray:
        """A policy action -> the robot's float64 action (checked)."""
        raise NotImplementedError

    def _observation(self, raw: Mapping[str, Any]) -> Observation:
        raise NotImplementedError

    def step(self, action: np.ndarray, render: bool = True) -> Step:
        """One policy action; success = the task's `_check_success()` after it.
        render=False: skip the camera renders of this step (Observation.images is then empty)."""
        raw, reward, _, _ = self._raw_step(self._robot_action(action), render)
        obs = self._observation(raw) if render else replace(self._observation(raw), images={})
        success = bool(self._env._check_success())
        return Step(obs=obs, success=success, info={"reward": float(reward)})

    def _raw_step(self, action: np.ndarray, render: bool) -> tuple[dict[str, Any], float, bool, dict]:
        """robosuite's step, its camera renders skipped unless `render` (or nothing is rendered anyway)."""
        if render or not self.cameras:
            return self._env.step(action)
        with self._camera_gate().closed():
            return self._env.step(action)

    def _camera_gate(self) -> CameraGate:
        """The gate on the current simulator's cameras (re-installed: resets may put fresh sensors back)."""
        if self._gate is None or self._gate.env is not self._env:
            self._gate = CameraGate(self._env, self.cameras, self.image_size, self.image_size)
        self._gate.install()
        return self._gate

    def get_state(self) -> np.ndarray:
        """The flattened MuJoCo state (float64), for set_state."""
        return np.array(self._env.sim.get_state().flatten(), dtype=np.float64, copy=True)

    def set_state(self, state: np.ndarray) -> Observation:
        """Restore get_state()'s state exactly; its observation."""
        self._env.sim.set_state_from_flattened(np.asarray(state, dtype=np.float64))
        self._env.sim.forward()
        return self._observation(self._env._get_observations(force_update=True))

    def snapshot(self) -> Any:
        """What stepping on reads beyond get_state() (envs/robosuite_snapshot.py); for `restore`."""
        return robosuite_snapshot.capture(self._env)

    def restore(self, snapshot: Any) -> None:
        """Put back a `snapshot()` after set_state(its get_state()): later steps then match exactly."""
        robosuite_snapshot.restore(self._env, snapshot)

    def check_success(self) -> bool:
        return bool(self._env._check_success())

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


class RobosuiteEnv(RobosuiteSimEnv):
    """One robosuite 1.5 simulator for one suite of the `robosuite` family; rebuilt when the task changes.

    Args:
        suite: a key of ROBOSUITE_SUITES.
        image_size: camera height = width in pixels.
        render_cameras: False skips rendering (privileged policies); Observation.images is then empty.
        cameras: camera names to render (see RobosuiteTask.cameras).
        hard_reset: True rebuilds the model on every reset (trial i identical on every worker).
        max_steps: policy steps per episode; None = the task's limit.
    """

    family = "robosuite"
    action_dim = ACTION_DIM

    def __init__(self, suite: str, image_size: int = 256, render_cameras: bool = True,
                 cameras: Sequence[str] = DEFAULT_CAMERAS, hard_reset: bool = True,
                 max_steps: int | None = None, wait_steps: int = WAIT_STEPS):
        import robosuite  # noqa: F401 - fail here (setup), not at the first episode

        self.suite = ROBOSUITE_SUITES[suite]
        self.image_size = image_size
        self.render_cameras = render_cameras
        self.cameras = tuple(cameras) if render_cameras else ()
        self.hard_reset = hard_reset
        self.wait_steps = wait_steps
        self._max_steps = max_steps
        self.max_steps = max_steps or max(t.max_steps for t in self.suite.tasks)
        self._env = None
        self._task_id: int | None = None

    def task_name(self, task_id: int) -> str:
        return self.suite.tasks[task_id].name

    def instruction(self, task_id: int) -> str:
        return self.suite.tasks[task_id].instruction

    def _build(self, task_id: int) -> None:
        import robosuite
        from robosuite.controllers import load_composite_controller_config

        self.close()
        task = self.suite.tasks[task_id]
        self._env = robosuite.make(
            task.env_name,
            robots=ROBOT,
            # The Panda's default: BASIC with the right arm's OSC_POSE (basic.json's arm, without its
            # parts a Panda lacks, which robosuite warns about on every build).
            controller_configs=load_composite_controller_config(controller=None, robot=ROBOT),
            has_renderer=False,
            has_offscreen_renderer=self.render_cameras,
            use_camera_obs=self.render_cameras,
            camera_names=list(self.cameras) or "agentview",
            camera_heights=self.image_size,
            camera_widths=self.image_size,
            ignore_done=True,  # the episode loop owns the step limit; robosuite would raise past its horizon
            hard_reset=self.hard_reset,
            reward_shaping=False,
            seed=BUILD_SEED,
        )
        self._task_id = task_id
        self.max_steps = self._max_steps or task.max_steps

    # -- the Env contract ----------------------------------------------------------------------
    def reset(self, task_id: int, trial: int, seed: int) -> Observation:
        """Trial `trial` of `task_id`: its initial state drawn from `seed`, then the wait steps."""
        if self._task_id != task_id or self._env is None:
            self._build(task_id)
        reseed(self._env, seed)
        raw = self._env.reset()
        for index in range(self.wait_steps):  # only the last wait step's images are looked at
            raw, _, _, _ = self._raw_step(np.asarray(DUMMY_ACTION), render=index == self.wait_steps - 1)
        return self._observation(raw)

    def _robot_action(self, action: np.ndarray) -> np.ndarray:
        return check_action(action, ACTION_DIM)

    def close(self) -> None:
        super().close()
        self._task_id = None

    def _observation(self, raw: Mapping[str, Any]) -> Observation:
        return robosuite_observation(raw, self.cameras, self.instruction(self._task_id),
                                     {"task": self.task_name(self._task_id)})
