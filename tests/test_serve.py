"""`robofleet serve`: real clients (openpi-client, the reference's requests + json_numpy) against a real
server on 127.0.0.1, in front of a real PolicyReplica (the `random` policy on CPU): in the server's
process ([serving] replicas = 0, the default) and, where it matters, as a Ray actor (replicas = 1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import requests

from robofleet.platform.serve import PolicyServer, RunningServer, ServeOptions, start_server
from robofleet.platform.spec import spec_from_dict
from robofleet.policies.remote.wire import dumps_json, pack_msgpack
from robofleet.policies.simple import RandomPolicy
from tests.conftest import served, small_spec

websockets_sync = pytest.importorskip("websockets.sync.client")
SEED = 7  # small_spec's seed: requests without one use it


def image(side: int = 224) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)


def openpi_request(side: int = 224, **extra) -> dict:
    """An element as openpi's examples/libero/main.py builds it."""
    return {"observation/image": image(side), "observation/wrist_image": image(side),
            "observation/state": np.zeros(8), "prompt": "pick up the ketchup", **extra}


def act_request(side: int = 64) -> dict:
    return {"primary_image": image(side), "wrist_image": image(side), "proprio": np.zeros(9, np.float32),
            "task_description": "pick up the ketchup"}


def expected_actions(seed: int) -> np.ndarray:
    return RandomPolicy(chunk_size=4).predict([None], [seed])[0].actions


def serve_spec(replicas: int, **serving):
    return spec_from_dict(small_spec(env={**small_spec()["env"], "render_cameras": True},
                                     serving={"replicas": replicas, "max_batch": 8, "max_wait_ms": 5.0,
                                              "cpus_per_replica": 0.5, **serving}))


@pytest.fixture(scope="module")
def server():
    """The default: the policy in the server's process (no Ray)."""
    yield from served(None, serve_spec(0))


@pytest.fixture(scope="module")
def actor_server(ray_cluster):
    """The same policy as one PolicyReplica actor."""
    yield from served(ray_cluster, serve_spec(1))


@pytest.fixture(scope="module")
def strict(server):
    """The same replica behind a second server with an API key and a 200 kB message limit."""
    options = ServeOptions(port=0, api_key="s3cret", max_message_bytes=200_000, max_connections=4)
    with RunningServer(PolicyServer(server.server.replicas, "libero", SEED, options)) as running:
        yield running


def ws_send(url: str, frame, **connect) -> object:
    """Send one raw frame on a fresh connection; the reply (bytes or text), or the close exception."""
    with websockets_sync.connect(url, compression=None, max_size=None, **connect) as ws:
        ws.recv(timeout=10)  # metadata
        ws.send(frame)
        try:
            return ws.recv(timeout=10)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc


@pytest.mark.parametrize("backend", ["server", "actor_server"])
def test_openpi_client_gets_metadata_and_the_policys_chunk(request, backend):
    server = request.getfixturevalue(backend)
    openpi = pytest.importorskip("openpi_client.websocket_client_policy")
    client = openpi.WebsocketClientPolicy(server.ws_url)
    metadata = client.get_server_metadata()
    assert metadata["server"] == "robofleet" and metadata["policy"] == "random" and metadata["chunk_size"] == 4
    assert metadata["backend"] == {"server": "in_process", "actor_server": "actors"}[backend]
    reply = client.infer(openpi_request())
    np.testing.assert_array_equal(reply["actions"], expected_actions(SEED))
    assert reply["server_timing"]["infer_ms"] > 0
    reply = client.infer(openpi_request(seed=123))  # robofleet's extension key: the request's own seed
    np.testing.assert_array_equal(reply["actions"], expected_actions(123))


def test_healthz_answers_ok_without_a_key(strict):
    assert requests.get(f"http://127.0.0.1:{strict.port}/healthz", timeout=5).text == "OK\n"


