"""Success rate of the scripted LIBERO expert per task, measured with LiberoEnv directly (no Ray).

Runs N trials (init states 0..N-1) of each task of the given suites, no cameras, hard resets by
default, the protocol's step limits. A process pool of `--workers` processes, each holding one
LiberoEnv, runs the episodes; every finished episode is appended to `<out>/episodes.csv`
(suite, task_id, trial, success, steps, seconds, error) as it ends, and `<out>/success.json` holds
the per-task and per-suite success rates (rewritten as episodes finish, complete at the end).
Episodes already in the CSV are skipped, so an interrupted sweep resumes where it stopped.
An episode that raises is recorded with its traceback in `error` and counted as a failure (and
listed under `errors` in the JSON), never silently.

The official numbers come from the robofleet CLI; this script is the expert's development bench.

Examples:
    python benchmarks/scripted_success.py --suites libero_object libero_spatial --trials 50 --workers 2 --out runs/scripted
    python benchmarks/scripted_success.py --suites libero_goal --tasks 6 8 --trials 5 --workers 1 --out /tmp/scripted_goal
    python benchmarks/scripted_success.py --suites libero_spatial --trials 10 --option speed=0.8 --out /tmp/slow
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from tqdm import tqdm

from robofleet.envs.libero_suites import LIBERO_SUITES
from robofleet.platform.episodes import episode_key
from robofleet.platform.seeds import episode_seed

log = logging.getLogger("scripted_success")

CSV_COLUMNS = ("suite", "task_id", "trial", "success", "steps", "seconds", "error")


@dataclass(frozen=True)
class Episode:
    """One episode to run: trial `trial` (init state index) of `task_id` in `suite`."""

    suite: str
    task_id: int
    trial: int
    seed: int


# -- worker side: one LiberoEnv per process ---------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(options: dict[str, Any], hard_reset: bool, max_steps: int | None) -> None:
    from robofleet.policies.scripted import make_scripted

    _WORKER.update(policy=make_scripted(options, "libero"), hard_reset=hard_reset, max_steps=max_steps, env=None)


def _env_for(suite: str):
    from robofleet.envs.libero import LiberoEnv

    env = _WORKER["env"]
    if env is None or env.suite_name != suite:
        if env is not None:
            env.close()
        env = LiberoEnv(suite, render_cameras=False, hard_reset=_WORKER["hard_reset"], max_steps=_WORKER["max_steps"])
        _WORKER["env"] = env
    return env


def run_episode(episode: Episode) -> dict[str, Any]:
    """Run one episode in this worker's env; a row of the CSV (errors caught and recorded)."""
    start = time.perf_counter()
    row: dict[str, Any] = {"suite": episode.suite, "task_id": episode.task_id, "trial": episode.trial}
    steps, success, error = 0, False, ""
    try:
        env = _env_for(episode.suite)
        policy = _WORKER["policy"]
        policy.reset()
        obs = env.reset(episode.task_id, episode.trial, episode.seed)
        finished = False
        while not finished:
            for action in policy.predict([obs], [episode.seed])[0].actions:
                result = env.step(action)
                steps += 1
                obs = result.obs
                finished = result.done or steps >= env.max_steps
                if finished:
                    success = result.success
                    break
    except Exception:  # noqa: BLE001 - recorded with its traceback, counted as a failure
        error = traceback.format_exc()
        if _WORKER.get("env") is not None:  # rebuild after a simulator error
            try:
                _WORKER["env"].close()
            finally:
                _WORKER["env"] = None
    row.update(success=bool(success), steps=steps, seconds=round(time.perf_counter() - start, 3), error=error)
    return row


# -- driver side ---------------------------------------------------------------------------------
def plan_episodes(suites: Sequence[str], tasks: Sequence[int] | None, trials: int, seed: int) -> list[Episode]:
    """Every (suite, task, trial) to run, suite-major then task then trial."""
    episodes = []
    for suite in suites:
        for task_id in tasks if tasks is not None else range(LIBERO_SUITES[suite].n_tasks):
            for trial in range(trials):
                key = episode_key("libero", suite, task_id, trial)
                episodes.append(Episode(suite, task_id, trial, episode_seed(seed, key)))
    return episodes


def read_done(csv_path: Path) -> pd.DataFrame:
    """Episodes already recorded in the CSV (empty frame when there is none)."""
    if not csv_path.exists():
        return pd.DataFrame(columns=list(CSV_COLUMNS))
    return pd.read_csv(csv_path, keep_default_na=False)


