"""Policy replicas with dynamic batching, on real Ray and real LIBERO, with the tiny Cosmos Policy."""
from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from robofleet.envs.contract import Observation
from robofleet.platform.spec import spec_from_dict
from robofleet.platform.runner import run
from tests.conftest import small_spec

IDENTITY = ("episode_id", "success", "steps", "queries", "final_state", "error")


def serving_spec(workers: int, replicas: int, deterministic: bool = True, max_wait_ms: float = 20.0) -> dict:
    """2 episodes of 4 steps, 2 chunks of 2 steps each; max_wait_ms changes when batches are cut,
    never a deterministic run's results (it is not part of the spec's identity)."""
    return small_spec(
        env={**small_spec()["env"], "render_cameras": True, "trials": 2, "max_steps": 4},
        policy={"name": "cosmos", "config": "tiny", "open_loop_steps": 2, "device": "cpu"},
        serving={"replicas": replicas, "max_batch": 2, "max_wait_ms": max_wait_ms, "deterministic": deterministic,
                 "cpus_per_replica": 0.25},
        run={"workers": workers, "cpus_per_worker": 0.5},
    )


def identity(out) -> list[tuple[str, ...]]:
    with (out / "episodes.csv").open() as f:
        return sorted(tuple(r[k] for k in IDENTITY) for r in csv.DictReader(f))


@pytest.fixture(scope="module")
def undisturbed(ray_cluster, tmp_path_factory):
    """One worker, one replica, deterministic: the reference the other runs must reproduce."""
    out = tmp_path_factory.mktemp("undisturbed")
    summary = run(spec_from_dict(serving_spec(workers=1, replicas=1)), out, progress=False)
    assert summary["overall"]["episodes"] == 2 and summary["overall"]["errors"] == 0
    assert all(r[2] == "4" and r[3] == "2" for r in identity(out)), "2 chunks of 2 steps each"
    assert summary["figures"]["replicas"][0]["requests"] == 4
    assert summary["figures"]["replicas"][0]["requests_prepared_by_clients"] == 4, "workers prepare the images"
    return out


def test_results_do_not_depend_on_worker_or_replica_count(undisturbed, tmp_path):
    two = run(spec_from_dict(serving_spec(workers=2, replicas=2)), tmp_path, progress=False)
    assert two["overall"]["errors"] == 0
    assert identity(tmp_path) == identity(undisturbed)
    assert len(two["figures"]["replicas"]) == 2
    assert sum(r["requests"] for r in two["figures"]["replicas"]) == 4


def test_batches_form_when_workers_ask_together(ray_cluster, tmp_path):
    summary = run(spec_from_dict(serving_spec(workers=2, replicas=1, deterministic=False, max_wait_ms=2000.0)),
                  tmp_path, progress=False)
    histogram = summary["figures"]["replicas"][0]["batch_size_histogram"]
    assert any(int(size) > 1 for size in histogram), histogram
    assert summary["figures"]["this_invocation"]["chunks_per_s"] > 0
    replica = summary["figures"]["replicas"][0]
    phases = replica["phase_s_per_batch_mean"]  # where a batch's model time goes (host clock on the CPU)
    assert {"seconds_vae_encode", "seconds_dit", "seconds_preprocess"} <= set(phases), phases
    assert all(value > 0 for value in phases.values()) and not any(k.startswith("gpu_") for k in phases)
    assert sum(phases.values()) <= replica["model_s_per_batch_mean"] * 1.01
    with (tmp_path / "episodes.csv").open() as f:
        assert all(float(r["model_s"]) > 0 for r in csv.DictReader(f)), "per-request model time is recorded"


def test_a_replica_killed_with_a_request_pending_restarts_and_the_run_matches_an_undisturbed_one(
        undisturbed, ray_cluster, tmp_path, monkeypatch):
    import robofleet.platform.replica_fleet as replica_fleet

    ray = ray_cluster
    handles: list = []
    start = replica_fleet.start_replicas
    monkeypatch.setattr(replica_fleet, "start_replicas", lambda spec: handles.extend(start(spec)) or list(handles))
    # A batch waits up to 1 s for a batch-mate that never comes (one worker): a wide window to kill in.
    spec = spec_from_dict(serving_spec(workers=1, replicas=1, max_wait_ms=1000.0))
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run(spec, tmp_path, progress=False)))
    thread.start()
    deadline = time.monotonic() + 180
    while not handles:
        assert time.monotonic() < deadline and thread.is_alive(), "the replica started"
        time.sleep(0.05)
    replica = handles[0]
    victim = ray.get(replica.ready.remote())["pid"]
    while ray.get(replica.pending.remote()) == 0:
        assert time.monotonic() < deadline and thread.is_alive(), "a request reached the replica"
        time.sleep(0.02)
    served_before = ray.get(replica.stats.remote())["requests"]
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()

    assert identity(tmp_path) == identity(undisturbed), "same episodes, same results, none twice"
    stats = result["figures"]["replicas"][0]
    assert stats["restarted"] and stats["pid"] != victim
    assert stats["requests"] == 4 - served_before, "the pending request was answered by the restarted replica"
    assert result["overall"]["errors"] == 0


