"""`robofleet serve`: a spec's policy, or its best_of_n planner, over the openpi WebSocket and `POST /act`.

One asyncio HTTP server (aiohttp, which Ray's dashboard already brings) on one port:

    ws://HOST:PORT/         openpi: a msgpack metadata frame on connect, then one msgpack request ->
                            one msgpack reply ({"actions": (K, d_act) float32, "server_timing": {...}},
                            under a planner also "plan"); a bad request gets a text frame with the
                            reason and the connection stays open
    GET  /healthz           "OK" (openpi's health check)
    POST /act               json_numpy body in the reference's keys, or {"encoded": "<json>"}; the reply
                            is json_numpy ({"actions", "future_image_predictions", "value_prediction",
                            "value_predictions"}, with return_all_query_results "all_actions",
                            "all_future_image_predictions", "all_value_predictions"), for the encoded
                            form a JSON string of it (cosmos-policy deploy.py); 400 with {"error": reason}
                            for a bad request

Where the policy runs ([serving] replicas):
- 0 (the default): in this process, inside one PolicyReplica object (policies/replica.py, the same
  dynamic batching and batch-invariant form as the actors) that lives on the server's event loop:
  a request is decoded, awaited and answered without a Ray hop or a copy of its arrays.
- N >= 1: N PolicyReplica actors (Ray), requests round-robin; what `robofleet run` uses, for
  several GPUs or nodes, and restarts of a dead replica.
Either way requests from all clients meet in the replicas' dynamic batches; in deterministic mode
([serving] deterministic) each request's result depends only on its observation and seed. The seed
is the request's "seed" key (robofleet clients with `send_seed = true`) or else the spec's seed.
The batching window ([serving] max_wait_ms) holds a lone request back that long; for one robot at
a time set it to 0: batches then still form from the requests that queue while the model runs.

`[planner] name = "best_of_n"` (scorer "model"): each request is one `BestOfN.decide` (planners/),
run on a worker thread of the server over the same replicas as the episode host runs it: the N
proposals are sent together (spread over the replicas, batched there with other clients' requests),
then the world-model and value ensembles. The reply's actions are the chosen proposal's; its value
(`value_prediction`; openpi: plan["value"]) is the chosen proposal's score, and "plan" holds the
planner's stats (n, chosen, scores, seeds, scorer, aggregation, values N x F x V, latency_s, ...).
The oracle scorer needs a simulator and is refused, as is a separate planning_policy (not served yet).

Why PolicyReplicas behind aiohttp and not Ray Serve (benchmarks/serving_rayserve_compare.py,
BENCHMARKS.md): every Ray Serve request crosses its HTTP proxy actor and then its replica; the
in-process replica has neither hop (p50 3.1 vs 12.7 ms on the serving cost alone, 5-9x the
requests/s), one replica actor costs about what Ray Serve does, and with a model PolicyReplica's
batches fill better (1.4-1.8x Ray Serve's throughput with tiny Cosmos at 8-32 clients). It is also
the code `robofleet run` uses (deterministic fixed_batch, restarts, batch statistics), and Ray Serve
would add FastAPI, Starlette, uvicorn and OpenTelemetry to the install.
On CPU the in-process replica's torch threads share the server's cores and GIL: give torch fewer
threads than cores (OMP_NUM_THREADS), as Ray does for its actors, or use replicas = 1.

Security: binds 127.0.0.1 unless told otherwise; with an API key every request but /healthz must carry
`Authorization: Api-Key <key>` (compared in constant time); frames and bodies above `max_message_bytes`
are refused (WebSocket close 1009 / HTTP 413); arrays decode only as bool/int/float (no pickle);
at most `max_connections` WebSockets at once (HTTP 503 beyond).
"""
from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import socket
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from aiohttp import WSMsgType, web

from robofleet.envs.contract import Observation
from robofleet.platform.errors import SpecError
from robofleet.platform.spec import PlannerSpec, RunSpec
from robofleet.policies.contract import Prediction
from robofleet.policies.remote.adapters import ADAPTER_FAMILIES, ADAPTERS, Answer, adapter_for
from robofleet.policies.remote.wire import WireError, dumps_json, loads_json, pack_msgpack, unpack_msgpack
from robofleet.policies.replica import prepare_each_once, steps_per_request

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000  # openpi's default
MAX_MESSAGE_BYTES = 16 << 20  # two 1024 x 1024 RGB images fit; a LIBERO request is ~0.3 MB


