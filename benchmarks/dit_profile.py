"""Where a DiT forward's time goes: kernel time by category, idle gaps and the top kernels (torch.profiler).

Categories (first match wins, by kernel name):
- gemm: cuBLAS / cuBLASLt (nvjet, xmma), CUTLASS (incl. the FP8 rowwise `_scaled_mm` kernels),
  inductor's triton matmul templates (triton_tem_);
- triton_fused: inductor's generated kernels (triton_poi/red/per_: norms, adaLN modulation, RoPE,
  GELU, FP8 activation quantisation, residual adds); on the CPU the compiled regions' own time;
- attention: SDPA kernels (flash, cuDNN, memory-efficient fmha);
- other: everything else (aten elementwise kernels, copies, memsets);
- idle: the forward's wall time (measured without the profiler) minus the summed kernel time:
  CPU launch overhead and synchronisation the GPU waits through.
On CUDA the kernels are CUPTI's device activities, also inside CUDA graph replays provided the
profiler was initialised before the first graph was captured (`prepare()`). On the CPU (smoke
runs) aten operators' self time stands in for kernel time, and an operator called inside a GEMM or
attention operator counts as that (the CPU `_scaled_mm` dequantises with copies and calls mm).
"""
from __future__ import annotations

import re
import statistics
import time
from collections import defaultdict
from typing import Any, Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

CATEGORIES = ("gemm", "triton_fused", "attention", "other", "idle")
_RULES = (
    ("gemm", re.compile(r"^triton_tem_")),
    ("triton_fused", re.compile(r"^triton_|cpp_fused|Torch-Compiled Region|CompiledFxGraph|CompiledFunction")),
    ("attention", re.compile(r"flash|fmha|sdpa|scaled_dot_product|attention|cudnn", re.I)),
    ("gemm", re.compile(r"gemm|cutlass|cublas|nvjet|xmma|scaled_mm|f8f8bf16|^aten::(mm|addmm|bmm|matmul|linear)$", re.I)),
)


def prepare(device: torch.device) -> None:
    """Initialise the profiler before any CUDA graph is captured (else replays can go unseen)."""
    if device.type == "cuda":
        from torch.profiler._utils import _init_for_cuda_graphs  # torch's documented workaround

        _init_for_cuda_graphs()


def category(name: str) -> str:
    """The category of a kernel (or, on the CPU, an operator) name."""
    return next((label for label, rule in _RULES if rule.search(name)), "other")


def _cpu_category(event: Any) -> str:
    """A CPU operator's category: that of its nearest GEMM or attention caller, else its own."""
    parent = event.cpu_parent
    while parent is not None:
        label = category(parent.name)
        if label in ("gemm", "attention"):
            return label
        parent = parent.cpu_parent
    return category(event.name)


def profile_dit(forward: Callable[[], Any], device: torch.device, batch: int, forwards: int = 3,
                categorize: Callable[[str], str] = category, categories: tuple[str, ...] = CATEGORIES) -> dict[str, Any]:
    """Profile `forwards` calls of `forward` (one DiT evaluation at `batch` samples, compiled already).

    categorize / categories: kernel name -> label, and the labels in report order (ending in "idle");
    another network passes its own (vae_encode.py: convolutions).
    Returns wall_ms (median of unprofiled calls), kernel_ms, per category {ms, share of wall} (ms per
    forward), and the top 10 kernels by time ({name, category, ms per forward, calls per forward}).
    """
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(2):  # a new batch size may still record a CUDA graph
        forward()
    sync()
    walls = []
    for _ in range(forwards + 1):
        began = time.perf_counter()
        forward()
        sync()
        walls.append(time.perf_counter() - began)
    wall_ms = statistics.median(walls[1:]) * 1e3
    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if on_gpu else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for _ in range(forwards):
            forward()
        sync()
    kernels: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])  # (name, category) -> [us, calls]
    for event in prof.events():
        if on_gpu and event.device_type == DeviceType.CUDA:
            entry = kernels[(event.name, categorize(event.name))]
            entry[0] += event.time_range.elapsed_us()
        elif not on_gpu and event.device_type == DeviceType.CPU and event.self_cpu_time_total > 0:
            entry = kernels[(event.name, _cpu_category(event) if categorize is category else categorize(event.name))]
            entry[0] += event.self_cpu_time_total
        else:
            continue
        entry[1] += 1
    per_forward = {key: (us / 1e3 / forwards, calls / forwards) for key, (us, calls) in kernels.items()}
    totals = dict.fromkeys(categories, 0.0)
    for (_, label), (ms, _) in per_forward.items():
        totals[label] += ms
    kernel_ms = sum(totals.values())
    totals["idle"] = max(wall_ms - kernel_ms, 0.0)
    top = sorted(per_forward.items(), key=lambda item: -item[1][0])[:10]
    out: dict[str, Any] = {
        "batch": batch, "source": "cuda kernels" if on_gpu else "cpu operators (self time)", "forwards": forwards,
        "wall_ms": wall_ms, "kernel_ms": kernel_ms,
        "categories": {label: {"ms": ms, "share": ms / wall_ms} for label, ms in totals.items()},
        "top": [{"name": name[:160], "category": label, "ms": ms, "calls": calls} for (name, label), (ms, calls) in top],
    }
    if on_gpu and not kernels:
        out["note"] = "the profiler saw no CUDA kernels (CUDA graphs captured before prepare()?)"
    return out


def format_profile(variant: str, row: dict[str, Any]) -> str:
    """A few lines: the category split of one forward, then the top kernels."""
    if "error" in row:
        return f"  profile {variant}: {row['error']}"
    split = " | ".join(f"{label} {c['ms']:.2f}ms {c['share']:.0%}" for label, c in row["categories"].items())
    lines = [f"  profile {variant} b{row['batch']} ({row['source']}): wall {row['wall_ms']:.2f}ms = {split}"]
    lines += [f"    {k['ms']:8.3f}ms x{k['calls']:<5g} {k['category']:<12} {k['name'][:100]}" for k in row["top"]]
    return "\n".join(lines)
