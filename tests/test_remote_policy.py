"""`policy = "remote"`: LIBERO episodes against a real `robofleet serve` server on 127.0.0.1 give the rows
of the same policy in-process; a dropped connection is retried once; a dead server is an error row."""
from __future__ import annotations

import csv
import socket

import numpy as np
import pytest

from robofleet.envs.contract import Observation
from robofleet.platform.errors import SpecError
from robofleet.platform.runner import run
from robofleet.platform.serve import PolicyServer, RunningServer, ServeOptions, start_server
from robofleet.platform.spec import spec_from_dict
from robofleet.policies.remote import LiberoHttpAct, LiberoOpenpi, RemotePolicyError, make_remote
from tests.conftest import served, small_spec

IDENTITY = ("episode_id", "success", "steps", "queries", "final_state", "error")
ENV = {**small_spec()["env"], "render_cameras": True, "trials": 2, "max_steps": 8}


def rows(out) -> list[dict[str, str]]:
    with (out / "episodes.csv").open() as f:
        return sorted(csv.DictReader(f), key=lambda r: r["episode_id"])


def observation(side: int = 64) -> Observation:
    rng = np.random.default_rng(1)
    quat = np.array([0.3, -0.2, 0.1, 0.9]) / np.linalg.norm([0.3, -0.2, 0.1, 0.9])
    proprio = np.concatenate([[0.02, -0.02], [0.1, 0.2, 0.9], quat]).astype(np.float32)
    images = {cam: rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for cam in ("agentview", "robot0_eye_in_hand")}
    return Observation(images=images, proprio=proprio, instruction="put the bowl on the plate")


@pytest.fixture(scope="module")
def server(ray_cluster):
    """The `random` policy (seeded per request), one deterministic replica."""
    spec = spec_from_dict(small_spec(env=ENV, protocol="robofleet",
                                     serving={"replicas": 1, "max_batch": 1, "deterministic": True,
                                              "cpus_per_replica": 0.5}))
    yield from served(ray_cluster, spec)


def test_the_openpi_adapter_sends_openpis_libero_keys_and_the_server_reads_them_back():
    obs = observation(side=224)
    message = LiberoOpenpi().request(obs)
    assert sorted(message) == sorted(LiberoOpenpi.keys)
    assert message["observation/state"].shape == (8,) and message["observation/image"].shape == (224, 224, 3)
    # openpi's example rotates the raw (upside-down) render by 180 degrees: our upright image mirrored left-right
    np.testing.assert_array_equal(message["observation/image"], obs.images["agentview"][:, ::-1])
    back, seed = LiberoOpenpi().observation(message)
    assert seed is None
    np.testing.assert_allclose(back.proprio, obs.proprio, atol=1e-6)
    np.testing.assert_array_equal(back.images["agentview"], obs.images["agentview"])
    assert back.instruction == obs.instruction


def test_the_openpi_adapter_resizes_with_padding_to_224():
    message = LiberoOpenpi().request(Observation(images={c: np.full((64, 128, 3), 200, np.uint8)
                                                         for c in ("agentview", "robot0_eye_in_hand")},
                                                 proprio=observation().proprio, instruction="x"))
    image = message["observation/wrist_image"]
    assert image.shape == (224, 224, 3) and image[0].max() == 0 and image[112].min() == 200


def test_the_http_act_adapter_sends_the_references_libero_keys_unchanged():
    obs = observation()
    message = LiberoHttpAct().request(obs, seed=5)
    assert sorted(message) == sorted(LiberoHttpAct.keys + ("seed",))
    back, seed = LiberoHttpAct().observation(message)
    assert seed == 5
    np.testing.assert_array_equal(back.proprio, obs.proprio)
    np.testing.assert_array_equal(back.images["robot0_eye_in_hand"], obs.images["robot0_eye_in_hand"])


@pytest.mark.slow
def test_remote_episodes_match_the_same_policy_in_process(server, tmp_path):
    """Deterministic: the `random` policy draws from each query's seed, which the client sends."""
    local = run(spec_from_dict(small_spec(env=ENV, protocol="robofleet")), tmp_path / "local", progress=False)
    remote_spec = small_spec(env=ENV, protocol="robofleet",
                             policy={"name": "remote", "url": server.ws_url, "protocol": "openpi", "send_seed": True})
    remote = run(spec_from_dict(remote_spec), tmp_path / "remote", progress=False)
    assert local["overall"]["errors"] == remote["overall"]["errors"] == 0
    a, b = rows(tmp_path / "local"), rows(tmp_path / "remote")
    assert [tuple(r[k] for k in IDENTITY) for r in a] == [tuple(r[k] for k in IDENTITY) for r in b]
    assert all(float(r["queue_s"]) + float(r["model_s"]) > 0 for r in b), "per-request latency reaches the rows"


@pytest.mark.parametrize("protocol", ["openpi", "http_act"])
def test_remote_predictions_equal_the_in_process_policys(server, protocol):
    from robofleet.policies.simple import RandomPolicy

    url = server.ws_url if protocol == "openpi" else server.act_url
    policy = make_remote({"url": url, "protocol": protocol, "send_seed": True}, "libero")
    seeds = [0, 1, 2**40 + 5]
    remote = policy.predict([observation()] * 3, seeds)
    local = RandomPolicy(chunk_size=4).predict([observation()] * 3, seeds)
    for r, lo in zip(remote, local):
        np.testing.assert_array_equal(r.actions, lo.actions)
        assert r.stats["remote_s"] >= r.stats["model_s"] > 0 and r.stats["batch_size"] == 1


