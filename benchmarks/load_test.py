"""Load test: many short real LIBERO episodes over many env workers; every episode recorded exactly
once, and the resident memory (RSS) of the driver, the env workers and Ray's own processes sampled
over time, to show it stays flat.

Episodes: the zero policy (no model), `--max-steps` policy steps, no cameras, soft resets (cheapest
real episodes: a soft reset is ~0.12 s on one core, a hard one ~0.4 s), over the first
episodes / `--trials-per-task` tasks of `--suite` (default 50 trials per task: LIBERO has 50 init
states per task; a worker rebuilds its simulator whenever its next episode is of another task).
The run is a normal robofleet run (platform/runner.py) into `--run-dir`; the checks read its
episodes.csv: as many rows as episodes, no episode_id twice, every expected id present, no errors.

Needs only ray, numpy and robofleet (psutil optional: without it RSS is read from /proc).

Examples:
    python benchmarks/load_test.py --episodes 100 --workers 2 --max-steps 4 --out benchmarks/results/load_100ep_2w.json
    python benchmarks/load_test.py --episodes 1000 --workers 16 --max-steps 4 --out benchmarks/results/load_1000ep_16w.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform as stdlib_platform
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

TRIALS_PER_TASK = 50
KINDS = ("driver", "env_worker", "ray_core")  # ray_core: gcs_server, raylet, agents, monitors, idle workers


# -- processes and their RSS, with psutil or /proc ------------------------------------------------
def _children_procfs(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parent[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parent.items() if pp == pid]
        found += kids
        frontier += kids
    return found


def _cmdline_procfs(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _rss_mb_procfs(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_table(root: int) -> list[tuple[int, str, float]]:
    """(pid, command line, RSS in MiB) of `root` and all its descendants."""
    try:
        import psutil
    except ImportError:
        psutil = None
    rows = []
    if psutil is not None:
        try:
            me = psutil.Process(root)
            procs = [me] + me.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            try:
                rows.append((p.pid, " ".join(p.cmdline()), p.memory_info().rss / 2**20))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return rows
    for pid in [root] + _children_procfs(root):
        rss = _rss_mb_procfs(pid)
        if rss is not None:
            rows.append((pid, _cmdline_procfs(pid), rss))
    return rows


def kind_of(pid: int, command: str, driver: int) -> str:
    if pid == driver:
        return "driver"
    if command.startswith("ray::EnvWorker"):
        return "env_worker"
    return "ray_core"


def count_rows(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0


class RssSampler(threading.Thread):
    """Every `interval_s`: elapsed seconds, episodes recorded so far, RSS per process kind."""

    def __init__(self, episodes_csv: Path, interval_s: float):
        super().__init__(daemon=True)
        self.episodes_csv = episodes_csv
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self.workers_seen: set[int] = set()
        self._halt = threading.Event()
        self._start = time.perf_counter()

    def run(self) -> None:
        driver = os.getpid()
        while not self._halt.is_set():
            by_kind: dict[str, list[float]] = {k: [] for k in KINDS}
            for pid, command, rss in process_table(driver):
                kind = kind_of(pid, command, driver)
                by_kind[kind].append(rss)
                if kind == "env_worker":
                    self.workers_seen.add(pid)
            self.samples.append({
                "t_s": round(time.perf_counter() - self._start, 2),
                "episodes": count_rows(self.episodes_csv),
                "driver_mb": round(sum(by_kind["driver"]), 1),
                "env_workers": len(by_kind["env_worker"]),
                "env_worker_mb_total": round(sum(by_kind["env_worker"]), 1),
                "env_worker_mb_max": round(max(by_kind["env_worker"], default=0.0), 1),
                "ray_core_mb_total": round(sum(by_kind["ray_core"]), 1),
            })
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def memory_trend(samples: list[dict[str, Any]], episodes: int) -> dict[str, Any]:
    """Per kind, over the episode phase (workers up, >= 10% of the episodes recorded; the report
    writing after the last episode is left out): RSS at its start and end, peak, and the least-squares
    slope in MiB per 100 episodes."""
    steady = [s for s in samples if s["episodes"] >= max(1, episodes // 10) and s["env_workers"] > 0]
    if len(steady) < 2:
        return {"note": "too few samples after warm-up"}
    trend = {}
    x = np.array([s["episodes"] for s in steady], dtype=float)
    for key in ("driver_mb", "env_worker_mb_max", "env_worker_mb_total", "ray_core_mb_total"):
        y = np.array([s[key] for s in steady], dtype=float)
        slope = float(np.polyfit(x, y, 1)[0]) * 100 if np.ptp(x) > 0 else 0.0
        trend[key] = {"after_warmup": steady[0][key], "end": steady[-1][key], "peak": float(y.max()),
                      "growth": round(steady[-1][key] - steady[0][key], 1),
                      "slope_mb_per_100_episodes": round(slope, 2)}
    return trend


# -- the run -------------------------------------------------------------------------------------
def load_spec(args: argparse.Namespace):
    from robofleet.platform.spec import spec_from_dict

    trials = min(args.trials_per_task, args.episodes)
    tasks = math.ceil(args.episodes / trials)
    if args.episodes % trials or not 1 <= trials <= TRIALS_PER_TASK:
        raise SystemExit(f"--episodes {args.episodes}: use a multiple of --trials-per-task {trials} (1..50)")
    return spec_from_dict({
        "seed": args.seed,
        "name": "load-test",
        "env": {"family": "libero", "suite": args.suite, "tasks": list(range(tasks)), "trials": trials,
                "image_size": 32, "render_cameras": False, "reset": args.reset, "max_steps": args.max_steps},
        "policy": {"name": "zero", "chunk_size": args.max_steps},
        "run": {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker, "max_attempts": 2},
    })


def check_exactly_once(spec, run_dir: Path) -> dict[str, Any]:
    from robofleet.platform.episodes import expand_episodes
    from robofleet.platform.results import read_rows

    rows = read_rows(run_dir)
    ids = Counter(r["episode_id"] for r in rows)
    expected = {e.episode_id for e in expand_episodes(spec)}
    return {
        "expected": len(expected),
        "rows": len(rows),
        "duplicates": sorted(i for i, n in ids.items() if n > 1),
        "missing": sorted(expected - set(ids))[:20],
        "unexpected": sorted(set(ids) - expected)[:20],
        "errors": sum(1 for r in rows if r["error"]),
        "retried": sum(1 for r in rows if r["attempts"] not in ("", "1")),
        "exactly_once": len(rows) == len(expected) and set(ids) == expected and max(ids.values()) == 1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--episodes", type=int, default=1000, help="episodes: a multiple of 50 (or <= 50)")
    parser.add_argument("--workers", type=int, default=16, help="env workers")
    parser.add_argument("--max-steps", type=int, default=4, help="policy steps per episode")
    parser.add_argument("--out", required=True, help="the JSON written (e.g. benchmarks/results/load_1000ep_16w.json)")
    parser.add_argument("--run-dir", help="the run directory (default: a fresh temporary one)")
    parser.add_argument("--trials-per-task", type=int, default=TRIALS_PER_TASK,
                        help="trials per task (<= 50); fewer means more tasks, so more simulator rebuilds")
    parser.add_argument("--suite", default="libero_90", help="LIBERO suite (tasks 0.. are used; libero_90 has 90)")
    parser.add_argument("--reset", default="soft", choices=("soft", "hard"))
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray cluster")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--sample-s", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")

    from robofleet.platform.cluster import connect
    from robofleet.platform.fingerprint import fingerprint
    from robofleet.platform.runner import run

    spec = load_spec(args)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="robofleet-load-"))
    started = time.perf_counter()
    connect(num_cpus=args.cpus)
    sampler = RssSampler(run_dir / "episodes.csv", args.sample_s)
    sampler.start()
    try:
        summary = run(spec, run_dir, progress=sys.stderr.isatty())
    finally:
        sampler.stop()
        import ray

        ray.shutdown()
    wall_s = time.perf_counter() - started
    check = check_exactly_once(spec, run_dir)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "episodes": args.episodes, "workers": args.workers, "max_steps": args.max_steps, "suite": args.suite,
        "tasks": len(spec.env.tasks), "trials_per_task": spec.env.trials, "reset": args.reset,
        "cpus": args.cpus, "machine": {"cpu_count": os.cpu_count(), "python": stdlib_platform.python_version()},
        "run_dir": str(run_dir),
        "wall_s": round(wall_s, 1),
        "this_invocation": summary["figures"].get("this_invocation"),
        "check": check,
        "env_worker_processes_seen": len(sampler.workers_seen),
        "memory": memory_trend(sampler.samples, args.episodes),
        "rss_samples": sampler.samples,
        "software": {k: fingerprint().get(k) for k in ("git_sha", "packages")},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(f"{check['rows']}/{check['expected']} episodes recorded, exactly once: {check['exactly_once']}, "
          f"errors {check['errors']}, wall {wall_s:.0f} s; memory {json.dumps(result['memory'])}")
    print(f"wrote {args.out}")
    return 0 if check["exactly_once"] and not check["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
