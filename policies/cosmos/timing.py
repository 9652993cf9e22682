"""Time per inference phase (pre-processing, VAE encode, DiT, VAE decode, post-processing).

Two clocks:
- `seconds`: the host's wall clock. With `synchronize=True` each phase waits for the GPU to finish
  its queued work before the clock is read, so the split is true device time; without it the GPU
  phases only measure how long the host took to queue their kernels.
- `gpu_seconds()`: on CUDA without synchronisation, CUDA events recorded on the stream at each
  phase's start and end give the GPU timeline's split (kernels, plus any time the stream waited
  for the host or for another context) without ever stalling the GPU for the measurement.
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
        self._events = device.type == "cuda" and not synchronize
        self._device = device
        self._marks: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block and add it to `seconds[name]` (and, on CUDA, to gpu_seconds())."""
        if self._sync:
            torch.cuda.synchronize(self._device)
        start = time.perf_counter()
        if self._events:
            began = torch.cuda.Event(enable_timing=True)
            began.record()
        try:
            yield
        finally:
            if self._events:
                ended = torch.cuda.Event(enable_timing=True)
                ended.record()
                self._marks.append((name, began, ended))
            if self._sync:
                torch.cuda.synchronize(self._device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def gpu_seconds(self) -> dict[str, float]:
        """GPU-timeline seconds per phase from the CUDA events; waits for the last phase's end event.

        Empty on the CPU and with synchronize=True (then `seconds` is already device time).
        """
        if not self._marks:
            return {}
        self._marks[-1][2].synchronize()
        out: dict[str, float] = {}
        for name, began, ended in self._marks:
            out[name] = out.get(name, 0.0) + began.elapsed_time(ended) / 1e3
        return out
