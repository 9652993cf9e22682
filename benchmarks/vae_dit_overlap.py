"""Can the VAE encode of the next batch hide under the DiT of this one? A probe before building it.

A replica's batch of LIBERO queries costs, on one H100 (BENCHMARKS.md, issue 9): ~5 DiT forwards
(~510 ms at batch 8) plus the VAE encode (~68 ms) plus ~30-60 ms of pre/post-processing, one after
the other. Running the VAE encode of batch k+1 on a second CUDA stream (launched from a second
thread) while the DiT of batch k replays would take the encode off the critical path only if the DiT
leaves the GPU idle or under-occupied often enough; big bf16 GEMMs fill the card, so the two mostly
time-slice. This measures, per batch size, on the policy of one cosmos_fast variant:
  dit_ms         5 DiT forwards (one action chunk's sampling), alone;
  vae_ms         the encode of the batch's query videos (the latents the DiT reads), alone;
  sequential_ms  encode then DiT, one stream (what predict() does today);
  overlapped_ms  encode on a side stream from a side thread, DiT on the main thread, together;
  overlapped_high_priority_ms  the same with the DiT on a high-priority stream;
and reports the share of the encode hidden, (sequential - overlapped) / vae, with the chunks/s a
pipelined replica would reach at best: batch / (predict seconds - hidden seconds), where predict is a
whole query batch with client-prepared images, measured in the same run.

Example (GPU machine):
    python benchmarks/vae_dit_overlap.py --variant full+cudagraphs --out vae_dit_overlap.json
    python benchmarks/vae_dit_overlap.py --device cpu --config tiny --variant blocks --batches 2 \\
        --repeats 2 --out /tmp/overlap.json                                             # CPU smoke
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from cosmos_fast import VARIANTS, timed  # this folder is on sys.path when run as a script
from cosmos_inference import libero_observations
from robofleet.policies.cosmos.factory import make_cosmos
from robofleet.policies.cosmos.layout import Mode
from vae_encode import query_videos


def stream(device: torch.device, priority: int = 0) -> Any:
    """A new CUDA stream of that priority (lower is more urgent), or a null context on the CPU."""
    return torch.cuda.Stream(device, priority=priority) if device.type == "cuda" else None


def on(side: Any) -> Any:
    return torch.cuda.stream(side) if side is not None else nullcontext()


def overlapped(vae: Callable[[], Any], dit: Callable[[], Any], device: torch.device, pool: ThreadPoolExecutor,
               vae_stream: Any, dit_stream: Any) -> None:
    """The encode on `vae_stream` from a pool thread while the DiT runs on `dit_stream` here; both done at return."""

    def encode() -> None:
        with on(vae_stream):
            vae()

    pending = pool.submit(encode)
    with on(dit_stream):
        dit()
    pending.result()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="2b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variant", default="full+cudagraphs", help=f"one of {list(VARIANTS)}")
    parser.add_argument("--batches", default="8,16")
    parser.add_argument("--steps", type=int, default=5, help="DiT forwards per action chunk")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.variant not in VARIANTS:
        parser.error(f"unknown variant {args.variant!r}; choose from {list(VARIANTS)}")
    batches = [int(b) for b in args.batches.split(",")]
    device = torch.device(args.device)

    began = time.perf_counter()
    policy = make_cosmos({"config": args.config, "checkpoint": "random", "device": args.device, **VARIANTS[args.variant]},
                         "libero")
    policy.warm_up(batches)
    network = policy.network
    needed, prefix = policy._frames_to_encode(Mode.POLICY, False), policy._constant_prefix
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "config": args.config, "variant": args.variant, "steps": args.steps,
        "build_s": time.perf_counter() - began, "batches": [],
    }
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vae")
    pool.submit(lambda: None).result()
    side, high = stream(device), stream(device, priority=-1)
    observations = libero_observations(max(batches))
    for batch in batches:
        inputs = policy.random_dit_inputs(batch)
        video = query_videos(policy, batch)

        def dit() -> None:
            for _ in range(args.steps):
                network(*inputs)

        def vae() -> None:
            network.encode_leading(video, needed, prefix)

        pool.submit(vae).result()  # the pool thread warmed up before timing
        median = lambda fn: statistics.median(timed(fn, device, args.repeats + 1)[1:]) * 1e3  # noqa: E731
        row: dict[str, Any] = {"batch": batch, "dit_ms": median(dit), "vae_ms": median(vae)}
        row["sequential_ms"] = median(lambda: (vae(), dit()))
        row["overlapped_ms"] = median(lambda: overlapped(vae, dit, device, pool, side, None))
        row["overlapped_high_priority_ms"] = median(lambda: overlapped(vae, dit, device, pool, side, high))
        best = min(row["overlapped_ms"], row["overlapped_high_priority_ms"])
        row["vae_hidden_share"] = (row["sequential_ms"] - best) / row["vae_ms"]
        prepared = [policy.request_preparer(obs) for obs in observations[:batch]]
        predict_ms = median(lambda: policy.predict(prepared, list(range(batch))))
        row["chunks_per_s"] = batch / predict_ms * 1e3
        row["chunks_per_s_pipelined_at_best"] = batch / max(predict_ms - (row["sequential_ms"] - best), 1e-9) * 1e3
        results["batches"].append(row)
        print(f"batch {batch:3d}: DiT x{args.steps} {row['dit_ms']:7.1f} ms, VAE {row['vae_ms']:6.1f} ms, "
              f"sequential {row['sequential_ms']:7.1f}, overlapped {row['overlapped_ms']:7.1f} "
              f"(DiT high priority {row['overlapped_high_priority_ms']:7.1f}); VAE hidden {row['vae_hidden_share']:.0%}; "
              f"chunks/s {row['chunks_per_s']:.2f} -> {row['chunks_per_s_pipelined_at_best']:.2f} pipelined at best",
              flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    pool.shutdown()
    return results


if __name__ == "__main__":
    main()
