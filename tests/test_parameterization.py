"""The parameterisation wrapper: v -> eps, the output-to-eps factor, and alpha-bar at fractional timesteps."""
import numpy as np
import pytest
import torch

from sampling.parameterization import alpha_at, check_prediction, eps_per_output, to_eps
from sampling.schedule import alphas_cumprod, scaled_linear_betas

ALPHAS = alphas_cumprod(scaled_linear_betas())


def test_v_to_eps_inverts_the_v_definition():
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    a = ALPHAS[700].item()
    x_t = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    v = a**0.5 * eps - (1 - a) ** 0.5 * x0  # Salimans & Ho 2022
    assert (to_eps("v", v, x_t, a) - eps).abs().max() <= 1e-12
    assert to_eps("epsilon", eps, x_t, a) is eps
    assert eps_per_output("v", a) == pytest.approx(a**0.5) and eps_per_output("epsilon", a) == 1.0


def test_alpha_at_integer_and_fractional_timesteps():
    assert alpha_at(ALPHAS, 981) == ALPHAS[981].item()
    assert alpha_at(ALPHAS, 981.0) == ALPHAS[981].item()
    sigmas = ((1 - ALPHAS) / ALPHAS).sqrt().numpy()
    t = 412.37
    sigma = np.interp(t, np.arange(1000), sigmas)  # diffusers' interpolation of sigmas over timesteps
    assert alpha_at(ALPHAS, t) == pytest.approx(1 / (1 + sigma**2), rel=1e-12)


def test_unknown_prediction():
    with pytest.raises(ValueError, match="prediction='x0' is unknown; allowed: epsilon, v"):
        check_prediction("x0")
