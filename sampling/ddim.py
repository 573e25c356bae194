"""DDIM sampler (Song et al. 2021) over an explicit list of descending integer timesteps.

`model(x, t) -> eps` is any noise predictor; diffusers' DDIMScheduler (clip_sample=False,
set_alpha_to_one=False) is the numerical reference.
"""

from collections.abc import Callable

import torch

from sampling.schedule import alpha_bar, step_pairs

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
StepCallback = Callable[[int, int, torch.Tensor], None]


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


def sample_ddim(
    model: Denoiser,
    x: torch.Tensor,
    timesteps: list[int],
    alphas_cumprod: torch.Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run DDIM from x at timesteps[0] down to x_0, one model evaluation per timestep.

    The previous timestep is the next list entry (so CompVis spacing works), alpha-bar_0 after the last.
    With eta > 0 each step draws one standard normal after computing the mean, from `generator` on the
    generator's device, then moved to x's device: the same draws, in the same order, as diffusers.
    """
    if eta < 0:
        raise ValueError(f"eta={eta!r} is invalid; allowed values: eta >= 0 (0 = deterministic DDIM)")
    for i, (t, t_prev) in enumerate(step_pairs(timesteps)):
        alpha_t, alpha_prev = alpha_bar(alphas_cumprod, t), alpha_bar(alphas_cumprod, t_prev)
        sigma = ddim_sigma(alpha_t, alpha_prev, eta)
        x = ddim_update(x, model(x, t), alpha_t, alpha_prev, sigma)
        if eta > 0:
            x = x + sigma * _standard_normal(x, generator)
        if callback is not None:
            callback(i, t, x)
    return x


def _standard_normal(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
