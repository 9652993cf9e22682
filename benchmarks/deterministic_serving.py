"""Deterministic serving: is a request's result independent of its batch-mates, and what does it cost?

A replica's model thread sees batches of 1..max_batch requests. This replays a batch-size trace (by
default the replica histogram of a 300-episode libero_10 run, `--trace`) through CosmosPolicy.predict
on prepared observations (as replica clients send them) under these variants, side by side in one
process on one network:

    free       every batch at its own size (`[serving] deterministic = false`)
    fixed_M    every network call (VAE encode and DiT) on exactly M rows: a batch of n runs as
               ceil(n / M) calls, the last one padded with copies (the policy's `pad_to` = M).
               fixed_<max_batch> is the old deterministic mode (every batch padded to max_batch).
    invariant_free / invariant_fixed_M / invariant_free_vae_batched (--invariant): the same on a second
               network in the policy's `batch_invariant()` form, as deterministic replicas serve it
               (invariant_matmul.py: the DiT's Linears as one fixed-tiling Triton GEMM, the VAE encode
               one row per call; the last variant encodes the whole batch at once, to tell the VAE's
               share of any difference).

Per variant: requests (action chunks) per second over the trace, model seconds per batch, and the
ratio to `free` measured in the same run. Invariance: --check requests (distinct observations and
seeds) are run in two different random batchings (shuffled, batch sizes drawn from the trace) and
each request's action chunk is compared bitwise between the two; the count of requests that differ and
the largest difference are reported. Random weights (speed and batch invariance do not depend on them).

Examples:
    python benchmarks/deterministic_serving.py --config 2b --device cuda --compile blocks --out det.json
    python benchmarks/deterministic_serving.py --config tiny --device cpu --batches 4 --check 8 \
        --fixed 1,2 --out /tmp/det.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.policies.registry import make_policy

# Batch sizes the replica cut in a 300-episode libero_10 run (max_batch 16, 28 env workers, one H100,
# benchmarks/results/e2e_serving_h100_s5_bf16_blocks_observed_300.json): mean 11.9 requests.
DEFAULT_TRACE = {1: 7, 2: 4, 3: 4, 4: 1, 5: 4, 6: 4, 7: 5, 8: 4, 9: 14, 10: 9, 11: 19, 12: 53, 13: 34, 14: 21,
                 15: 27, 16: 41}


def observation(seed: int) -> Observation:
    """A LIBERO-shaped observation: two 256x256 camera images, 9-dim proprio, an instruction."""
    rng = np.random.default_rng(seed)
    images = {k: rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for k in ("agentview", "robot0_eye_in_hand")}
    return Observation(images=images, proprio=rng.normal(size=9).astype(np.float32),
                       instruction="put both the alphabet soup and the tomato sauce in the basket")


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def batch_sizes(trace: dict[int, int], count: int, rng: np.random.Generator) -> list[int]:
    """`count` batch sizes drawn from the trace's histogram."""
    sizes = np.array(sorted(trace), dtype=int)
    weights = np.array([trace[s] for s in sizes], dtype=float)
    return [int(s) for s in rng.choice(sizes, size=count, p=weights / weights.sum())]


def throughput(policy: Any, prepared: list[Observation], sizes: list[int]) -> dict[str, float]:
    """Run one batch per size (requests cycling through `prepared`); requests/s and seconds per batch."""
    model_s = []
    served = 0
    for index, size in enumerate(sizes):
        batch = [prepared[(served + i) % len(prepared)] for i in range(size)]
        seeds = [10_000 + served + i for i in range(size)]
        began = time.perf_counter()
        policy.predict(batch, seeds)
        synchronize()
        model_s.append(time.perf_counter() - began)
        served += size
    total = float(np.sum(model_s))
    return {"requests": served, "batches": len(sizes), "seconds": total, "requests_per_s": served / total,
            "model_s_per_batch_mean": total / len(sizes)}


def one_batching(policy: Any, prepared: list[Observation], seeds: list[int], sizes: list[int],
                 order: np.ndarray) -> dict[int, np.ndarray]:
    """Every request once, in `order`, cut into batches of `sizes` (cycled); request index -> actions."""
    actions: dict[int, np.ndarray] = {}
    start = 0
    turn = 0
    while start < len(order):
        size = sizes[turn % len(sizes)]
        chosen = [int(i) for i in order[start:start + size]]
        for i, prediction in zip(chosen, policy.predict([prepared[i] for i in chosen], [seeds[i] for i in chosen])):
            actions[i] = np.asarray(prediction.actions)
        start += size
        turn += 1
    return actions


def invariance(policy: Any, prepared: list[Observation], trace: dict[int, int], rng: np.random.Generator) -> dict[str, Any]:
    """The requests in two random batchings: how many action chunks differ, and by how much at most."""
    seeds = [20_000 + i for i in range(len(prepared))]
    first = one_batching(policy, prepared, seeds, batch_sizes(trace, len(prepared), rng), rng.permutation(len(prepared)))
    second = one_batching(policy, prepared, seeds, batch_sizes(trace, len(prepared), rng), rng.permutation(len(prepared)))
    differ = [i for i in first if not np.array_equal(first[i], second[i])]
    largest = max((float(np.max(np.abs(first[i] - second[i]))) for i in differ), default=0.0)
    return {"requests": len(prepared), "differing": len(differ), "max_abs_diff": largest}


