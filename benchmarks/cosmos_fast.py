"""Cosmos Policy serving near the hardware limit: the eager path against the fast paths, in one run.

Measured on one device, LIBERO layout, random weights (speed does not depend on their values):
- the card's bf16 matmul rate (8192^3), the DiT's FLOPs per sample-forward (torch's FLOP counter);
- the SDPA backends on the DiT's self-attention shape, and the one torch picks;
- the VAE encode of a query: every latent frame ("full", eager) vs only the frames the DiT reads,
  resumed after the cached constant prefix ("needed", causal_encode.py);
- the FP8 rowwise matmul rate (torch._scaled_mm, 8192^3) when an "+fp8" variant is measured;
- per variant (torch.compile scope x mode x DiT matmul precision, each with its VAE encode): compile
  + warm-up seconds, DiT forward ms / samples/s / TFLOP/s / share of the bf16 matmul rate at several
  batch sizes, whole queries (5 action steps, VAE encode, no future-image decode): batch-1 latency
  p50/p99, chunks/s at larger batches (also with the camera images prepared beforehand, as env
  workers do for a replica), peak memory, per-phase split. "eager" is diffusers as it is (adaLN
  modulation per token); "blocks+per-token-adaln" isolates the per-frame modulation's gain;
- per variant, --profile-batch: one DiT forward's kernel time by category (GEMM, triton fused,
  attention, other, idle gaps) and its top 10 kernels (dit_profile.py);
- accuracy, per --accuracy-variants: actions vs the eager bf16 path over >= 100 random queries (max
  abs and relative L2), next to the eager path's own batch-composition noise (same queries, batch
  8 vs 1).

Variants are built one at a time (a fresh network each, same init seed) and the JSON is rewritten
after each, so a run cut short keeps what it measured. --budget-s skips variants that would start
after that many seconds.

Example (GPU machine):
    python benchmarks/cosmos_fast.py --out results.json
    python benchmarks/cosmos_fast.py --variants eager,full+cudagraphs,full+cudagraphs+fp8 --out fp8.json
    python benchmarks/cosmos_fast.py --device cpu --config tiny --variants eager,blocks,blocks+fp8 \\
        --dit-batches 1,2 --query-batches 2 --accuracy-queries 4 --profile-batch 2 --out /tmp/fast.json  # CPU smoke
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cosmos_inference import _sync as sync  # this folder is on sys.path when run as a script
from cosmos_inference import libero_observations, matmul_tflops
from dit_profile import format_profile, prepare, profile_dit
from robofleet.policies.cosmos.factory import make_cosmos
from robofleet.policies.cosmos.layout import Mode
from robofleet.policies.cosmos.policy import CosmosPolicy

_EAGER_VAE = {"vae_compile": "none", "vae_channels_last": "off"}
_NO_EPILOGUE = {"gelu_epilogue": "off"}
VARIANTS: dict[str, dict[str, str]] = {
    "eager": {"compile": "none", "vae_encode": "full", "adaln_modulation": "per_token", **_EAGER_VAE, **_NO_EPILOGUE},
    "eager+vae": {"compile": "none", "vae_encode": "needed", "adaln_modulation": "per_token", **_EAGER_VAE, **_NO_EPILOGUE},
    "blocks+per-token-adaln": {"compile": "blocks", "compile_mode": "default", "vae_encode": "needed",
                               "adaln_modulation": "per_token", **_NO_EPILOGUE},
    "blocks+eager-vae": {"compile": "blocks", "compile_mode": "default", "vae_encode": "needed", **_EAGER_VAE, **_NO_EPILOGUE},
    "blocks": {"compile": "blocks", "compile_mode": "default", "vae_encode": "needed", **_NO_EPILOGUE},
    "blocks+gelu-epilogue": {"compile": "blocks", "compile_mode": "default", "vae_encode": "needed", "gelu_epilogue": "on"},
    "full": {"compile": "full", "compile_mode": "default", "vae_encode": "needed", **_NO_EPILOGUE},
    "full+cudagraphs+eager-vae": {"compile": "full", "compile_mode": "reduce-overhead", "vae_encode": "needed", **_EAGER_VAE, **_NO_EPILOGUE},
    "full+cudagraphs": {"compile": "full", "compile_mode": "reduce-overhead", "vae_encode": "needed"},  # the default on GPU
    "blocks+fp8": {"compile": "blocks", "compile_mode": "default", "vae_encode": "needed", "dit_precision": "fp8"},
    "full+cudagraphs+fp8": {"compile": "full", "compile_mode": "reduce-overhead", "vae_encode": "needed",
                            "dit_precision": "fp8"},
}


def build(args: argparse.Namespace, variant: str) -> tuple[CosmosPolicy, float]:
    """The policy of `variant` and its build seconds (construction + compile + warm-up)."""
    began = time.perf_counter()
    options = {"config": args.config, "checkpoint": "random", "device": args.device, **VARIANTS[variant]}
    policy = make_cosmos(options, "libero")
    return policy, time.perf_counter() - began


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    """Seconds of `repeats` calls of fn, synchronised."""
    seconds = []
    for _ in range(repeats):
        sync(device)
        began = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - began)
    return seconds


def fp8_matmul_tflops(device: torch.device, size: int, repeats: int) -> float:
    """(size x size) @ (size x size) in FP8 e4m3 with rowwise scales (Fp8Linear's matmul), in TFLOP/s."""
    from robofleet.policies.cosmos.fp8 import quantize_rows

    a, a_scale = quantize_rows(torch.randn(size, size, device=device))
    b, b_scale = quantize_rows(torch.randn(size, size, device=device))
    out_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    seconds = timed(lambda: torch._scaled_mm(a, b.t(), scale_a=a_scale, scale_b=b_scale.t(), out_dtype=out_dtype),
                    device, repeats + 3)[3:]
    return 2 * size**3 / statistics.median(seconds) / 1e12


def dit_flops(policy: CosmosPolicy) -> float:
    """FLOPs of one sample-forward of the DiT (matmuls + attention), counted by torch at batch 1."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    inputs = policy.network.transformer_inputs(*policy.random_dit_inputs(1))
    with counter, torch.no_grad():
        policy.network.transformer(**inputs)  # the eager (uncompiled) DiT
    return float(counter.get_total_flops())


def sdpa_backends(device: torch.device, dtype: torch.dtype, batch: int, tokens: int, heads: int, head_dim: int) -> dict[str, Any]:
    """ms per self-attention call for each SDPA backend (None: not usable here) and torch's own pick."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(batch, heads, tokens, head_dim, device=device, dtype=dtype) for _ in range(3))
    out: dict[str, Any] = {"shape": [batch, heads, tokens, head_dim]}
    if device.type == "cuda":
        choice = torch._fused_sdp_choice(q, k, v)
        out["default_choice"] = SDPBackend(choice).name if isinstance(choice, int) else str(choice)
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH):
        try:
            with sdpa_kernel([backend]):
                seconds = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), device, 5)
            out[backend.name] = statistics.median(seconds[1:]) * 1e3
        except RuntimeError as error:
            out[backend.name] = None
            out[f"{backend.name}_error"] = str(error).splitlines()[0][:200]
    return out


