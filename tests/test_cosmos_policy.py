"""Cosmos Policy inference with the tiny random-weight network on CPU: the Policy contract and more."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pytest

from robofleet.envs.contract import Observation
from robofleet.platform.errors import SpecError
from robofleet.policies.contract import Prediction
from robofleet.policies.cosmos.factory import make_cosmos
from robofleet.policies.cosmos.policy import CosmosPolicy, CosmosPrediction

CAMERAS = ("agentview", "robot0_eye_in_hand")


def _observation(seed: int, size: tuple[int, int] = (64, 64), instruction: str = "pick up the bowl") -> Observation:
    rng = np.random.default_rng(seed)
    images = {key: rng.integers(0, 256, (*size, 3), dtype=np.uint8) for key in CAMERAS}
    return Observation(images=images, proprio=rng.uniform(-0.5, 0.5, 9).astype(np.float32), instruction=instruction)


@pytest.fixture(scope="module")
def policy() -> CosmosPolicy:
    return make_cosmos({"config": "tiny", "device": "cpu"}, "libero")


@contextmanager
def _network_calls(policy: CosmosPolicy) -> Iterator[list[int]]:
    """Records one entry per DiT forward call while the block runs."""
    calls: list[int] = []
    handle = policy.network.transformer.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def test_predict_returns_chunk_future_proprio_and_value(policy):
    [prediction] = policy.predict([_observation(0)], [195])
    assert isinstance(prediction, Prediction)
    assert prediction.actions.shape == (16, 7) and prediction.actions.dtype == np.float32
    assert prediction.future_proprio.shape == (9,)
    assert 0.0 <= prediction.value <= 1.0
    assert prediction.future_images is None and prediction.latents is None  # both on request only
    assert prediction.stats["seed"] == 195 and prediction.stats["network_evaluations"] == 5


def test_same_seed_gives_the_same_chunk_and_another_seed_a_different_one(policy):
    first, again, other = policy.predict([_observation(0)] * 3, [7, 7, 8])
    assert np.array_equal(first.actions, again.actions)
    assert not np.allclose(first.actions, other.actions)


def test_a_request_does_not_depend_on_its_batch_mates(policy):
    """Alone vs second of three: equal up to float32 summation order of batched CPU kernels.

    Bitwise equality is not promised here (BLAS/conv kernels may block differently per batch size);
    `pad_to` gives that, see the next test.
    """
    [alone] = policy.predict([_observation(1)], [42])
    batch = policy.predict([_observation(0), _observation(1), _observation(2)], [41, 42, 43])
    np.testing.assert_allclose(batch[1].actions, alone.actions, rtol=0, atol=1e-5)
    np.testing.assert_allclose(batch[1].future_proprio, alone.future_proprio, rtol=0, atol=1e-5)
    assert batch[1].value == pytest.approx(alone.value, abs=1e-5)


def test_pad_to_makes_a_request_bitwise_independent_of_its_batch_mates(policy):
    padded = policy.with_settings(pad_to=3)
    [alone] = padded.predict([_observation(1)], [42])
    batch = padded.predict([_observation(0), _observation(1), _observation(2)], [41, 42, 43])
    assert np.array_equal(batch[1].actions, alone.actions)
    assert alone.stats["batch_size"] == 3


@pytest.mark.parametrize(("settings", "evaluations"), [
    ({"action_steps": 5}, 5),
    ({"action_steps": 1}, 1),
    ({"action_steps": 5, "autoregressive_future": True, "autoregressive_value": True}, 7),
])
def test_network_evaluations_per_query(policy, settings, evaluations):
    variant = policy.with_settings(**settings)
    with _network_calls(variant) as calls:
        variant.predict([_observation(0), _observation(1)], [1, 2])  # one batch: calls are per batch
    assert len(calls) == evaluations


def test_future_images_are_decoded_only_when_asked(policy):
    [plain] = policy.predict([_observation(0)], [3])
    assert "seconds_vae_decode" not in plain.stats
    [with_images] = policy.with_settings(return_future_images=True).predict([_observation(0)], [3])
    assert set(with_images.future_images) == set(CAMERAS)
    assert all(image.shape == (32, 32, 3) and image.dtype == np.uint8 for image in with_images.future_images.values())
    assert np.array_equal(plain.actions, with_images.actions)


def test_camera_images_of_any_size_are_resized_by_the_policy(policy):
    predictions = policy.predict([_observation(0, size=(100, 60)), _observation(1, size=(256, 256))], [0, 1])
    assert [p.actions.shape for p in predictions] == [(16, 7), (16, 7)]


def test_observations_prepared_by_a_client_give_the_same_result_and_foreign_ones_are_refused(policy):
    import pickle

    raw = [_observation(0, size=(100, 60)), _observation(1)]
    preparer = pickle.loads(pickle.dumps(policy.request_preparer))  # as an env worker receives it
    prepared = [preparer(obs) for obs in raw]
    assert all(image.shape == (32, 32, 3) for image in prepared[0].images.values())
    for a, b in zip(policy.predict(raw, [4, 5]), policy.predict(prepared, [4, 5])):
        assert np.array_equal(a.actions, b.actions) and a.value == b.value
    other = policy.with_settings(jpeg_roundtrip=False)
    with pytest.raises(ValueError, match="prepared by"):
        other.predict(prepared[:1], [4])


def test_imagine_conditions_on_the_given_actions(policy):
    observation = _observation(0)
    chunk = np.zeros((16, 7), np.float32)
    same, shifted = policy.imagine([observation, observation], [chunk, chunk + 0.5], [9, 9])
    assert np.array_equal(same.actions, chunk)
    assert not np.allclose(same.future_proprio, shifted.future_proprio)
    assert isinstance(same, CosmosPrediction) and same.latents.shape == (16, 9, 4, 4)


def test_value_scores_a_world_model_future_a_policy_future_or_decoded_images(policy):
    observation = _observation(0)
    chunk = np.zeros((16, 7), np.float32)
    [future] = policy.with_settings(return_future_images=True).imagine([observation], [chunk], [5])
    [proposal] = policy.with_settings(return_latents=True).predict([observation], [5])
    without_latents = Prediction(actions=chunk, future_proprio=future.future_proprio, future_images=future.future_images)
    values = policy.value([observation] * 3, [chunk, proposal.actions, chunk], [future, proposal, without_latents], [6] * 3)
    assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)


def test_robocasa_layout_predicts_a_32_step_chunk_from_three_cameras():
    robocasa = make_cosmos({"config": "tiny", "device": "cpu"}, "robocasa")
    rng = np.random.default_rng(0)
    images = {key: rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
              for key in ("robot0_eye_in_hand", "robot0_agentview_left", "robot0_agentview_right")}
    observation = Observation(images=images, proprio=np.zeros(9, np.float32), instruction="open the microwave")
    assert robocasa.predict([observation], [0])[0].actions.shape == (32, 7)


def test_missing_camera_is_named():
    policy = make_cosmos({"config": "tiny", "device": "cpu", "cameras": {"primary": "front"}}, "libero")
    with pytest.raises(ValueError, match="'front'"):
        policy.predict([_observation(0)], [0])


def test_unknown_option_names_the_key_and_the_allowed_ones():
    with pytest.raises(SpecError) as err:
        make_cosmos({"config": "tiny", "num_steps": 5}, "libero")
    assert err.value.key == "num_steps"
    assert "action_steps" in str(err.value) and "pad_to" in str(err.value)


@pytest.mark.parametrize(("options", "key"), [
    ({"config": "tiny", "action_steps": "5"}, "action_steps"),
    ({"config": "tiny", "jpeg_roundtrip": 1}, "jpeg_roundtrip"),
    ({"config": "huge"}, "config"),
    ({"config": "tiny", "image_size": 40}, "image_size"),
    ({"config": "tiny", "dtype": "int8"}, "dtype"),
])
def test_bad_option_values_name_their_key(options, key):
    with pytest.raises(SpecError) as err:
        make_cosmos(options, "libero")
    assert err.value.key == key


def test_aloha_chunk_does_not_fit_tiny_images():
    with pytest.raises(SpecError, match="action chunk needs 700") as err:
        make_cosmos({"config": "tiny", "device": "cpu"}, "aloha")  # 50 x 14 values > 16 * 4 * 4
    assert err.value.key == "image_size"


def test_unknown_env_family_is_rejected():
    with pytest.raises(SpecError, match="libero"):
        make_cosmos({"config": "tiny"}, "metaworld")


def test_with_settings_forms_share_the_network_and_the_image_threads(policy):
    """A replica or planner builds with_settings forms per request kind: none may start a thread pool of its own."""
    forms = [policy.with_settings(return_latents=True), policy.with_settings(pad_to=2).with_settings(return_latents=True)]
    assert all(form.network is policy.network and form._image_threads is policy._image_threads for form in forms)
    assert [len(form.predict([_observation(0)], [1])) for form in forms] == [1, 1]
