"""The Cosmos Policy sampler: EDM/Karras sigmas and the second-order multistep ("2AB") solver.

`num_steps` counts network evaluations (REFERENCE.md §2). With n >= 2 the schedule has n sigmas
from 80 down to 4 (rho = 7): n - 1 solver steps between consecutive sigmas, then one clean x0
prediction at sigma 4. n = 5 gives 80, 42.3, 21.0, 9.6 -> 4. With n = 1 it is a single x0
prediction at sigma 80.

NVIDIA's sampler counts differently for one value: its `CosmosPolicySampler.forward`
(cosmos_policy/modules/cosmos_sampler.py) passes n - 1 on for n > 1 and treats 1 as a single x0
prediction, so its `num_steps = 2` is ONE evaluation at sigma 80, the same as 1. Every other n
agrees. `reference_evaluations(n)` converts the reference's count into ours.

`sample_rows` runs rows with different step counts in one batch: at evaluation k every row that
still has an evaluation left is denoised together (at its own sigma); a row leaves after its last
evaluation. A row's arithmetic is elementwise, so with a row-independent denoiser a row's result is
bit-identical to sampling it alone (or with any batch-mates).

The solver works in x0 parametrisation on lambda = -log(sigma): the first step is an Euler step
x_t = (t/s) x_s + (1 - t/s) x0_s; later steps use an exponential integrator with x0 linear in
lambda through the previous prediction (Adams-Bashforth 2, as imaginaire's `res_x0_rk2_step`).
The state is float64, as in the reference sampler.

Initial noise is sigma_max * N(0, 1) drawn per request from numpy `RandomState(seed)` on the CPU,
the reference's "architecture-invariant" noise: identical on every device and batch position.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

SIGMA_MAX = 80.0
SIGMA_MIN = 4.0
RHO = 7.0

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
"""x0 prediction: (noisy x (B, C, T, h, w) float64, sigma) -> x0 (B, C, T, h, w) float64."""

RowDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""x0 prediction of some rows: (noisy x (A, C, T, h, w) float64, sigmas (A,) float64, row indices (A,)
int64 into the full batch) -> x0 (A, C, T, h, w) float64."""


def reference_evaluations(num_steps: int) -> int:
    """Network evaluations of NVIDIA's sampler for its `num_steps`: 1 for 1 and 2, else num_steps."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return 1 if num_steps == 2 else num_steps


def sigma_schedule(num_steps: int, sigma_max: float = SIGMA_MAX, sigma_min: float = SIGMA_MIN, rho: float = RHO) -> np.ndarray:
    """The sigmas at which the network is evaluated: float64 (num_steps,), decreasing."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_steps == 1:
        return np.array([sigma_max])
    ramp = np.linspace(0.0, 1.0, num_steps)
    inv_max, inv_min = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (inv_max + ramp * (inv_min - inv_max)) ** rho


def initial_noise(seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """Standard-normal noise (B, *shape) float32 on the CPU; row b comes from RandomState(seeds[b])."""
    rows = []
    for seed in seeds:
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed {seed} is outside numpy RandomState's range [0, 2**32)")
        rows.append(np.random.RandomState(seed).standard_normal(tuple(shape)).astype(np.float32))
    return torch.from_numpy(np.stack(rows))


def _euler_step(x: torch.Tensor, s: float, t: float, x0: torch.Tensor) -> torch.Tensor:
    return (t / s) * x + (1.0 - t / s) * x0


def _ab2_step(x: torch.Tensor, s: float, t: float, x0: torch.Tensor, s_prev: float, x0_prev: torch.Tensor) -> torch.Tensor:
    lam_s, lam_t, lam_prev = -math.log(s), -math.log(t), -math.log(s_prev)
    h = lam_t - lam_s  # > 0: sigma decreases
    c2 = (lam_prev - lam_s) / h  # < 0: the previous prediction lies behind
    phi1 = math.expm1(-h) / -h
    phi2 = (phi1 - 1.0) / -h
    b_prev = phi2 / c2
    return math.exp(-h) * x + h * ((phi1 - b_prev) * x0 + b_prev * x0_prev)


def sample(denoise: Denoiser, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Run the sampler; exactly `num_steps` calls of `denoise`.

    noise: (B, C, T, h, w) standard normal, on the model's device.
    Returns the final x0 prediction (B, C, T, h, w) float64.
    """
    sigmas = sigma_schedule(num_steps)
    x = noise.to(torch.float64) * float(sigmas[0])
    previous: tuple[float, torch.Tensor] | None = None
    for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        x0 = denoise(x, s)
        x = _euler_step(x, s, t, x0) if previous is None else _ab2_step(x, s, t, x0, *previous)
        previous = (s, x0)
    return denoise(x, float(sigmas[-1]))


def sample_rows(denoise: RowDenoiser, noise: torch.Tensor, num_steps: Sequence[int]) -> torch.Tensor:
    """Run the sampler with a step count per row; row b gets exactly num_steps[b] evaluations.

    noise: (B, C, T, h, w) standard normal, on the model's device. num_steps: (B,) ints >= 1.
    Evaluation k calls `denoise` once on the rows with num_steps > k (fewer rows as members finish),
    so max(num_steps) calls in all. Rows sharing a step count are updated together with the same
    scalar formulas as `sample`.
    Returns the final x0 prediction of every row (B, C, T, h, w) float64.
    """
    steps = [int(n) for n in num_steps]
    if len(steps) != noise.shape[0]:
        raise ValueError(f"{noise.shape[0]} noise rows but {len(steps)} step counts")
    schedules = {n: sigma_schedule(n).tolist() for n in set(steps)}
    device = noise.device
    groups = {n: torch.tensor([b for b, m in enumerate(steps) if m == n], dtype=torch.long, device=device)
              for n in schedules}
    x = noise.to(torch.float64) * SIGMA_MAX  # every schedule starts at sigma_max
    out = torch.empty_like(x)
    previous: dict[int, tuple[float, torch.Tensor]] = {}
    for k in range(max(steps, default=0)):
        live = sorted(n for n in schedules if n > k)
        rows = torch.cat([groups[n] for n in live])
        sigmas = torch.cat([torch.full((len(groups[n]),), schedules[n][k], dtype=torch.float64, device=device)
                            for n in live])
        x0_all = denoise(x.index_select(0, rows), sigmas, rows)
        start = 0
        for n in live:
            index = groups[n]
            x0 = x0_all[start:start + len(index)]
            start += len(index)
            if k == n - 1:
                out.index_copy_(0, index, x0)
                continue
            s, t = schedules[n][k], schedules[n][k + 1]
            xs = x.index_select(0, index)
            step = _euler_step(xs, s, t, x0) if n not in previous else _ab2_step(xs, s, t, x0, *previous[n])
            x.index_copy_(0, index, step)
            previous[n] = (s, x0)
    return out