def gemm_check(policy: Any) -> dict[str, Any]:
    """The invariant GEMM against torch's on the DiT's shapes at 8 requests: largest difference, and the
    seconds of each (median of 20 after warm-up), as a ratio."""
    import torch
    import torch.nn.functional as F

    from robofleet.policies.cosmos.invariant_matmul import invariant_linear

    tokens = 8 * policy.latent_shape[1] * (policy.latent_shape[2] // 2) * (policy.latent_shape[3] // 2)
    shapes = sorted({(m.in_features, m.out_features) for m in policy.network.transformer.transformer_blocks[0].modules()
                     if isinstance(m, torch.nn.Linear)})
    out = []
    for k, n in shapes:
        x = torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5
        times = {}
        for label, fn in (("torch", lambda: F.linear(x, w)), ("invariant", lambda: invariant_linear(x, w, None))):
            for _ in range(3):
                fn()
            samples = []
            for _ in range(20):
                torch.cuda.synchronize()
                began = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                samples.append(time.perf_counter() - began)
            times[label] = float(np.median(samples))
        diff = float((F.linear(x, w).float() - invariant_linear(x, w, None).float()).abs().max())
        rows_alone = invariant_linear(x[:100], w, None)
        out.append({"m": tokens, "k": k, "n": n, "torch_s": times["torch"], "invariant_s": times["invariant"],
                    "invariant_vs_torch_time": times["invariant"] / times["torch"], "max_abs_diff": diff,
                    "rows_equal_alone": bool(torch.equal(rows_alone, invariant_linear(x, w, None)[:100]))})
        print(f"GEMM {tokens}x{k}x{n}: torch {times['torch'] * 1e3:.2f} ms, invariant {times['invariant'] * 1e3:.2f} ms "
              f"(x{times['invariant'] / times['torch']:.2f}), max diff {diff:.2e}, rows alone equal "
              f"{out[-1]['rows_equal_alone']}", flush=True)
    return {"shapes": out}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="2b", choices=("2b", "tiny"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", default=None, help='cosmos `compile` option (default: the policy\'s "auto")')
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--fixed", default="1,2,4,8,16", help="row counts M of the fixed_M variants")
    parser.add_argument("--batches", type=int, default=30, help="batches of the throughput trace per variant")
    parser.add_argument("--check", type=int, default=96, help="requests of the invariance check per variant")
    parser.add_argument("--invariant", default="", help='variants on a batch_invariant network, e.g. "free,fixed_4,'
                                                         'free_vae_batched" (CUDA)')
    parser.add_argument("--skip-free", action="store_true", help="only the --invariant variants (no ratio to free)")
    parser.add_argument("--trace", default=None, help="JSON {batch size: count} (default: a 300-episode libero_10 run)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    trace = {int(k): int(v) for k, v in json.loads(args.trace).items()} if args.trace else DEFAULT_TRACE
    trace = {k: v for k, v in trace.items() if k <= args.max_batch}
    options: dict[str, Any] = {"config": args.config, "checkpoint": "random", "device": args.device}
    if args.compile:
        options["compile"] = args.compile
    began = time.perf_counter()
    base = make_policy("cosmos", options, "libero")
    build_s = time.perf_counter() - began
    prepared = [base.request_preparer(observation(i)) for i in range(max(args.check, args.max_batch))]
    rng = np.random.default_rng(0)
    sizes = batch_sizes(trace, args.batches, rng)
    variants: list[tuple[str, Any]] = [] if args.skip_free else [("free", base)]
    variants += [(f"fixed_{m}", base.with_settings(pad_to=m)) for m in (int(x) for x in args.fixed.split(",") if x)]
    if args.invariant:
        invariant = make_policy("cosmos", options, "libero").batch_invariant(4)
        import torch

        results_gemm = gemm_check(invariant) if torch.cuda.is_available() else None
        for name in args.invariant.split(","):
            if name == "free":
                variants.append(("invariant_free", invariant))
            elif name == "free_vae_batched":
                variants.append(("invariant_free_vae_batched", invariant.with_settings(encode_rows=0)))
            else:
                variants.append((f"invariant_{name}", invariant.with_settings(pad_to=int(name.split("_")[1]))))
    rows = []
    for name, policy in variants:
        rows_per_call = policy.settings.pad_to
        warm = policy.warm_up([rows_per_call] if rows_per_call else list(range(1, args.max_batch + 1)))
        policy.predict(prepared[:3], [1, 2, 3])  # one untimed batch at a size the trace uses
        row = {"variant": name, "rows_per_call": rows_per_call, "warm_up_s": warm,
               **throughput(policy, prepared, sizes),
               "invariance": invariance(policy, prepared[:args.check], trace, rng)}
        rows.append(row)
        print(f"{name:9s} {row['requests_per_s']:7.2f} req/s  {row['model_s_per_batch_mean']:.3f} s/batch  "
              f"invariance: {row['invariance']['differing']}/{row['invariance']['requests']} differ "
              f"(max {row['invariance']['max_abs_diff']:.2e})", flush=True)
    free = None if args.skip_free else rows[0]["requests_per_s"]
    for row in rows:
        row["throughput_vs_free"] = None if free is None else row["requests_per_s"] / free
    import torch

    results = {"args": vars(args), "device": str(base.network.device),
               "gemm": results_gemm if args.invariant else None,
               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "torch": torch.__version__, "build_s": build_s,
               "trace_mean_batch": float(np.mean(sizes)), "rows": rows}
    Path(args.out).write_text(json.dumps(results, indent=2))
    for row in rows if free is not None else []:
        print(f"{row['variant']:9s} x{row['throughput_vs_free']:.3f} of free", flush=True)
    return results


if __name__ == "__main__":
    main()
