"""DDPM ancestral sampling (Ho et al. 2020) over a list of descending integer timesteps, VP latents.

Numerical reference: diffusers DDPMScheduler (variance_type="fixed_small", clip_sample=False), whose steps go
from t to the next listed timestep and, after the last one, to alpha-bar = 1.
"""
import torch

from sampling.noise import standard_normal
from sampling.schedule import Denoiser, Schedule, StepCallback, alpha_bar, step_pairs

MIN_VARIANCE = 1e-20


def sample_ddpm(model: Denoiser, x: torch.Tensor, schedule: Schedule, generator: torch.Generator | None = None,
                callback: StepCallback | None = None) -> torch.Tensor:
    """One model evaluation and one normal draw per step (after the mean, as diffusers draws them)."""
    for i, (t, t_prev) in enumerate(step_pairs(schedule.timesteps)):
        alpha_t = alpha_bar(schedule.alphas_cumprod, t)
        alpha_prev = 1.0 if t_prev is None else alpha_bar(schedule.alphas_cumprod, t_prev)
        beta = 1 - alpha_t / alpha_prev
        x0_hat = (x - (1 - alpha_t) ** 0.5 * model(x, t)) / alpha_t**0.5
        # DDPM eq. 7: posterior mean and variance of q(x_prev | x_t, x0_hat)
        x0_coefficient = alpha_prev**0.5 * beta / (1 - alpha_t)
        x_coefficient = (alpha_t / alpha_prev) ** 0.5 * (1 - alpha_prev) / (1 - alpha_t)
        mean = x0_coefficient * x0_hat + x_coefficient * x
        # diffusers clamps the variance at 1e-20 (for its log variants), so the last step still adds 1e-10 z: kept
        # so that a seed gives the reference's bits
        variance = max((1 - alpha_prev) / (1 - alpha_t) * beta, MIN_VARIANCE)
        x = mean + variance**0.5 * standard_normal(x, generator)
        if callback is not None:
            callback(i, t, x)
    return x
