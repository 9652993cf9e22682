"""PolicyReplica: one policy on one GPU (or CPU) serving every env worker, with dynamic batching.

Requests from all workers queue on the replica's event loop; a batch is cut when `max_batch`
requests of the same kind wait or `max_wait_s` has passed since the oldest arrived, whichever comes
first, and runs in a single model thread while new requests keep queueing. Kinds: `predict`
(policy mode), and for world-model policies `imagine` ([s,a] -> [s',V]) and `value` ([s,a,s'] -> V).
Each request of those two carries its own denoising step count: a policy with `per_request_steps`
(Cosmos) runs a batch of mixed counts in one sampler, for any other only requests of one count share
a batch. Value requests with and without `mask_current_state_action` never share one. A request may
carry setting changes (`ReplicaClient.with_settings`, e.g. Cosmos's return_latents for the planner's
world model): the replica runs it on `policy.with_settings(**changes)` (built once per distinct
change), and only requests with the same changes share a batch.

Determinism (`[serving] deterministic`, the default): the replica serves the policy's
`batch_invariant(fixed_batch)` form (policies/contract.py; Cosmos: batch-invariant GEMMs on CUDA,
every call on fixed_batch rows on the CPU), so a request's numerics never depend on its batch-mates,
the batch size or the replica; per-request noise comes from its own seed. A policy without
`batch_invariant` computes each request on its own (the Policy contract), so it needs nothing. The
replica is the only place a served policy is warmed up, for every batch size up to max_batch, on the
thread that runs the batches. Clients (ReplicaClient) run the policy's `request_preparer` on their observations
before sending (Cosmos: the camera images' JPEG round trip and resize).

    replica = PolicyReplica.options(num_gpus=1).remote("cosmos", {...}, "libero", max_batch=16)
    prediction = ray.get(replica.predict.remote(obs, seed))
"""
from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import ray

from robofleet.envs.contract import Observation
from robofleet.policies.contract import Prediction, PreparedObservation


Settings = tuple[tuple[str, Any], ...]  # a policy's with_settings(**dict(settings)) changes, sorted by name
Kind = tuple[str, int | None, bool, Settings]  # (method, step count or None, value masking, settings):
# requests of one kind share a batch


@dataclass(eq=False)
class _Request:
    kind: Kind
    args: tuple
    steps: int | None  # denoising steps of this request (None: the policy's default)
    seed: int
    future: asyncio.Future
    arrived: float


