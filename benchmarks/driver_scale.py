"""Driver scale: how many short episodes one robofleet driver schedules and records per minute with 64 and
256 env workers, what that costs the driver per episode (CPU), and whether its memory stays flat.

What runs is the real driver: `platform/runner.run` (episode expansion, `_WorkerPool`, the `_schedule`
loop: one episode per idle worker, `ray.wait` over every in-flight episode, each row appended and fsynced
by `RunStore` before the next episode goes to that worker, the reports at the end). What is simulated is
the env worker, and only its simulator:

* a **simulated worker** is one worker slot of the pool: a Ray actor handle's stand-in whose `setup` /
  `run` / `close` calls are real Ray actor calls, routed to one of `--hosts` multi-threaded host actors
  (`max_concurrency` = its slots). 256 real EnvWorker processes (~1 GB each with LIBERO) cannot run on a
  small machine; the driver's side of each call (submit, wait, get, record) is the same either way.
* each episode runs the real episode loop (`platform/episode_loop.run_episode`) with the spec's real
  policy and planner (`random`, `direct`) on `PointEnv`, a 7-DoF point that integrates actions (no
  physics), so an episode's worker-side work is ~1 ms and the driver is what limits throughput.

The driver runs in a child process; this process samples the child's CPU time and RSS, its Ray
processes' CPU (host actors, raylet/GCS) and the rows recorded, every `--sample-s` seconds. With
`--runs R` the driver runs R runs one after another (seeds 0..R-1: distinct episodes), as a sweep's
driver does, so its memory is seen over R x episodes.

Examples:
    python benchmarks/driver_scale.py --workers 64 256 --episodes 4500 --runs 2 --out benchmarks/results/driver_scale.json
    python benchmarks/driver_scale.py --workers 64 --episodes 1000 --hosts 4 --out /tmp/ds.json   # quick
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform as stdlib_platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SUITE, TASKS, TRIALS_PER_TASK = "libero_90", 90, 50  # up to 4500 distinct episodes in one run


# -- the simulated worker (runs inside the host actors) -------------------------------------------
class PointEnv:
    """The Env contract without physics: a 7-DoF point that integrates actions; never succeeds."""

    family = "libero"
    action_dim = 7

    def __init__(self, max_steps: int):
        self.max_steps = max_steps
        self._state = np.zeros(7)

    def _obs(self):
        from robofleet.envs.contract import Observation

        return Observation(images={}, proprio=self._state.astype(np.float32), instruction="move the point")

    def reset(self, task_id: int, trial: int, seed: int):
        self._state = np.random.default_rng([task_id, trial, seed]).uniform(-1, 1, 7)
        return self._obs()

    def step(self, action: np.ndarray, render: bool = True):
        from robofleet.envs.contract import Step

        self._state = self._state + 0.01 * np.asarray(action, dtype=np.float64)
        return Step(obs=self._obs(), success=False)

    def get_state(self) -> np.ndarray:
        return self._state.copy()

    def set_state(self, state: np.ndarray):
        self._state = np.asarray(state, dtype=np.float64).copy()
        return self._obs()

    def task_name(self, task_id: int) -> str:
        return f"point_task{task_id:02d}"

    def close(self) -> None:
        pass


def _host_class():
    import ray

    @ray.remote(num_cpus=0)
    class SimulatorHost:
        """The episodes of many simulated env workers: per slot a PointEnv and the spec's policy in its planner."""

        def __init__(self, spec):
            from robofleet.platform.fingerprint import package_versions

            self.spec = spec
            self.slots: dict[int, tuple[Any, Any]] = {}
            self.packages = package_versions()

        def setup(self, index: int) -> dict[str, Any]:
            from robofleet.planners.registry import make_planner
            from robofleet.policies.registry import make_policy

            s = self.spec
            env = PointEnv(s.env.max_steps or 4)
            policy = make_policy(s.policy.name, s.policy.options, s.env.family)
            self.slots[index] = (env, make_planner(s.planner.name, s.planner.options, policy, env, protocol=s.protocol))
            return {"pid": os.getpid(), "node": "", "packages": self.packages}

        def run(self, index: int, episode, video_path=None) -> dict[str, Any]:
            from robofleet.platform.episode_loop import run_episode

            env, planner = self.slots[index]
            row = run_episode(env, planner, episode, open_loop_steps=self.spec.policy.open_loop_steps)
            row["task"] = env.task_name(episode.task_id)
            row["worker"] = index
            return row

        def close(self, index: int) -> None:
            self.slots.pop(index, None)

        def pid(self) -> int:
            return os.getpid()

    return SimulatorHost


