"""Linear multistep (LMS) in sigma space: Adams-Bashforth with coefficients integrated over the actual,
unevenly spaced noise levels (k-diffusion `sample_lms`; numerical reference diffusers LMSDiscreteScheduler).

The coefficient of slope d_{i-j} is the integral over [sigma_i, sigma_{i+1}] of its Lagrange basis polynomial
through sigma_i, ..., sigma_{i-order+1}. That polynomial has degree order - 1, so Gauss-Legendre quadrature with
order // 2 + 1 nodes (exact to degree order + 1) integrates it exactly; the references call scipy's quad.
"""
import numpy as np
import torch

from sampling.euler import ode_slope
from sampling.schedule import Denoiser, Schedule, StepCallback, eps_at


def lms_coefficient(sigmas: list[float], i: int, order: int, j: int) -> float:
    """Integral over [sigma_i, sigma_{i+1}] of prod_{k != j, k < order} (s - sigma_{i-k}) / (sigma_{i-j} - sigma_{i-k}),
    the weight of the slope taken j steps ago."""
    # k-diffusion linear_multistep_coeff / diffusers LMSDiscreteScheduler.get_lms_coefficient, integrated exactly
    nodes, weights = np.polynomial.legendre.leggauss(order // 2 + 1)
    low, high = sigmas[i], sigmas[i + 1]
    half, middle = (high - low) / 2, (high + low) / 2
    total = 0.0
    for node, weight in zip(nodes.tolist(), weights.tolist()):
        s = middle + half * node
        basis = 1.0
        for k in range(order):
            if k != j:
                basis *= (s - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
        total += weight * basis
    return half * total


def sample_lms(model: Denoiser, x: torch.Tensor, schedule: Schedule, callback: StepCallback | None = None,
               order: int = 4) -> torch.Tensor:
    """One model evaluation per step; step i uses the last min(i + 1, order) slopes (diffusers' order = 4)."""
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise ValueError(f"order={order!r} is invalid; allowed: an integer >= 1")
    x = x * schedule.init_sigma
    slopes: list[torch.Tensor] = []  # newest last
    for i, (t, sigma, _) in enumerate(schedule.levels()):
        slopes.append(ode_slope(x, eps_at(model, x, sigma, t), sigma))
        del slopes[:-order]
        current_order = len(slopes)
        coefficients = [lms_coefficient(schedule.sigmas, i, current_order, j) for j in range(current_order)]
        x = x + sum(c * d for c, d in zip(coefficients, reversed(slopes)))
        if callback is not None:
            callback(i, t, x)
    return x
