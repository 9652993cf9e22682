"""Serving overhead of `robofleet serve`: round trip of a LIBERO-sized request vs the in-process call, where
the time goes, and throughput with 1, 8 and 32 concurrent clients on one replica (with the batch sizes reached).

Each configuration is its own `robofleet serve` process (its code path: the spec's replica, the aiohttp
server on 127.0.0.1); the clients run in this one, so that they do not share a GIL with it:

    actors_wait2       [serving] replicas = 1, max_wait_ms = 2: one PolicyReplica actor behind the
                       server, as measured on 2026-12-01 (BENCHMARKS.md)
    actors_wait0       replicas = 1, max_wait_ms = 0: the same without the batching window
    in_process_wait2   replicas = 0, max_wait_ms = 2: the replica in the server's process (no Ray hop)
    in_process_wait0   replicas = 0, max_wait_ms = 0: neither (for one robot at a time)

Round trips, interleaved (each round sends one request of each kind to each configuration's server in
turn, so that all see the same load on a shared machine):
- openpi_client: the `openpi-client` package's WebsocketClientPolicy.infer of openpi's LIBERO message
  (two 224 x 224 x 3 uint8 images, 8-dim state, prompt), built once: the headline "added over the
  in-process call" (in_process: `policy.predict` on the Observation the server decodes, no wire);
- robofleet_openpi: `policy = "remote"` from an upright Observation (the adapter's mirror and state
  conversion are in the round trip); http_act: `policy = "remote"` over json_numpy `POST /act`.
Each reply's `server_timing` splits the server's share: infer_ms = its await of the replica (Ray hop,
batching window, model), queue_ms = the window. `profile` times the codec and adapter steps alone.
Throughput: N client threads, each its own openpi connection, for --seconds; requests/s and the
batch-size histogram by request.

Examples:
    python benchmarks/serving_roundtrip.py --out benchmarks/results/serving_roundtrip_cpu_s2.json
    python benchmarks/serving_roundtrip.py --configs in_process_wait0 --policy cosmos \\
        --policy-option config=tiny --policy-option device=cpu
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SERVER = """
import argparse, sys
from robofleet.jobs.serve_command import add_parser, cmd_serve
parser = argparse.ArgumentParser()
add_parser(parser.add_subparsers())
sys.exit(cmd_serve(parser.parse_args(sys.argv[1:])))
"""
CONFIGS = {"actors_wait2": (1, 2.0), "actors_wait0": (1, 0.0), "in_process_wait2": (0, 2.0),
           "in_process_wait0": (0, 0.0)}  # name -> ([serving] replicas, max_wait_ms)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(value: str) -> str:
    return value if value.replace(".", "").isdigit() or value in ("true", "false") else f'"{value}"'


def spec_toml(policy: str, options: dict[str, str], replicas: int, max_batch: int, max_wait_ms: float,
              deterministic: bool = True) -> str:
    policy_lines = "".join(f"{k} = {toml_value(v)}\n" for k, v in options.items())
    return (f'seed = 7\n[env]\nfamily = "libero"\nsuite = "libero_object"\ntasks = [0]\ntrials = 1\n'
            f'[policy]\nname = "{policy}"\n{policy_lines}'
            f'[serving]\nreplicas = {replicas}\nmax_batch = {max_batch}\nmax_wait_ms = {max_wait_ms}\n'
            f'deterministic = {str(deterministic).lower()}\ncpus_per_replica = 1\n')


class Server:
    """`robofleet serve` in a subprocess, for one configuration."""

    def __init__(self, policy: str, options: dict[str, str], replicas: int, max_wait_ms: float, max_batch: int = 32,
                 deterministic: bool = True):
        self._tmp = tempfile.TemporaryDirectory()
        spec = Path(self._tmp.name) / "serve.toml"
        spec.write_text(spec_toml(policy, options, replicas, max_batch, max_wait_ms, deterministic))
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, "serve", str(spec), "--port", str(self.port)],
                                        stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("serving"):
            self.close()
            raise SystemExit(f"the server did not start: {line!r}")
        self.ws_url, self.act_url = f"ws://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.port}/act"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self._tmp.cleanup()


def observation(side: int = 224):
    from robofleet.envs.contract import Observation

    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for c in ("agentview", "robot0_eye_in_hand")}
    proprio = np.array([0.02, -0.02, 0.1, 0.2, 0.9, 0.0, 0.0, 0.0, 1.0], np.float32)
    return Observation(images=images, proprio=proprio, instruction="put the bowl on the plate")


def openpi_message() -> dict:
    """openpi's examples/libero/main.py element: 224 x 224 images (already resized), 8-dim state, prompt."""
    from robofleet.policies.remote.adapters import LiberoOpenpi

    return LiberoOpenpi().request(observation(224))


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(seconds)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": len(ms)}


