"""noisy(scripted) executed directly vs best-of-N with the simulator-oracle scorer, on the same episodes.

For every suite, two runs through `platform.runner.run` (Ray env workers, durable per episode,
resumable) on identical episodes (same init states, same episode seeds), in one Ray cluster:

    direct     policy noisy(scripted, noise), planner direct
    best_of_n  the same policy, planner best_of_n with scorer "oracle", keep_base, prune: N proposals
               per decision, each extended closed-loop by `--extend-steps` steps of noisy(scripted)
               (seeded per proposal) into a segment of 1 + extend_steps actions, then the noiseless
               scripted expert plays up to `--lookahead` steps; the score rewards success, earlier
               success more (planners/oracle.py); the chosen segment is executed. Proposal 0 is
               direct's own action (kept unless strictly beaten); pruning stops a proposal once it
               cannot beat the best so far (same choice, fewer simulated steps).

It is the upper bound of model-based planning over this proposal distribution (the simulator is a
perfect world model and value function) and an end-to-end test of the planning plumbing with real
physics: exact simulator restores, proposal seeds, plan stats. No cameras (`render_cameras = false`:
the scripted expert reads privileged state, so neither the episodes nor the oracle's simulated steps
render anything). Hard resets (bit-identical episodes).

Results (`--out`/planning_oracle.json, and a Markdown table on stdout): per task, per suite and
overall success with 95% Wilson intervals for both arms; the paired comparison (both / only direct /
only planned, exact McNemar p, per task, suite and overall); cost per arm (wall, executed env steps,
oracle-simulated steps, decisions); the run directories with their episodes.csv. At the end it
prints the predicted wall time of the same settings at `--predict-trials` trials on
`--predict-workers` workers of the 16-core GPU machine, from this run's measured steps per episode
and that machine's measured no-camera step rates (DEVICE_* below).

Defaults: tasks where noisy(scripted, 0.3) direct succeeds 20-50% of the time (10-trial and 4-trial
probes); libero_object task 0 was left out after a failing probe that was not investigated (the
noiseless expert solves it 50/50 with hard resets, BENCHMARKS.md). Segments of 8 steps
(`--extend-steps 7`): measured on libero_object tasks 1-4, 10 trials, that planned 95% against 38%
direct. Longer segments are cheaper but plan worse: with 32-step segments (`--extend-steps 31`) two
of four libero_object task-1 episodes still failed (no 32-step noisy segment makes progress, so every
decision's best proposal needs the whole lookahead), at ~2,700 simulated steps per episode.

Cost: ~3,700 simulated steps per planned episode with 8-step segments (~30 per executed step),
~230 for a direct one. On the 16-core GPU machine (14 workers, no cameras: ~43 steps/s per worker on
libero_object, ~30 on libero_spatial) the official size is ~20-25 min, more than one 10-minute call:
the run directories are resumable, so repeat the same command (same --out, kept between calls) until
it completes; the call that completes writes the JSON. `--predict-*` prints the estimate.

Examples:
    # the official size on the 16-core GPU machine (repeat until complete; see Cost)
    timeout 540 python benchmarks/planning_oracle.py --workers 14 --trials 50 --out runs/planning_oracle
    # a small version (2 tasks x 4 trials)
    python benchmarks/planning_oracle.py --workers 2 --trials 4 --tasks libero_object=1 libero_spatial=1 \\
        --out runs/planning_oracle_small
    # other settings
    python benchmarks/planning_oracle.py --suites libero_object --tasks 1,2 --trials 5 --n 8 --noise 0.4 \\
        --extend-steps 15 --out /tmp/po
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from robofleet.envs.libero_suites import LIBERO_SUITES
from robofleet.platform.report import episodes_frame, wilson_interval
from robofleet.platform.results import read_rows
from robofleet.platform.runner import run
from robofleet.platform.spec import spec_from_dict

log = logging.getLogger("planning_oracle")

DEFAULT_TASKS = {"libero_object": [1, 2], "libero_spatial": [1, 6]}
PAIR_KEYS = ["family", "suite", "task_id", "trial", "sweep_seed"]  # as platform/compare.py
# The 16-core GPU machine, 14 env workers, no cameras, hard resets: per-worker env steps/s and seconds
# per reset, measured by the scripted-expert benchmark (benchmarks/results/scripted_libero_*_50_episodes.csv:
# steps / env_s, mean reset_s), and the start-up of one run (workers built, first simulators loaded).
DEVICE_STEPS_PER_S = {"libero_object": 43.5, "libero_spatial": 30.3}
DEVICE_RESET_S = {"libero_object": 1.47, "libero_spatial": 0.91}
DEVICE_STARTUP_S = 17.0


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p (platform/compare.py's; by hand if its report imports are missing)."""
    try:
        from robofleet.platform.compare import mcnemar_exact
    except ImportError:  # compare.py pulls in the HTML/plot reports (matplotlib)
        n = a_only + b_only
        if n == 0:
            return 1.0
        tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2 ** n
        return min(1.0, 2 * tail)
    return mcnemar_exact(a_only, b_only)


