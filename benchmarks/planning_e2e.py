"""End-to-end LIBERO evaluation with best-of-N planning against direct evaluation, in one process.

Each side is one `robofleet.platform.runner.run` of the same LIBERO episodes (same suite, task,
trials, fixed episode length: random weights never succeed, so every episode runs `--max-steps` env
steps) with the same policy replica settings; only `[planner]` differs:
    direct      one policy pass per chunk
    light       best_of_n, model scorer, 1 future x 1 value per proposal (protocol reference)
    full        best_of_n, model scorer, the reference's ensembles: futures 1/3/5 x values 1..5
    policy_value best_of_n ranked by the value of the policy pass itself (the reference's default
                best-of-N: no extra passes)
Reports per side: episodes/hour, env steps/s, decisions (policy queries) per second, the planning
step's share of the episode wall time (the rows' policy_s over wall_s: the whole decision, proposals
and scoring, queue waits included) and the replica's batch sizes; and each planning side's
episodes/hour as a ratio of direct's.

Examples:
    python benchmarks/planning_e2e.py --config 2b --sides direct,light,full --out planning_e2e.json
    python benchmarks/planning_e2e.py --config tiny --device cpu --sides direct,light --episodes 2 --workers 1 \\
        --max-steps 16 --n 2 --cpus-per-worker 0.5 --out /tmp/pe2e.json        # CPU smoke (~2 min)
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from robofleet.platform.results import read_rows
from robofleet.platform.spec import spec_from_dict

PLANNERS: dict[str, dict[str, Any]] = {
    "direct": {"name": "direct"},
    "light": {"name": "best_of_n", "scorer": "model", "future_steps": [1], "value_steps": [1]},
    "full": {"name": "best_of_n", "scorer": "model", "future_steps": [1, 3, 5], "value_steps": [1, 2, 3, 4, 5]},
    "policy_value": {"name": "best_of_n", "scorer": "model", "ranking": "policy_value"},
}


def planner_table(side: str, n: int) -> dict[str, Any]:
    """The `[planner]` table of a side (best_of_n sides with `n` proposals)."""
    table = dict(PLANNERS[side])
    if table["name"] == "best_of_n":
        table["n"] = n
    return table


def run_side(args: argparse.Namespace, side: str, out_dir: Path) -> dict[str, Any]:
    """One robofleet run of the side's planner; its figures, planning share and replica stats."""
    from robofleet.platform.runner import run

    episodes = args.episodes_full if side == "full" and args.episodes_full else args.episodes
    policy = {"name": "cosmos", "config": args.config, "checkpoint": "random", "device": args.device}
    if args.compile:
        policy["compile"] = args.compile
    if args.dit_precision:
        policy["dit_precision"] = args.dit_precision
    spec = spec_from_dict({
        "seed": 0,
        "name": f"planning-e2e-{side}",
        "env": {"family": "libero", "suite": args.suite, "tasks": [args.task], "trials": episodes,
                "image_size": args.image_size, "max_steps": args.max_steps},
        "policy": policy,
        "planner": planner_table(side, args.n),
        "serving": {"replicas": 1, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                    "deterministic": args.deterministic == "on",
                    "cpus_per_replica": 1.0 if args.device != "cpu" else 0.25},
        "run": {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker},
    })
    summary = run(spec, out_dir, progress=False)
    rows = read_rows(out_dir)
    wall = sum(float(r["wall_s"]) for r in rows)
    policy_s = sum(float(r["policy_s"]) for r in rows)
    decisions = sum(int(r["queries"]) for r in rows)
    figures = summary["figures"]["this_invocation"]
    return {
        "planner": planner_table(side, args.n),
        "episodes": len(rows),
        "errors": sum(1 for r in rows if r["error"]),
        "error_examples": sorted({r["error"].strip()[-600:] for r in rows if r["error"]})[:3],
        "env_steps": sum(int(r["steps"]) for r in rows),
        "decisions": decisions,
        "episodes_per_hour": figures["episodes_per_hour"],
        "env_steps_per_s": figures["env_steps_per_s"],
        "decisions_per_s": figures["chunks_per_s"],
        "planning_share_of_episode_wall": policy_s / wall if wall else None,
        "decision_s_mean": policy_s / max(1, decisions),
        "replicas": summary["figures"].get("replicas", []),
        "fingerprint": summary["fingerprint"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="2b", choices=("2b", "tiny"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--suite", default="libero_10")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=8, help="episodes per side (trials of the task)")
    parser.add_argument("--episodes-full", type=int, default=0, help="episodes of the full side (default --episodes)")
    parser.add_argument("--max-steps", type=int, default=64, help="fixed episode length in env steps")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--n", type=int, default=8, help="proposals per decision")
    parser.add_argument("--sides", default="direct,light,full", help=f"comma-separated, of {sorted(PLANNERS)}")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--max-batch", type=int, default=16, help="the replica warms up every size up to it")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--compile", default=None, help='cosmos `compile` ("blocks": ~30-60 s to start)')
    parser.add_argument("--dit-precision", default=None)
    parser.add_argument("--deterministic", default="on", choices=("on", "off"),
                        help="[serving] deterministic (on: the default; batch-invariant GEMMs on CUDA)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    sides = args.sides.split(",")
    unknown = [s for s in sides if s not in PLANNERS]
    if unknown:
        parser.error(f"--sides: unknown {unknown}; allowed: {sorted(PLANNERS)}")

    results: dict[str, Any] = {"args": vars(args), "sides": {}}
    for side in sides:
        results["sides"][side] = run_side(args, side, Path(tempfile.mkdtemp(prefix=f"pe2e-{side}-")))
        row = results["sides"][side]
        print(f"{side:12s} {row['episodes_per_hour']:9.1f} episodes/h  {row['env_steps_per_s']:7.1f} env steps/s  "
              f"{row['decision_s_mean']:6.2f} s/decision  planning {100 * row['planning_share_of_episode_wall']:.0f}% "
              f"of episode wall  errors {row['errors']}", flush=True)
        for example in row["error_examples"]:
            print("  error:", example, flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    if "direct" in results["sides"]:
        base = results["sides"]["direct"]["episodes_per_hour"]
        results["episodes_per_hour_vs_direct"] = {
            side: row["episodes_per_hour"] / base for side, row in results["sides"].items() if side != "direct"}
        print("episodes/h vs direct: " + ", ".join(f"{k} {v:.3f}x" for k, v in results["episodes_per_hour_vs_direct"].items()))
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