def summarize(frame: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """Per-task and per-suite success rates from the episode table."""
    frame = frame.copy()
    frame["success"] = frame["success"].astype(str).str.lower().isin(("true", "1"))
    frame["is_error"] = frame["error"].astype(str).str.len() > 0
    suites: dict[str, Any] = {}
    for suite, group in frame.groupby("suite", sort=True):
        per_task = {}
        for task_id, task in group.groupby("task_id", sort=True):
            per_task[str(int(task_id))] = {
                "trials": int(len(task)),
                "successes": int(task["success"].sum()),
                "success_rate": round(float(task["success"].mean()), 4),
                "errors": int(task["is_error"].sum()),
                "failed_trials": sorted(int(t) for t in task.loc[~task["success"], "trial"]),
                "mean_steps_success": round(float(task.loc[task["success"], "steps"].mean()), 1)
                if task["success"].any()
                else None,
                "mean_seconds": round(float(task["seconds"].astype(float).mean()), 2),
            }
        suites[str(suite)] = {
            "trials": int(len(group)),
            "success_rate": round(float(group["success"].mean()), 4),
            "min_task_success_rate": min(t["success_rate"] for t in per_task.values()),
            "tasks": per_task,
        }
    errors = [
        {"suite": r.suite, "task_id": int(r.task_id), "trial": int(r.trial), "error": r.error.strip().splitlines()[-1]}
        for r in frame.loc[frame["is_error"]].itertuples()
    ]
    return {**meta, "suites": suites, "errors": errors}


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option {pair!r}: expected KEY=VALUE")
        options[key] = json.loads(value)
    return options


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", default=["libero_object", "libero_spatial"], choices=list(LIBERO_SUITES))
    parser.add_argument("--tasks", nargs="+", type=int, default=None, help="task ids (default: all of each suite)")
    parser.add_argument("--trials", type=int, default=50, help="trials per task: init states 0..N-1")
    parser.add_argument("--workers", type=int, default=1, help="processes, one LiberoEnv each")
    parser.add_argument("--seed", type=int, default=0, help="sweep seed (episode seeds derive from it)")
    parser.add_argument("--reset", choices=("hard", "soft"), default="hard")
    parser.add_argument("--max-steps", type=int, default=None, help="policy steps (default: the suite's limit)")
    parser.add_argument("--option", action="append", default=[], help="policy option KEY=JSON_VALUE (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="folder for episodes.csv and success.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    options = _parse_options(args.option)
    from robofleet.policies.scripted import make_scripted

    make_scripted(options, "libero")  # validate the options before starting workers
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = args.out / "episodes.csv", args.out / "success.json"
    done = read_done(csv_path)
    seen = {(r.suite, int(r.task_id), int(r.trial)) for r in done.itertuples()}
    todo = [e for e in plan_episodes(args.suites, args.tasks, args.trials, args.seed) if (e.suite, e.task_id, e.trial) not in seen]
    log.info("%d episodes to run (%d already in %s), %d workers", len(todo), len(seen), csv_path, args.workers)

    import mujoco

    meta = {
        "policy": "scripted",
        "options": options,
        "reset": args.reset,
        "max_steps": args.max_steps,
        "render_cameras": False,
        "seed": args.seed,
        "mujoco": mujoco.__version__,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_header = not csv_path.exists()
    start = time.perf_counter()
    with open(csv_path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        if write_header:
            writer.writeheader()
        if todo:
            context = multiprocessing.get_context("spawn")  # simulators and EGL do not survive a fork
            with ProcessPoolExecutor(
                args.workers, mp_context=context, initializer=_init_worker, initargs=(options, args.reset == "hard", args.max_steps)
            ) as pool:
                futures = [pool.submit(run_episode, e) for e in todo]
                with tqdm(total=len(futures), desc="episodes", unit="ep") as bar:
                    for future in as_completed(futures):
                        row = future.result()
                        writer.writerow(row)
                        handle.flush()
                        bar.update(1)
                        bar.set_postfix_str(f"{row['suite']} t{row['task_id']} #{row['trial']} {'ok' if row['success'] else 'FAIL'}")
    meta["wall_seconds"] = round(time.perf_counter() - start, 1)
    summary = summarize(read_done(csv_path), meta)
    json_path.write_text(json.dumps(summary, indent=2))
    for suite, info in summary["suites"].items():
        rates = " ".join(f"{t}:{v['successes']}/{v['trials']}" for t, v in info["tasks"].items())
        log.info("%s success %.3f (min task %.3f) | %s", suite, info["success_rate"], info["min_task_success_rate"], rates)
    if summary["errors"]:
        log.warning("%d episodes raised; see 'error' in %s", len(summary["errors"]), csv_path)
    return summary


if __name__ == "__main__":
    main()
