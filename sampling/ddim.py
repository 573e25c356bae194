"""DDIM sampler (Song et al. 2021) over an explicit list of descending integer timesteps.

`model(x, t) -> eps` is any noise predictor; diffusers' DDIMScheduler (clip_sample=False,
set_alpha_to_one=False) is the numerical reference.
"""
import torch

from sampling.noise import standard_normal
from sampling.schedule import Denoiser, Schedule, StepCallback, alpha_bar, step_pairs


def ddim_update(
    x: torch.Tensor, eps: torch.Tensor, alpha_t: float, alpha_prev: float, sigma: float = 0.0
) -> torch.Tensor:
    """Mean of x_prev given eps: sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - sigma^2) * eps (no noise added)."""
    # DDIM paper eq. 12: x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), then the direction pointing to x_t
    x0_hat = (x - (1.0 - alpha_t) ** 0.5 * eps) / alpha_t**0.5
    return alpha_prev**0.5 * x0_hat + (1.0 - alpha_prev - sigma**2) ** 0.5 * eps


def ddim_sigma(alpha_t: float, alpha_prev: float, eta: float) -> float:
    """Noise scale of one step; eta=0 is deterministic DDIM, eta=1 the DDPM posterior variance."""
    # DDIM paper eq. 16: sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
    return eta * ((1.0 - alpha_prev) / (1.0 - alpha_t)) ** 0.5 * (1.0 - alpha_t / alpha_prev) ** 0.5


def sample_ddim(model: Denoiser, x: torch.Tensor, schedule: Schedule, eta: float = 0.0,
                generator: torch.Generator | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """Run DDIM from x at schedule.timesteps[0] down to x_0, one model evaluation per timestep.

    The previous timestep is the next list entry (so CompVis spacing works), alpha-bar_0 after the last.
    With eta > 0 each step draws one standard normal after computing the mean, from `generator` on the
    generator's device, then moved to x's device: the same draws, in the same order, as diffusers.
    """
    for i, (t, t_prev) in enumerate(step_pairs(schedule.timesteps)):
        alpha_t, alpha_prev = alpha_bar(schedule.alphas_cumprod, t), alpha_bar(schedule.alphas_cumprod, t_prev)
        sigma = ddim_sigma(alpha_t, alpha_prev, eta)
        x = ddim_update(x, model(x, t), alpha_t, alpha_prev, sigma)
        if eta > 0:
            x = x + sigma * standard_normal(x, generator)
        if callback is not None:
            callback(i, t, x)
    return x
