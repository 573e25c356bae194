"""How each diffusers scheduler family places the Schedule (sampling/schedule.py) its samplers walk.

Placement follows diffusers' set_timesteps for each scheduler family, with steps_offset=1 (SD's config):
    DISCRETE   DDIM / PNDM / DDPM              "leading" | "compvis"
    EULER      Euler / Euler a / Heun / LMS    "linspace" (fractional t) | "leading"; Karras sigmas
    DPM_SOLVER DPMSolverMultistep              "linspace" (steps + 1 rounded points, t=0 dropped) | "leading"
The first spacing of a family is what diffusers gives that scheduler from Stable Diffusion 1.5's PNDM config
(`from_config` leaves timestep_spacing at the scheduler's own default).
"""
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sampling.schedule import (NUM_TRAIN_STEPS, Schedule, karras_sigmas, sigma_at, sigma_table, sigma_to_t,
                               timesteps)


@dataclass(frozen=True)
class ScheduleFamily:
    name: str
    spacings: tuple[str, ...]  # supported; the first is the family's default
    build: Callable[[int, str, torch.Tensor], Schedule]
    build_karras: Callable[[int, str, torch.Tensor], Schedule] | None = None  # None: no Karras sigmas


def vp_init_sigma(sigma_max: float) -> float:
    """Sigma-space std of a unit-variance VP x_T: sqrt(sigma^2 + 1)."""
    return (sigma_max**2 + 1) ** 0.5


def discrete_at(ts: list[int], alphas_cumprod: torch.Tensor) -> Schedule:
    """The Schedule of the DISCRETE samplers over any explicit list of descending integer timesteps."""
    table = sigma_table(alphas_cumprod)
    sigmas = [sigma_at(table, t) for t in ts]
    return Schedule(list(ts), sigmas + [0.0], vp_init_sigma(sigmas[0]), alphas_cumprod)


def discrete_schedule(steps: int, spacing: str, alphas_cumprod: torch.Tensor) -> Schedule:
    return discrete_at(timesteps(steps, spacing), alphas_cumprod)


def _euler_init_sigma(sigma_max: float, spacing: str) -> float:
    # diffusers EulerDiscreteScheduler.init_noise_sigma: sigma_max for "linspace", sqrt(sigma_max^2 + 1) otherwise
    return sigma_max if spacing == "linspace" else vp_init_sigma(sigma_max)


def euler_schedule(steps: int, spacing: str, alphas_cumprod: torch.Tensor) -> Schedule:
    ts = timesteps(steps, spacing)
    table = sigma_table(alphas_cumprod)
    sigmas = [sigma_at(table, t) for t in ts]
    return Schedule(ts, sigmas + [0.0], _euler_init_sigma(sigmas[0], spacing), alphas_cumprod)


def euler_karras_schedule(steps: int, spacing: str, alphas_cumprod: torch.Tensor) -> Schedule:
    """Karras sigmas between the spacing's own sigma range; t = sigma_to_t(sigma), fractional."""
    ts = timesteps(steps, spacing)
    table = sigma_table(alphas_cumprod)
    sigmas = karras_sigmas(sigma_at(table, ts[-1]), sigma_at(table, ts[0]), steps)
    karras_ts = [sigma_to_t(table, sigma) for sigma in sigmas]
    return Schedule(karras_ts, sigmas + [0.0], _euler_init_sigma(sigmas[0], spacing), alphas_cumprod)


def dpm_timesteps(steps: int, spacing: str, num_train_steps: int = NUM_TRAIN_STEPS) -> list[int]:
    """DPMSolverMultistepScheduler.set_timesteps: steps + 1 points, the last one (t = 0 end) dropped.

    Step counts that would repeat a timestep (or, for "leading", reach num_train_steps) are refused.
    """
    limit = num_train_steps - 1 if spacing == "linspace" else num_train_steps - 2
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= limit:
        raise ValueError(f"steps={steps!r} is invalid for DPM-Solver with spacing={spacing!r}; "
                         f"allowed: integers 1..{limit}")
    if spacing == "linspace":
        # numpy.linspace(0, T - 1, steps + 1).round(): round half to even, as python's round()
        step = (num_train_steps - 1) / steps
        ascending = [round(i * step) for i in range(1, steps)] + [num_train_steps - 1]
    else:
        stride = num_train_steps // (steps + 1)
        ascending = [i * stride + 1 for i in range(1, steps + 1)]
    return ascending[::-1]


def dpm_schedule(steps: int, spacing: str, alphas_cumprod: torch.Tensor) -> Schedule:
    ts = dpm_timesteps(steps, spacing)
    table = sigma_table(alphas_cumprod)
    sigmas = [float(table[t]) for t in ts]
    # DPM-Solver starts from unit-variance VP latents (diffusers init_noise_sigma = 1)
    return Schedule(ts, sigmas + [0.0], vp_init_sigma(sigmas[0]), alphas_cumprod)


def dpm_karras_schedule(steps: int, spacing: str, alphas_cumprod: torch.Tensor) -> Schedule:
    """Karras sigmas over the whole training range (whatever the spacing); t = round(sigma_to_t(sigma))."""
    table = sigma_table(alphas_cumprod)
    sigmas = karras_sigmas(float(table[0]), float(table[-1]), steps)
    ts = [round(sigma_to_t(table, sigma)) for sigma in sigmas]
    return Schedule(ts, sigmas + [0.0], vp_init_sigma(sigmas[0]), alphas_cumprod)


DISCRETE = ScheduleFamily("discrete", ("leading", "compvis"), discrete_schedule)
EULER = ScheduleFamily("euler", ("linspace", "leading"), euler_schedule, euler_karras_schedule)
DPM_SOLVER = ScheduleFamily("dpm_solver", ("linspace", "leading"), dpm_schedule, dpm_karras_schedule)
