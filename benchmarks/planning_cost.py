"""Cost of one best-of-N planning step with the model scorer: three paths side by side in one process.

For N in --ns, with a single future/value ("light": 1 world-model x 1 value) and with the reference
ensembles ("full": futures with 1/3/5 steps x values with 1..5 steps = 15 values per proposal):
    batched     BestOfN.decide under protocol "reference": one predict of N proposals, then ONE
                world-model call for all N x F futures and ONE value call for all N x F x V values,
                each a single sampler whose members leave after their last evaluation, conditioned
                on the generated latents (no VAE encode after the action pass)
    per_member  today's path before the batched stage: one batched imagine per future member and one
                batched value per value member, the observation re-encoded and the chunk re-injected
                in every call (protocol "robofleet", proposals without latents, stage_batching off)
    batch1      the reference's per-GPU path: for each proposal its predict, imagines and values one
                batch-1 call at a time, conditioned on the generated latents
Per path and row: seconds per planning step (median of --repeats after a warm-up step), network
evaluations per step (what the sampler ran, counted at the DiT), evaluations/s, and the DiT alone at
the batch sizes the batched path used (evaluations/s of bare DiT calls at that size), so the
batched path's share of the bare-DiT rate can be read off. Random weights (speed does not depend on them).

Examples:
    python benchmarks/planning_cost.py --config 2b --device cuda --ns 8 --compile blocks --out planning_cost.json
    python benchmarks/planning_cost.py --config tiny --device cpu --ns 2 --ensembles light --repeats 1 --warmup 1 \
        --out /tmp/pc.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.planners.registry import make_planner, validate_planner_options
from robofleet.policies.registry import make_policy

ENSEMBLES = {
    "light": {"future_steps": [1], "value_steps": [1]},
    "full": {"future_steps": [1, 3, 5], "value_steps": [1, 2, 3, 4, 5]},
}
PATHS = ("batched", "per_member", "batch1")


class FakeLiberoEnv:
    family = "libero"


def observation(seed: int) -> Observation:
    rng = np.random.default_rng(seed)
    images = {k: rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for k in ("agentview", "robot0_eye_in_hand")}
    return Observation(images=images, proprio=rng.normal(size=9).astype(np.float32),
                       instruction="pick up the alphabet soup and place it in the basket")


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class CountingNetwork:
    """The policy's network with every DiT call counted by batch size (everything else passes through)."""

    def __init__(self, network: Any):
        self._network = network
        self.sizes: Counter = Counter()

    def __call__(self, x_in: Any, *rest: Any) -> Any:
        self.sizes[int(x_in.shape[0])] += 1
        return self._network(x_in, *rest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._network, name)


def counted(policy: Any) -> tuple[Any, CountingNetwork]:
    """The same policy (network shared) whose DiT calls are counted."""
    from robofleet.policies.cosmos.policy import CosmosPolicy

    network = CountingNetwork(policy.network)
    return CosmosPolicy(network, policy.layout, policy.stats, policy.embeddings, policy.settings,
                        policy.camera_keys), network


@contextmanager
def dit_batches(network: CountingNetwork) -> Iterator[Counter]:
    """The DiT calls by batch size made while the block runs."""
    before = Counter(network.sizes)
    sizes: Counter = Counter()
    try:
        yield sizes
    finally:
        sizes.update(network.sizes - before)


def batch1_step(policy: Any, obs: Observation, n: int, ensemble: dict[str, list[int]], seed: int) -> None:
    """The reference's per-GPU path: every call at batch 1, one after another (seeds as the reference)."""
    for i in range(n):
        proposal = policy.predict([obs], [seed + i])[0]
        for f, f_steps in enumerate(ensemble["future_steps"]):
            future = policy.imagine([obs], [proposal], [seed + i + f], num_steps=_reference(f_steps))[0]
            for v, v_steps in enumerate(ensemble["value_steps"]):
                policy.value([obs], [proposal.actions], [future], [seed + i + v], num_steps=_reference(v_steps))


def _reference(steps: int) -> int:
    from robofleet.policies.cosmos.sampler import reference_evaluations

    return reference_evaluations(steps)


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):  # compiles, then CUDA-graph recordings of every batch size the path uses
        fn()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dit_rate(policy: Any, sizes: Sequence[int], repeats: int) -> dict[int, float]:
    """Sample-evaluations per second of bare DiT calls at each batch size."""
    rates = {}
    for size in sorted(set(sizes)):
        inputs = policy.random_dit_inputs(size)
        seconds = timed(lambda: policy.network(*inputs), max(repeats, 3), warmup=2)
        rates[size] = size / seconds
    return rates


