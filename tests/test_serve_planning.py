"""`robofleet serve` with `[planner] name = "best_of_n"`: each request is answered with the planner's chosen
chunk, over both protocols, from the tiny Cosmos policy on CPU (real clients, real server on 127.0.0.1)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import requests

from robofleet.platform.errors import SpecError
from robofleet.platform.serve import check_servable
from robofleet.platform.spec import spec_from_dict
from robofleet.policies.remote.wire import dumps_json, loads_json, pack_msgpack, unpack_msgpack
from tests.conftest import served, small_spec

websockets_sync = pytest.importorskip("websockets.sync.client")
SEED = 7
N = 3
PLANNER = {"name": "best_of_n", "n": N, "scorer": "model", "aggregation": "average", "future_steps": [1],
           "value_steps": [1, 2]}
# protocol "reference" (LIBERO's default): the world model conditions on each proposal's latent sample
COSMOS = {"name": "cosmos", "config": "tiny", "device": "cpu", "return_latents": True}


def plan_spec(replicas: int, planner: dict | None = None, **serving) -> object:
    return spec_from_dict(small_spec(env={**small_spec()["env"], "render_cameras": True}, policy=COSMOS,
                                     planner=planner or PLANNER,
                                     serving={"replicas": replicas, "max_batch": 8, "max_wait_ms": 0.0,
                                              "cpus_per_replica": 0.5, **serving}))


def act_request(seed: int | None = None, **extra) -> dict:
    rng = np.random.default_rng(3)
    message = {"primary_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
               "wrist_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
               "proprio": rng.normal(scale=0.1, size=9).astype(np.float32),
               "task_description": "put the bowl on the plate", **extra}
    if seed is not None:
        message["seed"] = seed
    return message


def openpi_request(seed: int) -> dict:
    rng = np.random.default_rng(4)
    return {"observation/image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "observation/state": np.zeros(8), "prompt": "put the bowl on the plate", "seed": seed}


def post(url: str, message: dict) -> dict:
    reply = requests.post(url, data=dumps_json(message), headers={"Content-Type": "application/json"}, timeout=120)
    assert reply.status_code == 200, reply.text
    return loads_json(reply.content, 1 << 30)


@pytest.fixture(scope="module")
def planned():
    """best_of_n over the policy in the server's process, no batching window."""
    yield from served(None, plan_spec(0))


@pytest.fixture(scope="module")
def planned_actors(ray_cluster):
    """best_of_n over two PolicyReplica actors, as the episode host runs it."""
    yield from served(ray_cluster, plan_spec(2, max_wait_ms=20.0))


def test_openpi_client_gets_the_chosen_chunk_and_the_plans_scores(planned):
    openpi = pytest.importorskip("openpi_client.websocket_client_policy")
    client = openpi.WebsocketClientPolicy(planned.ws_url)
    assert client.get_server_metadata()["planner"] == "best_of_n"
    reply = client.infer(openpi_request(seed=11))
    plan = reply["plan"]
    assert plan["n"] == N and len(plan["scores"]) == N and np.shape(plan["values"]) == (N, 1, 2)
    assert plan["chosen"] == int(np.argmax(plan["scores"])) and plan["value"] == max(plan["scores"])
    assert plan["seeds"] == [11, 12, 13], "protocol reference: proposal i is seeded seed + i (deploy.py)"
    assert reply["actions"].shape == (16, 7) and reply["actions"].dtype == np.float32
    assert reply["server_timing"]["batch_size"] == N, "the N proposals ran as one batch"


def test_http_act_gets_the_chosen_value_and_with_return_all_every_proposal(planned):
    reply = post(planned.act_url, act_request(seed=5, return_all_query_results=True))
    plan = reply["plan"]
    assert len(reply["all_actions"]) == N and reply["all_value_predictions"] == plan["scores"]
    np.testing.assert_array_equal(reply["actions"], reply["all_actions"][plan["chosen"]])
    assert reply["value_prediction"] == reply["value_predictions"] == plan["scores"][plan["chosen"]]
    assert [a.shape for a in reply["all_actions"]] == [(16, 7)] * N
    assert len({a.tobytes() for a in reply["all_actions"]}) == N, "proposals differ by seed"
    short = post(planned.act_url, act_request(seed=5))
    assert "all_actions" not in short
    np.testing.assert_array_equal(short["actions"], reply["actions"])


