"""End-to-end LIBERO evaluation throughput: robofleet (N env workers + batched policy replicas)
against the reference-style sequential loop (one env, batch-1 policy calls), in the same run.

Both sides run the same policy (Cosmos Policy, random weights: speed does not depend on them;
fixed episode length since random weights never succeed) on the same LIBERO episodes' kind.
Reports episodes/hour, env steps/s, the speed-up, batch sizes reached, queue waits, model time per
batch, GPU memory and GPU utilisation sampled with nvidia-smi.

Examples:
    python benchmarks/e2e_libero_serving.py --config 2b --workers 14 --replicas 1 --out e2e.json
    python benchmarks/e2e_libero_serving.py --config tiny --workers 2 --replicas 1 --episodes 2 \\
        --ref-episodes 1 --max-steps 16 --cpus-per-worker 0.5 --out /tmp/e2e.json     # CPU smoke
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from robofleet.platform.spec import spec_from_dict


def gpu_utilisation_sampler(stop: threading.Event, samples: list[float], period_s: float = 0.5) -> None:
    """Append GPU utilisation % (mean over GPUs) every period until `stop` is set (no-op without nvidia-smi)."""
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5)
            values = [float(v) for v in out.stdout.split()]
            if values:
                samples.append(sum(values) / len(values))
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return
        stop.wait(period_s)


def policy_options(args: argparse.Namespace, eager: bool = False) -> dict[str, Any]:
    """Cosmos options; eager=True is the reference's path (diffusers' DiT as it is, eager; every latent frame VAE-encoded)."""
    options = {"config": args.config, "checkpoint": "random", "device": args.device}
    if eager or args.eager:
        options.update({"compile": "none", "vae_encode": "full", "adaln_modulation": "per_token",
                        "vae_compile": "none", "vae_channels_last": "off", "gelu_epilogue": "off"})
    else:
        options.update({"compile": args.compile, "compile_mode": args.compile_mode, "dit_precision": args.dit_precision})
    return options


def reference_loop(args: argparse.Namespace) -> dict[str, Any]:
    """The reference's way: one env, one batch-1 policy call per chunk, episodes one after another;
    the cameras rendered on every step as LIBERO's evaluation does (--ref-render-steps observed: only
    on the chunk ends, robofleet's default, to see what that alone is worth)."""
    from robofleet.envs.libero import LiberoEnv
    from robofleet.policies.registry import make_policy

    policy = make_policy("cosmos", policy_options(args, eager=True), "libero")
    env = LiberoEnv(args.suite, image_size=args.image_size, max_steps=args.max_steps)
    env.reset(0, 0, 0)  # build the simulator outside the timed region, as robofleet's workers do
    policy.predict([env.reset(0, 0, 0)], [0])  # warm-up (CUDA kernels, allocator)
    steps = queries = 0
    start = time.perf_counter()
    for episode in range(args.ref_episodes):
        obs = env.reset(0, episode, episode)
        done_steps = 0
        while done_steps < env.max_steps:
            chunk = policy.predict([obs], [episode * 1000 + queries])[0].actions
            queries += 1
            for index, action in enumerate(chunk):
                render = args.ref_render_steps == "every" or index == len(chunk) - 1
                obs = env.step(action, render=render).obs
                done_steps += 1
                if done_steps >= env.max_steps:
                    break
        steps += done_steps
    wall = time.perf_counter() - start
    env.close()
    return {"episodes": args.ref_episodes, "wall_s": wall, "episodes_per_hour": 3600 * args.ref_episodes / wall,
            "env_steps_per_s": steps / wall, "chunks_per_s": queries / wall}


