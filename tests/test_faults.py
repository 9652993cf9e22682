"""Faults: a SIGKILLed env worker mid-episode costs a retry, never a lost or doubled episode."""
from __future__ import annotations

import csv
import os
import signal
import threading
import time

import psutil

from robofleet.platform.runner import run
from robofleet.platform.spec import spec_from_dict
from tests.conftest import small_spec

IDENTITY = ("episode_id", "success", "steps", "queries", "final_state", "error")


def read_rows(path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def env_worker_processes() -> list[psutil.Process]:
    """EnvWorker processes of this test's own Ray cluster (descendants of this process), never others'."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith("ray::EnvWorker"):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def test_sigkilled_worker_mid_episode_is_replaced_and_the_episode_retried(ray_cluster, tmp_path):
    spec = spec_from_dict(small_spec(env={**small_spec()["env"], "trials": 3, "max_steps": 60},
                                     run={"workers": 1, "max_attempts": 2}))
    undisturbed = run(spec, tmp_path / "calm", progress=False)
    assert undisturbed["overall"]["errors"] == 0

    out = tmp_path / "killed"
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run(spec, out, progress=False)))
    thread.start()
    deadline = time.time() + 240
    while len(read_rows(out / "episodes.csv")) < 1 and time.time() < deadline:
        time.sleep(0.2)
    victims = [p for p in env_worker_processes() if p.is_running()]
    assert victims, "the env worker is running the second episode"
    for proc in victims:
        os.kill(proc.pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()

    rows = read_rows(out / "episodes.csv")
    assert len(rows) == 3 and len({r["episode_id"] for r in rows}) == 3, "every episode exactly once"
    assert sorted(r["attempts"] for r in rows) == ["1", "1", "2"]
    calm = sorted(tuple(r[k] for k in IDENTITY) for r in read_rows(tmp_path / "calm" / "episodes.csv"))
    assert sorted(tuple(r[k] for k in IDENTITY) for r in rows) == calm, "the retried episode ran from its start"
    assert result["overall"]["errors"] == 0


def test_a_worker_that_keeps_dying_is_recorded_as_an_error_with_its_cause(ray_cluster, tmp_path):
    spec = spec_from_dict(small_spec(env={**small_spec()["env"], "trials": 1, "max_steps": 600},
                                     run={"workers": 1, "max_attempts": 1}))
    out = tmp_path / "dead"
    thread = threading.Thread(target=lambda: run(spec, out, progress=False))
    thread.start()
    deadline = time.time() + 120
    killed = False
    while not killed and time.time() < deadline:
        for proc in env_worker_processes():
            if proc.cpu_times().user > 8.0:  # past imports (~3 s) and set-up: inside the episode
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
        time.sleep(0.2)
    thread.join(timeout=300)
    rows = read_rows(out / "episodes.csv")
    assert killed and len(rows) == 1
    assert rows[0]["success"] == "0" and rows[0]["error"].startswith("worker died 1 times")


# -- which ray.get failures the scheduler retries (unit level: no Ray cluster, no worker is killed) --------
class _Ref:
    """What a fake EnvWorker.run.remote returns: the episode's row, or the error ray.get raises."""

    def __init__(self, row, error):
        self.row, self.error = row, error


class _FakeRay:
    """ray.wait / ray.get over _Refs (the scheduler's only Ray calls besides the pool's)."""

    @staticmethod
    def wait(refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    @staticmethod
    def get(ref):
        if ref.error is not None:
            raise ref.error
        return ref.row


class _FakePool:
    """_WorkerPool's surface: workers whose run.remote raises the next scripted error, once each."""

    def __init__(self, errors):
        self.errors = list(errors)  # one per submission, in order; None: the episode finishes
        self.replaced: list[int] = []
        self.submitted: list[str] = []
        self.worker_packages: list[dict] = []
        self.workers = [self._worker(0)]

    def _worker(self, index):
        from types import SimpleNamespace

        def remote(episode, video):
            self.submitted.append(episode.episode_id)
            error = self.errors.pop(0) if self.errors else None
            row = {"success": 1, "steps": 3, "queries": 1, "error": "", "task": "t", "worker": index}
            return _Ref(row, error)

        return SimpleNamespace(run=SimpleNamespace(remote=remote))

    def replace(self, index):
        self.replaced.append(index)
        self.workers[index] = self._worker(index)
        return True

    def empty_slots(self):
        return []

    def grow(self):
        return []

    def close(self):
        pass


def _schedule_with(monkeypatch, tmp_path, errors, max_attempts=2, pool=None):
    """Run the real scheduling loop over 2 episodes on one fake worker; returns (pool, recorded rows)."""
    from types import SimpleNamespace

    from robofleet.platform import scheduler
    from robofleet.platform.episodes import expand_episodes
    from robofleet.platform.results import RunStore, read_rows

    spec = spec_from_dict(small_spec(run={"workers": 1, "max_attempts": max_attempts}))
    store = RunStore(tmp_path / "run", spec)
    pool = pool or _FakePool(errors)
    monkeypatch.setattr(scheduler, "ray", _FakeRay)
    monkeypatch.setattr(scheduler, "_WorkerPool", lambda *a, **k: pool)
    monkeypatch.setattr(scheduler, "_ReplicaWatch", lambda replicas: SimpleNamespace(check=lambda: None, every_s=1.0))
    todo = expand_episodes(spec)
    try:
        scheduler._schedule(spec, store, todo, 0, len(todo), 0, False, [], 1)
    finally:
        rows = read_rows(store.root)
    return pool, rows


def _ray_failures():
    from ray import exceptions as e

    return [e.RayActorError(), e.ActorDiedError(), e.NodeDiedError("node 10.0.0.2 died"),
            e.ObjectLostError("ab" * 14, None, ""), e.OwnerDiedError("ab" * 14, None, ""),
            e.WorkerCrashedError(), e.LocalRayletDiedError()]


def test_the_scheduler_retries_every_infrastructure_failure_the_planners_retry(monkeypatch, tmp_path):
    """One rule for "the machinery failed" (planners/retry.is_infrastructure_failure): a lost node, raylet
    or result object costs a retry on a new worker, as a dead actor does, instead of aborting the run."""
    from robofleet.planners.retry import is_infrastructure_failure

    for error in _ray_failures():
        assert is_infrastructure_failure(error), type(error).__name__
        pool, rows = _schedule_with(monkeypatch, tmp_path / type(error).__name__, [error])
        assert pool.replaced == [0], type(error).__name__
        assert len(rows) == 2 and len({r["episode_id"] for r in rows}) == 2, "every episode exactly once"
        assert sorted(r["attempts"] for r in rows) == ["1", "2"] and all(r["error"] == "" for r in rows)
        assert pool.submitted[0] == pool.submitted[1], "the failed episode ran again from its start"


def test_an_infrastructure_failure_on_every_attempt_is_an_error_row(monkeypatch, tmp_path):
    from ray.exceptions import NodeDiedError

    pool, rows = _schedule_with(monkeypatch, tmp_path, [NodeDiedError("gone")], max_attempts=1)
    assert pool.replaced == [0] and len(rows) == 2
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and failed[0]["error"].startswith("worker died 1 times") and failed[0]["success"] == "0"


def test_an_exception_of_the_workers_own_code_is_not_retried(monkeypatch, tmp_path):
    """A RayTaskError carries what EnvWorker.run raised: not infrastructure, even when Ray makes it an
    instance of the cause's class (a ConnectionError); it is neither retried nor turned into a row."""
    import pytest
    from ray.exceptions import RayTaskError

    for cause in (ValueError("bad shape"), ConnectionError("the policy's own socket")):
        error = RayTaskError("EnvWorker.run", "Traceback ...", cause).as_instanceof_cause()
        pool = _FakePool([error])
        with pytest.raises(type(cause)):
            _schedule_with(monkeypatch, tmp_path / type(cause).__name__, [], pool=pool)
        assert pool.replaced == [] and len(pool.submitted) == 1, "not retried"
        assert not (tmp_path / type(cause).__name__ / "run" / "episodes.csv").exists()