def timed(call, n: int) -> tuple[list[float], list[dict]]:
    """n sequential calls after one warm-up: seconds each, and each reply's server_timing."""
    call()
    seconds, timings = [], []
    for _ in range(n):
        started = time.perf_counter()
        reply = call()
        seconds.append(time.perf_counter() - started)
        timings.append(reply.get("server_timing", {}) if isinstance(reply, dict) else {})
    return seconds, timings


def server_share(timings: list[dict]) -> dict[str, float]:
    return {f"{key}_p50": float(np.median([t.get(key, 0.0) for t in timings])) for key in ("infer_ms", "queue_ms",
                                                                                          "model_ms")}


def in_process(policy_name: str, options: dict, n: int) -> dict[str, float]:
    """`policy.predict` on the Observation the server decodes from openpi's message: the floor."""
    from robofleet.policies.registry import make_policy
    from robofleet.policies.remote.adapters import LiberoOpenpi

    policy = make_policy(policy_name, options, "libero")
    obs, _ = LiberoOpenpi().observation(openpi_message())
    seconds, _ = timed(lambda: policy.predict([obs], [0]), n)
    return percentiles(seconds)


def profile(n: int) -> dict[str, dict[str, float]]:
    """The codec and adapter steps of one request and its reply, alone in this process."""
    from robofleet.policies.remote.adapters import Answer, LiberoHttpAct, LiberoOpenpi
    from robofleet.policies.remote.wire import dumps_json, loads_json, pack_msgpack, unpack_msgpack
    from robofleet.policies.simple import RandomPolicy

    adapter, obs = LiberoOpenpi(), observation(224)
    message = adapter.request(obs)
    frame = pack_msgpack(message)
    decoded = unpack_msgpack(frame, 1 << 26)
    reply = {**adapter.reply(Answer(RandomPolicy(chunk_size=16).predict([obs], [0])[0])), "server_timing": {}}
    http = LiberoHttpAct()
    body = dumps_json(http.request(obs))
    steps = {
        "client: adapter.request (mirror, state)": lambda: adapter.request(obs),
        "client: pack_msgpack (request)": lambda: pack_msgpack(message),
        "server: unpack_msgpack (request)": lambda: unpack_msgpack(frame, 1 << 26),
        "server: adapter.observation": lambda: adapter.observation(decoded),
        "server: pack_msgpack (reply)": lambda: pack_msgpack(reply),
        "http_act client: dumps_json (request)": lambda: dumps_json(http.request(obs)),
        "http_act server: loads_json (request)": lambda: loads_json(body, 1 << 26),
    }
    return {name: percentiles(timed(lambda f=f: (f(), {})[1], n)[0]) for name, f in steps.items()}


class Clients:
    """One client of each kind against one server; `once()` sends one request of each and times it."""

    def __init__(self, server: Server):
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        from robofleet.policies.remote import make_remote

        self.message, self.obs = openpi_message(), observation(224)
        self.openpi_client = WebsocketClientPolicy(server.ws_url)
        self.remotes = {name: make_remote(options, "libero") for name, options in (
            ("robofleet_openpi", {"url": server.ws_url, "protocol": "openpi"}),
            ("http_act", {"url": server.act_url, "protocol": "http_act"}))}
        self.connections = {name: remote._connect() for name, remote in self.remotes.items()}
        self.seconds: dict[str, list[float]] = {k: [] for k in ("openpi_client", *self.remotes)}
        self.timings: dict[str, list[dict]] = {k: [] for k in self.seconds}

    def once(self, record: bool = True) -> None:
        calls = {"openpi_client": lambda: self.openpi_client.infer(self.message)}
        for name, remote in self.remotes.items():
            calls[name] = lambda name=name, remote=remote: self.connections[name].call(remote.adapter.request(self.obs))
        for name, call in calls.items():
            started = time.perf_counter()
            reply = call()
            if record:
                self.seconds[name].append(time.perf_counter() - started)
                self.timings[name].append(reply.get("server_timing", {}))

    def results(self) -> dict:
        return {name: {"round_trip": percentiles(self.seconds[name]), "server": server_share(self.timings[name])}
                for name in self.seconds}

    def close(self) -> None:
        self.openpi_client._ws.close()
        for connection in self.connections.values():
            connection.close()


