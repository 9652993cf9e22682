"""`robofleet serve`: a spec's policy, from PolicyReplica actors, over the openpi WebSocket and `POST /act`.

One asyncio HTTP server (aiohttp, which Ray's dashboard already brings) on one port:

    ws://HOST:PORT/         openpi: a msgpack metadata frame on connect, then one msgpack request ->
                            one msgpack reply ({"actions": (K, 7) float32, "server_timing": {...}});
                            a bad request gets a text frame with the reason and the connection stays open
    GET  /healthz           "OK" (openpi's health check)
    POST /act               json_numpy body in the reference's keys, or {"encoded": "<json>"}; the reply
                            is json_numpy ({"actions", "future_image_predictions", "value_prediction"}),
                            for the encoded form a JSON string of it (cosmos-policy deploy.py); 400 with
                            {"error": reason} for a bad request

Every request is one `PolicyReplica.predict` call (round-robin over the spec's replicas), so requests
from all clients meet in the replicas' dynamic batches; in deterministic mode ([serving]
deterministic) each request's result depends only on its observation and seed. The seed is the
request's "seed" key (robofleet clients with `send_seed = true`) or else the spec's seed.

Why actors and not Ray Serve: PolicyReplica already batches (with deterministic padding), restarts and
reports batch statistics, and `robofleet run` uses the same actors, so a served policy behaves as an
evaluated one; Ray Serve would add its HTTP proxy actor's hop to every request and needs `ray[serve]`
(FastAPI, Starlette, uvicorn), which robofleet does not install.

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
from dataclasses import dataclass, replace
from typing import Any, Callable

from aiohttp import WSMsgType, web

from robofleet.platform.errors import SpecError
from robofleet.platform.spec import RunSpec
from robofleet.policies.remote.adapters import ADAPTERS, adapter_for
from robofleet.policies.remote.wire import WireError, dumps_json, loads_json, pack_msgpack, unpack_msgpack

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


def check_servable(spec: RunSpec) -> None:
    """SpecError unless this spec's policy can be served: an env family with adapters, planner `direct`."""
    if not any(family == spec.env.family for family, _ in ADAPTERS):
        raise SpecError("env.family", f"robofleet serve speaks {sorted({f for f, _ in ADAPTERS})} observations, "
                                      f"not {spec.env.family!r}")
    if spec.planner.name != "direct":
        raise SpecError("planner.name", f"robofleet serve serves the policy alone (planner 'direct'), not "
                                        f"{spec.planner.name!r}")
    if spec.policy.name == "remote":
        raise SpecError("policy.name", "serving a remote policy would only forward requests: serve the policy itself")


class PolicyServer:
    """The aiohttp application in front of PolicyReplica handles (see the module docstring).

    replicas: PolicyReplica actor handles (loaded). family: the env family whose adapters decode requests.
    default_seed: the seed of requests without one. metadata: sent as the openpi metadata frame.
    """

    def __init__(self, replicas: list[Any], family: str, default_seed: int, options: ServeOptions,
                 metadata: dict[str, Any] | None = None):
        if not replicas:
            raise ValueError("PolicyServer needs at least one replica")
        self.replicas = replicas
        self.options = options
        self.default_seed = int(default_seed)
        self.adapters = {protocol: adapter_for(f, protocol) for f, protocol in ADAPTERS if f == family}
        self.metadata = {"server": "robofleet", "env_family": family, "protocols": sorted(self.adapters),
                         "request_keys": {p: list(a.keys) for p, a in self.adapters.items()}, **(metadata or {})}
        self._next = itertools.cycle(range(len(replicas)))
        self._connections = 0
        self.counts = {"requests": 0, "errors": 0, "connections": 0}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.options.max_message_bytes, middlewares=[self._auth])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post("/act", self._act)
        app.router.add_get("/{path:.*}", self._websocket)
        return app

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

    async def _predict(self, obs: Any, seed: int | None) -> tuple[Any, dict[str, float]]:
        started = time.perf_counter()
        replica = self.replicas[next(self._next)]
        prediction = await replica.predict.remote(obs, self.default_seed if seed is None else seed)
        stats = prediction.stats
        timing = {"infer_ms": 1000 * (time.perf_counter() - started),
                  "model_ms": 1000 * float(stats.get("model_s", 0.0)),
                  "queue_ms": 1000 * float(stats.get("queue_s", 0.0)),
                  "batch_size": int(stats.get("batch_size", 1))}
        return prediction, timing

    async def _answer(self, protocol: str, message: Any) -> dict[str, Any]:
        """One request, decoded, predicted, encoded. WireError for the client's mistakes."""
        adapter = self.adapters[protocol]
        obs, seed = adapter.observation(message)
        self.counts["requests"] += 1
        prediction, timing = await self._predict(obs, seed)
        return {**adapter.reply(prediction), "server_timing": timing}

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
        self._thread = threading.Thread(target=self._run, name="robofleet-serve", daemon=True)
        self._thread.start()
        self._ready.wait()

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def act_url(self) -> str:
        return f"http://{self.host}:{self.port}/act"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

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


def served_spec(spec: RunSpec) -> RunSpec:
    """The spec as served: at least one replica."""
    return spec if spec.serving.replicas >= 1 else replace(spec, serving=replace(spec.serving, replicas=1))


def start_server(spec: RunSpec, options: ServeOptions) -> RunningServer:
    """Start the spec's replicas (Ray must be connected) and a server in front of them."""
    from robofleet.platform.runner import start_replicas, validate_before_ray

    check_servable(spec)
    validate_before_ray(spec)
    spec = served_spec(spec)
    replicas = start_replicas(spec)
    import ray

    facts = ray.get(replicas[0].ready.remote())
    metadata = {"policy": spec.policy.name, "replicas": len(replicas), "chunk_size": facts.get("chunk_size"),
                "deterministic": spec.serving.deterministic, "max_batch": spec.serving.max_batch}
    return RunningServer(PolicyServer(replicas, spec.env.family, spec.seed, options, metadata))


def serve(spec: RunSpec, options: ServeOptions, address: str | None = None,
          on_ready: Callable[[RunningServer], None] | None = None) -> None:
    """Serve until interrupted: connect Ray, load the replicas, listen; `on_ready` is told where."""
    import ray

    from robofleet.platform.cluster import connect

    check_servable(spec)
    started = connect(address)
    try:
        server = start_server(spec, options)
        if on_ready is not None:
            on_ready(server)
        server.wait()
    finally:
        if started:
            ray.shutdown()


