"""A sampler by name with its placed schedule, checked once before any model work: the plan owns steps, eta,
spacing and Karras sigmas. Samplers are registered in sampling/registry.py (the built-ins: sampling/builtins.py).

    plan = plan_sampling("dpmpp_2m", steps=30, spacing=None, alphas_cumprod=alphas, karras=True)  # checks, places
    x0 = plan.run(model, x_T, generator, callback)

`spacing=None` is the sampler's default: the timestep spacing diffusers gives its scheduler from Stable Diffusion
1.5's config ("leading" for DDIM/PNDM/DDPM, "linspace" for Euler/Heun/LMS/DPM-Solver++; sampling/families.py).
"""
from dataclasses import dataclass

import torch

from sampling.registry import SamplerSpec, get_sampler, registered_samplers
from sampling.schedule import Denoiser, Schedule, StepCallback

__all__ = ["Plan", "check_sampler", "plan_sampling", "sample"]


@dataclass(frozen=True)
class Plan:
    """A checked sampler with its placed schedule: `run` draws nothing but what the sampler draws."""

    sampler: SamplerSpec
    schedule: Schedule
    eta: float

    def run(self, model: Denoiser, x: torch.Tensor, generator: torch.Generator | None = None,
            callback: StepCallback | None = None) -> torch.Tensor:
        options = {"eta": self.eta, "generator": generator, "callback": callback}
        return self.sampler.fn(model, x, self.schedule,
                               **{key: value for key, value in options.items() if key in self.sampler.options})


def check_sampler(name: str, eta: float = 0.0, spacing: str | None = None, karras: bool = False) -> SamplerSpec:
    """The registered sampler `name`, after checking that it takes eta (when eta != 0), the spacing and Karras."""
    spec = get_sampler(name)
    if not isinstance(eta, (int, float)) or isinstance(eta, bool) or eta < 0:
        raise ValueError(f"eta={eta!r} is invalid; allowed values: eta >= 0")
    if eta != 0 and "eta" not in spec.options:
        takers = [repr(other.name) for other in registered_samplers() if "eta" in other.options]
        raise ValueError(f"eta={eta!r} applies only to sampler={' or '.join(takers)} "
                         f"(sampler={name!r} takes no eta); use eta=0")
    if spacing is not None and spacing not in spec.family.spacings:
        raise ValueError(f"spacing={spacing!r} is not supported by sampler={name!r}; "
                         f"allowed: {', '.join(spec.family.spacings)} (or None: {spec.family.spacings[0]})")
    if not isinstance(karras, bool):
        raise ValueError(f"karras={karras!r} is invalid; allowed: True or False")
    if karras and spec.family.build_karras is None:
        takers = [other.name for other in registered_samplers() if other.family.build_karras is not None]
        raise ValueError(f"karras=True is not supported by sampler={name!r}; allowed with: {', '.join(takers)}")
    return spec


def plan_sampling(name: str, steps: int, spacing: str | None, alphas_cumprod: torch.Tensor, eta: float = 0.0,
                  karras: bool = False) -> Plan:
    """Check everything and place the schedule, before any model work."""
    spec = check_sampler(name, eta, spacing, karras)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r} is invalid; allowed: an integer >= 1")
    family = spec.family
    build = family.build_karras if karras else family.build
    return Plan(spec, build(steps, spacing or family.spacings[0], alphas_cumprod), eta)


def sample(name: str, model: Denoiser, x: torch.Tensor, steps: int, spacing: str | None,
           alphas_cumprod: torch.Tensor, eta: float = 0.0, generator: torch.Generator | None = None,
           callback: StepCallback | None = None, karras: bool = False) -> torch.Tensor:
    """plan_sampling(...).run(...) in one call."""
    return plan_sampling(name, steps, spacing, alphas_cumprod, eta, karras).run(model, x, generator, callback)