def measure(policy: Any, network: CountingNetwork, obs: Observation, n: int, name: str,
            ensemble: dict[str, list[int]], repeats: int, warmup: int, paths: Sequence[str] = PATHS,
            seed: int = 195) -> dict[str, Any]:
    options = validate_planner_options("best_of_n", {"n": n, "scorer": "model", **ensemble})
    batched = make_planner("best_of_n", options, policy, FakeLiberoEnv(), protocol="reference")
    # today's path: no latents handed on (a policy without with_settings), one call per member
    per_member = make_planner("best_of_n", options, _WithoutLatents(policy), FakeLiberoEnv(), protocol="robofleet",
                              stage_batching=False)
    latent_policy = policy.with_settings(return_latents=True)
    steps: dict[str, Callable[[], Any]] = {
        "batched": lambda: batched.decide(obs, seed),
        "per_member": lambda: per_member.decide(obs, seed),
        "batch1": lambda: batch1_step(latent_policy, obs, n, ensemble, seed),
    }
    row: dict[str, Any] = {"ensemble": name, "n": n}
    for path, step in steps.items():
        if path not in paths:
            continue
        with dit_batches(network) as sizes:  # also the first warm-up step
            step()
        evaluations = sum(size * count for size, count in sizes.items())
        seconds = timed(step, repeats, max(warmup - 1, 0))
        row[path] = {"seconds_per_step": seconds, "network_evaluations": evaluations,
                     "evaluations_per_s": evaluations / seconds, "dit_calls": sum(sizes.values()),
                     "dit_batch_sizes": {str(k): v for k, v in sorted(sizes.items())}}
    used = [int(k) for k in row["batched"]["dit_batch_sizes"]]
    rates = dit_rate(policy, used, repeats)
    calls = {int(k): c for k, c in row["batched"]["dit_batch_sizes"].items()}
    bare_seconds = sum(c * k / rates[k] for k, c in calls.items())
    row["dit_alone"] = {"evaluations_per_s_by_batch": {str(k): r for k, r in rates.items()},
                        "seconds_for_the_batched_calls": bare_seconds,
                        "batched_share_of_dit_rate": bare_seconds / row["batched"]["seconds_per_step"]}
    for path in ("per_member", "batch1"):
        if path in row:
            row[f"speedup_vs_{path}"] = row[path]["seconds_per_step"] / row["batched"]["seconds_per_step"]
    return row


class _WithoutLatents:
    """The policy as a client without return_latents sees it (predict/imagine/value only)."""

    def __init__(self, policy: Any):
        self._policy = policy

    def predict(self, observations, seeds):
        return self._policy.predict(observations, seeds)

    def imagine(self, observations, actions, seeds, num_steps=None):
        return self._policy.imagine(observations, actions, seeds, num_steps=num_steps)

    def value(self, observations, actions, futures, seeds, num_steps=None):
        return self._policy.value(observations, actions, futures, seeds, num_steps=num_steps)

    def reset(self) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="2b", choices=("2b", "tiny"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ns", default="8")
    parser.add_argument("--ensembles", default="full,light")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per path first (CUDA graphs: 2)")
    parser.add_argument("--compile", default=None, help='cosmos `compile` option (default: the policy\'s, "auto"; '
                                                       '"blocks" compiles in ~30 s on an H100/H200)')
    parser.add_argument("--dit-precision", default=None, help='cosmos `dit_precision` ("fp8": opt-in)')
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {list(PATHS)}")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    paths = args.paths.split(",")
    if "batched" not in paths or any(p not in PATHS for p in paths):
        parser.error(f"--paths: a comma-separated subset of {list(PATHS)} that includes batched, got {args.paths!r}")

    options = {"config": args.config, "checkpoint": "random", "device": args.device}
    if args.compile:
        options["compile"] = args.compile
    if args.dit_precision:
        options["dit_precision"] = args.dit_precision
    policy, network = counted(make_policy("cosmos", options, "libero"))
    obs = observation(0)
    rows = []
    for name in args.ensembles.split(","):
        for n in [int(x) for x in args.ns.split(",")]:
            row = measure(policy, network, obs, n, name, ENSEMBLES[name], args.repeats, args.warmup, paths)
            rows.append(row)
            print(f"{name:5s} N={n:2d}: " + "   ".join(
                f"{path} {row[path]['seconds_per_step']:6.2f} s ({row[path]['evaluations_per_s']:6.1f} eval/s)"
                for path in paths) + f"   batched = {100 * row['dit_alone']['batched_share_of_dit_rate']:.0f}% "
                "of the bare DiT rate", flush=True)
    results = {"args": vars(args), "device": str(policy.network.device), "rows": rows}
    Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
