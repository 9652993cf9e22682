"""How much of the GPU do LIBERO env workers' EGL renderers take from a policy replica on the same GPU?

The end-to-end runs (BENCHMARKS.md, issue 4) show the replica serving 25-30% fewer chunks/s inside
the full loop than alone on the GPU. This probe isolates one suspect: N processes that step LIBERO and
render its two cameras with NVIDIA EGL on the GPU (as env workers do, throttled to a total step rate
like the loop's), while the main process measures the card's bf16 matmul rate (big GEMMs: few
launches, so the CPU contention of the stepping processes barely matters; what changes the rate is the
GPU time the renderers' contexts take). Phases, each `--seconds` long:
  alone -> with N renderers (after they have built their simulators) -> alone again.
Reports TFLOP/s per phase, the renderers' achieved steps/s, and the rate lost while they render.

Example (GPU machine, LIBERO staged; MUJOCO_GL=egl):
    python benchmarks/render_contention.py --renderers 28 --total-steps-per-s 140 --out render_contention.json
    MUJOCO_GL=egl python benchmarks/render_contention.py --device cpu --renderers 2 --total-steps-per-s 4 \\
        --seconds 3 --size 512 --out /tmp/render.json                                          # CPU smoke
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import time
from pathlib import Path
from typing import Any

import torch


def renderer(index: int, suite: str, image_size: int, steps_per_s: float, ready: Any, stop: Any, counts: Any) -> None:
    """Step LIBERO with zero actions and two rendered cameras at about steps_per_s until `stop` is set."""
    import numpy as np

    from robofleet.envs.libero import ACTION_DIM, LiberoEnv

    env = LiberoEnv(suite, image_size=image_size, max_steps=10**9)
    env.reset(index % 3, index, index)
    ready.release()
    period = 1.0 / steps_per_s
    action = np.zeros(ACTION_DIM, dtype=np.float32)
    next_step = time.perf_counter()
    while not stop.is_set():
        env.step(action)
        counts[index] += 1
        next_step += period
        time.sleep(max(0.0, next_step - time.perf_counter()))
    env.close()


def matmul_rate(device: torch.device, size: int, seconds: float) -> float:
    """bf16 (fp32 on the CPU) size^3 matmuls back to back for `seconds`; TFLOP/s."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for _ in range(10):
            a @ b
        sync()
        done += 10
    return 2 * size**3 * done / (time.perf_counter() - began) / 1e12


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--renderers", type=int, default=28)
    parser.add_argument("--total-steps-per-s", type=float, default=140.0, help="all renderers together (the e2e loop did 125-145)")
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--size", type=int, default=8192, help="matmul side")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device(args.device)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": {
        "python": platform.python_version(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}}
    results["alone_tflops"] = matmul_rate(device, args.size, args.seconds)
    print(f"alone: {results['alone_tflops']:.1f} TFLOP/s", flush=True)

    ctx = mp.get_context("spawn")  # fresh processes: no CUDA context inherited
    ready, stop = ctx.Semaphore(0), ctx.Event()
    counts = ctx.Array("l", args.renderers, lock=False)
    each = args.total_steps_per_s / args.renderers
    procs = [ctx.Process(target=renderer, args=(i, args.suite, args.image_size, each, ready, stop, counts), daemon=True)
             for i in range(args.renderers)]
    began = time.perf_counter()
    for proc in procs:
        proc.start()
    for _ in procs:
        if not ready.acquire(timeout=300):
            raise RuntimeError("a renderer did not build its simulator within 300 s")
    results["renderers_start_s"] = time.perf_counter() - began
    time.sleep(2.0)  # every renderer in its stepping loop
    before, t0 = sum(counts), time.perf_counter()
    results["with_renderers_tflops"] = matmul_rate(device, args.size, args.seconds)
    results["renderer_steps_per_s"] = (sum(counts) - before) / (time.perf_counter() - t0)
    stop.set()
    for proc in procs:
        proc.join(timeout=30)
    results["alone_again_tflops"] = matmul_rate(device, args.size, args.seconds)
    alone = (results["alone_tflops"] + results["alone_again_tflops"]) / 2
    results["rate_lost_share"] = 1 - results["with_renderers_tflops"] / alone
    print(f"with {args.renderers} renderers at {results['renderer_steps_per_s']:.0f} steps/s: "
          f"{results['with_renderers_tflops']:.1f} TFLOP/s; alone again {results['alone_again_tflops']:.1f}; "
          f"lost {results['rate_lost_share']:.1%}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
