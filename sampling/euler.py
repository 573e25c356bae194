"""Euler, Euler ancestral and Heun in sigma space (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Algorithms 1 and 2 without churn; k-diffusion sampling.py).

x is the sigma-space latent x_vp * sqrt(sigma^2 + 1); each sampler scales the unit-variance x_T by
`schedule.init_sigma` first and returns x_0 (sigma = 0, where both spaces agree). Numerical references:
diffusers EulerDiscreteScheduler, EulerAncestralDiscreteScheduler and HeunDiscreteScheduler.
"""
import torch

from sampling.noise import standard_normal
from sampling.schedule import Denoiser, Schedule, StepCallback, eps_at


def ode_slope(x: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """dx/dsigma = (x - D(x)) / sigma of the probability-flow ODE, with the denoised D(x) = x - sigma * eps."""
    # Karras et al. 2022 eq. 3 / Alg. 1 line 4; through D(x), not simplified to eps, to keep diffusers' rounding
    denoised = x - sigma * eps
    return (x - denoised) / sigma


def euler_step(x: torch.Tensor, eps: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    return x + ode_slope(x, eps, sigma) * (sigma_next - sigma)


def sample_euler(model: Denoiser, x: torch.Tensor, schedule: Schedule, callback: StepCallback | None = None
                 ) -> torch.Tensor:
    """One model evaluation per step."""
    x = x * schedule.init_sigma
    for i, (t, sigma, sigma_next) in enumerate(schedule.levels()):
        x = euler_step(x, eps_at(model, x, sigma, t), sigma, sigma_next)
        if callback is not None:
            callback(i, t, x)
    return x


def sample_euler_ancestral(model: Denoiser, x: torch.Tensor, schedule: Schedule,
                           generator: torch.Generator | None = None, callback: StepCallback | None = None
                           ) -> torch.Tensor:
    """Euler down to sigma_down, then fresh noise of std sigma_up; one normal draw per step (the last one with
    sigma_up = 0 included), after the deterministic part, as diffusers draws them."""
    x = x * schedule.init_sigma
    for i, (t, sigma, sigma_next) in enumerate(schedule.levels()):
        eps = eps_at(model, x, sigma, t)
        # k-diffusion get_ancestral_step (eta = 1): the step to sigma_next splits into sigma_down and noise sigma_up
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        x = euler_step(x, eps, sigma, sigma_down)
        x = x + standard_normal(x, generator) * sigma_up
        if callback is not None:
            callback(i, t, x)
    return x


def sample_heun(model: Denoiser, x: torch.Tensor, schedule: Schedule, callback: StepCallback | None = None
                ) -> torch.Tensor:
    """Heun's second-order method: an Euler predictor to sigma_next, then the average of the two slopes; the last
    step (to sigma = 0) is plain Euler. 2 * steps - 1 model evaluations.

    Hook state counts model EVALUATIONS, not steps: the guided denoiser numbers every call, the corrector's
    included, so SLD's warm-up of delta evaluations ends after about delta / 2 Heun steps and its momentum is
    updated twice per step. This is what diffusers' StableDiffusionPipelineSafe does with HeunDiscreteScheduler
    (its loop index runs over the scheduler's 2 * steps - 1 timesteps). The corrector evaluates at the next
    step's timestep.
    """
    x = x * schedule.init_sigma
    ts, sigmas = schedule.timesteps, schedule.sigmas
    for i, t in enumerate(ts):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        slope = ode_slope(x, eps_at(model, x, sigma, t), sigma)
        if sigma_next == 0:
            x = x + slope * (sigma_next - sigma)
        else:
            # Karras et al. 2022 Alg. 1 lines 5-8: Euler predictor x', slope d' there, step with (d + d') / 2
            predicted = x + slope * (sigma_next - sigma)
            slope_next = ode_slope(predicted, eps_at(model, predicted, sigma_next, ts[i + 1]), sigma_next)
            x = x + (slope + slope_next) / 2 * (sigma_next - sigma)
        if callback is not None:
            callback(i, t, x)
    return x
