"""The LIBERO adapter follows the evaluation protocol (real physics and rendering)."""
from __future__ import annotations

import numpy as np
import pytest

from robofleet.envs.contract import Observation
from robofleet.envs.libero import LiberoEnv
from robofleet.platform.episode_loop import run_episode
from robofleet.planners.direct import Direct
from robofleet.platform.episodes import expand_episodes
from robofleet.platform.spec import spec_from_dict
from robofleet.policies.contract import Prediction
from tests.conftest import small_spec


@pytest.fixture(scope="module")
def env():
    env = LiberoEnv("libero_object", image_size=64, render_cameras=True)
    yield env
    env.close()


def test_reset_gives_upright_images_and_nine_dim_proprio(env):
    obs = env.reset(task_id=0, trial=0, seed=1)
    assert set(obs.images) == {"agentview", "robot0_eye_in_hand"}
    raw = env._env.env._get_observations()
    assert np.array_equal(obs.images["agentview"], np.flipud(raw["agentview_image"]))
    assert obs.images["agentview"].shape == (64, 64, 3) and obs.images["agentview"].dtype == np.uint8
    assert obs.proprio.shape == (9,) and obs.proprio.dtype == np.float32
    assert obs.instruction == "pick up the alphabet soup and place it in the basket"
    assert obs.privileged["goal"] == [["in", "alphabet_soup_1", "basket_1_contain_region"]]


def test_protocol_step_limit_and_init_states(env):
    assert env.max_steps == 280 and env.wait_steps == 10
    env.reset(0, trial=0, seed=1)
    state_0 = env.get_state()
    env.reset(0, trial=1, seed=1)
    assert not np.allclose(state_0, env.get_state())  # trial i starts from init state i


def test_state_restores_bit_for_bit(env):
    env.reset(0, trial=2, seed=3)
    before = env.get_state()
    for _ in range(5):
        env.step(np.array([0.5, 0.0, -0.3, 0.0, 0.0, 0.0, 1.0]))
    assert not np.array_equal(env.get_state(), before)
    env.set_state(before)
    assert np.array_equal(env.get_state(), before)


def test_hard_resets_make_episodes_bit_identical(env):
    def final_state():
        env.reset(0, trial=4, seed=9)
        for _ in range(5):
            env.step(np.array([0.2, -0.1, 0.0, 0.0, 0.0, 0.0, -1.0]))
        return env.get_state()

    assert np.array_equal(final_state(), final_state())


class NaNPolicy:
    chunk_size = 1

    def predict(self, observations: list[Observation], seeds: list[int]) -> list[Prediction]:
        return [Prediction(actions=np.full((1, 7), np.nan, dtype=np.float32)) for _ in observations]

    def reset(self) -> None:
        pass


def test_a_bad_action_is_recorded_as_an_error_not_a_failure(env):
    episode = expand_episodes(spec_from_dict(small_spec()))[0]
    row = run_episode(env, Direct(NaNPolicy()), episode)
    assert row["success"] == 0
    assert row["error"].startswith("EpisodeError: non-finite action")
