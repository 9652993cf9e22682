"""The Wan VAE encode of Cosmos Policy queries: eager against compiled / channels-last, in one run.

What a replica pays per batch of LIBERO queries for the latents the DiT reads (the two camera
latent frames, resumed after the cached blank + proprio prefix: causal_encode.py), per variant:
- eager: diffusers' encoder as it is (the default before this benchmark);
- channels_last: Conv3d weights and inputs in channels-last-3d layout (cuDNN's native layout);
- compile: the resumed chunks through torch.compile (fuses the norms, SiLUs, pads and cache
  concatenations between the convolutions), without and with channels-last, and with
  max-autotune-no-cudagraphs;
each with cuDNN's autotuner off (our default: the same algorithm every run) and, for the
channels-last variants, on (`torch.backends.cudnn.benchmark`). Reported: compile + warm-up seconds,
ms per batch (median) at each batch size, the latents' max abs and relative L2 difference from the
eager variant (bf16 noise: the eager variant at batch 8 vs batch 1 on the same query), and a kernel
profile (convolutions, inductor's fused kernels, other elementwise kernels, idle gaps) of the eager
and the fastest variant.

Example (GPU machine):
    python benchmarks/vae_encode.py --out vae_encode.json
    python benchmarks/vae_encode.py --device cpu --config tiny --batches 1,2 --repeats 2 --out /tmp/vae.json  # CPU smoke
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from cosmos_fast import timed  # this folder is on sys.path when run as a script
from cosmos_inference import libero_observations
from dit_profile import profile_dit
from robofleet.policies.cosmos.factory import make_cosmos
from robofleet.policies.cosmos.images import frames_to_video, slot_frames
from robofleet.policies.cosmos.layout import Mode
from robofleet.policies.cosmos.network import CosmosNetwork
from robofleet.policies.cosmos.policy import CosmosPolicy

# name -> (torch.compile mode of the resumed chunks or None, channels-last-3d, cuDNN autotuner)
VARIANTS: dict[str, tuple[str | None, bool, bool]] = {
    "eager": (None, False, False),
    "channels_last": (None, True, False),
    "channels_last+cudnn_benchmark": (None, True, True),
    "compile": ("default", False, False),
    "compile+channels_last": ("default", True, False),
    "compile+channels_last+cudnn_benchmark": ("default", True, True),
    "max-autotune+channels_last": ("max-autotune-no-cudagraphs", True, False),
}
VAE_CATEGORIES = ("convolution", "triton_fused", "elementwise", "other", "idle")
_FUSED = re.compile(r"^triton_|cpp_fused|Torch-Compiled Region|CompiledFxGraph|CompiledFunction")  # CPU: compiled regions
_CONV = re.compile(r"conv|implicit|fprop|xmma|cudnn|nhwc|ndhwc|sm\d\d_", re.I)
_ELEMENTWISE = re.compile(r"elementwise|vectorized|reduce|norm|silu|cat|copy|pad|fill", re.I)


def vae_category(name: str) -> str:
    """The category of a kernel name in a VAE encode."""
    if _FUSED.search(name):
        return "triton_fused"
    if _CONV.search(name):
        return "convolution"
    return "elementwise" if _ELEMENTWISE.search(name) else "other"


def query_videos(policy: CosmosPolicy, batch: int) -> torch.Tensor:
    """(batch, 3, frames, H, W) pixel videos of random LIBERO queries, as predict() builds them."""
    current = [policy._camera_images(obs.images) for obs in libero_observations(batch, seed=batch)]
    frames = slot_frames(policy.layout, current, [None] * batch, policy.settings.image_size)
    return frames_to_video(torch.from_numpy(frames).to(policy.network.device), policy.network.dtype)


def variant_network(base: CosmosNetwork, compile_mode: str | None, channels_last: bool) -> CosmosNetwork:
    """A network sharing base's DiT with its own copy of the VAE, accelerated as asked."""
    network = CosmosNetwork(base.transformer, copy.deepcopy(base.vae), base.device, base.dtype)
    network.accelerate_vae(compile_mode, channels_last)
    return network


