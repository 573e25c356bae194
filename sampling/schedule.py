"""Model-agnostic noise schedule and timestep spacing for discrete-time (1000-step) diffusion models.

Everything here is float64 and independent of any network: the samplers index `alphas_cumprod`
with the integer timesteps that `timesteps()` returns.
"""

from collections.abc import Iterator

import torch

NUM_TRAIN_STEPS = 1000
SPACINGS = ("leading", "compvis")


def scaled_linear_betas(
    num_train_steps: int = NUM_TRAIN_STEPS, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """Stable Diffusion's "scaled linear" betas in float64 (diffusers computes the same in float32)."""
    # CompVis ldm/modules/diffusionmodules/util.py make_beta_schedule("linear"): linspace(sqrt b0, sqrt b1)**2
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_steps, dtype=torch.float64) ** 2


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha-bar_t = prod_{s <= t} (1 - beta_s), in float64."""
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def timesteps(steps: int, spacing: str = "leading", num_train_steps: int = NUM_TRAIN_STEPS) -> list[int]:
    """Descending integer timesteps the sampler visits.

    "leading": diffusers DDIM/PNDM, timestep_spacing="leading", steps_offset=1:
        arange(0, steps) * (num_train_steps // steps) + 1; exactly `steps` entries.
    "compvis": CompVis make_ddim_timesteps(ddim_discr_method="uniform"):
        range(0, num_train_steps, num_train_steps // steps) + 1. Followed exactly, so it yields MORE than
        `steps` entries when num_train_steps % steps is large (steps=30: stride 33, 31 entries 991..1).
    Step counts whose largest timestep would reach num_train_steps (the references then index past the
    schedule: leading with steps=1000, compvis with steps>500) are refused.
    """
    _check_steps(steps, num_train_steps)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing={spacing!r} is not supported; allowed values: {SPACINGS}")
    ascending = _ascending(steps, spacing, num_train_steps)
    if ascending[-1] >= num_train_steps:
        raise ValueError(
            f"steps={steps} with spacing={spacing!r} reaches timestep {ascending[-1]}, past the "
            f"{num_train_steps}-step schedule; allowed steps for this spacing: "
            f"1..{_max_steps(spacing, num_train_steps)}"
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


def _ascending(steps: int, spacing: str, num_train_steps: int) -> list[int]:
    stride = num_train_steps // steps
    if spacing == "leading":
        # diffusers DDIMScheduler.set_timesteps, timestep_spacing="leading", steps_offset=1
        return [i * stride + 1 for i in range(steps)]
    # CompVis ldm/modules/diffusionmodules/util.py make_ddim_timesteps("uniform"), then + 1
    return [t + 1 for t in range(0, num_train_steps, stride)]


def _max_steps(spacing: str, num_train_steps: int) -> int:
    for steps in range(num_train_steps, 0, -1):
        if _ascending(steps, spacing, num_train_steps)[-1] < num_train_steps:
            return steps
    return 0
