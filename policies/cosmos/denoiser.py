"""The x0 predictor the sampler calls: preconditioning plus frame-replacement conditioning.

Preconditioning (rectified-flow style, sigma_data = 1; REFERENCE.md §2):
c_in = c_skip = 1 / (1 + sigma), c_out = -sigma / (1 + sigma), c_noise = sigma / (1 + sigma).
Conditioning frames are clean: they get sigma 0 (c_noise 0), enter the network as their clean
latents, and replace the prediction on those frames, at every step. No classifier-free guidance.

Every row has its own sigma (rows of one batch may be at different points of different schedules,
sampler.sample_rows), and the network runs on at most `chunk` rows at a time; with `pad_chunks`
every call has exactly `chunk` rows (the last one padded with copies of its first row), so a row's
result never depends on how many rows are in flight (batch-invariant kernels at one fixed size).
"""
from __future__ import annotations

from typing import Callable

import torch

NetworkFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_in (B,16,T,h,w), c_noise (B,T), condition (B,T), text (B,L,D)) -> raw output (B,16,T,h,w)."""


class ConditionedDenoiser:
    """x0(x, sigma, rows) for one batch of queries.

    clean: (B, 16, T, h, w) float32 clean latents; only the conditioning frames are read.
    condition: (T,) or (B, T) bool, True on conditioning frames (layout.conditioning_mask(mode)).
    text: (B, L, D) instruction embeddings.
    chunk: most rows per network call (0: all at once); pad_chunks: pad every call to `chunk` rows.
    """

    def __init__(self, network: NetworkFn, clean: torch.Tensor, condition: torch.Tensor, text: torch.Tensor,
                 chunk: int = 0, pad_chunks: bool = False):
        self.network = network
        self.clean = clean
        self.text = text
        batch, frames = clean.shape[0], clean.shape[2]
        condition = condition.to(clean.device)
        condition = condition.expand(batch, frames) if condition.dim() == 1 else condition
        self.frame_is_given = condition.view(batch, 1, frames, 1, 1)
        self.condition = condition.to(torch.float32)
        self.chunk = chunk
        self.pad_chunks = pad_chunks and chunk > 0
        self.evaluations = 0  # network calls made (chunks count separately)

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """x: (A, 16, T, h, w) float64 noisy latents of `rows` (default: all B rows, in order).

        sigma: one noise level for all rows, or (A,) float64, one per row.
        Returns x0 (A, 16, T, h, w) float64.
        """
        count = x.shape[0]
        if rows is None:
            rows = torch.arange(count, device=x.device)
        sigmas = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).expand(count)
        c_in = (1.0 / (1.0 + sigmas)).float().view(count, 1, 1, 1, 1)
        c_out = (-sigmas / (1.0 + sigmas)).float().view(count, 1, 1, 1, 1)
        c_noise = (sigmas / (1.0 + sigmas)).float().view(count, 1)
        given = self.frame_is_given.index_select(0, rows)
        clean = self.clean.index_select(0, rows)
        condition = self.condition.index_select(0, rows)
        x32 = x.float()
        x_in = torch.where(given, clean, c_in * x32)
        output = self._network(x_in, (1.0 - condition) * c_noise, condition, self.text.index_select(0, rows))
        x0 = c_in * x32 + c_out * output
        return torch.where(given, clean, x0).to(torch.float64)

    def _network(self, x_in: torch.Tensor, c_noise: torch.Tensor, condition: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        count = x_in.shape[0]
        size = self.chunk if self.chunk > 0 else count
        if size >= count and not self.pad_chunks:
            self.evaluations += 1
            return self.network(x_in, c_noise, condition, text)
        outputs = []
        for start in range(0, count, size):
            parts = [t[start:start + size] for t in (x_in, c_noise, condition, text)]
            rows = parts[0].shape[0]
            if self.pad_chunks and rows < size:
                parts = [torch.cat([p, p[:1].expand(size - rows, *p.shape[1:])]) for p in parts]
            self.evaluations += 1
            outputs.append(self.network(*parts)[:rows])
        return torch.cat(outputs)
