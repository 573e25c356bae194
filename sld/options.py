"""Validation of pipeline arguments, before any model work: bad values raise ValueError naming what is allowed."""
import dataclasses
from dataclasses import dataclass

import torch

from sampling.guidance import GuidanceHook
from sld.safety import DEFAULT_CONCEPT, PRESET_VALUES, SLD, preset
from sld.sega import SEGA, SEGA_SAFETY_VALUES, sega_safety


@dataclass(frozen=True)
class GenerationOptions:
    prompt: object
    negative_prompt: object
    height: int
    width: int
    steps: int
    guidance_scale: float
    seed: object
    latents: torch.Tensor | None
    num_images_per_prompt: int
    output_type: str


def _texts(value, name: str) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {value!r}")
    return list(texts)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_options(opts: GenerationOptions, downscale: int, latent_channels: int, output_types: tuple[str, ...]
                  ) -> tuple[list[str], list[str]]:
    """Validate everything; return the prompts and one negative (or empty) prompt per prompt."""
    prompts = _texts(opts.prompt, "prompt")
    negatives = [""] * len(prompts) if opts.negative_prompt is None else _texts(opts.negative_prompt, "negative_prompt")
    if len(negatives) == 1:
        negatives = negatives * len(prompts)
    if len(negatives) != len(prompts):
        raise ValueError(f"negative_prompt has {len(negatives)} entries but prompt has {len(prompts)}; "
                         "give one negative prompt, or one per prompt")
    for name in ("height", "width"):
        value = getattr(opts, name)
        if not _is_int(value) or value < downscale or value % downscale:
            raise ValueError(f"{name}={value!r} is invalid; allowed: a positive multiple of {downscale}")
    if not _is_int(opts.steps) or opts.steps < 1:
        raise ValueError(f"steps={opts.steps!r} is invalid; allowed: an integer >= 1")
    if not isinstance(opts.guidance_scale, (int, float)) or opts.guidance_scale < 0:
        raise ValueError(f"guidance_scale={opts.guidance_scale!r} is invalid; allowed: a number >= 0")
    if not _is_int(opts.num_images_per_prompt) or opts.num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt={opts.num_images_per_prompt!r} is invalid; allowed: an integer >= 1")
    if opts.seed is not None and not _is_int(opts.seed):
        raise ValueError(f"seed={opts.seed!r} is invalid; allowed: None or an integer")
    if opts.output_type not in output_types:
        raise ValueError(f"output_type={opts.output_type!r} is unknown; allowed: {', '.join(output_types)}")
    if opts.latents is not None:
        expected = (len(prompts) * opts.num_images_per_prompt, latent_channels,
                    opts.height // downscale, opts.width // downscale)
        if not isinstance(opts.latents, torch.Tensor) or tuple(opts.latents.shape) != expected:
            shape = tuple(opts.latents.shape) if isinstance(opts.latents, torch.Tensor) else type(opts.latents).__name__
            raise ValueError(f"latents have shape {shape}; expected {expected} "
                             "(prompts * num_images_per_prompt, channels, height / 8, width / 8)")
    return prompts, negatives


SAFETY_NAMES = (*PRESET_VALUES, "negative", *(f"sega-{level}" for level in SEGA_SAFETY_VALUES))


@dataclass(frozen=True)
class Safety:
    hooks: list[GuidanceHook]
    negative_prompt: str | None  # the negative-prompt baseline: the concept replaces the unconditional prompt


def _allowed() -> str:
    return f"None, {', '.join(SAFETY_NAMES)}, an sld.SLD or an sld.SEGA"


def resolve_safety(safety, concept: str | None) -> Safety:
    """None -> nothing; an SLD preset, "sega-<level>" or "negative" (the concept as negative prompt, the baseline
    papers compare SLD with), or an sld.SLD / sld.SEGA -> a fresh hook (state is per call) using `concept` if given."""
    if concept is not None and (not isinstance(concept, str) or not concept.strip()):
        raise ValueError(f"concept={concept!r} is invalid; allowed: None (the paper's concept) or a non-empty string")
    if safety is None:
        if concept is not None:
            raise ValueError("concept was given but safety=None; choose a preset or an sld.SLD to use the concept")
        return Safety([], None)
    if isinstance(safety, str) and safety not in SAFETY_NAMES:
        raise ValueError(f"safety={safety!r} is unknown; allowed: {_allowed()}")
    text = concept or DEFAULT_CONCEPT
    if safety == "negative":
        return Safety([], text)
    if isinstance(safety, str) and safety.startswith("sega-"):
        return Safety([sega_safety(safety.removeprefix("sega-"), text)], None)
    if isinstance(safety, str):
        return Safety([dataclasses.replace(preset(safety), concept=text)], None)
    if isinstance(safety, SLD):
        return Safety([dataclasses.replace(safety, concept=concept or safety.concept)], None)
    if isinstance(safety, SEGA):
        if concept is not None:
            raise ValueError("concept applies to SLD presets; an sld.SEGA carries its own edit concepts")
        return Safety([dataclasses.replace(safety)], None)
    raise ValueError(f"safety={safety!r} is invalid; allowed: {_allowed()}")