@dataclass(frozen=True)
class ServeOptions:
    """How `robofleet serve` listens."""

    host: str = "127.0.0.1"  # loopback unless asked otherwise
    port: int = DEFAULT_PORT  # 0: a free port (the ready line says which)
    api_key: str | None = None  # required on every request but /healthz once set
    max_message_bytes: int = MAX_MESSAGE_BYTES  # per WebSocket frame / HTTP body
    max_connections: int = 256  # concurrent WebSockets
    max_concurrent_plans: int = 64  # planner decisions running at once (threads); more requests wait their turn


def check_servable(spec: RunSpec) -> None:
    """SpecError unless this spec can be served: an env family with adapters, a policy that is not remote,
    planner `direct` or `best_of_n` with the model scorer (no simulator here)."""
    if spec.env.family not in ADAPTER_FAMILIES:
        raise SpecError("env.family", f"robofleet serve speaks {list(ADAPTER_FAMILIES)} observations, "
                                      f"not {spec.env.family!r}")
    if spec.policy.name == "remote":
        raise SpecError("policy.name", "serving a remote policy would only forward requests: serve the policy itself")
    if spec.planner.name == "best_of_n":
        from robofleet.planners.options import BestOfNOptions

        opts = BestOfNOptions.from_dict(spec.planner.options)
        if opts.scorer != "model":
            raise SpecError("planner.scorer", f"{opts.scorer!r} scores proposals in the simulator; a served planner "
                                              "has none: use scorer 'model' (world model + value)")
        if opts.model.planning_policy:
            raise SpecError("planner.planning_policy", "a separate planning policy is not served yet: the served "
                                                       "planner scores with the acting policy's world model and value")
    elif spec.planner.name != "direct":
        raise SpecError("planner.name", f"robofleet serve serves planners 'direct' and 'best_of_n', not "
                                        f"{spec.planner.name!r}")


# -- where the policy runs ----------------------------------------------------------------------------
class ActorReplicas:
    """PolicyReplica actor handles ([serving] replicas >= 1), round-robin; requests travel through Ray."""

    kind = "actors"

    def __init__(self, handles: Sequence[Any]):
        if not handles:
            raise ValueError("ActorReplicas needs at least one replica")
        self.handles = list(handles)
        self._next = itertools.cycle(range(len(self.handles)))

    async def predict(self, obs: Observation, seed: int) -> Prediction:
        return await self.handles[next(self._next)].predict.remote(obs, seed)

    async def preparer(self) -> Callable[[Observation], Observation] | None:
        return await self.handles[0].request_preparer.remote()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing to bind: actor handles are awaited from any loop."""

    def planning_policy(self, preparer: Callable[[Observation], Observation] | None) -> Any:
        """What a planner on a worker thread calls: the episode host's ReplicaClient over the same actors."""
        from robofleet.policies.replica import ReplicaClient

        return ReplicaClient(self.handles, chunk_size=None, preparer=preparer)

    def close(self) -> None:
        import ray

        for handle in self.handles:
            ray.kill(handle)


class InProcessReplica:
    """One PolicyReplica object in this process ([serving] replicas = 0): the class behind the Ray actor,
    with its batching, built here, so a request costs no Ray hop and no copy of its arrays.

    Its batches run on the event loop of the first server that calls it (`bind`); another loop (a
    second server, a planner's thread) hands its requests to that loop.
    """

    kind = "in_process"

    def __init__(self, policy_name: str, options: Any, env_family: str, max_batch: int, max_wait_s: float,
                 fixed_batch: int | None):
        from robofleet.policies.replica import PolicyReplica

        self.replica = PolicyReplica.__ray_actor_class__(policy_name, options, env_family, max_batch=max_batch,
                                                         max_wait_s=max_wait_s, fixed_batch=fixed_batch, replica_index=0)
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is None or self.loop.is_closed():
            self.loop = loop

    async def _on_owner(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = getattr(self.replica, method)(*args, **kwargs)
        if asyncio.get_running_loop() is self.loop:
            return await call
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, self.loop))

    async def predict(self, obs: Observation, seed: int) -> Prediction:
        return await self._on_owner("predict", obs, seed)

    async def preparer(self) -> Callable[[Observation], Observation] | None:
        return await self.replica.request_preparer()

    def planning_policy(self, preparer: Callable[[Observation], Observation] | None) -> "LoopClient":
        return LoopClient(self, preparer)

    def close(self) -> None:
        """Nothing to stop: the policy lives as long as this process (its model thread idles)."""


