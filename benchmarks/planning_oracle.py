"""noisy(scripted) executed directly vs best-of-N with the simulator-oracle scorer, on the same episodes.

For every suite, two runs through `platform.runner.run` (Ray env workers, durable per episode,
resumable) on identical episodes (same init states, same episode seeds):

    direct     policy noisy(scripted, scale), planner direct
    best_of_n  the same policy, planner best_of_n with scorer "oracle": N proposals per query, each
               extended closed-loop by `--extend-steps` steps of noisy(scripted) (seeded per proposal),
               then the noiseless scripted expert plays up to `--lookahead` steps; the score rewards
               success, earlier success more (planners/oracle.py); the chosen segment is executed.

It is the upper bound of model-based planning over this proposal distribution (the simulator is a
perfect world model and value function), and an end-to-end test of the planning plumbing with real
physics: exact simulator restores, proposal seeds, plan stats. No cameras (`render_cameras = false`;
the scripted expert reads privileged state). Resets are hard (bit-identical episodes) unless
`--reset soft` (recorded in the results).

Results: per task and overall success rates with 95% Wilson intervals for both runs, the paired
comparison (platform/compare.py: both / only direct / only planned, exact McNemar p), mean steps,
planning cost (simulated steps per executed step, seconds per episode); written to `--results`
(default benchmarks/results/planning_oracle.json) and printed as a Markdown table.

Task choice (defaults): tasks the noiseless expert solves in hard-reset runs; libero_object task 0
is left out because the expert fails it after hard resets (it succeeds after soft ones).
Default noise: scale 0.3 (policies/noisy.py), measured with this script's direct runs.

Examples:
    # the official size: 50 trials x 4 tasks per suite (hours on 2 CPU cores)
    python benchmarks/planning_oracle.py --trials 50 --workers 2 --out runs/planning_oracle
    # a smaller version
    python benchmarks/planning_oracle.py --trials 10 --workers 1 --out runs/planning_oracle_small
    # other tasks / settings
    python benchmarks/planning_oracle.py --suites libero_object --tasks libero_object=1,2 --trials 5 \\
        --n 8 --lookahead 60 --out /tmp/po
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from robofleet.envs.libero_suites import LIBERO_SUITES
from robofleet.platform.compare import compare_runs
from robofleet.platform.report import episodes_frame, wilson_interval
from robofleet.platform.report_files import read_rows
from robofleet.platform.runner import run
from robofleet.platform.spec import spec_from_dict
from robofleet.policies.noisy import DEFAULT_SCALE

log = logging.getLogger("planning_oracle")

DEFAULT_TASKS = {"libero_object": [1, 2, 3, 4], "libero_spatial": [1, 2, 5, 6]}


def parse_tasks(values: Sequence[str], suites: Sequence[str]) -> dict[str, list[int]]:
    """`--tasks 1 2 3` (every suite) and/or `--tasks libero_object=1,2` (one suite) -> suite -> task ids."""
    tasks = {s: list(DEFAULT_TASKS.get(s, range(4))) for s in suites}
    plain = [v for v in values if "=" not in v]
    if plain:
        ids = [int(x) for v in plain for x in v.split(",") if x]
        tasks = {s: ids for s in suites}
    for value in values:
        if "=" in value:
            suite, _, ids = value.partition("=")
            if suite not in suites:
                raise SystemExit(f"--tasks {value}: suite {suite!r} is not among --suites {list(suites)}")
            tasks[suite] = [int(x) for x in ids.split(",") if x]
    return tasks


def make_spec(args: argparse.Namespace, suite: str, tasks: list[int], planned: bool) -> dict[str, Any]:
    """The run spec (as a dict) of one arm of the comparison."""
    planner: dict[str, Any] = {"name": "direct"}
    if planned:
        planner = {"name": "best_of_n", "scorer": "oracle", "n": args.n, "keep_base": True,
                   "extend_steps": args.extend_steps, "lookahead": args.lookahead,
                   "reference_policy": {"name": "scripted"}}
    return {
        "seed": args.seed,
        "name": f"{suite}-noisy{args.scale:g}-{'best_of_n' if planned else 'direct'}",
        "env": {"family": "libero", "suite": suite, "tasks": tasks, "trials": args.trials,
                "render_cameras": False, "reset": args.reset},
        "policy": {"name": "noisy", "base": "scripted", "scale": args.scale},
        "planner": planner,
        "run": {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker},
    }


def arm_figures(run_dir: Path) -> dict[str, Any]:
    """Per-task and overall success (Wilson 95%), steps and planning cost of one run directory."""
    frame = episodes_frame(read_rows(run_dir))

    def stats(group) -> dict[str, Any]:
        n, k = len(group), int(group["success"].sum())
        low, high = wilson_interval(k, n)
        out = {"episodes": n, "successes": k, "success_rate": k / n if n else None, "ci95": [low, high],
               "errors": int((group["error"] != "").sum()), "mean_steps": float(group["steps"].mean()) if n else None,
               "mean_wall_s": float(group["wall_s"].mean()) if n else None}
        plans = [json.loads(p) for p in group["plan_stats"] if p]
        if plans:
            sim = sum(s.get("sim_steps", 0) for plan in plans for s in plan)
            executed = int(group["steps"].sum())
            out["decisions"] = sum(len(plan) for plan in plans)
            out["sim_steps_per_executed_step"] = sim / executed if executed else None
            out["chosen_not_base"] = sum(s["chosen"] != 0 for plan in plans for s in plan) / out["decisions"]
        return out

    tasks = [{"task_id": int(tid), "task": g["task"].iloc[0], **stats(g)}
             for tid, g in frame.groupby("task_id", sort=True)] if len(frame) else []
    return {"overall": stats(frame) if len(frame) else {}, "tasks": tasks}


def markdown(results: dict[str, Any]) -> str:
    lines = ["| suite | task | direct | 95% CI | best_of_n (oracle) | 95% CI | only direct / only planned | McNemar p |",
             "|---|---|---|---|---|---|---|---|"]
    for suite, doc in results["suites"].items():
        cmp = {t["task_id"]: t for t in doc["paired"]["tasks"]}
        rows = [(t["task_id"], t, p) for t, p in zip(doc["direct"]["tasks"], doc["best_of_n"]["tasks"])]
        rows.append(("all", doc["direct"]["overall"], doc["best_of_n"]["overall"]))
        for task_id, d, p in rows:
            c = cmp.get(task_id, doc["paired"]["overall"])
            lines.append(
                f"| {suite} | {task_id} | {d['successes']}/{d['episodes']} = {d['success_rate']:.0%} | "
                f"[{d['ci95'][0]:.0%}, {d['ci95'][1]:.0%}] | {p['successes']}/{p['episodes']} = {p['success_rate']:.0%} | "
                f"[{p['ci95'][0]:.0%}, {p['ci95'][1]:.0%}] | {c['a_only']} / {c['b_only']} | {c['mcnemar_p']:.3g} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", default=list(DEFAULT_TASKS), choices=list(LIBERO_SUITES))
    parser.add_argument("--tasks", nargs="+", default=[],
                        help="task ids for every suite (1 2 3) or per suite (libero_object=1,2,3); default: "
                             + "; ".join(f"{s}={','.join(map(str, t))}" for s, t in DEFAULT_TASKS.items()))
    parser.add_argument("--trials", type=int, default=50, help="trials per task (init states 0..N-1)")
    parser.add_argument("--workers", type=int, default=1, help="env workers (one simulator each)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="noise std on the arm dims (action units)")
    parser.add_argument("--n", type=int, default=4, help="proposals per query")
    parser.add_argument("--extend-steps", type=int, default=7, help="closed-loop steps added to each proposal")
    parser.add_argument("--lookahead", type=int, default=100, help="steps the noiseless expert plays to find success")
    parser.add_argument("--reset", choices=("hard", "soft"), default="hard")
    parser.add_argument("--seed", type=int, default=0, help="sweep seed")
    parser.add_argument("--out", type=Path, required=True, help="folder for the run directories")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "planning_oracle.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    tasks = parse_tasks(args.tasks, args.suites)
    specs = {(suite, planned): spec_from_dict(make_spec(args, suite, tasks[suite], planned))
             for suite in args.suites for planned in (False, True)}  # validate everything before running
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "planning_oracle",
        "command": "python benchmarks/planning_oracle.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "settings": {"suites": args.suites, "tasks": tasks, "trials": args.trials, "workers": args.workers,
                     "scale": args.scale, "n": args.n, "extend_steps": args.extend_steps, "lookahead": args.lookahead,
                     "reset": args.reset, "seed": args.seed, "render_cameras": False, "keep_base": True},
        "suites": {},
    }
    for suite in args.suites:
        dirs = {}
        for planned in (False, True):
            arm = "best_of_n" if planned else "direct"
            dirs[arm] = args.out / suite / arm
            log.info("%s %s: %d tasks x %d trials -> %s", suite, arm, len(tasks[suite]), args.trials, dirs[arm])
            summary = run(specs[(suite, planned)], dirs[arm], progress=True)
            results.setdefault("fingerprint", summary.get("fingerprint"))
        results["suites"][suite] = {
            "direct": arm_figures(dirs["direct"]),
            "best_of_n": arm_figures(dirs["best_of_n"]),
            "paired": compare_runs(dirs["direct"], dirs["best_of_n"]),
            "run_dirs": {k: str(v) for k, v in dirs.items()},
        }
    results["wall_s"] = time.perf_counter() - started
    results["written"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["table_md"] = markdown(results)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, default=str))
    print(results["table_md"])
    log.info("results in %s (%.0f s)", args.results, results["wall_s"])
    return results


if __name__ == "__main__":
    main()
