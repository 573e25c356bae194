"""PNDM and DDIM (sampling/pndm.py, sampling/ddim.py) in the registered-sampler form `fn(model, x, schedule, ...)`:
their timesteps and alphas-bar come from the Schedule."""
import torch

from sampling.ddim import sample_ddim
from sampling.pndm import sample_pndm
from sampling.sigmas import Denoiser, Schedule, StepCallback


def pndm(model: Denoiser, x: torch.Tensor, schedule: Schedule, callback: StepCallback | None = None) -> torch.Tensor:
    return sample_pndm(model, x, schedule.timesteps, schedule.alphas_cumprod, callback=callback)


def pndm_diffusers(model: Denoiser, x: torch.Tensor, schedule: Schedule,
                   callback: StepCallback | None = None) -> torch.Tensor:
    """PNDM combining raw model outputs, as diffusers' PNDMScheduler does (differs from `pndm` on v-models only)."""
    return sample_pndm(model, x, schedule.timesteps, schedule.alphas_cumprod, callback=callback, space="model")


def ddim(model: Denoiser, x: torch.Tensor, schedule: Schedule, eta: float = 0.0,
         generator: torch.Generator | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    return sample_ddim(model, x, schedule.timesteps, schedule.alphas_cumprod, eta=eta, generator=generator,
                       callback=callback)
