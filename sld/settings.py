"""The settings every run is made of, shared by the command line's configs, the I2P evaluation and the image
records: which model to load and how to sample. Plain dataclasses (omegaconf structured-config schemas); the
command line (sld/cli/config.py) reads and checks them, sld.api loads a model section, sld/io/records.py records both.
"""
import dataclasses
from dataclasses import dataclass, field

import torch

from models.adapters import EmbeddingSpec, LoraSpec
from models.checkpoint import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES
from models.detect import FAMILIES
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
    loras: list[str] = field(default_factory=list)  # "FILE" or "FILE:SCALE", merged in order (models/adapters.py)
    embeddings: list[str] = field(default_factory=list)  # textual inversion: "FILE" (token: the stem) or "FILE:TOKEN"


@dataclass
class SamplerSection:
    name: str | None = None  # None: the model family's (pndm; SDXL: euler, as its scheduler config)
    spacing: str | None = None  # None: the model family's (SDXL: leading), else the sampler's default
    steps: int = 50
    cfg: float = 7.5
    eta: float = 0.0  # samplers that take it: ddim, ddpm
    karras: bool = False  # Karras sigmas, for the samplers that support them
    seed: int = 0  # image k of a run uses seed + k


ADAPTER_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES


def lora_specs(section: ModelSection) -> tuple[LoraSpec, ...]:
    """`FILE:SCALE` -> (FILE, SCALE) when SCALE reads as a number, else the whole text is the file (scale 1)."""
    specs = []
    for text in section.loras:
        path, _, scale = text.rpartition(":")
        try:
            specs.append(LoraSpec(path, float(scale)) if path else LoraSpec(text))
        except ValueError:
            specs.append(LoraSpec(text))
    return tuple(specs)


def embedding_specs(section: ModelSection) -> tuple[EmbeddingSpec, ...]:
    """`FILE:TOKEN` -> (FILE, TOKEN) when the part before the last colon ends in a weight-file suffix, else the whole
    text is the file (token: its stem)."""
    specs = []
    for text in section.embeddings:
        path, _, token = text.rpartition(":")
        given = path.lower().endswith(ADAPTER_SUFFIXES) and token
        specs.append(EmbeddingSpec(path, token) if given else EmbeddingSpec(text))
    return tuple(specs)


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def for_family(section: SamplerSection, family: str) -> SamplerSection:
    """The section with the model family's sampler and spacing where it leaves them unset (the rule: models/detect.py
    `Family.sampler_and_spacing`, which the pipeline applies too)."""
    name, spacing = FAMILIES[family].sampler_and_spacing(section.name, section.spacing)
    return dataclasses.replace(section, name=name, spacing=spacing)


def sampling_plan(section: SamplerSection, family: str = "sd1") -> Plan:
    """The checked sampler with its placed schedule (the timesteps it visits), without any model; unset sampler and
    spacing take `family`'s defaults (before a model is loaded, SD 1's)."""
    section = for_family(section, family)
    return plan_sampling(section.name, section.steps, section.spacing, TRAINING_SCHEDULE, eta=section.eta,
                         karras=section.karras)


def check_before_loading(section: SamplerSection) -> None:
    """Before the model is known: a named sampler is checked fully; with the sampler unset (the family's), the values
    are refused only when no family's sampler takes them, with SD 1's error. Once loaded, `sampling_plan` with the
    model's family checks them exactly (SDXL's euler takes linspace spacing, SD 1's pndm does not)."""
    if section.name is None and any(_plans(section, family) for family in FAMILIES):
        return
    sampling_plan(section)  # raises with SD 1's error when no family's sampler takes the values


def _plans(section: SamplerSection, family: str) -> bool:
    try:
        sampling_plan(section, family)
    except ValueError:
        return False
    return True


def spacing_of(section: SamplerSection, plan: Plan) -> str:
    """The spacing a run uses: the configured one, else the sampler's default."""
    return section.spacing or plan.sampler.family.spacings[0]
