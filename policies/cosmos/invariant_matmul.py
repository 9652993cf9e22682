"""Batch-invariant Linear layers: a row's output never depends on the other rows of the call.

cuBLAS picks a GEMM kernel by shape, and on Hopper many of its kernels split the K reduction across
thread blocks (split-K, stream-K) in a way that depends on M and on where a row's tile falls, so a
request's numbers move with its batch-mates even at one fixed batch size (BENCHMARKS.md,
"Deterministic serving": 36 of 96 requests differ when every batch is padded to 16 rows).
`invariant_linear` computes x @ W.T + b with one Triton kernel: each output tile is one program that
walks K in BLOCK_K steps in order, accumulating in float32, so every output element is the same sum in
the same order whatever M is and wherever its row sits. The tile shape is autotuned once per weight
shape (N, K) - never per M - and BLOCK_K is the same in every candidate.

`make_batch_invariant(module)` turns every nn.Linear inside `module` into an InvariantLinear in place
(the class changes, parameters and state-dict keys stay), and a fused feed-forward GELU
(gelu_epilogue.py) into the same GEMM followed by the GELU its epilogue applies (tanh on CUDA). On CUDA the forward is the custom op
`robofleet::invariant_linear` (opaque to torch.compile); on the CPU it is torch's own linear, whose
batch invariance is not claimed here (CPU runs are checked by tests/test_replicas.py).
"""
from typing import Optional

import torch
from torch import nn

BLOCK_K = 64  # the K step of every candidate tiling: with it, the summation order of an element
GROUP_M = 8  # programs walk output tiles in groups of 8 tile-rows (L2 reuse of W); order changes no sum
TILINGS = ((128, 128, 3, 8), (128, 256, 3, 8), (128, 128, 4, 4), (64, 128, 4, 4))  # (BM, BN, stages, warps)

_kernel = None


def _triton_kernel():
    """The Triton kernel, defined on first use (Triton is imported only on CUDA machines)."""
    global _kernel
    if _kernel is not None:
        return _kernel
    import triton
    import triton.language as tl

    @triton.autotune(configs=[triton.Config({"BM": bm, "BN": bn}, num_stages=stages, num_warps=warps)
                              for bm, bn, stages, warps in TILINGS], key=["N", "K"])
    @triton.jit
    def linear_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, N, K, stride_xm, stride_xk, stride_wn, stride_wk,
                      stride_ym, stride_yn, HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                      BK: tl.constexpr, GROUP: tl.constexpr):
        pid = tl.program_id(0)
        tiles_m = tl.cdiv(M, BM)
        tiles_n = tl.cdiv(N, BN)
        per_group = GROUP * tiles_n
        first_m = (pid // per_group) * GROUP
        group_rows = tl.minimum(tiles_m - first_m, GROUP)
        tile_m = first_m + (pid % per_group) % group_rows
        tile_n = (pid % per_group) // group_rows
        rows = tile_m * BM + tl.arange(0, BM)
        cols = tile_n * BN + tl.arange(0, BN)
        ks = tl.arange(0, BK)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for start in range(0, K, BK):
            k = start + ks
            a = tl.load(x_ptr + rows[:, None] * stride_xm + k[None, :] * stride_xk,
                        mask=(rows[:, None] < M) & (k[None, :] < K), other=0.0)
            b = tl.load(w_ptr + cols[None, :] * stride_wn + k[:, None] * stride_wk,
                        mask=(cols[None, :] < N) & (k[:, None] < K), other=0.0)
            acc = tl.dot(a, b, acc)
        if HAS_BIAS:
            acc += tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn, acc.to(y_ptr.dtype.element_ty),
                 mask=(rows[:, None] < M) & (cols[None, :] < N))

    _kernel = (triton, linear_kernel)
    return _kernel


@torch.library.custom_op("robofleet::invariant_linear", mutates_args=())
def invariant_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x (..., K) @ weight (N, K).T + bias (N,) -> (..., N) in x's dtype, batch-invariant on CUDA."""
    if x.device.type != "cuda":
        return torch.nn.functional.linear(x, weight, bias)
    triton, kernel = _triton_kernel()
    flat = x.reshape(-1, x.shape[-1])
    rows, inner = flat.shape
    out = torch.empty((rows, weight.shape[0]), dtype=x.dtype, device=x.device)
    outputs = weight.shape[0]

    def grid(meta: dict) -> tuple[int]:
        return (triton.cdiv(rows, meta["BM"]) * triton.cdiv(outputs, meta["BN"]),)

    kernel[grid](flat, weight, bias if bias is not None else weight, out, rows, outputs, inner,
                 flat.stride(0), flat.stride(1), weight.stride(0), weight.stride(1), out.stride(0), out.stride(1),
                 HAS_BIAS=bias is not None, BK=BLOCK_K, GROUP=GROUP_M)
    return out.view(*x.shape[:-1], weight.shape[0])


@invariant_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


class InvariantLinear(nn.Linear):
    """An nn.Linear whose forward is `invariant_linear` (same parameters, same state-dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return invariant_linear(x, self.weight, self.bias)


class InvariantEpilogueGELU(nn.Module):
    """gelu_epilogue.EpilogueGELU (same `proj`, same keys) as the invariant GEMM, then its GELU."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = invariant_linear(hidden_states, self.proj.weight, self.proj.bias)
        return torch.nn.functional.gelu(out, approximate="tanh" if out.is_cuda else "none")


def make_batch_invariant(module: nn.Module) -> int:
    """Every plain nn.Linear inside `module` becomes an InvariantLinear, in place; returns how many
    Linear layers compute through the invariant GEMM. Call it before the module's first (compiled) call."""
    from robofleet.policies.cosmos.gelu_epilogue import EpilogueGELU

    swapped = 0
    for child in module.modules():
        if type(child) is nn.Linear:
            child.__class__ = InvariantLinear
            swapped += 1
        elif type(child) is EpilogueGELU:
            child.__class__ = InvariantEpilogueGELU
    return swapped
