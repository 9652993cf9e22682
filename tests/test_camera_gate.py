"""Rendering only the observed steps (envs/camera_gate.py) changes nothing but the time it takes.

Real LIBERO physics and EGL rendering: the same actions with every step rendered and with only the
chunk ends rendered give bit-identical simulator states, proprio and chunk-end images.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from robofleet.envs.contract import Observation
from robofleet.envs.libero import LiberoEnv
from robofleet.platform.episode_loop import run_episode
from robofleet.planners.direct import Direct
from robofleet.platform.episodes import expand_episodes
from robofleet.platform.spec import SpecError, spec_from_dict
from robofleet.policies.contract import Prediction
from tests.conftest import small_spec

ACTIONS = np.random.default_rng(0).uniform(-0.6, 0.6, size=(12, 7))
ACTIONS[:, 6] = np.sign(ACTIONS[:, 6])


@pytest.fixture(scope="module")
def env():
    env = LiberoEnv("libero_object", image_size=64, render_cameras=True)
    yield env
    env.close()


def play(env: LiberoEnv, observed_every: int | None) -> tuple[np.ndarray, list[Observation]]:
    """Run ACTIONS from trial 3; observed_every=None renders every step, k renders every k-th only.
    Returns the final simulator state and the rendered observations (after the reset too)."""
    seen = [env.reset(0, trial=3, seed=3)]
    for index, action in enumerate(ACTIONS):
        render = observed_every is None or (index + 1) % observed_every == 0
        step = env.step(action, render=render)
        if render:
            seen.append(step.obs)
        else:
            assert step.obs.images == {} and step.obs.proprio.shape == (9,)
    return env.get_state(), seen


def test_skipping_renders_keeps_physics_and_observed_images_bit_identical(env):
    every_state, every_seen = play(env, None)
    skipped_before = env.renders_skipped
    gated_state, gated_seen = play(env, 4)
    assert env.renders_skipped - skipped_before == 2 * (9 + 9)  # 2 cameras x (9 wait steps + 9 unobserved steps)
    assert np.array_equal(every_state, gated_state)
    chunk_ends = [every_seen[0]] + [every_seen[i] for i in (4, 8, 12)]
    assert len(gated_seen) == len(chunk_ends) == 4
    for a, b in zip(chunk_ends, gated_seen):
        assert np.array_equal(a.proprio, b.proprio)
        for camera in ("agentview", "robot0_eye_in_hand"):
            assert a.images[camera].any() and np.array_equal(a.images[camera], b.images[camera])


def test_a_hard_reset_keeps_the_gate(env):
    """robosuite's hard reset puts fresh camera sensors back: the gate wraps them again."""
    env.reset(0, trial=0, seed=0)
    before = env.renders_skipped
    env.step(ACTIONS[0], render=False)
    assert env.renders_skipped == before + 2


class ReplayPolicy:
    """Chunks of 4 of the fixed ACTIONS, and the images each decision was given."""

    chunk_size = 4

    def __init__(self):
        self.images: list[str] = []
        self._next = 0

    def predict(self, observations: list[Observation], seeds: list[int]) -> list[Prediction]:
        obs = observations[0]
        self.images.append(hashlib.sha256(b"".join(obs.images[k].tobytes() for k in sorted(obs.images))).hexdigest())
        chunk = ACTIONS[self._next:self._next + 4]
        self._next = (self._next + 4) % len(ACTIONS)
        return [Prediction(actions=chunk.astype(np.float32))]

    def reset(self) -> None:
        self._next = 0


def test_rollout_renders_only_what_decisions_read_and_gets_the_same_episode(env):
    episode = expand_episodes(spec_from_dict(small_spec()))[0]
    rows, images = {}, {}
    env.max_steps = 12  # three chunks (the module's env has the suite's 280)
    try:
        for every in (True, False):
            policy = ReplayPolicy()
            rows[every] = run_episode(env, Direct(policy), episode, render_every_step=every)
            images[every] = policy.images
    finally:
        env.max_steps = 280
    assert rows[True]["error"] == rows[False]["error"] == ""
    assert rows[True]["final_state"] == rows[False]["final_state"] and rows[True]["steps"] == 12
    assert images[True] == images[False] and len(images[True]) == 3  # the decisions saw the same pictures


def test_render_steps_spec_option():
    assert spec_from_dict(small_spec()).env.render_steps == "observed"
    spec = small_spec()
    spec["env"]["render_steps"] = "every"
    assert spec_from_dict(spec).env.render_steps == "every"
    assert spec_from_dict(spec).identity_hash() == spec_from_dict(small_spec()).identity_hash()  # same episodes
    spec["env"]["render_steps"] = "sometimes"
    with pytest.raises(SpecError, match="env.render_steps"):
        spec_from_dict(spec)