@ray.remote
class PolicyReplica:
    """An async Ray actor holding one Policy. Resources (num_gpus, num_cpus) come from `.options()`."""

    def __init__(self, policy_name: str, options: Mapping[str, Any], env_family: str, max_batch: int = 8,
                 max_wait_s: float = 0.005, fixed_batch: int | None = None, replica_index: int = 0):
        from robofleet.policies.registry import make_policy

        started = time.perf_counter()
        # Built, compiled and warmed up on the thread that will run every batch: CUDA-graph trees
        # are kept per thread, so graphs recorded on another thread would be recorded again.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        policy = self._model_thread.submit(make_policy, policy_name, options, env_family).result()
        if fixed_batch is not None and hasattr(policy, "batch_invariant"):
            policy = self._model_thread.submit(policy.batch_invariant, fixed_batch).result()
        if hasattr(policy, "warm_up"):  # before the first request, every batch size it may see
            self._model_thread.submit(policy.warm_up, list(range(1, max_batch + 1))).result()
        self.policy = policy
        self.load_s = time.perf_counter() - started
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.fixed_batch = fixed_batch
        self.replica_index = replica_index
        self._mixed_steps = bool(getattr(policy, "per_request_steps", False))
        self._queue: list[_Request] = []
        self._in_model = 0  # requests of the batch the model thread is running now
        self._wakeup: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._batch_sizes: Counter[int] = Counter()
        self._model_s: list[float] = []
        self._phase_s: dict[str, tuple[float, int]] = {}  # stats key -> (sum of seconds, batches)
        self._queue_s: list[float] = []
        self._prepared_by_clients = 0
        self._variants: dict[Settings, Any] = {(): policy}  # with_settings forms, built on first use

    async def ready(self) -> dict[str, Any]:
        """Load facts: seconds to build the policy, pid, visible GPUs."""
        return {"load_s": self.load_s, "pid": os.getpid(), "replica": self.replica_index,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "chunk_size": getattr(self.policy, "chunk_size", None)}

    async def request_preparer(self) -> Any:
        """The policy's per-observation CPU work for clients to run (None if it has none)."""
        return getattr(self.policy, "request_preparer", None)

    async def predict(self, obs: Observation, seed: int, settings: Settings = ()) -> Prediction:
        """One policy request; resolved when its batch has run. Stats: queue_s, model_s, batch_size, network_rows, replica.
        `settings`: with_settings changes for this request (see the module docstring)."""
        return await self._submit("predict", (obs,), seed, settings=settings)

    async def imagine(self, obs: Observation, actions: Any, seed: int, num_steps: int | None = None,
                      settings: Settings = ()) -> Any:
        """World model: the future state and value after executing `actions` (K, d_act) from `obs`
        (or a proposal's Prediction carrying its latents), with `num_steps` evaluations."""
        return await self._submit("imagine", (obs, actions), seed, num_steps, settings=settings)

    async def value(self, obs: Observation, actions: np.ndarray, future: Any, seed: int,
                    num_steps: int | None = None, mask_current_state_action: bool = False,
                    settings: Settings = ()) -> Any:
        """Value function: V in [0, 1] of `future` reached by `actions` from `obs`, with `num_steps`
        evaluations; masking as the policy's `value` takes it."""
        return await self._submit("value", (obs, actions, future), seed, num_steps, mask_current_state_action,
                                  settings)

    async def _submit(self, method: str, args: tuple, seed: int, steps: int | None = None, mask: bool = False,
                      settings: Settings = ()) -> Any:
        if self._loop_task is None:
            self._wakeup = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop())
        future = asyncio.get_running_loop().create_future()
        self._prepared_by_clients += isinstance(args[0], PreparedObservation)
        kind = (method, None if self._mixed_steps else steps, bool(mask), tuple(settings))
        self._queue.append(_Request(kind, args, steps, int(seed), future, time.perf_counter()))
        self._wakeup.set()
        return await future

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            kind = self._queue[0].kind
            deadline = self._queue[0].arrived + self.max_wait_s
            while self._count(kind) < self.max_batch and time.perf_counter() < deadline:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, deadline - time.perf_counter()))
                except asyncio.TimeoutError:
                    break
            batch = [r for r in self._queue if r.kind == kind][: self.max_batch]
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
            cut = time.perf_counter()
            self._in_model = len(batch)
            try:
                results, model_s = await loop.run_in_executor(self._model_thread, self._run_batch, kind, batch)
            except Exception as exc:  # noqa: BLE001 - the requesters get the error, the loop lives on
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            finally:
                self._in_model = 0
            self._batch_sizes[len(batch)] += 1
            self._model_s.append(model_s)
            self._record_phases(results)
            for r, result in zip(batch, results):
                self._queue_s.append(cut - r.arrived)
                if isinstance(result, Prediction):
                    # batch_size: the requests served together; network_rows: the rows of the policy's
                    # network calls (its own batch_size stat: fixed_batch when deterministic)
                    stats = {**result.stats, "queue_s": cut - r.arrived, "model_s": model_s,
                             "network_rows": result.stats.get("batch_size", len(batch)),
                             "batch_size": len(batch), "replica": self.replica_index}
                    result = replace(result, stats=stats)
                if not r.future.done():
                    r.future.set_result(result)

    def _record_phases(self, results: list[Any]) -> None:
        """Add one batch's per-phase seconds (a policy's `seconds_*` / `gpu_seconds_*` stats, the same
        on every result of the batch) to the running sums."""
        first = next((r for r in results if isinstance(r, Prediction)), None)
        if first is None:
            return
        for key, value in first.stats.items():
            if key.startswith(("seconds_", "gpu_seconds_")):
                total, count = self._phase_s.get(key, (0.0, 0))
                self._phase_s[key] = (total + float(value), count + 1)

    def _count(self, kind: Kind) -> int:
        return sum(1 for r in self._queue if r.kind == kind)

    def _run_batch(self, kind: Kind, batch: list[_Request]) -> tuple[list[Any], float]:
        columns = [list(c) for c in zip(*(r.args for r in batch))]
        seeds = [r.seed for r in batch]
        method, steps, mask, settings = kind
        policy = self._variant(settings)
        started = time.perf_counter()
        if method == "predict":
            results = policy.predict(columns[0], seeds)
        else:
            kwargs: dict[str, Any] = {"num_steps": [r.steps for r in batch] if self._mixed_steps else steps}
            if mask:
                kwargs["mask_current_state_action"] = True
            results = getattr(policy, method)(*columns, seeds, **kwargs)
        _synchronize()
        return list(results), time.perf_counter() - started

    def _variant(self, settings: Settings) -> Any:
        """The served policy with `settings` applied (the same network; built once per distinct change)."""
        if settings not in self._variants:
            with_settings = getattr(self.policy, "with_settings", None)
            if not callable(with_settings):
                raise TypeError(f"{type(self.policy).__name__} has no with_settings(): a request asked for "
                                f"{dict(settings)}")
            self._variants[settings] = with_settings(**dict(settings))
        return self._variants[settings]

    async def pending(self) -> int:
        """Requests accepted and not yet answered: queued, or in the batch the model is running."""
        return len(self._queue) + self._in_model

    async def stats(self) -> dict[str, Any]:
        """Serving figures since this process started (a restarted replica starts again from zero):
        batch-size histogram, model time per batch, queue wait, GPU memory; `restarted` is True when
        Ray restarted this replica after its process died."""
        return {
            "replica": self.replica_index,
            "pid": os.getpid(),
            "restarted": _restarted(),
            "load_s": self.load_s,
            "batches": sum(self._batch_sizes.values()),
            "requests": len(self._queue_s),
            "requests_prepared_by_clients": self._prepared_by_clients,
            "batch_size_histogram": {str(k): v for k, v in sorted(self._batch_sizes.items())},
            "model_s_per_batch_mean": float(np.mean(self._model_s)) if self._model_s else 0.0,
            "model_s_total": float(np.sum(self._model_s)),
            "queue_s_mean": float(np.mean(self._queue_s)) if self._queue_s else 0.0,
            "queue_s_p99": float(np.percentile(self._queue_s, 99)) if self._queue_s else 0.0,
            # per batch, by phase: host clock (seconds_*) and, on CUDA, the GPU timeline (gpu_seconds_*)
            "phase_s_per_batch_mean": {key: total / count for key, (total, count) in sorted(self._phase_s.items())},
            "gpu_peak_memory_gb": _gpu_peak_memory_gb(),
        }