def interleaved_round_trips(servers: dict[str, Server], n: int) -> dict[str, dict]:
    """n rounds; each round sends one request of each client kind to each server in turn, so that the
    configurations see the same load on this shared machine (its load moves by the second)."""
    clients = {name: Clients(server) for name, server in servers.items()}
    try:
        for c in clients.values():
            c.once(record=False)
        for _ in range(n):
            for c in clients.values():
                c.once()
        return {name: c.results() for name, c in clients.items()}
    finally:
        for c in clients.values():
            c.close()


def throughput(url: str, clients: int, seconds: float) -> dict[str, float]:
    from robofleet.policies.remote import make_remote

    obs = observation(224)
    policies = [make_remote({"url": url, "protocol": "openpi"}, "libero") for _ in range(clients)]
    for p in policies:
        p.predict([obs], [0])
    counts = [0] * clients
    latencies: list[float] = []
    batch_sizes: list[int] = []
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            prediction = policies[i].predict([obs], [i])[0]
            counts[i] += 1
            latencies.append(prediction.stats["remote_s"])
            batch_sizes.append(prediction.stats.get("batch_size", 1))

    started = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    for p in policies:
        p.close()
    hist = {str(k): int(v) for k, v in zip(*np.unique(batch_sizes, return_counts=True))}
    return {"clients": clients, "requests": sum(counts), "requests_per_s": sum(counts) / wall,
            **{f"latency_{k}": v for k, v in percentiles(latencies).items() if k != "n"},
            "batch_size_mean": float(np.mean(batch_sizes)), "batch_size_histogram_by_request": hist}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="zero", help="served policy (default zero: the serving cost alone)")
    parser.add_argument("--policy-option", action="append", default=[], metavar="K=V")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--throughput-configs", default="actors_wait2,in_process_wait0")
    parser.add_argument("--requests", type=int, default=300, help="sequential round trips per client kind")
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput point")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    options = dict(o.split("=", 1) for o in args.policy_option)
    typed = {k: (int(v) if v.isdigit() else v) for k, v in options.items()}

    results: dict = {"policy": args.policy, "options": options, "cpus": os.cpu_count(),
                     "load_average_start": os.getloadavg(), "python": sys.version.split()[0],
                     "in_process": in_process(args.policy, typed, args.requests), "profile": profile(args.requests),
                     "configs": {}}
    floor = results["in_process"]["p50_ms"]
    names = args.configs.split(",")
    servers: dict[str, Server] = {}
    try:
        for name in names:
            servers[name] = Server(args.policy, options, *CONFIGS[name])
        latencies = interleaved_round_trips(servers, args.requests)
        for name in names:
            replicas, wait = CONFIGS[name]
            point = {"replicas": replicas, "max_wait_ms": wait, **latencies[name]}
            point["added_p50_ms_vs_in_process"] = {k: point[k]["round_trip"]["p50_ms"] - floor for k in latencies[name]}
            results["configs"][name] = point
            print(f"{name}: openpi-client p50 {point['openpi_client']['round_trip']['p50_ms']:.2f} ms", file=sys.stderr)
        for name in names:  # throughput one configuration at a time, the others stopped
            if name not in args.throughput_configs.split(","):
                servers.pop(name).close()
        for name, server in servers.items():
            results["configs"][name]["throughput_openpi"] = [throughput(server.ws_url, int(c), args.seconds)
                                                             for c in args.clients.split(",")]
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
