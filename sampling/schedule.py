"""Model-agnostic noise schedule and timestep spacing for discrete-time (1000-step) diffusion models.

Everything here is float64 and independent of any network: the discrete samplers index `alphas_cumprod`
with the integer timesteps that `timesteps()` returns; the sigma samplers also use the noise level
sigma = sqrt((1 - alpha-bar) / alpha-bar) at fractional timesteps (the helpers at the end).
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

NUM_TRAIN_STEPS = 1000
SPACINGS = ("leading", "compvis", "linspace")

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]  # model(x_vp, t) -> eps; t fractional where interpolated
StepCallback = Callable[[int, float, torch.Tensor], None]  # callback(step index, t, the sampler's x after the step)


@dataclass(frozen=True)
class Schedule:
    """What every registered sampler walks: the model timesteps (what the network is told) and the noise levels
    sigma = sqrt((1 - alpha-bar) / alpha-bar) that go with them, ending in sigma = 0 (x_0). The discrete samplers
    (DDIM, PNDM, DDPM) read `timesteps` and `alphas_cumprod`; the sigma samplers (Euler, Heun, LMS, DPM-Solver++)
    read `sigmas` and work in sigma space, x = x_vp * sqrt(sigma^2 + 1), where x_vp is what the UNet sees.
    sampling/families.py places one for each diffusers scheduler family."""

    timesteps: list[float]  # model timestep of each step, descending (integers except fractional spacings)
    sigmas: list[float]  # noise level of each step, then 0: len(timesteps) + 1 entries
    init_sigma: float  # std of x_T in sigma space: unit-variance x_T is multiplied by it (diffusers init_noise_sigma)
    alphas_cumprod: torch.Tensor  # float64 training schedule the integer timesteps index

    def levels(self) -> Iterator[tuple[float, float, float]]:
        """(t, sigma, sigma_next) for each step."""
        return zip(self.timesteps, self.sigmas[:-1], self.sigmas[1:])


def eps_at(model: Denoiser, x: torch.Tensor, sigma: float, t: float) -> torch.Tensor:
    """eps for a sigma-space x: the model sees x / sqrt(sigma^2 + 1) (diffusers scale_model_input)."""
    return model(x / ((sigma**2 + 1) ** 0.5), t)


def scaled_linear_betas(
    num_train_steps: int = NUM_TRAIN_STEPS, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """Stable Diffusion's "scaled linear" betas in float64 (diffusers computes the same in float32)."""
    # CompVis ldm/modules/diffusionmodules/util.py make_beta_schedule("linear"): linspace(sqrt b0, sqrt b1)**2
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_steps, dtype=torch.float64) ** 2


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha-bar_t = prod_{s <= t} (1 - beta_s), in float64."""
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def timesteps(steps: int, spacing: str = "leading", num_train_steps: int = NUM_TRAIN_STEPS) -> list[float]:
    """Descending timesteps the sampler visits: integers, except the fractional "linspace" ones.

    "leading": diffusers DDIM/PNDM, timestep_spacing="leading", steps_offset=1:
        arange(0, steps) * (num_train_steps // steps) + 1; exactly `steps` entries.
    "compvis": CompVis make_ddim_timesteps(ddim_discr_method="uniform"):
        range(0, num_train_steps, num_train_steps // steps) + 1. Followed exactly, so it yields MORE than
        `steps` entries when num_train_steps % steps is large (steps=30: stride 33, 31 entries 991..1).
    "linspace": diffusers Euler/Heun/LMS timestep_spacing="linspace": `steps` evenly spaced FRACTIONAL
        timesteps from num_train_steps - 1 down to 0 (floats; diffusers rounds them to float32, we keep float64).
    Step counts whose largest timestep would reach num_train_steps (the references then index past the
    schedule: leading with steps=1000, compvis with steps>500) are refused.
    """
    _check_steps(steps, num_train_steps)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing={spacing!r} is not supported; allowed values: {SPACINGS}")
    ascending = _ascending(steps, spacing, num_train_steps)
    if ascending[-1] >= num_train_steps:
        below, above = _nearest_valid(steps, spacing, num_train_steps)
        raise ValueError(
            f"steps={steps} with spacing={spacing!r} reaches timestep {ascending[-1]}, past the "
            f"{num_train_steps}-step schedule (the reference would index past it too); nearest allowed step counts "
            f"for this spacing: {' and '.join(str(n) for n in (below, above) if n)}"
        )
    return ascending[::-1]


def alpha_bar(alphas_cumprod: torch.Tensor, t: int | None) -> float:
    """alpha-bar at integer timestep t as a python float; t=None (past the last step) gives alpha-bar_0.

    alpha-bar_0 for the final step is diffusers' set_alpha_to_one=False and CompVis' alphas_prev[0].
    """
    return float(alphas_cumprod[0 if t is None else t])


def step_pairs(timesteps: list[int]) -> Iterator[tuple[int, int | None]]:
    """(t, t_prev) for each step: t_prev is the next entry of the list, None after the last one."""
    return zip(timesteps, [*timesteps[1:], None])


def _check_steps(steps: int, num_train_steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps={steps!r} is invalid; allowed values: integers 1..{num_train_steps}")


def _ascending(steps: int, spacing: str, num_train_steps: int) -> list[float]:
    if spacing == "linspace":
        return linspace(0.0, float(num_train_steps - 1), steps)
    stride = num_train_steps // steps
    if spacing == "leading":
        # diffusers DDIMScheduler.set_timesteps, timestep_spacing="leading", steps_offset=1
        return [i * stride + 1 for i in range(steps)]
    # CompVis ldm/modules/diffusionmodules/util.py make_ddim_timesteps("uniform"), then + 1
    return [t + 1 for t in range(0, num_train_steps, stride)]


def _fits(steps: int, spacing: str, num_train_steps: int) -> bool:
    return _ascending(steps, spacing, num_train_steps)[-1] < num_train_steps


def _nearest_valid(steps: int, spacing: str, num_train_steps: int) -> tuple[int | None, int | None]:
    """The closest step counts below and above `steps` whose timesteps stay inside the schedule."""
    below = next((n for n in range(steps - 1, 0, -1) if _fits(n, spacing, num_train_steps)), None)
    above = next((n for n in range(steps + 1, num_train_steps + 1) if _fits(n, spacing, num_train_steps)), None)
    return below, above


def linspace(start: float, stop: float, num: int) -> list[float]:
    """numpy.linspace(start, stop, num) in float64, bit for bit: start + i * ((stop - start) / (num - 1)), stop last."""
    if num == 1:
        return [start]
    step = (stop - start) / (num - 1)
    return [start + i * step for i in range(num - 1)] + [stop]


def sigma_table(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Noise level of every training timestep, sigma_t = sqrt((1 - alpha-bar_t) / alpha-bar_t), float64."""
    alphas = alphas_cumprod.to(torch.float64)
    return ((1 - alphas) / alphas).sqrt()


def sigma_at(sigmas: torch.Tensor, t: float) -> float:
    """sigma at a fractional timestep by linear interpolation of the table (diffusers: numpy.interp)."""
    low = min(math.floor(t), len(sigmas) - 1)
    if t == low:
        return float(sigmas[low])
    # numpy.interp: slope * (x - xp[j]) + fp[j], with xp spaced by 1
    return float(sigmas[low + 1] - sigmas[low]) * (t - low) + float(sigmas[low])


def sigma_to_t(sigmas: torch.Tensor, sigma: float) -> float:
    """Fractional timestep of a noise level: linear interpolation in log sigma, clipped to the table.

    diffusers `_sigma_to_t` (Euler/Heun/LMS/DPM-Solver schedulers, for Karras sigmas).
    """
    log_sigmas = sigmas.log()
    log_sigma = math.log(max(sigma, 1e-10))
    # last table entry with log sigma_t <= log_sigma, kept one below the end so that high = low + 1 exists
    low = int(torch.searchsorted(log_sigmas, torch.tensor(log_sigma, dtype=log_sigmas.dtype), right=True)) - 1
    low = min(max(low, 0), len(sigmas) - 2)
    low_log, high_log = float(log_sigmas[low]), float(log_sigmas[low + 1])
    w = min(max((low_log - log_sigma) / (low_log - high_log), 0.0), 1.0)
    return (1 - w) * low + w * (low + 1)


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> list[float]:
    """Karras et al. 2022 (EDM) eq. 5: sigma_i = (max^(1/rho) + i / (n - 1) (min^(1/rho) - max^(1/rho)))^rho."""
    # k-diffusion get_sigmas_karras / diffusers _convert_to_karras (rho = 7, ramp = numpy.linspace(0, 1, n))
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho for ramp in linspace(0.0, 1.0, steps)]
