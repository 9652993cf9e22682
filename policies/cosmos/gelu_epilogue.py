"""The feed-forward's first Linear and its GELU as one cuBLASLt call (GELU in the GEMM's epilogue).

Every DiT block's feed-forward is Linear(C -> 4C), GELU, Linear(4C -> C). Compiled, the GELU is a
kernel of its own that reads and writes the (B*N, 4C) activation: the largest tensor of the block
(7.8 ms of a 109 ms forward at batch 8 on an H100, BENCHMARKS.md). `torch._addmm_activation(...,
use_gelu=True)` asks cuBLASLt for the GEMM with the GELU applied to its output tile before it is
stored (inductor keeps the op as it is: it has no decomposition in inductor's table).

Numerics: on CUDA cuBLASLt's epilogue is the tanh approximation of GELU, at most 4.7e-4 from the
exact (erf) GELU diffusers uses - an eighth of one bfloat16 step at magnitude 1; on the CPU the op
applies the exact GELU (same values as diffusers). benchmarks/cosmos_fast.py reports the actions'
difference from the eager path next to bf16 batch noise.

`fuse_gelu_epilogues(transformer)` swaps each block's `ff.net[0]` (diffusers' GELU module) for
`EpilogueGELU`, which holds the same `proj` Linear under the same name (state-dict keys unchanged).
A block whose projection is no plain Linear (an FP8 one, fp8.py) is left as it is.
"""
from __future__ import annotations

import torch
from torch import nn


class EpilogueGELU(nn.Module):
    """gelu(x @ W.T + b) in one GEMM call; same `proj` submodule as the diffusers GELU it replaces.

    forward(x (..., C_in)) -> (..., C_out), in x's dtype.
    """

    def __init__(self, proj: nn.Linear):
        super().__init__()
        self.proj = proj
        if proj.bias is None:  # the epilogue adds a bias vector: zeros when the Linear has none
            self.register_buffer("zero_bias", torch.zeros(proj.out_features, device=proj.weight.device,
                                                          dtype=proj.weight.dtype), persistent=False)
        else:
            self.zero_bias = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        bias = self.proj.bias if self.zero_bias is None else self.zero_bias
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        out = torch._addmm_activation(bias, flat, self.proj.weight.t(), use_gelu=True)
        return out.view(*hidden_states.shape[:-1], self.proj.out_features)


def fuse_gelu_epilogues(transformer: nn.Module) -> int:
    """Replace the blocks' feed-forward GELU modules by EpilogueGELU, in place; returns how many."""
    from diffusers.models.activations import GELU

    fused = 0
    for block in transformer.transformer_blocks:
        first = block.ff.net[0]
        if isinstance(first, GELU) and first.approximate == "none" and type(first.proj) is nn.Linear:
            block.ff.net[0] = EpilogueGELU(first.proj)
            fused += 1
    return fused
