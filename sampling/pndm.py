"""PNDM sampler in its PLMS form (Liu et al. 2022; CompVis plms.py), over descending integer timesteps.

Numerical reference: diffusers PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1).
Each step moves x with the deterministic DDIM update (`ddim_update`, sigma=0). diffusers writes that step
as PNDM eq. 9 (`_get_prev_sample`); the two are algebraically equal and agree to ~1e-15 in float64, so
one shared update serves DDIM and PNDM.

Which outputs the multistep formula combines only matters for v-prediction models. `space="eps"` combines noise
predictions, as CompVis' SD 2 plms.py does (each evaluation converted to eps first); `space="model"` combines what
the network outputs (v) and converts the combination with the current x_t, as diffusers' PNDMScheduler does. The
denoiser tells its parameterisation through an optional `prediction` attribute ("epsilon" when absent).
"""

import torch

from sampling.ddim import ddim_update
from sampling.parameterization import SPACES, from_eps, to_eps
from sampling.schedule import Denoiser, Schedule, StepCallback, alpha_bar, step_pairs


def sample_pndm(model: Denoiser, x: torch.Tensor, schedule: Schedule, callback: StepCallback | None = None,
                space: str = "eps") -> torch.Tensor:
    """Run PLMS from x at schedule.timesteps[0] down to x_0.

    The first step is a pseudo improved Euler step: eps at t0, a provisional DDIM step to t1, eps there,
    then the step is redone from x_t0 with their average. Later steps use Adams-Bashforth on the eps
    history (up to order 4). len(timesteps) + 1 model evaluations; a single timestep has no t1 to
    average with, so it is one plain DDIM step (diffusers, S=1: one evaluation; CompVis evaluates t0 twice).
    `space`: what the formula combines (module docstring).
    """
    if space not in SPACES:
        raise ValueError(f"space={space!r} is unknown; allowed: {', '.join(SPACES)}")
    prediction = getattr(model, "prediction", "epsilon") if space == "model" else "epsilon"
    old: list[torch.Tensor] = []
    for i, (t, t_prev) in enumerate(step_pairs(schedule.timesteps)):
        alpha_t, alpha_prev = alpha_bar(schedule.alphas_cumprod, t), alpha_bar(schedule.alphas_cumprod, t_prev)
        eps = model(x, t)
        output = from_eps(prediction, eps, x, alpha_t)
        if not old and t_prev is not None:
            x_provisional = ddim_update(x, eps, alpha_t, alpha_prev)
            combined = (output + from_eps(prediction, model(x_provisional, t_prev), x_provisional, alpha_prev)) / 2
        else:
            combined = _adams_bashforth(output, old)
        old = [*old[-2:], output]
        x = ddim_update(x, to_eps(prediction, combined, x, alpha_t), alpha_t, alpha_prev)
        if callback is not None:
            callback(i, t, x)
    return x


def sample_pndm_diffusers(model: Denoiser, x: torch.Tensor, schedule: Schedule,
                          callback: StepCallback | None = None) -> torch.Tensor:
    """PNDM combining raw model outputs, as diffusers' PNDMScheduler does (differs from PNDM on v-models only)."""
    return sample_pndm(model, x, schedule, callback, space="model")


def _adams_bashforth(current: torch.Tensor, old: list[torch.Tensor]) -> torch.Tensor:
    """Combine the current output with up to three previous ones (newest last)."""
    # PLMS coefficients, CompVis plms.py p_sample_plms / diffusers PNDMScheduler.step_plms
    if not old:
        return current
    if len(old) == 1:
        return (3 * current - old[-1]) / 2
    if len(old) == 2:
        return (23 * current - 16 * old[-1] + 5 * old[-2]) / 12
    return (55 * current - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