class LoopClient:
    """The Policy contract (plus imagine/value) over an InProcessReplica, for a planner on a worker thread;
    ReplicaClient's twin (the same arguments, one step count per request or one for all).

    Each call's requests are submitted to the replica's loop together, so they share a batch (the N
    proposals of a best-of-N), and the thread waits for all of them. `preparer` as in ReplicaClient:
    each distinct observation is prepared once, here, before it is sent.
    """

    chunk_size = None  # whatever the policy returns
    per_request_steps = True  # a planner may send a whole ensemble stage in one call

    def __init__(self, replica: InProcessReplica, preparer: Callable[[Observation], Observation] | None):
        self.replica = replica
        self.preparer = preparer

    def predict(self, observations: Sequence[Observation], seeds: Sequence[int]) -> list[Prediction]:
        return self._call("predict", [(o,) for o in self._prepare(observations)], seeds, [{}] * len(seeds))

    def imagine(self, observations: Sequence[Observation], actions: Sequence[Any], seeds: Sequence[int],
                num_steps: int | Sequence[int] | None = None) -> list[Any]:
        kwargs = [{"num_steps": n} for n in steps_per_request(num_steps, len(seeds))]
        return self._call("imagine", list(zip(self._prepare(observations), actions)), seeds, kwargs)

    def value(self, observations: Sequence[Observation], actions: Sequence[np.ndarray], futures: Sequence[Any],
              seeds: Sequence[int], num_steps: int | Sequence[int] | None = None,
              mask_current_state_action: bool = False) -> list[Any]:
        mask = {"mask_current_state_action": True} if mask_current_state_action else {}
        kwargs = [{"num_steps": n, **mask} for n in steps_per_request(num_steps, len(seeds))]
        return self._call("value", list(zip(self._prepare(observations), actions, futures)), seeds, kwargs)

    def _prepare(self, observations: Sequence[Observation]) -> list[Observation]:
        return prepare_each_once(self.preparer, observations)

    def _call(self, method: str, args: list[tuple], seeds: Sequence[int], kwargs: list[dict[str, Any]]) -> list[Any]:
        replica = self.replica.replica

        async def together() -> list[Any]:
            return list(await asyncio.gather(*(getattr(replica, method)(*a, int(s), **kw)
                                               for a, s, kw in zip(args, seeds, kwargs))))

        if self.replica.loop is None:
            raise RuntimeError("the in-process replica is not bound to a running server yet")
        return asyncio.run_coroutine_threadsafe(together(), self.replica.loop).result()

    def reset(self) -> None:
        pass


@dataclass(frozen=True)
class _ServedFamily:
    """What a served planner knows of the robot: its env family (there is no simulator to score in)."""

    family: str