def robofleet_run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    from robofleet.platform.runner import run

    spec = spec_from_dict({
        "seed": 0,
        "name": "e2e-serving",
        "env": {"family": "libero", "suite": args.suite, "tasks": list(range(args.tasks)),
                "trials": max(1, args.episodes // args.tasks), "image_size": args.image_size,
                "max_steps": args.max_steps, "render_steps": args.render_steps},
        "policy": {"name": "cosmos", **policy_options(args)},
        "planner": {"name": "direct"},
        "serving": {"replicas": args.replicas, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                    "cpus_per_replica": 1.0 if args.device != "cpu" else 0.25,
                    **({"gpus_per_replica": args.gpus_per_replica} if args.gpus_per_replica is not None else {})},
        "run": {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker},
    })
    summary = run(spec, out_dir, progress=False)
    return {"figures": summary["figures"], "overall": summary["overall"], "fingerprint": summary["fingerprint"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="2b", choices=("2b", "tiny"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--tasks", type=int, default=2, help="tasks 0..T-1 (each worker rebuilds its env per task)")
    parser.add_argument("--episodes", type=int, default=28, help="robofleet episodes (split over the tasks)")
    parser.add_argument("--ref-episodes", type=int, default=2, help="reference-loop episodes")
    parser.add_argument("--max-steps", type=int, default=64, help="fixed episode length (policy steps)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--render-steps", default="observed", choices=("observed", "every"),
                        help="robofleet side's env.render_steps (the reference loop renders every step, as LIBERO's eval)")
    parser.add_argument("--workers", type=int, default=14)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--gpus-per-replica", type=float, default=None, help="e.g. 0.5: two replicas share one GPU")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--eager", action="store_true", help="robofleet side on the eager path too (as before issue 9)")
    parser.add_argument("--compile", default="auto", help="robofleet side's cosmos `compile` option")
    parser.add_argument("--compile-mode", default="auto", help="robofleet side's cosmos `compile_mode` option")
    parser.add_argument("--dit-precision", default="bf16", help="robofleet side's cosmos `dit_precision` (fp8: opt-in)")
    parser.add_argument("--ref-render-steps", default="every", choices=("every", "observed"),
                        help="the reference loop's rendering: every step (LIBERO's eval) or only chunk ends")
    parser.add_argument("--sides", default="reference,robofleet", help="which loops to run (comma-separated)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    sides = args.sides.split(",")
    samples: dict[str, list[float]] = {"reference": [], "robofleet": []}
    results: dict[str, Any] = {"args": vars(args)}
    for name, fn in (("reference", lambda: reference_loop(args)),
                     ("robofleet", lambda: robofleet_run(args, Path(tempfile.mkdtemp(prefix="e2e-"))))):
        if name not in sides:
            continue
        stop = threading.Event()
        sampler = threading.Thread(target=gpu_utilisation_sampler, args=(stop, samples[name]), daemon=True)
        sampler.start()
        results[name] = fn()
        stop.set()
        sampler.join()
        util = samples[name]
        results[name]["gpu_utilisation_pct_mean"] = sum(util) / len(util) if util else None
    rows = {}
    if "reference" in results:
        rows["reference"] = results["reference"]
    if "robofleet" in results:
        rows["robofleet"] = results["robofleet"]["figures"]["this_invocation"]
    if len(rows) == 2:
        results["speedup_episodes_per_hour"] = rows["robofleet"]["episodes_per_hour"] / rows["reference"]["episodes_per_hour"]
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(f"{'':12s} {'episodes/h':>11s} {'env steps/s':>12s} {'chunks/s':>9s} {'GPU util %':>10s}")
    for name, row in rows.items():
        util = results[name]["gpu_utilisation_pct_mean"]
        print(f"{name:12s} {row['episodes_per_hour']:11.1f} {row['env_steps_per_s']:12.1f} {row['chunks_per_s']:9.2f} "
              f"{util if util is not None else float('nan'):10.1f}")
    if "speedup_episodes_per_hour" in results:
        print(f"speed-up: {results['speedup_episodes_per_hour']:.1f}x")
    for r in results.get("robofleet", {}).get("figures", {}).get("replicas", []):
        print(f"replica {r['replica']}: batches {r['batch_size_histogram']}, model s/batch {r['model_s_per_batch_mean']:.3f}, "
              f"queue s mean {r['queue_s_mean']:.3f}, GPU peak {r['gpu_peak_memory_gb']} GB")
        phases = r.get("phase_s_per_batch_mean", {})
        print("  per batch: " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items()))


if __name__ == "__main__":
    main()