def parse_tasks(values: Sequence[str], suites: Sequence[str]) -> dict[str, list[int]]:
    """`--tasks 1 2 3` (every suite) and/or `--tasks libero_object=1,2` (one suite) -> suite -> task ids.
    With per-suite values only, the suites named are run (the others dropped)."""
    tasks = {s: list(DEFAULT_TASKS.get(s, range(4))) for s in suites}
    plain = [v for v in values if "=" not in v]
    if plain:
        ids = [int(x) for v in plain for x in v.split(",") if x]
        tasks = {s: ids for s in suites}
    named = {}
    for value in values:
        if "=" in value:
            suite, _, ids = value.partition("=")
            if suite not in suites:
                raise SystemExit(f"--tasks {value}: suite {suite!r} is not among --suites {list(suites)}")
            named[suite] = [int(x) for x in ids.split(",") if x]
    if named and not plain:
        return named
    return {**tasks, **named}


def make_spec(args: argparse.Namespace, suite: str, tasks: list[int], planned: bool) -> dict[str, Any]:
    """The run spec (as a dict) of one arm of the comparison."""
    planner: dict[str, Any] = {"name": "direct"}
    if planned:
        planner = {"name": "best_of_n", "scorer": "oracle", "n": args.n, "keep_base": True, "prune": True,
                   "extend_steps": args.extend_steps, "lookahead": args.lookahead,
                   "reference_policy": {"name": "scripted"}}
    return {
        "seed": args.seed,
        "name": f"{suite}-noisy{args.noise:g}-{'best_of_n' if planned else 'direct'}",
        "env": {"family": "libero", "suite": suite, "tasks": tasks, "trials": args.trials,
                "render_cameras": False, "reset": "hard"},
        "policy": {"name": "noisy", "base": "scripted", "scale": args.noise},
        "planner": planner,
        "run": {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker},
    }


def read_frame(run_dir: Path) -> pd.DataFrame:
    rows = read_rows(run_dir)
    if not rows:
        return pd.DataFrame()
    frame = episodes_frame(rows)
    plans = [json.loads(p) if p else [] for p in frame["plan_stats"].fillna("")]
    frame["sim_steps"] = [sum(int(s.get("sim_steps", 0)) for s in plan) for plan in plans]
    frame["decisions"] = [len(plan) for plan in plans]
    frame["chosen_not_base"] = [sum(int(s.get("chosen", 0) != 0) for s in plan) for plan in plans]
    return frame


def stats(group: pd.DataFrame) -> dict[str, Any]:
    """Success (Wilson 95%), errors and cost of a set of episodes."""
    n, k = len(group), int(group["success"].sum()) if len(group) else 0
    low, high = wilson_interval(k, n)
    executed, simulated = int(group["steps"].sum()) if n else 0, int(group["sim_steps"].sum()) if n else 0
    decisions = int(group["decisions"].sum()) if n else 0
    return {
        "episodes": n, "successes": k, "success_rate": k / n if n else None, "ci95": [low, high],
        "errors": int((group["error"] != "").sum()) if n else 0,
        "mean_steps": float(group["steps"].mean()) if n else None,
        "env_steps": executed, "oracle_sim_steps": simulated, "total_sim_steps": executed + simulated,
        "sim_steps_per_executed_step": simulated / executed if executed else 0.0,
        "decisions": decisions,
        "chosen_not_base": int(group["chosen_not_base"].sum()) / decisions if decisions else None,
        "episode_seconds": float(group["wall_s"].sum()) if n else 0.0,
        "reset_seconds": float(group["reset_s"].sum()) if n else 0.0,
    }