def vae_encode(policy: CosmosPolicy, batches: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    """ms per VAE encode of one batch of LIBERO queries: every frame vs the frames the DiT reads."""
    from robofleet.policies.cosmos.images import frames_to_video, slot_frames

    rows = []
    network = policy.network
    needed = policy.with_settings(vae_encode="needed")._frames_to_encode(Mode.POLICY, False)
    for batch in batches:
        current = [policy._camera_images(obs.images) for obs in libero_observations(batch)]
        frames = slot_frames(policy.layout, current, [None] * batch, policy.settings.image_size)
        video = frames_to_video(torch.from_numpy(frames).to(network.device), network.dtype)
        full = timed(lambda: network.encode(video), network.device, repeats + 1)[1:]
        lead = timed(lambda: network.encode_leading(video, needed, policy._constant_prefix), network.device, repeats + 1)[1:]
        same = network.encode(video)[:, :, :needed]
        diff = (same - network.encode_leading(video, needed, policy._constant_prefix)).abs().max().item()
        rows.append({"batch": batch, "full_ms": statistics.median(full) * 1e3, "needed_ms": statistics.median(lead) * 1e3,
                     "latent_frames_needed": needed, "latent_frames": policy.layout.num_frames,
                     "max_abs_latent_diff": diff})
    return rows


def measure_variant(policy: CosmosPolicy, args: argparse.Namespace, flops: float, matmul: float) -> dict[str, Any]:
    device = policy.network.device
    row: dict[str, Any] = {"dit": [], "queries": []}
    for batch in args.dit_batches:
        inputs = policy.random_dit_inputs(batch)
        seconds = timed(lambda: policy.network(*inputs), device, args.repeats + 2)[2:]
        median = statistics.median(seconds)
        row["dit"].append({"batch": batch, "ms": median * 1e3, "samples_per_s": batch / median,
                           "tflops": flops * batch / median / 1e12, "share_of_matmul": flops * batch / median / 1e12 / matmul})
    observations = libero_observations(max(args.query_batches + [1]))
    latency = timed(lambda: policy.predict(observations[:1], [0]), device, args.latency_repeats + 2)[2:]
    row["latency_batch1_ms"] = {"p50": float(np.percentile(latency, 50)) * 1e3, "p99": float(np.percentile(latency, 99)) * 1e3,
                                "min": min(latency) * 1e3, "calls": len(latency)}
    for batch in args.query_batches:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed(lambda: policy.predict(observations[:batch], list(range(batch))), device, args.repeats + 1)[1:]
        median = statistics.median(seconds)
        stats = policy.with_settings(profile=True).predict(observations[:batch], list(range(batch)))[0].stats
        # As a replica serves them: the env workers prepared the camera images (policy.request_preparer).
        prepared = [policy.request_preparer(obs) for obs in observations[:batch]]
        served = timed(lambda: policy.predict(prepared, list(range(batch))), device, args.repeats + 1)[1:]
        entry = {"batch": batch, "seconds": median, "chunks_per_s": batch / median,
                 "chunks_per_s_images_prepared_by_clients": batch / statistics.median(served),
                 "phases_ms": {k[len("seconds_"):]: v * 1e3 for k, v in stats.items() if k.startswith("seconds_")}}
        if device.type == "cuda":
            entry["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        row["queries"].append(entry)
    return row


def query_actions(policy: CosmosPolicy, observations: list, seeds: list[int], batch: int) -> np.ndarray:
    """Actions (Q, K, 7) of `policy` for the queries, predicted `batch` at a time."""
    return np.concatenate([np.stack([p.actions for p in policy.predict(observations[i:i + batch], seeds[i:i + batch])])
                           for i in range(0, len(observations), batch)])


def compare(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Max abs and per-query relative L2 of actions y against x, both (Q, K, 7)."""
    rel = np.linalg.norm((x - y).reshape(len(x), -1), axis=1) / np.maximum(np.linalg.norm(x.reshape(len(x), -1), axis=1), 1e-12)
    return {"max_abs": float(np.abs(x - y).max()), "rel_l2_mean": float(rel.mean()), "rel_l2_max": float(rel.max()),
            "action_abs_mean": float(np.abs(x).mean())}


class EagerReference:
    """The eager bf16 path's actions on fixed random queries (computed once, on first use)."""

    def __init__(self, eager: CosmosPolicy, queries: int, batch: int):
        self.eager, self.batch = eager, batch
        self.observations = libero_observations(queries, seed=7)
        self.seeds = list(range(1000, 1000 + queries))
        self._actions: np.ndarray | None = None
        self.summary: dict[str, Any] = {"queries": queries, "batch": batch, "vs_eager": {}}

    def compare(self, variant: str, policy: CosmosPolicy) -> dict[str, Any]:
        """Record and return `policy`'s actions vs eager's, on the same queries and seeds."""
        if self._actions is None:
            self._actions = query_actions(self.eager, self.observations, self.seeds, self.batch)
            few = min(len(self.seeds), self.batch)
            single = np.stack([self.eager.predict([self.observations[i]], [self.seeds[i]])[0].actions for i in range(few)])
            self.summary["eager_batch_vs_batch1"] = {"queries": few, **compare(single, self._actions[:few])}
        row = compare(self._actions, query_actions(policy, self.observations, self.seeds, self.batch))
        self.summary["vs_eager"][variant] = row
        return row


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("2b", "tiny"), default="2b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--fast", default="full+cudagraphs", help="compared with eager for accuracy (unless --accuracy-variants)")
    parser.add_argument("--accuracy-variants", default=None,
                        help="comma-separated variants compared with eager; default: --fast and the measured +fp8 variants")
    parser.add_argument("--profile-batch", type=int, default=8, help="profile one DiT forward at this batch per variant; 0 = off")
    parser.add_argument("--dit-batches", default="1,8,16")
    parser.add_argument("--query-batches", default="8,16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-repeats", type=int, default=30)
    parser.add_argument("--accuracy-queries", type=int, default=112)
    parser.add_argument("--budget-s", type=float, default=520.0, help="start no variant after this many seconds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.dit_batches = [int(x) for x in args.dit_batches.split(",")]
    args.query_batches = [int(x) for x in args.query_batches.split(",")]
    variants = args.variants.split(",")
    requested = [name for name in args.accuracy_variants.split(",") if name] if args.accuracy_variants else [args.fast]
    unknown = sorted(set(variants + requested) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    fp8 = [name for name in variants if VARIANTS[name].get("dit_precision") == "fp8"]
    checked = requested if args.accuracy_variants else requested + fp8  # default: --fast and the FP8 variants
    began = time.perf_counter()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    results: dict[str, Any] = {"meta": {
        "config": args.config, "device": torch.cuda.get_device_name(device) if on_gpu else platform.processor() or "cpu",
        "dtype": str(dtype), "torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
        "python": platform.python_version(), "argv": list(argv) if argv is not None else None,
    }, "variants": {}}
    results["matmul_tflops"] = matmul_tflops(device, dtype, 8192 if on_gpu else 512, 20 if on_gpu else 3)
    if fp8:
        results["fp8_matmul_tflops"] = fp8_matmul_tflops(device, 8192 if on_gpu else 512, 20 if on_gpu else 3)
    if args.profile_batch:
        prepare(device)  # before the first CUDA graph is captured

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=2))

    eager, build_s = build(args, "eager")
    results["meta"]["weights_checksum"] = _checksum(eager)
    results["dit_flops_per_sample"] = dit_flops(eager)
    tokens = eager.layout.num_frames * (eager.latent_shape[2] // 2) * (eager.latent_shape[3] // 2)
    config = eager.network.transformer.config
    results["sdpa"] = sdpa_backends(device, dtype, 8, tokens, config.num_attention_heads, config.attention_head_dim)
    results["vae_encode"] = vae_encode(eager, args.query_batches[:1] + [1], args.repeats)
    save()
    reference = EagerReference(eager, args.accuracy_queries, max(args.query_batches))
    for variant in variants:
        if time.perf_counter() - began > args.budget_s:
            results["variants"][variant] = {"skipped": f"budget of {args.budget_s} s spent"}
            continue
        policy = None
        try:
            policy, seconds = (eager, build_s) if variant == "eager" else build(args, variant)
            row = {"options": VARIANTS[variant], "build_and_compile_s": seconds, "weights_checksum": _checksum(policy),
                   **measure_variant(policy, args, results["dit_flops_per_sample"], results["matmul_tflops"])}
        except Exception as error:  # noqa: BLE001 - one variant failing must not lose the others
            row = {"options": VARIANTS[variant], "error": f"{type(error).__name__}: {str(error)[:400]}"}
        if policy is not None and "error" not in row:
            row.update(_extras(variant, policy, reference, checked, args))
        results["variants"][variant] = row
        print(_line(variant, row), flush=True)
        if "profile" in row:
            print(format_profile(variant, row["profile"]), flush=True)
        if reference.summary["vs_eager"]:
            results["accuracy"] = reference.summary
        save()
        if policy is not None and policy is not eager:
            del policy
            gc.collect()
            if on_gpu:
                torch.cuda.empty_cache()
    results["wall_s"] = time.perf_counter() - began
    save()
    print(_table(results))
    return results


def _extras(variant: str, policy: CosmosPolicy, reference: EagerReference, checked: list[str],
            args: argparse.Namespace) -> dict[str, Any]:
    """The profile and the accuracy of a measured variant; a failure is recorded, not raised."""
    out: dict[str, Any] = {}
    if args.profile_batch:
        try:
            inputs = policy.random_dit_inputs(args.profile_batch)
            out["profile"] = profile_dit(lambda: policy.network(*inputs), policy.network.device, args.profile_batch)
        except Exception as error:  # noqa: BLE001 - the speed figures stand without the profile
            out["profile"] = {"error": f"{type(error).__name__}: {str(error)[:400]}"}
    if variant in checked:
        try:
            out["accuracy_vs_eager"] = reference.compare(variant, policy)
        except Exception as error:  # noqa: BLE001
            out["accuracy_vs_eager"] = {"error": f"{type(error).__name__}: {str(error)[:400]}"}
    return out


def _checksum(policy: CosmosPolicy) -> float:
    """Sum of the first block's adaLN weights (never quantised): equal across variants = the same random init."""
    with torch.no_grad():
        return float(sum(p.float().sum() for p in policy.network.transformer.transformer_blocks[0].norm1.parameters()))


def _line(variant: str, row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{variant}: {row['error']}"
    dit = " ".join(f"b{d['batch']} {d['ms']:.1f}ms {d['share_of_matmul']:.0%}" for d in row["dit"])
    q = " ".join(f"b{d['batch']} {d['chunks_per_s']:.2f}/s ({d['chunks_per_s_images_prepared_by_clients']:.2f} images "
                 f"prepared by clients)" for d in row["queries"])
    return (f"{variant}: build {row['build_and_compile_s']:.0f}s | DiT (share of bf16 matmul) {dit} | latency p50 "
            f"{row['latency_batch1_ms']['p50']:.0f}ms p99 {row['latency_batch1_ms']['p99']:.0f}ms | chunks {q}")


def _table(results: dict[str, Any]) -> str:
    lines = [f"matmul {results['matmul_tflops']:.3g} TFLOP/s, DiT {results['dit_flops_per_sample'] / 1e12:.3g} TFLOP/sample-forward",
             f"SDPA: {results['sdpa']}", f"VAE: {results['vae_encode']}"]
    if "fp8_matmul_tflops" in results:
        lines[0] += f", FP8 rowwise matmul {results['fp8_matmul_tflops']:.3g} TFLOP/s"
    for name, row in results["variants"].items():
        if "skipped" not in row:
            lines.append(_line(name, row))
            if "profile" in row:
                lines.append(format_profile(name, row["profile"]))
    if "accuracy" in results:
        accuracy = results["accuracy"]
        lines.append(f"accuracy vs eager ({accuracy['queries']} queries, batch {accuracy['batch']}):")
        noise = accuracy.get("eager_batch_vs_batch1")
        rows = [("eager batch vs 1", noise)] if noise else []
        for label, c in rows + list(accuracy["vs_eager"].items()):
            if "error" in c:
                lines.append(f"  {label:<22} {c['error']}")
            else:
                lines.append(f"  {label:<22} max abs {c['max_abs']:.4f}  rel L2 mean {c['rel_l2_mean']:.4f} "
                             f"max {c['rel_l2_max']:.4f}  (|action| mean {c['action_abs_mean']:.3f})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
