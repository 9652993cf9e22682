"""Ray Serve against `robofleet serve` (PolicyReplica + aiohttp), side by side in one run: round-trip latency
p50/p99 (interleaved) and throughput with 1, 8 and 32 concurrent clients, the same policy and protocols.

Servers (each on its own loopback port, all up at once):
    robofleet_in_process   `robofleet serve`, [serving] replicas = 0: the replica in the server's process
    robofleet_actors       `robofleet serve`, replicas = 1: one PolicyReplica actor behind the server
    ray_serve              a Ray Serve deployment (`@serve.deployment` + `@serve.ingress(FastAPI)`: the
                           openpi WebSocket at / and POST /act, the same adapters and codecs as ours)
                           whose `@serve.batch` method runs the policy on one model thread, as
                           PolicyReplica does; requests reach it through Ray Serve's HTTP proxy actor
All three batch with the same max batch (32) and the same window (--max-wait-ms, default 0), run the
plain policy (robofleet's [serving] deterministic = false: no fixed_batch padding, as Ray Serve has
none) and run torch on one thread in every process (OMP_NUM_THREADS=1, what Ray gives its actors).
Clients, in this process: the `openpi-client` package (openpi's LIBERO message: two 224 x 224 x 3
uint8 images, 8-dim state, prompt) and robofleet's `POST /act` client for latency; robofleet's openpi
client threads for throughput. Needs `ray[serve]` (`pip install -e '.[serve-bench]'`).

Examples:
    python benchmarks/serving_rayserve_compare.py --out benchmarks/results/serving_rayserve_compare_cpu.json
    python benchmarks/serving_rayserve_compare.py --policy cosmos --policy-option config=tiny \\
        --policy-option device=cpu --seconds 10 --out cosmos_tiny.json
"""
# No `from __future__ import annotations`: FastAPI reads the endpoints' parameter types (Request, WebSocket),
# imported inside ray_serve_app, from their evaluated annotations.

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: this process, the servers, Ray's actors alike

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving_roundtrip as roundtrip  # noqa: E402 - the sibling benchmark's servers, clients and statistics

MAX_BATCH = 32
MAX_BYTES = 16 << 20


def ray_serve_app(policy_name: str, options: dict[str, Any], max_wait_s: float):
    """The Ray Serve application: one deployment that is both the HTTP/WebSocket ingress and the batcher."""
    from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
    from fastapi.responses import JSONResponse, Response
    from ray import serve

    from robofleet.policies.remote.adapters import Answer, LiberoHttpAct, LiberoOpenpi
    from robofleet.policies.remote.wire import WireError, dumps_json, loads_json, pack_msgpack, unpack_msgpack

    app = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=1024)
    @serve.ingress(app)
    class RayServePolicy:
        def __init__(self) -> None:
            from robofleet.policies.registry import make_policy

            self.model_thread = ThreadPoolExecutor(max_workers=1)  # as PolicyReplica: batches off the event loop
            self.policy = self.model_thread.submit(make_policy, policy_name, options, "libero").result()
            self.openpi, self.http = LiberoOpenpi(), LiberoHttpAct()
            self.predict_batch.set_max_batch_size(MAX_BATCH)
            self.predict_batch.set_batch_wait_timeout_s(max_wait_s)

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.0)
        async def predict_batch(self, requests: list[tuple[Any, int]]) -> list[Any]:
            observations, seeds = [r[0] for r in requests], [r[1] for r in requests]
            started = time.perf_counter()
            predictions = await asyncio.get_running_loop().run_in_executor(
                self.model_thread, self.policy.predict, observations, seeds)
            model_s = time.perf_counter() - started
            return [(p, model_s, len(requests)) for p in predictions]

        async def _answer(self, adapter: Any, message: Any) -> dict[str, Any]:
            obs, seed = adapter.observation(message)
            started = time.perf_counter()
            prediction, model_s, batch = await self.predict_batch((obs, 7 if seed is None else seed))
            timing = {"infer_ms": 1000 * (time.perf_counter() - started), "model_ms": 1000 * model_s,
                      "batch_size": batch}
            return {**adapter.reply(Answer(prediction, value=prediction.value)), "server_timing": timing}

        @app.websocket("/")
        async def openpi(self, ws: WebSocket) -> None:
            await ws.accept()
            await ws.send_bytes(pack_msgpack({"server": "ray_serve", "policy": policy_name}))
            try:
                while True:
                    data = await ws.receive_bytes()
                    try:
                        reply = await self._answer(self.openpi, unpack_msgpack(data, MAX_BYTES))
                    except WireError as exc:
                        await ws.send_text(f"bad request: {exc}")
                        continue
                    await ws.send_bytes(pack_msgpack(reply))
            except WebSocketDisconnect:
                pass

        @app.post("/act")
        async def act(self, request: Request) -> Response:
            try:
                reply = await self._answer(self.http, loads_json(await request.body(), MAX_BYTES))
            except WireError as exc:
                return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)
            return Response(dumps_json(reply), media_type="application/json")

    return RayServePolicy.bind()


class RayServeServer:
    """Ray Serve on a local Ray cluster in this process (its proxy and replica are actors)."""

    def __init__(self, policy: str, options: dict[str, Any], max_wait_s: float):
        import ray
        from ray import serve

        self.port = roundtrip.free_port()
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": self.port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        serve.run(ray_serve_app(policy, options, max_wait_s), name="policy", route_prefix="/",
                  logging_config={"log_level": "WARNING", "enable_access_log": False})
        self.ws_url, self.act_url = f"ws://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.port}/act"

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="zero", help="served policy (default zero: the serving cost alone)")
    parser.add_argument("--policy-option", action="append", default=[], metavar="K=V")
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="batching window of all three servers")
    parser.add_argument("--requests", type=int, default=300, help="sequential round trips per client kind")
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput point")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    options = dict(o.split("=", 1) for o in args.policy_option)
    typed = {k: (int(v) if v.isdigit() else v) for k, v in options.items()}

    import ray

    results: dict = {"policy": args.policy, "options": options, "max_wait_ms": args.max_wait_ms,
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                     "max_batch": MAX_BATCH, "cpus": os.cpu_count(), "load_average_start": os.getloadavg(),
                     "ray": ray.__version__, "in_process": roundtrip.in_process(args.policy, typed, args.requests),
                     "servers": {}}
    servers: dict[str, Any] = {}
    try:
        for name, replicas in (("robofleet_in_process", 0), ("robofleet_actors", 1)):
            servers[name] = roundtrip.Server(args.policy, options, replicas, args.max_wait_ms, MAX_BATCH,
                                             deterministic=False)
        servers["ray_serve"] = RayServeServer(args.policy, typed, args.max_wait_ms / 1000)
        latencies = roundtrip.interleaved_round_trips(servers, args.requests)
        floor = results["in_process"]["p50_ms"]
        for name, server in servers.items():
            results["servers"][name] = {
                **latencies[name],
                "added_p50_ms_vs_in_process": {k: v["round_trip"]["p50_ms"] - floor for k, v in latencies[name].items()},
                "throughput_openpi": [roundtrip.throughput(server.ws_url, int(c), args.seconds)
                                      for c in args.clients.split(",")]}
            print(f"{name}: openpi-client p50 {latencies[name]['openpi_client']['round_trip']['p50_ms']:.2f} ms, "
                  + ", ".join(f"{t['clients']}c {t['requests_per_s']:.0f}/s"
                              for t in results["servers"][name]["throughput_openpi"]), file=sys.stderr)
    finally:
        for server in servers.values():
            server.close()
    results["load_average_end"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
