"""LIBERO (robosuite 1.4) behind the Env contract, following the reference evaluation protocol.

Protocol (REFERENCE.md §1): trial i of a task starts from the suite's fixed init state i
(`env.reset()` then `env.set_init_state(...)`); 10 wait steps with the dummy action let objects
settle (their `done` is ignored, as in the reference); then the policy acts for at most the suite's
step limit; success is the first `env.step` that returns done=True. Images are rendered at
`image_size` and flipped upright with `np.flipud`; proprio is gripper qpos (2) + eef pos (3) +
eef quat (4).

Create it inside the worker process: EGL contexts do not survive a fork or pickling.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from robofleet.envs import robosuite_snapshot
from robofleet.envs.camera_gate import CameraGate
from robofleet.envs.contract import CAMERA_KEYS, Observation, Step, check_action
from robofleet.envs.libero_setup import prepare_libero
from robofleet.envs.libero_tasks import load_suite
from robofleet.envs.libero_suites import DUMMY_ACTION, LIBERO_SUITES, WAIT_STEPS
from robofleet.platform.errors import EpisodeError

log = logging.getLogger(__name__)

# rendered by LIBERO (keys get an "_image" suffix there): agentview, robot0_eye_in_hand
CAMERAS = (CAMERA_KEYS["libero"]["primary"], CAMERA_KEYS["libero"]["wrist"])
ACTION_DIM = 7
PROPRIO_KEYS = ("robot0_gripper_qpos", "robot0_eef_pos", "robot0_eef_quat")


class LiberoEnv:
    """One LIBERO simulator for one suite; rebuilt when the task changes.

    Args:
        suite: a key of LIBERO_SUITES.
        image_size: camera height = width in pixels.
        render_cameras: False skips rendering (10x faster on CPU) for policies that read
            `privileged` state only; Observation.images is then empty.
        hard_reset: True reloads the model on every reset (bit-identical episodes, ~2.5 s);
            False is ~10x faster but not bit-identical to a hard reset. Recorded in results.
        max_steps: policy steps per episode; None = the suite's protocol limit.
        reseed_every_step: seed numpy's global RNG (LIBERO's placement samplers draw from it) with
            `reset`'s seed before every env step too, as the reference's deterministic mode does
            with 0 (platform/protocol.py). The reset itself always seeds it first.
    """

    action_dim = ACTION_DIM
    family = "libero"

    def __init__(
        self,
        suite: str,
        image_size: int = 256,
        render_cameras: bool = True,
        hard_reset: bool = True,
        max_steps: int | None = None,
        wait_steps: int = WAIT_STEPS,
        reseed_every_step: bool = False,
    ):
        prepare_libero()
        self.suite_name = suite
        self.max_steps = max_steps or LIBERO_SUITES[suite].max_steps
        self.wait_steps = wait_steps
        self.image_size = image_size
        self.render_cameras = render_cameras
        self.hard_reset = hard_reset
        self.reseed_every_step = reseed_every_step
        self._step_seed = 0
        self._suite = load_suite(suite)
        self._env = None
        self._gate: CameraGate | None = None
        self._task_id: int | None = None
        self._instruction = ""
        self._goal: list[list[str]] = []

    # -- task set-up -------------------------------------------------------------------------
    def task_name(self, task_id: int) -> str:
        return self._suite.get_task(task_id).name

    def instruction(self, task_id: int) -> str:
        return self._suite.get_task(task_id).language

    def _build(self, task_id: int) -> None:
        import os

        from libero.libero import get_libero_path
        from libero.libero.envs.env_wrapper import ControlEnv

        if self._env is not None:
            self.close()
        task = self._suite.get_task(task_id)
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        self._env = ControlEnv(
            bddl_file_name=bddl,
            use_camera_obs=self.render_cameras,
            has_offscreen_renderer=self.render_cameras,
            camera_names=list(CAMERAS),
            camera_heights=self.image_size,
            camera_widths=self.image_size,
            hard_reset=self.hard_reset,
        )
        if self.render_cameras:
            self._gate = CameraGate(self._env.env, CAMERAS, self.image_size, self.image_size)
        self._task_id = task_id
        self._instruction = task.language
        self._goal = [list(map(str, g)) for g in self._env.env.parsed_problem["goal_state"]]
        self._init_states = self._suite.get_task_init_states(task_id)

    # -- the Env contract ----------------------------------------------------------------------
    def reset(self, task_id: int, trial: int, seed: int) -> Observation:
        """Trial `trial` of `task_id` from its fixed init state, after the wait steps.

        seed: the scene seed. LIBERO places its fixtures (cabinets, stove, racks) from numpy's global
        RNG at `reset()`, and `set_init_state` leaves them there: the reference seeds it with 0
        (every trial sees one layout); robofleet's own protocol uses the episode seed.
        """
        if self._task_id != task_id or self._env is None:
            self._build(task_id)
        if not 0 <= trial < len(self._init_states):
            raise EpisodeError(f"trial {trial} out of range: task {task_id} has {len(self._init_states)} init states")
        self._step_seed = int(seed) % 2**31
        self._env.seed(self._step_seed)  # np.random.seed: what LIBERO's placement samplers draw from
        self._env.reset()
        if self._gate is not None:
            self._gate.install()
        raw = self._env.set_init_state(self._init_states[trial])
        for index in range(self.wait_steps):  # only the last wait step's images are looked at
            raw, _, _, _ = self._raw_step(list(DUMMY_ACTION), render=index == self.wait_steps - 1)
        return self._observation(raw)

    def step(self, action: np.ndarray, render: bool = True) -> Step:
        """render=False: skip the camera renders of this step (Observation.images is then empty)."""
        action = check_action(action, ACTION_DIM)
        raw, reward, done, info = self._raw_step(action.tolist(), render)
        return Step(obs=self._observation(raw, with_images=render), success=bool(done),
                    info={"reward": float(reward)})

    @property
    def renders_skipped(self) -> int:
        """Camera renders skipped since this simulator was built (render=False steps, wait steps)."""
        return 0 if self._gate is None else self._gate.skipped

    def get_state(self) -> np.ndarray:
        return np.array(self._env.get_sim_state(), dtype=np.float64, copy=True)

    def set_state(self, state: np.ndarray) -> Observation:
        return self._observation(self._env.regenerate_obs_from_state(np.asarray(state, dtype=np.float64)))

    def snapshot(self) -> Any:
        """What stepping on reads beyond get_state() (envs/robosuite_snapshot.py); for `restore`."""
        return robosuite_snapshot.capture(self._env.env)

    def restore(self, snapshot: Any) -> None:
        """Put back a `snapshot()` after set_state(its get_state()): later steps then match exactly."""
        robosuite_snapshot.restore(self._env.env, snapshot)

    def check_success(self) -> bool:
        return bool(self._env.check_success())

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
            self._gate = None
            self._task_id = None

    # -- helpers -------------------------------------------------------------------------------
    def _raw_step(self, action: list[float], render: bool) -> tuple[dict[str, Any], float, bool, dict]:
        if self.reseed_every_step:
            self._env.seed(self._step_seed)
        if render or self._gate is None:
            return self._env.step(action)
        with self._gate.closed():
            return self._env.step(action)

    def _observation(self, raw: dict[str, Any], with_images: bool = True) -> Observation:
        images = {}
        if self.render_cameras and with_images:
            for cam in CAMERAS:
                images[cam] = np.ascontiguousarray(np.flipud(raw[f"{cam}_image"]))
        proprio = np.concatenate([np.asarray(raw[k], dtype=np.float32) for k in PROPRIO_KEYS])
        privileged = {k: np.asarray(v) for k, v in raw.items() if not k.endswith("_image")}
        privileged["goal"] = self._goal
        privileged["obj_of_interest"] = list(self._env.obj_of_interest)
        return Observation(images=images, proprio=proprio, instruction=self._instruction, privileged=privileged)