def paired(direct: pd.DataFrame, planned: pd.DataFrame) -> dict[str, Any]:
    """Episodes matched by identity; counts and the exact McNemar p (A = direct, B = best_of_n)."""
    pairs = direct[PAIR_KEYS + ["success"]].merge(planned[PAIR_KEYS + ["success"]], on=PAIR_KEYS,
                                                   suffixes=("_a", "_b"))
    a_only = int(((pairs.success_a == 1) & (pairs.success_b == 0)).sum())
    b_only = int(((pairs.success_a == 0) & (pairs.success_b == 1)).sum())
    n = len(pairs)
    return {"paired": n, "both": int(((pairs.success_a == 1) & (pairs.success_b == 1)).sum()),
            "direct_only": a_only, "best_of_n_only": b_only,
            "neither": int(((pairs.success_a == 0) & (pairs.success_b == 0)).sum()),
            "delta": (int(pairs.success_b.sum()) - int(pairs.success_a.sum())) / n if n else None,
            "mcnemar_p": mcnemar_p(a_only, b_only)}


def figures(frames: dict[tuple[str, str], pd.DataFrame]) -> dict[str, Any]:
    """Per task, per suite and overall: both arms' stats and the paired comparison."""
    direct = pd.concat([f for (s, arm), f in frames.items() if arm == "direct" and len(f)], ignore_index=True)
    planned = pd.concat([f for (s, arm), f in frames.items() if arm == "best_of_n" and len(f)], ignore_index=True)
    out: dict[str, Any] = {"tasks": [], "suites": {}}
    for (suite, task_id), d in direct.groupby(["suite", "task_id"], sort=True):
        p = planned[(planned.suite == suite) & (planned.task_id == task_id)]
        out["tasks"].append({"suite": suite, "task_id": int(task_id), "task": d["task"].iloc[0],
                             "direct": stats(d), "best_of_n": stats(p), "paired": paired(d, p)})
    for suite, d in direct.groupby("suite", sort=True):
        p = planned[planned.suite == suite]
        out["suites"][suite] = {"direct": stats(d), "best_of_n": stats(p), "paired": paired(d, p)}
    out["overall"] = {"direct": stats(direct), "best_of_n": stats(planned), "paired": paired(direct, planned)}
    return out


def markdown(fig: dict[str, Any]) -> str:
    def cell(s: dict[str, Any]) -> str:
        return (f"{s['successes']}/{s['episodes']} = {s['success_rate']:.0%} "
                f"[{s['ci95'][0]:.0%}, {s['ci95'][1]:.0%}]")

    lines = ["| suite | task | direct (95% CI) | best_of_n oracle (95% CI) | only direct / only planned | "
             "McNemar p | oracle sim steps per executed step |", "|---|---|---|---|---|---|---:|"]
    rows = [(t["suite"], str(t["task_id"]), t) for t in fig["tasks"]]
    rows += [(suite, "all", s) for suite, s in fig["suites"].items()] + [("all", "all", fig["overall"])]
    for suite, task, r in rows:
        c = r["paired"]
        lines.append(f"| {suite} | {task} | {cell(r['direct'])} | {cell(r['best_of_n'])} | "
                     f"{c['direct_only']} / {c['best_of_n_only']} | {c['mcnemar_p']:.3g} | "
                     f"{r['best_of_n']['sim_steps_per_executed_step']:.1f} |")
    return "\n".join(lines)


