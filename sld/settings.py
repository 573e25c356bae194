"""The settings every run is made of, shared by the command line's configs, the I2P evaluation and the image
records: which model to load and how to sample. Plain dataclasses (omegaconf structured-config schemas); the
command line (sld/cli/config.py) reads and checks them, sld.api loads a model section, sld/io/records.py records both.
"""
from dataclasses import dataclass

import torch

from sampling.samplers import Plan, plan_sampling
from sampling.schedule import alphas_cumprod, scaled_linear_betas

DTYPE_NAMES = ("float32", "bfloat16", "float16", "float64")
TRAINING_SCHEDULE = alphas_cumprod(scaled_linear_betas())  # every SD 1.x / 2.x model's, as the pipeline uses


@dataclass
class ModelSection:
    path: str = "toy"  # "toy" | "tiny" | a .safetensors/.ckpt file | a diffusers folder
    dtype: str = "float32"
    device: str = "cpu"
    ema: bool = False  # use the EMA UNet weights of a CompVis training checkpoint
    prediction: str | None = None  # None: detect | "epsilon" | "v"


@dataclass
class SamplerSection:
    name: str = "pndm"
    spacing: str | None = None  # None: the sampler's default
    steps: int = 50
    cfg: float = 7.5
    eta: float = 0.0  # samplers that take it: ddim, ddpm
    karras: bool = False  # Karras sigmas, for the samplers that support them
    seed: int = 0  # image k of a run uses seed + k


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def sampling_plan(section: SamplerSection) -> Plan:
    """The checked sampler with its placed schedule (the timesteps it visits), without any model."""
    return plan_sampling(section.name, section.steps, section.spacing, TRAINING_SCHEDULE, eta=section.eta,
                         karras=section.karras)


def spacing_of(section: SamplerSection, plan: Plan) -> str:
    """The spacing a run uses: the configured one, else the sampler's default."""
    return section.spacing or plan.sampler.family.spacings[0]
