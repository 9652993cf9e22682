"""Cosmos Policy inference speed on one device: LIBERO layout, random weights, the real network shapes.

Measures, in one run:
- the card's plain matmul throughput (bf16 on GPU, float32 on CPU) for context;
- batch-1 latency of one query, action only and action + future images, with a per-phase split
  (pre-processing, VAE encode, DiT, VAE decode, post-processing; the GPU is synchronised between
  phases for this split);
- throughput (samples/s) and peak GPU memory per batch size, and the phase split at each size;
- a reference-style loop: batch-1 queries one after another, each decoding the future images as the
  reference's `get_action` does, for comparison with batched serving.

Weights are random (speed does not depend on their values); images are 256x256 LIBERO-sized camera
frames that the policy JPEG-round-trips, resizes and crops like real ones.

Examples:
    python benchmarks/cosmos_inference.py --config 2b --device cuda --batch-sizes 1,2,4,8,16,32 --out results.json
    python benchmarks/cosmos_inference.py --config tiny --device cpu --batch-sizes 1,2 --out /tmp/cosmos_tiny.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from robofleet.envs.contract import Observation
from robofleet.policies.cosmos.factory import make_cosmos
from robofleet.policies.cosmos.policy import CosmosPolicy

PHASES = ("preprocess", "vae_encode", "dit", "vae_decode", "postprocess")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """Dense (size x size) @ (size x size) throughput in TFLOP/s."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def libero_observations(count: int, seed: int = 0) -> list[Observation]:
    """Random 256x256 LIBERO-like observations (two cameras, 9-dim proprio)."""
    rng = np.random.default_rng(seed)
    return [
        Observation(
            images={key: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for key in ("agentview", "robot0_eye_in_hand")},
            proprio=rng.uniform(-1, 1, 9).astype(np.float32),
            instruction="put both the alphabet soup and the tomato sauce in the basket",
        )
        for _ in range(count)
    ]


def _timed_calls(policy: CosmosPolicy, batch: int, warmup: int, repeats: int) -> list[float]:
    observations = libero_observations(batch)
    for call in range(warmup):
        policy.predict(observations, list(range(call * batch, (call + 1) * batch)))
    seconds = []
    for call in range(repeats):
        _sync(policy.network.device)
        start = time.perf_counter()
        policy.predict(observations, list(range(call * batch, (call + 1) * batch)))  # returns numpy: synced
        seconds.append(time.perf_counter() - start)
    return seconds


def _breakdown(policy: CosmosPolicy, batch: int) -> dict[str, float]:
    """Seconds per phase of one batch, with the GPU synchronised between phases."""
    stats = policy.with_settings(profile=True).predict(libero_observations(batch), list(range(batch)))[0].stats
    return {phase: stats.get(f"seconds_{phase}", 0.0) for phase in PHASES}


def _latency(policy: CosmosPolicy, warmup: int, repeats: int) -> dict[str, Any]:
    seconds = _timed_calls(policy, 1, warmup, repeats)
    return {"seconds_median": statistics.median(seconds), "seconds_min": min(seconds), "breakdown": _breakdown(policy, 1)}


def _throughput(policy: CosmosPolicy, batch: int, warmup: int, repeats: int) -> dict[str, Any]:
    device = policy.network.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        seconds = _timed_calls(policy, batch, warmup, repeats)
    except torch.OutOfMemoryError:
        return {"batch_size": batch, "error": "out of memory"}
    row: dict[str, Any] = {
        "batch_size": batch,
        "seconds_per_batch": statistics.median(seconds),
        "samples_per_s": batch / statistics.median(seconds),
    }
    if device.type == "cuda":
        row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    row["breakdown"] = _breakdown(policy, batch)
    return row


def _reference_style(policy: CosmosPolicy, queries: int) -> dict[str, float]:
    """Batch-1 queries in sequence, each decoding future images (as the reference's get_action)."""
    decoding = policy.with_settings(return_future_images=True)
    observations = libero_observations(queries, seed=1)
    decoding.predict(observations[:1], [0])
    _sync(policy.network.device)
    start = time.perf_counter()
    for index, observation in enumerate(observations):
        decoding.predict([observation], [index])
    elapsed = time.perf_counter() - start
    return {"queries": queries, "seconds": elapsed, "queries_per_s": queries / elapsed}


def run(config: str, device_name: str, batch_sizes: Sequence[int], warmup: int, repeats: int) -> dict[str, Any]:
    """All measurements as one JSON-able dict."""
    device = torch.device(device_name)
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    policy = make_cosmos({"config": config, "checkpoint": "random", "device": device_name, "dtype": dtype}, "libero")
    on_gpu = device.type == "cuda"
    policy.with_settings(return_future_images=True).predict(libero_observations(1), [0])  # process warm-up
    results: dict[str, Any] = {
        "meta": {
            "config": config,
            "device": torch.cuda.get_device_name(device) if on_gpu else platform.processor() or "cpu",
            "dtype": dtype,
            "layout": "libero",
            "image_size": policy.settings.image_size,
            "action_steps": policy.settings.action_steps,
            "torch": torch.__version__,
            "diffusers": __import__("diffusers").__version__,
            "python": platform.python_version(),
        },
        "matmul_tflops": matmul_tflops(device, getattr(torch, dtype), 8192 if on_gpu else 512, 20 if on_gpu else 5),
        "latency_batch1": {
            "action_only": _latency(policy, warmup, repeats),
            "action_and_future_images": _latency(policy.with_settings(return_future_images=True), warmup, repeats),
        },
        "throughput": [_throughput(policy, batch, warmup, repeats) for batch in batch_sizes],
        "reference_style_sequential": _reference_style(policy, queries=max(repeats, 2)),
    }
    if on_gpu:
        results["meta"]["peak_memory_gb_overall"] = torch.cuda.max_memory_allocated(device) / 1e9
    return results


def _summary(results: dict[str, Any]) -> str:
    lines = [f"{results['meta']['config']} on {results['meta']['device']} ({results['meta']['dtype']}), "
             f"matmul {results['matmul_tflops']:.3g} TFLOP/s"]
    for name, row in results["latency_batch1"].items():
        split = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in row["breakdown"].items())
        lines.append(f"batch-1 {name}: {row['seconds_median'] * 1e3:.1f} ms ({split} ms)")
    for row in results["throughput"]:
        if "error" in row:
            lines.append(f"batch {row['batch_size']:>3}: {row['error']}")
            continue
        memory = f", peak {row['peak_memory_gb']:.1f} GB" if "peak_memory_gb" in row else ""
        lines.append(f"batch {row['batch_size']:>3}: {row['samples_per_s']:.2f} samples/s{memory}")
    ref = results["reference_style_sequential"]
    lines.append(f"reference-style sequential: {ref['queries_per_s']:.2f} queries/s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("2b", "tiny"), default="2b")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32", help="comma-separated batch sizes")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    args = parser.parse_args(argv)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    results = run(args.config, args.device, batch_sizes, args.warmup, args.repeats)
    args.out.write_text(json.dumps(results, indent=2))
    print(_summary(results))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
