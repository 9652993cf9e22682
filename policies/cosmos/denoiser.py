"""The x0 predictor the sampler calls: preconditioning plus frame-replacement conditioning.

Preconditioning (rectified-flow style, sigma_data = 1; REFERENCE.md §2):
c_in = c_skip = 1 / (1 + sigma), c_out = -sigma / (1 + sigma), c_noise = sigma / (1 + sigma).
Conditioning frames are clean: they get sigma 0 (c_noise 0), enter the network as their clean
latents, and replace the prediction on those frames, at every step. No classifier-free guidance.
"""
from __future__ import annotations

from typing import Callable

import torch

NetworkFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_in (B,16,T,h,w), c_noise (B,T), condition (B,T), text (B,L,D)) -> raw output (B,16,T,h,w)."""


class ConditionedDenoiser:
    """x0(x, sigma) for one batch of queries.

    clean: (B, 16, T, h, w) float32 clean latents; only the conditioning frames are read.
    condition: (T,) bool, True on conditioning frames (layout.conditioning_mask(mode)).
    text: (B, L, D) instruction embeddings.
    """

    def __init__(self, network: NetworkFn, clean: torch.Tensor, condition: torch.Tensor, text: torch.Tensor):
        self.network = network
        self.clean = clean
        self.text = text
        batch, frames = clean.shape[0], clean.shape[2]
        self.frame_is_given = condition.to(clean.device).view(1, 1, frames, 1, 1)
        self.condition = condition.to(device=clean.device, dtype=torch.float32).expand(batch, frames)

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """x: (B, 16, T, h, w) float64 noisy latents at noise level sigma. Returns x0 (B, 16, T, h, w) float64."""
        c_in = 1.0 / (1.0 + sigma)
        c_out = -sigma / (1.0 + sigma)
        x32 = x.float()
        x_in = torch.where(self.frame_is_given, self.clean, c_in * x32)
        c_noise = (1.0 - self.condition) * (sigma / (1.0 + sigma))
        output = self.network(x_in, c_noise, self.condition, self.text)
        x0 = c_in * x32 + c_out * output
        return torch.where(self.frame_is_given, self.clean, x0).to(torch.float64)
