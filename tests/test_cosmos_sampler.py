"""The Cosmos Policy sampler: sigma schedule, evaluation count, solver and noise (no network needed)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robofleet.policies.cosmos.sampler import _ab2_step, initial_noise, sample, sigma_schedule


def test_five_steps_evaluate_at_80_42_21_9_6_then_4():
    np.testing.assert_allclose(sigma_schedule(5), [80.0, 42.3, 21.0, 9.6, 4.0], atol=0.1)


def test_one_step_is_a_single_prediction_at_sigma_80():
    assert sigma_schedule(1).tolist() == [80.0]


@pytest.mark.parametrize("steps", [1, 2, 5, 10])
def test_num_steps_is_the_number_of_network_evaluations(steps):
    sigmas_seen = []

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        sigmas_seen.append(sigma)
        return torch.zeros_like(x)

    sample(denoise, torch.randn(1, 2, 3, 2, 2), steps)
    assert len(sigmas_seen) == steps
    np.testing.assert_allclose(sigmas_seen, sigma_schedule(steps))


def test_first_evaluation_sees_sigma_max_times_the_noise():
    noise = torch.randn(2, 16, 3, 2, 2)
    inputs = []

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        inputs.append(x.clone())
        return torch.zeros_like(x)

    sample(denoise, noise, 3)
    torch.testing.assert_close(inputs[0], noise.double() * 80.0)


def test_second_order_step_is_exact_when_x0_is_linear_in_log_sigma():
    # dx/dlambda = x0(lambda) - x with lambda = -log(sigma); for x0 = a + b*lambda the exact
    # solution is x = a + b*(lambda - 1) + C*exp(-lambda).
    a, b, c = 0.3, -0.7, 2.0

    def exact(sigma: float) -> float:
        lam = -math.log(sigma)
        return a + b * (lam - 1.0) + c * math.exp(-lam)

    def x0(sigma: float) -> torch.Tensor:
        return torch.tensor([a + b * -math.log(sigma)], dtype=torch.float64)

    s_prev, s, t = 42.3, 21.0, 9.6
    x_s = torch.tensor([exact(s)], dtype=torch.float64)
    x_t = _ab2_step(x_s, s, t, x0(s), s_prev, x0(s_prev))
    assert x_t.item() == pytest.approx(exact(t), rel=1e-12)


def test_noise_of_a_seed_is_independent_of_its_batch_position():
    alone = initial_noise([7], (16, 9, 4, 4))
    batch = initial_noise([3, 7, 11], (16, 9, 4, 4))
    assert torch.equal(alone[0], batch[1])
    assert not torch.equal(batch[0], batch[1])


def test_noise_is_numpy_randomstate_of_the_seed():
    expected = np.random.RandomState(195).standard_normal((16, 9, 4, 4)).astype(np.float32)
    assert np.array_equal(initial_noise([195], (16, 9, 4, 4))[0].numpy(), expected)


def test_seed_outside_randomstate_range_is_rejected():
    with pytest.raises(ValueError, match="RandomState"):
        initial_noise([2**32], (1,))
