"""Encode only the latent frames a query needs, resuming the Wan VAE after a cached constant prefix.

The Wan2.1 VAE encoder is causal in time: it encodes pixel frame 0 alone, then chunks of 4 pixel
frames, each chunk seeing earlier ones only through a per-layer cache of their last frames. So:

1. Latent frames 0..n-1 depend on pixel frames 0..4(n-1) only. Frames after the last clean
   conditioning image are never read by the DiT (they are noise, or overwritten by injected
   vectors), so they need not be encoded at all.
2. Every query's video starts with the same pictures (the blank frame, then the black placeholder
   behind the proprio slot), so the encoder's outputs and cache after that prefix are the same for
   every query. They are computed once per batch shape and resumed from.

The chunk loop below is diffusers' `AutoencoderKLWan._encode` (diffusers 0.42) with a start and an
end; the chunks that run are the very same calls on the same inputs, so the latents are bitwise
those of the full encode wherever the kernels are deterministic (tests/test_cosmos_fast.py checks
this on the CPU; benchmarks/cosmos_fast.py reports the GPU difference).

3. The resumed chunks always see the same shapes for a batch size, so they can run through a
   torch.compile'd encoder (at most two graphs, as for the DiT: the norms, SiLUs, pads and cache
   concatenations between the convolutions fuse) and in channels-last-3d memory layout (cuDNN's
   native layout for 3-D convolutions on tensor cores). The prefix runs once per shape, eagerly.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import torch
from diffusers import AutoencoderKLWan

from robofleet.policies.cosmos.config import VAE_TEMPORAL_FACTOR

_CACHED_SHAPES = 4  # batch shapes whose prefix state is kept (each ~40 MB per query at 224 px)


def pixel_frames(latent_frames: int) -> int:
    """Pixel frames behind the first `latent_frames` latent frames: 1 + 4 (n - 1)."""
    return 1 + VAE_TEMPORAL_FACTOR * (latent_frames - 1)


class PrefixCachedEncoder:
    """Wan VAE encoder output (mean and log-variance, before normalisation) for a leading part of a video.

    vae: a diffusers AutoencoderKLWan without patchify, tiling or slicing (the Wan2.1 VAE).
    prefix_latents: how many leading latent frames are the same constant picture (black, -1 in
        pixel space) in every query; their result is cached per (batch, H, W, dtype).
    compile_mode: torch.compile mode for the resumed chunks (None: eager).
    channels_last: feed the resumed chunks in channels-last-3d layout (the VAE's Conv3d weights
        should be in that layout too: CosmosNetwork.accelerate_vae does both).
    """

    def __init__(self, vae: AutoencoderKLWan, prefix_latents: int, compile_mode: str | None = None,
                 channels_last: bool = False):
        if vae.config.get("patch_size") is not None:
            raise ValueError("PrefixCachedEncoder supports the Wan2.1 VAE (no patchify); this VAE patchifies")
        self.vae = vae
        self.prefix_latents = prefix_latents
        self.channels_last = channels_last
        # torch's automatic dynamic shapes: a static graph for the first batch size, then one with a
        # dynamic batch dimension that serves every other size (two compiles, not one per size)
        self._resume_encoder = vae.encoder if compile_mode is None else torch.compile(vae.encoder, mode=compile_mode)
        self._prefix: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, list[Any]]] = OrderedDict()

    @torch.no_grad()
    def encode(self, video: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """Moments (B, 32, latent_frames, H/8, W/8) of the video's first `latent_frames` latent frames.

        video: (B, 3, >= pixel_frames(latent_frames), H, W) in [-1, 1], in the VAE's dtype, whose
            first pixel_frames(prefix_latents) frames are all -1 (black). Those frames are not read.
        """
        if latent_frames <= self.prefix_latents:
            raise ValueError(f"latent_frames {latent_frames} must exceed the constant prefix {self.prefix_latents}")
        prefix_out, cache = self._prefix_state(video)
        features = list(cache)  # the encoder assigns new tensors into its cache list, never writes into them
        resumed = self._run_chunks(video, range(self.prefix_latents, latent_frames), features, self._resume_encoder)
        outputs = [prefix_out, *(out.contiguous() for out in resumed)]
        return self.vae.quant_conv(torch.cat(outputs, dim=2))

    def _run_chunks(self, video: torch.Tensor, chunks: range, features: list[Any],
                    encoder: Callable[..., torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Encoder outputs of the given chunks, in order, carrying the causal cache in `features`.

        Chunk 0 is pixel frame 0 alone; chunk i >= 1 covers pixel frames [1 + 4 (i - 1), 1 + 4 i).
        encoder: the module to run them through (default: the VAE's own, eager).
        """
        encoder = self.vae.encoder if encoder is None else encoder
        outputs = []
        for chunk in chunks:
            start = pixel_frames(chunk)
            frames = video[:, :, :1] if chunk == 0 else video[:, :, start : start + VAE_TEMPORAL_FACTOR]
            if self.channels_last:
                frames = frames.contiguous(memory_format=torch.channels_last_3d)
            outputs.append(encoder(frames, feat_cache=features, feat_idx=[0]))
            self._normalise_layout(features)
        return outputs

    def _normalise_layout(self, features: list[Any]) -> None:
        """One memory layout for every cached tensor, whichever path made it, so that a compiled
        encoder sees the same strides on every chunk (no recompiles); values are unchanged."""
        layout = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        for index, feature in enumerate(features):
            if isinstance(feature, torch.Tensor):
                features[index] = feature.contiguous(memory_format=layout if feature.dim() == 5 else torch.contiguous_format)

    def _prefix_state(self, video: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
        batch, channels, _, height, width = video.shape
        key = (batch, height, width, video.dtype, video.device)
        if key not in self._prefix:
            black = torch.full((batch, channels, pixel_frames(self.prefix_latents), height, width), -1.0,
                               dtype=video.dtype, device=video.device)
            features: list[Any] = [None] * self.vae._cached_conv_counts["encoder"]
            outputs = self._run_chunks(black, range(self.prefix_latents), features)
            self._prefix[key] = (torch.cat(outputs, dim=2), features)
            while len(self._prefix) > _CACHED_SHAPES:
                self._prefix.popitem(last=False)
        self._prefix.move_to_end(key)
        return self._prefix[key]
