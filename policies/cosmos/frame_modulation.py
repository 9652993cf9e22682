"""The DiT's adaLN-LoRA modulation computed once per latent frame instead of once per token.

diffusers' CosmosTransformer3DModel turns the per-frame timestep (B, 1, T, 1, 1) into per-frame
embeddings and then copies them to every token of the frame, (B, T*H*W, C), before the blocks. Each
block's three CosmosAdaLayerNormZero then run their LoRA (C -> 256 -> 3C linears) on every token:
at the LIBERO shape (196 tokens per frame) that is ~8% of the DiT's FLOPs, and the per-token shift,
scale and gate tensors (B, T*H*W, 3C) are read again by every norm. The rows of one frame are equal
by construction, so computing the LoRA on one row per frame and broadcasting gives the same values
(up to the GEMM's summation order for a different row count: the same math, not always the same
bits in bfloat16).

`modulate_per_frame(transformer, tokens_per_frame)` swaps the blocks' norm1/norm2/norm3 for
`PerFrameAdaLayerNormZero`, which holds the same submodules under the same names (state-dict keys
and weights unchanged). The output norm (once per forward, not per block) is left as it is.
"""
from __future__ import annotations

import torch
from torch import nn


class PerFrameAdaLayerNormZero(nn.Module):
    """diffusers' CosmosAdaLayerNormZero with the modulation computed per latent frame.

    Same submodules as the original (norm, activation, linear_1, linear_2), shared, not copied.
    tokens_per_frame: DiT tokens of one latent frame, (h / 2) * (w / 2) for latent side h x w.
    forward(hidden (B, N, C), embedded_timestep (B, N, E), temb (B, N, 3C) or None), N = T * tokens_per_frame
    -> (normalised and modulated hidden (B, N, C), gate (B, N, C)), as the original.
    """

    def __init__(self, original: nn.Module, tokens_per_frame: int):
        super().__init__()
        self.norm = original.norm
        self.activation = original.activation
        self.linear_1 = original.linear_1
        self.linear_2 = original.linear_2
        self.tokens_per_frame = tokens_per_frame

    def forward(self, hidden_states: torch.Tensor, embedded_timestep: torch.Tensor,
                temb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if embedded_timestep.ndim != 3:  # one timestep per sample (B, E): nothing repeated to skip
            return self._per_row(hidden_states, embedded_timestep, temb)
        batch, tokens, channels = hidden_states.shape
        per = self.tokens_per_frame
        if tokens % per:
            raise ValueError(f"{tokens} DiT tokens are not whole frames of {per} tokens")
        frames = tokens // per
        first = embedded_timestep.view(batch, frames, per, -1)[:, :, 0]  # (B, T, E): one row per frame
        modulation = self.linear_2(self.linear_1(self.activation(first)))
        if temb is not None:
            modulation = modulation + temb.view(batch, frames, per, -1)[:, :, 0]
        shift, scale, gate = modulation.unsqueeze(2).chunk(3, dim=-1)  # each (B, T, 1, C)
        normed = self.norm(hidden_states).view(batch, frames, per, channels)
        modulated = (normed * (1 + scale) + shift).reshape(batch, tokens, channels)
        return modulated, gate.expand(batch, frames, per, channels).reshape(batch, tokens, channels)

    def _per_row(self, hidden_states: torch.Tensor, embedded_timestep: torch.Tensor,
                 temb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        modulation = self.linear_2(self.linear_1(self.activation(embedded_timestep)))
        if temb is not None:
            modulation = modulation + temb
        shift, scale, gate = (x.unsqueeze(1) for x in modulation.chunk(3, dim=-1))
        return self.norm(hidden_states) * (1 + scale) + shift, gate


def modulate_per_frame(transformer: nn.Module, tokens_per_frame: int) -> int:
    """Swap every block's norm1/2/3 for PerFrameAdaLayerNormZero (in place); returns how many were swapped."""
    swapped = 0
    for block in transformer.transformer_blocks:
        for name in ("norm1", "norm2", "norm3"):
            original = getattr(block, name)
            if not isinstance(original, PerFrameAdaLayerNormZero):
                setattr(block, name, PerFrameAdaLayerNormZero(original, tokens_per_frame))
                swapped += 1
    return swapped
