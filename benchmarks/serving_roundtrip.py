"""Serving overhead of `robofleet serve`: round trip of a LIBERO-sized request vs the in-process call, and
throughput with 1, 8 and 32 concurrent clients on one replica (with the batch sizes reached).

The server runs in its own process (`robofleet serve`'s code path: Ray, one PolicyReplica, the aiohttp
server on 127.0.0.1), the clients in this one, so that they do not share a GIL with it.
- in-process: `policy.predict` called directly (no Ray, no wire), the floor.
- openpi: robofleet's client (policies/remote: msgpack over one WebSocket) from LIBERO's 256 x 256 renders,
  resized to 224 x 224 as openpi's LIBERO example does (in the round trip); http_act: json_numpy
  `POST /act` with the 256 x 256 images.
  Each reply's `server_timing.infer_ms` is the server's await of the replica (Ray hop + batching +
  model), so round trip - infer_ms is what the protocol itself adds (encoding, loopback, decoding).
- throughput: N client threads, each its own openpi connection, for --seconds; requests/s and the
  replica's batch-size histogram over that window.

Examples:
    python benchmarks/serving_roundtrip.py --out benchmarks/results/serving_roundtrip_cpu.json
    python benchmarks/serving_roundtrip.py --policy cosmos --policy-option config=tiny --policy-option device=cpu
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spec_toml(policy: str, options: dict[str, str], max_batch: int, max_wait_ms: float) -> str:
    lines = [f'"{v}"' if not v.replace(".", "").isdigit() else v for v in options.values()]
    policy_lines = "".join(f"{k} = {v}\n" for k, v in zip(options, lines))
    return (f'seed = 7\n[env]\nfamily = "libero"\nsuite = "libero_object"\ntasks = [0]\ntrials = 1\n'
            f'[policy]\nname = "{policy}"\n{policy_lines}'
            f'[serving]\nreplicas = 1\nmax_batch = {max_batch}\nmax_wait_ms = {max_wait_ms}\ncpus_per_replica = 1\n')


def observation(side: int):
    from robofleet.envs.contract import Observation

    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for c in ("agentview", "robot0_eye_in_hand")}
    proprio = np.array([0.02, -0.02, 0.1, 0.2, 0.9, 0.0, 0.0, 0.0, 1.0], np.float32)
    return Observation(images=images, proprio=proprio, instruction="put the bowl on the plate")


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(seconds)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": len(ms)}


def latency(policy, obs, n: int) -> dict[str, float]:
    """Sequential `policy.predict` calls."""
    policy.predict([obs], [0])  # warm
    seconds = []
    for i in range(n):
        started = time.perf_counter()
        policy.predict([obs], [i])
        seconds.append(time.perf_counter() - started)
    return percentiles(seconds)


class TimedRemote:
    """The remote policy, keeping the server's infer time of each reply (for the protocol's own share)."""

    def __init__(self, options: dict):
        from robofleet.policies.remote import make_remote

        self.policy = make_remote(options, "libero")
        connect = self.policy._connect

        def connect_and_record():
            connection = connect()
            call = connection.call

            def call_and_record(message):
                reply = call(message)
                self.last_infer_s = reply.get("server_timing", {}).get("infer_ms", 0.0) / 1000
                return reply
            connection.call = call_and_record
            return connection
        self.policy._connect = connect_and_record
        self.last_infer_s = 0.0

    def run(self, obs, n: int) -> tuple[dict[str, float], dict[str, float]]:
        self.policy.predict([obs], [0])
        total, protocol = [], []
        for i in range(n):
            started = time.perf_counter()
            self.policy.predict([obs], [i])
            elapsed = time.perf_counter() - started
            total.append(elapsed)
            protocol.append(elapsed - self.last_infer_s)
        return percentiles(total), percentiles(protocol)


def throughput(url: str, clients: int, seconds: float, obs) -> dict[str, float]:
    from robofleet.policies.remote import make_remote

    policies = [make_remote({"url": url, "protocol": "openpi"}, "libero") for _ in range(clients)]
    for p in policies:
        p.predict([obs], [0])
    counts = [0] * clients
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            prediction = policies[i].predict([obs], [i])[0]
            counts[i] += 1
            latencies.append(prediction.stats["remote_s"])
            batch_sizes.append(prediction.stats.get("batch_size", 1))

    batch_sizes: list[int] = []
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="zero", help="served policy (default zero: the serving cost alone)")
    parser.add_argument("--policy-option", action="append", default=[], metavar="K=V")
    parser.add_argument("--requests", type=int, default=300, help="sequential round trips per protocol")
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput point")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    options = dict(o.split("=", 1) for o in args.policy_option)

    from robofleet.policies.registry import make_policy

    local = make_policy(args.policy, {k: (int(v) if v.isdigit() else v) for k, v in options.items()}, "libero")
    results: dict = {"policy": args.policy, "options": options, "cpus": os.cpu_count(),
                     "load_average": os.getloadavg(), "python": sys.version.split()[0]}
    results["in_process"] = latency(local, observation(256), args.requests)

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "serve.toml"
        spec.write_text(spec_toml(args.policy, options, max_batch=32, max_wait_ms=2.0))
        server = subprocess.Popen([sys.executable, "-c", SERVER, "serve", str(spec), "--port", str(port)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline()
            if not line.startswith("serving"):
                raise SystemExit(f"the server did not start: {line!r}")
            url, act = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}/act"
            for name, opts in (("openpi", {"url": url, "protocol": "openpi"}),
                               ("http_act", {"url": act, "protocol": "http_act"})):
                total, protocol = TimedRemote(opts).run(observation(256), args.requests)
                results[name] = {"round_trip": total, "protocol_only": protocol,
                                 "added_p50_ms_vs_in_process": total["p50_ms"] - results["in_process"]["p50_ms"]}
            results["throughput_openpi"] = [throughput(url, int(n), args.seconds, observation(256))
                                            for n in args.clients.split(",")]
        finally:
            server.terminate()
            server.wait(timeout=30)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