def _image_obs(rng: np.random.Generator) -> Observation:
    images = {k: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for k in ("agentview", "robot0_eye_in_hand")}
    return Observation(images=images, proprio=rng.normal(size=9).astype(np.float32),
                       instruction="pick up the alphabet soup and place it in the basket")


def test_fixed_batch_makes_a_request_bitwise_independent_of_batch_mates_batch_size_and_replica(ray_cluster):
    """Issue 21's property on CPU: one request, served alone and inside batches of 3, 7 and 16 whose other
    requests differ every time, on two replicas with fixed_batch = 4 (so the batches run as 1, 1, 2 and 4
    network calls, the last one padded): the same action chunk, bit for bit."""
    from robofleet.policies.replica import PolicyReplica

    ray = ray_cluster
    replicas = [PolicyReplica.options(num_cpus=0.25).remote("cosmos", {"config": "tiny", "device": "cpu"}, "libero",
                                                            max_batch=16, max_wait_s=1.0, fixed_batch=4,
                                                            replica_index=i) for i in range(2)]
    rng = np.random.default_rng(0)
    target = _image_obs(rng)
    try:
        answers = []
        for replica, size in ((replicas[0], 1), (replicas[0], 7), (replicas[1], 16), (replicas[1], 3)):
            position = int(rng.integers(size))
            refs = [replica.predict.remote(_image_obs(rng), 100 + i) for i in range(position)]
            refs.append(replica.predict.remote(target, 11))
            refs += [replica.predict.remote(_image_obs(rng), 200 + i) for i in range(size - position - 1)]
            prediction = ray.get(refs)[position]
            assert prediction.stats["batch_size"] == size, "the requests were served as one batch"
            assert prediction.stats["network_rows"] == 4, "every network call ran on fixed_batch rows"
            answers.append(prediction.actions)
        assert all(np.array_equal(answers[0], other) for other in answers[1:])
        preparer = ray.get(replicas[0].request_preparer.remote())
        prepared = ray.get(replicas[0].predict.remote(preparer(target), 11))
        assert np.array_equal(answers[0], prepared.actions), "images prepared by the client: the same result"
        other = ray.get(replicas[0].predict.remote(target, 12))
        assert not np.array_equal(answers[0], other.actions), "the seed reaches the network"
    finally:
        for replica in replicas:
            ray.kill(replica)


def test_mixed_step_counts_share_one_batch_and_equal_each_request_alone(ray_cluster):
    """World-model requests of 1, 2 and 3 denoising steps reach a Cosmos replica together: one batch (the
    policy's per-request step counts), each result equal to the request served on its own."""
    from robofleet.policies.replica import PolicyReplica

    ray = ray_cluster
    replica = PolicyReplica.options(num_cpus=0.25).remote("cosmos", {"config": "tiny", "device": "cpu"}, "libero",
                                                          max_batch=3, max_wait_s=1.0, fixed_batch=2)
    rng = np.random.default_rng(1)
    obs = _image_obs(rng)
    chunk = rng.uniform(-1, 1, (16, 7)).astype(np.float32)
    try:
        together = ray.get([replica.imagine.remote(obs, chunk, 5, num_steps=n) for n in (1, 2, 3)])
        assert [p.stats["batch_size"] for p in together] == [3, 3, 3]
        for steps, batched in zip((1, 2, 3), together):
            alone = ray.get(replica.imagine.remote(obs, chunk, 5, num_steps=steps))
            assert alone.stats["batch_size"] == 1
            assert np.array_equal(alone.future_proprio, batched.future_proprio) and alone.value == batched.value
        assert len({float(p.value) for p in together}) > 1 or not np.array_equal(
            together[0].future_proprio, together[2].future_proprio), "the step counts were applied"
    finally:
        ray.kill(replica)


def test_replica_stats_are_json(ray_cluster):
    from robofleet.policies.replica import PolicyReplica

    ray = ray_cluster
    replica = PolicyReplica.options(num_cpus=0.25).remote("zero", {}, "libero")
    ray.get(replica.predict.remote(Observation(images={}, proprio=np.zeros(9, np.float32), instruction=""), 0))
    stats = ray.get(replica.stats.remote())
    assert json.loads(json.dumps(stats))["batch_size_histogram"] == {"1": 1}
    ray.kill(replica)


@pytest.mark.parametrize("key, value", [("replicas", -1), ("max_batch", 0), ("colour", 1)])
def test_bad_serving_options_are_named(key, value):
    from robofleet.platform.errors import SpecError

    spec = serving_spec(1, 1)
    spec["serving"] = {**spec["serving"], key: value}
    with pytest.raises(SpecError, match=f"serving.{key}"):
        spec_from_dict(spec)