def _restarted() -> bool:
    """Whether Ray restarted this actor after its process died (False when not running as an actor,
    e.g. inside `robofleet serve`'s own process)."""
    context = ray.get_runtime_context()
    return context.worker.mode == ray.WORKER_MODE and bool(context.was_current_actor_reconstructed)


def _synchronize() -> None:
    """Wait for queued GPU work so that model time is real (no-op without CUDA)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def _gpu_peak_memory_gb() -> float | None:
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


class ReplicaClient:
    """The Policy contract (plus `imagine`/`value`) on top of replica handles, used in EnvWorkers.

    Requests go round-robin across replicas starting at the worker's index, all sent before any is
    awaited (a batch of N proposals spreads over the replicas at once); which replica serves a
    request never changes its result in deterministic mode. A request whose replica died is retried
    on the next one (Ray also restarts the replica and retries its calls).

    preparer: the policy's `request_preparer` (from `PolicyReplica.request_preparer`), run here on
    every observation before it is sent, so that the replica's process only feeds its GPU.
    `imagine` / `value` take one step count for all requests or one per request (`per_request_steps`):
    a planner sends a whole ensemble stage in one call and the replicas batch it. `with_settings(**changes)`
    is a client whose requests the replicas run on `policy.with_settings(**changes)` (the planner asks
    Cosmos for return_latents this way, in a replica as in-process).
    """

    per_request_steps = True

    def __init__(self, replicas: list[Any], chunk_size: int | None, worker_index: int = 0,
                 preparer: Callable[[Observation], Observation] | None = None):
        if not replicas:
            raise ValueError("ReplicaClient needs at least one replica")
        self.replicas = replicas
        self.chunk_size = chunk_size
        self.preparer = preparer
        self._next = worker_index % len(replicas)
        self._settings: Settings = ()

    def with_settings(self, **changes: Any) -> ReplicaClient:
        """A client on the same replicas whose requests run on the served policy's
        `with_settings(**changes)` (on top of this client's own changes)."""
        client = ReplicaClient(self.replicas, self.chunk_size, preparer=self.preparer)
        client._next = self._next
        client._settings = tuple(sorted({**dict(self._settings), **changes}.items()))
        return client

    def predict(self, observations: list[Observation], seeds: list[int]) -> list[Prediction]:
        return self._fan_out("predict", list(zip(self._prepare(observations))), seeds, [{}] * len(seeds))

    def imagine(self, observations: list[Observation], actions: list[Any], seeds: list[int],
                num_steps: int | Sequence[int] | None = None) -> list[Any]:
        args = list(zip(self._prepare(observations), actions))
        return self._fan_out("imagine", args, seeds, [{"num_steps": n} for n in steps_per_request(num_steps, len(seeds))])

    def value(self, observations: list[Observation], actions: list[np.ndarray], futures: list[Any],
              seeds: list[int], num_steps: int | Sequence[int] | None = None,
              mask_current_state_action: bool = False) -> list[Any]:
        args = list(zip(self._prepare(observations), actions, futures))
        kwargs = [{"num_steps": n, "mask_current_state_action": mask_current_state_action}
                  for n in steps_per_request(num_steps, len(seeds))]
        return self._fan_out("value", args, seeds, kwargs)

    def _prepare(self, observations: list[Observation]) -> list[Observation]:
        return prepare_each_once(self.preparer, observations)

    def _fan_out(self, method: str, args: list[tuple], seeds: list[int], kwargs: list[dict[str, Any]]) -> list[Any]:
        sent = []
        if self._settings:
            kwargs = [{**kw, "settings": self._settings} for kw in kwargs]
        for a, seed, kw in zip(args, seeds, kwargs):
            index = self._next
            self._next = (self._next + 1) % len(self.replicas)
            sent.append((a, seed, kw, index, getattr(self.replicas[index], method).remote(*a, seed, **kw)))
        return [self._get_with_failover(method, a, seed, index, ref, kw) for a, seed, kw, index, ref in sent]

    def _get_with_failover(self, method: str, args: tuple, seed: int, index: int, ref: Any,
                           kwargs: dict[str, Any]) -> Any:
        from ray.exceptions import RayActorError

        for attempt in range(len(self.replicas)):
            try:
                return ray.get(ref)
            except RayActorError:
                if attempt == len(self.replicas) - 1:
                    raise
                index = (index + 1) % len(self.replicas)
                ref = getattr(self.replicas[index], method).remote(*args, seed, **kwargs)
        raise AssertionError("unreachable")

    def reset(self) -> None:
        pass


def prepare_each_once(preparer: Callable[[Observation], Observation] | None,
                      observations: Sequence[Observation]) -> list[Observation]:
    """`preparer` run once per distinct observation (best-of-N sends one observation N times); the
    observations as they are without a preparer."""
    if preparer is None:
        return list(observations)
    prepared: dict[int, Observation] = {}
    for obs in observations:
        if id(obs) not in prepared:
            prepared[id(obs)] = preparer(obs)
    return [prepared[id(obs)] for obs in observations]


def steps_per_request(num_steps: int | Sequence[int] | None, count: int) -> list[int | None]:
    """One step count (or None: the policy's default) per request."""
    if num_steps is None or isinstance(num_steps, (int, np.integer)):
        return [None if num_steps is None else int(num_steps)] * count
    steps = [int(n) for n in num_steps]
    if len(steps) != count:
        raise ValueError(f"{count} requests but {len(steps)} step counts")
    return steps
