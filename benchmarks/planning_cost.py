"""Cost of one best-of-N planning step with the model scorer, against the reference's per-GPU path
(N sequential batch-1 queries), in the same run.

For N in --ns, with a single future/value ("light": 1 world-model x 1 value) and with the reference
ensembles ("full": futures with 1/3/5 steps x values with 1..5 steps = 15 values per proposal):
    robofleet   BestOfN.decide(obs, seed): one batched predict of N proposals, then one batched
                imagine per future member and one batched value per value member (planners/model_scorer.py)
    sequential  for each proposal: predict, then its imagines and values one batch-1 call at a time
Policy: Cosmos Policy, random weights (speed does not depend on them), in-process on one device.

Examples:
    python benchmarks/planning_cost.py --config 2b --device cuda --ns 1,2,4,8 --out planning_cost.json
    python benchmarks/planning_cost.py --config tiny --device cpu --ns 1,2 --repeats 1 --out /tmp/pc.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.planners.registry import make_planner, validate_planner_options
from robofleet.policies.registry import make_policy

ENSEMBLES = {
    "light": {"future_steps": [1], "value_steps": [1]},
    "full": {"future_steps": [1, 3, 5], "value_steps": [1, 2, 3, 4, 5]},
}


def observation(seed: int) -> Observation:
    rng = np.random.default_rng(seed)
    images = {k: rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for k in ("agentview", "robot0_eye_in_hand")}
    return Observation(images=images, proprio=rng.normal(size=9).astype(np.float32),
                       instruction="pick up the alphabet soup and place it in the basket")


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def sequential_step(policy: Any, obs: Observation, n: int, ensemble: dict[str, list[int]], seed: int) -> None:
    """The reference's per-GPU path: every call at batch 1, one after another."""
    for i in range(n):
        proposal = policy.predict([obs], [seed + i])[0]
        for f, f_steps in enumerate(ensemble["future_steps"]):
            future = policy.imagine([obs], [proposal.actions], [seed + 100 * f + i], num_steps=f_steps)[0]
            for v, v_steps in enumerate(ensemble["value_steps"]):
                policy.value([obs], [proposal.actions], [future], [seed + 1000 * v + i], num_steps=v_steps)
    synchronize()


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="2b", choices=("2b", "tiny"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ns", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    policy = make_policy("cosmos", {"config": args.config, "checkpoint": "random", "device": args.device}, "libero")
    obs = observation(0)
    rows = []
    for name, ensemble in ENSEMBLES.items():
        for n in [int(x) for x in args.ns.split(",")]:
            options = validate_planner_options("best_of_n", {"n": n, "scorer": "model", **ensemble})
            planner = make_planner("best_of_n", options, policy, None)
            ours = timed(lambda: planner.decide(obs, 1234), args.repeats)
            reference = timed(lambda: sequential_step(policy, obs, n, ensemble, 1234), args.repeats)
            rows.append({"ensemble": name, "n": n, "robofleet_s": ours, "sequential_s": reference,
                         "speedup": reference / ours})
            print(f"{name:5s} N={n:2d}: robofleet {ours:7.2f} s   sequential batch-1 {reference:7.2f} s   "
                  f"{reference / ours:5.2f}x", flush=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