def test_the_reference_http_client_gets_actions(server):
    """cosmos-policy's run_aloha_eval.get_action_from_server: json_numpy.patch() then requests.post(json=obs),
    in its own process (patch() changes the json module globally); also the double-encoded form."""
    pytest.importorskip("json_numpy")
    script = f"""
import json, json_numpy, numpy as np, requests
json_numpy.patch()
rng = np.random.default_rng(0)
observation = {{"primary_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                "wrist_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                "proprio": np.zeros(9, np.float32), "task_description": "pick up the ketchup"}}
observation["return_all_query_results"] = False
response = requests.post("{server.act_url}", json=observation).json()
encoded = requests.post("{server.act_url}", json={{"encoded": json.dumps(observation)}}).json()
print(json.dumps({{"actions": np.asarray(response["actions"]).tolist(), "value": response["value_prediction"],
                   "encoded": np.asarray(json.loads(encoded)["actions"]).tolist()}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    np.testing.assert_allclose(out["actions"], expected_actions(SEED), rtol=0, atol=0)
    np.testing.assert_allclose(out["encoded"], expected_actions(SEED), rtol=0, atol=0)
    assert out["value"] is None


def test_the_double_encoded_form_with_plain_lists_is_accepted(server):
    """deploy.py's encoded form exists for clients without json_numpy: arrays arrive as nested lists."""
    plain = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in act_request().items()}
    reply = requests.post(server.act_url, json={"encoded": json.dumps(plain)}, timeout=10)
    assert reply.status_code == 200
    assert np.asarray(json.loads(json.loads(reply.text))["actions"]["__numpy__"] != "")


BAD_FRAMES = {
    "not msgpack": b"\xc1\xc1\xc1",
    "a text frame": "hello",
    "unknown key": pack_msgpack(openpi_request(extra_key=1)),
    "missing key": pack_msgpack({k: v for k, v in openpi_request().items() if k != "prompt"}),
    "float image": pack_msgpack(openpi_request() | {"observation/image": np.zeros((224, 224, 3), np.float32)}),
    "wrong state shape": pack_msgpack(openpi_request() | {"observation/state": np.zeros(7)}),
    "object dtype": pack_msgpack({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}),
    "short buffer": pack_msgpack({"observation/image": {b"__ndarray__": True, b"data": b"\0", b"dtype": "|u1",
                                                        b"shape": [224, 224, 3]}}),
    "not a map": pack_msgpack([1, 2, 3]),
    "a bad seed": pack_msgpack(openpi_request(seed=-1)),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_a_bad_frame_gets_an_error_frame_and_the_server_stays_up(server, case):
    reply = ws_send(server.ws_url, BAD_FRAMES[case])
    assert isinstance(reply, str) and reply.startswith("bad request"), reply
    assert server.server.replicas  # and the next client is served
    openpi = pytest.importorskip("openpi_client.websocket_client_policy")
    assert openpi.WebsocketClientPolicy(server.ws_url).infer(openpi_request())["actions"].shape == (4, 7)


def test_the_connection_stays_usable_after_a_bad_request(server):
    with websockets_sync.connect(server.ws_url, compression=None, max_size=None) as ws:
        ws.recv(timeout=10)
        ws.send(BAD_FRAMES["unknown key"])
        assert ws.recv(timeout=10).startswith("bad request")
        ws.send(pack_msgpack(openpi_request()))
        assert isinstance(ws.recv(timeout=10), bytes)


def test_a_frame_over_the_limit_closes_with_1009(strict):
    reply = ws_send(strict.ws_url, pack_msgpack(openpi_request(side=224)),
                    additional_headers={"Authorization": "Api-Key s3cret"})
    assert getattr(getattr(reply, "rcvd", None), "code", None) == 1009, reply


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400), (b"[" * 150_000 + b"]" * 150_000, 413), (b"[" * 50_000 + b"]" * 50_000, 400),
    (dumps_json(act_request() | {"extra": 1}).encode(), 400),
    (dumps_json(act_request() | {"proprio": np.zeros(3)}).encode(), 400),
    (json.dumps({"encoded": "{}", "more": 1}).encode(), 400),
    (json.dumps({k: v for k, v in act_request().items() if k != "proprio"} | {"primary_image": [[[300, 0, 0]]]},
                default=lambda a: a.tolist()).encode(), 400),
])
def test_a_bad_act_body_gets_an_error_and_the_server_stays_up(strict, body, status):
    headers = {"Authorization": "Api-Key s3cret", "Content-Type": "application/json"}
    reply = requests.post(strict.act_url, data=body, headers=headers, timeout=10)
    assert reply.status_code == status, reply.text
    good = requests.post(strict.act_url, data=dumps_json(act_request()), headers=headers, timeout=10)
    assert good.status_code == 200


