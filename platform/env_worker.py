"""EnvWorker: a Ray actor that owns one simulator and runs whole episodes in it.

The simulator (and its EGL context) is created inside the actor's process, on `setup()`.
Resources and the Python environment are declared by the driver with `.options(num_cpus=...,
runtime_env=envs.families.worker_runtime_env(family))`: LIBERO workers share the driver's Python,
robosuite-1.5 / RoboCasa workers start in their own venv. This module is imported there too, so it
imports nothing that venv lacks (no torch).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray

from robofleet.platform.episodes import EpisodeSpec
from robofleet.platform.errors import RobofleetError
from robofleet.platform.protocol import reseeds_every_step
from robofleet.platform.spec import RunSpec


class PolicyEnvironmentError(RobofleetError):
    """The policy cannot run inside this env family's Python environment."""


def make_env(spec: RunSpec):
    """The simulator for a spec's env family."""
    env = spec.env
    common = {"suite": env.suite, "image_size": env.image_size, "render_cameras": env.render_cameras,
              "max_steps": env.max_steps}
    if env.family == "libero":
        from robofleet.envs.libero import LiberoEnv

        return LiberoEnv(**common, hard_reset=env.reset == "hard",
                         reseed_every_step=reseeds_every_step(spec.protocol, env.family))
    if env.family == "robosuite":
        from robofleet.envs.robosuite15 import RobosuiteEnv

        return RobosuiteEnv(**common, cameras=env.cameras, hard_reset=env.reset == "hard")
    if env.family == "robocasa":
        from robofleet.envs.robocasa import RoboCasaEnv

        return RoboCasaEnv(**common, cameras=env.cameras)
    raise KeyError(env.family)


def family_versions(family: str) -> dict[str, str | None]:
    """Versions that only some families' Python environments have (RoboCasa's), for the fingerprint."""
    if family not in ("robosuite", "robocasa"):
        return {}
    from robofleet.platform.fingerprint import package_versions

    versions = package_versions(("robocasa",))
    versions.pop("python")
    return versions


def _make_local_policy(spec: RunSpec):
    """The spec's policy inside this worker; a module missing from this family's Python environment
    (torch in the robosuite-1.5 one) becomes an error that says how to serve the policy instead."""
    from robofleet.policies.registry import make_policy

    try:
        policy = make_policy(spec.policy.name, spec.policy.options, spec.env.family)
    except ModuleNotFoundError as exc:
        from robofleet.envs.families import python_env

        env = python_env(spec.env.family)
        if env.python() is None:
            raise
        raise PolicyEnvironmentError(
            f"policy {spec.policy.name!r} imports {exc.name!r}, which the {env.name} Python environment of "
            f"env family {spec.env.family!r} ({env.venv()}) does not have: serve the policy from replicas in the "
            "driver's environment ([serving] replicas = 1 or more), or install it into that venv") from exc
    if hasattr(policy, "warm_up"):  # compiled parts compile now, in the worker's start-up, not in episode 1
        policy.warm_up()
    return policy


PREPARER_WAIT_S = 30.0  # how long a replica may take to hand out its request_preparer before the next is asked


def _request_preparer(replicas: list) -> object:
    """The policy's request_preparer from the first replica that answers within PREPARER_WAIT_S (one the
    runner gave up after its node died may never answer); the last one is waited for as long as it takes
    (a sole replica may be restarting)."""
    from ray.exceptions import GetTimeoutError, RayActorError

    for replica in replicas[:-1]:
        try:
            return ray.get(replica.request_preparer.remote(), timeout=PREPARER_WAIT_S)
        except (GetTimeoutError, RayActorError):
            continue
    return ray.get(replicas[-1].request_preparer.remote())


@ray.remote
class EnvWorker:
    """One simulator + one decider: the policy (local, or a client of shared PolicyReplicas) in its planner.

    Call `setup()` once (it raises the spec's errors before any episode is scheduled), then
    `run(episode, video_path)` for each episode.
    """

    def __init__(self, spec: RunSpec, worker_index: int, replicas: list[Any] | None = None,
                 egl_device: int | None = None):
        if egl_device is not None:  # render on this GPU (before robosuite is imported in this process)
            os.environ["MUJOCO_EGL_DEVICE_ID"] = str(egl_device)
        self.spec = spec
        self.worker_index = worker_index
        self.replicas = replicas
        self.env = None
        self.planner = None

    def setup(self) -> dict[str, Any]:
        """Build the simulator and the policy; return this process's facts (pid, package versions)."""
        import logging

        # Before robosuite is imported: its "No private macro file found!" warnings (3 lines per process).
        logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
        from robofleet.planners.registry import make_planner
        from robofleet.platform.fingerprint import package_versions

        if self.replicas:
            from robofleet.policies.replica import ReplicaClient

            preparer = _request_preparer(self.replicas)
            policy = ReplicaClient(self.replicas, chunk_size=None, worker_index=self.worker_index, preparer=preparer)
        else:
            policy = _make_local_policy(self.spec)
        self.env = make_env(self.spec)
        self.planner = make_planner(self.spec.planner.name, self.spec.planner.options, policy, self.env,
                                    protocol=self.spec.protocol)
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "packages": {**package_versions(), **family_versions(self.spec.env.family)}}

    def task_name(self, task_id: int) -> str:
        return self.env.task_name(task_id)

    def run(self, episode: EpisodeSpec, video_path: str | None = None) -> dict[str, Any]:
        """Run one episode from its start; returns its row fields."""
        from robofleet.platform.episode_loop import run_episode

        row = run_episode(
            self.env,
            self.planner,
            episode,
            open_loop_steps=self.spec.policy.open_loop_steps,
            render_every_step=self.spec.env.render_steps == "every",
            video_path=Path(video_path) if video_path else None,
        )
        row["task"] = self.env.task_name(episode.task_id)
        row["worker"] = self.worker_index
        return row

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
