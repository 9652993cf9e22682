"""Wall-clock time per inference phase (pre-processing, VAE encode, DiT, VAE decode, post-processing).

With `synchronize=True` each phase waits for the GPU to finish its queued work before the clock is
read, so the split is true device time; without it only the total is meaningful and the GPU is
never stalled for the sake of measurement.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


class PhaseTimer:
    """Accumulates seconds per named phase."""

    def __init__(self, device: torch.device, synchronize: bool):
        self.seconds: dict[str, float] = {}
        self._sync = synchronize and device.type == "cuda"
        self._device = device

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block and add it to `seconds[name]`."""
        if self._sync:
            torch.cuda.synchronize(self._device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                torch.cuda.synchronize(self._device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