class PolicyServer:
    """The aiohttp application in front of the replicas (see the module docstring).

    replicas: ActorReplicas, an InProcessReplica, or a list of PolicyReplica actor handles (loaded).
    family: the env family whose adapters decode requests. default_seed: the seed of requests without one.
    metadata: sent as the openpi metadata frame. planner: the spec's [planner] (None or "direct": the
    policy alone); protocol: the spec's protocol (a planner's seeds and step counts follow it).
    """

    def __init__(self, replicas: Any, family: str, default_seed: int, options: ServeOptions,
                 metadata: dict[str, Any] | None = None, planner: PlannerSpec | None = None,
                 protocol: str = "robofleet"):
        self.replicas = ActorReplicas(replicas) if isinstance(replicas, (list, tuple)) else replicas
        self.family = family
        self.options = options
        self.default_seed = int(default_seed)
        self.planner_spec = planner if planner is not None and planner.name != "direct" else None
        self.protocol = protocol
        self.adapters = {protocol: adapter_for(f, protocol) for f, protocol in ADAPTERS if f == family}
        self.metadata = {"server": "robofleet", "env_family": family, "protocols": sorted(self.adapters),
                         "request_keys": {p: list(a.keys) for p, a in self.adapters.items()},
                         "planner": self.planner_spec.name if self.planner_spec else "direct", **(metadata or {})}
        self.planner: Any = None
        self._preparer: Callable[[Observation], Observation] | None = None
        self._plan_threads: ThreadPoolExecutor | None = None
        self._connections = 0
        self.counts = {"requests": 0, "errors": 0, "connections": 0}
        self.batch_sizes: Counter[int] = Counter()  # per answered request: the size of the batch it ran in

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.options.max_message_bytes, middlewares=[self._auth])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post("/act", self._act)
        app.router.add_get("/{path:.*}", self._websocket)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        """On the serving loop: bind the replica, fetch the policy's preparer, build the planner."""
        self.replicas.bind(asyncio.get_running_loop())
        self._preparer = await self.replicas.preparer()
        if self.planner_spec is not None:
            from robofleet.planners.registry import make_planner

            policy = self.replicas.planning_policy(self._preparer)
            self.planner = make_planner(self.planner_spec.name, self.planner_spec.options, policy,
                                        _ServedFamily(self.family), protocol=self.protocol)
            self._plan_threads = ThreadPoolExecutor(max_workers=self.options.max_concurrent_plans,
                                                    thread_name_prefix="robofleet-plan")

    async def _stop(self, app: web.Application) -> None:
        if self._plan_threads is not None:
            self._plan_threads.shutdown(wait=False, cancel_futures=True)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        key = self.options.api_key
        if key and request.path != "/healthz":
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {key}".encode()):
                return web.json_response({"error": "missing or wrong API key (header 'Authorization: Api-Key <key>')"},
                                         status=401)
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def _decide(self, obs: Observation, seed: int, wants_all: bool) -> Answer:
        """The policy's prediction, or the planner's decision, for one request."""
        if self.planner is None:
            if self._preparer is not None:  # the policy's CPU work (Cosmos: JPEG, resize) off the model thread
                obs = await asyncio.get_running_loop().run_in_executor(None, self._preparer, obs)
            prediction = await self.replicas.predict(obs, seed)
            return Answer(prediction, value=prediction.value, proposals=(prediction,) if wants_all else (),
                          proposal_values=(prediction.value,) if wants_all else ())
        decision = await asyncio.get_running_loop().run_in_executor(self._plan_threads, self.planner.decide, obs, seed)
        stats = dict(decision.stats)
        scores = [float(s) for s in stats["scores"]]
        seeds = getattr(self.planner, "proposal_seeds", None)
        plan = {**stats, **({"seeds": [int(s) for s in seeds(seed)]} if seeds else {})}
        return Answer(decision.prediction, value=scores[int(stats["chosen"])], plan=plan,
                      proposals=decision.proposals if wants_all else (), proposal_values=scores if wants_all else ())

    async def _answer(self, protocol: str, message: Any) -> dict[str, Any]:
        """One request, decoded, predicted (or planned), encoded. WireError for the client's mistakes."""
        adapter = self.adapters[protocol]
        obs, seed = adapter.observation(message)
        wants_all = adapter.wants_all(message)
        self.counts["requests"] += 1
        started = time.perf_counter()
        answer = await self._decide(obs, self.default_seed if seed is None else seed, wants_all)
        stats = answer.prediction.stats
        batch_size = int(stats.get("batch_size", 1))
        self.batch_sizes[batch_size] += 1
        timing = {"infer_ms": 1000 * (time.perf_counter() - started),
                  "model_ms": 1000 * float(stats.get("model_s", 0.0)),
                  "queue_ms": 1000 * float(stats.get("queue_s", 0.0)),
                  "batch_size": batch_size}
        return {**adapter.reply(answer), "server_timing": timing}

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self._connections >= self.options.max_connections:
            return web.json_response({"error": f"server busy: {self.options.max_connections} connections open"},
                                     status=503)
        ws = web.WebSocketResponse(max_msg_size=self.options.max_message_bytes, compress=False, autoping=True)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="expected a WebSocket upgrade (openpi) or POST /act\n")
        await ws.prepare(request)
        self._connections += 1
        self.counts["connections"] += 1
        try:
            await ws.send_bytes(pack_msgpack(self.metadata))
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await self._ws_request(ws, msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self.counts["errors"] += 1
                    await ws.send_str("bad request: send msgpack binary frames (openpi-client's format), not text")
                elif msg.type == WSMsgType.ERROR:  # e.g. a frame over the size limit: aiohttp closes with 1009
                    log.info("websocket from %s closed: %s", request.remote, ws.exception())
                    break
        except (ConnectionResetError, asyncio.CancelledError):  # the client left mid-request
            log.info("websocket from %s dropped", request.remote)
        finally:
            self._connections -= 1
        return ws

    async def _ws_request(self, ws: web.WebSocketResponse, data: bytes) -> None:
        try:
            message = unpack_msgpack(data, self.options.max_message_bytes)
            reply = pack_msgpack(await self._answer("openpi", message))
        except WireError as exc:
            self.counts["errors"] += 1
            await ws.send_str(f"bad request: {exc}")
            return
        except Exception:  # noqa: BLE001 - the client gets the traceback (openpi's convention); the server lives on
            self.counts["errors"] += 1
            log.exception("request failed")
            await ws.send_str(f"internal error:\n{traceback.format_exc()}")
            return
        if not ws.closed:
            await ws.send_bytes(reply)

    async def _act(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"body over {self.options.max_message_bytes} bytes"}, status=413)
        try:
            payload = loads_json(body, self.options.max_message_bytes)
            encoded = isinstance(payload, dict) and "encoded" in payload
            if encoded:  # cosmos-policy deploy.py: numpy arrays double-encoded as a JSON string
                if len(payload) != 1 or not isinstance(payload["encoded"], str):
                    raise WireError("the encoded form is {\"encoded\": \"<json>\"} and nothing else")
                payload = loads_json(payload["encoded"], self.options.max_message_bytes)
            reply = await self._answer("http_act", payload)
        except WireError as exc:
            self.counts["errors"] += 1
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        except Exception:  # noqa: BLE001 - answered as a 500 with the cause; the server lives on
            self.counts["errors"] += 1
            log.exception("request failed")
            return web.json_response({"error": f"internal error:\n{traceback.format_exc()}"}, status=500)
        text = dumps_json(reply)
        return web.Response(text=dumps_json(text) if encoded else text, content_type="application/json")


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SpecError("--port", f"cannot listen on {host}:{port} ({exc.strerror}); choose another port") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class RunningServer:
    """A PolicyServer listening on its own event loop thread (tests, benchmarks, `robofleet serve`)."""

    def __init__(self, server: PolicyServer):
        self.server = server
        self._sock = _bound_socket(server.options.host, server.options.port)
        self.host, self.port = self._sock.getsockname()[:2]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped = asyncio.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="robofleet-serve", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:  # e.g. the planner could not be built: say so here, not in a silent thread
            self._sock.close()
            raise self._failed

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def act_url(self) -> str:
        return f"http://{self.host}:{self.port}/act"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that started the server
            if self._ready.is_set():
                raise
            self._failed = exc
            self._ready.set()

    async def _main(self) -> None:
        runner = web.AppRunner(self.server.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, self._sock).start()
        self._stopped = asyncio.Event()
        self._ready.set()
        await self._stopped.wait()
        await runner.cleanup()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=10)

    def wait(self) -> None:
        """Block until stopped (KeyboardInterrupt stops it)."""
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_replicas_for(spec: RunSpec) -> ActorReplicas | InProcessReplica:
    """The spec's policy, loaded: in this process ([serving] replicas = 0) or as PolicyReplica actors
    (replicas >= 1; Ray must be connected)."""
    serving = spec.serving
    if serving.replicas == 0:  # the arguments platform/replica_fleet.start_replicas gives its actors
        return InProcessReplica(spec.policy.name, spec.policy.options, spec.env.family, max_batch=serving.max_batch,
                                max_wait_s=serving.max_wait_ms / 1000,
                                fixed_batch=serving.fixed_batch if serving.deterministic else None)
    from robofleet.platform.replica_fleet import start_replicas

    return ActorReplicas(start_replicas(spec))


