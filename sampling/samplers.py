"""Samplers by name, behind one call signature."""
import torch

from sampling.ddim import Denoiser, StepCallback, sample_ddim
from sampling.pndm import sample_pndm

SAMPLERS = ("pndm", "ddim")


def check_sampler(name: str, eta: float) -> None:
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r} is unknown; allowed: {', '.join(SAMPLERS)}")
    if eta < 0:
        raise ValueError(f"eta={eta!r} is invalid; allowed values: eta >= 0")
    if eta != 0 and name != "ddim":
        raise ValueError(f"eta={eta!r} applies only to sampler='ddim' (sampler={name!r} is deterministic); use eta=0")


def sample(name: str, model: Denoiser, x: torch.Tensor, timesteps: list[int], alphas_cumprod: torch.Tensor,
           eta: float = 0.0, generator: torch.Generator | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    check_sampler(name, eta)
    if name == "ddim":
        return sample_ddim(model, x, timesteps, alphas_cumprod, eta=eta, generator=generator, callback=callback)
    return sample_pndm(model, x, timesteps, alphas_cumprod, callback=callback)