def test_a_dropped_connection_is_reopened_and_retried_once(server):
    policy = make_remote({"url": server.ws_url, "protocol": "openpi", "send_seed": True}, "libero")
    first = policy.predict([observation()], [3])[0]
    assert first.stats["attempts"] == 1 and first.stats["remote_s"] > 0
    policy._connection._ws.close()  # the server or the network dropped it
    again = policy.predict([observation()], [3])[0]
    assert again.stats["attempts"] == 2
    np.testing.assert_array_equal(first.actions, again.actions)


@pytest.mark.slow
def test_a_server_that_never_answers_makes_the_episode_an_error_with_the_cause(ray_cluster, tmp_path):
    with socket.socket() as silent:  # accepts TCP connections (the validator's check) and never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        spec = small_spec(env={**ENV, "trials": 1},
                          policy={"name": "remote", "url": url, "protocol": "openpi", "timeout_s": 0.5})
        summary = run(spec_from_dict(spec), tmp_path, progress=False)
    assert summary["overall"]["errors"] == 1
    error = rows(tmp_path)[0]["error"]
    assert "RemotePolicyError" in error and "failed twice" in error and url in error


def test_an_error_answer_is_not_retried_and_names_the_servers_reason(server):
    policy = make_remote({"url": server.act_url, "protocol": "http_act"}, "libero")
    bad = Observation(images={c: np.zeros((4, 4, 3), np.uint8) for c in ("agentview", "robot0_eye_in_hand")},
                      proprio=observation().proprio, instruction="x")
    with pytest.raises(RemotePolicyError, match="image sides must be"):
        policy.predict([bad], [0])


def test_the_api_key_comes_from_the_named_variable(server, monkeypatch):
    options = ServeOptions(port=0, api_key="k3y")
    with RunningServer(PolicyServer(server.server.replicas, "libero", 7, options)) as keyed:
        policy = make_remote({"url": keyed.ws_url, "protocol": "openpi", "api_key_env": "REMOTE_KEY"}, "libero")
        monkeypatch.setenv("REMOTE_KEY", "wrong")
        with pytest.raises(RemotePolicyError, match="401"):
            policy.predict([observation()], [0])
        monkeypatch.setenv("REMOTE_KEY", "k3y")
        assert policy.predict([observation()], [0])[0].actions.shape == (4, 7)


@pytest.mark.parametrize("policy, key", [
    ({"name": "remote", "url": "http://127.0.0.1:1/act", "protocol": "openpi"}, "policy.url"),
    ({"name": "remote", "url": "ws://127.0.0.1:1", "protocol": "grpc"}, "policy.protocol"),
    ({"name": "remote", "url": "ws://127.0.0.1:1", "protocol": "openpi", "token": "x"}, "policy.token"),
    ({"name": "remote", "url": "http://h:1/act", "protocol": "http_act", "image_size": 224}, "policy.image_size"),
    ({"name": "remote", "url": "ws://h:1", "protocol": "openpi", "api_key_env": "not a name"}, "policy.api_key_env"),
])
def test_bad_remote_options_are_named(policy, key):
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        spec_from_dict(small_spec(env=ENV, policy=policy))


@pytest.mark.parametrize("options, message", [
    ({"url": "ws://h:1", "protocol": "openpi", "token": "x"},
     "policy.token: unknown option for policy 'remote'; allowed: url, protocol, api_key_env, send_seed, timeout_s, "
     "image_size, max_reply_mb"),
    ({"url": "ws://h:1"}, "policy.protocol: must be one of openpi, http_act, got None"),
    ({"url": 5, "protocol": "grpc"}, "policy.protocol: must be one of openpi, http_act, got 'grpc'"),  # protocol first
    ({"protocol": "http_act"}, "policy.url: None: protocol 'http_act' needs a http or https URL, "
                               "e.g. http://127.0.0.1:8000/act"),
    ({"url": "ws://[", "protocol": "openpi"}, "policy.url: 'ws://[': protocol 'openpi' needs a ws or wss URL, "
                                              "e.g. ws://127.0.0.1:8000"),
    ({"url": "ws://h:99999", "protocol": "openpi"}, "policy.url: 'ws://h:99999' has an invalid port"),
    ({"url": "ws://h", "protocol": "openpi", "api_key_env": 3}, "policy.api_key_env: must name an environment "
                                                                "variable, got 3"),
    ({"url": "ws://h", "protocol": "openpi", "send_seed": "yes"}, "policy.send_seed: must be true or false, got 'yes'"),
    ({"url": "ws://h", "protocol": "openpi", "timeout_s": 0}, "policy.timeout_s: must be a number in 0.001..3600, got 0"),
    ({"url": "ws://h", "protocol": "openpi", "image_size": 224.0},
     "policy.image_size: must be a number in 8..1024, got 224.0"),
    ({"url": "http://h/act", "protocol": "http_act", "image_size": 224, "max_reply_mb": True},  # the numbers first
     "policy.max_reply_mb: must be a number in 0.001..4096, got True"),
])
def test_remote_option_errors_name_the_key_the_value_and_the_fix(options, message):
    with pytest.raises(SpecError) as err:
        make_remote(options, "libero")
    assert str(err.value) == message


def test_remote_options_keep_their_defaults():
    options = make_remote({"url": "ws://h:1", "protocol": "openpi"}, "libero").options
    assert (options.api_key_env, options.send_seed, options.timeout_s, options.image_size, options.max_reply_mb) == \
        (None, False, 60.0, 224, 64.0)


def test_a_remote_policy_needs_camera_images():
    with pytest.raises(SpecError, match="env.render_cameras"):
        spec_from_dict(small_spec(policy={"name": "remote", "url": "ws://127.0.0.1:1", "protocol": "openpi"}))
