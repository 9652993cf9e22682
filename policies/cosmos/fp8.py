"""FP8 (e4m3) matmuls for the Cosmos DiT's transformer blocks: `quantize_dit(transformer)` (in place).

What is quantised, and why. In each of the DiT's transformer blocks: the self-attention
projections (attn1 to_q, to_k, to_v, to_out.0), the cross-attention projections (attn2 to_q,
to_out.0 on the video tokens; to_k, to_v on the T5 tokens) and the feed-forward (ff.net.0.proj,
ff.net.2). In the 2B DiT these are 10 layers x 28 blocks = 280 layers, each >= 1024 wide: 90% of
the DiT's parameters and 79% of its FLOPs at the LIBERO shape (1764 video tokens; attention itself
is 12%). Everything else stays in the network's dtype:
- the patch embedding (72 inputs) and the final projection (64 outputs, written straight into the
  denoiser output): narrow, almost no FLOPs, and nothing after them averages their error;
- the timestep embedding and the adaLN-LoRA modulation (norm1/2/3 of each block and norm_out,
  2048 -> 256 -> 6144): their outputs (shift, scale, gate) multiply every token, so their error
  would not average out; and since frame_modulation.py computes them once per latent frame, they
  cost almost nothing anyway;
- attention (SDPA), the norms, RoPE and GELU: not matmuls with weights.
No size threshold is needed beyond that choice (everything chosen is >= 1024 wide in the 2B DiT,
everything narrower than 512 is excluded by role), so the tiny test network quantises the same
layers. A layer is only replaced if both its widths are multiples of 16 (`_scaled_mm` requires it).

The recipe (as torchao's "float8 rowwise" inference): weights quantised once to float8_e4m3fn with
one float32 scale per output channel (row amax / 448); activations quantised on every call with one
scale per token (row amax / 448, computed from the data: no calibration); the product is
`torch._scaled_mm(x_q, W_q^T, scale_a=(M, 1), scale_b=(1, N))`, accumulated in float32 and written
in bfloat16 on CUDA (the only output type rowwise scaling supports there), then cast to the input's
dtype, plus bias. Scales are computed from amax clamped at a tiny positive floor, so an all-zero
token quantises to zeros without a data-dependent branch.

Where each path runs. CUDA (Hopper/Ada, capability >= 8.9; the factory refuses older cards):
`torch._scaled_mm`'s FP8 tensor-core kernels. CPU (tests, CI): the same `torch._scaled_mm` call, which
torch 2.13 also implements on the CPU for float8 with rowwise scales (eager and compiled), so no
emulation is needed; its result equals the dequantised reference `(x_q * s_x) @ (W_q * s_w)^T` in
float32 up to summation order (tests/test_cosmos_fp8.py), so CPU results carry the same quantisation
error as the GPU's (which also rounds each product to bfloat16). The module is
tensor ops only (no `.item()`, no data-dependent Python branches), so it compiles with
`torch.compile(fullgraph=True)` and under CUDA graphs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
_AMAX_FLOOR = 1e-12  # an all-zero row gets this amax: a finite scale, and zeros after quantisation
_QUANTISED = ("attn1.", "attn2.", "ff.")  # block submodules whose Linear layers are quantised (see above)
_ALIGNMENT = 16  # _scaled_mm needs both matrix widths to be multiples of 16


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise FP8: x (M, K) any float dtype -> (x_q (M, K) float8_e4m3fn, scale (M, 1) float32).

    x ~= x_q.float() * scale; each row's largest magnitude maps to 448, the largest e4m3 value.
    """
    amax = x.abs().amax(dim=-1, keepdim=True).float()
    scale = amax.clamp(min=_AMAX_FLOOR) / E4M3_MAX
    quantised = (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)  # clamp: e4m3fn has no inf
    return quantised, scale


class Fp8Linear(nn.Module):
    """A frozen nn.Linear with FP8 weights and per-token FP8 activations (see the module docstring).

    weight: (out, in) float8_e4m3fn buffer; weight_scale: (1, out) float32 (the layout _scaled_mm
    takes for rowwise scale_b); bias: (out,) in the original layer's dtype, or None.
    forward: x (..., in) float32 | bfloat16 -> (..., out) in x's dtype.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        with torch.no_grad():
            weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", scale.t().contiguous())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        x_q, x_scale = quantize_rows(rows)
        x_q = x_q.contiguous()  # _scaled_mm needs a row-major mat1 (a strided input keeps its strides)
        # rowwise scaling on CUDA writes bfloat16 only; on CPU any float output type
        out_dtype = torch.bfloat16 if x.is_cuda else x.dtype
        out = torch._scaled_mm(x_q, self.weight.t(), scale_a=x_scale, scale_b=self.weight_scale, out_dtype=out_dtype)
        out = out.to(x.dtype)
        if self.bias is not None:  # structure, not data: fixed when the module is built
            out = out + self.bias.to(x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, e4m3 rowwise"


@dataclass(frozen=True)
class QuantizationReport:
    """What quantize_dit replaced."""

    layers: int  # Linear layers now Fp8Linear
    quantized_parameters: int  # weights (and biases) of those layers
    total_parameters: int  # of the whole DiT before quantisation

    @property
    def share(self) -> float:
        """Quantised share of the DiT's parameters, in [0, 1]."""
        return self.quantized_parameters / max(self.total_parameters, 1)


def quantize_dit(transformer: nn.Module) -> QuantizationReport:
    """Replace the Linear layers of the blocks' attention and feed-forward by Fp8Linear, in place.

    transformer: a diffusers CosmosTransformer3DModel (its `transformer_blocks`), in eval mode.
    """
    total = sum(p.numel() for p in transformer.parameters())
    layers = quantized = 0
    for block in transformer.transformer_blocks:
        chosen = [
            (name, module) for name, module in block.named_modules()
            if isinstance(module, nn.Linear) and name.startswith(_QUANTISED)
            and module.in_features % _ALIGNMENT == 0 and module.out_features % _ALIGNMENT == 0
        ]
        for name, linear in chosen:
            block.set_submodule(name, Fp8Linear(linear))
            layers += 1
            quantized += sum(p.numel() for p in linear.parameters())
    return QuantizationReport(layers=layers, quantized_parameters=quantized, total_parameters=total)
