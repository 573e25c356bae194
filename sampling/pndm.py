"""PNDM sampler in its PLMS form (Liu et al. 2022; CompVis plms.py), over descending integer timesteps.

Numerical reference: diffusers PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1).
Each step moves x with the deterministic DDIM update (`ddim_update`, sigma=0). diffusers writes that step
as PNDM eq. 9 (`_get_prev_sample`); the two are algebraically equal and agree to ~1e-15 in float64, so
one shared update serves DDIM and PNDM.
"""

import torch

from sampling.ddim import Denoiser, StepCallback, ddim_update
from sampling.schedule import alpha_bar, step_pairs


def sample_pndm(
    model: Denoiser,
    x: torch.Tensor,
    timesteps: list[int],
    alphas_cumprod: torch.Tensor,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run PLMS from x at timesteps[0] down to x_0.

    The first step is a pseudo improved Euler step: eps at t0, a provisional DDIM step to t1, eps there,
    then the step is redone from x_t0 with their average. Later steps use Adams-Bashforth on the eps
    history (up to order 4). len(timesteps) + 1 model evaluations; a single timestep has no t1 to
    average with, so it is one plain DDIM step (diffusers, S=1: one evaluation; CompVis evaluates t0 twice).
    """
    old_eps: list[torch.Tensor] = []
    for i, (t, t_prev) in enumerate(step_pairs(timesteps)):
        alpha_t, alpha_prev = alpha_bar(alphas_cumprod, t), alpha_bar(alphas_cumprod, t_prev)
        eps = model(x, t)
        if not old_eps and t_prev is not None:
            x_provisional = ddim_update(x, eps, alpha_t, alpha_prev)
            eps_prime = (eps + model(x_provisional, t_prev)) / 2
        else:
            eps_prime = _adams_bashforth(eps, old_eps)
        old_eps = [*old_eps[-2:], eps]
        x = ddim_update(x, eps_prime, alpha_t, alpha_prev)
        if callback is not None:
            callback(i, t, x)
    return x


def _adams_bashforth(eps: torch.Tensor, old_eps: list[torch.Tensor]) -> torch.Tensor:
    """Combine the current eps with up to three previous ones (newest last)."""
    # PLMS coefficients, CompVis plms.py p_sample_plms / diffusers PNDMScheduler.step_plms
    if not old_eps:
        return eps
    if len(old_eps) == 1:
        return (3 * eps - old_eps[-1]) / 2
    if len(old_eps) == 2:
        return (23 * eps - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
    return (55 * eps - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
