"""The Schedule every registered sampler walks, and how each diffusers scheduler family places it.

A Schedule lists the model timesteps (what the network is told) and the noise levels
sigma = sqrt((1 - alpha-bar) / alpha-bar) that go with them, ending in sigma = 0 (x_0). The discrete samplers
(DDIM, PNDM, DDPM) read `timesteps` and `alphas_cumprod`; the sigma samplers (Euler, Heun, LMS, DPM-Solver++)
read `sigmas` and work in sigma space, x = x_vp * sqrt(sigma^2 + 1), where x_vp is what the UNet sees.

Placement follows diffusers' set_timesteps for each scheduler family, with steps_offset=1 (SD's config):
    DISCRETE   DDIM / PNDM / DDPM              "leading" | "compvis"
    EULER      Euler / Euler a / Heun / LMS    "linspace" (fractional t) | "leading"; Karras sigmas
    DPM_SOLVER DPMSolverMultistep              "linspace" (steps + 1 rounded points, t=0 dropped) | "leading"
The first spacing of a family is what diffusers gives that scheduler from Stable Diffusion 1.5's PNDM config
(`from_config` leaves timestep_spacing at the scheduler's own default).
"""
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from sampling.schedule import NUM_TRAIN_STEPS, karras_sigmas, sigma_at, sigma_table, sigma_to_t, timesteps

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]  # model(x_vp, t) -> eps; t fractional where interpolated
StepCallback = Callable[[int, float, torch.Tensor], None]  # callback(step index, t, the sampler's x after the step)


@dataclass(frozen=True)
class Schedule:
    timesteps: list[float]  # model timestep of each step, descending (integers except fractional spacings)
    sigmas: list[float]  # noise level of each step, then 0: len(timesteps) + 1 entries
    init_sigma: float  # std of x_T in sigma space: unit-variance x_T is multiplied by it (diffusers init_noise_sigma)
    alphas_cumprod: torch.Tensor  # float64 training schedule the integer timesteps index

    def levels(self) -> Iterator[tuple[float, float, float]]:
        """(t, sigma, sigma_next) for each step."""
        return zip(self.timesteps, self.sigmas[:-1], self.sigmas[1:])


@dataclass(frozen=True)
class ScheduleFamily:
    name: str
    spacings: tuple[str, ...]  # supported; the first is the family's default
    build: Callable[[int, str, torch.Tensor], Schedule]
    build_karras: Callable[[int, str, torch.Tensor], Schedule] | None = None  # None: no Karras sigmas


def eps_at(model: Denoiser, x: torch.Tensor, sigma: float, t: float) -> torch.Tensor:
    """eps for a sigma-space x: the model sees x / sqrt(sigma^2 + 1) (diffusers scale_model_input)."""
    return model(x / ((sigma**2 + 1) ** 0.5), t)


def vp_init_sigma(sigma_max: float) -> float:
    """Sigma-space std of a unit-variance VP x_T: sqrt(sigma^2 + 1)."""
    return (sigma_max**2 + 1) ** 0.5


def discrete_schedule(steps: int, spacing: str, alphas_cumprod: torch.Tensor) -> Schedule:
    ts = timesteps(steps, spacing)
    table = sigma_table(alphas_cumprod)
    sigmas = [sigma_at(table, t) for t in ts]
    return Schedule(ts, sigmas + [0.0], vp_init_sigma(sigmas[0]), alphas_cumprod)


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