def difference(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Max abs and relative L2 difference of two latent tensors."""
    x, y = x.float(), y.float()
    return {"max_abs": (x - y).abs().max().item(), "rel_l2": ((x - y).norm() / y.norm()).item()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="2b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--batches", default="1,8,16", help="batch sizes (queries per encode)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile-batch", type=int, default=8, help="0: no kernel profile")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    batches = [int(b) for b in args.batches.split(",")]
    device = torch.device(args.device)

    policy = make_cosmos({"config": args.config, "checkpoint": "random", "device": args.device, "compile": "none",
                          "vae_compile": "none", "vae_channels_last": "off"}, "libero")
    needed = policy._frames_to_encode(Mode.POLICY, False)
    prefix = policy._constant_prefix
    videos = {batch: query_videos(policy, batch) for batch in batches}
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "config": args.config, "latent_frames_encoded": needed - prefix, "constant_prefix": prefix,
        "image_size": policy.settings.image_size, "variants": {},
    }
    eager = policy.network
    reference = {batch: eager.encode_leading(video, needed, prefix) for batch, video in videos.items()}
    if max(batches) > 1:  # bf16 batch noise: query 0 alone vs inside the largest batch
        alone = eager.encode_leading(videos[max(batches)][:1], needed, prefix)
        results["eager_batch_noise"] = difference(alone, reference[max(batches)][:1])

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))

    for name in variants:
        compile_mode, channels_last, autotune = VARIANTS[name]
        torch.backends.cudnn.benchmark = autotune
        began = time.perf_counter()
        network = eager if name == "eager" else variant_network(eager, compile_mode, channels_last)
        for batch, video in videos.items():  # compile (one graph per batch size) and warm up
            for _ in range(2):
                network.encode_leading(video, needed, prefix)
        row: dict[str, Any] = {"compile_mode": compile_mode, "channels_last": channels_last, "cudnn_benchmark": autotune,
                               "compile_and_warm_up_s": time.perf_counter() - began, "batches": []}
        for batch, video in videos.items():
            seconds = timed(lambda: network.encode_leading(video, needed, prefix), device, args.repeats)
            latents = network.encode_leading(video, needed, prefix)
            row["batches"].append({"batch": batch, "ms": statistics.median(seconds) * 1e3,
                                   "ms_per_query": statistics.median(seconds) * 1e3 / batch,
                                   "vs_eager": difference(latents, reference[batch])})
        if args.profile_batch and args.profile_batch in videos:
            video = videos[args.profile_batch]
            row["profile"] = profile_dit(lambda: network.encode_leading(video, needed, prefix), device, args.profile_batch,
                                         categorize=vae_category, categories=VAE_CATEGORIES)
        results["variants"][name] = row
        print(_line(name, row), flush=True)
        save()
    torch.backends.cudnn.benchmark = False
    print(_table(results))
    save()
    return results


def _line(name: str, row: dict[str, Any]) -> str:
    cells = ", ".join(f"b{b['batch']} {b['ms']:.1f} ms (diff {b['vs_eager']['rel_l2']:.2e})" for b in row["batches"])
    line = f"{name}: build {row['compile_and_warm_up_s']:.0f} s, {cells}"
    if "profile" in row:
        split = " | ".join(f"{k} {v['ms']:.1f}" for k, v in row["profile"]["categories"].items())
        line += f"\n  profile b{row['profile']['batch']}: {split}"
    return line


def _table(results: dict[str, Any]) -> str:
    rows = results["variants"]
    batches = [b["batch"] for b in next(iter(rows.values()))["batches"]] if rows else []
    base = {b["batch"]: b["ms"] for b in rows.get("eager", {"batches": []})["batches"]}
    head = "| variant | build s | " + " | ".join(f"b{b} ms (x eager)" for b in batches) + " | latents vs eager, rel L2 |"
    lines = [head, "|---|---:|" + "---:|" * len(batches) + "---:|"]
    for name, row in rows.items():
        cells = " | ".join(f"{b['ms']:.1f} ({base.get(b['batch'], b['ms']) / b['ms']:.2f}x)" for b in row["batches"])
        worst = max(b["vs_eager"]["rel_l2"] for b in row["batches"])
        lines.append(f"| {name} | {row['compile_and_warm_up_s']:.0f} | {cells} | {worst:.2e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