class _Bound:
    def __init__(self, method: Any, index: int):
        self.method, self.index = method, index

    def remote(self, *args: Any) -> Any:
        return self.method.remote(self.index, *args)


class _Slot:
    """One simulated env worker: its calls go to its host actor, with its slot index."""

    def __init__(self, host: Any, index: int):
        self.setup, self.run, self.close = (_Bound(host.setup, index), _Bound(host.run, index),
                                            _Bound(host.close, index))


class SimulatedEnvWorker:
    """Stands in for `EnvWorker` in `_WorkerPool`: `.options(...).remote(spec, index, ...)` -> a _Slot."""

    def __init__(self, hosts: list[Any]):
        self.hosts = hosts

    def options(self, **_: Any) -> "SimulatedEnvWorker":
        return self

    def remote(self, spec: Any, index: int, replicas: Any = None, egl_device: Any = None) -> _Slot:
        return _Slot(self.hosts[index % len(self.hosts)], index)


# -- the driver (child process) -------------------------------------------------------------------
def spec_for(workers: int, episodes: int, max_steps: int, chunk: int):
    from robofleet.platform.spec import spec_from_dict

    tasks = -(-episodes // TRIALS_PER_TASK)
    if tasks > TASKS:
        raise SystemExit(f"--episodes {episodes}: at most {TASKS * TRIALS_PER_TASK} ({SUITE}'s init states)")
    return spec_from_dict({
        "seed": 0, "name": f"driver-scale-{workers}w",
        "env": {"family": "libero", "suite": SUITE, "tasks": list(range(tasks)), "trials": TRIALS_PER_TASK,
                "render_cameras": False, "max_steps": max_steps},
        "policy": {"name": "random", "chunk_size": chunk},
        "run": {"workers": workers, "cpus_per_worker": 0.001},  # the slots take no CPU: the hosts do the work
    })


def drive(args: argparse.Namespace) -> None:
    """Child: start Ray, the host actors, then one robofleet run; print a JSON line with its figures."""
    import ray

    import robofleet.platform.env_worker as env_worker
    from robofleet.platform.cluster import connect
    from robofleet.platform.runner import run

    spec = spec_for(args.workers[0], args.episodes, args.max_steps, args.chunk)
    connect(num_cpus=os.cpu_count() or 2)
    Host = _host_class()
    per_host = -(-args.workers[0] // args.hosts)
    hosts = [Host.options(max_concurrency=per_host).remote(spec) for _ in range(args.hosts)]
    host_pids = ray.get([h.pid.remote() for h in hosts])
    Path(args.pids_file).write_text(json.dumps({"hosts": host_pids}))
    env_worker.EnvWorker = SimulatedEnvWorker(hosts)  # _WorkerPool imports it at start
    runs = []
    for seed in range(args.runs):
        started = time.perf_counter()
        summary = run(replace(spec, seed=seed), Path(args.run_dir) / f"seed{seed}", progress=False)
        figures = summary["figures"]["this_invocation"]
        runs.append({"wall_s": time.perf_counter() - started,
                     "episodes_wall_s": figures["wall_s"] - figures["startup_s"],  # first scheduled to last recorded
                     "figures": figures})
    print(json.dumps({"runs": runs}))
    ray.shutdown()


# -- sampling (parent) ----------------------------------------------------------------------------
def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _descendants(root: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return []


def _rows(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return max(sum(1 for _ in f) - 1, 0)
    except OSError:
        return 0


def measure(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One driver run with `workers` simulated workers; its figures and samples."""
    tmp = Path(tempfile.mkdtemp(prefix="driver-scale-"))
    run_dir, pids_file = tmp / "run", tmp / "pids.json"
    run_dirs = [run_dir / f"seed{seed}" for seed in range(args.runs)]
    cmd = [sys.executable, __file__, "--drive", "--workers", str(workers), "--episodes", str(args.episodes),
           "--hosts", str(args.hosts), "--max-steps", str(args.max_steps), "--chunk", str(args.chunk),
           "--runs", str(args.runs), "--run-dir", str(run_dir), "--pids-file", str(pids_file)]
    child = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    samples = []
    t0 = time.monotonic()
    while child.poll() is None:
        hosts = json.loads(pids_file.read_text())["hosts"] if pids_file.exists() else []
        others = [p for p in _descendants(child.pid) if p not in hosts]
        samples.append({
            "t_s": round(time.monotonic() - t0, 2), "rows_by_run": [_rows(d / "episodes.csv") for d in run_dirs],
            "driver_cpu_s": _cpu_s(child.pid), "driver_rss_mb": _rss_mb(child.pid),
            "hosts_cpu_s": sum(c for c in map(_cpu_s, hosts) if c is not None),
            "ray_core_cpu_s": sum(c for c in map(_cpu_s, others) if c is not None),
        })
        time.sleep(args.sample_s)
    out, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"driver with {workers} workers failed ({child.returncode}):\n{err[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])["runs"]
    from robofleet.platform.results import read_rows

    recorded = [row for d in run_dirs for row in read_rows(d)]
    ids = [r["episode_id"] + "/" + r["sweep_seed"] for r in recorded]
    total = args.episodes * args.runs
    busy = sum(r["episodes_wall_s"] for r in result)
    figures: dict[str, Any] = {
        "workers": workers, "hosts": args.hosts, "runs": args.runs, "episodes": total,
        "steps_per_episode": args.max_steps, "queries_per_episode": -(-args.max_steps // args.chunk),
        "exactly_once": len(ids) == len(set(ids)) == total,
        "errors": sum(1 for r in recorded if r["error"]),
        "run_wall_s": [round(r["wall_s"], 2) for r in result],
        "episodes_wall_s": [round(r["episodes_wall_s"], 2) for r in result],
        "episodes_per_min": round(60 * total / busy, 0),  # first episode scheduled to last recorded, per run
        "worker_side_ms_per_episode": round(1000 * float(np.mean([float(r["wall_s"]) for r in recorded])), 3),
    }
    # steady state: the samples taken while a run was past its first row and before its last, per run
    windows = []
    for i in range(args.runs):
        mid = [s for s in samples if 0 < s["rows_by_run"][i] < args.episodes and s["driver_cpu_s"] is not None]
        if len(mid) >= 2:
            windows.append((mid[0], mid[-1], i))
    if windows:
        rows = sum(b["rows_by_run"][i] - a["rows_by_run"][i] for a, b, i in windows)
        span = sum(b["t_s"] - a["t_s"] for a, b, _ in windows)

        def per_episode(key: str) -> float:
            return round(1000 * sum(b[key] - a[key] for a, b, _ in windows) / rows, 3)

        figures.update({
            "steady_rows": rows, "steady_s": round(span, 2),
            "steady_episodes_per_min": round(60 * rows / span, 0),
            "driver_cpu_ms_per_episode": per_episode("driver_cpu_s"),
            "driver_cpu_cores": round(sum(b["driver_cpu_s"] - a["driver_cpu_s"] for a, b, _ in windows) / span, 3),
            "hosts_cpu_ms_per_episode": per_episode("hosts_cpu_s"),
            "ray_core_cpu_ms_per_episode": per_episode("ray_core_cpu_s"),
            # per run: RSS at the start and the end of its steady window (between runs the reports are written)
            "driver_rss_mb_by_run": [{"run": i, "rows": [a["rows_by_run"][i], b["rows_by_run"][i]],
                                      "rss_mb": [round(a["driver_rss_mb"], 1), round(b["driver_rss_mb"], 1)]}
                                     for a, b, i in windows],
            "driver_rss_mb_max": round(max(s["driver_rss_mb"] for s in samples if s["driver_rss_mb"]), 1),
        })
    shutil.rmtree(tmp, ignore_errors=True)
    return {"figures": figures, "samples": samples}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), stdlib_platform.processor())
    import ray

    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(os.sysconf("SC_PAGE_SIZE")
            * os.sysconf("SC_PHYS_PAGES") / 2**30, 1), "python": stdlib_platform.python_version(),
            "ray": ray.__version__, "load_average_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[64, 256], help="simulated env workers (one run each)")
    p.add_argument("--episodes", type=int, default=4500, help=f"episodes per run (<= {TASKS * TRIALS_PER_TASK})")
    p.add_argument("--hosts", type=int, default=4, help="host actors (processes) the simulated workers run in")
    p.add_argument("--max-steps", type=int, default=4, help="env steps per episode")
    p.add_argument("--chunk", type=int, default=2, help="actions per policy query")
    p.add_argument("--runs", type=int, default=1, help="runs per worker count, one after another in one driver")
    p.add_argument("--sample-s", type=float, default=1.0, help="seconds between samples")
    p.add_argument("--out", type=Path, help="write the results JSON here")
    p.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--pids-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.drive:
        drive(args)
        return 0
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {"benchmark": "driver_scale", "date": started.strftime("%Y-%m-%d %H:%M UTC"),
               "command": " ".join(["python", "benchmarks/driver_scale.py", *(argv if argv is not None else sys.argv[1:])]),
               "machine": machine(), "runs": []}
    for workers in args.workers:
        measured = measure(workers, args)
        results["runs"].append(measured)
        print(json.dumps(measured["figures"]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0 if all(r["figures"]["exactly_once"] and not r["figures"]["errors"] for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
