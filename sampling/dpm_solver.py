"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2, multistep second order, data prediction).

Written in sigma space with lambda = -log(sigma) (k-diffusion `sample_dpmpp_2m`); diffusers'
DPMSolverMultistepScheduler (solver_order=2, midpoint, lower_order_final, final_sigmas_type="zero") writes the
same update on VP latents, and is the numerical reference. The first step is first order (DDIM), every later
step second order, and the last one lands on the denoised x_0 (sigma = 0).
"""
import math

import torch

from sampling.schedule import Denoiser, Schedule, StepCallback, eps_at


def sample_dpmpp_2m(model: Denoiser, x: torch.Tensor, schedule: Schedule, callback: StepCallback | None = None
                    ) -> torch.Tensor:
    """One model evaluation per step."""
    x = x * schedule.init_sigma
    previous: tuple[torch.Tensor, float] | None = None  # (denoised, h) of the step before
    for i, (t, sigma, sigma_next) in enumerate(schedule.levels()):
        denoised = x - sigma * eps_at(model, x, sigma, t)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)  # lambda_next - lambda
            direction = denoised
            if previous is not None:
                # DPM-Solver++ Alg. 2: D = (1 + 1 / (2 r)) x0_i - 1 / (2 r) x0_{i-1}, r = h_{i-1} / h_i
                old_denoised, h_last = previous
                r = h_last / h
                direction = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - math.expm1(-h) * direction
            previous = (denoised, h)
        if callback is not None:
            callback(i, t, x)
    return x
