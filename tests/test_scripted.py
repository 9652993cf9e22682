"""The scripted LIBERO expert: it solves a real episode, predicts purely, and validates its options."""
from __future__ import annotations

import numpy as np
import pytest

from robofleet.envs.contract import Observation
from robofleet.platform.errors import SpecError
from robofleet.policies.registry import make_policy
from robofleet.policies.scripted import DOWN_QUAT, UnsupportedGoalError, make_scripted

SOUP_ON_FLOOR = np.array([-0.12, -0.24, 0.038])
BASKET = np.array([0.0, 0.26, -0.005])


def state(
    eef=(-0.15, 0.0, 0.26),
    soup=SOUP_ON_FLOOR,
    gripper_width: float = 0.078,
    gripper_speed: float = 0.0,
    goal=(("in", "alphabet_soup_1", "basket_1_contain_region"),),
) -> Observation:
    """A libero_object-like observation built by hand (positions in metres, world frame)."""
    half, speed = gripper_width / 2, gripper_speed / 2
    privileged = {
        "robot0_eef_pos": np.asarray(eef, dtype=np.float64),
        "robot0_eef_quat": np.asarray(DOWN_QUAT, dtype=np.float64),
        "robot0_gripper_qpos": np.array([half, -half]),
        "robot0_gripper_qvel": np.array([speed, -speed]),
        "alphabet_soup_1_pos": np.asarray(soup, dtype=np.float64),
        "alphabet_soup_1_quat": np.array([0.0, 0.707, 0.707, 0.0]),
        "basket_1_pos": BASKET.copy(),
        "basket_1_quat": np.array([0.0, 0.0, 0.707, 0.707]),
        "goal": [list(g) for g in goal],
    }
    proprio = np.zeros(9, dtype=np.float32)
    return Observation(images={}, proprio=proprio, instruction="put the soup in the basket", privileged=privileged)


@pytest.fixture()
def expert():
    return make_scripted({}, "libero")


# -- the Policy contract -----------------------------------------------------------------------------
def test_predicts_one_float32_action_of_dimension_7_per_observation(expert):
    predictions = expert.predict([state(), state(eef=(0.0, 0.0, 0.3))], [0, 1])
    assert expert.chunk_size == 1
    assert [p.actions.shape for p in predictions] == [(1, 7), (1, 7)]
    assert all(p.actions.dtype == np.float32 for p in predictions)
    assert all(np.all(np.abs(p.actions) <= 1.0) for p in predictions)


def test_predict_is_a_pure_function_of_the_observation(expert):
    first, other = state(), state(eef=(-0.12, -0.24, 0.06), gripper_width=0.06)
    before = expert.predict([first], [0])[0].actions
    expert.predict([other, other], [1, 2])  # another episode's queries in between
    again = expert.predict([first], [3])[0].actions
    expert.reset()
    after_reset = expert.predict([first], [0])[0].actions
    np.testing.assert_array_equal(before, again)
    np.testing.assert_array_equal(before, after_reset)


def test_is_registered_under_the_name_scripted():
    policy = make_policy("scripted", {"speed": 0.5}, "libero")
    assert policy.predict([state()], [0])[0].actions.shape == (1, 7)


# -- phases derived from the state -------------------------------------------------------------------
def test_far_from_the_object_it_moves_toward_it_with_the_gripper_open(expert):
    action = expert.predict([state()], [0])[0].actions[0]
    toward = SOUP_ON_FLOOR[:2] - np.array([-0.15, 0.0])
    assert float(action[:2] @ toward) > 0
    assert action[6] == -1.0


def test_at_the_grasp_point_with_open_fingers_it_closes(expert):
    grasp = SOUP_ON_FLOOR + np.array([0.0, 0.0, 0.038 - 0.025])
    prediction = expert.predict([state(eef=grasp)], [0])[0]
    assert prediction.stats["phase"] == "grasp"
    assert prediction.actions[0, 6] == 1.0


def test_holding_the_object_low_it_lifts_before_moving_sideways(expert):
    grasp = SOUP_ON_FLOOR + np.array([0.0, 0.0, 0.013])
    prediction = expert.predict([state(eef=grasp, gripper_width=0.06)], [0])[0]
    assert prediction.stats["phase"] == "lift"
    assert prediction.actions[0, 2] > 0.5 and np.all(np.abs(prediction.actions[0, :2]) < 0.05)
    assert prediction.actions[0, 6] == 1.0


def test_holding_the_object_high_over_the_basket_it_lowers_it(expert):
    soup = BASKET + np.array([0.0, 0.0, 0.3])
    eef = soup + np.array([0.0, 0.0, 0.013])
    prediction = expert.predict([state(eef=eef, soup=soup, gripper_width=0.06)], [0])[0]
    assert prediction.stats["phase"] == "place"
    assert prediction.actions[0, 2] < -0.5
    assert prediction.actions[0, 6] == 1.0


def test_once_the_object_is_in_the_basket_it_lets_go(expert):
    soup = BASKET + np.array([0.0, 0.0, 0.1])
    eef = soup + np.array([0.0, 0.0, 0.013])
    prediction = expert.predict([state(eef=eef, soup=soup, gripper_width=0.06)], [0])[0]
    assert prediction.stats["phase"] == "retreat"
    assert prediction.actions[0, 6] == -1.0


def test_unsupported_goal_is_an_error_naming_the_predicate(expert):
    with pytest.raises(UnsupportedGoalError, match=r"\(turnon flat_stove_1\)"):
        expert.predict([state(goal=(("turnon", "flat_stove_1"),))], [0])


def test_fixture_target_is_an_error_naming_the_target(expert):
    with pytest.raises(UnsupportedGoalError, match="flat_stove_1_cook_region"):
        expert.predict([state(goal=(("on", "alphabet_soup_1", "flat_stove_1_cook_region"),))], [0])


# -- options -----------------------------------------------------------------------------------------
def test_unknown_option_names_the_key_and_the_allowed_keys():
    with pytest.raises(SpecError, match="policy.chunk_size") as info:
        make_scripted({"chunk_size": 4}, "libero")
    assert info.value.key == "policy.chunk_size"
    assert "speed" in str(info.value) and "clearance" in str(info.value)


@pytest.mark.parametrize("value", [0.0, 1.5, "fast", True])
def test_out_of_range_speed_is_rejected(value):
    with pytest.raises(SpecError, match="policy.speed"):
        make_scripted({"speed": value}, "libero")


def test_other_env_families_are_rejected():
    with pytest.raises(SpecError, match="env.family"):
        make_scripted({}, "robocasa")


# -- a real episode ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_solves_a_libero_object_episode_in_real_physics(expert):
    from robofleet.envs.libero import LiberoEnv

    env = LiberoEnv("libero_object", render_cameras=False, hard_reset=True)
    try:
        obs = env.reset(task_id=1, trial=0, seed=0)  # cream cheese -> basket
        success = False
        for _ in range(env.max_steps):
            step = env.step(expert.predict([obs], [0])[0].actions[0])
            obs = step.obs
            if step.success:
                success = step.success
                break
    finally:
        env.close()
    assert success
