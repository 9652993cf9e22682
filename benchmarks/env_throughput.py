"""Env throughput: a bare LIBERO loop vs one robofleet EnvWorker (overhead ratio), 1 vs 2 workers,
and what rendering only the observed steps is worth.

All four in the same run, on the same episodes (zero policy, chunks of 8, fixed length, cameras on):
    bare       LiberoEnv in this process: reset + step loop rendering every step, no Ray, no policy plumbing
    1 worker   robofleet.platform.runner.run with one EnvWorker (steady state: start-up excluded),
               rendering every step (env.render_steps = "every") like the bare loop
    2 workers  the same with two EnvWorkers
    1 worker, observed   one EnvWorker with the default env.render_steps = "observed" (cameras
               rendered on each chunk's last step only)
env steps/s = policy steps / seconds, resets included on every side.

Example:
    python benchmarks/env_throughput.py --episodes 4 --max-steps 100 --out benchmarks/results/env_throughput.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from robofleet.platform.runner import run
from robofleet.platform.spec import spec_from_dict


def spec(args: argparse.Namespace, workers: int, render_steps: str = "every"):
    return spec_from_dict({
        "seed": 0,
        "env": {"family": "libero", "suite": "libero_object", "tasks": [0], "trials": args.episodes,
                "image_size": args.image_size, "max_steps": args.max_steps, "render_steps": render_steps},
        "policy": {"name": "zero", "chunk_size": 8},
        "run": {"workers": workers, "cpus_per_worker": 1},
    })


def bare_loop(args: argparse.Namespace) -> dict[str, float]:
    from robofleet.envs.libero import LiberoEnv

    env = LiberoEnv("libero_object", image_size=args.image_size, max_steps=args.max_steps)
    # The task's simulator is built by the first reset, inside the timed region: a worker also builds it
    # in its first episode (the worker's start-up only constructs the LiberoEnv, as here).
    action = np.zeros(7)
    action[-1] = -1.0
    start = time.perf_counter()
    for trial in range(args.episodes):
        env.reset(0, trial, trial)
        for _ in range(args.max_steps):
            env.step(action)
    seconds = time.perf_counter() - start
    env.close()
    return {"seconds": seconds, "env_steps_per_s": args.episodes * args.max_steps / seconds}


def robofleet_loop(args: argparse.Namespace, workers: int, render_steps: str = "every") -> dict[str, float]:
    summary = run(spec(args, workers, render_steps), Path(tempfile.mkdtemp(prefix="envtp-")), progress=False)
    fig = summary["figures"]["this_invocation"]
    return {"seconds": fig["wall_s"] - fig["startup_s"], "env_steps_per_s": fig["env_steps_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    bare = bare_loop(args)
    one = robofleet_loop(args, 1)
    two = robofleet_loop(args, 2)
    observed = robofleet_loop(args, 1, "observed")
    result = {"args": vars(args), "bare": bare, "one_worker": one, "two_workers": two, "one_worker_observed": observed,
              "overhead_one_worker": 1 - one["env_steps_per_s"] / bare["env_steps_per_s"],
              "speedup_two_workers": two["env_steps_per_s"] / one["env_steps_per_s"],
              "speedup_observed_rendering": observed["env_steps_per_s"] / one["env_steps_per_s"]}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"bare {bare['env_steps_per_s']:.2f} steps/s | 1 worker {one['env_steps_per_s']:.2f} "
          f"(overhead {100 * result['overhead_one_worker']:.1f}%) | 2 workers {two['env_steps_per_s']:.2f} "
          f"(x{result['speedup_two_workers']:.2f}) | 1 worker, observed rendering {observed['env_steps_per_s']:.2f} "
          f"(x{result['speedup_observed_rendering']:.2f})")


if __name__ == "__main__":
    main()