def predict_wall(frames: dict[tuple[str, str], pd.DataFrame], tasks: dict[str, list[int]], trials: int,
                 workers: int) -> dict[str, Any]:
    """Wall time of these settings at `trials` trials per task on `workers` workers of the GPU machine:
    the measured mean simulated steps (executed + oracle) per episode of each arm and suite, at that
    machine's step rates, spread over the workers, plus one start-up per run and half an episode of
    tail per run (the last episodes leave workers idle)."""
    arms: dict[str, float] = {}
    total = 0.0
    for (suite, arm), frame in frames.items():
        if not len(frame):
            continue
        steps = float((frame["steps"] + frame["sim_steps"]).mean())
        episode_s = steps / DEVICE_STEPS_PER_S[suite] + DEVICE_RESET_S[suite]
        episodes = len(tasks[suite]) * trials
        wall = episodes * episode_s / workers + 0.5 * episode_s + DEVICE_STARTUP_S
        arms[f"{suite}/{arm}"] = {"mean_steps_per_episode": steps, "episode_s": episode_s, "wall_s": wall}
        total += wall
    return {"trials": trials, "workers": workers, "wall_s": total, "runs": arms,
            "device_steps_per_s": DEVICE_STEPS_PER_S}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", default=list(DEFAULT_TASKS), choices=list(LIBERO_SUITES))
    parser.add_argument("--tasks", nargs="+", default=[],
                        help="task ids for every suite (1 2 3) or per suite (libero_object=1,2); default: "
                             + " ".join(f"{s}={','.join(map(str, t))}" for s, t in DEFAULT_TASKS.items()))
    parser.add_argument("--trials", type=int, default=50, help="trials per task (init states 0..N-1)")
    parser.add_argument("--workers", type=int, default=14, help="env workers (one simulator each)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--noise", "--scale", dest="noise", type=float, default=0.3,
                        help="noise std on the 6 arm action dims (policies/noisy.py)")
    parser.add_argument("--n", type=int, default=4, help="proposals per decision (proposal 0 = direct's)")
    parser.add_argument("--extend-steps", type=int, default=7,
                        help="closed-loop noisy steps added to each proposal: segments of 1 + this many steps")
    parser.add_argument("--lookahead", type=int, default=100, help="steps the noiseless expert plays to find success")
    parser.add_argument("--seed", type=int, default=0, help="sweep seed")
    parser.add_argument("--out", type=Path, required=True, help="folder for the run directories and the JSON")
    parser.add_argument("--predict-trials", type=int, default=50)
    parser.add_argument("--predict-workers", type=int, default=14)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    tasks = parse_tasks(args.tasks, args.suites)
    specs = {(suite, arm): spec_from_dict(make_spec(args, suite, tasks[suite], arm == "best_of_n"))
             for suite in tasks for arm in ("direct", "best_of_n")}  # validate everything before running
    started = time.perf_counter()
    from robofleet.platform.cluster import connect
    import ray

    started_cluster = connect(None)  # one cluster for every run (each run() joins it)
    runs: dict[str, Any] = {}
    try:
        for (suite, arm), spec in specs.items():
            run_dir = args.out / suite / arm
            log.info("%s %s: tasks %s x %d trials, %d workers -> %s", suite, arm, tasks[suite], args.trials,
                     args.workers, run_dir)
            t = time.perf_counter()
            summary = run(spec, run_dir, progress=True)
            runs[f"{suite}/{arm}"] = {"dir": str(run_dir), "episodes_csv": str(run_dir / "episodes.csv"),
                                      "wall_s": time.perf_counter() - t, "spec_hash": spec.identity_hash(),
                                      "this_invocation": summary.get("figures", {}).get("this_invocation")}
            runs.setdefault("fingerprint", summary.get("fingerprint"))
    finally:
        if started_cluster:
            ray.shutdown()
    frames = {key: read_frame(args.out / key[0] / key[1]) for key in specs}
    fig = figures(frames)
    results: dict[str, Any] = {
        "benchmark": "planning_oracle",
        "command": "python benchmarks/planning_oracle.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"tasks": tasks, "trials": args.trials, "workers": args.workers, "noise": args.noise,
                     "n": args.n, "extend_steps": args.extend_steps, "lookahead": args.lookahead,
                     "keep_base": True, "prune": True, "reset": "hard", "render_cameras": False, "seed": args.seed},
        "wall_s": time.perf_counter() - started,
        "runs": runs,
        **fig,
        "prediction": predict_wall(frames, tasks, args.predict_trials, args.predict_workers),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    results["table_md"] = markdown(fig)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "planning_oracle.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(results["table_md"])
    for key, r in runs.items():
        if key != "fingerprint":
            print(f"{key}: wall {r['wall_s']:.0f} s")
    pred = results["prediction"]
    print(f"total wall {results['wall_s']:.0f} s; predicted on the 16-core GPU machine at {pred['trials']} "
          f"trials/task with {pred['workers']} workers: {pred['wall_s']:.0f} s")
    log.info("results in %s", path)
    return results


if __name__ == "__main__":
    main()