def test_concurrent_planning_clients_share_batches_and_get_their_own_plans(planned):
    """Three clients at once: proposals of different clients meet in one batch (more than N rows), and
    each client's answer is the one it gets alone (deterministic serving)."""
    alone = {s: post(planned.act_url, act_request(seed=s)) for s in (21, 22, 23)}
    before = dict(planned.server.batch_sizes)
    together: dict[int, dict] = {}
    threads = [threading.Thread(target=lambda s=s: together.update({s: post(planned.act_url, act_request(seed=s))}))
               for s in alone]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(together) == sorted(alone)
    for s in alone:
        np.testing.assert_array_equal(together[s]["actions"], alone[s]["actions"])
        assert together[s]["plan"]["scores"] == alone[s]["plan"]["scores"]
    new = {k for k, v in planned.server.batch_sizes.items() if v > before.get(k, 0)}
    assert max(new) > N, f"proposals of concurrent clients share batches: {planned.server.batch_sizes}"


def test_a_served_plan_is_the_episode_hosts_plan(planned_actors):
    """Over the replica actors, the server's answer equals BestOfN.decide through ReplicaClient (what an
    EnvWorker runs) on the same observation and seed."""
    import ray

    from robofleet.envs.contract import Observation
    from robofleet.planners.registry import make_planner
    from robofleet.policies.replica import ReplicaClient

    handles = planned_actors.server.replicas.handles
    served_reply = post(planned_actors.act_url, act_request(seed=9))
    message = act_request()
    obs = Observation(images={"agentview": message["primary_image"], "robot0_eye_in_hand": message["wrist_image"]},
                      proprio=message["proprio"], instruction=message["task_description"])
    preparer = ray.get(handles[0].request_preparer.remote())
    planner = make_planner("best_of_n", plan_spec(2).planner.options, ReplicaClient(handles, None, preparer=preparer),
                           type("Family", (), {"family": "libero"})(), protocol="reference")
    decision = planner.decide(obs, 9)
    np.testing.assert_array_equal(served_reply["actions"], decision.prediction.actions)
    assert served_reply["plan"]["scores"] == decision.stats["scores"]
    assert served_reply["plan"]["chosen"] == decision.stats["chosen"]
    served_by = {r["replica"] for r in ray.get([h.stats.remote() for h in handles]) if r["requests"] > 0}
    assert served_by == {0, 1}, "the proposals fan out over both replicas"


def test_a_direct_server_without_window_still_batches_concurrent_clients():
    """max_wait_ms = 0: a lone request runs at once; requests that arrive while the model runs queue and
    run together next (continuous batching)."""
    for server in served(None, plan_spec(0, planner={"name": "direct"})):
        results: list[int] = []

        def client(i: int) -> None:
            with websockets_sync.connect(server.ws_url, compression=None, max_size=None) as ws:
                ws.recv(timeout=30)
                for k in range(3):
                    ws.send(pack_msgpack(openpi_request(seed=10 * i + k)))
                    results.append(unpack_msgpack(ws.recv(timeout=120), 1 << 24)["server_timing"]["batch_size"])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert len(results) == 18 and max(results) > 1, results


@pytest.mark.parametrize("planner, key", [
    ({**PLANNER, "scorer": "oracle", "future_steps": None, "value_steps": None, "aggregation": None}, "planner.scorer"),
    ({**PLANNER, "planning_policy": {"name": "cosmos", "config": "tiny"}}, "planner.planning_policy"),
])
def test_planners_that_need_what_a_server_lacks_are_refused(planner, key):
    planner = {k: v for k, v in planner.items() if v is not None}
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        check_servable(plan_spec(0, planner=planner))