async def _ready(replicas: ActorReplicas | InProcessReplica) -> dict[str, Any]:
    if isinstance(replicas, ActorReplicas):
        return await replicas.handles[0].ready.remote()
    return await replicas.replica.ready()


def start_server(spec: RunSpec, options: ServeOptions) -> RunningServer:
    """Load the spec's policy (its replicas: Ray must be connected when [serving] replicas >= 1) and start a
    server in front of it."""
    from robofleet.platform.serve_spec import validate_served_policy

    check_servable(spec)
    validate_served_policy(spec, check_files=True)
    replicas = start_replicas_for(spec)
    facts = asyncio.run(_ready(replicas))
    metadata = {"policy": spec.policy.name, "replicas": spec.serving.replicas, "backend": replicas.kind,
                "chunk_size": facts.get("chunk_size"), "deterministic": spec.serving.deterministic,
                "max_batch": spec.serving.max_batch, "max_wait_ms": spec.serving.max_wait_ms, "protocol": spec.protocol}
    server = PolicyServer(replicas, spec.env.family, spec.seed, options, metadata, planner=spec.planner,
                          protocol=spec.protocol)
    return RunningServer(server)


def serve(spec: RunSpec, options: ServeOptions, address: str | None = None,
          on_ready: Callable[[RunningServer], None] | None = None) -> None:
    """Serve until interrupted: connect Ray (for replica actors), load the policy, listen; `on_ready` is told where."""
    check_servable(spec)
    started = False
    if spec.serving.replicas >= 1 or address is not None:
        from robofleet.platform.cluster import connect

        started = connect(address)
    try:
        server = start_server(spec, options)
        if on_ready is not None:
            on_ready(server)
        server.wait()
    finally:
        if started:
            import ray

            ray.shutdown()