def test_without_the_api_key_requests_are_refused(strict):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        with websockets_sync.connect(strict.ws_url):
            pass
    assert refused.value.response.status_code == 401
    assert requests.post(strict.act_url, data=dumps_json(act_request()), timeout=10).status_code == 401
    wrong = {"Authorization": "Api-Key wrong"}
    assert requests.post(strict.act_url, data=dumps_json(act_request()), headers=wrong, timeout=10).status_code == 401
    openpi = pytest.importorskip("openpi_client.websocket_client_policy")
    client = openpi.WebsocketClientPolicy(strict.ws_url, api_key="s3cret")
    assert client.infer(openpi_request(side=64))["actions"].shape == (4, 7)


def test_a_client_that_leaves_mid_request_does_not_disturb_others(server):
    ws = websockets_sync.connect(server.ws_url, compression=None, max_size=None).__enter__()
    ws.recv(timeout=10)
    ws.send(pack_msgpack(openpi_request()))
    ws.close()  # before the reply
    openpi = pytest.importorskip("openpi_client.websocket_client_policy")
    assert openpi.WebsocketClientPolicy(server.ws_url).infer(openpi_request())["actions"].shape == (4, 7)


@pytest.mark.parametrize("backend", ["server", "actor_server"])
def test_100_concurrent_clients_are_all_served_in_shared_batches(request, backend):
    server = request.getfixturevalue(backend)
    before = dict(server.server.batch_sizes)
    results, errors = [], []

    def client(i: int) -> None:
        try:
            with websockets_sync.connect(server.ws_url, compression=None, max_size=None, open_timeout=30) as ws:
                ws.recv(timeout=30)
                ws.send(pack_msgpack(openpi_request(side=32, seed=i)))
                results.append((i, ws.recv(timeout=60)))
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors and len(results) == 100
    from robofleet.policies.remote.wire import unpack_msgpack

    for i, reply in results:
        np.testing.assert_array_equal(unpack_msgpack(reply, 1 << 20)["actions"], expected_actions(i))
    after = server.server.batch_sizes
    assert sum(after.values()) - sum(before.values()) == 100
    sizes = {k for k, v in after.items() if v > before.get(k, 0)}
    assert max(sizes) > 1, "concurrent clients share batches"


def test_the_cli_serves_and_refuses_a_missing_key_variable(tmp_path):
    """`robofleet serve` end to end would start a second Ray; here its argument checks, before Ray starts."""
    from robofleet.jobs.serve_command import add_parser, cmd_serve
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    spec = tmp_path / "spec.toml"
    spec.write_text('seed = 1\n[env]\nfamily = "libero"\nsuite = "libero_object"\ntasks = [0]\ntrials = 1\n'
                    '[policy]\nname = "zero"\n')
    args = parser.parse_args(["serve", str(spec), "--api-key-env", "ROBOFLEET_TEST_UNSET_KEY"])
    os.environ.pop("ROBOFLEET_TEST_UNSET_KEY", None)
    from robofleet.platform.errors import SpecError

    with pytest.raises(SpecError, match="--api-key-env"):
        cmd_serve(args)
    with pytest.raises(SpecError, match="--port"):
        cmd_serve(parser.parse_args(["serve", str(spec), "--port", "70000"]))
